/* LD_PRELOAD shim for bench/instructions.sh: valgrind (3.19 at least) does not
 * know openat2, so under it luahttpd would answer every static file 403. This
 * turns the syscall(SYS_openat2, ...) that luahttpd makes into openat with the
 * same flags and mode; RESOLVE_BENEATH is dropped, which only matters for
 * paths that escape the root, and the bench asks for none. Never for a real
 * server. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdarg.h>
#include <sys/syscall.h>

long syscall(long n, ...)
{
    va_list ap;
    long a[6];
    static long (*real)(long, ...);

    va_start(ap, n);
    for (int i = 0; i < 6; i++)
        a[i] = va_arg(ap, long);
    va_end(ap);
    if (n == SYS_openat2) {
        const struct open_how *how = (const struct open_how *)a[2];
        return openat((int)a[0], (const char *)a[1], (int)how->flags, (mode_t)how->mode);
    }
    if (!real)
        real = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
    return real(n, a[0], a[1], a[2], a[3], a[4], a[5]);
}
