// What a call frame costs a pipe stream when it is live across the system call: 64-byte
// messages parent (CPU 0) -> child (CPU 1), each read and write made through DEPTH extra
// noinline frames that do nothing. On this host (AMD EPYC VM, kernel reporting
// `spec_rstack_overflow: Safe RET`) each such frame costs about 15 ns a message: DEPTH 0
// 2.8-3.1 M msg/s, 4 2.3-2.8 M, 8 2.0-2.6 M (docs/BENCHMARKS.md, twenty-third session).
// Hence ipckit's stream and datagram paths are inlined down to the system call.
//
//   cc -O2 -o /tmp/call-depth scripts/call-depth.c
//   for d in 0 4 8 12; do chrt -f 10 /tmp/call-depth $d 1000000; done
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>
static int depth;
static ssize_t __attribute__((noinline)) rd(int d, int fd, char *b, size_t n) {
    if (d > 0) { ssize_t r = rd(d - 1, fd, b, n); __asm__ volatile("" ::: "memory"); return r; }
    return read(fd, b, n);
}
static ssize_t __attribute__((noinline)) wr(int d, int fd, const char *b, size_t n) {
    if (d > 0) { ssize_t r = wr(d - 1, fd, b, n); __asm__ volatile("" ::: "memory"); return r; }
    return write(fd, b, n);
}
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
static void pin(int c) { cpu_set_t s; CPU_ZERO(&s); CPU_SET(c, &s); sched_setaffinity(0, sizeof s, &s); }
int main(int argc, char **argv) {
    depth = atoi(argv[1]);
    long n = argc > 2 ? atol(argv[2]) : 2000000;
    int p[2]; pipe(p);
    char buf[64]; memset(buf, 7, 64);
    pid_t c = fork();
    if (c == 0) { pin(1); close(p[1]); long got = 0; while (rd(depth, p[0], buf, 64) == 64) got++; _exit(got == n ? 0 : 1); }
    pin(0); close(p[0]);
    double t0 = now();
    for (long i = 0; i < n; i++) { buf[0] = (char)i; wr(depth, p[1], buf, 64); }
    close(p[1]);
    int st; waitpid(c, &st, 0);
    double t1 = now();
    printf("depth %2d: %.0f k msg/s%s\n", depth, n / (t1 - t0) / 1e3, st ? " (count mismatch)" : "");
    return 0;
}
