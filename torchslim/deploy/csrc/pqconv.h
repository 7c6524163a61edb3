/* Lookup-table inference of product-quantized convolutions (stride 1, any k x k),
 * Q-CNN's test-time path; included once by bitkernels.c after pqlut.h.
 *
 * A PQ conv splits the C input channels into S subspaces of d channels and keeps one
 * codebook of K <= 256 codewords per subspace, shared by every kernel position; each
 * (output channel o, kernel tap) has one code per subspace.  So
 *
 *     y[o][v] = sum_s sum_taps  x_s[v + tap] . C[s, code[s, o, tap]]  + b[o]
 *
 * and the dot products T_s[k][p] = x_s[p] . C[s, k] at every input pixel p are all the
 * layer needs: C * K multiply-adds per pixel (independent of the output width), then
 * S * taps look-ups per output instead of C * taps multiply-adds.
 *
 * Layout: the input is copied into a zero-padded image of wpad = W + 2 pw columns,
 * flattened, so output pixel (oh, ow) has the virtual index v = oh * wpad + ow and its
 * tap (i, j) reads position v + i * wpad + j.  Eight consecutive virtual outputs then
 * read eight consecutive table entries for every tap: a look-up is one unaligned
 * 8-float load, with no gather, for any width (the (KW - 1) / wpad virtual outputs that
 * fall in the padding columns are computed and dropped).
 *
 * Blocking: a work item is a band of output rows and a range of output channels.  It
 * builds one subspace's table at a time, only over its band's input rows (a few
 * hundred KiB at most, so it stays in L2), and adds it into the band's sums before the
 * next subspace.  The taps' codes of every channel are turned into table offsets once
 * per subspace; then, four 8-output blocks at a time, every channel adds its taps'
 * entries: four independent chains of additions, one load each per tap, no multiply,
 * and the few lines of each table row those blocks read stay in L1.
 *
 * Order of the additions, the same on every path, band split and thread count, so
 * outputs are equal bit for bit: each table entry over j = 0..d-1 (x * c, then add;
 * no contraction), each output over subspaces, then tap rows, then tap columns, then
 * the bias.
 */
#ifndef TORCHSLIM_PQCONV_H
#define TORCHSLIM_PQCONV_H

#define PQC_TABLE_BYTES (192 * 1024) /* a band's table for one subspace stays about this small (L2) */

typedef struct {
    const float *xpad;    /* [C][PX] zero-padded input of the current image */
    const float *cbt;     /* [S][d][K] */
    const uint8_t *codes; /* [S][OC][KH][KW] */
    const float *bias;    /* [OC] or NULL */
    float *y;             /* [OC][OH][OW] of the current image */
    int64_t S, K, d, PX, OC, KH, KW, wpad, oh, ow, rows, ochunk, ochunks;
    int fast;
    _Atomic int failed;
} pqc_task;

/* Per-thread scratch (the pool's threads live as long as the process), grown on demand:
 * an item's table and sums, and the calling thread's padded input. */
typedef struct {
    float *mem;
    size_t cap;
} pqc_buffer;
static __thread pqc_buffer pqc_item_mem, pqc_input_mem;

static float *pqc_scratch(pqc_buffer *b, size_t floats) {
    if (floats > b->cap) {
        float *grown = (float *)realloc(b->mem, floats * sizeof(float));
        if (grown == NULL) return NULL;
        b->mem = grown;
        b->cap = floats;
    }
    return b->mem;
}

/* T[k][p] = x_s[p0 + p] . C[s, k] for p < pb. */
static void pqc_table_portable(const pqc_task *t, int64_t s, int64_t p0, int64_t pb, float *table) {
    const int64_t K = t->K, d = t->d;
    for (int64_t k = 0; k < K; k++) {
        float *row = table + k * pb;
        for (int64_t p = 0; p < pb; p++) row[p] = 0.0f;
        for (int64_t j = 0; j < d; j++) {
            const float c = t->cbt[(s * d + j) * K + k], *x = t->xpad + (s * d + j) * t->PX + p0;
            for (int64_t p = 0; p < pb; p++) row[p] = row[p] + x[p] * c;
        }
    }
}

/* acc[o][b][lane] += the taps' entries of one subspace; offs[o][tap] = code * pb + the tap's shift. */
static void pqc_add_portable(const float *table, const int32_t *offs, int64_t taps, int64_t nb, int64_t och,
                             float *acc) {
    for (int64_t o = 0; o < och; o++)
        for (int64_t b = 0; b < nb; b++)
            for (int64_t i = 0; i < taps; i++) {
                const float *e = table + offs[o * taps + i] + b * 8;
                float *a = acc + (o * nb + b) * 8;
                for (int l = 0; l < 8; l++) a[l] = a[l] + e[l];
            }
}

#if BK_X86
/* d a constant where the caller specialises it: the d input vectors of a block stay in
 * registers while every codeword's broadcasts multiply them; two blocks per pass where
 * registers allow, so each broadcast serves both. */
TARGET_FAST ALWAYS_INLINE void pqc_table_d(const float *x, int64_t PX, const float *cb, int64_t K, int64_t pb,
                                           float *table, const int64_t d) {
    int64_t p = 0;
    if (d <= 4)
        for (; p + 16 <= pb; p += 16) {
            __m256 xa[4], xb[4];
            for (int64_t j = 0; j < d; j++) {
                xa[j] = _mm256_loadu_ps(x + j * PX + p);
                xb[j] = _mm256_loadu_ps(x + j * PX + p + 8);
            }
            for (int64_t k = 0; k < K; k++) {
                __m256 a = _mm256_setzero_ps(), b = _mm256_setzero_ps();
                for (int64_t j = 0; j < d; j++) {
                    const __m256 c = _mm256_set1_ps(cb[j * K + k]);
                    a = _mm256_add_ps(a, _mm256_mul_ps(xa[j], c));
                    b = _mm256_add_ps(b, _mm256_mul_ps(xb[j], c));
                }
                _mm256_storeu_ps(table + k * pb + p, a);
                _mm256_storeu_ps(table + k * pb + p + 8, b);
            }
        }
    for (; p < pb; p += 8) { /* pb is a multiple of 8; two codewords per pass: two independent chains */
        __m256 xa[8];
        const int64_t held = d < 8 ? d : 8;
        for (int64_t j = 0; j < held; j++) xa[j] = _mm256_loadu_ps(x + j * PX + p);
        int64_t k = 0;
        for (; k + 2 <= K; k += 2) {
            __m256 a = _mm256_setzero_ps(), b = _mm256_setzero_ps();
            for (int64_t j = 0; j < d; j++) {
                const __m256 v = j < 8 ? xa[j] : _mm256_loadu_ps(x + j * PX + p);
                a = _mm256_add_ps(a, _mm256_mul_ps(v, _mm256_set1_ps(cb[j * K + k])));
                b = _mm256_add_ps(b, _mm256_mul_ps(v, _mm256_set1_ps(cb[j * K + k + 1])));
            }
            _mm256_storeu_ps(table + k * pb + p, a);
            _mm256_storeu_ps(table + (k + 1) * pb + p, b);
        }
        for (; k < K; k++) {
            __m256 a = _mm256_setzero_ps();
            for (int64_t j = 0; j < d; j++)
                a = _mm256_add_ps(a, _mm256_mul_ps(_mm256_loadu_ps(x + j * PX + p), _mm256_set1_ps(cb[j * K + k])));
            _mm256_storeu_ps(table + k * pb + p, a);
        }
    }
}

TARGET_FAST static void pqc_table_fast(const pqc_task *t, int64_t s, int64_t p0, int64_t pb, float *table) {
    const int64_t K = t->K, d = t->d, PX = t->PX;
    const float *x = t->xpad + s * d * PX + p0, *cb = t->cbt + s * d * K;
    switch (d) {
    case 1: pqc_table_d(x, PX, cb, K, pb, table, 1); break;
    case 2: pqc_table_d(x, PX, cb, K, pb, table, 2); break;
    case 4: pqc_table_d(x, PX, cb, K, pb, table, 4); break;
    case 8: pqc_table_d(x, PX, cb, K, pb, table, 8); break;
    default: pqc_table_d(x, PX, cb, K, pb, table, d);
    }
}

TARGET_FAST static void pqc_offsets_fast(const uint8_t *c, int32_t pb, const int32_t *shifts, int64_t n,
                                         int32_t *offs) {
    const __m256i scale = _mm256_set1_epi32(pb);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256i codes = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(c + i)));
        _mm256_storeu_si256((__m256i *)(offs + i), _mm256_add_epi32(_mm256_mullo_epi32(codes, scale),
                                                                    _mm256_loadu_si256((const __m256i *)(shifts + i))));
    }
    for (; i < n; i++) offs[i] = (int32_t)c[i] * pb + shifts[i];
}

/* Up to four blocks from b: independent chains; taps a constant where the caller specialises it. */
TARGET_FAST ALWAYS_INLINE void pqc_add_blocks(const float *table, const int32_t *offs, const int64_t taps,
                                              const int64_t nblk, float *acc) {
    __m256 a[4];
    for (int64_t q = 0; q < nblk; q++) a[q] = _mm256_loadu_ps(acc + q * 8);
    for (int64_t i = 0; i < taps; i++) {
        const float *e = table + offs[i];
        for (int64_t q = 0; q < nblk; q++) a[q] = _mm256_add_ps(a[q], _mm256_loadu_ps(e + q * 8));
    }
    for (int64_t q = 0; q < nblk; q++) _mm256_storeu_ps(acc + q * 8, a[q]);
}

TARGET_FAST ALWAYS_INLINE void pqc_add_taps(const float *table, const int32_t *offs, const int64_t taps, int64_t nb,
                                            int64_t och, float *acc) {
    for (int64_t b = 0; b < nb; b += 4) {
        const float *tb = table + b * 8;
        float *ab = acc + b * 8;
        if (nb - b >= 4)
            for (int64_t o = 0; o < och; o++) pqc_add_blocks(tb, offs + o * taps, taps, 4, ab + o * nb * 8);
        else if (nb - b == 3)
            for (int64_t o = 0; o < och; o++) pqc_add_blocks(tb, offs + o * taps, taps, 3, ab + o * nb * 8);
        else if (nb - b == 2)
            for (int64_t o = 0; o < och; o++) pqc_add_blocks(tb, offs + o * taps, taps, 2, ab + o * nb * 8);
        else
            for (int64_t o = 0; o < och; o++) pqc_add_blocks(tb, offs + o * taps, taps, 1, ab + o * nb * 8);
    }
}

/* acc[o][b][lane] += every channel's taps' entries of one subspace, four blocks (32 outputs) for every
 * channel before the next four: the few lines of each table row they read stay in L1. */
TARGET_FAST static void pqc_add_fast(const float *table, const int32_t *offs, int64_t taps, int64_t nb, int64_t och,
                                     float *acc) {
    if (taps == 9) pqc_add_taps(table, offs, 9, nb, och, acc);
    else pqc_add_taps(table, offs, taps, nb, och, acc);
}
#endif

/* One item: output rows [r0, r0 + rows) of channels [o0, o1). */
static void pqc_item(void *arg, int64_t it, uint32_t job) {
    pqc_task *t = (pqc_task *)arg;
    (void)job;
    const int64_t r0 = it / t->ochunks * t->rows, rows = r0 + t->rows < t->oh ? t->rows : t->oh - r0;
    const int64_t o0 = it % t->ochunks * t->ochunk, o1 = o0 + t->ochunk < t->OC ? o0 + t->ochunk : t->OC;
    const int64_t wpad = t->wpad, taps = t->KH * t->KW, K = t->K;
    const int64_t nb = ((rows - 1) * wpad + t->ow + 7) / 8;                /* 8-output blocks of the band */
    const int64_t pb = (nb * 8 + (t->KH - 1) * wpad + t->KW - 1 + 7) / 8 * 8; /* table positions they read */
    const int64_t och = o1 - o0;
    float *table = pqc_scratch(&pqc_item_mem, (size_t)(K * pb + och * nb * 8 + 2 * och * taps + 8));
    if (table == NULL) {
        atomic_store(&t->failed, 1);
        return;
    }
    float *acc = table + K * pb;                     /* [o][b][8] */
    int32_t *offs = (int32_t *)(acc + och * nb * 8); /* [o][tap]: code * pb + the tap's shift */
    int32_t *shifts = offs + och * taps;              /* [o][tap]: the tap's shift, for whole-vector sums */
    memset(acc, 0, (size_t)(och * nb * 8) * sizeof(float));
    for (int64_t o = 0; o < och; o++)
        for (int64_t i = 0; i < taps; i++) shifts[o * taps + i] = (int32_t)(i / t->KW * wpad + i % t->KW);
    for (int64_t s = 0; s < t->S; s++) {
#if BK_X86
        if (t->fast) pqc_table_fast(t, s, r0 * wpad, pb, table);
        else
#endif
            pqc_table_portable(t, s, r0 * wpad, pb, table);
        const uint8_t *c = t->codes + (s * t->OC + o0) * taps;
        /* small maps make as many offsets as look-ups: eight at a time where AVX2 runs */
#if BK_X86
        if (t->fast) pqc_offsets_fast(c, (int32_t)pb, shifts, och * taps, offs);
        else
#endif
            for (int64_t i = 0; i < och * taps; i++) offs[i] = (int32_t)c[i] * (int32_t)pb + shifts[i];
#if BK_X86
        if (t->fast) pqc_add_fast(table, offs, taps, nb, och, acc);
        else
#endif
            pqc_add_portable(table, offs, taps, nb, och, acc);
    }
    const int64_t plane = t->oh * t->ow;
    for (int64_t o = o0; o < o1; o++) { /* the real outputs (not padding columns), plus the bias */
        const float *a = acc + (o - o0) * nb * 8;
        float *y = t->y + o * plane + r0 * t->ow;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t q = 0; q < t->ow; q++) y[r * t->ow + q] = t->bias ? a[r * wpad + q] + t->bias[o] : a[r * wpad + q];
    }
}

/* x [N][C][H][W] (C = S * d), cbt [S][d][K], codes [S][OC][KH][KW] (< K <= 256), bias [OC] or NULL,
 * stride 1, zero padding (ph, pw), OH = H + 2 ph - KH + 1 >= 1 and OW likewise ->
 * y [N][OC][OH][OW].  Returns 0, or -1 when scratch memory ran out (the output is then incomplete). */
int64_t bk_pq_conv(const float *x, int64_t n, int64_t S, int64_t d, int64_t H, int64_t W, int64_t K,
                   const float *cbt, const uint8_t *codes, int64_t OC, int64_t KH, int64_t KW, int64_t ph, int64_t pw,
                   const float *bias, float *y, int threads) {
    const int64_t C = S * d, hpad = H + 2 * ph, wpad = W + 2 * pw, OH = hpad - KH + 1, OW = wpad - KW + 1;
    const int64_t PX = (hpad * wpad + 24 + 7) / 8 * 8; /* an item's table reads end within hpad * wpad + 22 */
    if (threads < 1) threads = 1;
    /* band height: the table of one subspace within PQC_TABLE_BYTES, then enough items for the threads */
    int64_t rows = OH, ochunks = 1;
    /* (but no shorter than twice the halo: below that the rows recomputed for the halo cost more than L3 reads) */
    while (rows / 2 > 2 * (KH - 1) && K * (rows + KH - 1) * wpad * 4 > PQC_TABLE_BYTES) rows = (rows + 1) / 2;
    if ((OH + rows - 1) / rows < threads) {
        const int64_t split = (OH + threads - 1) / threads;
        if (split >= KH - 1 && split >= 1) rows = split; /* at most twice the table work per band */
        else ochunks = threads; /* small maps: split the channels instead */
    }
    const int64_t ochunk = (OC + ochunks - 1) / ochunks;
    ochunks = (OC + ochunk - 1) / ochunk;
    float *padded = pqc_scratch(&pqc_input_mem, (size_t)(C * PX));
    if (padded == NULL) return -1;
    memset(padded, 0, (size_t)(C * PX) * sizeof(float));
    pqc_task t = {padded, cbt, codes, bias, NULL, S, K, d, PX, OC, KH, KW, wpad, OH, OW, rows, ochunk, ochunks,
                  g_isa >= 1, 0};
    const int64_t items = (OH + rows - 1) / rows * ochunks;
    for (int64_t i = 0; i < n && !atomic_load(&t.failed); i++) {
        for (int64_t c = 0; c < C; c++)
            for (int64_t r = 0; r < H; r++)
                memcpy(padded + c * PX + (r + ph) * wpad + pw, x + ((i * C + c) * H + r) * W, (size_t)W * sizeof(float));
        t.y = y + i * OC * OH * OW;
        parallel_for(pqc_item, &t, items, threads);
    }
    return atomic_load(&t.failed) ? -1 : 0;
}

#endif
