/* Thread pool of the binary kernels; included once by bitkernels.c, after its
 * common definitions (BK_X86, ALWAYS_INLINE). */
#ifndef TORCHSLIM_THREADPOOL_H
#define TORCHSLIM_THREADPOOL_H

/* ------------------------------------------------------------ thread pool */

/* A small pool instead of OpenMP: the calling thread claims work items too, and a
 * job ends when all items are done, not when every worker has woken up.  On a
 * busy machine a worker that is not scheduled in time costs nothing (with a
 * barrier it costs a scheduler slice, milliseconds).  Idle workers spin for
 * SPIN_NS after their last job, then sleep on a condition variable, so they do not
 * hold cores between calls.  The spin is timed, not counted (a PAUSE lasts 3 to 140
 * cycles depending on the CPU): it must outlast the float layers a network runs
 * between two binary layers (a float first conv: about 0.25 ms), since waking a
 * sleeping worker was measured at 0.2 ms.  pool_wake() lets a caller wake the
 * workers ahead of the first binary layer of a call, so they spin while its float
 * layers run.
 */
typedef void (*task_fn)(void *arg, int64_t item, uint32_t job);

#define MAX_WORKERS 63
#define SPIN_ROUNDS 4000        /* the caller's wait for the last items, before it yields */
#define SPIN_NS 1000000ll       /* 1 ms: a worker's spin for the next job */

/* Each participant (the caller, then helper i) owns a contiguous segment of the items,
 * so one thread runs neighbouring items (the conv's items of one image row share their
 * im2col: interleaved claims made both threads build it).  Its ticket packs
 * (low 24 bits of the job << 40 | next << 20 | end): the owner claims `next` from the front, and a
 * participant done with its own segment steals `end - 1` from the back of another's,
 * so a worker that is late or preempted only delays the items it already runs.  A claim
 * is a compare-and-swap on a ticket of its own job, and the caller rewrites a ticket
 * only after the previous job ended, so a late worker can never run a stale item. */
#define SEG_BITS 20
#define SEG_MASK ((1ull << SEG_BITS) - 1)
#define JOB_MASK ((1u << 24) - 1)
typedef struct {
    _Alignas(64) _Atomic uint64_t ticket;
} segment;

static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_mutex_t run; /* one job at a time (callers from several Python threads) */
    int started;
    _Atomic uint32_t job;
    _Alignas(64) _Atomic int64_t done;
    _Atomic int sleepers;
    _Atomic uint32_t nudge; /* bumped by pool_wake(): sleeping workers wake and spin again */
    task_fn fn;
    void *arg;
    int64_t total;
    int helpers; /* workers wanted for this job */
    segment seg[MAX_WORKERS + 1];
} g_pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_MUTEX_INITIALIZER};

/* A forked child has none of the workers: start again from an empty pool. */
static void pool_after_fork(void) {
    pthread_mutex_init(&g_pool.lock, NULL);
    pthread_cond_init(&g_pool.wake, NULL);
    pthread_mutex_init(&g_pool.run, NULL);
    g_pool.started = 0;
    atomic_store(&g_pool.sleepers, 0);
}

static inline void cpu_relax(void) {
#if BK_X86
    __builtin_ia32_pause();
#endif
}

/* Claim one item of segment s for job `job`: from the front when `front`, else from
 * the back; -1 when the segment is empty or belongs to another job. */
static inline int64_t seg_claim(int s, uint32_t job, int front) {
    _Atomic uint64_t *ticket = &g_pool.seg[s].ticket;
    uint64_t t = atomic_load_explicit(ticket, memory_order_acquire);
    for (;;) {
        if ((uint32_t)(t >> (2 * SEG_BITS)) != (job & JOB_MASK)) return -1;
        const uint64_t next = (t >> SEG_BITS) & SEG_MASK, end = t & SEG_MASK;
        if (next >= end) return -1;
        const uint64_t claimed = front ? t + (1ull << SEG_BITS) : t - 1;
        if (atomic_compare_exchange_weak_explicit(ticket, &t, claimed, memory_order_acq_rel, memory_order_acquire))
            return (int64_t)(front ? next : end - 1);
    }
}

/* Run the items of the own segment `self`, then steal from the others' backs; the
 * count joins `done` once, at the end. */
static void pool_drain(uint32_t job, int self, int parts) {
    int64_t ran = 0, item;
    while ((item = seg_claim(self, job, 1)) >= 0) {
        g_pool.fn(g_pool.arg, item, job);
        ran++;
    }
    for (int k = 1; k < parts; k++) {
        const int victim = (self + k) % parts;
        while ((item = seg_claim(victim, job, 0)) >= 0) {
            g_pool.fn(g_pool.arg, item, job);
            ran++;
        }
    }
    if (ran) atomic_fetch_add_explicit(&g_pool.done, ran, memory_order_release);
}

static inline int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000ll + t.tv_nsec;
}

static void *pool_worker(void *index_ptr) {
    const int index = (int)(intptr_t)index_ptr;
    uint32_t seen = atomic_load_explicit(&g_pool.job, memory_order_acquire);
    for (;;) {
        uint32_t job = atomic_load_explicit(&g_pool.job, memory_order_acquire);
        const int64_t until = now_ns() + SPIN_NS;
        while (job == seen) {
            for (int spin = 0; job == seen && spin < 64; spin++) {
                cpu_relax();
                job = atomic_load_explicit(&g_pool.job, memory_order_acquire);
            }
            if (job != seen || now_ns() > until) break;
        }
        if (job == seen) {
            const uint32_t nudged = atomic_load(&g_pool.nudge);
            pthread_mutex_lock(&g_pool.lock);
            atomic_fetch_add(&g_pool.sleepers, 1);
            while ((job = atomic_load_explicit(&g_pool.job, memory_order_acquire)) == seen &&
                   atomic_load(&g_pool.nudge) == nudged)
                pthread_cond_wait(&g_pool.wake, &g_pool.lock);
            atomic_fetch_sub(&g_pool.sleepers, 1);
            pthread_mutex_unlock(&g_pool.lock);
            if (job == seen) continue; /* woken by pool_wake(): spin for the coming job */
        }
        seen = job;
        if (index < g_pool.helpers) pool_drain(job, index + 1, g_pool.helpers + 1);
    }
    return NULL;
}

static int pool_start(int workers) {
    static int failed = 0, hooked = 0;
    if (!hooked) {
        hooked = 1;
        pthread_atfork(NULL, NULL, pool_after_fork);
    }
    while (g_pool.started < workers && !failed) {
        pthread_t thread;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&thread, &attr, pool_worker, (void *)(intptr_t)g_pool.started) != 0) failed = 1;
        else g_pool.started++;
        pthread_attr_destroy(&attr);
    }
    return g_pool.started;
}

/* Start the workers a call with `threads` threads needs, and wake sleeping ones so
 * they spin for the next job (a no-op for one thread). */
static void pool_wake(int threads) {
    if (threads < 2) return;
    if (threads > MAX_WORKERS + 1) threads = MAX_WORKERS + 1;
    pthread_mutex_lock(&g_pool.run);
    pool_start(threads - 1);
    pthread_mutex_unlock(&g_pool.run);
    atomic_fetch_add(&g_pool.nudge, 1);
    if (atomic_load(&g_pool.sleepers) > 0) {
        pthread_mutex_lock(&g_pool.lock);
        pthread_cond_broadcast(&g_pool.wake);
        pthread_mutex_unlock(&g_pool.lock);
    }
}

static _Atomic uint32_t g_serial_jobs = 1u << 31;

/* Run fn(arg, i) for i < total on up to `threads` threads (the caller included).
 * Segment bounds fall on multiples of `grain` where there are enough of them. */
static void parallel_for_grain(task_fn fn, void *arg, int64_t total, int threads, int64_t grain) {
    if (threads > total) threads = (int)total;
    if (threads > MAX_WORKERS + 1) threads = MAX_WORKERS + 1;
    if (total > (int64_t)SEG_MASK) threads = 1; /* more items than a ticket counts: one thread */
    pthread_mutex_lock(&g_pool.run);
    const int helpers = threads > 1 ? pool_start(threads - 1) : 0;
    if (helpers == 0) {
        pthread_mutex_unlock(&g_pool.run);
        const uint32_t job = atomic_fetch_add(&g_serial_jobs, 1) | (1u << 31);
        for (int64_t i = 0; i < total; i++) fn(arg, i, job);
        return;
    }
    const int parts = helpers + 1;
    const uint32_t job = (atomic_load(&g_pool.job) + 1) & ~(1u << 31); /* pool jobs never look serial */
    if (grain < 1 || total / grain < parts) grain = 1;
    const int64_t groups = total / grain;
    g_pool.fn = fn;
    g_pool.arg = arg;
    g_pool.total = total;
    g_pool.helpers = helpers;
    atomic_store_explicit(&g_pool.done, 0, memory_order_relaxed);
    for (int s = 0; s < parts; s++) {
        const uint64_t begin = (uint64_t)(groups * s / parts * grain);
        const uint64_t end = s + 1 == parts ? (uint64_t)total : (uint64_t)(groups * (s + 1) / parts * grain);
        atomic_store_explicit(&g_pool.seg[s].ticket, (uint64_t)(job & JOB_MASK) << (2 * SEG_BITS) | begin << SEG_BITS | end,
                              memory_order_release);
    }
    atomic_store_explicit(&g_pool.job, job, memory_order_release);
    if (atomic_load(&g_pool.sleepers) > 0) {
        pthread_mutex_lock(&g_pool.lock);
        pthread_cond_broadcast(&g_pool.wake);
        pthread_mutex_unlock(&g_pool.lock);
    }
    pool_drain(job, 0, parts);
    for (int spin = 0; atomic_load_explicit(&g_pool.done, memory_order_acquire) < total; spin++) {
        if (spin < SPIN_ROUNDS) cpu_relax();
        else sched_yield(); /* a worker was preempted inside an item */
    }
    pthread_mutex_unlock(&g_pool.run);
}

static void parallel_for(task_fn fn, void *arg, int64_t total, int threads) {
    parallel_for_grain(fn, arg, total, threads, 1);
}

#endif
