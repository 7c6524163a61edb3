/* Packing float tensors into bit planes; included once by bitkernels.c, after its
 * common definitions (BK_X86, TARGET_FAST, ALWAYS_INLINE) and threadpool.h. */
#ifndef TORCHSLIM_BITPACK_H
#define TORCHSLIM_BITPACK_H

/* ---------------------------------------------------------------- packing */

/* Packing walks 64 pixels at a time and reads each channel plane contiguously.
 * A bit is set by comparing x with the plane's threshold t, by one of: */
enum {
    CMP_LT = 0,  /* x < t: sign bits of values already in {-1, +1} (t = 0) */
    CMP_GE = 1,  /* x >= t: thermometer planes (an activation quantizer with ties going up) */
    CMP_GT = 2,  /* x > t: thermometer planes (ties going down) */
    CMP_NGE = 3, /* !(x >= t): sign bits straight from a sign quantizer's input (ties up) */
    CMP_NGT = 4  /* !(x > t): the same with ties going down */
};
#define PACK_PIXELS 64
#define MAX_PACK_PLANES 16

ALWAYS_INLINE int compare(float v, float t, int cmp) {
    switch (cmp) {
    case CMP_LT: return v < t;
    case CMP_GE: return v >= t;
    case CMP_GT: return v > t;
    case CMP_NGE: return !(v >= t);
    default: return !(v > t);
    }
}

/* One block of 64 pixels of one channel word.  x: float NCHW; out: [N][P][H][W][words]. */
ALWAYS_INLINE void pack_block(const float *x, int64_t c, int64_t hw, int64_t words, const float *thresholds,
                              int64_t planes, int cmp, uint64_t *out, int64_t b, int64_t wd, int64_t p0) {
    const int64_t c0 = wd * 64, cn = c - c0 < 64 ? c - c0 : 64, np = hw - p0 < PACK_PIXELS ? hw - p0 : PACK_PIXELS;
    for (int64_t q = 0; q < planes; q++) {
        uint64_t acc[PACK_PIXELS] = {0};
        const float t = thresholds[q];
        for (int64_t k = 0; k < cn; k++) {
            const float *src = x + (b * c + c0 + k) * hw + p0;
            for (int64_t p = 0; p < np; p++) acc[p] |= (uint64_t)compare(src[p], t, cmp) << k;
        }
        uint64_t *dst = out + ((b * planes + q) * hw + p0) * words + wd;
        for (int64_t p = 0; p < np; p++) dst[p * words] = acc[p];
    }
}

typedef void (*pack_fn)(const float *, int64_t, int64_t, int64_t, const float *, int64_t, int, uint64_t *, int64_t,
                        int64_t, int64_t);
static void pack_block_portable(const float *x, int64_t c, int64_t hw, int64_t words, const float *thresholds,
                                int64_t planes, int cmp, uint64_t *out, int64_t b, int64_t wd, int64_t p0) {
    pack_block(x, c, hw, words, thresholds, planes, cmp, out, b, wd, p0);
}
#if BK_X86
TARGET_FAST static inline __m256 compare8(__m256 v, __m256 t, int cmp) {
    switch (cmp) {
    case CMP_LT: return _mm256_cmp_ps(v, t, _CMP_LT_OQ);
    case CMP_GE: return _mm256_cmp_ps(v, t, _CMP_GE_OQ);
    case CMP_GT: return _mm256_cmp_ps(v, t, _CMP_GT_OQ);
    case CMP_NGE: return _mm256_cmp_ps(v, t, _CMP_NGE_UQ);
    default: return _mm256_cmp_ps(v, t, _CMP_NGT_UQ);
    }
}

/* Eight pixels at a time: one compare + movemask per channel gives a byte (bit j =
 * pixel j); the 64 bytes of a channel word are then transposed with byte-MSB
 * movemasks, shifting every byte left by one between them.  Channels are read
 * one plane row at a time (planes 4 KiB apart would evict each other from L1). */
TARGET_FAST static void pack_block_fast(const float *x, int64_t c, int64_t hw, int64_t words,
                                        const float *thresholds, int64_t planes, int cmp, uint64_t *out, int64_t b,
                                        int64_t wd, int64_t p0) {
    const int64_t c0 = wd * 64, cn = c - c0 < 64 ? c - c0 : 64, np = hw - p0 < PACK_PIXELS ? hw - p0 : PACK_PIXELS;
    const int64_t octets = np / 8, full = octets * 8;
    for (int64_t q = 0; q < planes; q++) {
        const __m256 t = _mm256_set1_ps(thresholds[q]);
        uint64_t *dst = out + ((b * planes + q) * hw + p0) * words + wd;
        uint8_t mask[PACK_PIXELS / 8][64] __attribute__((aligned(32)));
        memset(mask, 0, sizeof(mask));
        for (int64_t k = 0; k < cn; k++) {
            const float *src = x + (b * c + c0 + k) * hw + p0;
            for (int64_t o = 0; o < octets; o++)
                mask[o][k] = (uint8_t)_mm256_movemask_ps(compare8(_mm256_loadu_ps(src + 8 * o), t, cmp));
        }
        for (int64_t o = 0; o < octets; o++) {
            __m256i lo = _mm256_load_si256((const __m256i *)mask[o]);
            __m256i hi = _mm256_load_si256((const __m256i *)(mask[o] + 32));
            for (int j = 7; j >= 0; j--) {
                const uint64_t word = (uint64_t)(uint32_t)_mm256_movemask_epi8(lo) |
                                      (uint64_t)(uint32_t)_mm256_movemask_epi8(hi) << 32;
                dst[(8 * o + j) * words] = word;
                lo = _mm256_add_epi8(lo, lo);
                hi = _mm256_add_epi8(hi, hi);
            }
        }
        for (int64_t p = full; p < np; p++) {
            uint64_t word = 0;
            for (int64_t k = 0; k < cn; k++)
                word |= (uint64_t)compare(x[(b * c + c0 + k) * hw + p0 + p], thresholds[q], cmp) << k;
            dst[p * words] = word;
        }
    }
}
#endif
static pack_fn g_pack = pack_block_portable;

typedef struct {
    const float *x;
    int64_t c, hw, words, blocks, planes;
    const float *thresholds;
    int cmp;
    uint64_t *out;
    pack_fn fn;
} pack_task;

static void pack_item(void *arg, int64_t it, uint32_t job) {
    const pack_task *t = (const pack_task *)arg;
    (void)job;
    t->fn(t->x, t->c, t->hw, t->words, t->thresholds, t->planes, t->cmp, t->out, it / (t->words * t->blocks),
          (it / t->blocks) % t->words, (it % t->blocks) * PACK_PIXELS);
}

static void pack_any(const float *x, int64_t n, int64_t c, int64_t h, int64_t w, int64_t words,
                     const float *thresholds, int64_t planes, int cmp, uint64_t *out, int threads) {
    const int64_t hw = h * w, blocks = (hw + PACK_PIXELS - 1) / PACK_PIXELS, items = n * words * blocks;
    pack_task task = {x, c, hw, words, blocks, planes, thresholds, cmp, out, g_pack};
    parallel_for(pack_item, &task, items, items > 3 ? threads : 1);
}

/* x: float NCHW; out: [N][H][W][words], bit set where x < 0 (sign(0) = +1). */
void bk_pack_signs(const float *x, int64_t n, int64_t c, int64_t h, int64_t w, int64_t words, uint64_t *out,
                   int threads) {
    const float zero = 0.0f;
    pack_any(x, n, c, h, w, words, &zero, 1, CMP_LT, out, threads);
}

/* Planes [N][P][H][W][words], P <= 16: plane k has a bit where compare(x, thresholds[k]) holds. */
void bk_pack(const float *x, int64_t n, int64_t c, int64_t h, int64_t w, int64_t words, const float *thresholds,
             int64_t planes, int cmp, uint64_t *out, int threads) {
    if (planes > MAX_PACK_PLANES || cmp < CMP_LT || cmp > CMP_NGT) return;
    pack_any(x, n, c, h, w, words, thresholds, planes, cmp, out, threads);
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

#endif
