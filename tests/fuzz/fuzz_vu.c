/* Fuzz target "vu": the vhost-user message receiver and dispatcher
 * (src/vu_msg.c vu_recv, src/vu_dev.c vu_dispatch) driven exactly as the
 * daemon's control loop drives them (vdev.c conn_readable), on a connection
 * over a socketpair, for a virtio-blk device with a ram backend and a live
 * engine thread behind it.
 *
 * Input: a sequence of records.
 *   op & 0x80: poke    [op][idx][off: u16 LE][len][len bytes]
 *              writes bytes into pool memfd idx at off*16 (guest memory or
 *              an inflight region, once the front-end has sent that fd).
 *   otherwise: message [op][vu_hdr: 12 bytes][payload: hdr.size bytes, or
 *              what is left of the input]
 *              op & 7     number of fds sent with it
 *              op & 8     the fds are pool memfds (else fresh eventfds)
 *              op & 0x10  first pool memfd is 2 (else 0)
 *              op & 0x20  sent in two pieces (header split), each with
 *                         op & 7 fds
 *              op & 0x40  not processed yet (messages queue up)
 * At the end the front-end hangs up.  Beyond crashes and sanitizer reports,
 * an fd the core left open after vu_conn_teardown is an error:
 * VHOSTD_FUZZ_FD_LEAKS=close closes such fds instead of aborting (to fuzz
 * on past a known leak). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "blk.h"
#include "engine.h"
#include "fuzz.h"
#include "log.h"
#include "vu.h"
#include "vu_wire.h"          /* ffe_attach_fds */

#define NPOOL   4
#define MAX_FD  4096

static const uint64_t pool_size[NPOOL] = { 1 << 20, 1 << 20, 64 << 10, 4 << 10 };

static struct {
	bool ready;
	bool close_leaks;
	struct engine *eng;
	struct vblk *blk;
	int pool[NPOOL];
	DIR *fddir;
	atomic_bool broken;
} F;

static void on_broken(struct vblk *b, struct vq *vq, const char *why)
{
	atomic_store(&F.broken, true);
}

static void init(void)
{
	struct core_opts opts = { .nthreads = 1, .poll_mode = CORE_POLL_INTERRUPT };
	const char *lvl = getenv("VHOSTD_FUZZ_LOG");
	const char *leaks = getenv("VHOSTD_FUZZ_FD_LEAKS");
	char err[256];
	struct vblk *b;

	log_set_level(lvl ? log_parse_level(lvl) : -1);
	F.close_leaks = leaks && strcmp(leaks, "close") == 0;
	if (eng_create(&opts, &F.eng) < 0)
		abort();
	/* as vdev.c do_create() */
	struct vdev_params p;
	vdev_params_init(&p);
	p.size = 1 << 20;
	p.queues = 2;
	snprintf(p.serial, sizeof(p.serial), "FUZZ");
	if (vblk_create("fuzz", &p, &F.blk, err, sizeof(err)) < 0)
		abort();
	b = F.blk;
	b->owner = &F;
	b->ring_broken = on_broken;
	for (unsigned i = 0; i < NPOOL; i++) {
		F.pool[i] = memfd_create("fuzz-pool", MFD_CLOEXEC);
		if (F.pool[i] < 0)
			abort();
	}
	F.fddir = opendir("/proc/self/fd");
	if (!F.fddir)
		abort();
	F.ready = true;
}

/* Open fds (below MAX_FD) as a bitmap. */
static void fd_snapshot(uint8_t *bits)
{
	struct dirent *e;

	memset(bits, 0, MAX_FD / 8);
	rewinddir(F.fddir);
	while ((e = readdir(F.fddir))) {
		int fd = atoi(e->d_name);
		if (e->d_name[0] == '.' || fd == dirfd(F.fddir) || fd >= MAX_FD)
			continue;
		bits[fd / 8] |= 1 << (fd % 8);
	}
}

struct run {
	struct vu_conn c;
	int peer;
	bool dead;
};

/* Read and drop whatever the back-end sent us (closing fds it passed). */
static void drain(int fd)
{
	static uint8_t buf[16384];
	union {
		char buf[CMSG_SPACE(sizeof(int) * 16)];
		struct cmsghdr align;
	} ctl;

	for (;;) {
		struct iovec iov = { buf, sizeof(buf) };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
				     .msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf) };
		ssize_t n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);

		if (n <= 0)
			return;
		for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
			if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
				continue;
			for (size_t i = 0; i < (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
				int rfd;
				memcpy(&rfd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
				close(rfd);
			}
		}
	}
}

/* vdev.c conn_readable(): every whole message is dispatched. */
static void process(struct run *r)
{
	while (!r->dead) {
		int rc = vu_recv(&r->c);

		if (rc == 0)
			break;
		if (rc < 0) {
			r->dead = true;
			break;
		}
		rc = vu_dispatch(&r->c, &r->c.rx);
		r->c.rx_len = 0;
		r->c.rx.nfds = 0;
		drain(r->peer);
		if (rc < 0 || atomic_load(&F.broken))
			r->dead = true;
	}
}

static bool send_piece(struct run *r, const uint8_t *buf, size_t len, const int *fds,
		       unsigned nfds)
{
	union ffe_fd_ctl ctl;
	struct iovec iov = { (void *)buf, len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	ssize_t n;

	ffe_attach_fds(&mh, &ctl, fds, nfds);
	n = sendmsg(r->peer, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
	return n == (ssize_t)len;
}

static void make_fds(uint8_t op, int *fds)
{
	for (unsigned i = 0; i < (op & 7u); i++) {
		if (op & 8)
			fds[i] = dup(F.pool[((op & 0x10 ? 2 : 0) + i) % NPOOL]);
		else
			fds[i] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (fds[i] < 0)
			abort();
	}
}

static void close_fds(int *fds, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		close(fds[i]);
}

/* Consume one message record; false when the input is used up. */
static bool message(struct run *r, uint8_t op, const uint8_t **p, size_t *left)
{
	struct vu_hdr h;
	size_t plen, total;
	int fds[8];
	unsigned nfds = op & 7;
	bool ok;
	static uint8_t buf[sizeof(struct vu_hdr) + 65536];

	if (*left < sizeof(h))
		return false;
	memcpy(&h, *p, sizeof(h));
	plen = h.size;
	if (plen > *left - sizeof(h))
		plen = *left - sizeof(h);
	if (plen > sizeof(buf) - sizeof(h))
		plen = sizeof(buf) - sizeof(h);
	total = sizeof(h) + plen;
	memcpy(buf, *p, total);
	*p += total;
	*left -= total;

	if ((op & 0x20) && total > 7) {
		make_fds(op, fds);
		ok = send_piece(r, buf, 7, fds, nfds);
		close_fds(fds, nfds);
		if (ok && !(op & 0x40))
			process(r);
		make_fds(op, fds);
		ok = ok && !r->dead && send_piece(r, buf + 7, total - 7, fds, nfds);
		close_fds(fds, nfds);
	} else {
		make_fds(op, fds);
		ok = send_piece(r, buf, total, fds, nfds);
		close_fds(fds, nfds);
	}
	if (!ok)
		r->dead = true;
	else if (!(op & 0x40))
		process(r);
	return true;
}

static bool poke(const uint8_t **p, size_t *left)
{
	unsigned idx, off, len;

	if (*left < 4)
		return false;
	idx = (*p)[0] % NPOOL;
	off = ((*p)[1] | (*p)[2] << 8) * 16u;
	len = (*p)[3];
	*p += 4;
	*left -= 4;
	if (len > *left)
		len = *left;
	if (off + len <= pool_size[idx])
		(void)!pwrite(F.pool[idx], *p, len, off);
	*p += len;
	*left -= len;
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t before[MAX_FD / 8], after[MAX_FD / 8];
	static struct run r;
	int sv[2];

	if (!F.ready)
		init();
	/* Fresh zeroed memory for every input. */
	for (unsigned i = 0; i < NPOOL; i++)
		if (ftruncate(F.pool[i], 0) < 0 || ftruncate(F.pool[i], pool_size[i]) < 0)
			abort();
	F.blk->wce = true;
	atomic_store(&F.broken, false);
	fd_snapshot(before);

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
		abort();
	vu_conn_init(&r.c, sv[0], F.blk, F.eng, 0);
	r.peer = sv[1];
	r.dead = false;

	while (size > 0 && !r.dead) {
		uint8_t op = *data++;
		size--;
		if (!((op & 0x80) ? poke(&data, &size) : message(&r, op, &data, &size)))
			break;
	}
	if (!r.dead) {
		/* what is left over is a message cut short by the hangup */
		shutdown(r.peer, SHUT_WR);
		process(&r);
	}
	vu_conn_teardown(&r.c);
	close(sv[0]);
	drain(sv[1]);
	close(sv[1]);

	fd_snapshot(after);
	for (int fd = 0; fd < MAX_FD; fd++) {
		if (!(after[fd / 8] & (1 << (fd % 8))) || (before[fd / 8] & (1 << (fd % 8))))
			continue;
		if (F.close_leaks) {
			close(fd);
			continue;
		}
		char path[64], target[256] = "";
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		(void)!readlink(path, target, sizeof(target) - 1);
		fprintf(stderr, "fuzz-vu: fd %d (%s) left open after the connection closed\n",
			fd, target);
		abort();
	}
	return 0;
}
