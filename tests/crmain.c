/* main() of the criterion test programs here: criterion's own, plus what
 * every program would otherwise write again.
 *
 * - The runner ends with _exit.  The runner process runs no test code (each
 *   test runs in a forked worker, whose teardown asks LeakSanitizer itself),
 *   but libcriterion 2.4 leaks an allocation of its own there, which an ASan
 *   build's at-exit leak check would report as a failure of the whole
 *   suite.  Skipping that one check keeps every other leak visible (a
 *   "leak:libcriterion.so" suppression would also hide every leak allocated
 *   on a test's own thread, since criterion is on all of their stacks).
 * - Exit 77 (meson's "skipped") when every test skipped: a machine without
 *   root, io_uring or /dev/fuse reports a skip, not a pass.
 * - A run id in $VHOSTD_TEST_RUN (the runner's pid, inherited by the
 *   workers) for naming what tests create, and crmain_cleanup() after the
 *   last test, where a program releases what a crashed or timed-out worker
 *   of this run left behind (mounts, loop devices, directories).
 * - crmain_jobs: a program whose tests share the machine's loop devices or
 *   mounts sets it to 1 (one test at a time). */
#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <criterion/options.h>

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "crmain.h"

__attribute__((weak)) unsigned crmain_jobs;

__attribute__((weak)) void crmain_cleanup(void)
{
}

const char *crmain_run_id(void)
{
	const char *r = getenv(CRMAIN_RUN_ENV);

	return r ? r : "x";
}

static size_t total_tests, total_skipped;

ReportHook(POST_ALL)(struct criterion_global_stats *st)
{
	total_tests = st->nb_tests;
	total_skipped = st->tests_skipped;
	crmain_cleanup();
}

int main(int argc, char *argv[])
{
	struct criterion_test_set *tests;
	char id[32];
	int result = 0;

	if (!getenv(CRMAIN_RUN_ENV)) {
		snprintf(id, sizeof(id), "%d", (int)getpid());
		setenv(CRMAIN_RUN_ENV, id, 0);
	}
	tests = criterion_initialize();
	if (crmain_jobs)
		criterion_options.jobs = crmain_jobs;
	if (criterion_handle_args(argc, argv, true))
		result = !criterion_run_all_tests(tests);
	criterion_finalize(tests);
	if (result == 0 && total_tests > 0 && total_skipped == total_tests) {
		fprintf(stderr, "%s: every test was skipped (see the reasons above)\n",
			argv[0]);
		result = 77;
	}
	fflush(NULL);
	_exit(result);
}
