// A disk whose syncs are slow, for experiments: fsync and fdatasync sleep SLOW_FSYNC_MS (default 20) first.
//   gcc -shared -fPIC -O2 -o /tmp/slowfsync.so bench/tools/slowfsync.c -ldl
//   LD_PRELOAD=/tmp/slowfsync.so SLOW_FSYNC_MS=20 custos serve --config ...
// Used to measure what the ledger's syncs on the requests' path cost when the disk is slow (docs/performance.md).
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>
static void pause_ms(void) {
    const char *v = getenv("SLOW_FSYNC_MS");
    long ms = v ? atol(v) : 20;
    struct timespec t = { ms / 1000, (ms % 1000) * 1000000L };
    nanosleep(&t, NULL);
}
int fsync(int fd) { static int (*real)(int); if (!real) real = dlsym(RTLD_NEXT, "fsync"); pause_ms(); return real(fd); }
int fdatasync(int fd) { static int (*real)(int); if (!real) real = dlsym(RTLD_NEXT, "fdatasync"); pause_ms(); return real(fd); }
