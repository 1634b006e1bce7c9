/* Where one copy of a large message lands, measured without ipckit (docs/BENCHMARKS.md,
 * tenth session): a parent on CPU 0 copies 1 MiB messages into SLOTS places of a shared
 * mapping in turn, a child on CPU 1 takes each (reads two of its lines, or with a third
 * argument copies it out) and frees its place. SLOTS 0 is memcpy into one place in one
 * process, the bench's yardstick.
 *
 *   gcc -O2 -o /tmp/slots scripts/slots.c
 *   for s in 0 1 2 4; do chrt -f 10 /tmp/slots $s 0.5; done        # as shm-ref
 *   for s in 0 1 2 4; do chrt -f 10 /tmp/slots $s 0.5 copy; done   # as shm
 *   for s in 1 2 4; do chrt -f 10 /tmp/slots $s 0.5 alone; done    # no child: the copies only
 *
 * The waits spin: a run now and then reports almost nothing (the kernel's real-time
 * throttling stopped one side mid-run); repeat it.
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MSG (1 << 20)

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void pin(int cpu)
{
    cpu_set_t s;
    CPU_ZERO(&s);
    CPU_SET(cpu, &s);
    sched_setaffinity(0, sizeof s, &s);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s SLOTS SECONDS [copy|alone]\n", argv[0]);
        return 2;
    }
    int slots = atoi(argv[1]);
    double dur = atof(argv[2]);
    int copy = argc > 3 && strcmp(argv[3], "copy") == 0;
    int alone = argc > 3 && strcmp(argv[3], "alone") == 0;
    char *src = malloc(MSG), *dst = malloc(MSG);
    memset(src, 1, MSG);
    memset(dst, 0, MSG);
    if (slots == 0) {
        pin(0);
        long n = 0;
        double t0 = now();
        while (now() - t0 < dur) {
            memcpy(dst, src, MSG);
            src[n & 1023]++;
            n++;
        }
        printf("memcpy %.2f GB/s\n", n * (double)MSG / (now() - t0) / 1e9);
        return 0;
    }
    size_t len = 4096 + (size_t)slots * MSG;
    char *m = mmap(0, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return 1;
    memset(m, 0, len);
    _Atomic unsigned long *head = (void *)m, *tail = (void *)(m + 128);
    char *ring = m + 4096;
    if (alone) {
        /* The parent's copies into the slots in turn, nobody reading: the footprint's cost. */
        pin(0);
        long n = 0;
        double t0 = now();
        while (now() - t0 < dur) {
            memcpy(ring + (n % slots) * (size_t)MSG, src, MSG);
            src[n & 1023]++;
            n++;
        }
        printf("alone %d: %.2f GB/s\n", slots, n * (double)MSG / (now() - t0) / 1e9);
        return 0;
    }
    pid_t child = fork();
    if (child == 0) {
        pin(1);
        unsigned long t = 0;
        volatile char sink;
        for (;;) {
            unsigned long h;
            while ((h = atomic_load_explicit(head, memory_order_acquire)) == t)
                ;
            if (h == ~0UL)
                _exit(0);
            char *r = ring + (t % slots) * (size_t)MSG;
            if (copy)
                memcpy(dst, r, MSG);
            else {
                sink = r[0];
                sink = r[MSG - 1];
            }
            (void)sink;
            t++;
            atomic_store_explicit(tail, t, memory_order_release);
        }
    }
    pin(0);
    unsigned long h = 0;
    double t0 = now();
    while (now() - t0 < dur) {
        while (h - atomic_load_explicit(tail, memory_order_acquire) >= (unsigned long)slots)
            ;
        memcpy(ring + (h % slots) * (size_t)MSG, src, MSG);
        src[h & 1023]++;
        h++;
        atomic_store_explicit(head, h, memory_order_release);
    }
    double took = now() - t0;
    while (atomic_load(tail) != h)
        ;
    atomic_store(head, ~0UL);
    wait(0);
    printf("slots %d%s %.2f GB/s\n", slots, copy ? " copy" : "", h * (double)MSG / took / 1e9);
    return 0;
}
