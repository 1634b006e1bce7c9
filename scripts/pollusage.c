/* One poll(2) of a pipe's read end, then a stream: what the kernel's pipe->poll_usage costs.
 *
 * Since Linux 5.16 a pipe that has been polled once wakes its readers on every write, not
 * only when it was empty, for as long as it lives. This streams 64-byte messages from a
 * parent pinned to CPU 0 to a child pinned to CPU 1 through a FIFO (or an anonymous pipe),
 * with or without one poll(fd, 0) by the reader before the stream, and prints msg/s.
 *
 *   gcc -O2 -o /tmp/pollusage scripts/pollusage.c
 *   /tmp/pollusage POLL MESSAGES [ANON]   # POLL 0 or 1; ANON 1: an anonymous pipe
 *   for r in 1 2 3 4; do for p in 0 1; do /tmp/pollusage $p 2000000; done; done
 *
 * Measured 2026-11-28 (docs/BENCHMARKS.md, eighteenth session): FIFO 1.39-1.60 M msg/s
 * without the poll, 0.94-1.14 M with it. ipckit's FIFO listener waits without poll since.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
static void pin(int c){cpu_set_t s;CPU_ZERO(&s);CPU_SET(c,&s);sched_setaffinity(0,sizeof s,&s);}
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(int argc,char**argv){
  int dopoll=atoi(argv[1]); long n=atol(argv[2]); int anon=argc>3&&atoi(argv[3]);
  int fds[2];
  char path[64]; snprintf(path,sizeof path,"/tmp/pu.%d.fifo",getpid());
  if(anon){ if(pipe(fds))return 1; }
  else { mkfifo(path,0600); }
  pid_t p=fork();
  if(p==0){ pin(1);
    int fd= anon?fds[0]:open(path,O_RDONLY);
    if(anon) close(fds[1]);
    if(dopoll){struct pollfd q={fd,POLLIN,0}; poll(&q,1,0);}
    char b[64]; long got=0;
    for(;;){ ssize_t r=read(fd,b,64); if(r<=0)break; got+=r; }
    _exit(got==n*64?0:2);
  }
  pin(0);
  int fd= anon?fds[1]:open(path,O_WRONLY);
  if(anon) close(fds[0]);
  if(dopoll==2){struct pollfd q={fd,POLLOUT,0}; poll(&q,1,0);}
  char b[64]={1};
  usleep(20000);
  double t0=now();
  for(long i=0;i<n;i++){ if(write(fd,b,64)!=64)return 3; }
  close(fd); int st; waitpid(p,&st,0); double t=now()-t0;
  if(!anon) unlink(path);
  printf("%s poll=%d %.0f msg/s rc=%d\n", anon?"pipe":"fifo", dopoll, n/t, WEXITSTATUS(st));
  return 0;
}
