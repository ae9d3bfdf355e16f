/* Token buckets and the latency histogram; see qos.h. */
#include "qos.h"

#define NS 1000000000ull
#define REFILL_MIN_NS 2000      /* below this, leave the refill to later */

static void bucket_set(struct qos_bucket *b, uint64_t rate, uint64_t burst, uint64_t now)
{
	if (rate && !burst)
		burst = rate / 10 ? rate / 10 : 1;
	atomic_store(&b->burst, burst);
	atomic_store(&b->rate, rate);
	atomic_store(&b->last_ns, now);
	atomic_store(&b->tokens, (int64_t)burst);
}

void qos_set(struct qos *q, const struct vdev_limits *l, uint64_t now_ns)
{
	bucket_set(&q->iops, l->iops, l->iops_burst, now_ns);
	bucket_set(&q->bps, l->bps, l->bps_burst, now_ns);
	bucket_set(&q->read_bps, l->read_bps, l->bps_burst, now_ns);
	bucket_set(&q->write_bps, l->write_bps, l->bps_burst, now_ns);
	atomic_store(&q->active, l->iops || l->bps || l->read_bps || l->write_bps);
}

/* Add the tokens earned since last_ns.  One thread wins the CAS on the
 * clock and adds them; the clock moves by the time those whole tokens took,
 * so fractions are not lost at low rates. */
static void refill(struct qos_bucket *b, uint64_t rate, uint64_t now)
{
	uint64_t last = atomic_load_explicit(&b->last_ns, memory_order_relaxed);
	uint64_t burst, add, used;
	int64_t t;

	if (now <= last || now - last < REFILL_MIN_NS)
		return;
	add = (uint64_t)((unsigned __int128)(now - last) * rate / NS);
	if (add == 0)
		return;
	burst = atomic_load_explicit(&b->burst, memory_order_relaxed);
	if (add >= burst) {
		used = now - last;              /* idle long enough to fill it */
		add = burst;
	} else {
		used = (uint64_t)((unsigned __int128)add * NS / rate);
	}
	if (!atomic_compare_exchange_strong(&b->last_ns, &last, last + used))
		return;                         /* another thread did it */
	t = atomic_fetch_add(&b->tokens, (int64_t)add) + (int64_t)add;
	while (t > (int64_t)burst &&
	       !atomic_compare_exchange_weak(&b->tokens, &t, (int64_t)burst))
		;
}

/* Whether b lets a request through now; if not, how long until it does. */
static bool bucket_ok(struct qos_bucket *b, uint64_t now, uint64_t *wait)
{
	uint64_t rate = atomic_load_explicit(&b->rate, memory_order_relaxed);
	int64_t t;

	if (!rate)
		return true;
	refill(b, rate, now);
	t = atomic_load_explicit(&b->tokens, memory_order_relaxed);
	if (t > 0)
		return true;
	/* -t + 1 tokens to earn */
	*wait = (uint64_t)((unsigned __int128)((uint64_t)(-t) + 1) * NS / rate) + 1;
	return false;
}

static void charge(struct qos_bucket *b, uint64_t n)
{
	if (atomic_load_explicit(&b->rate, memory_order_relaxed))
		atomic_fetch_sub_explicit(&b->tokens, (int64_t)n, memory_order_relaxed);
}

static struct qos_bucket *dir_bucket(struct qos *q, enum qos_kind kind)
{
	return kind == QOS_READ ? &q->read_bps : kind == QOS_WRITE ? &q->write_bps : NULL;
}

bool qos_check(struct qos *q, enum qos_kind kind, uint64_t bytes, uint64_t now_ns,
	       uint64_t *wait_ns)
{
	struct qos_bucket *dir = dir_bucket(q, kind);
	uint64_t wait = 0;

	if (!bucket_ok(&q->iops, now_ns, &wait) ||
	    (bytes && !bucket_ok(&q->bps, now_ns, &wait)) ||
	    (bytes && dir && !bucket_ok(dir, now_ns, &wait))) {
		*wait_ns = wait;
		return false;
	}
	return true;
}

void qos_charge(struct qos *q, enum qos_kind kind, uint64_t bytes)
{
	struct qos_bucket *dir = dir_bucket(q, kind);

	charge(&q->iops, 1);
	if (bytes) {
		charge(&q->bps, bytes);
		if (dir)
			charge(dir, bytes);
	}
}

/* --- latency histogram ------------------------------------------------------ */

static unsigned hist_index(uint64_t v)
{
	unsigned e, m, i;

	if (v < QOS_HIST_SUB)
		return (unsigned)v;
	e = 63 - (unsigned)__builtin_clzll(v);          /* >= 4 */
	m = (unsigned)(v >> (e - 4)) & (QOS_HIST_SUB - 1);
	i = QOS_HIST_SUB + (e - 4) * QOS_HIST_SUB + m;
	return i < QOS_HIST_N ? i : QOS_HIST_N - 1;
}

/* The largest value bucket i holds. */
static uint64_t hist_upper(unsigned i)
{
	unsigned e, m;

	if (i < QOS_HIST_SUB)
		return i;
	e = (i - QOS_HIST_SUB) / QOS_HIST_SUB + 4;
	m = (i - QOS_HIST_SUB) % QOS_HIST_SUB;
	return ((uint64_t)(QOS_HIST_SUB + m + 1) << (e - 4)) - 1;
}

void qos_hist_add_owned(struct qos_hist *h, uint64_t ns)
{
	_Atomic uint64_t *b = &h->bucket[hist_index(ns)];

	atomic_store_explicit(b, atomic_load_explicit(b, memory_order_relaxed) + 1,
			      memory_order_relaxed);
	if (ns > atomic_load_explicit(&h->max_ns, memory_order_relaxed))
		atomic_store_explicit(&h->max_ns, ns, memory_order_relaxed);
}

void qos_hist_sum(struct qos_hist *dst, const struct qos_hist *src)
{
	uint64_t m = atomic_load_explicit(&src->max_ns, memory_order_relaxed);

	for (unsigned i = 0; i < QOS_HIST_N; i++) {
		uint64_t v = atomic_load_explicit(&src->bucket[i], memory_order_relaxed);
		if (v)
			atomic_store_explicit(&dst->bucket[i],
					      atomic_load_explicit(&dst->bucket[i],
								   memory_order_relaxed) + v,
					      memory_order_relaxed);
	}
	if (m > atomic_load_explicit(&dst->max_ns, memory_order_relaxed))
		atomic_store_explicit(&dst->max_ns, m, memory_order_relaxed);
}

void qos_hist_read(const struct qos_hist *h, uint64_t *count, uint64_t *p50,
		   uint64_t *p99, uint64_t *p999, uint64_t *max)
{
	static const unsigned per_mille[3] = { 500, 990, 999 };
	uint64_t *out[3] = { p50, p99, p999 };
	uint64_t snap[QOS_HIST_N], n = 0, cum = 0;
	unsigned k = 0;

	for (unsigned i = 0; i < QOS_HIST_N; i++) {
		snap[i] = atomic_load_explicit(&h->bucket[i], memory_order_relaxed);
		n += snap[i];
	}
	*count = n;
	*max = atomic_load_explicit(&h->max_ns, memory_order_relaxed);
	*p50 = *p99 = *p999 = 0;
	if (!n)
		return;
	for (unsigned i = 0; i < QOS_HIST_N && k < 3; i++) {
		cum += snap[i];
		/* the smallest value at or below which per_mille of them lie */
		while (k < 3 && cum * 1000 >= n * per_mille[k]) {
			uint64_t v = hist_upper(i);
			*out[k++] = v < *max ? v : *max;
		}
	}
}
