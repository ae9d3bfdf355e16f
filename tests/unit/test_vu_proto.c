/* vhost-user back-end protocol (src/vu_msg.c receive/send, src/vu_dev.c
 * dispatcher and handlers) over a real socketpair: the test plays the
 * front-end on one end, a vu_conn bound to a vblk (set up as vdev.c's
 * do_create does) and a live engine serves the other. */
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <sys/socket.h>
#include <unistd.h>

#include "blk.h"
#include "engine.h"
#include "gmem.h"
#include "vu.h"
#include "vu_wire.h"          /* ffe_attach_fds */

#define BIT(n) (1ULL << (n))
#define V VU_VERSION
#define NEED (VU_VERSION | VU_FLAG_NEED_REPLY)
#define QUEUES 2

static struct {
	int sv[2];                      /* [0] the back-end's, [1] ours */
	struct engine *eng;
	struct vblk *blk;
	struct vu_conn *c;
	int broken_calls;
	int rx_fds[VU_MAX_FDS];         /* fds as the back-end received them */
	unsigned rx_nfds;
} fx;

static void on_broken(struct vblk *b, struct vq *vq, const char *why)
{
	fx.broken_calls++;
}

static void setup(void)
{
	struct core_opts opts = { .nthreads = 1, .poll_mode = CORE_POLL_ADAPTIVE };
	char err[256] = "";
	struct vblk *b;

	memset(&fx, 0, sizeof(fx));
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fx.sv), 0);
	cr_assert_eq(eng_create(&opts, &fx.eng), 0);
	/* as vdev.c do_create() */
	struct vdev_params p;
	vdev_params_init(&p);
	p.size = 1 << 20;
	p.queues = QUEUES;
	snprintf(p.serial, sizeof(p.serial), "SER");
	cr_assert_eq(vblk_create("vutest", &p, &fx.blk, err, sizeof(err)), 0, "%s", err);
	b = fx.blk;
	b->owner = &fx;
	b->ring_broken = on_broken;
	fx.c = calloc(1, sizeof(*fx.c));
	vu_conn_init(fx.c, fx.sv[0], b, fx.eng, 0);
}

static void teardown(void)
{
	vu_conn_teardown(fx.c);
	close(fx.sv[0]);
	close(fx.sv[1]);
	vblk_destroy(fx.blk);
	eng_destroy(fx.eng);
	free(fx.c);
}

TestSuite(vu, .init = setup, .fini = teardown);

/* ---- the front-end side ------------------------------------------------------ */

static void peer_send_raw(const void *buf, size_t len, const int *fds, unsigned nfds)
{
	union ffe_fd_ctl ctl;
	struct iovec iov = { (void *)buf, len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

	cr_assert_leq(nfds, FFE_MSG_FDS_MAX);
	ffe_attach_fds(&mh, &ctl, fds, nfds);
	cr_assert_eq(sendmsg(fx.sv[1], &mh, MSG_NOSIGNAL), (ssize_t)len, "sendmsg: %s",
		     strerror(errno));
}

static void peer_send(uint32_t req, uint32_t flags, const void *payload, uint32_t size,
		      const int *fds, unsigned nfds)
{
	static uint8_t buf[sizeof(struct vu_hdr) + 8192];
	struct vu_hdr h = { req, flags, size };

	cr_assert_leq(size, 8192);
	memcpy(buf, &h, sizeof(h));
	if (size)
		memcpy(buf + sizeof(h), payload, size);
	peer_send_raw(buf, sizeof(h) + size, fds, nfds);
}

/* As vdev.c conn_readable: receive one whole message and dispatch it. */
static int pump(void)
{
	int rc = vu_recv(fx.c);

	cr_assert_eq(rc, 1, "vu_recv: %d (%s)", rc, fx.c->err);
	fx.rx_nfds = fx.c->rx.nfds;
	memcpy(fx.rx_fds, fx.c->rx.fds, sizeof(fx.rx_fds));
	rc = vu_dispatch(fx.c, &fx.c->rx);
	fx.c->rx_len = 0;
	fx.c->rx.nfds = 0;
	return rc;
}

static int msg(uint32_t req, uint32_t flags, const void *payload, uint32_t size,
	       const int *fds, unsigned nfds)
{
	fx.c->err[0] = '\0';
	peer_send(req, flags, payload, size, fds, nfds);
	return pump();
}

static int msg0(uint32_t req, uint32_t flags)
{
	return msg(req, flags, NULL, 0, NULL, 0);
}

static int msg_u64(uint32_t req, uint32_t flags, uint64_t v)
{
	return msg(req, flags, &v, sizeof(v), NULL, 0);
}

static int msg_state(uint32_t req, uint32_t flags, uint32_t index, uint32_t num)
{
	struct vu_vring_state s = { index, num };
	return msg(req, flags, &s, sizeof(s), NULL, 0);
}

static int msg_vring_fd(uint32_t req, uint64_t v, int fd)
{
	return msg(req, V, &v, sizeof(v), &fd, fd >= 0 ? 1 : 0);
}

/* A reply waiting on our end (whole, or the test fails); false if none. */
static bool reply(struct vu_msg *m)
{
	ssize_t n;

	memset(m, 0, sizeof(*m));
	n = recv(fx.sv[1], &m->hdr, sizeof(m->hdr), MSG_DONTWAIT);
	if (n < 0 && errno == EAGAIN)
		return false;
	cr_assert_eq(n, (ssize_t)sizeof(m->hdr), "reply header: %zd", n);
	cr_assert_leq(m->hdr.size, VU_MAX_PAYLOAD);
	if (m->hdr.size) {
		n = recv(fx.sv[1], m->payload.bytes, m->hdr.size, MSG_DONTWAIT);
		cr_assert_eq(n, (ssize_t)m->hdr.size);
	}
	return true;
}

static void expect_no_reply(void)
{
	struct vu_msg m;
	cr_assert(!reply(&m), "unexpected reply to %u", m.hdr.request);
}

static uint64_t reply_u64(uint32_t req)
{
	struct vu_msg m;

	cr_assert(reply(&m), "no reply to %s", vu_request_name(req));
	cr_assert_eq(m.hdr.request, req);
	cr_assert_eq(m.hdr.flags, VU_VERSION | VU_FLAG_REPLY);
	cr_assert_eq(m.hdr.size, 8);
	return m.payload.u64;
}

/* A reply that may carry one fd (GET_INFLIGHT_FD). */
static void reply_fd(uint32_t req, struct vu_msg *out, int *fd)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * 4)];
		struct cmsghdr align;
	} ctl;
	struct vu_msg m;
	struct iovec iov[2] = { { &m.hdr, sizeof(m.hdr) }, { m.payload.bytes, 24 } };
	struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 2,
			     .msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf) };
	ssize_t n;

	memset(&m, 0, sizeof(m));
	*fd = -1;
	n = recvmsg(fx.sv[1], &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	cr_assert_eq(n, 12 + 24, "reply to %s: %zd", vu_request_name(req), n);
	cr_assert_eq(m.hdr.request, req);
	cr_assert_eq(m.hdr.flags, VU_VERSION | VU_FLAG_REPLY);
	cr_assert_eq(m.hdr.size, 24);
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
		cr_assert_eq(cm->cmsg_len, CMSG_LEN(sizeof(int)), "one fd");
		memcpy(fd, CMSG_DATA(cm), sizeof(int));
	}
	cr_assert_geq(*fd, 0, "no fd with the reply");
	if (out)
		*out = m;
}

static int new_eventfd(void)
{
	int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	cr_assert_geq(fd, 0);
	return fd;
}

/* The fds the back-end received with the last message are closed (the
 * numbers are not reused in between: nothing opens fds meanwhile). */
static void assert_rx_fds_closed(void)
{
	for (unsigned i = 0; i < fx.rx_nfds; i++) {
		char path[64], target[256] = "?";

		if (!test_fd_open(fx.rx_fds[i]))        /* fcntl(F_GETFD): EBADF */
			continue;
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fx.rx_fds[i]);
		(void)!readlink(path, target, sizeof(target) - 1);
		cr_assert_fail("received fd %d (%s) was not closed", fx.rx_fds[i], target);
	}
}

static void negotiate_reply_ack(void)
{
	cr_assert_eq(msg_u64(VU_SET_FEATURES, V, BIT(VU_F_PROTOCOL_FEATURES)), 0);
	cr_assert_eq(msg_u64(VU_SET_PROTOCOL_FEATURES, V, BIT(VU_PROTOCOL_F_REPLY_ACK)), 0);
	expect_no_reply();
}

/* ---- header checks -------------------------------------------------------------- */

Test(vu, bad_version)
{
	int e = new_eventfd();

	cr_assert_eq(msg0(VU_GET_FEATURES, 0), -EPROTO);
	cr_assert_neq(fx.c->err[0], '\0');
	cr_assert_eq(msg0(VU_GET_FEATURES, 2), -EPROTO);
	cr_assert_eq(msg0(VU_GET_FEATURES, 3 | VU_FLAG_NEED_REPLY), -EPROTO);
	cr_assert_eq(msg(VU_SET_OWNER, 0, NULL, 0, &e, 1), -EPROTO);
	assert_rx_fds_closed();
	expect_no_reply();
	/* other flag bits are not the version */
	cr_assert_eq(msg0(VU_GET_QUEUE_NUM, V | 0x100), 0);
	cr_assert_eq(reply_u64(VU_GET_QUEUE_NUM), QUEUES);
	close(e);
}

Test(vu, unknown_requests)
{
	const uint32_t reqs[] = { 0, VU_SEND_RARP,
				  VU_NET_SET_MTU, VU_IOTLB_MSG, VU_VRING_KICK,
				  VU_REQUEST_MAX, 1000, 0xffffffff };
	int e = new_eventfd();

	for (unsigned i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++)
		cr_assert_eq(msg0(reqs[i], V), -EOPNOTSUPP, "request %u", reqs[i]);
	cr_assert_eq(msg(VU_SEND_RARP, V, NULL, 0, &e, 1), -EOPNOTSUPP);
	assert_rx_fds_closed();
	expect_no_reply();
	cr_assert_str_eq(vu_request_name(0xffffffff), "UNKNOWN");
	cr_assert_str_eq(vu_request_name(VU_SET_VRING_KICK), "SET_VRING_KICK");
	close(e);
}

Test(vu, payload_size_must_match)
{
	uint8_t z[512] = { 0 };

	cr_assert_eq(msg(VU_GET_FEATURES, V, z, 8, NULL, 0), -EINVAL);
	cr_assert_eq(msg(VU_SET_OWNER, V, z, 1, NULL, 0), -EINVAL);
	cr_assert_eq(msg(VU_SET_FEATURES, V, z, 4, NULL, 0), -EINVAL);
	cr_assert_eq(msg(VU_SET_FEATURES, V, z, 16, NULL, 0), -EINVAL);
	cr_assert_eq(msg(VU_SET_FEATURES, V, z, 0, NULL, 0), -EINVAL);
	cr_assert_eq(msg(VU_SET_VRING_NUM, V, z, 4, NULL, 0), -EINVAL);
	cr_assert_eq(msg(VU_SET_VRING_NUM, V, z, 12, NULL, 0), -EINVAL);
	cr_assert_eq(msg(VU_SET_VRING_ADDR, V, z, sizeof(struct vu_vring_addr) - 1, NULL, 0),
		     -EINVAL);
	cr_assert_eq(msg(VU_SET_VRING_ADDR, V, z, sizeof(struct vu_vring_addr) + 1, NULL, 0),
		     -EINVAL);
	cr_assert_eq(msg(VU_SET_VRING_KICK, V, z, 4, NULL, 0), -EINVAL);
	cr_assert_eq(msg(VU_GET_VRING_BASE, V, z, 0, NULL, 0), -EINVAL);
	cr_assert_eq(msg(VU_SET_MEM_TABLE, V, z, 7, NULL, 0), -EINVAL);
	cr_assert_eq(msg(VU_SET_MEM_TABLE, V, z, sizeof(struct vu_memory) + 1, NULL, 0),
		     -EINVAL);
	cr_assert_eq(msg(VU_GET_CONFIG, V, z, 11, NULL, 0), -EINVAL);
	cr_assert_eq(msg(VU_GET_CONFIG, V, z, sizeof(struct vu_config) + 1, NULL, 0), -EINVAL);
	cr_assert_eq(msg(VU_SET_PROTOCOL_FEATURES, V, z, 7, NULL, 0), -EINVAL);
	/* a payload as big as the wire allows */
	{
		static uint8_t big[VU_MAX_PAYLOAD];
		cr_assert_eq(msg(VU_GET_QUEUE_NUM, V, big, VU_MAX_PAYLOAD, NULL, 0), -EINVAL);
	}
	expect_no_reply();
}

Test(vu, vring_index_checked)
{
	int e = new_eventfd();
	struct vu_vring_addr a = { .index = QUEUES };

	cr_assert_eq(msg_state(VU_SET_VRING_NUM, V, QUEUES, 128), -EINVAL);
	cr_assert_eq(msg_state(VU_SET_VRING_NUM, V, 255, 128), -EINVAL);
	cr_assert_eq(msg_state(VU_SET_VRING_NUM, V, 256, 128), -EINVAL);
	cr_assert_eq(msg_state(VU_SET_VRING_NUM, V, 0xffffffff, 128), -EINVAL);
	cr_assert_eq(msg_state(VU_SET_VRING_BASE, V, VDEV_MAX_QUEUES, 0), -EINVAL);
	cr_assert_eq(msg_state(VU_GET_VRING_BASE, V, QUEUES, 0), -EINVAL);
	cr_assert_eq(msg_state(VU_SET_VRING_ENABLE, V, QUEUES, 1), -EINVAL);
	cr_assert_eq(msg(VU_SET_VRING_ADDR, V, &a, sizeof(a), NULL, 0), -EINVAL);
	cr_assert_eq(msg_vring_fd(VU_SET_VRING_KICK, QUEUES | VU_VRING_NOFD_MASK, -1), -EINVAL);
	cr_assert_eq(msg_vring_fd(VU_SET_VRING_CALL, QUEUES, e), -EINVAL);
	assert_rx_fds_closed();
	cr_assert_eq(msg_vring_fd(VU_SET_VRING_ERR, 0xff | VU_VRING_NOFD_MASK, -1), -EINVAL);
	/* bits above NOFD */
	cr_assert_eq(msg_vring_fd(VU_SET_VRING_KICK, 0x200 | VU_VRING_NOFD_MASK, -1), -EINVAL);
	cr_assert_eq(msg_vring_fd(VU_SET_VRING_KICK, (1ull << 40) | VU_VRING_NOFD_MASK, -1),
		     -EINVAL);
	/* fd count must match NOFD */
	cr_assert_eq(msg_vring_fd(VU_SET_VRING_CALL, 0 | VU_VRING_NOFD_MASK, e), -EINVAL);
	assert_rx_fds_closed();
	cr_assert_eq(msg_vring_fd(VU_SET_VRING_CALL, 0, -1), -EINVAL);
	expect_no_reply();
	/* the last queue is fine */
	cr_assert_eq(msg_state(VU_SET_VRING_NUM, V, QUEUES - 1, 128), 0);
	cr_assert_eq(fx.blk->vqs[QUEUES - 1].num, 128);
	cr_assert_eq(msg_vring_fd(VU_SET_VRING_CALL, QUEUES - 1, e), 0);
	cr_assert_eq(fx.blk->vqs[QUEUES - 1].call_fd, fx.rx_fds[0], "the handler keeps it");
	cr_assert(test_fd_open(fx.rx_fds[0]));
	/* NOFD replaces (and closes) it */
	int kept = fx.rx_fds[0];
	cr_assert_eq(msg_vring_fd(VU_SET_VRING_CALL, (QUEUES - 1) | VU_VRING_NOFD_MASK, -1), 0);
	cr_assert_eq(fx.blk->vqs[QUEUES - 1].call_fd, -1);
	cr_assert(!test_fd_open(kept));
	close(e);
}

Test(vu, set_vring_num_values)
{
	const uint32_t bad[] = { 0, 3, 6, 100, 1025, 2048, 4096, 0x80000000, 0xffffffff };
	const uint32_t good[] = { 1, 2, 256, 1024 };

	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_assert_eq(msg_state(VU_SET_VRING_NUM, V, 0, bad[i]), -EINVAL, "num %u", bad[i]);
		cr_assert_eq(fx.blk->vqs[0].num, 0);
	}
	for (unsigned i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		cr_assert_eq(msg_state(VU_SET_VRING_NUM, V, 0, good[i]), 0, "num %u", good[i]);
		cr_assert_eq(fx.blk->vqs[0].num, good[i]);
	}
}

Test(vu, set_vring_base_values)
{
	struct vu_msg m;

	cr_assert_eq(msg_state(VU_SET_VRING_BASE, V, 1, 0x10000), -EINVAL);
	cr_assert_eq(msg_state(VU_SET_VRING_BASE, V, 1, 0xffffffff), -EINVAL);
	cr_assert_eq(msg_state(VU_SET_VRING_BASE, V, 1, 0xffff), 0);
	cr_assert_eq(fx.blk->vqs[1].last_avail, 0xffff);
	cr_assert_eq(msg_state(VU_GET_VRING_BASE, V, 1, 0), 0);
	cr_assert(reply(&m));
	cr_assert_eq(m.hdr.request, VU_GET_VRING_BASE);
	cr_assert_eq(m.hdr.flags, VU_VERSION | VU_FLAG_REPLY);
	cr_assert_eq(m.hdr.size, sizeof(struct vu_vring_state));
	cr_assert_eq(m.payload.state.index, 1);
	cr_assert_eq(m.payload.state.num, 0xffff);
}

/* Packed rings: offered unless the device says packed=0; once negotiated,
 * SET/GET_VRING_BASE carry both positions and wrap counters (QEMU's form). */
Test(vu, packed_vring_base)
{
	struct vu_msg m;
	uint64_t offered = blkcfg_features(fx.blk) | BIT(VU_F_PROTOCOL_FEATURES);

	cr_assert(offered & BIT(VIRTIO_F_RING_PACKED));
	fx.blk->params.packed = false;
	cr_assert(!(blkcfg_features(fx.blk) & BIT(VIRTIO_F_RING_PACKED)));
	fx.blk->params.packed = true;
	cr_assert_eq(msg_u64(VU_SET_FEATURES, V, offered), 0);
	cr_assert_eq(msg_state(VU_SET_VRING_BASE, V, 1, 0x80050003u), 0);
	cr_assert(fx.blk->vqs[1].packed);
	cr_assert_eq(fx.blk->vqs[1].last_avail, 3);
	cr_assert(!fx.blk->vqs[1].avail_wrap);
	cr_assert_eq(fx.blk->vqs[1].used_idx, 5);
	cr_assert(fx.blk->vqs[1].used_wrap);
	cr_assert_eq(msg_state(VU_GET_VRING_BASE, V, 1, 0), 0);
	cr_assert(reply(&m));
	cr_assert_eq(m.payload.state.num, 0x80050003u);
	/* split again: 16 bits */
	cr_assert_eq(msg_u64(VU_SET_FEATURES, V, offered & ~BIT(VIRTIO_F_RING_PACKED)), 0);
	cr_assert_eq(msg_state(VU_SET_VRING_BASE, V, 1, 0x80050003u), -EINVAL);
}

/* ---- SET_MEM_TABLE ------------------------------------------------------------------ */

static int send_mem(const struct mem_region_desc *d, uint32_t nregions, uint32_t size,
		    const int *fds, unsigned nfds)
{
	struct vu_memory mem;

	memset(&mem, 0, sizeof(mem));
	mem.nregions = nregions;
	for (unsigned i = 0; i < nregions && i < MEM_MAX_REGIONS; i++)
		mem.regions[i] = d[i];
	return msg(VU_SET_MEM_TABLE, V, &mem, size, fds, nfds);
}

#define MEMSZ(n) (offsetof(struct vu_memory, regions) + (n) * sizeof(struct mem_region_desc))

Test(vu, set_mem_table_mismatches)
{
	struct gmem g;
	int fds[3];

	gmem_std(&g);
	fds[0] = g.fd[0];
	fds[1] = g.fd[1];
	fds[2] = g.fd[2];
	/* 2 regions, payload for 1 */
	cr_assert_eq(send_mem(g.d, 2, MEMSZ(1), fds, 2), -EINVAL);
	assert_rx_fds_closed();
	/* 1 region, payload for 2 */
	cr_assert_eq(send_mem(g.d, 1, MEMSZ(2), fds, 1), -EINVAL);
	assert_rx_fds_closed();
	/* regions vs fds */
	cr_assert_eq(send_mem(g.d, 1, MEMSZ(1), NULL, 0), -EINVAL);
	cr_assert_eq(send_mem(g.d, 1, MEMSZ(1), fds, 2), -EINVAL);
	assert_rx_fds_closed();
	cr_assert_eq(send_mem(g.d, 3, MEMSZ(3), fds, 2), -EINVAL);
	assert_rx_fds_closed();
	/* more regions than supported, with the largest payload allowed */
	cr_assert_eq(send_mem(g.d, MEM_MAX_REGIONS + 1, MEMSZ(MEM_MAX_REGIONS), fds, 3), -EINVAL);
	assert_rx_fds_closed();
	cr_assert_eq(send_mem(g.d, 0x80000001, MEMSZ(1), fds, 1), -EINVAL);
	assert_rx_fds_closed();
	/* a region larger than its file */
	struct mem_region_desc big = g.d[1];
	big.memory_size += 0x10000;
	cr_assert_eq(send_mem(&big, 1, MEMSZ(1), fds + 1, 1), -EINVAL);
	assert_rx_fds_closed();
	cr_assert_null(fx.c->mem);
	expect_no_reply();
	gmem_fini(&g);
}

Test(vu, set_mem_table_maps_and_closes_fds)
{
	struct gmem g;
	const struct mem_table *first;

	gmem_std(&g);
	cr_assert_eq(send_mem(g.d, 4, MEMSZ(4), g.fd, 4), 0, "%s", fx.c->err);
	cr_assert_eq(fx.rx_nfds, 4);
	assert_rx_fds_closed();
	cr_assert_not_null(fx.c->mem);
	cr_assert_eq(fx.c->mem->nregions, 4);
	for (unsigned i = 0; i < 4; i++) {
		cr_assert_eq(fx.c->mem->regions[i].gpa, g.d[i].guest_phys_addr);
		cr_assert_eq(fx.c->mem->regions[i].uva, g.d[i].userspace_addr);
	}
	/* the back-end sees what we write */
	*(uint32_t *)gmem_ptr(&g, R2_GPA + 0x40, 4) = 0xfeedf00d;
	cr_assert_eq(*(uint32_t *)mem_gpa_to_host(fx.c->mem, R2_GPA + 0x40, 4), 0xfeedf00d);
	cr_assert_eq(fx.blk->vqs[0].mem, fx.c->mem);
	/* replaced whole */
	first = fx.c->mem;
	cr_assert_eq(send_mem(g.d + 1, 1, MEMSZ(1), g.fd + 1, 1), 0);
	cr_assert_neq(fx.c->mem, first);
	cr_assert_eq(fx.c->mem->nregions, 1);
	cr_assert_null(mem_gpa_to_host(fx.c->mem, R2_GPA, 1));
	/* a failed one leaves the current table alone */
	first = fx.c->mem;
	cr_assert_eq(send_mem(g.d, 2, MEMSZ(2), g.fd, 1), -EINVAL);
	cr_assert_eq(fx.c->mem, first);
	/* zero regions is a valid (empty) table */
	cr_assert_eq(send_mem(g.d, 0, MEMSZ(0), NULL, 0), 0);
	cr_assert_eq(fx.c->mem->nregions, 0);
	gmem_fini(&g);
}

/* ---- fds where none belong ---------------------------------------------------------- */

Test(vu, fds_on_requests_that_take_none_are_closed)
{
	int e[2] = { new_eventfd(), new_eventfd() };
	int before = test_count_fds();

	cr_assert_eq(msg(VU_GET_FEATURES, V, NULL, 0, e, 2), -EINVAL);
	cr_assert_eq(fx.rx_nfds, 2);
	assert_rx_fds_closed();
	expect_no_reply();
	cr_assert_eq(msg(VU_SET_OWNER, V, NULL, 0, e, 1), -EINVAL);
	assert_rx_fds_closed();
	uint64_t f = BIT(VU_F_PROTOCOL_FEATURES);
	cr_assert_eq(msg(VU_SET_FEATURES, V, &f, 8, e, 2), -EINVAL);
	assert_rx_fds_closed();
	cr_assert_eq(fx.c->features_set, false, "handler must not have run");
	struct vu_config cfg = { 0, 8, 0, { 0 } };
	cr_assert_eq(msg(VU_GET_CONFIG, V, &cfg, 12 + 8, e, 1), -EINVAL);
	assert_rx_fds_closed();
	expect_no_reply();
	cr_assert_eq(test_count_fds(), before, "fd leak");
	close(e[0]);
	close(e[1]);
}

/* Requests naming a vring by a vu_vring_state take no fds either. */
Test(vu, fds_on_vring_state_requests_are_refused)
{
	int e = new_eventfd();
	int before = test_count_fds();
	struct vu_vring_state s = { 0, 256 };
	int rc;

	rc = msg(VU_SET_VRING_NUM, V, &s, sizeof(s), &e, 1);
	assert_rx_fds_closed();
	cr_assert_eq(test_count_fds(), before, "fd leak");
	cr_assert_eq(rc, -EINVAL, "SET_VRING_NUM with an fd was accepted (rc %d)", rc);
	close(e);
}

Test(vu, fds_on_vring_state_requests_never_leak)
{
	int e = new_eventfd();
	int before = test_count_fds();
	struct vu_vring_state s = { 0, 1 };
	struct vu_vring_addr a = { 0 };

	msg(VU_SET_VRING_BASE, V, &s, sizeof(s), &e, 1);
	assert_rx_fds_closed();
	msg(VU_SET_VRING_ENABLE, V, &s, sizeof(s), &e, 1);
	assert_rx_fds_closed();
	msg(VU_SET_VRING_ADDR, V, &a, sizeof(a), &e, 1);
	assert_rx_fds_closed();
	cr_assert_eq(test_count_fds(), before, "fd leak");
	close(e);
}

/* ---- replies --------------------------------------------------------------------------- */

Test(vu, get_features)
{
	cr_assert_eq(msg0(VU_GET_FEATURES, V), 0);
	cr_assert_eq(reply_u64(VU_GET_FEATURES), blkcfg_features(fx.blk) |
		     BIT(VU_F_PROTOCOL_FEATURES) | BIT(VU_F_LOG_ALL));
	expect_no_reply();
}

Test(vu, get_protocol_features_and_queue_num)
{
	uint64_t pf;

	cr_assert_eq(msg0(VU_GET_PROTOCOL_FEATURES, V), 0);
	pf = reply_u64(VU_GET_PROTOCOL_FEATURES);
	cr_assert_eq(pf, BIT(VU_PROTOCOL_F_MQ) | BIT(VU_PROTOCOL_F_REPLY_ACK) |
		     BIT(VU_PROTOCOL_F_LOG_SHMFD) |
		     BIT(VU_PROTOCOL_F_BACKEND_REQ) | BIT(VU_PROTOCOL_F_CONFIG) |
		     BIT(VU_PROTOCOL_F_RESET_DEVICE) | BIT(VU_PROTOCOL_F_INFLIGHT_SHMFD) |
		     BIT(VU_PROTOCOL_F_CONFIGURE_MEM_SLOTS) | BIT(VU_PROTOCOL_F_STATUS),
		     "0x%llx", (unsigned long long)pf);
	cr_assert_eq(msg0(VU_GET_QUEUE_NUM, V), 0);
	cr_assert_eq(reply_u64(VU_GET_QUEUE_NUM), QUEUES);
}

static struct vu_msg get_config(uint32_t offset, uint32_t size, int *rc)
{
	struct vu_config cfg;
	struct vu_msg m;

	memset(&cfg, 0, sizeof(cfg));
	cfg.offset = offset;
	cfg.size = size;
	*rc = msg(VU_GET_CONFIG, V, &cfg, offsetof(struct vu_config, region) + size, NULL, 0);
	memset(&m, 0, sizeof(m));
	if (*rc == 0) {
		cr_assert(reply(&m));
		cr_assert_eq(m.hdr.request, VU_GET_CONFIG);
		cr_assert_eq(m.hdr.flags, VU_VERSION | VU_FLAG_REPLY);
		cr_assert_eq(m.hdr.size, offsetof(struct vu_config, region) + size);
		cr_assert_eq(m.payload.config.offset, offset);
		cr_assert_eq(m.payload.config.size, size);
	}
	return m;
}

Test(vu, get_config)
{
	struct virtio_blk_config want;
	struct vu_msg m;
	int rc;

	blkcfg_build(fx.blk, &want);
	m = get_config(0, sizeof(want), &rc);
	cr_assert_eq(rc, 0);
	cr_assert_eq(memcmp(m.payload.config.region, &want, sizeof(want)), 0);
	cr_assert_eq(((struct virtio_blk_config *)m.payload.config.region)->capacity, 2048);
	m = get_config(offsetof(struct virtio_blk_config, num_queues), 2, &rc);
	cr_assert_eq(rc, 0);
	cr_assert_eq(*(uint16_t *)m.payload.config.region, QUEUES);
	/* the whole space: the tail past the struct reads as zero */
	m = get_config(0, VU_CONFIG_SPACE_MAX, &rc);
	cr_assert_eq(rc, 0);
	for (unsigned i = sizeof(want); i < VU_CONFIG_SPACE_MAX; i++)
		cr_assert_eq(m.payload.config.region[i], 0);
	m = get_config(VU_CONFIG_SPACE_MAX - 1, 1, &rc);
	cr_assert_eq(rc, 0);
	m = get_config(0, 0, &rc);
	cr_assert_eq(rc, 0);
}

Test(vu, get_config_bad)
{
	struct vu_config cfg = { 0 };
	int rc;

	get_config(VU_CONFIG_SPACE_MAX - 1, 2, &rc);
	cr_assert_eq(rc, -EINVAL);
	get_config(VU_CONFIG_SPACE_MAX, 1, &rc);
	cr_assert_eq(rc, -EINVAL);
	/* header size and config size disagree */
	cfg.size = 8;
	cr_assert_eq(msg(VU_GET_CONFIG, V, &cfg, 12 + 4, NULL, 0), -EINVAL);
	cr_assert_eq(msg(VU_GET_CONFIG, V, &cfg, 12 + 16, NULL, 0), -EINVAL);
	cfg.size = 0xffffffff;
	cr_assert_eq(msg(VU_GET_CONFIG, V, &cfg, 12, NULL, 0), -EINVAL);
	cfg.size = 4;
	cfg.offset = 0xfffffffe;
	cr_assert_eq(msg(VU_GET_CONFIG, V, &cfg, 12 + 4, NULL, 0), -EINVAL);
	expect_no_reply();
}

Test(vu, set_config_writeback_only)
{
	struct vu_config cfg = { offsetof(struct virtio_blk_config, writeback), 1, 0, { 0 } };
	struct vu_msg m;
	int rc;

	cr_assert_eq(msg(VU_SET_CONFIG, V, &cfg, 13, NULL, 0), 0);
	cr_assert_eq(fx.blk->wce, false);
	m = get_config(offsetof(struct virtio_blk_config, writeback), 1, &rc);
	cr_assert_eq(m.payload.config.region[0], 0);
	cfg.region[0] = 1;
	cr_assert_eq(msg(VU_SET_CONFIG, V, &cfg, 13, NULL, 0), 0);
	cr_assert_eq(fx.blk->wce, true);
	cfg.region[0] = 2;
	cr_assert_eq(msg(VU_SET_CONFIG, V, &cfg, 13, NULL, 0), -EPERM);
	cfg.offset = 0;
	cfg.region[0] = 0;
	cr_assert_eq(msg(VU_SET_CONFIG, V, &cfg, 13, NULL, 0), -EPERM);
	cr_assert_eq(fx.blk->wce, true);
}

Test(vu, set_features)
{
	uint64_t offered = blkcfg_features(fx.blk) | BIT(VU_F_PROTOCOL_FEATURES);

	cr_assert_eq(msg_u64(VU_SET_FEATURES, V, offered | BIT(63)), -EINVAL);
	cr_assert_eq(msg_u64(VU_SET_FEATURES, V, BIT(0)), -EINVAL);
	cr_assert(!fx.c->features_set);
	cr_assert_eq(msg_u64(VU_SET_FEATURES, V, offered), 0);
	cr_assert_eq(fx.c->features, offered);
	cr_assert(!fx.blk->vqs[0].enabled, "rings start disabled with PROTOCOL_FEATURES");
	cr_assert_eq(msg_u64(VU_SET_FEATURES, V, BIT(VIRTIO_F_VERSION_1)), 0);
	cr_assert(fx.blk->vqs[0].enabled && fx.blk->vqs[1].enabled,
		  "rings enabled at once without PROTOCOL_FEATURES");
	cr_assert_eq(msg_u64(VU_SET_PROTOCOL_FEATURES, V, BIT(VU_PROTOCOL_F_RARP)), -EINVAL);
	cr_assert_eq(msg_u64(VU_SET_PROTOCOL_FEATURES, V, BIT(VU_PROTOCOL_F_MQ)), 0);
	cr_assert_eq(fx.c->protocol_features, BIT(VU_PROTOCOL_F_MQ));
	expect_no_reply();
}

Test(vu, reply_ack)
{
	/* not negotiated: NEED_REPLY is ignored, a failure drops the connection */
	cr_assert_eq(msg_state(VU_SET_VRING_NUM, NEED, 0, 256), 0);
	expect_no_reply();
	cr_assert_eq(msg_state(VU_SET_VRING_NUM, NEED, 0, 3), -EINVAL);
	expect_no_reply();

	negotiate_reply_ack();
	cr_assert_eq(msg_state(VU_SET_VRING_NUM, NEED, 0, 128), 0);
	cr_assert_eq(reply_u64(VU_SET_VRING_NUM), 0);
	expect_no_reply();
	/* a failed handler: non-zero ack, the connection goes on */
	cr_assert_eq(msg_state(VU_SET_VRING_NUM, NEED, 0, 3), 0);
	cr_assert_neq(reply_u64(VU_SET_VRING_NUM), 0);
	cr_assert_eq(fx.blk->vqs[0].num, 128);
	cr_assert_eq(msg_state(VU_SET_VRING_BASE, NEED, 0, 0x10000), 0);
	cr_assert_neq(reply_u64(VU_SET_VRING_BASE), 0);
	struct vu_config cfg = { 0, 1, 0, { 0 } };
	cr_assert_eq(msg(VU_SET_CONFIG, NEED, &cfg, 13, NULL, 0), 0);
	cr_assert_neq(reply_u64(VU_SET_CONFIG), 0);
	/* without NEED_REPLY: no ack, and a failure still drops */
	cr_assert_eq(msg_state(VU_SET_VRING_NUM, V, 0, 64), 0);
	expect_no_reply();
	cr_assert_eq(msg_state(VU_SET_VRING_NUM, V, 0, 3), -EINVAL);
	/* a request with its own reply answers once */
	cr_assert_eq(msg0(VU_GET_QUEUE_NUM, NEED), 0);
	cr_assert_eq(reply_u64(VU_GET_QUEUE_NUM), QUEUES);
	expect_no_reply();
	/* SET_MEM_TABLE ack */
	struct gmem g;
	gmem_std(&g);
	struct vu_memory mem = { .nregions = 1 };
	mem.regions[0] = g.d[1];
	cr_assert_eq(msg(VU_SET_MEM_TABLE, NEED, &mem, MEMSZ(1), g.fd + 1, 1), 0);
	cr_assert_eq(reply_u64(VU_SET_MEM_TABLE), 0);
	mem.regions[0].memory_size *= 4;
	cr_assert_eq(msg(VU_SET_MEM_TABLE, NEED, &mem, MEMSZ(1), g.fd + 1, 1), 0);
	cr_assert_neq(reply_u64(VU_SET_MEM_TABLE), 0);
	gmem_fini(&g);
	/* a malformed message is not a handler failure: dropped, no ack */
	cr_assert_eq(msg(VU_SET_VRING_NUM, NEED, &cfg, 4, NULL, 0), -EINVAL);
	expect_no_reply();
}

Test(vu, reply_to_closed_peer_fails)
{
	close(fx.sv[1]);
	fx.sv[1] = -1;
	/* nobody reads: the reply cannot be sent */
	fx.c->rx.hdr = (struct vu_hdr){ VU_GET_FEATURES, V, 0 };
	fx.c->rx.nfds = 0;
	cr_assert_lt(vu_dispatch(fx.c, &fx.c->rx), 0);
	cr_assert_neq(fx.c->err[0], '\0');
}

/* ---- receiving ---------------------------------------------------------------------- */

Test(vu, recv_in_three_pieces)
{
	uint8_t buf[12 + 8];
	struct vu_hdr h = { VU_SET_FEATURES, V, 8 };
	uint64_t f = BIT(VIRTIO_F_VERSION_1);
	int e = new_eventfd();

	memcpy(buf, &h, 12);
	memcpy(buf + 12, &f, 8);
	cr_assert_eq(vu_recv(fx.c), 0, "nothing there yet");
	peer_send_raw(buf, 5, &e, 1);
	cr_assert_eq(vu_recv(fx.c), 0);
	peer_send_raw(buf + 5, 10, NULL, 0);   /* rest of header + 3 payload bytes */
	cr_assert_eq(vu_recv(fx.c), 0);
	cr_assert_eq(fx.c->rx_len, 15);
	peer_send_raw(buf + 15, 5, NULL, 0);
	cr_assert_eq(vu_recv(fx.c), 1);
	cr_assert_eq(fx.c->rx.hdr.request, VU_SET_FEATURES);
	cr_assert_eq(fx.c->rx.hdr.size, 8);
	cr_assert_eq(fx.c->rx.payload.u64, f);
	cr_assert_eq(fx.c->rx.nfds, 1);
	/* whole: calling again does not read further */
	cr_assert_eq(vu_recv(fx.c), 1);
	vu_msg_close_fds(&fx.c->rx);
	close(e);
}

Test(vu, recv_back_to_back_messages)
{
	uint8_t buf[3 * 12 + 8];
	struct vu_hdr h1 = { VU_GET_QUEUE_NUM, V, 0 }, h2 = { VU_SET_FEATURES, V, 8 },
		      h3 = { VU_GET_FEATURES, V, 0 };
	uint64_t f = BIT(VIRTIO_F_VERSION_1);

	memcpy(buf, &h1, 12);
	memcpy(buf + 12, &h2, 12);
	memcpy(buf + 24, &f, 8);
	memcpy(buf + 32, &h3, 12);
	peer_send_raw(buf, sizeof(buf), NULL, 0);
	cr_assert_eq(pump(), 0);
	cr_assert_eq(reply_u64(VU_GET_QUEUE_NUM), QUEUES);
	cr_assert_eq(pump(), 0);
	cr_assert_eq(fx.c->features, f);
	cr_assert_eq(pump(), 0);
	cr_assert_eq(reply_u64(VU_GET_FEATURES) & BIT(VIRTIO_F_VERSION_1), BIT(VIRTIO_F_VERSION_1));
	cr_assert_eq(vu_recv(fx.c), 0);
}

Test(vu, recv_eof)
{
	shutdown(fx.sv[1], SHUT_WR);
	cr_assert_eq(vu_recv(fx.c), -ECONNRESET);
}

Test(vu, recv_eof_mid_header)
{
	struct vu_hdr h = { VU_SET_FEATURES, V, 8 };

	peer_send_raw(&h, 7, NULL, 0);
	cr_assert_eq(vu_recv(fx.c), 0);
	shutdown(fx.sv[1], SHUT_WR);
	cr_assert_eq(vu_recv(fx.c), -ECONNRESET);
}

Test(vu, recv_eof_mid_payload)
{
	uint8_t buf[16];
	struct vu_hdr h = { VU_SET_FEATURES, V, 8 };

	memcpy(buf, &h, 12);
	memset(buf + 12, 0, 4);
	peer_send_raw(buf, 16, NULL, 0);
	cr_assert_eq(vu_recv(fx.c), 0);
	close(fx.sv[1]);
	fx.sv[1] = -1;
	cr_assert_eq(vu_recv(fx.c), -ECONNRESET);
}

Test(vu, recv_oversized)
{
	struct vu_hdr h = { VU_SET_MEM_TABLE, V, VU_MAX_PAYLOAD + 1 };

	peer_send_raw(&h, sizeof(h), NULL, 0);
	cr_assert_eq(vu_recv(fx.c), -EMSGSIZE);
	cr_assert_neq(fx.c->err[0], '\0');
}

Test(vu, recv_oversized_huge)
{
	struct vu_hdr h = { VU_GET_FEATURES, V, 0xffffffff };

	peer_send_raw(&h, sizeof(h), NULL, 0);
	cr_assert_eq(vu_recv(fx.c), -EMSGSIZE);
}

Test(vu, recv_max_payload)
{
	static uint8_t buf[12 + VU_MAX_PAYLOAD];
	struct vu_hdr h = { VU_SET_MEM_TABLE, V, VU_MAX_PAYLOAD };

	memcpy(buf, &h, 12);
	memset(buf + 12, 0x41, VU_MAX_PAYLOAD);
	peer_send_raw(buf, sizeof(buf), NULL, 0);
	cr_assert_eq(vu_recv(fx.c), 1);
	cr_assert_eq(fx.c->rx.payload.bytes[VU_MAX_PAYLOAD - 1], 0x41);
	cr_assert_eq(vu_dispatch(fx.c, &fx.c->rx), -EINVAL);
}

static void send_fds(unsigned n, int *e)
{
	struct vu_hdr h = { VU_GET_FEATURES, V, 0 };
	peer_send_raw(&h, sizeof(h), e, n);
}

Test(vu, recv_eight_fds)
{
	int e[8];
	int before;

	for (unsigned i = 0; i < 8; i++)
		e[i] = new_eventfd();
	before = test_count_fds();
	send_fds(8, e);
	cr_assert_eq(vu_recv(fx.c), 1);
	cr_assert_eq(fx.c->rx.nfds, 8);
	cr_assert_eq(test_count_fds(), before + 8);
	vu_msg_close_fds(&fx.c->rx);
	cr_assert_eq(test_count_fds(), before);
	for (unsigned i = 0; i < 8; i++)
		close(e[i]);
}

Test(vu, recv_more_than_eight_fds)
{
	int e[16];
	int before;

	for (unsigned i = 0; i < 16; i++)
		e[i] = new_eventfd();
	before = test_count_fds();
	send_fds(9, e);
	cr_assert_eq(vu_recv(fx.c), -EINVAL);
	cr_assert_neq(fx.c->err[0], '\0');
	cr_assert_leq(fx.c->rx.nfds, VU_MAX_FDS);
	vu_msg_close_fds(&fx.c->rx);
	cr_assert_eq(test_count_fds(), before, "fd leak");
	for (unsigned i = 0; i < 16; i++)
		close(e[i]);
}

Test(vu, recv_more_than_eight_fds_in_pieces)
{
	uint8_t buf[12] = { 0 };
	struct vu_hdr h = { VU_GET_FEATURES, V, 0 };
	int e[10];
	int before;

	for (unsigned i = 0; i < 10; i++)
		e[i] = new_eventfd();
	before = test_count_fds();
	memcpy(buf, &h, 12);
	peer_send_raw(buf, 6, e, 5);
	cr_assert_eq(vu_recv(fx.c), 0);
	peer_send_raw(buf + 6, 6, e + 5, 5);
	cr_assert_eq(vu_recv(fx.c), -EINVAL);
	vu_msg_close_fds(&fx.c->rx);
	cr_assert_eq(test_count_fds(), before, "fd leak");
	for (unsigned i = 0; i < 10; i++)
		close(e[i]);
}

/* ---- a whole session, QEMU's order, with the engine running the ring --------------- */

#define RING_NUM 64

static void wait_fd(int fd, int ms)
{
	struct pollfd p = { fd, POLLIN, 0 };
	uint64_t v;

	cr_assert_eq(poll(&p, 1, ms), 1, "timed out waiting for the engine");
	cr_assert_eq(read(fd, &v, sizeof(v)), sizeof(v));
}

struct session {
	struct gmem g;
	int kick, call;
	unsigned num;                   /* queue size; 0: RING_NUM */
	uint16_t inflight_qs;           /* GET_INFLIGHT_FD for this queue size */
	int inflight_fd;
	struct vring_desc *desc;
	struct vring_avail *avail;
	struct vring_used *used;
	uint16_t avail_idx;
};

static void start_session(struct session *s, bool event_idx)
{
	uint64_t features, pf;
	struct vu_memory mem = { .nregions = 4 };
	struct vu_vring_addr a = { 0 };
	int rc;

	gmem_std(&s->g);
	if (!s->num)
		s->num = RING_NUM;
	s->kick = new_eventfd();
	s->call = new_eventfd();
	s->desc = gmem_ptr(&s->g, TR_DESC_GPA, vring_desc_size(s->num));
	s->avail = gmem_ptr(&s->g, TR_AVAIL_GPA, vring_avail_size(s->num));
	s->used = gmem_ptr(&s->g, TR_USED_GPA, vring_used_size(s->num));
	s->avail_idx = 0;

	cr_assert_eq(msg0(VU_GET_FEATURES, V), 0);
	features = reply_u64(VU_GET_FEATURES);
	cr_assert_eq(msg0(VU_SET_OWNER, V), 0);
	cr_assert_eq(msg0(VU_GET_PROTOCOL_FEATURES, V), 0);
	pf = reply_u64(VU_GET_PROTOCOL_FEATURES);
	cr_assert_eq(msg_u64(VU_SET_PROTOCOL_FEATURES, V, pf), 0);
	cr_assert_eq(msg0(VU_GET_QUEUE_NUM, V), 0);
	cr_assert_eq(reply_u64(VU_GET_QUEUE_NUM), QUEUES);
	get_config(0, sizeof(struct virtio_blk_config), &rc);
	cr_assert_eq(rc, 0);
	features &= BIT(VIRTIO_F_VERSION_1) | BIT(VU_F_PROTOCOL_FEATURES) |
		    BIT(VIRTIO_RING_F_INDIRECT_DESC) | (event_idx ? BIT(VIRTIO_RING_F_EVENT_IDX) : 0);
	cr_assert_eq(msg_u64(VU_SET_FEATURES, NEED, features), 0);
	cr_assert_eq(reply_u64(VU_SET_FEATURES), 0);
	for (unsigned i = 0; i < 4; i++)
		mem.regions[i] = s->g.d[i];
	/* (QEMU sets NEED_REPLY here; see replied_requests_close_their_fds) */
	cr_assert_eq(msg(VU_SET_MEM_TABLE, V, &mem, MEMSZ(4), s->g.fd, 4), 0);
	if (s->inflight_qs) {
		struct vu_inflight in = { 0, 0, QUEUES, s->inflight_qs };
		cr_assert_eq(msg(VU_GET_INFLIGHT_FD, V, &in, sizeof(in), NULL, 0), 0);
		reply_fd(VU_GET_INFLIGHT_FD, NULL, &s->inflight_fd);
	}
	cr_assert_eq(msg_state(VU_SET_VRING_NUM, V, 0, s->num), 0);
	cr_assert_eq(msg_state(VU_SET_VRING_BASE, V, 0, 0), 0);
	a.index = 0;
	a.desc_user_addr = gmem_uva(&s->g, TR_DESC_GPA);
	a.avail_user_addr = gmem_uva(&s->g, TR_AVAIL_GPA);
	a.used_user_addr = gmem_uva(&s->g, TR_USED_GPA);
	cr_assert_eq(msg(VU_SET_VRING_ADDR, V, &a, sizeof(a), NULL, 0), 0);
	cr_assert_eq(msg_vring_fd(VU_SET_VRING_KICK, 0, s->kick), 0);
	cr_assert_eq(msg_vring_fd(VU_SET_VRING_CALL, 0, s->call), 0);
	cr_assert(!fx.blk->vqs[0].attached, "not enabled yet");
	cr_assert_eq(msg_state(VU_SET_VRING_ENABLE, NEED, 0, 1), 0);
	cr_assert_eq(reply_u64(VU_SET_VRING_ENABLE), 0, "%s", fx.c->err);
	cr_assert(fx.blk->vqs[0].attached);
	expect_no_reply();
}

static void end_session(struct session *s)
{
	vu_conn_teardown(fx.c);
	close(s->kick);
	close(s->call);
	if (s->inflight_qs)
		close(s->inflight_fd);
	gmem_fini(&s->g);
}

/* A FLUSH through the ring; waits for the call. */
static void ring_flush(struct session *s)
{
	uint64_t h = TR_HEAP_GPA + 0x100 * s->avail_idx, st = h + 0x80;
	struct vblk_req_hdr *hdr = gmem_ptr(&s->g, h, 16);
	uint8_t *status = gmem_ptr(&s->g, st, 1);
	unsigned d = (s->avail_idx * 2) % s->num;
	uint64_t one = 1;

	hdr->type = VIRTIO_BLK_T_FLUSH;
	*status = 0xee;
	/* EVENT_IDX: interrupt me once the next used entry appears */
	s->avail->ring[s->num] = s->avail_idx;
	s->desc[d] = (struct vring_desc){ h, 16, VRING_DESC_F_NEXT, d + 1 };
	s->desc[d + 1] = (struct vring_desc){ st, 1, VRING_DESC_F_WRITE, 0 };
	s->avail->ring[s->avail_idx % s->num] = d;
	s->avail_idx++;
	__atomic_store_n(&s->avail->idx, s->avail_idx, __ATOMIC_RELEASE);
	cr_assert_eq(write(s->kick, &one, 8), 8);
	wait_fd(s->call, 5000);
	cr_assert_eq(__atomic_load_n(&s->used->idx, __ATOMIC_ACQUIRE), s->avail_idx);
	cr_assert_eq(*status, VIRTIO_BLK_S_OK);
}

Test(vu, session_runs_ring_on_engine, .timeout = 30)
{
	struct session s = { 0 };
	struct vu_msg m;

	start_session(&s, false);
	ring_flush(&s);
	ring_flush(&s);
	/* the memory table is replaced under the running ring */
	struct vu_memory mem = { .nregions = 4 };
	for (unsigned i = 0; i < 4; i++)
		mem.regions[i] = s.g.d[i];
	cr_assert_eq(msg(VU_SET_MEM_TABLE, V, &mem, MEMSZ(4), s.g.fd, 4), 0);
	cr_assert(fx.blk->vqs[0].attached);
	ring_flush(&s);
	/* a size change while running is refused */
	cr_assert_eq(msg_state(VU_SET_VRING_NUM, NEED, 0, 32), 0);
	cr_assert_neq(reply_u64(VU_SET_VRING_NUM), 0);
	cr_assert_eq(msg_state(VU_SET_VRING_BASE, NEED, 0, 5), 0);
	cr_assert_neq(reply_u64(VU_SET_VRING_BASE), 0);
	/* GET_VRING_BASE stops it and reports where it stopped */
	cr_assert_eq(msg_state(VU_GET_VRING_BASE, V, 0, 0), 0);
	cr_assert(reply(&m));
	cr_assert_eq(m.payload.state.num, 3);
	cr_assert(!fx.blk->vqs[0].attached);
	cr_assert(!fx.blk->vqs[0].started);
	cr_assert_eq(fx.blk->vqs[0].kick_fd, -1);
	cr_assert_eq(fx.broken_calls, 0);
	end_session(&s);
}

Test(vu, session_event_idx, .timeout = 30)
{
	struct session s = { 0 };

	start_session(&s, true);
	cr_assert(fx.blk->vqs[0].event_idx);
	ring_flush(&s);
	cr_assert_eq(msg_state(VU_SET_VRING_ENABLE, V, 0, 0), 0);
	cr_assert(!fx.blk->vqs[0].attached);
	cr_assert_eq(msg_state(VU_SET_VRING_ENABLE, V, 0, 1), 0);
	cr_assert(fx.blk->vqs[0].attached);
	ring_flush(&s);
	cr_assert_eq(msg_state(VU_SET_VRING_ENABLE, V, 0, 2), -EINVAL);
	end_session(&s);
}

Test(vu, session_bad_ring_address_refused, .timeout = 30)
{
	struct session s = { 0 };
	struct vu_vring_addr a = { .index = 0 };

	start_session(&s, false);
	a.desc_user_addr = R1_GPA;      /* a guest-physical address, not a uva */
	a.avail_user_addr = gmem_uva(&s.g, TR_AVAIL_GPA);
	a.used_user_addr = gmem_uva(&s.g, TR_USED_GPA);
	cr_assert_eq(msg(VU_SET_VRING_ADDR, V, &a, sizeof(a), NULL, 0), -EFAULT);
	cr_assert(!fx.blk->vqs[0].attached);
	end_session(&s);
}

Test(vu, session_kick_nofd_polls, .timeout = 30)
{
	struct session s = { 0 };

	start_session(&s, false);
	cr_assert_eq(msg_vring_fd(VU_SET_VRING_KICK, 0 | VU_VRING_NOFD_MASK, -1), 0);
	cr_assert(fx.blk->vqs[0].kick_nofd);
	cr_assert(fx.blk->vqs[0].attached);
	ring_flush(&s);                 /* the kick write goes nowhere; polling finds it */
	end_session(&s);
}

Test(vu, reset_and_teardown_release_everything, .timeout = 30)
{
	struct session s = { 0 };
	int before = test_count_fds();

	start_session(&s, false);
	cr_assert_eq(msg_vring_fd(VU_SET_VRING_ERR, 1, s.kick), 0);
	cr_assert_eq(msg0(VU_RESET_OWNER, V), 0);
	for (unsigned i = 0; i < QUEUES; i++) {
		struct vq *vq = &fx.blk->vqs[i];
		cr_assert(!vq->attached);
		cr_assert_eq(vq->kick_fd, -1);
		cr_assert_eq(vq->call_fd, -1);
		cr_assert_eq(vq->err_fd, -1);
		cr_assert_eq(vq->num, 0);
	}
	cr_assert_eq(fx.c->features, 0);
	cr_assert(!fx.c->features_set);
	/* again, then a RESET_DEVICE */
	cr_assert_eq(msg_u64(VU_SET_FEATURES, V, BIT(VIRTIO_F_VERSION_1)), 0);
	cr_assert_eq(msg_vring_fd(VU_SET_VRING_CALL, 0, s.call), 0);
	cr_assert_eq(msg0(VU_RESET_DEVICE, V), 0);
	cr_assert_eq(fx.blk->vqs[0].call_fd, -1);
	end_session(&s);
	cr_assert_eq(test_count_fds(), before, "fd leak");
}

/* ---- fds of answered requests ---------------------------------------------------- */

/* Every fd that came with a message is closed or kept, also when the
 * request is answered (its own reply, or a REPLY_ACK). */
Test(vu, replied_requests_close_their_fds)
{
	struct gmem g;
	struct vu_memory mem = { .nregions = 1 };
	struct vu_vring_state st = { 0, 0 };
	int before, e = new_eventfd();

	gmem_std(&g);
	mem.regions[0] = g.d[1];
	negotiate_reply_ack();
	before = test_count_fds();
	/* QEMU sets NEED_REPLY on SET_MEM_TABLE whenever REPLY_ACK is on */
	cr_assert_eq(msg(VU_SET_MEM_TABLE, NEED, &mem, MEMSZ(1), g.fd + 1, 1), 0);
	cr_assert_eq(reply_u64(VU_SET_MEM_TABLE), 0);
	cr_assert_eq(test_count_fds(), before,
		     "SET_MEM_TABLE+NEED_REPLY leaked the region fd (it pins guest RAM)");
	assert_rx_fds_closed();
	mem.regions[0].memory_size *= 4;                /* refused by the handler */
	cr_assert_eq(msg(VU_SET_MEM_TABLE, NEED, &mem, MEMSZ(1), g.fd + 1, 1), 0);
	cr_assert_neq(reply_u64(VU_SET_MEM_TABLE), 0);
	assert_rx_fds_closed();
	/* a request with its own reply (refusing the stray fd is fine too) */
	if (msg(VU_GET_VRING_BASE, V, &st, sizeof(st), &e, 1) == 0)
		cr_assert(reply(&(struct vu_msg){ 0 }));
	assert_rx_fds_closed();
	cr_assert_eq(test_count_fds(), before, "fd leak");
	close(e);
	gmem_fini(&g);
}

/* ---- inflight tracking (GET/SET_INFLIGHT_FD) ---------------------------------------- */

Test(vu, get_inflight_fd)
{
	struct vu_inflight in = { 0, 0, QUEUES, 128 };
	struct vu_msg m;
	struct stat st;
	int fd;
	uint8_t *p;

	cr_assert_eq(msg(VU_GET_INFLIGHT_FD, V, &in, sizeof(in), NULL, 0), 0, "%s", fx.c->err);
	reply_fd(VU_GET_INFLIGHT_FD, &m, &fd);
	cr_assert_eq(m.payload.inflight.mmap_offset, 0);
	cr_assert_eq(m.payload.inflight.mmap_size, QUEUES * vq_inflight_size(128));
	cr_assert_eq(fstat(fd, &st), 0);
	cr_assert_geq((uint64_t)st.st_size, m.payload.inflight.mmap_size);
	p = mmap(NULL, m.payload.inflight.mmap_size, PROT_READ, MAP_SHARED, fd, 0);
	cr_assert_neq(p, MAP_FAILED);
	for (unsigned q = 0; q < QUEUES; q++) {
		struct vq_inflight *r = (struct vq_inflight *)(p + q * vq_inflight_size(128));
		cr_assert_eq(r->version, 1);
		cr_assert_eq(r->desc_num, 128);
	}
	munmap(p, m.payload.inflight.mmap_size);
	close(fd);
	/* the back-end keeps its own copy; a second call replaces it */
	cr_assert_eq(msg(VU_GET_INFLIGHT_FD, V, &in, 20, NULL, 0), 0);
	reply_fd(VU_GET_INFLIGHT_FD, &m, &fd);
	close(fd);
}

Test(vu, get_inflight_fd_bad_shape)
{
	const struct vu_inflight bad[] = {
		{ 0, 0, 0, 128 }, { 0, 0, VDEV_MAX_QUEUES + 1, 128 },
		{ 0, 0, 1, 0 }, { 0, 0, 1, VQ_MAX_SIZE + 1 }, { 0, 0, 0xffff, 0xffff },
	};
	struct vu_inflight ok = { 0, 0, 1, 64 };
	int e = new_eventfd();

	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(msg(VU_GET_INFLIGHT_FD, V, &bad[i], sizeof(bad[i]), NULL, 0), -EINVAL,
			     "shape %u", i);
	uint8_t buf[32] = { 0 };
	memcpy(buf, &ok, sizeof(ok));
	cr_assert_eq(msg(VU_GET_INFLIGHT_FD, V, buf, 19, NULL, 0), -EINVAL);
	cr_assert_eq(msg(VU_GET_INFLIGHT_FD, V, buf, 25, NULL, 0), -EINVAL);
	cr_assert_eq(msg(VU_GET_INFLIGHT_FD, V, &ok, sizeof(ok), &e, 1), -EINVAL);
	assert_rx_fds_closed();
	expect_no_reply();
	close(e);
}

static int region_fd(uint64_t size)
{
	int fd = test_memfd("infl", size);
	cr_assert_geq(fd, 0);
	return fd;
}

Test(vu, set_inflight_fd)
{
	uint64_t need = QUEUES * vq_inflight_size(64);
	struct vu_inflight in = { need, 0, QUEUES, 64 };
	int fd = region_fd(need), fd2 = region_fd(need + 8192), kept;
	int fds2[2] = { fd, fd2 };

	/* no fd, two fds */
	cr_assert_eq(msg(VU_SET_INFLIGHT_FD, V, &in, sizeof(in), NULL, 0), -EINVAL);
	cr_assert_eq(msg(VU_SET_INFLIGHT_FD, V, &in, sizeof(in), fds2, 2), -EINVAL);
	assert_rx_fds_closed();
	/* too small for its queues; larger than the file; offset wrapping */
	in.mmap_size = need - 1;
	cr_assert_eq(msg(VU_SET_INFLIGHT_FD, V, &in, sizeof(in), &fd, 1), -EINVAL);
	assert_rx_fds_closed();
	in.mmap_size = need + 4096;
	cr_assert_eq(msg(VU_SET_INFLIGHT_FD, V, &in, sizeof(in), &fd, 1), -EINVAL);
	assert_rx_fds_closed();
	in = (struct vu_inflight){ need, UINT64_MAX - need + 1, QUEUES, 64 };
	cr_assert_eq(msg(VU_SET_INFLIGHT_FD, V, &in, sizeof(in), &fd, 1), -EINVAL);
	assert_rx_fds_closed();
	in = (struct vu_inflight){ UINT64_MAX, 0, QUEUES, 64 };
	cr_assert_eq(msg(VU_SET_INFLIGHT_FD, V, &in, sizeof(in), &fd, 1), -EINVAL);
	assert_rx_fds_closed();
	/* an offset the kernel cannot map at */
	in = (struct vu_inflight){ need, 100, QUEUES, 64 };
	cr_assert_lt(msg(VU_SET_INFLIGHT_FD, V, &in, sizeof(in), &fd2, 1), 0);
	assert_rx_fds_closed();
	cr_assert_null(fx.c->inflight_map);
	/* good, at a page offset */
	in = (struct vu_inflight){ need, 4096, QUEUES, 64 };
	cr_assert_eq(msg(VU_SET_INFLIGHT_FD, V, &in, sizeof(in), &fd2, 1), 0, "%s", fx.c->err);
	cr_assert_eq(fx.c->inflight_fd, fx.rx_fds[0], "the handler keeps its fd");
	kept = fx.rx_fds[0];
	cr_assert_not_null(fx.c->inflight_map);
	/* and replacing it closes the old one */
	in = (struct vu_inflight){ need, 0, QUEUES, 64 };
	cr_assert_eq(msg(VU_SET_INFLIGHT_FD, V, &in, sizeof(in), &fd, 1), 0);
	cr_assert(!test_fd_open(kept));
	close(fd);
	close(fd2);
}

Test(vu, session_inflight_tracked, .timeout = 30)
{
	struct session s = { .inflight_qs = RING_NUM };
	struct vq *vq = &fx.blk->vqs[0];
	struct vq_inflight *infl;

	start_session(&s, false);
	cr_assert_not_null(vq->infl, "the ring runs with its inflight region");
	infl = mmap(NULL, vq_inflight_size(RING_NUM), PROT_READ, MAP_SHARED, s.inflight_fd, 0);
	cr_assert_neq(infl, MAP_FAILED);
	ring_flush(&s);
	ring_flush(&s);
	cr_assert_eq(infl->version, 1);
	cr_assert_eq(infl->desc_num, RING_NUM);
	cr_assert_eq(infl->used_idx, 2, "the batch was retired");
	for (unsigned i = 0; i < RING_NUM; i++)
		cr_assert_eq(infl->desc[i].inflight, 0, "head %u still marked", i);
	cr_assert_neq(infl->desc[0].counter, 0);
	cr_assert_gt(infl->desc[2].counter, infl->desc[0].counter);
	munmap(infl, vq_inflight_size(RING_NUM));
	end_session(&s);
}

/* The control thread must not change a running ring's inflight region:
 * GET_INFLIGHT_FD while a ring runs unmaps the region the engine thread is
 * writing (inflight_unmap), which can fault in the engine.  Like
 * SET_INFLIGHT_FD it has to stop the rings, swap, and restart them. */
Test(vu, get_inflight_fd_while_running, .timeout = 30)
{
	struct session s = { .inflight_qs = RING_NUM };
	struct vq *vq = &fx.blk->vqs[0];
	struct vu_inflight in = { 0, 0, QUEUES, RING_NUM };
	const void *old;
	int fd;

	start_session(&s, false);
	ring_flush(&s);
	old = vq->infl;
	cr_assert_not_null(old);
	cr_assert_eq(msg(VU_GET_INFLIGHT_FD, V, &in, sizeof(in), NULL, 0), 0);
	reply_fd(VU_GET_INFLIGHT_FD, NULL, &fd);
	cr_assert(vq->attached);
	cr_assert_not_null(vq->infl,
			   "GET_INFLIGHT_FD cleared vq->infl (and unmapped it) under a running ring");
	cr_assert_eq(vq->infl, fx.c->inflight_map);
	ring_flush(&s);
	close(fd);
	end_session(&s);
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000ull + ts.tv_nsec / 1000000;
}

/* The same, with the engine busy: a polling driver keeps a large ring full
 * of requests while the front-end asks for a new inflight region again and
 * again.  Before the fix the engine thread faults in vq_poll/vq_push_used
 * writing the unmapped region. */
Test(vu, get_inflight_fd_while_running_stress, .timeout = 60)
{
	enum { NUM = 1024 };
	struct session s = { .num = NUM, .inflight_qs = NUM };
	struct vu_inflight in = { 0, 0, QUEUES, NUM };
	uint64_t h = TR_HEAP_GPA + 0x8000, st = h + 0x80;
	uint16_t idx;
	int fd;

	start_session(&s, false);
	/* a polling driver: no kicks needed */
	cr_assert_eq(msg_vring_fd(VU_SET_VRING_KICK, 0 | VU_VRING_NOFD_MASK, -1), 0);
	((struct vblk_req_hdr *)gmem_ptr(&s.g, h, 16))->type = VIRTIO_BLK_T_FLUSH;
	s.desc[0] = (struct vring_desc){ h, 16, VRING_DESC_F_NEXT, 1 };
	s.desc[1] = (struct vring_desc){ st, 1, VRING_DESC_F_WRITE, 0 };
	idx = s.avail_idx;
	/* about a second: the window is small, but every round opens it */
	for (uint64_t t0 = now_ms(); now_ms() - t0 < 1000;) {
		uint16_t used = __atomic_load_n(&s.used->idx, __ATOMIC_ACQUIRE);
		/* refill: the ring is full again when the region goes */
		while ((uint16_t)(idx - used) < NUM) {
			s.avail->ring[idx % NUM] = 0;
			idx++;
		}
		__atomic_store_n(&s.avail->idx, idx, __ATOMIC_RELEASE);
		cr_assert_eq(msg(VU_GET_INFLIGHT_FD, V, &in, sizeof(in), NULL, 0), 0);
		reply_fd(VU_GET_INFLIGHT_FD, NULL, &fd);
		close(fd);
		/* restart the ring so it picks a region up again */
		cr_assert_eq(msg_vring_fd(VU_SET_VRING_KICK, 0 | VU_VRING_NOFD_MASK, -1), 0);
	}
	cr_assert_eq(fx.broken_calls, 0);
	end_session(&s);
}

/* ---- memory slots, status, back-end channel ---------------------------------- */

static int mem_reg(uint32_t req, const struct mem_region_desc *d, const int *fds, unsigned nfds)
{
	struct vu_mem_reg r = { 0, *d };
	return msg(req, V, &r, sizeof(r), fds, nfds);
}

Test(vu, max_mem_slots)
{
	cr_assert_eq(msg0(VU_GET_MAX_MEM_SLOTS, V), 0);
	cr_assert_geq(reply_u64(VU_GET_MAX_MEM_SLOTS), 32, "Kata needs at least 32");
}

Test(vu, add_and_remove_regions)
{
	struct gmem g;
	const struct mem_table *before;

	gmem_std(&g);
	/* regions arrive one by one, the table grows, fds are closed */
	for (unsigned i = 0; i < 4; i++) {
		cr_assert_eq(mem_reg(VU_ADD_MEM_REG, &g.d[i], &g.fd[i], 1), 0, "%s", fx.c->err);
		assert_rx_fds_closed();
		cr_assert_eq(fx.c->mem->nregions, i + 1);
		cr_assert_eq(fx.blk->vqs[0].mem, fx.c->mem);
	}
	*(uint32_t *)gmem_ptr(&g, R2_GPA + 0x40, 4) = 0xfeedf00d;
	cr_assert_eq(*(uint32_t *)mem_gpa_to_host(fx.c->mem, R2_GPA + 0x40, 4), 0xfeedf00d);
	/* the same region twice overlaps itself */
	before = fx.c->mem;
	cr_assert_eq(mem_reg(VU_ADD_MEM_REG, &g.d[1], &g.fd[1], 1), -EINVAL);
	assert_rx_fds_closed();
	cr_assert_eq(fx.c->mem, before, "a refused region leaves the table alone");
	/* one fd, exactly */
	cr_assert_eq(mem_reg(VU_ADD_MEM_REG, &g.d[1], NULL, 0), -EINVAL);
	cr_assert_eq(mem_reg(VU_ADD_MEM_REG, &g.d[1], g.fd, 2), -EINVAL);
	assert_rx_fds_closed();
	/* removal by guest address, user address and size; mmap offset ignored */
	{
		struct mem_region_desc r = g.d[1];
		r.mmap_offset = 0x12345000;
		cr_assert_eq(mem_reg(VU_REM_MEM_REG, &r, NULL, 0), 0, "%s", fx.c->err);
	}
	cr_assert_eq(fx.c->mem->nregions, 3);
	cr_assert_null(mem_gpa_to_host(fx.c->mem, g.d[1].guest_phys_addr, 1));
	cr_assert_eq(*(uint32_t *)mem_gpa_to_host(fx.c->mem, R2_GPA + 0x40, 4), 0xfeedf00d);
	/* an unknown region is refused, nothing changes */
	before = fx.c->mem;
	cr_assert_eq(mem_reg(VU_REM_MEM_REG, &g.d[1], NULL, 0), -ENOENT);
	cr_assert_neq(fx.c->err[0], '\0');
	cr_assert_eq(fx.c->mem, before);
	/* a stray fd with REM_MEM_REG is closed, not used */
	cr_assert_eq(mem_reg(VU_REM_MEM_REG, &g.d[0], &g.fd[0], 1), 0, "%s", fx.c->err);
	assert_rx_fds_closed();
	cr_assert_eq(fx.c->mem->nregions, 2);
	/* wrong payload size */
	{
		struct vu_mem_reg r = { 0, g.d[0] };
		cr_assert_eq(msg(VU_ADD_MEM_REG, V, &r, 32, &g.fd[0], 1), -EINVAL);
		assert_rx_fds_closed();
	}
	gmem_fini(&g);
}

Test(vu, add_mem_reg_beyond_its_file_with_reply_ack)
{
	struct gmem g;
	struct mem_region_desc big;

	gmem_std(&g);
	negotiate_reply_ack();
	big = g.d[0];
	big.memory_size = 64ull << 20;  /* far past the memfd */
	cr_assert_eq(mem_reg(VU_ADD_MEM_REG, &big, &g.fd[0], 1), -EINVAL);
	expect_no_reply();
	/* with NEED_REPLY the failure is answered and the connection goes on */
	{
		struct vu_mem_reg r = { 0, big };
		cr_assert_eq(msg(VU_ADD_MEM_REG, V | VU_FLAG_NEED_REPLY, &r, sizeof(r),
				 &g.fd[0], 1), 0);
		cr_assert_neq(reply_u64(VU_ADD_MEM_REG), 0);
		r.region = g.d[0];
		cr_assert_eq(msg(VU_ADD_MEM_REG, V | VU_FLAG_NEED_REPLY, &r, sizeof(r),
				 &g.fd[0], 1), 0);
		cr_assert_eq(reply_u64(VU_ADD_MEM_REG), 0);
	}
	cr_assert_eq(fx.c->mem->nregions, 1);
	gmem_fini(&g);
}

Test(vu, status_is_recorded)
{
	cr_assert_eq(msg0(VU_GET_STATUS, V), 0);
	cr_assert_eq(reply_u64(VU_GET_STATUS), 0);
	cr_assert_eq(msg_u64(VU_SET_STATUS, V, 0x0f), 0);
	cr_assert_eq(msg0(VU_GET_STATUS, V), 0);
	cr_assert_eq(reply_u64(VU_GET_STATUS), 0x0f);
	cr_assert_eq(msg_u64(VU_SET_STATUS, V, 0x100), -EINVAL);
	/* a backing that failed asks the driver for a reset */
	atomic_store(&fx.blk->be->failed, true);
	cr_assert_eq(msg0(VU_GET_STATUS, V), 0);
	cr_assert_eq(reply_u64(VU_GET_STATUS), 0x0f | VU_STATUS_NEEDS_RESET);
	atomic_store(&fx.blk->be->failed, false);
}

Test(vu, config_change_goes_over_the_backend_channel)
{
	int sv[2];
	struct vu_hdr h;

	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	/* nothing to send on before the channel is negotiated and given */
	cr_assert(!vu_config_changed(fx.c));
	cr_assert_eq(msg_u64(VU_SET_FEATURES, V, BIT(VU_F_PROTOCOL_FEATURES)), 0);
	cr_assert_eq(msg_u64(VU_SET_PROTOCOL_FEATURES, V,
			     BIT(VU_PROTOCOL_F_BACKEND_REQ) | BIT(VU_PROTOCOL_F_CONFIG)), 0);
	cr_assert_eq(msg(VU_SET_BACKEND_REQ_FD, V, NULL, 0, NULL, 0), -EINVAL, "needs its fd");
	cr_assert_eq(msg(VU_SET_BACKEND_REQ_FD, V, NULL, 0, &sv[1], 1), 0, "%s", fx.c->err);
	close(sv[1]);
	cr_assert(vu_config_changed(fx.c));
	cr_assert_eq(recv(sv[0], &h, sizeof(h), MSG_DONTWAIT), (ssize_t)sizeof(h));
	cr_assert_eq(h.request, VU_BACKEND_CONFIG_CHANGE_MSG);
	cr_assert_eq(h.flags, VU_VERSION, "no reply asked: it would deadlock GET_CONFIG");
	cr_assert_eq(h.size, 0);
	/* a front-end that closed its end costs a warning, not the daemon */
	close(sv[0]);
	cr_assert(!vu_config_changed(fx.c));
}
