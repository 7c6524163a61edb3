/* Bit-packed binary convolution kernels for CPUs.
 *
 * Activations are packed per pixel along channels, 64 channels per uint64
 * word, one image per plane: [N][P][H][W][words].  Weights are tiled for the
 * micro-kernel as [ceil(OC/8)][KH*KW*words][8]: the words of 8 output channels
 * for one input word sit side by side.
 *
 *  - sign mode (BNN / XNOR-Net, P = 1): values are +-1, bit 1 means -1.  For one
 *    tap dot(x, w) = C - 2 * popcount(x ^ w), and popcount(x ^ w) = popcount(x) +
 *    popcount(w) - 2 * popcount(x & w): the same AND kernel as plane mode, plus the
 *    row's set bits and the weights' set bits.  Zero padding is not representable
 *    in +-1, so padded taps are zero words (they add nothing to the AND and row
 *    counts) and the sums run over the valid taps only: the weights' set bits over
 *    the valid taps come from 2D prefix sums of the per-tap weight popcounts.
 *  - plane mode (HWGQ k-bit activations x 1-bit weights): the activation level
 *    is a sum of 0/1 planes times a step per plane (thermometer code), so
 *    dot(p, w) = popcount(p) - 2 * popcount(p & w) per plane, and zero padding
 *    is exact (a padded pixel has no bit set in any plane).
 *  - binary-weighted plane mode (levels D * {0, 1, ..., 2^k - 1}, e.g. DoReFa): the
 *    k planes hold the bits of the level index m, so the integer sum
 *    S = sum_j 2^j * dot(p_j, w) is exact and the value is D * S (one rounding):
 *    k planes instead of the 2^k - 1 of a thermometer code.
 *
 * Integer accumulations are exact; the float value of a plane-mode sum is
 * formed in the same order as the reference, without contraction.
 *
 * Epilogues: either float output y = v * scale + bias ([N][OC][OH][OW]), or the
 * next layer's packed input directly: per channel, level k+1 or more is reached
 * iff sgn * v >= thr[k] (thresholds derived at compile time from the float
 * scale, BatchNorm and activation quantizer), optionally max-pooled over
 * non-overlapping windows (the maximum of thermometer bits is their OR), and
 * for a binary-weighted next layer turned into the bits of the level index.
 *
 * Three builds of the hot loops are selected at run time (cpuid): one for
 * AVX512_VPOPCNTDQ (a 512-bit popcount over 8 channels' words at once), one for
 * POPCNT + AVX2 + BMI, and a portable one.  Work is spread over a small thread pool (threadpool.h);
 * packing of float tensors lives in bitpack.h.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#define BK_X86 1
#define TARGET_FAST __attribute__((target("popcnt,avx2,bmi")))
/* Per-function targets: one library runs on every x86 CPU, each path picked at run time. */
#define TARGET_512 __attribute__((target("popcnt,avx2,bmi,avx512f,avx512vl,avx512bw,avx512vpopcntdq")))
#else
#define BK_X86 0
#define TARGET_FAST
#define TARGET_512
#endif

#define ALWAYS_INLINE static inline __attribute__((always_inline))
#define TILE 8       /* output channels per micro-kernel tile */
#define CHUNK 64     /* output channels per work item: one packed output word */

#include "threadpool.h"
#include "bitpack.h"

/* ---------------------------------------------------------- micro-kernels */

/* For rows r = 0..rows-1 of a [rows][planes][kwords] and the 8 channels of one
 * weight tile w [kwords][8]: acc[r][o] = sum_p 2^p sum_k popcount(a[r][p][k] & w[k][o])
 * (planes = 1: a plain popcount sum; more: binary-weighted planes, whose weighted sum
 * is then one row).  The portable kernel takes rows two at a time so every weight
 * word loaded serves two rows (an odd last row is paired with itself). */
typedef void (*mk_fn)(const uint64_t *a, int64_t rows, const uint64_t *w, int64_t kwords, int64_t planes,
                      int32_t *acc);

static void mk_and_portable(const uint64_t *a, int64_t rows, const uint64_t *w, int64_t kwords, int64_t planes,
                            int32_t *acc) {
    for (int64_t r = 0; r < rows; r += 2) {
        const int64_t r1 = r + 1 < rows ? r + 1 : r;
        uint32_t s0[TILE] = {0}, s1[TILE] = {0};
        for (int64_t p = 0; p < planes; p++) {
            const uint64_t *a0 = a + (r * planes + p) * kwords, *a1 = a + (r1 * planes + p) * kwords;
            for (int64_t k = 0; k < kwords; k++) {
                const uint64_t u = a0[k], v = a1[k], *x = w + TILE * k;
                for (int o = 0; o < TILE; o++) {
                    s0[o] += (uint32_t)__builtin_popcountll(u & x[o]) << p;
                    s1[o] += (uint32_t)__builtin_popcountll(v & x[o]) << p;
                }
            }
        }
        for (int o = 0; o < TILE; o++) {
            acc[r * TILE + o] = (int32_t)s0[o];
            acc[r1 * TILE + o] = (int32_t)s1[o];
        }
    }
}

#if BK_X86
/* The same sums from nibble-split activation rows (the im2col of the fast path stores
 * each word a as a & 0x0f.. and (a >> 4) & 0x0f..), all in AVX2.  The 8 channels' weight
 * words w of one input word are two registers, and w >> 4 two more, loaded and shifted
 * once for four rows (two for the last rows).  Then a & w and (a >> 4) & (w >> 4) are the low and high nibbles
 * of each byte of the AND, already masked: one vpshufb each looks their bit counts up,
 * with no masking or shifting per row (6 vector ops per 4 channels x 64 bits, where
 * splitting the AND itself took 8).  Byte counters (at most 8 per word) are folded by
 * vpsadbw into one 64-bit sum per channel every 31 words (31 * 8 < 256).  A lone last
 * row is paired with itself.  Binary-weighted planes are summed by Horner's rule, from
 * the top plane down (acc = 2 * acc + plane).  Alternating builds in one process
 * (benchmarks/kernels_ab.py) compares this against earlier kernels. */
/* The low 32 bits of the four 64-bit sums of channels 0-3 and of 4-7, as 8 int32. */
TARGET_FAST ALWAYS_INLINE void store_sums(int32_t *c, __m256i lo4, __m256i hi4) {
    const __m256i even = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
    _mm_storeu_si128((__m128i *)c, _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(lo4, even)));
    _mm_storeu_si128((__m128i *)(c + 4), _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(hi4, even)));
}

#define BCAST(p) _mm256_castpd_si256(_mm256_broadcast_sd((const double *)(p)))

/* Rows r .. r + R - 1 (those past the end repeat row r, their sums not stored). */
TARGET_FAST ALWAYS_INLINE void mk_split_rows(const uint64_t *sa, int64_t r, int64_t rows, const uint64_t *w,
                                             const int64_t kwords, const int64_t planes, int32_t *acc, const int R) {
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2,
                                         2, 3, 2, 3, 3, 4);
    const __m256i zero = _mm256_setzero_si256();
    int64_t rr[4];
    for (int i = 0; i < R; i++) rr[i] = r + i < rows ? r + i : r;
    __m256i v[4][2];
    for (int i = 0; i < R; i++) v[i][0] = v[i][1] = zero;
    for (int64_t p = planes - 1; p >= 0; p--) {
        if (planes > 1)
            for (int i = 0; i < R; i++) v[i][0] = _mm256_add_epi64(v[i][0], v[i][0]), v[i][1] = _mm256_add_epi64(v[i][1], v[i][1]);
        const uint64_t *ar[4];
        for (int i = 0; i < R; i++) ar[i] = sa + 2 * (rr[i] * planes + p) * kwords;
        for (int64_t k = 0; k < kwords;) {
            const int64_t end = kwords - k > 31 ? k + 31 : kwords;
            __m256i bc[4][2];
            for (int i = 0; i < R; i++) bc[i][0] = bc[i][1] = zero;
            for (; k < end; k++) {
                const __m256i w0 = _mm256_loadu_si256((const __m256i *)(w + TILE * k));
                const __m256i w1 = _mm256_loadu_si256((const __m256i *)(w + TILE * k + 4));
                const __m256i h0 = _mm256_srli_epi64(w0, 4), h1 = _mm256_srli_epi64(w1, 4);
                for (int i = 0; i < R; i++) {
                    const __m256i l = BCAST(ar[i] + 2 * k), u = BCAST(ar[i] + 2 * k + 1);
                    bc[i][0] = _mm256_add_epi8(bc[i][0], _mm256_add_epi8(_mm256_shuffle_epi8(lut, _mm256_and_si256(l, w0)),
                                                                         _mm256_shuffle_epi8(lut, _mm256_and_si256(u, h0))));
                    bc[i][1] = _mm256_add_epi8(bc[i][1], _mm256_add_epi8(_mm256_shuffle_epi8(lut, _mm256_and_si256(l, w1)),
                                                                         _mm256_shuffle_epi8(lut, _mm256_and_si256(u, h1))));
                }
            }
            for (int i = 0; i < R; i++) {
                v[i][0] = _mm256_add_epi64(v[i][0], _mm256_sad_epu8(bc[i][0], zero));
                v[i][1] = _mm256_add_epi64(v[i][1], _mm256_sad_epu8(bc[i][1], zero));
            }
        }
    }
    for (int i = 0; i < R; i++)
        if (i == 0 || rr[i] != r) store_sums(acc + rr[i] * TILE, v[i][0], v[i][1]);
}

TARGET_FAST ALWAYS_INLINE void mk_split_body(const uint64_t *sa, int64_t rows, const uint64_t *w, const int64_t kwords,
                                             const int64_t planes, int32_t *acc) {
    int64_t r = 0;
    for (; r + 4 <= rows; r += 4) mk_split_rows(sa, r, rows, w, kwords, planes, acc, 4);
    for (; r < rows; r += 2) mk_split_rows(sa, r, rows, w, kwords, planes, acc, 2);
}
#undef BCAST

TARGET_FAST static void mk_split_fast(const uint64_t *sa, int64_t rows, const uint64_t *w, int64_t kwords,
                                     int64_t planes, int32_t *acc) {
    if (planes == 2) { /* 2-bit binary-weighted activations */
        if (kwords == 9) mk_split_body(sa, rows, w, 9, 2, acc);
        else if (kwords == 18) mk_split_body(sa, rows, w, 18, 2, acc);
        else mk_split_body(sa, rows, w, kwords, 2, acc);
        return;
    }
    if (planes != 1) {
        mk_split_body(sa, rows, w, kwords, planes, acc);
        return;
    }
    switch (kwords) { /* 3x3 taps of 64, 128, 192 and 256 channels */
    case 9: mk_split_body(sa, rows, w, 9, 1, acc); break;
    case 18: mk_split_body(sa, rows, w, 18, 1, acc); break;
    case 27: mk_split_body(sa, rows, w, 27, 1, acc); break;
    case 36: mk_split_body(sa, rows, w, 36, 1, acc); break;
    default: mk_split_body(sa, rows, w, kwords, 1, acc);
    }
}

/* AVX512_VPOPCNTDQ: the 8 channels' weight words of one input word fill one 512-bit
 * register; per row, the activation word is broadcast, ANDed with it and counted by
 * one vpopcntq into 8 64-bit lane sums (3 ops per 8 channels x 64 bits, no nibble split,
 * no byte-counter folding).  One weight load serves R rows.  With two binary-weighted
 * planes (2-bit activations), both planes of a row are counted in the same pass over
 * the weights into their own sums, joined at the end as low + 2 * high: one pass where
 * Horner's rule took one per plane.  More planes fall back to Horner's rule. */
TARGET_512 ALWAYS_INLINE void mk512_rows(const uint64_t *a, int64_t r, int64_t rows, const uint64_t *w,
                                         const int64_t kwords, const int64_t planes, int32_t *acc, const int R) {
    int64_t rr[8];
    const uint64_t *ar[8];
    for (int i = 0; i < R; i++) {
        rr[i] = r + i < rows ? r + i : r;
        ar[i] = a + rr[i] * planes * kwords;
    }
    __m512i v[8];
    for (int i = 0; i < R; i++) v[i] = _mm512_setzero_si512();
    if (planes <= 2) { /* fused: every plane of every row from one load of the weights */
        __m512i hi[8];
        for (int i = 0; i < R; i++) hi[i] = _mm512_setzero_si512();
        for (int64_t k = 0; k < kwords; k++) {
            const __m512i wk = _mm512_loadu_si512((const void *)(w + TILE * k));
            for (int i = 0; i < R; i++) {
                v[i] = _mm512_add_epi64(v[i], _mm512_popcnt_epi64(_mm512_and_si512(_mm512_set1_epi64((long long)ar[i][k]), wk)));
                if (planes == 2)
                    hi[i] = _mm512_add_epi64(
                        hi[i], _mm512_popcnt_epi64(_mm512_and_si512(_mm512_set1_epi64((long long)ar[i][kwords + k]), wk)));
            }
        }
        if (planes == 2)
            for (int i = 0; i < R; i++) v[i] = _mm512_add_epi64(v[i], _mm512_add_epi64(hi[i], hi[i]));
    } else {
        for (int64_t p = planes - 1; p >= 0; p--) {
            for (int i = 0; i < R; i++) v[i] = _mm512_add_epi64(v[i], v[i]);
            for (int64_t k = 0; k < kwords; k++) {
                const __m512i wk = _mm512_loadu_si512((const void *)(w + TILE * k));
                for (int i = 0; i < R; i++)
                    v[i] = _mm512_add_epi64(
                        v[i], _mm512_popcnt_epi64(_mm512_and_si512(_mm512_set1_epi64((long long)ar[i][p * kwords + k]), wk)));
            }
        }
    }
    for (int i = 0; i < R; i++) /* sums stay far below 2^31: the low 32 bits of each lane */
        if (i == 0 || rr[i] != r) _mm256_storeu_si256((__m256i *)(acc + rr[i] * TILE), _mm512_cvtepi64_epi32(v[i]));
}

TARGET_512 ALWAYS_INLINE void mk512_body(const uint64_t *a, int64_t rows, const uint64_t *w, const int64_t kwords,
                                         const int64_t planes, int32_t *acc) {
    int64_t r = 0;
    if (planes == 1)
        for (; r + 8 <= rows; r += 8) mk512_rows(a, r, rows, w, kwords, 1, acc, 8);
    for (; r + 4 <= rows; r += 4) mk512_rows(a, r, rows, w, kwords, planes, acc, 4);
    for (; r < rows; r += 2) mk512_rows(a, r, rows, w, kwords, planes, acc, 2);
}

TARGET_512 static void mk_avx512(const uint64_t *a, int64_t rows, const uint64_t *w, int64_t kwords, int64_t planes,
                                 int32_t *acc) {
    if (planes == 2) {
        if (kwords == 9) mk512_body(a, rows, w, 9, 2, acc);
        else if (kwords == 18) mk512_body(a, rows, w, 18, 2, acc);
        else mk512_body(a, rows, w, kwords, 2, acc);
    } else if (planes == 1) {
        switch (kwords) { /* 3x3 taps of 64, 128, 192 and 256 channels */
        case 9: mk512_body(a, rows, w, 9, 1, acc); break;
        case 18: mk512_body(a, rows, w, 18, 1, acc); break;
        case 27: mk512_body(a, rows, w, 27, 1, acc); break;
        case 36: mk512_body(a, rows, w, 36, 1, acc); break;
        default: mk512_body(a, rows, w, kwords, 1, acc);
        }
    } else {
        mk512_body(a, rows, w, kwords, planes, acc);
    }
}

#endif

enum { ISA_PORTABLE = 0, ISA_AVX2 = 1, ISA_AVX512 = 2 };
static int g_isa = ISA_PORTABLE;

static int best_isa(void) {
#if BK_X86
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("popcnt") || !__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("bmi"))
        return ISA_PORTABLE;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vpopcntdq"))
        return ISA_AVX512;
    return ISA_AVX2;
#else
    return ISA_PORTABLE;
#endif
}

/* Choose the inner loops: force < 0 picks the best the CPU supports, else the path
 * numbered force (0 portable, 1 AVX2, 2 AVX-512) or the best below it the CPU has.
 * Returns the path chosen. */
int bk_select_isa(int force) {
    const int best = best_isa();
    g_isa = force < 0 || force > best ? best : force;
    g_pack = pack_block_portable;
#if BK_X86
    if (g_isa >= ISA_AVX2) g_pack = pack_block_fast;
#endif
    return g_isa;
}

int bk_isa(void) { return g_isa; }

/* Wake the pool's workers for a call about to run binary layers on `threads` threads. */
void bk_pool_wake(int threads) { pool_wake(threads); }

int bk_max_threads(void) {
    const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    return cpus > 0 ? (int)cpus : 1;
}

/* ----------------------------------------------------------------- conv */

/* Everything one convolution needs; built once per layer and input shape on the
 * Python side (all fields are int64 or pointers, so ctypes maps it directly). */
typedef struct {
    int64_t n, h, w, words, planes, c_true;
    int64_t oc, kh, kw, sh, sw, ph, pw, oh, ow;
    int64_t pool;       /* fused max pool, kernel = stride; 1 = none */
    int64_t out_planes; /* planes of the packed output; 0 = float output */
    int64_t out_sign;   /* packed output in sign mode: bit = level 0 (value -1) */
    int64_t threads;
    const uint64_t *x;     /* [N][P][H][W][words] */
    /* per-channel arrays are padded to OCP = 8 * ceil(OC / 8) channels */
    const float *steps;    /* [P] plane mode; NULL in sign mode */
    const uint64_t *wt;    /* [OCP / 8][KH*KW*words][8] */
    const int32_t *wpre;   /* [KH+1][KW+1][OCP] prefix sums of per-tap weight popcounts */
    const float *scale;    /* [OCP] float output */
    const float *bias;     /* [OCP] or NULL */
    float *out;            /* [N][OC][OH][OW] */
    const float *thr;      /* [Q][OCP] packed output thresholds */
    const float *sgn;      /* [OCP] +1 or -1 */
    uint64_t *out_bits;    /* [N][Q][OH / pool][OW / pool][ceil(OC/64)] */
    /* float input instead of x (NULL: use x): packed first, one call for both */
    const float *xf;       /* [N][C][H][W] */
    const float *in_thr;   /* [P][C] thresholds compared by in_cmp (a CMP_* code) with in_sgn[c] * x */
    int64_t in_cmp;
    /* with the packed epilogue: write levels[number of planes reached] as floats to
     * out ([N][OC][OH / pool][OW / pool]) instead of bits (NULL: bits) */
    const float *levels;
    int64_t in_binary;  /* input planes are binary-weighted (2^j); steps[0] is the step D */
    int64_t out_binary; /* packed output as binary-weighted planes of the level index */
    const float *in_sgn; /* [C] +1 or -1, or NULL: +1 */
    /* [Q][OCP] the packed epilogue's thresholds on integer sums (bk_int_thresholds), or NULL */
    const int32_t *ithr;
    /* residual epilogue, float output from a float input xf only (see residual_epilogue):
     * out = maxpool_fpool(act(v + shortcut(xf))) */
    int64_t res;              /* 1: add the shortcut of xf (average-pooled by res_pool, zero channels appended) */
    int64_t res_pool;         /* the shortcut's average pool, window = stride; 1 = none */
    const float *act_b_in;    /* [OCP] added before the activation, or NULL */
    const float *act_slope;   /* [OCP] PReLU slopes (x > 0 ? x : slope * x), or NULL: no PReLU */
    const float *act_b_out;   /* [OCP] added after it, or NULL */
    int64_t fpool;            /* float max pool after it, window = stride; 1 = none */
} bk_conv_desc;

/* Per-thread scratch, grown on demand and kept: no allocation per call. */
typedef struct {
    void *mem;
    size_t cap;
    int64_t key;  /* which (image, unit) the im2col buffer holds; -1 none */
    uint32_t job; /* the call that key belongs to */
} scratch;

static __thread scratch tls_scratch;

typedef struct {
    uint64_t *col;   /* [P][npix][K] im2col rows on bits ([npix][P][K] for binary-weighted planes); 2K split */
    uint64_t *obits; /* [npix][Q] packed output bits of this chunk */
    int32_t *acc;    /* [P][npix][8] popcounts of one channel tile ([npix][8] weighted sums for binary-weighted planes) */
    int32_t *ones;   /* [P][npix] set bits per row */
    int16_t *rect;   /* [npix][4] valid taps i0, i1, j0, j1 (sign mode) */
    int32_t *cls;    /* [2 npix + 1] sign mode: per pixel its kind of window (0: whole; k > 0: the unit's k-th
                      * distinct clipped rectangle), then the number of kinds, then each kind's first pixel */
    int32_t *corr;   /* [npix + 1][8] sign mode: per kind, + 2 * the tile's weight bits outside the image */
    int32_t *pix;    /* [2][npix] per pixel: the exact sum's per-pixel part (see epilogue_rows), the valid taps */
} buffers;

static int carve(scratch *s, const bk_conv_desc *d, int64_t npix, buffers *bf) {
    const int64_t K = d->kh * d->kw * d->words, q = d->out_planes > 0 ? d->out_planes : 1, rows = d->planes * npix;
    const size_t col = (size_t)(rows * K) * 16, obits = (size_t)(npix * q) * 8;
    const size_t acc = (size_t)(rows * TILE) * 4, ones = (size_t)rows * 4, pix = (size_t)npix * 8;
    const size_t rect = (size_t)npix * 8, cls = (size_t)(2 * npix + 1) * 4, corr = (size_t)(npix + 1) * TILE * 4;
    const size_t need = col + obits + acc + ones + pix + rect + cls + corr + 64;
    if (need > s->cap) {
        void *mem = realloc(s->mem, need);
        if (mem == NULL) return 0;
        s->mem = mem;
        s->cap = need;
        s->key = -1;
    }
    char *p = (char *)s->mem;
    bf->col = (uint64_t *)p;
    bf->obits = (uint64_t *)(p + col);
    bf->acc = (int32_t *)(p + col + obits);
    bf->ones = (int32_t *)(p + col + obits + acc);
    bf->pix = (int32_t *)(p + col + obits + acc + ones);
    bf->rect = (int16_t *)(p + col + obits + acc + ones + pix);
    bf->cls = (int32_t *)(p + col + obits + acc + ones + pix + rect);
    bf->corr = (int32_t *)(p + col + obits + acc + ones + pix + rect + cls);
    return 1;
}

static inline int64_t clamp(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : v > hi ? hi : v; }

/* How the im2col stores a word v: as it is (the portable micro-kernel), or split into
 * its nibbles (the AVX2 one): v & 0x0f.. and (v >> 4) & 0x0f.., side by side, so the
 * micro-kernel ANDs them straight with the weights and looks the counts up (see
 * mk_split_body).  The split takes 2 words per word. */
#define NIBBLES 0x0f0f0f0f0f0f0f0fULL
ALWAYS_INLINE void put_word(uint64_t *dst, int64_t i, uint64_t v, const int split) {
    if (split) {
        dst[2 * i] = v & NIBBLES;
        dst[2 * i + 1] = (v >> 4) & NIBBLES;
    } else {
        dst[i] = v;
    }
}

/* A window wholly inside the image: kh rows of run words, rows `stride` words apart,
 * stored by put_word; returns the set bits of the words read.  Constant kh and run (the
 * 3x3 cases) unroll it. */
ALWAYS_INLINE int64_t copy_window(const uint64_t *src, int64_t stride, uint64_t *dst, const int64_t kh,
                                  const int64_t run, const int split) {
    int64_t ones = 0;
    for (int64_t i = 0; i < kh; i++)
        for (int64_t k = 0; k < run; k++) {
            const uint64_t v = src[i * stride + k];
            put_word(dst, i * run + k, v, split);
            ones += __builtin_popcountll(v);
        }
    return ones;
}

/* A window that overlaps the border: zero words where taps fall outside, every word
 * stored by put_word; returns the set bits of the words read. */
ALWAYS_INLINE int64_t copy_border_window(const bk_conv_desc *d, const uint64_t *img, int64_t iy0, int64_t ix0,
                                         uint64_t *dst, const int split) {
    const int64_t words = d->words, run = d->kw * words;
    int64_t ones = 0;
    for (int64_t i = 0; i < d->kh; i++) {
        const int64_t iy = iy0 + i;
        if (iy < 0 || iy >= d->h) {
            for (int64_t k = 0; k < run; k++) put_word(dst, i * run + k, 0, split);
            continue;
        }
        const uint64_t *srow = img + iy * d->w * words;
        for (int64_t j = 0; j < d->kw; j++) {
            const int64_t ix = ix0 + j;
            const int ok = ix >= 0 && ix < d->w;
            for (int64_t k = 0; k < words; k++) {
                const uint64_t v = ok ? srow[ix * words + k] : 0;
                put_word(dst, i * run + j * words + k, v, split);
                ones += __builtin_popcountll(v);
            }
        }
    }
    return ones;
}

/* im2col of one unit (pool rows of output pixels) on bits (nibble-split with split), with each row's set bits,
 * each pixel's part of the exact sum and its valid taps (bf->pix), and in sign mode the
 * valid taps' rectangle.  kh and run (kw * words) are constants where the caller
 * specialises them.  The descriptor's fields are read into locals first: the stores
 * into the buffers would otherwise make the compiler reload them for every pixel. */
ALWAYS_INLINE void gather_windows(const bk_conv_desc *d, const buffers *bf, int64_t b, int64_t unit, int64_t owe,
                                  int64_t npix, const int64_t kh, const int64_t run, const int split) {
    const int64_t words = d->words, kw = d->kw, h = d->h, w = d->w, planes = d->planes, c_true = d->c_true;
    const int64_t sh = d->sh, sw = d->sw, ph = d->ph, pw = d->pw, sign = d->steps == NULL, in_binary = d->in_binary;
    const int64_t K = kh * run * (split ? 2 : 1), stride = w * words;
    const uint64_t *const x = d->x + b * planes * h * stride;
    uint64_t *const col = bf->col;
    int32_t *const ones_out = bf->ones, *const pix = bf->pix;
    int16_t *const rect = bf->rect;
    int32_t *const cls = bf->cls;
    int32_t kinds = 1;
    for (int64_t q = 0, y = unit * d->pool, xo = 0; q < npix; q++, xo++) { /* no division per pixel */
        if (xo == owe) {
            xo = 0;
            y++;
        }
        const int64_t iy0 = y * sh - ph, ix0 = xo * sw - pw;
        const int inside = iy0 >= 0 && iy0 + kh <= h && ix0 >= 0 && ix0 + kw <= w;
        int64_t nvalid = kh * kw;
        if (sign) { /* the valid taps, for the border correction; clamped: with padding >= kernel a window can miss the image */
            int16_t *r = rect + 4 * q;
            if (inside) {
                r[0] = 0, r[1] = (int16_t)kh, r[2] = 0, r[3] = (int16_t)kw;
                cls[q] = 0;
            } else {
                r[0] = (int16_t)clamp(-iy0, 0, kh);
                r[1] = (int16_t)clamp(h - iy0, r[0], kh);
                r[2] = (int16_t)clamp(-ix0, 0, kw);
                r[3] = (int16_t)clamp(w - ix0, r[2], kw);
                nvalid = (int64_t)(r[1] - r[0]) * (r[3] - r[2]);
                int32_t kind = 1; /* a unit has few kinds of clipped windows (3x3, padding 1: at most 3 per row) */
                while (kind < kinds && memcmp(rect + 4 * cls[npix + kind], r, 4 * sizeof(int16_t)) != 0) kind++;
                if (kind == kinds) cls[npix + kinds++] = (int32_t)q; /* a new kind: its first pixel */
                cls[q] = kind;
            }
        }
        int64_t weighted = 0; /* sum_p 2^p set bits of plane p */
        for (int64_t p = 0; p < planes; p++) {
            const uint64_t *img = x + p * h * stride;
            /* binary-weighted planes: [npix][P][K], one weighted row per pixel; else [P][npix][K] */
            uint64_t *dst = col + (in_binary ? q * planes + p : p * npix + q) * K;
            int64_t ones = 0;
            if (inside) ones = copy_window(img + iy0 * stride + ix0 * words, stride, dst, kh, run, split);
            else ones = copy_border_window(d, img, iy0, ix0, dst, split);
            ones_out[p * npix + q] = (int32_t)ones;
            weighted += ones << p;
        }
        pix[q] = (int32_t)(sign ? c_true * nvalid - 2 * weighted : weighted);
        pix[npix + q] = (int32_t)nvalid;
    }
    if (sign) cls[npix] = kinds;
}

ALWAYS_INLINE void gather_unit(const bk_conv_desc *d, const buffers *bf, int64_t b, int64_t unit, int64_t owe,
                               int64_t npix, const int split) {
    const int64_t run = d->kw * d->words;
    if (d->kh == 3 && run == 3) gather_windows(d, bf, b, unit, owe, npix, 3, 3, split); /* 3x3 over 1 and 2 words */
    else if (d->kh == 3 && run == 6) gather_windows(d, bf, b, unit, owe, npix, 3, 6, split);
    else gather_windows(d, bf, b, unit, owe, npix, d->kh, run, split);
}

/* Per-tile epilogue: values of every pixel of the unit for the 8 channels from o0,
 * then either float outputs (dst[j * plane + pixel] for the nt real channels) or
 * packed output bits (OR-ed into bf->obits).  The fields it needs are copied to
 * locals first: stores through the output pointers would otherwise force reloads
 * of the descriptor. */
typedef struct {
    int64_t sign, binary, taps, c_true, kh, kw, ocp, planes, q;
    const int32_t *wpre;
    const float *steps, *scale, *bias, *thr, *sgn;
    const int32_t *ithr;
    /* the residual epilogue run in the float epilogue (see residual_fusable): the shortcut rows
     * (channel 0 of this row, channels `plane` apart, the first res_c of them), the activation's arrays */
    const float *res;
    int64_t res_c;
    const float *act_b_in, *act_slope, *act_b_out;
} epi_args;
typedef void (*epi_fn)(const epi_args *e, const buffers *bf, int64_t npix, int64_t o0, float *dst, int64_t plane,
                       int64_t nt);

/* Values of one pixel for the 8 channels of one tile: exact integers in sign mode
 * (with the border correction), the planes' weighted sum in plane mode, in the
 * reference's order.  Per-channel arrays are padded to whole tiles. */
ALWAYS_INLINE void pixel_values(const epi_args *e, const buffers *bf, int64_t npix, int64_t q, int64_t o0,
                                float *val) {
    const int32_t *a = bf->acc + q * TILE;
    if (e->sign) {
        const int16_t *r = bf->rect + 4 * q;
        const int32_t nvalid = (int32_t)(r[1] - r[0]) * (r[3] - r[2]), kvalid = (int32_t)e->c_true * nvalid;
        const int64_t stride = e->kw + 1;
        const int32_t *base = e->wpre + o0;
        const int32_t *p11 = base + (r[1] * stride + r[3]) * e->ocp, *p01 = base + (r[0] * stride + r[3]) * e->ocp;
        const int32_t *p10 = base + (r[1] * stride + r[2]) * e->ocp, *p00 = base + (r[0] * stride + r[2]) * e->ocp;
        const int32_t *pall = base + (e->kh * stride + e->kw) * e->ocp;
        for (int j = 0; j < TILE; j++) { /* popcount(x ^ w) over the valid taps, then the dot product */
            const int32_t inside = nvalid == e->taps ? pall[j] : p11[j] - p01[j] - p10[j] + p00[j];
            val[j] = (float)(kvalid - 2 * (bf->ones[q] + inside - 2 * a[j]));
        }
        return;
    }
    if (e->binary) { /* S = sum_p 2^p dot_p = sum_p 2^p ones_p - 2 acc (acc: the weighted AND counts), exact; one rounding */
        int32_t ones = 0;
        for (int64_t p = e->planes - 1; p >= 0; p--) ones = 2 * ones + bf->ones[p * npix + q];
        for (int j = 0; j < TILE; j++) val[j] = e->steps[0] * (float)(ones - 2 * a[j]);
        return;
    }
    for (int j = 0; j < TILE; j++) val[j] = e->steps[0] * (float)(bf->ones[q] - 2 * a[j]);
    for (int64_t p = 1; p < e->planes; p++) {
        const int32_t *ap = bf->acc + (p * npix + q) * TILE, ones = bf->ones[p * npix + q];
        for (int j = 0; j < TILE; j++) val[j] = val[j] + e->steps[p] * (float)(ones - 2 * ap[j]);
    }
}


static void epilogue_portable(const epi_args *e, const buffers *bf, int64_t npix, int64_t o0, float *dst,
                              int64_t plane, int64_t nt) {
    float val[TILE];
    for (int64_t q = 0; q < npix; q++) {
        pixel_values(e, bf, npix, q, o0, val);
        if (e->q > 0) {
            uint64_t *ob = bf->obits + q * e->q;
            for (int64_t k = 0; k < e->q; k++) {
                const float *thr = e->thr + k * e->ocp + o0;
                unsigned m = 0;
                for (int j = 0; j < TILE; j++) m |= (unsigned)(val[j] * e->sgn[o0 + j] >= thr[j]) << j;
                ob[k] |= (uint64_t)m << (o0 & 63);
            }
        } else {
            for (int64_t j = 0; j < nt; j++) {
                float v = val[j] * e->scale[o0 + j];
                if (e->bias) v = v + e->bias[o0 + j];
                dst[j * plane + q] = v;
            }
        }
    }
}

#if BK_X86
/* In-lane half of an 8 x 8 transpose of rows r[i] (pixel i, 8 channels): afterwards
 * u[j] holds channel j's pixels 0-3 in its low half and channel j + 4's in its high
 * half, and u[j + 4] their pixels 4-7.  The halves are then stored on their own: a
 * lane-crossing vperm2f128 is 8 micro-ops on this AMD core. */
TARGET_FAST static inline void transpose8_in_lanes(const __m256 *r, __m256 *u) {
    const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    u[0] = _mm256_shuffle_ps(t0, t2, 0x44);
    u[1] = _mm256_shuffle_ps(t0, t2, 0xEE);
    u[2] = _mm256_shuffle_ps(t1, t3, 0x44);
    u[3] = _mm256_shuffle_ps(t1, t3, 0xEE);
    u[4] = _mm256_shuffle_ps(t4, t6, 0x44);
    u[5] = _mm256_shuffle_ps(t4, t6, 0xEE);
    u[6] = _mm256_shuffle_ps(t5, t7, 0x44);
    u[7] = _mm256_shuffle_ps(t5, t7, 0xEE);
}

/* 8 pixels x 8 channels (r[i]: pixel i) -> channel rows, stored to dst[j * plane + 0..7]
 * for the nt real channels. */
TARGET_FAST static inline void store_transposed8(const __m256 *r, float *dst, int64_t plane, int64_t nt) {
    __m256 u[8];
    transpose8_in_lanes(r, u);
    for (int64_t j = 0; j < 4 && j < nt; j++) {
        _mm_storeu_ps(dst + j * plane, _mm256_castps256_ps128(u[j]));
        _mm_storeu_ps(dst + j * plane + 4, _mm256_castps256_ps128(u[j + 4]));
    }
    for (int64_t j = 4; j < nt; j++) {
        _mm_storeu_ps(dst + j * plane, _mm256_extractf128_ps(u[j - 4], 1));
        _mm_storeu_ps(dst + j * plane + 4, _mm256_extractf128_ps(u[j], 1));
    }
}

enum { MODE_SIGN, MODE_BINARY, MODE_PLANES };

/* Values (before scale) of one pixel's 8 channels; mode is a constant at each call site,
 * so every caller gets a loop specialised to one mode. */
#define LOAD8(p) _mm256_loadu_si256((const __m256i *)(p))
TARGET_FAST ALWAYS_INLINE __m256 tile_value(const epi_args *e, const buffers *bf, int64_t npix, int64_t q, int64_t o0,
                                            const int mode) {
    const __m256i a = LOAD8(bf->acc + q * TILE);
    if (mode == MODE_SIGN) {
        const int16_t *r = bf->rect + 4 * q;
        const int32_t nvalid = (int32_t)(r[1] - r[0]) * (r[3] - r[2]);
        const int64_t stride = e->kw + 1;
        const int32_t *base = e->wpre + o0;
        __m256i inside = LOAD8(base + (e->kh * stride + e->kw) * e->ocp); /* the weights' set bits, all taps */
        if (nvalid != e->taps) { /* only the valid taps' */
            inside = _mm256_add_epi32(
                _mm256_sub_epi32(_mm256_sub_epi32(LOAD8(base + (r[1] * stride + r[3]) * e->ocp),
                                                  LOAD8(base + (r[0] * stride + r[3]) * e->ocp)),
                                 LOAD8(base + (r[1] * stride + r[2]) * e->ocp)),
                LOAD8(base + (r[0] * stride + r[2]) * e->ocp));
        }
        const int32_t kvalid = (int32_t)e->c_true * nvalid;
        /* popcount(x ^ w) = popcount(x) + popcount(w) - 2 popcount(x & w) */
        const __m256i pc = _mm256_sub_epi32(_mm256_add_epi32(_mm256_set1_epi32(bf->ones[q]), inside),
                                            _mm256_add_epi32(a, a));
        return _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_set1_epi32(kvalid), _mm256_add_epi32(pc, pc)));
    }
    if (mode == MODE_BINARY) { /* S = sum_p 2^p dot_p = sum_p 2^p ones_p - 2 acc (the weighted AND counts), then D * S */
        const __m256i sum = _mm256_sub_epi32(_mm256_set1_epi32(bf->pix[q]), _mm256_add_epi32(a, a));
        return _mm256_mul_ps(_mm256_set1_ps(e->steps[0]), _mm256_cvtepi32_ps(sum));
    }
    __m256i t = _mm256_sub_epi32(_mm256_set1_epi32(bf->ones[q]), _mm256_add_epi32(a, a));
    __m256 v = _mm256_mul_ps(_mm256_set1_ps(e->steps[0]), _mm256_cvtepi32_ps(t));
    for (int64_t p = 1; p < e->planes; p++) {
        const __m256i ap = LOAD8(bf->acc + (p * npix + q) * TILE);
        t = _mm256_sub_epi32(_mm256_set1_epi32(bf->ones[p * npix + q]), _mm256_add_epi32(ap, ap));
        v = _mm256_add_ps(v, _mm256_mul_ps(_mm256_set1_ps(e->steps[p]), _mm256_cvtepi32_ps(t)));
    }
    return v;
}

/* Sign mode, per kind of window of the unit (see gather_windows): bf->corr[kind] = 2 * the
 * weights' set bits outside the image for the 8 channels from o0 (kind 0, a whole window: none). */
TARGET_FAST ALWAYS_INLINE void kind_corrections(const epi_args *e, const buffers *bf, int64_t npix, int64_t o0) {
    const int64_t stride = e->kw + 1;
    const int32_t *base = e->wpre + o0;
    const __m256i all = LOAD8(base + (e->kh * stride + e->kw) * e->ocp);
    _mm256_storeu_si256((__m256i *)bf->corr, _mm256_setzero_si256());
    for (int32_t k = 1; k < bf->cls[npix]; k++) {
        const int16_t *r = bf->rect + 4 * bf->cls[npix + k];
        const __m256i inside = _mm256_add_epi32(
            _mm256_sub_epi32(_mm256_sub_epi32(LOAD8(base + (r[1] * stride + r[3]) * e->ocp),
                                              LOAD8(base + (r[0] * stride + r[3]) * e->ocp)),
                             LOAD8(base + (r[1] * stride + r[2]) * e->ocp)),
            LOAD8(base + (r[0] * stride + r[2]) * e->ocp));
        const __m256i outside = _mm256_sub_epi32(all, inside);
        _mm256_storeu_si256((__m256i *)(bf->corr + k * TILE), _mm256_add_epi32(outside, outside));
    }
}

/* Packed output from integer sums (sign and binary-weighted modes, with d->ithr): the
 * float test sgn * v >= thr on v = S (sign) or v = D * S (binary-weighted) holds iff
 * z >= T for z = sgn * (S - C) and an integer T worked out once per layer
 * (bk_int_thresholds; C: sign mode's per-channel part, folded into T).  Per pixel that is
 * integer adds, one sign flip and one compare per threshold: no conversion, no float maths,
 * and the same bits as the float test.  z = sgn * (P + Y) with P the pixel's part (bf->pix)
 * and Y from the AND counts: 4 * and + the border correction of the pixel's kind of window
 * (sign), -2 * the weighted AND counts (binary). */
TARGET_FAST ALWAYS_INLINE void epilogue_bits_int(const epi_args *e, const buffers *bf, int64_t npix, int64_t o0,
                                                 const int mode) {
    const __m256i neg = _mm256_castps_si256(_mm256_cmp_ps(_mm256_loadu_ps(e->sgn + o0), _mm256_setzero_ps(),
                                                          _CMP_LT_OQ)); /* all ones where sgn < 0 */
    const int64_t Q = e->q, shift = o0 & 63;
    __m256i thr[MAX_PACK_PLANES];
    for (int64_t k = 0; k < Q; k++) thr[k] = LOAD8(e->ithr + k * e->ocp + o0);
    if (mode == MODE_SIGN) kind_corrections(e, bf, npix, o0);
    for (int64_t q = 0; q < npix; q++) {
        const __m256i a = LOAD8(bf->acc + q * TILE);
        __m256i y = mode == MODE_SIGN ? _mm256_add_epi32(_mm256_slli_epi32(a, 2), LOAD8(bf->corr + bf->cls[q] * TILE))
                                      : _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_add_epi32(a, a));
        y = _mm256_add_epi32(y, _mm256_set1_epi32(bf->pix[q]));
        const __m256i z = _mm256_sub_epi32(_mm256_xor_si256(y, neg), neg);
        uint64_t *ob = bf->obits + q * Q;
        for (int64_t k = 0; k < Q; k++) { /* T > z: missed */
            const unsigned missed = (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(thr[k], z)));
            ob[k] |= (uint64_t)(~missed & 0xffu) << shift;
        }
    }
}

/* Packed output: OR each threshold's hits into the pixel's output words. */
TARGET_FAST ALWAYS_INLINE void epilogue_bits(const epi_args *e, const buffers *bf, int64_t npix, int64_t o0,
                                             const int mode) {
    const __m256 sgn = _mm256_loadu_ps(e->sgn + o0);
    for (int64_t q = 0; q < npix; q++) {
        const __m256 v = _mm256_mul_ps(tile_value(e, bf, npix, q, o0, mode), sgn);
        uint64_t *ob = bf->obits + q * e->q;
        for (int64_t k = 0; k < e->q; k++) {
            const __m256 hit = _mm256_cmp_ps(v, _mm256_loadu_ps(e->thr + k * e->ocp + o0), _CMP_GE_OQ);
            ob[k] |= (uint64_t)(unsigned)_mm256_movemask_ps(hit) << (o0 & 63);
        }
    }
}

/* Float output: blocks of 8 pixels x 8 channels, transposed in registers so each
 * channel's 8 pixels are stored at once; the last pixels lane by lane. */
TARGET_FAST ALWAYS_INLINE void epilogue_floats(const epi_args *e, const buffers *bf, int64_t npix, int64_t o0,
                                               float *dst, int64_t plane, int64_t nt, const int mode) {
    const __m256 scale = _mm256_loadu_ps(e->scale + o0);
    const __m256 bias = e->bias ? _mm256_loadu_ps(e->bias + o0) : _mm256_setzero_ps();
    const int add_bias = e->bias != NULL;
    int64_t q = 0;
    for (; q + 8 <= npix; q += 8) {
        __m256 block[TILE];
        for (int i = 0; i < TILE; i++) {
            __m256 v = _mm256_mul_ps(tile_value(e, bf, npix, q + i, o0, mode), scale);
            block[i] = add_bias ? _mm256_add_ps(v, bias) : v;
        }
        if (nt == TILE) store_transposed8(block, dst + q, plane, TILE);
        else store_transposed8(block, dst + q, plane, nt);
    }
    for (; q < npix; q++) {
        float lanes[TILE];
        __m256 v = _mm256_mul_ps(tile_value(e, bf, npix, q, o0, mode), scale);
        _mm256_storeu_ps(lanes, add_bias ? _mm256_add_ps(v, bias) : v);
        for (int64_t j = 0; j < nt; j++) dst[j * plane + q] = lanes[j];
    }
}
/* Float output in sign and binary-weighted modes, transposed before the float maths:
 * the exact sum is S[j][px] = P[px] + C[j] + Y[j][px], with a per-pixel part P (sign:
 * valid taps * C - 2 * the row's set bits; binary: sum_p 2^p set bits of plane p; the
 * im2col leaves it in bf->pix, once for all channel tiles), a
 * per-channel part C (sign: -2 * the weights' set bits over all taps) and Y from the
 * AND counts (sign: 4 * and, less 2 * the taps outside the image's weight bits at the
 * border; binary: -2 * sum_p 2^p and_p).  Only the 8 Y rows of a block are transposed;
 * P and C are then added per channel row, and the float steps (D * S, * scale, + bias)
 * run on whole rows in the same order as elsewhere, with no per-pixel broadcasts. */
/* The residual epilogue of one value (channel o, pixel q of the row): the steps and order of
 * residual_channel, for the pixels the vector path leaves over. */
ALWAYS_INLINE float residual_value(const epi_args *e, int64_t o, int64_t q, int64_t plane, float v) {
    v = v + (o < e->res_c ? e->res[o * plane + q] : 0.0f);
    if (e->act_b_in) v = v + e->act_b_in[o];
    if (e->act_slope) v = v > 0.0f ? v : e->act_slope[o] * v;
    if (e->act_b_out) v = v + e->act_b_out[o];
    return v;
}

/* 4 pixels of one channel in a 128-bit half: its shortcut row, or +0 beyond the input's channels. */
TARGET_FAST ALWAYS_INLINE __m128 shortcut4(const epi_args *e, int64_t o, int64_t q, int64_t plane) {
    return o < e->res_c ? _mm_loadu_ps(e->res + o * plane + q) : _mm_setzero_ps();
}

TARGET_FAST ALWAYS_INLINE __m256 per_channel(const float *values, int64_t o0, int64_t j) {
    const __m256 v = _mm256_loadu_ps(values + o0); /* channel j in the low half, j + 4 in the high half */
    return _mm256_permutevar_ps(v, _mm256_set1_epi32((int)j));
}

/* The residual epilogue on the rows of the float epilogue: lo = channel j (low half) and j + 4
 * (high half) at pixels q..q+3, hi at q+4..q+7; same steps and order as residual_channel. */
TARGET_FAST ALWAYS_INLINE void residual_rows(const epi_args *e, int64_t o0, int64_t j, int64_t q, int64_t plane,
                                             int64_t nt, __m256 *lo, __m256 *hi) {
    const int64_t a = o0 + j, b = j + 4 < nt ? o0 + j + 4 : e->res_c; /* b past res_c: no shortcut read */
    *lo = _mm256_add_ps(*lo, _mm256_set_m128(shortcut4(e, b, q, plane), shortcut4(e, a, q, plane)));
    *hi = _mm256_add_ps(*hi, _mm256_set_m128(shortcut4(e, b, q + 4, plane), shortcut4(e, a, q + 4, plane)));
    if (e->act_b_in) {
        const __m256 c = per_channel(e->act_b_in, o0, j);
        *lo = _mm256_add_ps(*lo, c);
        *hi = _mm256_add_ps(*hi, c);
    }
    if (e->act_slope) {
        const __m256 c = per_channel(e->act_slope, o0, j), zero = _mm256_setzero_ps();
        *lo = _mm256_blendv_ps(_mm256_mul_ps(c, *lo), *lo, _mm256_cmp_ps(*lo, zero, _CMP_GT_OQ));
        *hi = _mm256_blendv_ps(_mm256_mul_ps(c, *hi), *hi, _mm256_cmp_ps(*hi, zero, _CMP_GT_OQ));
    }
    if (e->act_b_out) {
        const __m256 c = per_channel(e->act_b_out, o0, j);
        *lo = _mm256_add_ps(*lo, c);
        *hi = _mm256_add_ps(*hi, c);
    }
}

TARGET_FAST ALWAYS_INLINE void epilogue_rows(const epi_args *e, const buffers *bf, int64_t npix, int64_t o0,
                                             float *dst, int64_t plane, int64_t nt, const int mode) {
    const __m256 scale = _mm256_loadu_ps(e->scale + o0);
    const __m256 bias = e->bias ? _mm256_loadu_ps(e->bias + o0) : _mm256_setzero_ps();
    const int add_bias = e->bias != NULL;
    const __m256 step = _mm256_set1_ps(mode == MODE_BINARY ? e->steps[0] : 1.0f); /* sign: exact integers, no step */
    const int64_t stride = e->kw + 1;
    const int32_t *base = e->wpre + o0;
    const __m256i zero = _mm256_setzero_si256();
    const __m256i all = mode == MODE_SIGN ? LOAD8(base + (e->kh * stride + e->kw) * e->ocp) : zero;
    const __m256i cst = _mm256_sub_epi32(zero, _mm256_add_epi32(all, all));
    /* channel j in the low half, j + 4 in the high half: the layout of the transposed rows */
    const __m256 sc[4] = {_mm256_shuffle_ps(scale, scale, 0x00), _mm256_shuffle_ps(scale, scale, 0x55),
                          _mm256_shuffle_ps(scale, scale, 0xAA), _mm256_shuffle_ps(scale, scale, 0xFF)};
    const __m256 bi[4] = {_mm256_shuffle_ps(bias, bias, 0x00), _mm256_shuffle_ps(bias, bias, 0x55),
                          _mm256_shuffle_ps(bias, bias, 0xAA), _mm256_shuffle_ps(bias, bias, 0xFF)};
    const __m256i cc[4] = {_mm256_shuffle_epi32(cst, 0x00), _mm256_shuffle_epi32(cst, 0x55),
                           _mm256_shuffle_epi32(cst, 0xAA), _mm256_shuffle_epi32(cst, 0xFF)};
    if (mode == MODE_SIGN && npix >= 8) kind_corrections(e, bf, npix, o0);
    const int fuse = e->res != NULL;
    int64_t q = 0;
    for (; q + 8 <= npix; q += 8) {
        __m256 y[8], u[8]; /* int32 lanes; the float shuffles only move them */
        if (mode == MODE_SIGN) { /* no branch per pixel: every pixel adds its kind's correction */
            for (int i = 0; i < 8; i++) {
                const __m256i v = _mm256_slli_epi32(LOAD8(bf->acc + (q + i) * TILE), 2);
                y[i] = _mm256_castsi256_ps(_mm256_add_epi32(v, LOAD8(bf->corr + bf->cls[q + i] * TILE)));
            }
        } else {
            for (int i = 0; i < 8; i++) { /* acc holds the weighted AND counts */
                const __m256i x = LOAD8(bf->acc + (q + i) * TILE);
                y[i] = _mm256_castsi256_ps(_mm256_sub_epi32(zero, _mm256_add_epi32(x, x)));
            }
        }
        transpose8_in_lanes(y, u);
        const __m256i plo = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(bf->pix + q)));
        const __m256i phi = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(bf->pix + q + 4)));
        for (int64_t j = 0; j < 4 && j < nt; j++) {
            const __m256i slo = _mm256_add_epi32(_mm256_add_epi32(_mm256_castps_si256(u[j]), plo), cc[j]);
            const __m256i shi = _mm256_add_epi32(_mm256_add_epi32(_mm256_castps_si256(u[j + 4]), phi), cc[j]);
            __m256 lo = _mm256_cvtepi32_ps(slo), hi = _mm256_cvtepi32_ps(shi);
            if (mode == MODE_BINARY) {
                lo = _mm256_mul_ps(step, lo);
                hi = _mm256_mul_ps(step, hi);
            }
            lo = _mm256_mul_ps(lo, sc[j]);
            hi = _mm256_mul_ps(hi, sc[j]);
            if (add_bias) {
                lo = _mm256_add_ps(lo, bi[j]);
                hi = _mm256_add_ps(hi, bi[j]);
            }
            if (fuse) residual_rows(e, o0, j, q, plane, nt, &lo, &hi);
            float *row = dst + j * plane + q;
            _mm_storeu_ps(row, _mm256_castps256_ps128(lo));
            _mm_storeu_ps(row + 4, _mm256_castps256_ps128(hi));
            if (j + 4 < nt) {
                _mm_storeu_ps(row + 4 * plane, _mm256_extractf128_ps(lo, 1));
                _mm_storeu_ps(row + 4 * plane + 4, _mm256_extractf128_ps(hi, 1));
            }
        }
    }
    for (; q < npix; q++) {
        float lanes[TILE];
        __m256 v = _mm256_mul_ps(tile_value(e, bf, npix, q, o0, mode), scale);
        _mm256_storeu_ps(lanes, add_bias ? _mm256_add_ps(v, bias) : v);
        for (int64_t j = 0; j < nt; j++) dst[j * plane + q] = fuse ? residual_value(e, o0 + j, q, plane, lanes[j])
                                                                  : lanes[j];
    }
}
#undef LOAD8

TARGET_FAST static void epilogue_fast(const epi_args *e, const buffers *bf, int64_t npix, int64_t o0, float *dst,
                                      int64_t plane, int64_t nt) {
    const int mode = e->sign ? MODE_SIGN : e->binary ? MODE_BINARY : MODE_PLANES;
    if (e->q > 0 && e->ithr != NULL && mode != MODE_PLANES) {
        if (mode == MODE_SIGN) epilogue_bits_int(e, bf, npix, o0, MODE_SIGN);
        else epilogue_bits_int(e, bf, npix, o0, MODE_BINARY);
    } else if (e->q > 0) {
        if (mode == MODE_SIGN) epilogue_bits(e, bf, npix, o0, MODE_SIGN);
        else if (mode == MODE_BINARY) epilogue_bits(e, bf, npix, o0, MODE_BINARY);
        else epilogue_bits(e, bf, npix, o0, MODE_PLANES);
    } else {
        if (mode == MODE_SIGN) epilogue_rows(e, bf, npix, o0, dst, plane, nt, MODE_SIGN);
        else if (mode == MODE_BINARY) epilogue_rows(e, bf, npix, o0, dst, plane, nt, MODE_BINARY);
        else epilogue_floats(e, bf, npix, o0, dst, plane, nt, MODE_PLANES);
    }
}
#endif

/* One work item: output channels [64 * chunk, +64) of one unit (pool output rows) of image b. */
/* Returns 0 when its scratch memory could not grow (nothing written), else 1. */
/* Whether the float epilogue of the AVX paths runs the residual epilogue itself (the shortcut
 * unpooled, sign or binary-weighted input planes); residual_channel then only max-pools. */
static int residual_fusable(const bk_conv_desc *d) {
    return d->out_planes == 0 && d->xf != NULL && d->res_pool == 1 && (d->steps == NULL || d->in_binary) &&
           (d->res || d->act_b_in || d->act_slope || d->act_b_out);
}

ALWAYS_INLINE int conv_item(const bk_conv_desc *d, scratch *s, int64_t b, int64_t unit, int64_t chunk, mk_fn mk,
                             epi_fn epilogue, const int split, const int can_fuse) {
    const int64_t pool = d->pool, owe = pool > 1 ? (d->ow / pool) * pool : d->ow, npix = pool * owe;
    const int64_t K = d->kh * d->kw * d->words, Q = d->out_planes, ocp = (d->oc + TILE - 1) / TILE * TILE;
    buffers bf;
    if (!carve(s, d, npix, &bf)) return 0;
    const int64_t key = b * (d->oh + 1) + unit;
    if (s->key != key) {
        gather_unit(d, &bf, b, unit, owe, npix, split);
        s->key = key;
    }
    if (Q > 0) memset(bf.obits, 0, (size_t)(npix * Q) * 8);
    const epi_args e = {d->steps == NULL, d->in_binary != 0, d->kh * d->kw, d->c_true, d->kh, d->kw, ocp, d->planes, Q, d->wpre,
                        d->steps, d->scale, d->bias, d->thr, d->sgn, d->ithr,
                        can_fuse && residual_fusable(d) ? d->xf + (b * d->c_true * d->h + unit) * d->w : NULL,
                        d->res ? d->c_true : 0, d->act_b_in, d->act_slope, d->act_b_out};
    const int64_t o_begin = chunk * CHUNK, o_end = d->oc < o_begin + CHUNK ? d->oc : o_begin + CHUNK;
    const int64_t plane = d->oh * d->ow;
    for (int64_t o0 = o_begin; o0 < o_end; o0 += TILE) {
        const int64_t nt = o_end - o0 < TILE ? o_end - o0 : TILE;
        if (d->in_binary) /* one weighted row per pixel */
            mk(bf.col, npix, d->wt + (o0 / TILE) * K * TILE, K, d->planes, bf.acc);
        else
            mk(bf.col, d->planes * npix, d->wt + (o0 / TILE) * K * TILE, K, 1, bf.acc);
        epilogue(&e, &bf, npix, o0, Q == 0 ? d->out + (b * d->oc + o0) * plane + unit * d->ow : NULL, plane, nt);
    }
    if (Q == 0) return 1;
    /* max pool: a pooled pixel reaches a level if any pixel of its window does; padding
     * channels of the last word stay 0 */
    const int64_t pw_out = owe / pool, ph_out = d->oh / pool, owords = (d->oc + 63) / 64;
    const int64_t nch = o_end - o_begin, qout = packed_planes(Q, d->out_binary != 0);
    const uint64_t valid = nch == 64 ? ~(uint64_t)0 : (((uint64_t)1 << nch) - 1);
    for (int64_t px = 0; px < pw_out; px++) {
        uint64_t reached[MAX_PACK_PLANES], planes[MAX_PACK_PLANES];
        for (int64_t k = 0; k < Q; k++) {
            uint64_t g = 0;
            for (int64_t r = 0; r < pool; r++)
                for (int64_t dx = 0; dx < pool; dx++) g |= bf.obits[(r * owe + px * pool + dx) * Q + k];
            reached[k] = planes[k] = g;
        }
        if (d->levels == NULL) {
            if (d->out_binary) therm_to_binary(reached, 1, Q, planes, 1);
            for (int64_t k = 0; k < qout; k++)
                d->out_bits[(((b * qout + k) * ph_out + unit) * pw_out + px) * owords + chunk] =
                    (d->out_sign ? ~planes[k] : planes[k]) & valid;
            continue;
        }
        for (int64_t j = 0; j < nch; j++) { /* the level is the count of thermometer planes reached */
            int64_t level = 0;
            for (int64_t k = 0; k < Q; k++) level += (int64_t)((reached[k] >> j) & 1);
            d->out[((b * d->oc + o_begin + j) * ph_out + unit) * pw_out + px] = d->levels[level];
        }
    }
    return 1;
}

typedef int (*item_fn)(const bk_conv_desc *, scratch *, int64_t, int64_t, int64_t);
static int item_portable(const bk_conv_desc *d, scratch *s, int64_t b, int64_t unit, int64_t chunk) {
    return conv_item(d, s, b, unit, chunk, mk_and_portable, epilogue_portable, 0, 0);
}
#if BK_X86
TARGET_FAST static int item_fast(const bk_conv_desc *d, scratch *s, int64_t b, int64_t unit, int64_t chunk) {
    return conv_item(d, s, b, unit, chunk, mk_split_fast, epilogue_fast, 1, 1); /* nibble-split im2col */
}
TARGET_512 static int item_avx512(const bk_conv_desc *d, scratch *s, int64_t b, int64_t unit, int64_t chunk) {
    return conv_item(d, s, b, unit, chunk, mk_avx512, epilogue_fast, 0, 1); /* plain im2col words */
}
#endif

typedef struct {
    const bk_conv_desc *d;
    item_fn fn;
    int64_t units, chunks;
    _Atomic int failed; /* an item could not get scratch memory */
} conv_task;

static void conv_task_item(void *arg, int64_t it, uint32_t job) {
    const conv_task *t = (const conv_task *)arg;
    scratch *s = &tls_scratch;
    if (s->job != job) { /* a new call: the im2col cache belongs to other data */
        s->job = job;
        s->key = -1;
    }
    const int64_t chunk = it % t->chunks, rest = it / t->chunks;
    if (!t->fn(t->d, s, rest / t->units, rest % t->units, chunk)) atomic_store(&t->failed, 1);
}

/* ------------------------------------------------------- residual epilogue */

/* A binary conv in a real-valued residual unit (Bi-Real-Net, ReActNet):
 *     out = maxpool_fpool(b_out + prelu(b_in + (v + shortcut(xf))))
 * with v the conv's float output and shortcut(xf) its own float input, average-pooled by
 * res_pool, channels beyond the input's read as 0.  Every step is the float operation the
 * unit's modules run, in their order, so the result is theirs bit for bit: the pool sums
 * its window row by row from 0 and divides by the window size (as torch's CPU average
 * pool), PReLU is x > 0 ? x : slope * x, the max pool keeps the first of equal values. */
typedef struct {
    const bk_conv_desc *d;
    const float *v; /* [N][OC][OH][OW] the conv's values */
} post_task;

/* The shortcut add, biases and PReLU of one channel, in place. */
ALWAYS_INLINE void residual_steps(const bk_conv_desc *d, float *restrict v, int64_t b, int64_t o) {
    const int64_t oh = d->oh, ow = d->ow, n = oh * ow, rp = d->res_pool;
    if (d->res && o < d->c_true) {
        const float *restrict x = d->xf + (b * d->c_true + o) * d->h * d->w;
        if (rp == 1) {
            for (int64_t i = 0; i < n; i++) v[i] = v[i] + x[i];
        } else {
            const float count = (float)(rp * rp);
            for (int64_t y = 0; y < oh; y++)
                for (int64_t xx = 0; xx < ow; xx++) {
                    float sum = 0.0f;
                    for (int64_t i = 0; i < rp; i++)
                        for (int64_t j = 0; j < rp; j++) sum += x[(y * rp + i) * d->w + xx * rp + j];
                    v[y * ow + xx] = v[y * ow + xx] + sum / count;
                }
        }
    } else if (d->res) {
        for (int64_t i = 0; i < n; i++) v[i] = v[i] + 0.0f; /* the appended zero channels: -0 becomes +0 */
    }
    if (d->act_b_in) {
        const float c = d->act_b_in[o];
        for (int64_t i = 0; i < n; i++) v[i] = v[i] + c;
    }
    if (d->act_slope) {
        const float c = d->act_slope[o];
        for (int64_t i = 0; i < n; i++) v[i] = v[i] > 0.0f ? v[i] : c * v[i];
    }
    if (d->act_b_out) {
        const float c = d->act_b_out[o];
        for (int64_t i = 0; i < n; i++) v[i] = v[i] + c;
    }
}

/* One channel of one image; plain loops over contiguous rows that the compiler vectorizes. */
ALWAYS_INLINE void residual_channel(const bk_conv_desc *d, float *values, int64_t b, int64_t o, int pool_only) {
    const int64_t oh = d->oh, ow = d->ow, n = oh * ow, fp = d->fpool;
    float *restrict v = values + (b * d->oc + o) * n;
    if (!pool_only) residual_steps(d, v, b, o); /* else the float epilogue did them */
    if (fp == 1) return;
    const int64_t ph = oh / fp, pw = ow / fp;
    float *restrict out = d->out + (b * d->oc + o) * ph * pw;
    if (fp == 2) { /* the common window, in a form the compiler vectorizes; a NaN anywhere gives NaN */
        for (int64_t y = 0; y < ph; y++) {
            const float *restrict r0 = v + 2 * y * ow, *restrict r1 = r0 + ow;
            float *restrict dst = out + y * pw;
            for (int64_t xx = 0; xx < pw; xx++) {
                const float a = r0[2 * xx], b2 = r0[2 * xx + 1], c = r1[2 * xx], e = r1[2 * xx + 1];
                float m = a;
                m = b2 > m ? b2 : m;
                m = c > m ? c : m;
                m = e > m ? e : m;
                const int nan = (a != a) | (b2 != b2) | (c != c) | (e != e);
                dst[xx] = nan ? __builtin_nanf("") : m;
            }
        }
        return;
    }
    for (int64_t y = 0; y < ph; y++)
        for (int64_t xx = 0; xx < pw; xx++) {
            float m = v[(y * fp) * ow + xx * fp];
            for (int64_t i = 0; i < fp; i++)
                for (int64_t j = 0; j < fp; j++) {
                    const float c = v[(y * fp + i) * ow + xx * fp + j];
                    m = (c > m || c != c) ? c : m; /* NaN propagates, as in torch's max pool */
                }
            out[y * pw + xx] = m;
        }
}

typedef void (*residual_fn)(const bk_conv_desc *, float *, int64_t, int64_t, int);
static void residual_portable(const bk_conv_desc *d, float *v, int64_t b, int64_t o, int pool_only) {
    residual_channel(d, v, b, o, pool_only);
}
#if BK_X86
TARGET_FAST static void residual_fast(const bk_conv_desc *d, float *v, int64_t b, int64_t o, int pool_only) {
    residual_channel(d, v, b, o, pool_only);
}
TARGET_512 static void residual_avx512(const bk_conv_desc *d, float *v, int64_t b, int64_t o, int pool_only) {
    residual_channel(d, v, b, o, pool_only);
}
#endif

static void residual_item(void *arg, int64_t it, uint32_t job) {
    (void)job;
    const post_task *t = (const post_task *)arg;
    residual_fn fn = residual_portable;
    int pool_only = 0;
#if BK_X86
    if (g_isa == ISA_AVX2) fn = residual_fast;
    if (g_isa == ISA_AVX512) fn = residual_avx512;
    pool_only = g_isa != ISA_PORTABLE && residual_fusable(t->d);
#endif
    fn(t->d, (float *)t->v, it / t->d->oc, it % t->d->oc, pool_only);
}

static int has_residual_epilogue(const bk_conv_desc *d) {
    return d->out_planes == 0 && (d->res || d->act_b_in || d->act_slope || d->act_b_out || d->fpool > 1);
}

/* Binary convolution (and fully connected layer: a 1x1 conv on a 1x1 image); returns
 * 0, or -1 when scratch memory ran out (the output is then incomplete).  Work
 * items are (image, unit, 64-channel chunk), chunk fastest, so a thread that takes
 * consecutive items reuses the unit's im2col. */
int64_t bk_conv(const bk_conv_desc *d) {
    item_fn fn = item_portable;
#if BK_X86
    if (g_isa == ISA_AVX2) fn = item_fast;
    if (g_isa == ISA_AVX512) fn = item_avx512;
#endif
    const int threads = (int)(d->threads < 1 ? 1 : d->threads);
    float *const out_final = d->out; /* with a float max pool, the conv's values go elsewhere first */
    bk_conv_desc local;
    if (d->xf != NULL) { /* pack the float input into this thread's kept buffer */
        static __thread uint64_t *packed = NULL;
        static __thread size_t capacity = 0;
        const size_t need = (size_t)(d->n * d->planes * d->h * d->w * d->words) * sizeof(uint64_t);
        if (need > capacity) {
            uint64_t *grown = (uint64_t *)realloc(packed, need);
            if (grown == NULL) return -1;
            packed = grown;
            capacity = need;
        }
        const int64_t thresholds = d->in_binary ? ((int64_t)1 << d->planes) - 1 : d->planes;
        const pack_rule rule = {d->in_thr, d->c_true, 1, d->in_sgn, thresholds, (int)d->in_cmp, d->in_binary != 0};
        pack_any(d->xf, d->n, d->c_true, d->h, d->w, d->words, &rule, packed, threads);
        local = *d;
        local.x = packed;
        d = &local;
    }
    const int post = has_residual_epilogue(d);
    if (post && d->fpool > 1) { /* the values before the max pool go to this thread's kept buffer */
        static __thread float *values = NULL;
        static __thread size_t held = 0;
        const size_t need = (size_t)(d->n * d->oc * d->oh * d->ow) * sizeof(float);
        if (need > held) {
            float *grown = (float *)realloc(values, need);
            if (grown == NULL) return -1;
            values = grown;
            held = need;
        }
        if (d != &local) {
            local = *d;
            d = &local;
        }
        local.out = values;
    }
    const int64_t units = d->oh / d->pool, chunks = (d->oc + CHUNK - 1) / CHUNK, items = d->n * units * chunks;
    conv_task task = {d, fn, units, chunks, 0};
    parallel_for_grain(conv_task_item, &task, items, threads, chunks); /* a thread keeps whole rows: one im2col each */
    if (atomic_load(&task.failed)) return -1;
#if BK_X86
    if (g_isa != ISA_PORTABLE && residual_fusable(d) && d->fpool == 1) return 0; /* all done in the epilogue */
#endif
    if (post) { /* d->out holds the values: the output itself, or the buffer the max pool reads */
        bk_conv_desc final = *d;
        final.out = out_final;
        const post_task run = {&final, d->out};
        parallel_for_grain(residual_item, (void *)&run, d->n * d->oc, threads, 1);
    }
    return 0;
}

/* Layers run one after the other, each reading what the previous one wrote (the
 * caller set the pointers): one call from Python for a whole chain of packed layers.
 * Returns 0, or -1 - i when layer i ran out of scratch memory (nothing after it ran). */
int64_t bk_conv_chain(const bk_conv_desc *const *descs, int64_t count) {
    for (int64_t i = 0; i < count; i++)
        if (bk_conv(descs[i]) != 0) return -1 - i;
    return 0;
}

/* Integer thresholds of the packed epilogue (d->ithr, [Q][OCP]) into out; returns 1, or 0
 * where the values are not integer sums (thermometer planes: the float test stays).
 * Sign mode: v = S exactly, so sgn * v >= thr iff z = sgn * S >= ceil(thr); with
 * S = C + (the rest), C = -2 * the weights' set bits, T = ceil(thr) - sgn * C.  Binary-weighted
 * planes: v = fl(D * S) and sgn * v = fl(D * z) (rounding is odd-symmetric), monotone in z, so
 * the test holds from the least z with fl(D * z) >= thr on, found by stepping from
 * ceil(thr / D) with the same float32 product.  NaN never holds; +-inf clamp to +-2^30,
 * beyond any sum. */
#define ITHR_LIMIT ((int64_t)1 << 30)
static int64_t clamp_limit(int64_t v) { return v < -ITHR_LIMIT ? -ITHR_LIMIT : v > ITHR_LIMIT ? ITHR_LIMIT : v; }
static int64_t ceil_within_limit(double v) { /* clamped to +-2^30; no libm */
    if (v >= (double)ITHR_LIMIT) return ITHR_LIMIT;
    if (v <= -(double)ITHR_LIMIT) return -ITHR_LIMIT;
    const int64_t i = (int64_t)v; /* towards zero */
    return (double)i < v ? i + 1 : i;
}

int64_t bk_int_thresholds(const bk_conv_desc *d, int32_t *out) {
    const int sign = d->steps == NULL;
    if (d->out_planes <= 0 || (!sign && !d->in_binary)) return 0;
    const int64_t ocp = (d->oc + TILE - 1) / TILE * TILE;
    const int32_t *all = d->wpre + (d->kh * (d->kw + 1) + d->kw) * ocp;
    const float D = sign ? 1.0f : d->steps[0];
    for (int64_t k = 0; k < d->out_planes; k++)
        for (int64_t o = 0; o < ocp; o++) {
            const float t = d->thr[k * ocp + o];
            int64_t T;
            if (t != t) T = ITHR_LIMIT;
            else if (t >= (float)ITHR_LIMIT) T = ITHR_LIMIT;
            else if (t <= -(float)ITHR_LIMIT) T = -ITHR_LIMIT;
            else if (sign) T = ceil_within_limit((double)t);
            else {
                T = ceil_within_limit((double)t / (double)D);
                volatile float v; /* the epilogue's float32 product, not a wider or fused one */
                for (;;) {
                    v = D * (float)(T - 1);
                    if (T <= -ITHR_LIMIT || !(v >= t)) break;
                    T--;
                }
                for (;;) {
                    v = D * (float)T;
                    if (T >= ITHR_LIMIT || v >= t) break;
                    T++;
                }
            }
            if (sign && T > -ITHR_LIMIT && T < ITHR_LIMIT) T += (d->sgn[o] < 0 ? -2 : 2) * (int64_t)all[o];
            out[k * ocp + o] = (int32_t)clamp_limit(T);
        }
    return 1;
}

/* Structure size, so the Python side can check its mirror of bk_conv_desc. */
int64_t bk_conv_desc_size(void) { return (int64_t)sizeof(bk_conv_desc); }

#include "pqlut.h"
#include "pqconv.h"
