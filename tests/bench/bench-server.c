/* bench-server: test harness (not a user-facing tool) that serves
 * vhost-user-blk devices through the vhostd core API (vdev.h), without the
 * daemon's control filesystem: the benchmarks measure the engine with it,
 * and the guest end-to-end test boots a real guest on it.  Runs until
 * SIGTERM/SIGINT.
 *
 *   bench-server --socket PATH [--backing null|ram|/abs/path] [--size BYTES]
 *                [--devices N] [--queues N] [--threads N] [--cpu N[,N...]]
 *                [--poll-mode adaptive|poll|interrupt] [--idle-us N]
 *                [--block-size N] [--serial S]
 *                [--iops-limit N] [--bps-limit BYTES] [--read-bps-limit BYTES]
 *                [--write-bps-limit BYTES] [--iops-burst N] [--bps-burst BYTES]
 *
 * With --devices N > 1 the sockets are PATH.0 .. PATH.N-1.  The limits
 * (per second, K/M/G suffixes; 0 = unlimited, the default) are each
 * device's own (vdev_params.limits), the same for every device: with
 * them the benchmarks measure what the limiter costs a request
 * (tests/bench/qos-cost.sh).  --cpu pins the
 * whole process (control thread included) to the given cpus and engine
 * thread i to the i-th of them.  Prints READY once every socket listens, and
 * one STATS line per device on exit.  Exit 0 clean, 1 error (a failed
 * request included), 2 usage. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vdev.h"

#define MAX_DEVS 64
#define MAX_CPUS 64

static void usage(FILE *f)
{
	fprintf(f,
		"usage: bench-server --socket PATH [--backing null|ram|/abs/path] [--size BYTES]\n"
		"                    [--devices N] [--queues N] [--threads N] [--cpu N[,N...]]\n"
		"                    [--poll-mode adaptive|poll|interrupt] [--idle-us N]\n"
		"                    [--block-size N] [--serial S]\n"
		"                    [--iops-limit N] [--bps-limit BYTES] [--read-bps-limit BYTES]\n"
		"                    [--write-bps-limit BYTES] [--iops-burst N] [--bps-burst BYTES]\n");
}

static int parse_u64(const char *s, uint64_t *out)
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

static int parse_cpus(const char *s, int *cpus, unsigned *n)
{
	char buf[256], *tok, *save = NULL;

	if (strlen(s) >= sizeof(buf))
		return -1;
	strcpy(buf, s);
	*n = 0;
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		uint64_t v;
		if (*n == MAX_CPUS || parse_u64(tok, &v) < 0 || v >= CPU_SETSIZE)
			return -1;
		cpus[(*n)++] = (int)v;
	}
	return *n ? 0 : -1;
}

int main(int argc, char **argv)
{
	struct core_opts opts = { .poll_mode = CORE_POLL_ADAPTIVE };
	struct vdev_params p;
	struct core *core = NULL;
	struct vdev *devs[MAX_DEVS] = { NULL };
	const char *sock = NULL;
	char err[VDEV_ERR_MAX] = "";
	int cpus[MAX_CPUS], thread_cpus[MAX_CPUS];
	unsigned ncpus = 0, ndevs = 1;
	sigset_t set;
	uint64_t v;
	int rc, sig, status = 0;

	vdev_params_init(&p);
	p.size = 1ull << 30;
	p.backing = BE_NULL;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(a, "--help") == 0) {
			usage(stdout);
			return 0;
		}
		if (!val)
			goto bad;
		i++;
		if (strcmp(a, "--socket") == 0) {
			sock = val;
		} else if (strcmp(a, "--size") == 0) {
			if (parse_u64(val, &p.size) < 0)
				goto bad;
		} else if (strcmp(a, "--devices") == 0) {
			if (parse_u64(val, &v) < 0 || v == 0 || v > MAX_DEVS)
				goto bad;
			ndevs = (unsigned)v;
		} else if (strcmp(a, "--queues") == 0) {
			if (parse_u64(val, &v) < 0 || v == 0 || v > VDEV_MAX_QUEUES)
				goto bad;
			p.queues = (uint16_t)v;
		} else if (strcmp(a, "--block-size") == 0) {
			if (parse_u64(val, &v) < 0 || v > 65536)
				goto bad;
			p.block_size = (uint32_t)v;
		} else if (strcmp(a, "--threads") == 0) {
			if (parse_u64(val, &v) < 0 || v == 0 || v > MAX_CPUS)
				goto bad;
			opts.nthreads = (unsigned)v;
		} else if (strcmp(a, "--cpu") == 0 || strcmp(a, "--cpus") == 0) {
			if (parse_cpus(val, cpus, &ncpus) < 0)
				goto bad;
		} else if (strcmp(a, "--idle-us") == 0) {
			if (parse_u64(val, &v) < 0 || v > 10000000)
				goto bad;
			opts.idle_us = (unsigned)v;
		} else if (strcmp(a, "--poll-mode") == 0) {
			if (strcmp(val, "adaptive") == 0)
				opts.poll_mode = CORE_POLL_ADAPTIVE;
			else if (strcmp(val, "poll") == 0)
				opts.poll_mode = CORE_POLL_ALWAYS;
			else if (strcmp(val, "interrupt") == 0)
				opts.poll_mode = CORE_POLL_INTERRUPT;
			else
				goto bad;
		} else if (strcmp(a, "--iops-limit") == 0) {
			if (parse_u64(val, &p.limits.iops) < 0)
				goto bad;
		} else if (strcmp(a, "--bps-limit") == 0) {
			if (parse_u64(val, &p.limits.bps) < 0)
				goto bad;
		} else if (strcmp(a, "--read-bps-limit") == 0) {
			if (parse_u64(val, &p.limits.read_bps) < 0)
				goto bad;
		} else if (strcmp(a, "--write-bps-limit") == 0) {
			if (parse_u64(val, &p.limits.write_bps) < 0)
				goto bad;
		} else if (strcmp(a, "--iops-burst") == 0) {
			if (parse_u64(val, &p.limits.iops_burst) < 0)
				goto bad;
		} else if (strcmp(a, "--bps-burst") == 0) {
			if (parse_u64(val, &p.limits.bps_burst) < 0)
				goto bad;
		} else if (strcmp(a, "--serial") == 0) {
			if (strlen(val) > VDEV_SERIAL_MAX)
				goto bad;
			strcpy(p.serial, val);
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
		} else {
			goto bad;
		}
		continue;
bad:
		fprintf(stderr, "bench-server: bad option %s%s%s%s\n", a, val ? " '" : "",
			val ? val : "", val ? "'" : "");
		usage(stderr);
		return 2;
	}
	if (!sock) {
		usage(stderr);
		return 2;
	}
	if (p.backing == BE_FILE) {
		if (ndevs > 1) {
			fprintf(stderr, "bench-server: a file backing serves one device\n");
			return 2;
		}
		p.size = 0;     /* the file's size */
	}
	if (vdev_params_check(&p, err, sizeof(err)) < 0) {
		fprintf(stderr, "bench-server: invalid device parameters: %s\n", err);
		return 2;
	}

	if (ncpus) {
		cpu_set_t cs;
		CPU_ZERO(&cs);
		for (unsigned i = 0; i < ncpus; i++)
			CPU_SET(cpus[i], &cs);
		if (sched_setaffinity(0, sizeof(cs), &cs) < 0) {
			fprintf(stderr, "bench-server: cannot pin to the cpus: %s\n", strerror(errno));
			return 1;
		}
		for (unsigned i = 0; i < MAX_CPUS; i++)
			thread_cpus[i] = cpus[i % ncpus];
		opts.cpus = thread_cpus;
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
		fprintf(stderr, "bench-server: core_create: %s\n", strerror(-rc));
		return 1;
	}
	for (unsigned i = 0; i < ndevs; i++) {
		char path[4200], name[32];

		if (ndevs == 1)
			snprintf(path, sizeof(path), "%s", sock);
		else
			snprintf(path, sizeof(path), "%s.%u", sock, i);
		snprintf(name, sizeof(name), "bench%u", i);
		rc = vdev_create(core, name, path, &p, &devs[i], err, sizeof(err));
		if (rc < 0) {
			fprintf(stderr, "bench-server: vdev_create %s: %s (%s)\n", path,
				strerror(-rc), err);
			core_destroy(core);
			return 1;
		}
	}
	printf("READY\n");
	fflush(stdout);

	if (sigwait(&set, &sig) != 0)
		status = 1;
	for (unsigned i = 0; i < ndevs; i++) {
		struct vdev_stats st;
		vdev_get_stats(devs[i], &st);
		vdev_last_error(devs[i], err, sizeof(err));
		printf("STATS bench%u state=%s reads=%" PRIu64 " writes=%" PRIu64
		       " flushes=%" PRIu64 " discards=%" PRIu64 " write_zeroes=%" PRIu64
		       " get_ids=%" PRIu64 " bytes_read=%" PRIu64 " bytes_written=%" PRIu64
		       " errors=%" PRIu64 " inflight=%" PRIu64 " throttled_ns=%" PRIu64
		       " read_p50_ns=%" PRIu64 " read_p99_ns=%" PRIu64 " write_p50_ns=%" PRIu64
		       " write_p99_ns=%" PRIu64 "%s%s\n",
		       i, vdev_state_name(vdev_get_state(devs[i])), st.reads, st.writes,
		       st.flushes, st.discards, st.write_zeroes, st.get_ids, st.bytes_read,
		       st.bytes_written, st.errors, st.inflight, st.throttled_ns,
		       st.lat[VDEV_OP_READ].p50_ns, st.lat[VDEV_OP_READ].p99_ns,
		       st.lat[VDEV_OP_WRITE].p50_ns, st.lat[VDEV_OP_WRITE].p99_ns,
		       err[0] ? " last_error=" : "", err);
		if (st.errors)
			status = 1;
	}
	fflush(stdout);
	core_destroy(core);
	return status;
}
