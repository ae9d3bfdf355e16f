/* Helpers of the criterion programs that drive a live core (vdev.h) through
 * fakefe: test_vu, test_backend, test_hung. */
#ifndef VHOSTD_TESTS_CORETEST_H
#define VHOSTD_TESTS_CORETEST_H

#include <criterion/criterion.h>
#include <liburing.h>
#include <stdbool.h>
#include <unistd.h>

#include "fakefe.h"
#include "vdev.h"

/* Wait until d is in state st, at most ms (a stall of the machine given
 * back, see struct ffe_deadline). */
static inline bool vdev_wait_state(struct vdev *d, enum vdev_state st, int ms)
{
	struct ffe_deadline dl;

	ffe_deadline_start(&dl, ms);
	while (vdev_get_state(d) != st) {
		if (!ffe_deadline_left(&dl))
			return false;
		usleep(2000);
	}
	return true;
}

/* Skip the test where io_uring cannot be set up (the file backend needs it). */
static inline void need_uring(void)
{
	static int ok = -1;

	if (ok < 0) {
		struct io_uring r;

		ok = io_uring_queue_init(4, &r, 0) == 0;
		if (ok)
			io_uring_queue_exit(&r);
	}
	if (!ok)
		cr_skip_test("io_uring is not available here (io_uring_setup failed or "
			     "kernel.io_uring_disabled): the file backend cannot run");
}

#endif
