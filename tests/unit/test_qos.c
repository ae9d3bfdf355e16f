/* Token buckets and the latency histogram (engine/qos.c), on a clock the
 * test moves by hand: rates, bursts, debt, groups of buckets, and the
 * histogram's percentiles within its 1/16 precision. */
#include <criterion/criterion.h>

#include "qos.h"

#define MS 1000000ull
#define S  1000000000ull

/* Requests let through in `dur` ns of t, asking every `step` ns. */
static unsigned run(struct qos *q, enum qos_kind k, uint64_t bytes, uint64_t *t,
		    uint64_t dur, uint64_t step)
{
	uint64_t end = *t + dur, wait;
	unsigned n = 0;

	for (; *t < end; *t += step)
		while (qos_check(q, k, bytes, *t, &wait)) {
			qos_charge(q, k, bytes);
			n++;
		}
	return n;
}

Test(qos, iops_rate_and_burst)
{
	struct qos q = { 0 };
	struct vdev_limits l = { .iops = 2000 };
	uint64_t t = 10 * S, wait = 0;
	unsigned n;

	qos_set(&q, &l, t);
	cr_assert(qos_active(&q));
	/* the bucket starts full: a tenth of a second's worth */
	n = run(&q, QOS_OTHER, 0, &t, 1, 1);
	cr_assert_eq(n, 200, "burst %u", n);
	/* then the rate, whatever the polling step */
	n = run(&q, QOS_OTHER, 0, &t, 2 * S, 37 * 1000);
	cr_assert(n >= 3990 && n <= 4010, "2 s at 2000/s let %u through", n);
	/* and a refusal says how long to wait: about one interval */
	while (qos_check(&q, QOS_OTHER, 0, t, &wait))
		qos_charge(&q, QOS_OTHER, 0);
	cr_assert(wait > 0 && wait <= 500 * 1000 + 1, "wait %llu ns", (unsigned long long)wait);
}

Test(qos, bytes_with_debt)
{
	struct qos q = { 0 };
	struct vdev_limits l = { .bps = 8 << 20 };
	uint64_t t = S;
	unsigned n;

	qos_set(&q, &l, t);
	/* 64 KiB requests at 8 MiB/s: 128 per second, the first 13 from the burst */
	n = run(&q, QOS_READ, 64 << 10, &t, 4 * S, 100 * 1000);
	cr_assert(n >= 4 * 128 && n <= 4 * 128 + 14, "4 s at 8 MiB/s: %u x 64 KiB", n);
	/* a request larger than the whole bucket still goes, and is paid back */
	{
		struct vdev_limits small = { .bps = 1000, .bps_burst = 100 };
		uint64_t wait = 0;
		qos_set(&q, &small, t);
		cr_assert(qos_check(&q, QOS_WRITE, 4096, t, &wait));
		qos_charge(&q, QOS_WRITE, 4096);
		cr_assert(!qos_check(&q, QOS_WRITE, 512, t, &wait));
		cr_assert(wait >= 3 * S && wait <= 5 * S, "debt of ~4000 bytes at 1000/s: %llu ns",
			  (unsigned long long)wait);
	}
}

Test(qos, directions)
{
	struct qos q = { 0 };
	struct vdev_limits l = { .read_bps = 1 << 20 };
	uint64_t t = S;

	qos_set(&q, &l, t);
	/* writes and flushes are not limited by a read limit */
	{
		uint64_t wait;
		for (int i = 0; i < 1000; i++) {
			cr_assert(qos_check(&q, QOS_WRITE, 1 << 20, t, &wait));
			cr_assert(qos_check(&q, QOS_OTHER, 0, t, &wait));
		}
	}
	cr_assert_leq(run(&q, QOS_READ, 4096, &t, S, MS), 256 + 26);   /* 1 MiB/s of 4 KiB, and the burst */
}

Test(qos, unlimited_and_off)
{
	struct qos q = { 0 };
	struct vdev_limits none = { 0 }, l = { .iops = 10 };
	uint64_t t = S, wait;

	cr_assert(!qos_active(&q));
	cr_assert(!qos_active(NULL));
	qos_set(&q, &l, t);
	cr_assert(qos_active(&q));
	qos_set(&q, &none, t);
	cr_assert(!qos_active(&q));
	cr_assert(qos_check(&q, QOS_READ, 1 << 30, t, &wait));
}

Test(qos, idle_does_not_store_more_than_the_burst)
{
	struct qos q = { 0 };
	struct vdev_limits l = { .iops = 1000, .iops_burst = 5 };
	uint64_t t = S;

	qos_set(&q, &l, t);
	t += 3600 * S;          /* an hour idle */
	cr_assert_eq(run(&q, QOS_OTHER, 0, &t, 1, 1), 5);
}

Test(qos, histogram_percentiles)
{
	static struct qos_hist h;
	uint64_t n, p50, p99, p999, max;

	qos_hist_read(&h, &n, &p50, &p99, &p999, &max);
	cr_assert_eq(n, 0);
	cr_assert_eq(p50, 0);
	/* 1000 samples: 1..1000 us */
	for (uint64_t i = 1; i <= 1000; i++)
		qos_hist_add_owned(&h, i * 1000);
	qos_hist_read(&h, &n, &p50, &p99, &p999, &max);
	cr_assert_eq(n, 1000);
	cr_assert_eq(max, 1000 * 1000);
	cr_assert(p50 >= 500 * 1000 && p50 <= 500 * 1000 * 17 / 16, "p50 %llu", (unsigned long long)p50);
	cr_assert(p99 >= 990 * 1000 && p99 <= 1000 * 1000, "p99 %llu", (unsigned long long)p99);
	cr_assert(p999 >= 999 * 1000 && p999 <= 1000 * 1000, "p999 %llu", (unsigned long long)p999);
	/* small and huge values land in their buckets */
	qos_hist_add_owned(&h, 0);
	qos_hist_add_owned(&h, 7);
	qos_hist_add_owned(&h, 1ull << 50);
	qos_hist_read(&h, &n, &p50, &p99, &p999, &max);
	cr_assert_eq(n, 1003);
	cr_assert_eq(max, 1ull << 50);
}
