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

/* Binary-weighted planes from thermometer ones.  With levels D * {0, 1, ..., 2^k - 1}
 * the level index m of a value is the number of thresholds it reaches, and bit j of
 * m is the XOR of the thermometer bits t[c * 2^j - 1] = [m >= c * 2^j], c = 1, 2, ...:
 * those bits are nested (t[i + 1] implies t[i]), so their XOR is 1 exactly when an odd
 * number of multiples of 2^j are <= m, i.e. when m mod 2^(j+1) >= 2^j.  therm: q words, one per threshold; out: the planes. */
ALWAYS_INLINE void therm_to_binary(const uint64_t *therm, int64_t stride, int64_t q, uint64_t *out,
                                   int64_t out_stride) {
    for (int64_t j = 0; ((int64_t)1 << j) <= q; j++) {
        uint64_t bits = 0;
        for (int64_t i = ((int64_t)1 << j) - 1; i < q; i += (int64_t)1 << j) bits ^= therm[i * stride];
        out[j * out_stride] = bits;
    }
}

/* Packed planes of q thresholds: q thermometer planes, or log2(q + 1) binary-weighted ones. */
static inline int64_t packed_planes(int64_t q, int binary) {
    if (!binary) return q;
    int64_t k = 0;
    while (((int64_t)1 << k) - 1 < q) k++;
    return k;
}

/* Writes the words of one block: therm [q][PACK_PIXELS] (one word per pixel), dst the
 * first plane's word of the block's first pixel. */
ALWAYS_INLINE void emit_block(const uint64_t *therm, int64_t q, int binary, int64_t np, int64_t hw, int64_t words,
                              uint64_t *dst) {
    if (!binary) {
        for (int64_t k = 0; k < q; k++)
            for (int64_t p = 0; p < np; p++) dst[(k * hw + p) * words] = therm[k * PACK_PIXELS + p];
        return;
    }
    for (int64_t p = 0; p < np; p++) therm_to_binary(therm + p, PACK_PIXELS, q, dst + p * words, hw * words);
}

/* How float values become bits: plane k of channel c compares sgn[c] * x (x itself when
 * sgn is NULL; a factor of +-1 is exact) with thr[k * kstride + c * cstride] by cmp:
 * cstride 0 gives one threshold per plane, cstride 1 and kstride C one per plane and
 * channel (a BatchNorm folded in, whose negative scale flips the comparison). */
typedef struct {
    const float *thr;
    int64_t kstride, cstride;
    const float *sgn;
    int64_t q; /* thresholds */
    int cmp, binary;
} pack_rule;

ALWAYS_INLINE float rule_threshold(const pack_rule *r, int64_t k, int64_t ch) {
    return r->thr[k * r->kstride + ch * r->cstride];
}

ALWAYS_INLINE float rule_input(const pack_rule *r, float v, int64_t ch) { return r->sgn ? r->sgn[ch] * v : v; }

/* One block of 64 pixels of one channel word.  x: float NCHW; out: [N][P][H][W][words]
 * with P = packed_planes(q, binary). */
ALWAYS_INLINE void pack_block(const float *x, int64_t c, int64_t hw, int64_t words, const pack_rule *r, uint64_t *out,
                              int64_t b, int64_t wd, int64_t p0) {
    const int64_t c0 = wd * 64, cn = c - c0 < 64 ? c - c0 : 64, np = hw - p0 < PACK_PIXELS ? hw - p0 : PACK_PIXELS;
    uint64_t therm[MAX_PACK_PLANES * PACK_PIXELS];
    for (int64_t k = 0; k < r->q; k++) {
        uint64_t *acc = therm + k * PACK_PIXELS;
        for (int64_t p = 0; p < np; p++) acc[p] = 0;
        for (int64_t ch = 0; ch < cn; ch++) {
            const float *src = x + (b * c + c0 + ch) * hw + p0, t = rule_threshold(r, k, c0 + ch);
            for (int64_t p = 0; p < np; p++)
                acc[p] |= (uint64_t)compare(rule_input(r, src[p], c0 + ch), t, r->cmp) << ch;
        }
    }
    emit_block(therm, r->q, r->binary, np, hw, words, out + ((b * packed_planes(r->q, r->binary)) * hw + p0) * words + wd);
}

typedef void (*pack_fn)(const float *, int64_t, int64_t, int64_t, const pack_rule *, uint64_t *, int64_t, int64_t,
                        int64_t);
static void pack_block_portable(const float *x, int64_t c, int64_t hw, int64_t words, const pack_rule *r,
                                uint64_t *out, int64_t b, int64_t wd, int64_t p0) {
    pack_block(x, c, hw, words, r, out, b, wd, p0);
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

/* Eight pixels at a time: each 8-float load is compared with every threshold, and
 * the compares of one output plane (one threshold; or for binary-weighted planes the
 * XOR of its thermometer bits, as in therm_to_binary) give a byte by movemask (bit
 * j = pixel j).  The 64 bytes of a plane's channel word are then transposed with
 * byte-MSB movemasks, shifting every byte left by one between them.  Channels are
 * read one plane row at a time (planes 4 KiB apart would evict each other from L1).
 * cmp is a constant at each call site, so the compare is chosen outside the loops. */
TARGET_FAST ALWAYS_INLINE void pack_masks(const float *x, int64_t hw, int64_t c0, int64_t cn, int64_t octets,
                                          const pack_rule *r, const int64_t q, const int binary,
                                          uint8_t (*mask)[PACK_PIXELS / 8][64], const int cmp) {
    const int64_t planes = packed_planes(q, binary);
    __m256 t[MAX_PACK_PLANES];
    for (int64_t ch = 0; ch < cn; ch++) {
        const float *src = x + ch * hw;
        if (ch == 0 || r->cstride != 0)
            for (int64_t k = 0; k < q; k++) t[k] = _mm256_set1_ps(rule_threshold(r, k, c0 + ch));
        const __m256 sgn = _mm256_set1_ps(r->sgn ? r->sgn[c0 + ch] : 1.0f);
        for (int64_t o = 0; o < octets; o++) {
            __m256 v = _mm256_loadu_ps(src + 8 * o);
            if (r->sgn) v = _mm256_mul_ps(v, sgn);
            if (!binary) {
                for (int64_t k = 0; k < q; k++) mask[k][o][ch] = (uint8_t)_mm256_movemask_ps(compare8(v, t[k], cmp));
                continue;
            }
            for (int64_t j = 0; j < planes; j++) {
                __m256 m = _mm256_setzero_ps();
                for (int64_t i = ((int64_t)1 << j) - 1; i < q; i += (int64_t)1 << j)
                    m = _mm256_xor_ps(m, compare8(v, t[i], cmp));
                mask[j][o][ch] = (uint8_t)_mm256_movemask_ps(m);
            }
        }
    }
}

TARGET_FAST static void pack_block_fast(const float *x, int64_t c, int64_t hw, int64_t words, const pack_rule *r,
                                        uint64_t *out, int64_t b, int64_t wd, int64_t p0) {
    const int64_t c0 = wd * 64, cn = c - c0 < 64 ? c - c0 : 64, np = hw - p0 < PACK_PIXELS ? hw - p0 : PACK_PIXELS;
    const int64_t q = r->q, binary = r->binary, octets = np / 8, full = octets * 8, planes = packed_planes(q, binary);
    uint8_t mask[MAX_PACK_PLANES][PACK_PIXELS / 8][64] __attribute__((aligned(32)));
    if (cn < 64) memset(mask, 0, (size_t)planes * sizeof(mask[0]));
    const float *xb = x + (b * c + c0) * hw + p0;
#define PACK_MASKS(Q, BINARY)                                                                        \
    switch (r->cmp) {                                                                                \
    case CMP_LT: pack_masks(xb, hw, c0, cn, octets, r, Q, BINARY, mask, CMP_LT); break;              \
    case CMP_GE: pack_masks(xb, hw, c0, cn, octets, r, Q, BINARY, mask, CMP_GE); break;              \
    case CMP_GT: pack_masks(xb, hw, c0, cn, octets, r, Q, BINARY, mask, CMP_GT); break;              \
    case CMP_NGE: pack_masks(xb, hw, c0, cn, octets, r, Q, BINARY, mask, CMP_NGE); break;            \
    default: pack_masks(xb, hw, c0, cn, octets, r, Q, BINARY, mask, CMP_NGT);                        \
    }
    /* the common counts as constants: sign bits, 2-bit thermometer and binary-weighted codes */
    if (q == 1 && !binary) {
        PACK_MASKS(1, 0)
    } else if (q == 3 && binary) {
        PACK_MASKS(3, 1)
    } else if (q == 3) {
        PACK_MASKS(3, 0)
    } else {
        PACK_MASKS(q, binary)
    }
#undef PACK_MASKS
    uint64_t *dst = out + ((b * planes) * hw + p0) * words + wd;
    for (int64_t k = 0; k < planes; k++) {
        uint64_t *row = dst + k * hw * words;
        for (int64_t o = 0; o < octets; o++) {
            __m256i lo = _mm256_load_si256((const __m256i *)mask[k][o]);
            __m256i hi = _mm256_load_si256((const __m256i *)(mask[k][o] + 32));
            for (int j = 7; j >= 0; j--) {
                const uint64_t word = (uint64_t)(uint32_t)_mm256_movemask_epi8(lo) |
                                      (uint64_t)(uint32_t)_mm256_movemask_epi8(hi) << 32;
                row[(8 * o + j) * words] = word;
                lo = _mm256_add_epi8(lo, lo);
                hi = _mm256_add_epi8(hi, hi);
            }
        }
    }
    if (full == np) return;
    uint64_t therm[MAX_PACK_PLANES * PACK_PIXELS]; /* the last pixels one by one */
    for (int64_t k = 0; k < q; k++)
        for (int64_t p = full; p < np; p++) {
            uint64_t word = 0;
            for (int64_t ch = 0; ch < cn; ch++) {
                const float v = rule_input(r, x[(b * c + c0 + ch) * hw + p0 + p], c0 + ch);
                word |= (uint64_t)compare(v, rule_threshold(r, k, c0 + ch), r->cmp) << ch;
            }
            therm[k * PACK_PIXELS + p] = word;
        }
    emit_block(therm + full, q, binary, np - full, hw, words, dst + full * words);
}
#endif
static pack_fn g_pack = pack_block_portable;

typedef struct {
    const float *x;
    int64_t c, hw, words, blocks;
    const pack_rule *rule;
    uint64_t *out;
    pack_fn fn;
} pack_task;

static void pack_item(void *arg, int64_t it, uint32_t job) {
    const pack_task *t = (const pack_task *)arg;
    (void)job;
    t->fn(t->x, t->c, t->hw, t->words, t->rule, t->out, it / (t->words * t->blocks), (it / t->blocks) % t->words,
          (it % t->blocks) * PACK_PIXELS);
}

static void pack_any(const float *x, int64_t n, int64_t c, int64_t h, int64_t w, int64_t words, const pack_rule *rule,
                     uint64_t *out, int threads) {
    const int64_t hw = h * w, blocks = (hw + PACK_PIXELS - 1) / PACK_PIXELS, items = n * words * blocks;
    pack_task task = {x, c, hw, words, blocks, rule, out, g_pack};
    parallel_for(pack_item, &task, items, items > 3 ? threads : 1);
}

/* x: float NCHW; out: [N][H][W][words], bit set where x < 0 (sign(0) = +1). */
void bk_pack_signs(const float *x, int64_t n, int64_t c, int64_t h, int64_t w, int64_t words, uint64_t *out,
                   int threads) {
    const float zero = 0.0f;
    const pack_rule rule = {&zero, 1, 0, NULL, 1, CMP_LT, 0};
    pack_any(x, n, c, h, w, words, &rule, out, threads);
}

/* Planes [N][P][H][W][words] of q <= 16 thresholds: thermometer (P = q), plane k has a
 * bit where compare(x, thresholds[k]) holds; binary (P = log2(q + 1)), plane j holds
 * bit j of the number of thresholds that hold. */
void bk_pack(const float *x, int64_t n, int64_t c, int64_t h, int64_t w, int64_t words, const float *thresholds,
             int64_t q, int cmp, int binary, uint64_t *out, int threads) {
    if (q > MAX_PACK_PLANES || cmp < CMP_LT || cmp > CMP_NGT) return;
    const pack_rule rule = {thresholds, 1, 0, NULL, q, cmp, binary};
    pack_any(x, n, c, h, w, words, &rule, out, threads);
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
