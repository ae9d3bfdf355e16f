/* guest-server: test harness for the real-guest end-to-end test (not a
 * user-facing tool).  Serves one vhost-user-blk device through the vhostd
 * core API (vdev.h) on a UNIX socket until SIGTERM/SIGINT.
 *
 *   guest-server --socket PATH [--size BYTES (64M)] [--queues N (2)] [--block-size N]
 *                [--backing ram|null|/abs/path] [--serial S] [--threads N]
 *
 * Prints `READY` on stdout (flushed) once the socket accepts connections,
 * and on exit a `STATS ...` line.  Exit 0 on a clean shutdown, 1 on error,
 * 2 on a usage error.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vdev.h"

static void usage(void)
{
	fprintf(stderr,
		"usage: guest-server --socket PATH [--size BYTES] [--queues N]\n"
		"                    [--block-size N] [--backing ram|null|/path]\n"
		"                    [--serial S] [--threads N]\n");
}

static int parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	unsigned shift = 0;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s)
		return -1;
	switch (*end) {
	case '\0': break;
	case 'K': case 'k': shift = 10; break;
	case 'M': case 'm': shift = 20; break;
	case 'G': case 'g': shift = 30; break;
	default: return -1;
	}
	if (*end && end[1])
		return -1;
	if (shift && v > (UINT64_MAX >> shift))
		return -1;
	*out = (uint64_t)v << shift;
	return 0;
}

int main(int argc, char **argv)
{
	struct core_opts opts = { 0 };
	struct vdev_params p;
	struct vdev_stats st;
	struct core *core = NULL;
	struct vdev *dev = NULL;
	const char *sock = NULL;
	char err[VDEV_ERR_MAX] = "";
	sigset_t set;
	uint64_t v;
	int rc, sig;

	vdev_params_init(&p);
	p.size = 64ull << 20;
	p.queues = 2;             /* run-guest.sh default */
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;

		if (!val) {
			usage();
			return 2;
		}
		i++;
		if (strcmp(a, "--socket") == 0) {
			sock = val;
		} else if (strcmp(a, "--size") == 0) {
			if (parse_size(val, &p.size) < 0)
				goto bad;
		} else if (strcmp(a, "--queues") == 0) {
			if (parse_size(val, &v) < 0 || v == 0 || v > VDEV_MAX_QUEUES)
				goto bad;
			p.queues = (uint16_t)v;
		} else if (strcmp(a, "--block-size") == 0) {
			if (parse_size(val, &v) < 0 || v > 65536)
				goto bad;
			p.block_size = (uint32_t)v;
		} else if (strcmp(a, "--threads") == 0) {
			if (parse_size(val, &v) < 0 || v > 64)
				goto bad;
			opts.nthreads = (unsigned)v;
		} else if (strcmp(a, "--backing") == 0) {
			if (strcmp(val, "ram") == 0) {
				p.backing = BE_RAM;
			} else if (strcmp(val, "null") == 0) {
				p.backing = BE_NULL;
			} else if (val[0] == '/' && strlen(val) < sizeof(p.path)) {
				p.backing = BE_FILE;
				strcpy(p.path, val);
			} else {
				goto bad;
			}
		} else if (strcmp(a, "--serial") == 0) {
			if (strlen(val) > VDEV_SERIAL_MAX)
				goto bad;
			strcpy(p.serial, val);
		} else {
			goto bad;
		}
		continue;
bad:
		fprintf(stderr, "guest-server: bad option %s '%s'\n", a, val);
		usage();
		return 2;
	}
	if (!sock) {
		usage();
		return 2;
	}
	if (vdev_params_check(&p, err, sizeof(err)) < 0) {
		fprintf(stderr, "guest-server: invalid device parameters: %s\n", err);
		return 2;
	}

	/* Block the stop signals before any thread exists, so every core
	 * thread inherits the mask and only sigwait() below sees them. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	rc = core_create(&opts, &core);
	if (rc < 0) {
		fprintf(stderr, "guest-server: core_create: %s\n", strerror(-rc));
		return 1;
	}
	rc = vdev_create(core, "guest0", sock, &p, &dev, err, sizeof(err));
	if (rc < 0) {
		fprintf(stderr, "guest-server: vdev_create %s: %s (%s)\n", sock,
			strerror(-rc), err);
		core_destroy(core);
		return 1;
	}
	printf("READY\n");
	fflush(stdout);

	do {
		rc = sigwait(&set, &sig);
	} while (rc == EINTR);

	vdev_get_stats(dev, &st);
	vdev_last_error(dev, err, sizeof(err));
	printf("STATS state=%s reads=%" PRIu64 " writes=%" PRIu64 " flushes=%" PRIu64
	       " discards=%" PRIu64 " write_zeroes=%" PRIu64 " get_ids=%" PRIu64
	       " bytes_read=%" PRIu64 " bytes_written=%" PRIu64 " errors=%" PRIu64
	       " inflight=%" PRIu64 "%s%s\n",
	       vdev_state_name(vdev_get_state(dev)), st.reads, st.writes, st.flushes,
	       st.discards, st.write_zeroes, st.get_ids, st.bytes_read,
	       st.bytes_written, st.errors, st.inflight,
	       err[0] ? " last_error=" : "", err);
	fflush(stdout);
	rc = vdev_destroy(dev, true);
	if (rc < 0)
		fprintf(stderr, "guest-server: vdev_destroy: %s\n", strerror(-rc));
	core_destroy(core);
	return rc < 0 ? 1 : 0;
}
