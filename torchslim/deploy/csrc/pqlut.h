/* Lookup-table inference of product-quantized Linear layers; included once by
 * bitkernels.c, after its common definitions (BK_X86, TARGET_FAST, ALWAYS_INLINE,
 * g_isa) and threadpool.h.
 *
 * A PQ layer with S subspaces of d inputs, K <= 256 codewords per subspace and one
 * code per (subspace, output) computes y[o] = sum_s x_s . C[s, codes[s, o]] + b[o].
 * Per input: the table T[s][k] = x_s . C[s, k] (S * K * d multiply-adds, whatever
 * the output width), then S look-ups per output.  The look-ups run subspace by
 * subspace over a block of outputs, so the table row (K floats) and the block's
 * partial sums stay in L1 while the codes stream through once; the AVX2 path reads
 * 8 codes, widens them to 32-bit indices and gathers 8 table entries at once.
 * Batches go 8 inputs at a time on the AVX2 path (pq_item8): whole 8-input rows of
 * the table are added, with no gather.  Every path adds in the same order (each
 * table entry over j = 0..d-1, each output over s = 0..S-1, then the bias; no
 * contraction), so their outputs are equal bit for bit.
 */
#ifndef TORCHSLIM_PQLUT_H
#define TORCHSLIM_PQLUT_H

#define PQ_BLOCK 1024 /* outputs per work item: 4 KiB of partial sums */

typedef struct {
    const float *table;   /* [S][K] of the current input */
    const uint8_t *codes; /* [S][out] */
    const float *bias;    /* [out] or NULL */
    float *y;             /* [out] of the current input */
    int64_t S, K, out;
    int fast;
} pq_task;

static void pq_table_portable(const float *x, const float *cbt, int64_t S, int64_t K, int64_t d, float *table) {
    for (int64_t s = 0; s < S; s++) {
        float *t = table + s * K;
        for (int64_t k = 0; k < K; k++) t[k] = 0.0f;
        for (int64_t j = 0; j < d; j++) {
            const float v = x[s * d + j], *c = cbt + (s * d + j) * K;
            for (int64_t k = 0; k < K; k++) t[k] = t[k] + v * c[k];
        }
    }
}

static void pq_sums_portable(const pq_task *t, int64_t o0, int64_t o1) {
    float *y = t->y;
    for (int64_t o = o0; o < o1; o++) y[o] = 0.0f;
    for (int64_t s = 0; s < t->S; s++) {
        const float *row = t->table + s * t->K;
        const uint8_t *c = t->codes + s * t->out;
        for (int64_t o = o0; o < o1; o++) y[o] = y[o] + row[c[o]];
    }
    if (t->bias)
        for (int64_t o = o0; o < o1; o++) y[o] = y[o] + t->bias[o];
}

#if BK_X86
TARGET_FAST static void pq_table_fast(const float *x, const float *cbt, int64_t S, int64_t K, int64_t d,
                                      float *table) {
    for (int64_t s = 0; s < S; s++) {
        float *t = table + s * K;
        int64_t k = 0;
        for (; k + 8 <= K; k += 8) {
            __m256 acc = _mm256_setzero_ps();
            for (int64_t j = 0; j < d; j++)
                acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_set1_ps(x[s * d + j]),
                                                       _mm256_loadu_ps(cbt + (s * d + j) * K + k)));
            _mm256_storeu_ps(t + k, acc);
        }
        for (; k < K; k++) {
            float acc = 0.0f;
            for (int64_t j = 0; j < d; j++) acc = acc + x[s * d + j] * cbt[(s * d + j) * K + k];
            t[k] = acc;
        }
    }
}

#define PQ_GATHER(s) _mm256_i32gather_ps(t->table + (s) * K, \
    _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(t->codes + (s) * out + o))), 4)

/* Four subspaces per pass over the block, added one after another: the same order as
 * one at a time, with a quarter of the partial sums' loads and stores. */
TARGET_FAST static void pq_sums_fast(const pq_task *t, int64_t o0, int64_t o1) {
    float *y = t->y;
    const int64_t K = t->K, out = t->out, S = t->S, vend = o0 + (o1 - o0) / 8 * 8;
    for (int64_t o = o0; o < o1; o++) y[o] = 0.0f;
    int64_t s = 0;
    for (; s + 4 <= S; s += 4) {
        for (int64_t o = o0; o < vend; o += 8) {
            __m256 acc = _mm256_add_ps(_mm256_loadu_ps(y + o), PQ_GATHER(s));
            acc = _mm256_add_ps(acc, PQ_GATHER(s + 1));
            acc = _mm256_add_ps(acc, PQ_GATHER(s + 2));
            _mm256_storeu_ps(y + o, _mm256_add_ps(acc, PQ_GATHER(s + 3)));
        }
        for (int64_t o = vend; o < o1; o++)
            for (int64_t j = s; j < s + 4; j++) y[o] = y[o] + t->table[j * K + t->codes[j * out + o]];
    }
    for (; s < S; s++)
        for (int64_t o = o0; o < vend; o += 8) _mm256_storeu_ps(y + o, _mm256_add_ps(_mm256_loadu_ps(y + o), PQ_GATHER(s)));
    for (int64_t j = S / 4 * 4; j < S; j++)
        for (int64_t o = vend; o < o1; o++) y[o] = y[o] + t->table[j * K + t->codes[j * out + o]];
    if (t->bias)
        for (int64_t o = o0; o < o1; o++) y[o] = y[o] + t->bias[o];
}
#undef PQ_GATHER
#endif

#if BK_X86
/* Eight inputs at once (AVX2): the table holds each entry for the 8 inputs side by side,
 * [S][K][8], so a look-up is one 8-float load added to the output's 8 sums, with no
 * gather.  Each lane adds in the order of the one-input path, so the outputs are the same. */
typedef struct {
    const float *table8;  /* [S][K][8] */
    const uint8_t *codes; /* [S][out] */
    const float *bias;
    float *y;             /* [N][out] */
    int64_t S, K, out, n0, nb;
} pq_task8;

#define PQ_BLOCK8 512 /* outputs per work item: 16 KiB of sums, beside one 8 KiB table row */

TARGET_FAST static void pq_table8(const float *x, int64_t n0, int64_t nb, const float *cbt, int64_t S, int64_t K,
                                  int64_t d, float *xt, float *table8) {
    const int64_t in = S * d;
    for (int64_t i = 0; i < in; i++)
        for (int64_t lane = 0; lane < 8; lane++) xt[i * 8 + lane] = lane < nb ? x[(n0 + lane) * in + i] : 0.0f;
    for (int64_t s = 0; s < S; s++)
        for (int64_t k = 0; k < K; k++) {
            __m256 acc = _mm256_setzero_ps();
            for (int64_t j = 0; j < d; j++)
                acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_loadu_ps(xt + (s * d + j) * 8),
                                                       _mm256_set1_ps(cbt[(s * d + j) * K + k])));
            _mm256_storeu_ps(table8 + (s * K + k) * 8, acc);
        }
}

TARGET_FAST static void pq_item8(void *arg, int64_t it, uint32_t job) {
    const pq_task8 *t = (const pq_task8 *)arg;
    const int64_t o0 = it * PQ_BLOCK8, o1 = o0 + PQ_BLOCK8 < t->out ? o0 + PQ_BLOCK8 : t->out;
    __m256 acc[PQ_BLOCK8];
    (void)job;
    for (int64_t o = o0; o < o1; o++) acc[o - o0] = _mm256_setzero_ps();
    for (int64_t s = 0; s < t->S; s++) {
        const float *row = t->table8 + s * t->K * 8;
        const uint8_t *c = t->codes + s * t->out;
        for (int64_t o = o0; o < o1; o++)
            acc[o - o0] = _mm256_add_ps(acc[o - o0], _mm256_loadu_ps(row + (int64_t)c[o] * 8));
    }
    for (int64_t o = o0; o < o1; o++) {
        float lanes[8];
        _mm256_storeu_ps(lanes, t->bias ? _mm256_add_ps(acc[o - o0], _mm256_set1_ps(t->bias[o])) : acc[o - o0]);
        for (int64_t lane = 0; lane < t->nb; lane++) t->y[(t->n0 + lane) * t->out + o] = lanes[lane];
    }
}
#endif

static void pq_item(void *arg, int64_t it, uint32_t job) {
    const pq_task *t = (const pq_task *)arg;
    const int64_t o0 = it * PQ_BLOCK, o1 = o0 + PQ_BLOCK < t->out ? o0 + PQ_BLOCK : t->out;
    (void)job;
#if BK_X86
    if (t->fast) {
        pq_sums_fast(t, o0, o1);
        return;
    }
#endif
    pq_sums_portable(t, o0, o1);
}

/* x [N][S*d], cbt [S][d][K] (codebooks transposed), codes [S][out] (< K <= 256), bias [out] or
 * NULL -> y [N][out]; table: scratch of S * K floats, or with more than one input
 * 8 * (S * K + S * d) floats (the batched path's table and transposed inputs). */
void bk_pq_linear(const float *x, int64_t n, int64_t S, int64_t K, int64_t d, const float *cbt,
                  const uint8_t *codes, int64_t out, const float *bias, float *y, float *table, int threads) {
    pq_task task = {table, codes, bias, NULL, S, K, out, g_isa >= 1};
    const int64_t items = (out + PQ_BLOCK - 1) / PQ_BLOCK;
#if BK_X86
    if (task.fast && n > 1) {
        const int64_t items8 = (out + PQ_BLOCK8 - 1) / PQ_BLOCK8;
        for (int64_t n0 = 0; n0 < n; n0 += 8) {
            pq_task8 t8 = {table, codes, bias, y, S, K, out, n0, n - n0 < 8 ? n - n0 : 8};
            pq_table8(x, n0, t8.nb, cbt, S, K, d, table + 8 * S * K, table);
            parallel_for(pq_item8, &t8, items8, items8 > 1 ? threads : 1);
        }
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++) {
#if BK_X86
        if (task.fast) pq_table_fast(x + i * S * d, cbt, S, K, d, table);
        else
#endif
            pq_table_portable(x + i * S * d, cbt, S, K, d, table);
        task.y = y + i * out;
        parallel_for(pq_item, &task, items, items > 1 ? threads : 1);
    }
}

#endif
