// LD_PRELOAD shim: the bytes held in heap blocks of 64 KiB or more (libtorch's CPU tensor storage) and their peak,
// exact, for any process (python3 with PyTorch, dotnet with TorchSharp): torch.cuda.max_memory_allocated for the CPU.
// Build: gcc -O2 -Wall -shared -fPIC -o libmemtrack.so memtrack.c -ldl
// Read: memtrack_live / memtrack_peak / memtrack_reset_peak (ctypes.CDLL(None) in Python, the main program handle in
// .NET). See README.md.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <malloc.h>
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>

#define TRACKED_FROM 65536 // smaller blocks are the runtimes' own bookkeeping

static void *(*real_malloc)(size_t);
static void (*real_free)(void *);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);
static int (*real_posix_memalign)(void **, size_t, size_t);
static void *(*real_aligned_alloc)(size_t, size_t);
static _Atomic long live, peak;

// dlsym itself allocates before the real functions are known: those few blocks come from here and are never freed.
static char boot[65536];
static size_t boot_used;
static int resolving;

static void resolve(void) {
    if (real_malloc || resolving)
        return;
    resolving = 1;
    real_malloc = dlsym(RTLD_NEXT, "malloc");
    real_free = dlsym(RTLD_NEXT, "free");
    real_calloc = dlsym(RTLD_NEXT, "calloc");
    real_realloc = dlsym(RTLD_NEXT, "realloc");
    real_posix_memalign = dlsym(RTLD_NEXT, "posix_memalign");
    real_aligned_alloc = dlsym(RTLD_NEXT, "aligned_alloc");
    resolving = 0;
}

static void *boot_alloc(size_t n) {
    void *p = boot + boot_used;
    boot_used += (n + 15) & ~(size_t)15;
    return p;
}

static int is_boot(void *p) { return (char *)p >= boot && (char *)p < boot + sizeof boot; }

static void count(void *p) {
    if (!p)
        return;
    size_t size = malloc_usable_size(p);
    if (size < TRACKED_FROM)
        return;
    long now = atomic_fetch_add(&live, (long)size) + (long)size;
    long high = atomic_load(&peak);
    while (now > high && !atomic_compare_exchange_weak(&peak, &high, now)) {
    }
}

static void uncount_size(size_t size) {
    if (size >= TRACKED_FROM)
        atomic_fetch_sub(&live, (long)size);
}

void *malloc(size_t n) {
    resolve();
    if (!real_malloc)
        return boot_alloc(n);
    void *p = real_malloc(n);
    count(p);
    return p;
}

void *calloc(size_t a, size_t b) {
    resolve();
    if (!real_calloc)
        return memset(boot_alloc(a * b), 0, a * b);
    void *p = real_calloc(a, b);
    count(p);
    return p;
}

void free(void *p) {
    if (!p || is_boot(p))
        return;
    resolve();
    uncount_size(malloc_usable_size(p));
    real_free(p);
}

void *realloc(void *p, size_t n) {
    resolve();
    if (p && is_boot(p)) {
        void *q = malloc(n);
        size_t left = (size_t)(boot + sizeof boot - (char *)p);
        if (q)
            memcpy(q, p, n < left ? n : left);
        return q;
    }
    size_t old = p ? malloc_usable_size(p) : 0;
    void *q = real_realloc(p, n);
    if (q || n == 0) { // on failure p is left as it was
        uncount_size(old);
        count(q);
    }
    return q;
}

int posix_memalign(void **out, size_t alignment, size_t n) {
    resolve();
    int rc = real_posix_memalign(out, alignment, n);
    if (rc == 0)
        count(*out);
    return rc;
}

void *aligned_alloc(size_t alignment, size_t n) {
    resolve();
    void *p = real_aligned_alloc(alignment, n);
    count(p);
    return p;
}

void *memalign(size_t alignment, size_t n) {
    void *p = NULL;
    return posix_memalign(&p, alignment, n) == 0 ? p : NULL;
}

long memtrack_live(void) { return atomic_load(&live); }
long memtrack_peak(void) { return atomic_load(&peak); }
void memtrack_reset_peak(void) { atomic_store(&peak, atomic_load(&live)); }
