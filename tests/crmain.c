/* main() of the criterion test programs here: criterion's own, except that
 * the runner ends with _exit.  The runner process runs no test code (each
 * test runs in a forked worker, whose teardown asks LeakSanitizer itself),
 * but libcriterion 2.4 leaks an allocation of its own there, which an
 * ASan build's at-exit leak check would report as a failure of the whole
 * suite.  Skipping that one check keeps every other leak visible (a
 * "leak:libcriterion.so" suppression would also hide every leak allocated
 * on a test's own thread, since criterion is on all of their stacks). */
#include <criterion/criterion.h>

#include <stdio.h>
#include <unistd.h>

int main(int argc, char *argv[])
{
	struct criterion_test_set *tests = criterion_initialize();
	int result = 0;

	if (criterion_handle_args(argc, argv, true))
		result = !criterion_run_all_tests(tests);
	criterion_finalize(tests);
	fflush(NULL);
	_exit(result);
}
