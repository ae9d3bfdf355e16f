/* I/O limits: token buckets shared by every queue of a device (and by the
 * devices of a throttle group), on any engine thread, without a lock:
 * tokens are atomics, the refill is claimed by one thread with a CAS on the
 * bucket's clock, and a request that finds tokens is let through and paid
 * for (the balance may go below zero: a large request is not starved, the
 * next ones wait until it is paid back).  The control thread changes rates
 * at any time with plain atomic stores.  No syscall: the caller passes the
 * time (vDSO clock).  Also the latency histogram of the stats. */
#ifndef VHOSTD_QOS_H
#define VHOSTD_QOS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "params.h"

struct qos_bucket {
	_Atomic int64_t tokens;         /* requests or bytes */
	_Atomic uint64_t last_ns;       /* tokens are counted up to this time */
	_Atomic uint64_t rate;          /* per second, 0 = no limit */
	_Atomic uint64_t burst;         /* most tokens it holds */
};

enum qos_kind { QOS_READ, QOS_WRITE, QOS_OTHER };

struct qos {
	struct qos_bucket iops, bps, read_bps, write_bps;
	_Atomic bool active;            /* any rate set */
};

/* Set q's limits (control thread, any time).  The buckets start full. */
void qos_set(struct qos *q, const struct vdev_limits *l, uint64_t now_ns);

/* May a request of kind and bytes start at now_ns as far as q is
 * concerned?  If not, *wait_ns says how long until the bucket that refused
 * has tokens again.  qos_charge() then pays for a request that starts (a
 * device checks its own limits and its group's before it pays either). */
bool qos_check(struct qos *q, enum qos_kind kind, uint64_t bytes, uint64_t now_ns,
	       uint64_t *wait_ns);
void qos_charge(struct qos *q, enum qos_kind kind, uint64_t bytes);

static inline bool qos_active(const struct qos *q)
{
	return q && atomic_load_explicit(&q->active, memory_order_relaxed);
}

/* Latency histogram: log-linear, 16 steps per power of two (a value is
 * known within 1/16), up to 2^36 ns (about 69 s; longer ones land in the
 * last bucket), counters in relaxed atomics: one writer, any reader. */
#define QOS_HIST_SUB    16
#define QOS_HIST_BITS   36
#define QOS_HIST_N      ((QOS_HIST_BITS - 4 + 1) * QOS_HIST_SUB + QOS_HIST_SUB)

struct qos_hist {
	_Atomic uint64_t bucket[QOS_HIST_N];
	_Atomic uint64_t max_ns;
};

/* Count ns in a histogram only one thread writes (a queue's, on its
 * engine thread): no locked instruction. */
void qos_hist_add_owned(struct qos_hist *h, uint64_t ns);
/* Add what src holds into dst (a reader's sum of several). */
void qos_hist_sum(struct qos_hist *dst, const struct qos_hist *src);
/* Count, and the values below which p50/p99/p99.9 of them lie (the
 * bucket's upper bound), and the largest. */
void qos_hist_read(const struct qos_hist *h, uint64_t *count, uint64_t *p50,
		   uint64_t *p99, uint64_t *p999, uint64_t *max);

#endif
