// The fan-out floor in C (issue 7): one publisher process, N subscriber processes, one
// broadcast ring of 64-byte messages in shared memory, each message written once and read by
// every subscriber. The publisher waits for the slowest subscriber (ipckit's `block` policy).
// The per-message work is the least a safe reader can do: read the slot's stamp, copy the
// payload out, check the stamp again, move on. No topics, no validation beyond the stamp.
// TOPICS=1 adds what a bus message carries and a bus reader checks: a header (length, topic
// length, kind, two reference words) validated against the slot, a 13-byte topic copied out
// with the payload and compared with the last topic seen, and a callback per message.
//
//   cc -O2 -o /tmp/fanout scripts/fanout.c
//   /tmp/fanout SECONDS N...      # e.g. /tmp/fanout 1 1 2 4 8 1 8
//   TOPICS=1 /tmp/fanout 1 1 8
//
// Placement as in `ipckit bench`: the publisher is pinned to CPU 0, the subscribers may run
// on both CPUs. Prints one line per N: deliveries per second in total, and per subscriber.
#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SLOTS 1024
#define MAX_SUBS 16
#define PAYLOAD 64

#define TOPIC "bench/in/data"
#define TOPIC_LEN 13

struct slot {
  _Atomic uint64_t stamp; // message number + 1 once written
  // Used with TOPICS=1 only.
  uint32_t len, topic_len;
  uint32_t kind, pad;
  uint64_t corr, reply_to;
  uint8_t body[PAYLOAD + 32]; // topic then payload with TOPICS=1, else the payload
} __attribute__((aligned(128)));

struct cursor {
  _Atomic uint64_t next; // the next message this subscriber reads
  _Atomic uint64_t delivered;
} __attribute__((aligned(128)));

struct ring {
  _Atomic int stop;
  _Atomic int ready;
  struct cursor subs[MAX_SUBS] __attribute__((aligned(128)));
  struct slot slots[SLOTS];
};

static void pin(int cpu_a, int cpu_b) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu_a, &set);
  if (cpu_b >= 0) CPU_SET(cpu_b, &set);
  sched_setaffinity(0, sizeof set, &set);
}

static int spin_limit = 64; // pauses before a yield; SPIN=N in the environment
static int topics;          // TOPICS=1 in the environment

static uint64_t counted;
__attribute__((noinline)) static void take(const uint8_t *topic, size_t tl, const uint8_t *p,
                                           size_t len) {
  if (tl == TOPIC_LEN && memcmp(topic, TOPIC, TOPIC_LEN) == 0) counted += p[len - 1];
}

static void relax(int *spins) {
  if (++*spins < spin_limit) {
    __builtin_ia32_pause();
  } else {
    *spins = 0;
    sched_yield();
  }
}

static void subscriber(struct ring *r, int me) {
  uint8_t buf[PAYLOAD] = {0};
  uint64_t next = 0, sum = 0;
  int spins = 0;
  atomic_fetch_add(&r->ready, 1);
  while (!atomic_load_explicit(&r->stop, memory_order_relaxed)) {
    struct slot *s = &r->slots[next % SLOTS];
    if (atomic_load_explicit(&s->stamp, memory_order_acquire) != next + 1) {
      relax(&spins);
      continue;
    }
    if (topics) {
      uint8_t tb[PAYLOAD + 32];
      uint32_t len = s->len, tl = s->topic_len, kind = s->kind;
      uint64_t corr = s->corr, reply = s->reply_to;
      if (len > PAYLOAD || tl > 32 || kind > 4) { next++; continue; } // corrupt: skipped
      memcpy(tb, s->body, tl + len);
      atomic_thread_fence(memory_order_acquire);
      if (atomic_load_explicit(&s->stamp, memory_order_relaxed) != next + 1) continue;
      static uint8_t last[32];
      static uint32_t last_len;
      if (tl != last_len || memcmp(tb, last, tl) != 0) { memcpy(last, tb, tl); last_len = tl; }
      if (corr + reply == 1) sum++;
      take(tb, tl, tb + tl, len);
    } else {
      memcpy(buf, s->body, PAYLOAD);
      atomic_thread_fence(memory_order_acquire);
      if (atomic_load_explicit(&s->stamp, memory_order_relaxed) != next + 1) continue;
    }
    sum += buf[0];
    next++;
    spins = 0;
    // Publish progress every 16 messages (the publisher has 1,024 slots of slack).
    if ((next & 15) == 0) atomic_store_explicit(&r->subs[me].next, next, memory_order_release);
  }
  atomic_store(&r->subs[me].delivered, next);
  if (sum + counted == 1) puts(""); // keep the copies
  _exit(0);
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static void run(double secs, int n) {
  struct ring *r = mmap(NULL, sizeof *r, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                        -1, 0);
  if (r == MAP_FAILED) { perror("mmap"); exit(1); }
  memset(r, 0, sizeof *r);
  pid_t kids[MAX_SUBS];
  for (int i = 0; i < n; i++) {
    kids[i] = fork();
    if (kids[i] == 0) {
      pin(0, 1);
      subscriber(r, i);
    }
  }
  pin(0, -1);
  while (atomic_load(&r->ready) < n) sched_yield();
  uint8_t msg[PAYLOAD];
  memset(msg, 7, sizeof msg);
  uint64_t seq = 0, slowest = 0;
  int spins = 0;
  double start = now(), end = start + secs;
  while (1) {
    if ((seq & 1023) == 0 && now() >= end) break;
    // Room: every subscriber must have read the message that used this slot last.
    while (seq - slowest >= SLOTS - 16) {
      uint64_t m = UINT64_MAX;
      for (int i = 0; i < n; i++) {
        uint64_t c = atomic_load_explicit(&r->subs[i].next, memory_order_acquire);
        if (c < m) m = c;
      }
      slowest = m;
      if (seq - slowest >= SLOTS - 16) relax(&spins);
    }
    struct slot *s = &r->slots[seq % SLOTS];
    if (topics) {
      s->len = PAYLOAD;
      s->topic_len = TOPIC_LEN;
      s->kind = 1;
      s->corr = 0;
      s->reply_to = 0;
      memcpy(s->body, TOPIC, TOPIC_LEN);
      memcpy(s->body + TOPIC_LEN, msg, PAYLOAD);
    } else {
      memcpy(s->body, msg, PAYLOAD);
    }
    atomic_store_explicit(&s->stamp, seq + 1, memory_order_release);
    seq++;
  }
  double took = now() - start;
  atomic_store(&r->stop, 1);
  uint64_t total = 0;
  for (int i = 0; i < n; i++) waitpid(kids[i], NULL, 0);
  for (int i = 0; i < n; i++) total += atomic_load(&r->subs[i].delivered);
  printf("subscribers %d: %.1f M deliveries/s in total, %.1f M per subscriber, %.1f M publishes/s\n",
         n, total / took / 1e6, total / took / 1e6 / n, seq / took / 1e6);
  munmap(r, sizeof *r);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s SECONDS N...\n", argv[0]);
    return 2;
  }
  double secs = atof(argv[1]);
  if (getenv("SPIN")) spin_limit = atoi(getenv("SPIN"));
  topics = getenv("TOPICS") && atoi(getenv("TOPICS"));
  for (int i = 2; i < argc; i++) {
    int n = atoi(argv[i]);
    if (n < 1 || n > MAX_SUBS) { fprintf(stderr, "N: 1 to %d\n", MAX_SUBS); return 2; }
    run(secs, n);
  }
  return 0;
}
