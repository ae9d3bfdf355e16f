/* Replay driver: runs LLVMFuzzerTestOneInput over every file named on the
 * command line or found (non-recursively, in name order) in the directories
 * named there, so a fuzz target's corpus runs as a plain test with any
 * compiler.  Each input runs in its own child process (REPLAY_NOFORK=1: all
 * in this one, for a debugger), so one crash does not hide the next; every
 * failing input is listed.  Exits 1 if an input failed or none was found. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fuzz.h"

static int run_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	size_t len = 0, cap = 0, n;

	if (!f) {
		fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
		return -1;
	}
	do {
		if (len == cap) {
			cap = cap ? cap * 2 : 4096;
			buf = realloc(buf, cap);
			if (!buf)
				abort();
		}
		n = fread(buf + len, 1, cap - len, f);
		len += n;
	} while (n > 0);
	fclose(f);
	if (getenv("REPLAY_VERBOSE"))
		fprintf(stderr, "replay: %s (%zu bytes)\n", path, len);
	LLVMFuzzerTestOneInput(buf, len);
	free(buf);
	return 0;
}

static unsigned nfailed;

/* Run one input in a child; count and name it if it fails. */
static int run_isolated(const char *path)
{
	int status;
	pid_t pid;

	if (getenv("REPLAY_NOFORK"))
		return run_file(path);
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		perror("replay: fork");
		exit(1);
	}
	if (pid == 0)
		exit(run_file(path) < 0 ? 2 : 0);
	if (waitpid(pid, &status, 0) < 0) {
		perror("replay: waitpid");
		exit(1);
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 2)
		return -1;      /* unreadable: reported by the child */
	nfailed++;
	if (WIFSIGNALED(status))
		fprintf(stderr, "replay: FAILED %s (signal %d)\n", path, WTERMSIG(status));
	else
		fprintf(stderr, "replay: FAILED %s (exit %d)\n", path, WEXITSTATUS(status));
	return 0;
}

static int cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int run_dir(const char *dir, unsigned *count)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char **names = NULL;
	size_t n = 0, cap = 0;

	if (!d) {
		fprintf(stderr, "replay: %s: %s\n", dir, strerror(errno));
		return -1;
	}
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			names = realloc(names, cap * sizeof(*names));
			if (!names)
				abort();
		}
		names[n] = malloc(strlen(dir) + strlen(e->d_name) + 2);
		if (!names[n])
			abort();
		sprintf(names[n], "%s/%s", dir, e->d_name);
		n++;
	}
	closedir(d);
	qsort(names, n, sizeof(*names), cmp);
	for (size_t i = 0; i < n; i++) {
		struct stat st;
		if (stat(names[i], &st) == 0 && S_ISREG(st.st_mode) && run_isolated(names[i]) == 0)
			(*count)++;
		free(names[i]);
	}
	free(names);
	return 0;
}

int main(int argc, char **argv)
{
	unsigned count = 0;

	for (int i = 1; i < argc; i++) {
		struct stat st;
		if (stat(argv[i], &st) < 0) {
			fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
			return 1;
		}
		if (S_ISDIR(st.st_mode)) {
			if (run_dir(argv[i], &count) < 0)
				return 1;
		} else if (run_isolated(argv[i]) == 0) {
			count++;
		}
	}
	printf("replayed %u inputs, %u failed\n", count, nfailed);
	return count && !nfailed ? 0 : 1;
}
