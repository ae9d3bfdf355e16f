/* vhostd: command line, start-up order and shutdown.  Main thread only: it
 * takes the store lock, starts the core, restores the controllers, mounts
 * the control fs and serves it until SIGTERM/SIGINT/SIGHUP.  Trusts nothing
 * on the command line. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "config.h"
#include "cfgparse.h"
#include "cfs.h"
#include "log.h"
#include "mgr.h"
#include "vdev.h"

#define MAX_CPUS 256

static void usage(FILE *f)
{
	fprintf(f,
"Usage: vhostd [OPTION]...\n"
"Serve virtio-blk devices to VMs over vhost-user, managed through a control\n"
"filesystem mounted at STORE/block/ctl (mkdir a controller, write its config).\n"
"\n"
"  -s, --store DIR          vhost-user store (default %s)\n"
"  -S, --state FILE         state file (default %s)\n"
"  -c, --cpus LIST          one engine thread pinned to each cpu of LIST,\n"
"                           e.g. 0,1 or 2-3 (default: one unpinned thread)\n"
"  -p, --poll-mode MODE     adaptive (default), poll or interrupt\n"
"  -m, --max-controllers N  minors 0..N-1 are handed out (default %u)\n"
"  -l, --log-level LEVEL    err, warning, info (default) or debug\n"
"  -h, --help               show this help\n"
"  -V, --version            show the version\n"
"\n"
"vhostd runs in the foreground and logs to stderr.  Under systemd use\n"
"Type=notify: it reports READY=1 once every restored controller is live.\n",
		VHOSTD_DEFAULT_STORE, VHOSTD_DEFAULT_STATE, MGR_DEFAULT_MAX_CTRLS);
}

/* systemd's readiness protocol, without libsystemd: one datagram to
 * $NOTIFY_SOCKET (a path, or an abstract name written with a leading '@'). */
static void notify(const char *msg)
{
	const char *e = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t n;
	int fd;

	if (!e || (e[0] != '/' && e[0] != '@'))
		return;
	n = strlen(e);
	if (n >= sizeof(sa.sun_path))
		return;
	memcpy(sa.sun_path, e, n);
	if (sa.sun_path[0] == '@')
		sa.sun_path[0] = '\0';
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	if (sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa,
		   offsetof(struct sockaddr_un, sun_path) + n) < 0)
		vlog(LOG_WARNING, "cannot notify systemd: %m");
	close(fd);
}

struct ready_ctx {
	const char *ctl;
	unsigned nctrl, nfailed;
};

static void on_ready(void *arg)
{
	struct ready_ctx *r = arg;
	char msg[256];

	snprintf(msg, sizeof(msg), "READY=1\nSTATUS=serving %s (%u controllers "
		 "restored, %u in error)", r->ctl, r->nctrl, r->nfailed);
	notify(msg);
	vlog(LOG_INFO, "ready: control filesystem at %s", r->ctl);
}

/* An absolute path without trailing slashes. */
static int absolute(const char *in, char *out, size_t len)
{
	char cwd[PATH_MAX];
	size_t n;

	if (in[0] == '\0')
		return -EINVAL;
	if (in[0] == '/') {
		if (snprintf(out, len, "%s", in) >= (int)len)
			return -ENAMETOOLONG;
	} else {
		if (!getcwd(cwd, sizeof(cwd)))
			return -errno;
		if (snprintf(out, len, "%s/%s", cwd, in) >= (int)len)
			return -ENAMETOOLONG;
	}
	n = strlen(out);
	while (n > 1 && out[n - 1] == '/')
		out[--n] = '\0';
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "store", required_argument, NULL, 's' },
		{ "state", required_argument, NULL, 'S' },
		{ "cpus", required_argument, NULL, 'c' },
		{ "poll-mode", required_argument, NULL, 'p' },
		{ "max-controllers", required_argument, NULL, 'm' },
		{ "log-level", required_argument, NULL, 'l' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	const char *store_arg = VHOSTD_DEFAULT_STORE, *state_arg = VHOSTD_DEFAULT_STATE;
	char store[PATH_MAX], state[PATH_MAX], err[512], info[1024];
	struct core_opts copts = { .nthreads = 1, .poll_mode = CORE_POLL_ADAPTIVE };
	static const char *const mode_names[] = { "adaptive", "poll", "interrupt" };
	int cpus[MAX_CPUS], ncpus = 0, opt, level, r, status = 1;
	unsigned long max_ctrls = MGR_DEFAULT_MAX_CTRLS;
	struct ready_ctx ready = { 0 };
	struct core *core = NULL;
	struct mgr *mgr = NULL;
	struct cfs *fs = NULL;
	sigset_t sigs;
	char *end;

	while ((opt = getopt_long(argc, argv, "s:S:c:p:m:l:hV", longopts, NULL)) != -1) {
		switch (opt) {
		case 's':
			store_arg = optarg;
			break;
		case 'S':
			state_arg = optarg;
			break;
		case 'c': {
			long n = sysconf(_SC_NPROCESSORS_CONF);
			ncpus = cfg_parse_cpulist(optarg, cpus, MAX_CPUS,
						  n > 0 ? (int)n : 1, err, sizeof(err));
			if (ncpus < 0) {
				fprintf(stderr, "vhostd: --cpus: %s\n", err);
				return 2;
			}
			break;
		}
		case 'p':
			for (r = 0; r < 3 && strcmp(optarg, mode_names[r]) != 0; r++)
				;
			if (r == 3) {
				fprintf(stderr, "vhostd: --poll-mode must be adaptive, poll "
					"or interrupt\n");
				return 2;
			}
			copts.poll_mode = r == 0 ? CORE_POLL_ADAPTIVE :
					  r == 1 ? CORE_POLL_ALWAYS : CORE_POLL_INTERRUPT;
			break;
		case 'm':
			errno = 0;
			max_ctrls = strtoul(optarg, &end, 10);
			if (errno || *end || optarg[0] < '1' || optarg[0] > '9' ||
			    max_ctrls > MGR_MINOR_LIMIT) {
				fprintf(stderr, "vhostd: --max-controllers must be 1..%u\n",
					MGR_MINOR_LIMIT);
				return 2;
			}
			break;
		case 'l':
			level = log_parse_level(optarg);
			if (level < 0) {
				fprintf(stderr, "vhostd: --log-level must be err, warning, "
					"info or debug\n");
				return 2;
			}
			log_set_level(level);
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("vhostd %s\n", VHOSTD_VERSION);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "vhostd: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	if (absolute(store_arg, store, sizeof(store)) < 0 ||
	    absolute(state_arg, state, sizeof(state)) < 0) {
		fprintf(stderr, "vhostd: bad --store or --state path\n");
		return 2;
	}
	if (ncpus > 0) {
		copts.nthreads = ncpus;
		copts.cpus = cpus;
	}

	umask(022);
	signal(SIGPIPE, SIG_IGN);
	/* Only the thread serving the FUSE loop takes SIGTERM/SIGINT/SIGHUP:
	 * every thread created from here on (core, engine) inherits the mask. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);

	{
		int k = snprintf(info, sizeof(info), "engine_threads %u\ncpus ",
				 copts.nthreads);
		for (int i = 0; i < ncpus && k < (int)sizeof(info) - 64; i++)
			k += snprintf(info + k, sizeof(info) - k, "%s%d", i ? "," : "", cpus[i]);
		snprintf(info + k, sizeof(info) - k, "%s\npoll_mode %s\n",
			 ncpus ? "" : "any", mode_names[copts.poll_mode == CORE_POLL_ADAPTIVE ? 0 :
			 copts.poll_mode == CORE_POLL_ALWAYS ? 1 : 2]);
	}
	struct mgr_opts mopts = {
		.store = store,
		.state_path = state,
		.max_ctrls = (unsigned)max_ctrls,
		.engine_info = info,
	};
	r = mgr_create(&mopts, &mgr, err, sizeof(err));
	if (r < 0) {
		vlog(LOG_ERR, "%s", err);
		return 1;
	}
	r = core_create(&copts, &core);
	if (r < 0) {
		vlog(LOG_ERR, "cannot start the engine: %s", strerror(-r));
		goto out;
	}
	vlog(LOG_INFO, "vhostd %s: store %s, state file %s", VHOSTD_VERSION, store, state);
	r = mgr_restore(mgr, core, &ready.nctrl, &ready.nfailed, err, sizeof(err));
	if (r < 0) {
		vlog(LOG_ERR, "%s", err);
		goto out;
	}
	if (ready.nctrl)
		vlog(LOG_INFO, "restored %u configured controllers, %u in error",
		     ready.nctrl, ready.nfailed);

	ready.ctl = mgr_ctl_dir(mgr);
	struct cfs_opts fopts = {
		.mgr = mgr,
		.mountpoint = mgr_ctl_dir(mgr),
		.on_ready = on_ready,
		.arg = &ready,
	};
	r = cfs_mount(&fopts, &fs, err, sizeof(err));
	if (r < 0) {
		vlog(LOG_ERR, "%s", err);
		goto out;
	}
	r = cfs_run(fs);
	if (r < 0)
		vlog(LOG_ERR, "the control filesystem stopped: %s", strerror(-r));
	else
		status = 0;
	notify("STOPPING=1");
	vlog(LOG_INFO, "shutting down");
out:
	cfs_destroy(fs);                /* no new requests from here on */
	mgr_destroy(mgr);               /* devices stopped; nodes and state kept */
	if (core)
		core_destroy(core);
	if (status == 0)
		vlog(LOG_INFO, "stopped");
	return status;
}
