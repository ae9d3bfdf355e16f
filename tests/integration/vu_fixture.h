/* Integration tests: the vhostd core started in-process through vdev.h and
 * driven over its vhost-user sockets by the fake front-end (tests/lib/fakefe.c).
 * One program (test_vu) built from test_vu_*.c, one file per suite (badmsg
 * in two); this header and vu_fixture.c are what they share.
 *
 * Every test gets its own core with two devices: A (under test) and B (a
 * bystander in the same core), plus a temporary directory (tests/lib/coretest.h
 * keeps them in fx).  Criterion runs each test in its own process, so a crash
 * of the core fails exactly that test; every wait has a timeout, so a hang
 * fails it too.  Hostile tests end with healthy(): A and B must serve
 * correct I/O on NEW connections, and data written before the attack (the
 * "golden" range of A) must be intact.
 */
#ifndef VHOSTD_TESTS_VU_FIXTURE_H
#define VHOSTD_TESTS_VU_FIXTURE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "coretest.h"
#include "crmain.h"

#define MiB             (1024ull * 1024)
#define A_SIZE          (32 * MiB)
#define A_QUEUES        4
#define A_SERIAL        "vhostd-int-A"
#define B_SIZE          (8 * MiB)
#define B_QUEUES        2
#define B_SERIAL        "ABCDEFGHIJ0123456789"  /* exactly 20 bytes */
#define GOLD_SECTOR     4096                    /* 2 MiB into A */
#define GOLD_LEN        (64 * 1024)
#define GOLD_SEED       0x601dull
#define SCRATCH_SECTOR  16384                   /* 8 MiB into A: hostile writes may land here */
#define HOSTILE_WAIT_MS 500

enum { DEV_A = 0, DEV_B = 1 };

/* ---- fixture ------------------------------------------------------------- */

/* The suites' .init: a core (adaptive polling, interrupt mode, always
 * polling, adaptive falling asleep after 20 us) with A and B, A's golden
 * range written; .fini: everything released, the leak check. */
void setup(void);
void setup_irq(void);
void setup_busy(void);
void setup_napper(void);
void teardown(void);

/* A's golden range, read through vq, is what setup wrote. */
void check_golden(struct ffe_vq *vq);
/* A and B still serve correct I/O to new front-ends; A's golden data intact. */
void healthy(void);

/* ---- hostile messages ------------------------------------------------------ */

/* What the back-end did with a message. */
enum outcome { O_ACK0, O_NACK, O_REPLY, O_DROPPED, O_HANG, O_ODD };

const char *oname(enum outcome o);
/* Send one message (NEED_REPLY set unless flags given) and classify what
 * came back within 3 s (the reply in *reply if not NULL). */
enum outcome xmit(struct ffe *fe, uint32_t req, uint32_t flags, uint32_t size,
		  const void *payload, size_t plen, const int *fds, unsigned nfds,
		  struct ffe_msg *reply);
/* After a hostile message: the connection either went away or still
 * answers; then close it and check both devices on new connections. */
void finish(struct ffe *fe, enum outcome o, const char *what);

#define EXPECT_REFUSED(o, ...) \
	cr_expect((o) == O_NACK || (o) == O_DROPPED, __VA_ARGS__)

/* GET_INFLIGHT_FD by hand: O_REPLY (region received: its fd in *fd, its
 * size in *msize), O_NACK, O_DROPPED, O_HANG or O_ODD. */
enum outcome get_inflight_raw(struct ffe *fe, uint32_t size, const void *payload,
			      bool need_reply, int *fd, uint64_t *msize);
/* A memfd of size bytes (asserts). */
int memfd_of(size_t size);

/* ---- threads and fds -------------------------------------------------------- */

/* A thread writing and verifying on vq until stop (ioloop_worker). */
struct ioloop {
	struct ffe_vq *vq;
	atomic_bool stop;
	uint64_t base, seed;
	unsigned done;
	char err[256];
};

void *ioloop_worker(void *arg);

/* Device B serves I/O in a thread while A is attacked. */
struct bystander {
	struct ffe *fe;
	pthread_t th;
	atomic_bool stop;
	unsigned done;
	int64_t worst_ms;
	char err[256];
};

void bystander_start(struct bystander *b);
/* Stop it; assert it did I/O and saw no error during `during`. */
void bystander_stop(struct bystander *b, const char *during);

/* Open fds of this process; wait (bounded) until they are back to base. */
int count_fds(void);
void expect_fds_back_to(int base, const char *after);

#endif
