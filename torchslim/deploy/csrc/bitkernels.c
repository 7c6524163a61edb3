/* Bit-packed binary convolution kernels for CPUs.
 *
 * Activations are packed per pixel along channels (NHWC, 64 channels per
 * uint64 word); weights per output channel as [OC][KH][KW][words].
 *
 *  - sign mode (BNN / XNOR-Net): values are +-1, bit 1 means -1.  For one tap
 *    dot(x, w) = C - 2 * popcount(x ^ w).  Zero padding is not representable in
 *    +-1, so padded taps are filled with zero words and corrected exactly: the
 *    XOR of a zero word with w counts popcount(w), which is subtracted again.
 *  - plane mode (HWGQ k-bit activations x 1-bit weights): the activation level
 *    is a sum of 0/1 planes times a step per plane (thermometer code), so
 *    dot(p, w) = popcount(p) - 2 * popcount(p & w) per plane, and zero padding
 *    is exact (a padded pixel has no bit set in any plane).
 *
 * Integer accumulations are exact; the float epilogue (y = v * scale + bias)
 * is evaluated in float32 without contraction so it matches the reference.
 *
 * Two builds of the inner loops are selected at run time: one compiled for
 * POPCNT + AVX2, and a portable one.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define BK_X86 1
#define TARGET_FAST __attribute__((target("popcnt,avx2")))
#else
#define BK_X86 0
#define TARGET_FAST
#endif

/* ---------------------------------------------------------------- packing */

/* x: float NCHW; out: [N][H][W][words], bit set where x < 0 (sign(0) = +1). */
void bk_pack_signs(const float *x, int64_t n, int64_t c, int64_t h, int64_t w, int64_t words, uint64_t *out,
                   int threads) {
    int64_t hw = h * w;
    memset(out, 0, (size_t)(n * hw * words) * sizeof(uint64_t));
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && n > 1)
    for (int64_t b = 0; b < n; b++) {
        for (int64_t ch = 0; ch < c; ch++) {
            const float *plane = x + (b * c + ch) * hw;
            const int shift = (int)(ch & 63);
            uint64_t *restrict dst = out + b * hw * words + (ch >> 6);
            for (int64_t p = 0; p < hw; p++) dst[p * words] |= (uint64_t)(plane[p] < 0.0f) << shift;
        }
    }
}

/* Thermometer planes: plane k has a bit where x >= thresholds[k].
 * out: [N][H][W][planes][words]. */
void bk_pack_planes(const float *x, int64_t n, int64_t c, int64_t h, int64_t w, int64_t words,
                    const float *thresholds, int64_t planes, uint64_t *out, int threads) {
    int64_t hw = h * w, stride = planes * words;
    memset(out, 0, (size_t)(n * hw * stride) * sizeof(uint64_t));
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && n > 1)
    for (int64_t b = 0; b < n; b++) {
        for (int64_t ch = 0; ch < c; ch++) {
            const float *plane = x + (b * c + ch) * hw;
            const int shift = (int)(ch & 63);
            uint64_t *restrict dst = out + b * hw * stride + (ch >> 6);
            for (int64_t k = 0; k < planes; k++) {
                const float t = thresholds[k];
                uint64_t *restrict row = dst + k * words;
                for (int64_t p = 0; p < hw; p++) row[p * stride] |= (uint64_t)(plane[p] >= t) << shift;
            }
        }
    }
}

/* codes: int8 [OC][C][KH][KW] in {-1,+1}; out: [OC][KH][KW][words], bit set for -1. */
void bk_pack_weights(const int8_t *codes, int64_t oc, int64_t c, int64_t kh, int64_t kw, int64_t words,
                     uint64_t *out) {
    memset(out, 0, (size_t)(oc * kh * kw * words) * sizeof(uint64_t));
    for (int64_t o = 0; o < oc; o++)
        for (int64_t ch = 0; ch < c; ch++)
            for (int64_t i = 0; i < kh; i++)
                for (int64_t j = 0; j < kw; j++)
                    if (codes[((o * c + ch) * kh + i) * kw + j] < 0)
                        out[((o * kh + i) * kw + j) * words + (ch >> 6)] |= (uint64_t)1 << (ch & 63);
}

/* ------------------------------------------------------------- one row */

typedef struct {
    const uint64_t *xbits;
    int64_t h, w, words, planes, c_true, oc, kh, kw, sh, sw, ph, pw, oh, ow;
    const float *steps, *scale, *bias;
    const uint64_t *wbits;
    const int32_t *wpop;
    float *out;
} conv_args;

typedef struct {
    uint64_t *col[2];
    int32_t *acc[2];
    float *vals;
    unsigned char *valid[2];
} scratch;

#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* acc_p[o] = sum_k popcount(a_p[k] OP w[o][k]) for two pixels p at once, so every
 * weight word loaded serves two pixels; four output channels per pass. */
#define DEFINE_DOTS2(NAME, OP)                                                                          \
    ALWAYS_INLINE void NAME(const uint64_t *a, const uint64_t *b, const uint64_t *wt, int64_t kwords,    \
                            int64_t oc, int32_t *acc_a, int32_t *acc_b) {                               \
        int64_t o = 0;                                                                                  \
        for (; o + 2 <= oc; o += 2) {                                                                   \
            const uint64_t *w0 = wt + o * kwords, *w1 = w0 + kwords;                                    \
            uint32_t a0 = 0, a1 = 0, b0 = 0, b1 = 0;                                                    \
            for (int64_t k = 0; k < kwords; k++) {                                                      \
                const uint64_t u = a[k], v = b[k], x0 = w0[k], x1 = w1[k];                              \
                a0 += (uint32_t)__builtin_popcountll(u OP x0); b0 += (uint32_t)__builtin_popcountll(v OP x0); \
                a1 += (uint32_t)__builtin_popcountll(u OP x1); b1 += (uint32_t)__builtin_popcountll(v OP x1); \
            }                                                                                           \
            acc_a[o] = (int32_t)a0; acc_a[o + 1] = (int32_t)a1;                                         \
            acc_b[o] = (int32_t)b0; acc_b[o + 1] = (int32_t)b1;                                         \
        }                                                                                               \
        for (; o < oc; o++) {                                                                           \
            const uint64_t *w0 = wt + o * kwords;                                                       \
            uint32_t a0 = 0, b0 = 0;                                                                    \
            for (int64_t k = 0; k < kwords; k++) {                                                      \
                a0 += (uint32_t)__builtin_popcountll(a[k] OP w0[k]);                                    \
                b0 += (uint32_t)__builtin_popcountll(b[k] OP w0[k]);                                    \
            }                                                                                           \
            acc_a[o] = (int32_t)a0; acc_b[o] = (int32_t)b0;                                             \
        }                                                                                               \
    }
DEFINE_DOTS2(dots2_xor, ^)
DEFINE_DOTS2(dots2_and, &)

/* im2col of output pixel (y, x) on bits, one contiguous run per plane; returns the valid tap count. */
ALWAYS_INLINE int64_t gather_pixel(const conv_args *a, const uint64_t *xb, int64_t y, int64_t x, uint64_t *col,
                                   unsigned char *valid) {
    const int64_t words = a->words, kwords = a->kh * a->kw * words, pstride = a->planes * words;
    int64_t nvalid = 0;
    for (int64_t i = 0; i < a->kh; i++) {
        for (int64_t j = 0; j < a->kw; j++) {
            const int64_t iy = y * a->sh - a->ph + i, ix = x * a->sw - a->pw + j, t = i * a->kw + j;
            const int ok = iy >= 0 && iy < a->h && ix >= 0 && ix < a->w;
            valid[t] = (unsigned char)ok;
            nvalid += ok;
            for (int64_t p = 0; p < a->planes; p++) {
                uint64_t *dst = col + p * kwords + t * words;
                const uint64_t *src = xb + (iy * a->w + ix) * pstride + p * words;
                for (int64_t k = 0; k < words; k++) dst[k] = ok ? src[k] : 0;
            }
        }
    }
    return nvalid;
}

/* One output row (image b, row y), two pixels at a time (the odd last one is paired with itself). */
ALWAYS_INLINE void conv_row(const conv_args *a, scratch *s, int64_t b, int64_t y) {
    const int64_t taps = a->kh * a->kw, kwords = taps * a->words, oc = a->oc;
    const uint64_t *xb = a->xbits + b * a->h * a->w * a->planes * a->words;
    for (int64_t x0 = 0; x0 < a->ow; x0 += 2) {
        const int pair = x0 + 1 < a->ow;
        int64_t nvalid[2];
        nvalid[0] = gather_pixel(a, xb, y, x0, s->col[0], s->valid[0]);
        nvalid[1] = pair ? gather_pixel(a, xb, y, x0 + 1, s->col[1], s->valid[1]) : nvalid[0];
        const uint64_t *col1 = pair ? s->col[1] : s->col[0];
        if (a->steps == NULL) dots2_xor(s->col[0], col1, a->wbits, kwords, oc, s->acc[0], s->acc[1]);
        for (int q = 0; q <= pair; q++) {
            const uint64_t *col = s->col[q];
            if (a->steps == NULL) {
                const int64_t kvalid = nvalid[q] * a->c_true;
                for (int64_t o = 0; o < oc; o++) {
                    int64_t pc = s->acc[q][o];
                    if (nvalid[q] != taps)
                        for (int64_t t = 0; t < taps; t++)
                            if (!s->valid[q][t]) pc -= a->wpop[o * taps + t];
                    s->vals[o] = (float)(kvalid - 2 * pc);
                }
            } else {
                for (int64_t o = 0; o < oc; o++) s->vals[o] = 0.0f;
                for (int64_t p = 0; p < a->planes; p++) {
                    const uint64_t *plane = col + p * kwords;
                    int64_t ones = 0;
                    for (int64_t k = 0; k < kwords; k++) ones += __builtin_popcountll(plane[k]);
                    if (q == 0) {  /* both pixels' plane-p products in one pass */
                        const uint64_t *other = (pair ? s->col[1] : s->col[0]) + p * kwords;
                        dots2_and(plane, other, a->wbits, kwords, oc, s->acc[0], s->acc[1] + oc * (p + 1));
                        for (int64_t o = 0; o < oc; o++) s->acc[1][o + oc * (a->planes + 1 + p)] = s->acc[0][o];
                    }
                    const int32_t *acc = q == 0 ? s->acc[1] + oc * (a->planes + 1 + p) : s->acc[1] + oc * (p + 1);
                    const float step = a->steps[p];
                    for (int64_t o = 0; o < oc; o++) s->vals[o] = s->vals[o] + step * (float)(ones - 2 * acc[o]);
                }
            }
            float *dst = a->out + (b * oc) * a->oh * a->ow + y * a->ow + x0 + q;
            for (int64_t o = 0; o < oc; o++) {
                float v = s->vals[o] * a->scale[o];
                if (a->bias) v = v + a->bias[o];
                dst[o * a->oh * a->ow] = v;
            }
        }
    }
}

static void conv_row_portable(const conv_args *a, scratch *s, int64_t b, int64_t y) { conv_row(a, s, b, y); }
#if BK_X86
TARGET_FAST static void conv_row_fast(const conv_args *a, scratch *s, int64_t b, int64_t y) { conv_row(a, s, b, y); }
#endif

typedef void (*row_fn)(const conv_args *, scratch *, int64_t, int64_t);
static row_fn g_row = conv_row_portable;
static int g_isa = 0; /* 0 portable, 1 popcnt+avx2 */

/* Choose the inner loops: force < 0 picks the best the CPU supports, 0 the portable ones. */
int bk_select_isa(int force) {
    g_row = conv_row_portable;
    g_isa = 0;
#if BK_X86
    __builtin_cpu_init();
    if (force != 0 && __builtin_cpu_supports("popcnt") && __builtin_cpu_supports("avx2")) {
        g_row = conv_row_fast;
        g_isa = 1;
    }
#endif
    return g_isa;
}

int bk_isa(void) { return g_isa; }

int bk_max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* ----------------------------------------------------------------- conv */

/* Binary convolution.
 *   xbits  [N][H][W][P][words]  (P = planes; sign mode uses P = 1 and steps = NULL)
 *   wbits  [OC][KH][KW][words]
 *   wpop   [OC][KH*KW] popcount of each weight tap (sign-mode border correction)
 *   steps  [P] value of one unit in each plane (plane mode), NULL for sign mode
 *   scale, bias [OC] (bias may be NULL)
 *   out    float [N][OC][OH][OW]
 */
void bk_conv2d(const uint64_t *xbits, int64_t n, int64_t h, int64_t w, int64_t words, int64_t planes,
               const float *steps, int64_t c_true, const uint64_t *wbits, const int32_t *wpop, int64_t oc,
               int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw, const float *scale,
               const float *bias, float *out, int64_t oh, int64_t ow, int threads) {
    const conv_args a = {xbits, h, w, words, planes, c_true, oc, kh, kw, sh, sw, ph, pw, oh, ow,
                         steps, scale, bias, wbits, wpop, out};
    const int64_t taps = kh * kw, rows = n * oh;
    const row_fn row = g_row;
    if (threads < 1) threads = 1;
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        scratch s;
        for (int q = 0; q < 2; q++) {
            s.col[q] = (uint64_t *)malloc((size_t)(taps * words * planes + 1) * sizeof(uint64_t));
            s.valid[q] = (unsigned char *)malloc((size_t)taps + 1);
        }
        /* acc[1] also holds both pixels' per-plane products in plane mode */
        s.acc[0] = (int32_t *)malloc((size_t)(oc + 1) * sizeof(int32_t));
        s.acc[1] = (int32_t *)malloc((size_t)(oc * (2 * planes + 2) + 1) * sizeof(int32_t));
        s.vals = (float *)malloc((size_t)(oc + 1) * sizeof(float));
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; r++) row(&a, &s, r / oh, r % oh);
        for (int q = 0; q < 2; q++) {
            free(s.col[q]);
            free(s.valid[q]);
        }
        free(s.acc[0]);
        free(s.acc[1]);
        free(s.vals);
    }
}

/* Binary fully connected layer: a 1x1 conv on a 1x1 image. */
void bk_linear(const uint64_t *xbits, int64_t n, int64_t words, int64_t planes, const float *steps,
               int64_t c_true, const uint64_t *wbits, const int32_t *wpop, int64_t oc, const float *scale,
               const float *bias, float *out, int threads) {
    bk_conv2d(xbits, n, 1, 1, words, planes, steps, c_true, wbits, wpop, oc, 1, 1, 1, 1, 0, 0, scale, bias,
              out, 1, 1, threads);
}
