/* A backend that hangs: the storage behind a file backing stops answering a
 * read (a hung NFS server, a dead disk).
 *
 * The backing file lives on a FUSE filesystem served by this very process
 * (libfuse low-level API, one loop thread).  Its read handler can park
 * requests instead of answering them: the kernel, io_uring and the engine
 * then wait for an answer that does not come, exactly as on real storage
 * that hangs.  What the core promises for that case (engine/engine.c,
 * eng_detach_start): when the front-end leaves, its queue waits for the
 * read in flight however long it takes (the backend may still write into
 * guest memory, so no timeout is safe) without holding the control thread:
 * another device is set up and served meanwhile.  The wait is logged on
 * stderr every 10 s, naming the device and queue, and the device serves
 * again once the storage answers.
 * The test captures stderr (fd 2, where vlog writes) in a file to see that.
 *
 * Needs io_uring, root and /dev/fuse (the test skips without them); exit 77
 * when it skipped.  Takes about 10 s: the warning period is fixed.
 */
#define FUSE_USE_VERSION 35

#include <criterion/criterion.h>
#include <criterion/logging.h>

#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <glob.h>
#include <inttypes.h>
#include <liburing.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "coretest.h"
#include "crmain.h"

#define KiB             1024ull
#define SECT            512ull
#define DISK_SIZE       (1024 * KiB)
#define DISK_SEED       4242
#define DISK_INO        2
#define MAXHELD         8
#define DEV_NAME        "vbhung"
#define SLOW_WARNING    "still waiting after 10 s for engine"
#define SLOW_DETAIL     "request(s) in flight on the backend have not completed"

/* ---- the FUSE filesystem: one file, "disk", whose reads can be held ------- */

struct held_read {
	fuse_req_t req;
	size_t size;
	off_t off;
};

static pthread_mutex_t fs_lock = PTHREAD_MUTEX_INITIALIZER;

static struct {
	uint8_t disk[DISK_SIZE];        /* the file's content (read-only once mounted) */
	struct fuse_session *se;
	pthread_t loop;
	bool looping;
	bool mounted;
	/* under fs_lock */
	bool hold;                      /* park reads instead of answering them */
	struct held_read held[MAXHELD];
	unsigned nheld;
	unsigned parked;                /* reads ever parked */
} fs;

static void disk_attr(fuse_ino_t ino, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	if (ino == FUSE_ROOT_ID) {
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = 2;
	} else {
		st->st_mode = S_IFREG | 0600;
		st->st_nlink = 1;
		st->st_size = DISK_SIZE;
		st->st_blocks = DISK_SIZE / SECT;
	}
}

static void answer_read(fuse_req_t req, size_t size, off_t off)
{
	size_t n = 0;

	if (off >= 0 && (uint64_t)off < DISK_SIZE)
		n = size < DISK_SIZE - off ? size : DISK_SIZE - off;
	fuse_reply_buf(req, (const char *)fs.disk + (n ? off : 0), n);
}

static void fs_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e = { .ino = DISK_INO, .attr_timeout = 3600,
				      .entry_timeout = 3600 };

	if (parent != FUSE_ROOT_ID || strcmp(name, "disk") != 0) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	disk_attr(DISK_INO, &e.attr);
	fuse_reply_entry(req, &e);
}

static void fs_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;

	disk_attr(ino, &st);
	fuse_reply_attr(req, &st, 3600);
}

static void fs_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	/* No page cache: every read of the backend must reach fs_read, or a
	 * held read could be served from a page an earlier read brought in. */
	fi->direct_io = 1;
	/* No FLUSH on close: a process killed (test timeout) closes its files
	 * after its threads died, and would wait for ever for this one to
	 * answer the FLUSH it sends to itself. */
	fi->noflush = 1;
	fuse_reply_open(req, fi);
}

static void fs_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	pthread_mutex_lock(&fs_lock);
	if (fs.hold && fs.nheld < MAXHELD) {
		fs.held[fs.nheld++] = (struct held_read){ req, size, off };
		fs.parked++;
		pthread_mutex_unlock(&fs_lock);
		return;
	}
	pthread_mutex_unlock(&fs_lock);
	answer_read(req, size, off);
}

/* flush, release and statfs are left to libfuse, whose defaults do (ENOSYS,
 * which the kernel remembers; success; a plain statfs). */
static const struct fuse_lowlevel_ops fs_ops = {
	.lookup = fs_lookup,
	.getattr = fs_getattr,
	.open = fs_open,
	.read = fs_read,
};

static void set_hold(bool on)
{
	pthread_mutex_lock(&fs_lock);
	fs.hold = on;
	pthread_mutex_unlock(&fs_lock);
}

static unsigned parked_reads(void)
{
	unsigned n;

	pthread_mutex_lock(&fs_lock);
	n = fs.parked;
	pthread_mutex_unlock(&fs_lock);
	return n;
}

/* The storage comes back: stop holding and answer every parked read (from
 * this thread: libfuse replies are plain writes to /dev/fuse). */
static unsigned release_held(void)
{
	struct held_read h[MAXHELD];
	unsigned n;

	pthread_mutex_lock(&fs_lock);
	fs.hold = false;
	n = fs.nheld;
	memcpy(h, fs.held, n * sizeof(h[0]));
	fs.nheld = 0;
	pthread_mutex_unlock(&fs_lock);
	for (unsigned i = 0; i < n; i++)
		answer_read(h[i].req, h[i].size, h[i].off);
	return n;
}

static void *fs_loop(void *arg)
{
	fuse_session_loop(fs.se);
	return NULL;
}

static void fs_mount(const char *mnt)
{
	char prog[] = "test_hung";
	char *argv[] = { prog, NULL };
	struct fuse_args args = FUSE_ARGS_INIT(1, argv);

	ffe_pattern(fs.disk, DISK_SIZE, DISK_SEED);
	fs.se = fuse_session_new(&args, &fs_ops, sizeof(fs_ops), NULL);
	fuse_opt_free_args(&args);
	cr_assert_not_null(fs.se, "fuse_session_new failed (libfuse said why on stderr)");
	if (fuse_session_mount(fs.se, mnt) != 0)
		cr_skip_test("cannot mount a FUSE filesystem on %s here", mnt);
	fs.mounted = true;
	cr_assert_eq(pthread_create(&fs.loop, NULL, fs_loop, NULL), 0);
	fs.looping = true;
}

/* Unmount as umount(8) would: the kernel then ends the connection, which
 * ends the loop (a fuse_session_exit would not: the loop sleeps in read(2)
 * on /dev/fuse), and fuse_session_unmount only closes the channel.  If the
 * filesystem is still in use (a file the core left open), a forced unmount
 * aborts the connection instead, and the mount goes once unused. */
static void fs_unmount(const char *mnt)
{
	if (fs.mounted && umount2(mnt, 0) != 0) {
		fprintf(stderr, "test_hung: umount %s: %s; aborting the FUSE connection\n", mnt,
			strerror(errno));
		umount2(mnt, MNT_FORCE);
		umount2(mnt, MNT_DETACH);
	}
	if (fs.looping)
		pthread_join(fs.loop, NULL);
	if (fs.se) {
		fuse_session_unmount(fs.se);
		fuse_session_destroy(fs.se);
	}
	fs.se = NULL;
	fs.looping = fs.mounted = false;
}

/* ---- helpers ----------------------------------------------------------------- */

/* The core, the device, its front-ends and the directory: fx (coretest.h);
 * here what this test adds to them. */
static struct {
	char mnt[160], disk[180], log[160];     /* in fx.dir */
	int saved_stderr;               /* -1: stderr is not redirected */
	struct ffe_blk_io held_io;      /* the read that hangs ... */
	struct ffe *held_fe;            /* ... posted on this front-end's queue 0 */
} hx;

/* From here on what vhostd logs lands in hx.log. */
static void capture_stderr(void)
{
	int fd = open(hx.log, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);

	cr_assert_geq(fd, 0, "create %s: %s", hx.log, strerror(errno));
	fflush(stderr);
	hx.saved_stderr = dup(STDERR_FILENO);
	cr_assert_geq(hx.saved_stderr, 0, "dup stderr: %s", strerror(errno));
	cr_assert_eq(dup2(fd, STDERR_FILENO), STDERR_FILENO, "dup2: %s", strerror(errno));
	close(fd);
}

/* Everything logged so far (malloc'd, NUL-terminated). */
static char *log_text(void)
{
	FILE *f = fopen(hx.log, "r");
	size_t len = 0, cap = 4096, n;
	char *buf = malloc(cap);

	cr_assert_not_null(f, "open %s: %s", hx.log, strerror(errno));
	while ((n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
		len += n;
		if (cap - len == 1)
			buf = realloc(buf, cap *= 2);
	}
	fclose(f);
	buf[len] = '\0';
	return buf;
}

/* The line of the log holding needle, in line; false if none does. */
static bool log_line(const char *needle, char *line, size_t len)
{
	char *text = log_text(), *at = strstr(text, needle);

	if (at) {
		char *start = at, *end = strchrnul(at, '\n');

		while (start > text && start[-1] != '\n')
			start--;
		snprintf(line, len, "%.*s", (int)(end - start), start);
	}
	free(text);
	return at != NULL;
}

/* A set-up front-end (one queue), closed by the teardown. */
static struct ffe *fe_ready(void)
{
	return fx_keep(fx_ready(0, NULL, 0, 1, 128));
}

static void check_disk(const uint8_t *buf, uint64_t off, size_t len, const char *what)
{
	size_t i;

	for (i = 0; i < len && buf[i] == fs.disk[off + i]; i++)
		;
	if (i < len)
		cr_assert_fail("%s: byte %zu of %zu (offset %" PRIu64 " of the disk) is %#x, "
			       "the file holds %#x", what, i, len, off + i, buf[i],
			       fs.disk[off + i]);
}

static void read_check(struct ffe *fe, uint64_t off, size_t len, const char *what)
{
	uint8_t *buf = malloc(len);
	int s = ffe_blk_read(&fe->vq[0], off / SECT, buf, len, NULL);

	cr_assert_eq(s, FFE_BLK_S_OK, "%s: IN of %zu bytes at %" PRIu64 ": status %d %s", what,
		     len, off, s, s < 0 ? fe->err : "");
	check_disk(buf, off, len, what);
	free(buf);
}

/* ---- fixture ----------------------------------------------------------------- */

static void setup(void)
{
	char prefix[64];

	snprintf(prefix, sizeof(prefix), "/tmp/vhostd-hung-%s", crmain_run_id());
	fx_begin(prefix);
	hx.saved_stderr = -1;
	snprintf(hx.mnt, sizeof(hx.mnt), "%s/mnt", fx.dir);
	snprintf(hx.disk, sizeof(hx.disk), "%s/disk", hx.mnt);
	snprintf(hx.log, sizeof(hx.log), "%s/vhostd.log", fx.dir);
	cr_assert_eq(mkdir(hx.mnt, 0700), 0, "mkdir %s: %s", hx.mnt, strerror(errno));
}

/* Leave nothing behind, whatever point the test failed at: a parked read
 * is answered first, or the detach of its queue would wait for ever. */
static void teardown(void)
{
	release_held();
	if (hx.held_fe)
		ffe_blk_io_release(&hx.held_fe->vq[0], &hx.held_io);
	fx_stop();
	fs_unmount(hx.mnt);
	if (hx.saved_stderr >= 0) {
		char *text = log_text();

		dup2(hx.saved_stderr, STDERR_FILENO);
		close(hx.saved_stderr);
		/* into the test's output: what to read when it fails */
		fprintf(stderr, "---- vhostd log of the test ----\n%s----\n", text);
		free(text);
	}
	unlink(hx.log);
	rmdir(hx.mnt);
	rmdir(fx.dir);
	fx_leak_check();
}

/* ---- the test ------------------------------------------------------------- */

TestSuite(hung, .init = setup, .fini = teardown, .timeout = 60);

Test(hung, read_that_never_completes_stalls_the_detach_with_a_warning)
{
	struct core_opts o = { .nthreads = 1, .poll_mode = CORE_POLL_ADAPTIVE };
	const uint64_t held_off = 500 * KiB;
	char line[1024] = "", want[64];
	struct vdev_params p;
	struct ffe *fe;
	struct ffe_deadline dl;
	int64_t t0;
	int r;

	if (geteuid() != 0)
		cr_skip_test("not root: mounting a FUSE filesystem needs root");
	if (access("/dev/fuse", R_OK | W_OK) != 0)
		cr_skip_test("no usable /dev/fuse: %s", strerror(errno));
	need_uring();
	fs_mount(hx.mnt);
	capture_stderr();

	fx_core_up(&o);
	vdev_params_init(&p);
	p.backing = BE_FILE;
	snprintf(p.path, sizeof(p.path), "%s", hx.disk);
	p.size = 0;
	p.queues = 1;
	fx_add(DEV_NAME, &p);
	/* a bystander on the same core: its control messages must not wait
	 * for A's stuck queue */
	fx_params(&p, 4096 * KiB, 1, "hung-bystander");
	fx_add(DEV_NAME "B", &p);

	/* the path works while the storage answers */
	fe = fe_ready();
	cr_assert_eq(fe->cfg.capacity, DISK_SIZE / SECT, "capacity %" PRIu64, fe->cfg.capacity);
	read_check(fe, 0, 64 * KiB, "read before the storage hangs");

	/* the storage stops answering: one 4 KiB read goes in and stays */
	set_hold(true);
	r = ffe_blk_prep(&hx.held_io, FFE_BLK_T_IN, held_off / SECT, NULL, 0, 4 * KiB, NULL);
	cr_assert_eq(r, 0, "ffe_blk_prep: %s", strerror(-r));
	hx.held_fe = fe;
	r = ffe_submit(&fe->vq[0], &hx.held_io.req);
	cr_assert_geq(r, 0, "submit: %s (%s)", strerror(-r), fe->err);
	r = ffe_kick(&fe->vq[0]);
	cr_assert_geq(r, 0, "kick: %s (%s)", strerror(-r), fe->err);
	ffe_deadline_start(&dl, 5000);
	while (parked_reads() == 0 && ffe_deadline_left(&dl))
		usleep(5000);
	cr_assert_eq(parked_reads(), 1, "%u reads parked, expected the one posted (0: it was "
		     "served from a cache, or the backend did not submit it)", parked_reads());

	/* The front-end leaves (its socket and eventfds; its memory stays, as
	 * QEMU's guest memory does): the control thread detaches the queue and
	 * must wait for the read, and say so after 10 s. */
	ffe_disconnect(fe);
	t0 = ffe_now_ms();
	/* Meanwhile the control thread serves the other device: a front-end
	 * sets it up (negotiation, memory table, rings) and does I/O, while
	 * A's detach still waits for its read. */
	{
		struct ffe *feb = fx_ready(1, NULL, 0, 1, 64);

		fx_rw_verify(&feb->vq[0], 16, 64 * KiB, 4343, NULL);
		cr_assert_eq(parked_reads(), 1, "the hung read completed meanwhile: the test "
			     "proves nothing");
		cr_log_info("bystander set up and served %" PRId64 " ms after A's front-end left "
			    "with a read hung", ffe_now_ms() - t0);
		cr_expect_lt(ffe_now_ms() - t0, 5000, "the bystander waited for A's stuck queue");
		fx_close_wait(1, feb, VDEV_LISTENING);
	}
	ffe_deadline_start(&dl, 14000);
	while (!log_line(SLOW_WARNING, line, sizeof(line)) && ffe_deadline_left(&dl))
		usleep(50000);
	cr_log_info("after %" PRId64 " ms, state '%s': %s", ffe_now_ms() - t0,
		    vdev_state_name(vdev_get_state(fx.dev[0])), line[0] ? line : "(no warning)");
	cr_assert_neq(line[0], '\0', "no '%s' warning in the log 14 s after the front-end left "
		      "with a read hung in the backend", SLOW_WARNING);
	cr_expect_geq(ffe_now_ms() - t0, 9000, "the warning came before 10 s had passed");
	cr_expect(strstr(line, "[" DEV_NAME " q0]") != NULL,
		  "the warning does not name the device and queue ([%s q0]): %s", DEV_NAME, line);
	snprintf(want, sizeof(want), "1 %s", SLOW_DETAIL);
	cr_expect(strstr(line, want) != NULL, "the warning does not say '%s': %s", want, line);
	cr_expect(strstr(line, "detach") != NULL, "the warning does not say 'detach': %s", line);

	/* the storage answers: the detach completes and the device listens again */
	cr_assert_eq(release_held(), 1);
	t0 = ffe_now_ms();
	cr_assert(vdev_wait_state(fx.dev[0], VDEV_LISTENING, 5000),
		  "%s is '%s' 5 s after the hung read was answered, expected 'listening'",
		  DEV_NAME, vdev_state_name(vdev_get_state(fx.dev[0])));
	cr_log_info("listening %" PRId64 " ms after the read was answered", ffe_now_ms() - t0);

	/* The read completed into the old front-end's memory, with the data:
	 * what a front-end that reconnects finds in its used ring. */
	r = ffe_wait(&fe->vq[0], &hx.held_io.req, 2000);
	cr_expect_eq(r, 0, "the hung read is not in the used ring after it was answered: %s",
		     fe->err);
	if (r == 0) {
		cr_expect_eq(ffe_blk_status(&hx.held_io), FFE_BLK_S_OK, "hung read: status %d",
			     ffe_blk_status(&hx.held_io));
		check_disk(ffe_blk_in(&hx.held_io), held_off, 4 * KiB, "the read that hung");
	}
	ffe_blk_io_release(&fe->vq[0], &hx.held_io);
	hx.held_fe = NULL;

	/* a new front-end is served as before */
	fe = fe_ready();
	read_check(fe, held_off, 4 * KiB, "new front-end, the block whose read hung");
	read_check(fe, DISK_SIZE - 64 * KiB, 64 * KiB, "new front-end, end of the disk");
	cr_expect(!log_line("still waiting after 20 s", line, sizeof(line)),
		  "a second warning came: %s", line);
}

/* ---- runner: safety net and exit status ---------------------------------------- */

/* A test killed by its timeout leaves its mount (served by nobody now) and
 * its directory behind. */
void crmain_cleanup(void)
{
	char pat[128], path[200];
	glob_t g;

	snprintf(pat, sizeof(pat), "/tmp/vhostd-hung-%s-*", crmain_run_id());
	if (glob(pat, GLOB_ONLYDIR, NULL, &g) != 0)
		return;
	for (size_t i = 0; i < g.gl_pathc; i++) {
		snprintf(path, sizeof(path), "%s/mnt", g.gl_pathv[i]);
		umount2(path, MNT_DETACH);
		rmdir(path);
		snprintf(path, sizeof(path), "%s/vhostd.log", g.gl_pathv[i]);
		unlink(path);
		snprintf(path, sizeof(path), "%s/%s.sock", g.gl_pathv[i], DEV_NAME);
		unlink(path);
		rmdir(g.gl_pathv[i]);
	}
	globfree(&g);
}
