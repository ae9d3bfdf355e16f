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
 *   mounts sets it to 1 (one test at a time).
 * - A recap of the failed tests, with their failed assertions, as the last
 *   lines of the run: criterion prints each failure when it happens, in the
 *   middle of the daemon's log, and a CI excerpt that keeps only the end of
 *   a long log would otherwise not say which test failed.
 * - Under ThreadSanitizer, a rand_r() that steers libcriterion's shared
 *   arena into memory TSan lets a program map (see below). */
#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <criterion/options.h>

#include <dlfcn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "crmain.h"

__attribute__((weak)) unsigned crmain_jobs;

#if defined(__SANITIZE_THREAD__)
#define CRMAIN_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CRMAIN_TSAN 1
#endif
#endif

#ifdef CRMAIN_TSAN
/* libcriterion's sandbox (BoxFort 0.1) maps the arena it shares with the
 * test workers MAP_FIXED at 32 TiB + (rand_r() & 0x3fffff) * 16 MiB, and
 * gives up after 10 addresses it finds in use.  Under ThreadSanitizer most
 * of that span is TSan's shadow and meta memory or gaps it reserves, where
 * a program's mapping is refused or lands on TSan's own data: the runner
 * aborts ("Could not initialize inheritable arena") or crashes, most runs.
 * This rand_r(), which the library's call binds to ahead of libc's, skips
 * the values whose address TSan would not give a program: an unfixed mmap
 * there gets exactly that address only in TSan's application ranges (its
 * mmap moves any other request).  Other values of the sequence are libc's
 * own.  TSan test builds only; nothing of ours calls rand_r(). */
#define BXF_MMAP_BASE 0x200000000000ull
#define BXF_MMAP_MASK 0x3fffffu
#define BXF_MMAP_STEP 24

static int tsan_gives(uintptr_t addr, size_t len)
{
	void *p = mmap((void *)addr, len, PROT_NONE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	if (p == MAP_FAILED)
		return 0;
	munmap(p, len);
	return p == (void *)addr;
}

int rand_r(unsigned *seed);
int rand_r(unsigned *seed)
{
	static int (*libc_rand_r)(unsigned *);
	int r = 0;

	if (!libc_rand_r)
		libc_rand_r = (int (*)(unsigned *))dlsym(RTLD_NEXT, "rand_r");
	for (int i = 0; i < 100000; i++) {
		r = libc_rand_r(seed);
		if (tsan_gives(BXF_MMAP_BASE + ((uintptr_t)(r & BXF_MMAP_MASK) << BXF_MMAP_STEP),
			       1u << 20))
			break;
	}
	return r;
}
#endif

__attribute__((weak)) void crmain_cleanup(void)
{
}

const char *crmain_run_id(void)
{
	const char *r = getenv(CRMAIN_RUN_ENV);

	return r ? r : "x";
}

static size_t total_tests, total_skipped;

/* The recap: kept in the runner process (report hooks run there), bounded. */
static char recap[8192];
static size_t recap_len;

__attribute__((format(printf, 1, 2)))
static void recap_add(const char *fmt, ...)
{
	va_list ap;
	int n;

	if (recap_len >= sizeof(recap) - 1)
		return;
	va_start(ap, fmt);
	n = vsnprintf(recap + recap_len, sizeof(recap) - recap_len, fmt, ap);
	va_end(ap);
	if (n > 0)
		recap_len += (size_t)n < sizeof(recap) - recap_len ? (size_t)n
								  : sizeof(recap) - 1 - recap_len;
}

ReportHook(POST_TEST)(struct criterion_test_stats *st)
{
	struct criterion_assert_stats *shown[4];
	int nfailed = 0, skip, n = 0;

	if (st->test_status != CR_STATUS_FAILED || st->crashed)
		return;         /* crashes: TEST_CRASH */
	recap_add("  %s::%s", st->test->category, st->test->name);
	if (st->timed_out)
		recap_add(" (timed out)");
	else if (st->exit_code)
		recap_add(" (exit code %d)", st->exit_code);
	recap_add("\n");
	/* criterion keeps the newest assertion first: show the oldest few */
	for (struct criterion_assert_stats *a = st->asserts; a; a = a->next)
		nfailed += !a->passed;
	skip = nfailed - 4;
	for (struct criterion_assert_stats *a = st->asserts; a; a = a->next)
		if (!a->passed && skip-- <= 0 && n < 4)
			shown[n++] = a;
	while (n--)
		recap_add("    %s:%u: %s\n", shown[n]->file ? shown[n]->file : "?", shown[n]->line,
			  shown[n]->message && *shown[n]->message ? shown[n]->message
								   : "assertion failed");
	if (nfailed > 4)
		recap_add("    (%d more)\n", nfailed - 4);
}

ReportHook(TEST_CRASH)(struct criterion_test_stats *st)
{
	recap_add("  %s::%s (crashed, signal %d)\n", st->test->category, st->test->name,
		  st->signal);
}

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
	if (recap_len)
		fprintf(stderr, "%s: failed tests:\n%s", argv[0], recap);
	if (result == 0 && total_tests > 0 && total_skipped == total_tests) {
		fprintf(stderr, "%s: every test was skipped (see the reasons above)\n",
			argv[0]);
		result = 77;
	}
	fflush(NULL);
	_exit(result);
}
