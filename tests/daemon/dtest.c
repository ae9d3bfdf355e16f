/* Fixtures of the daemon library tests; see dtest.h. */
#include "dtest.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

struct dt dt;

/* ---- run as an ordinary user --------------------------------------------- */

/* Before main, so that criterion's runner and every test worker it forks
 * are the ordinary user: nothing of these tests may need root. */
__attribute__((constructor)) static void dt_drop_root(void)
{
	if (geteuid() != 0 && getuid() != 0)
		return;
	if (setgroups(0, NULL) < 0 || setgid(DT_GID) < 0 || setuid(DT_UID) < 0) {
		fprintf(stderr, "daemon-tests: started as root and cannot drop to "
			"uid/gid %d (%s): skipped, these tests must run unprivileged\n",
			DT_UID, strerror(errno));
		_exit(77);
	}
	if (setuid(0) == 0 || geteuid() == 0 || getegid() == 0) {
		fprintf(stderr, "daemon-tests: root could be regained after dropping "
			"it: skipped\n");
		_exit(77);
	}
	/* The build directory (our cwd) belongs to root: nothing is written
	 * there, but criterion must be able to stat it. */
	fprintf(stderr, "daemon-tests: running as uid %d gid %d\n", (int)getuid(),
		(int)getgid());
}

/* ---- the stand-in for device nodes --------------------------------------- */

#define DT_MAX_NODES 64
#define DT_MAX_CALLS 256

static pthread_mutex_t nodes_lock = PTHREAD_MUTEX_INITIALIZER;
static struct { char path[PATH_MAX]; dev_t dev; } nodes[DT_MAX_NODES];
static size_t nnodes;
static struct dt_node_call calls[DT_MAX_CALLS];
static size_t ncalls;
static unsigned seq;                    /* nodes_lock */

static int node_find(const char *path)
{
	for (size_t i = 0; i < nnodes; i++)
		if (strcmp(nodes[i].path, path) == 0)
			return (int)i;
	return -1;
}

static void record(char op, const char *path, mode_t mode, dev_t dev)
{
	if (ncalls < DT_MAX_CALLS) {
		calls[ncalls].op = op;
		snprintf(calls[ncalls].path, sizeof(calls[ncalls].path), "%s", path);
		calls[ncalls].mode = mode;
		calls[ncalls].dev = dev;
		calls[ncalls].seq = ++seq;
		ncalls++;
	}
}

/* A node is an empty regular file (so that readdir lists it) which the
 * lstat stand-in reports as a block device. */
static int add_node(const char *path, dev_t dev)
{
	int fd;

	if (nnodes == DT_MAX_NODES) {
		errno = ENOSPC;
		return -1;
	}
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return -1;
	close(fd);
	snprintf(nodes[nnodes].path, sizeof(nodes[nnodes].path), "%s", path);
	nodes[nnodes].dev = dev;
	nnodes++;
	return 0;
}

static int fake_mknod(void *arg, const char *path, mode_t mode, dev_t dev)
{
	int r;

	pthread_mutex_lock(&nodes_lock);
	record('m', path, mode, dev);
	r = add_node(path, dev);
	pthread_mutex_unlock(&nodes_lock);
	return r;
}

static int fake_unlink(void *arg, const char *path)
{
	int i, r;

	pthread_mutex_lock(&nodes_lock);
	record('u', path, 0, 0);
	i = node_find(path);
	r = unlink(path);
	if (i >= 0)
		nodes[i] = nodes[--nnodes];
	pthread_mutex_unlock(&nodes_lock);
	return r;
}

static int fake_lstat(void *arg, const char *path, struct stat *st)
{
	int i, r;

	pthread_mutex_lock(&nodes_lock);
	i = node_find(path);
	r = lstat(path, st);
	if (r == 0 && i >= 0 && S_ISREG(st->st_mode)) {
		st->st_mode = S_IFBLK | 0660;
		st->st_rdev = nodes[i].dev;
	}
	pthread_mutex_unlock(&nodes_lock);
	return r;
}

const struct store_node_ops dt_node_ops = {
	.mknod = fake_mknod,
	.unlink = fake_unlink,
	.lstat = fake_lstat,
};

size_t dt_node_calls(char op)
{
	size_t n = 0;

	pthread_mutex_lock(&nodes_lock);
	for (size_t i = 0; i < ncalls; i++)
		n += calls[i].op == op;
	pthread_mutex_unlock(&nodes_lock);
	return n;
}

const struct dt_node_call *dt_node_call(size_t i)
{
	return i < ncalls ? &calls[i] : NULL;
}

void dt_fake_node(const char *path, unsigned major, unsigned minor)
{
	pthread_mutex_lock(&nodes_lock);
	cr_assert_eq(add_node(path, makedev(major, minor)), 0, "fake node %s: %s",
		     path, strerror(errno));
	pthread_mutex_unlock(&nodes_lock);
}

/* ---- stand-ins for the core's throttle groups ----------------------------- */

/* ---- fixtures ------------------------------------------------------------ */

void dt_tmpdir(void)
{
	const char *tmp = getenv("TMPDIR");

	if (!tmp || !*tmp || strlen(tmp) > 24)
		tmp = "/tmp";
	snprintf(dt.dir, sizeof(dt.dir), "%s/vhostd-dt-XXXXXX", tmp);
	cr_assert_not_null(mkdtemp(dt.dir), "mkdtemp: %s", strerror(errno));
	snprintf(dt.store, sizeof(dt.store), "%s/store", dt.dir);
	snprintf(dt.state, sizeof(dt.state), "%s/state/vhostd.state", dt.dir);
	log_set_level(LOG_ERR);         /* refusals are expected; keep the log short */
}

static void mgr_up(void)
{
	struct mgr_opts o = {
		.store = dt.store,
		.state_path = dt.state,
		.max_ctrls = dt.max_ctrls,
		.engine_info = "engine_threads 1\n",
		.node_ops = &dt_node_ops,
	};
	char err[256] = "";
	int r = mgr_create(&o, &dt.m, err, sizeof(err));

	cr_assert_eq(r, 0, "mgr_create: %s (%s)", strerror(-r), err);
}

void dt_setup_mgr(unsigned max_ctrls)
{
	struct core_opts co = { .nthreads = 1, .poll_mode = CORE_POLL_INTERRUPT };
	unsigned nctrl, nfailed;
	char err[256] = "";
	int r;

	dt_tmpdir();
	dt.max_ctrls = max_ctrls;
	mgr_up();
	r = core_create(&co, &dt.core);
	cr_assert_eq(r, 0, "core_create: %s", strerror(-r));
	r = mgr_restore(dt.m, dt.core, &nctrl, &nfailed, err, sizeof(err));
	cr_assert_eq(r, 0, "mgr_restore: %s", err);
	cr_assert_eq(nctrl, 0);
}

int dt_restart(unsigned *nctrl, unsigned *nfailed, char *err, size_t errlen)
{
	mgr_destroy(dt.m);
	dt.m = NULL;
	mgr_up();
	return mgr_restore(dt.m, dt.core, nctrl, nfailed, err, errlen);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	if (flag == FTW_DP || flag == FTW_D)
		chmod(path, 0700);      /* a test may have made it read-only */
	remove(path);
	return 0;
}

void dt_teardown(void)
{
	if (dt.m)
		mgr_destroy(dt.m);
	if (dt.core)
		core_destroy(dt.core);
	dt.m = NULL;
	dt.core = NULL;
	if (dt.dir[0])
		nftw(dt.dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	dt.dir[0] = '\0';
}

/* ---- helpers ------------------------------------------------------------- */

void dt_sock_path(const char *name, char *buf, size_t len)
{
	snprintf(buf, len, "%s/block/sockets/%s", dt.store, name);
}

void dt_node_path(const char *name, char *buf, size_t len)
{
	snprintf(buf, len, "%s/block/devices/%s", dt.store, name);
}

void dt_info(const char *name, struct ctrl_info *ci)
{
	struct ctrl *c = mgr_get(dt.m, name);

	cr_assert_not_null(c, "controller %s does not exist", name);
	cr_assert_eq(mgr_ctrl_info(dt.m, c, ci), 0);
	mgr_put(dt.m, c);
}

int dt_set(const char *name, const struct vdev_params *p, unsigned set)
{
	struct ctrl *c = mgr_get(dt.m, name);
	int r;

	cr_assert_not_null(c, "controller %s does not exist", name);
	r = mgr_ctrl_set(dt.m, c, p, set, "test ");
	mgr_put(dt.m, c);
	return r;
}

bool dt_wait_state(const char *name, enum ctrl_state st, int ms)
{
	struct ctrl_info *ci = malloc(sizeof(*ci));
	bool ok = false;

	cr_assert_not_null(ci);
	for (int i = 0; i <= ms / 5; i++) {
		dt_info(name, ci);
		if (ci->state == st) {
			ok = true;
			break;
		}
		usleep(5000);
	}
	free(ci);
	return ok;
}

int dt_connect(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	cr_assert_geq(fd, 0);
	cr_assert_lt(strlen(path), sizeof(sa.sun_path));
	strcpy(sa.sun_path, path);
	cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0,
		     "connect %s: %s", path, strerror(errno));
	return fd;
}

char *dt_slurp(const char *path)
{
	FILE *f = fopen(path, "re");
	char *buf = NULL;
	size_t len = 0;
	FILE *m;
	int ch;

	if (!f)
		return NULL;
	m = open_memstream(&buf, &len);
	cr_assert_not_null(m);
	while ((ch = fgetc(f)) != EOF)
		fputc(ch, m);
	fclose(f);
	fclose(m);
	return buf;
}

void dt_write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "we");

	cr_assert_not_null(f, "cannot write %s: %s", path, strerror(errno));
	fputs(text, f);
	cr_assert_eq(fclose(f), 0);
}
