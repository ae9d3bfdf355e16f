/* vhost-user back-end protocol for a virtio-blk device: one handler per
 * request in a table that also says how big its payload may be, whether it
 * names a vring, and whether it answers with its own reply.  vu_dispatch()
 * checks all of that before a handler runs, so handlers trust the shape of
 * the message (not its values).  Control thread.
 *
 * Ring states follow the spec: a ring starts when it has a kick (and is
 * enabled), stops on GET_VRING_BASE, and GET_VRING_BASE is answered only
 * after the engine thread acknowledged the stop.  Anything that changes a
 * running ring (memory table, addresses, call fd) stops it, changes it, and
 * starts it again.  The ring and memory handlers live in vu_ring.c and
 * vu_mem.c (vu_int.h). */
#include "vu_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "engine.h"
#include "fault.h"
#include "log.h"

#define VU_PROTOCOL_FEATURES (BIT(VU_PROTOCOL_F_MQ) | BIT(VU_PROTOCOL_F_REPLY_ACK) | \
			      BIT(VU_PROTOCOL_F_LOG_SHMFD) | \
			      BIT(VU_PROTOCOL_F_BACKEND_REQ) | BIT(VU_PROTOCOL_F_CONFIG) | \
			      BIT(VU_PROTOCOL_F_RESET_DEVICE) | BIT(VU_PROTOCOL_F_INFLIGHT_SHMFD) | \
			      BIT(VU_PROTOCOL_F_CONFIGURE_MEM_SLOTS) | BIT(VU_PROTOCOL_F_STATUS))

/* Which rings must stand still while a request takes effect. */
enum vu_quiesce {
	VU_Q_NONE = 0,
	VU_Q_RING,      /* the addressed ring: stopped around fn, then restarted */
	VU_Q_ALL,       /* every running ring: fn checks and prepares (nothing a
			 * ring reads changes), commit applies with all of them
			 * stopped, so the stop lasts no longer than the swap */
};

/* One entry per request code: its name, and for the requests we serve,
 * the handler and the shape its message must have. */
struct vu_handler {
	const char *name;
	int (*fn)(struct vu_conn *c, struct vu_msg *m);
	int (*commit)(struct vu_conn *c);       /* VU_Q_ALL: applies what fn staged */
	enum vu_quiesce quiesce;
	uint32_t min_size, max_size;    /* payload bytes */
	bool vring;                     /* payload starts with a vring index */
	bool vring_fd;                  /* u64 index|NOFD, with 0 or 1 fd */
	bool may_have_fds;              /* fds other than vring_fd's are allowed */
};

static uint64_t vu_offered_features(const struct vu_conn *c)
{
	return blkcfg_features(c->blk) | BIT(VU_F_PROTOCOL_FEATURES) | BIT(VU_F_LOG_ALL);
}

/* --- handlers ------------------------------------------------------------- */

static int h_get_features(struct vu_conn *c, struct vu_msg *m)
{
	m->payload.u64 = vu_offered_features(c);
	m->hdr.size = sizeof(uint64_t);
	return VU_REPLY;
}

static int h_set_features(struct vu_conn *c, struct vu_msg *m)
{
	uint64_t f = m->payload.u64, extra = f & ~vu_offered_features(c);

	if (extra) {
		snprintf(c->err, sizeof(c->err), "front-end set features 0x%llx we never offered",
			 (unsigned long long)extra);
		return -EINVAL;
	}
	c->staged_features = f;
	return VU_OK;
}

/* Commit of SET_FEATURES, with the rings stopped: LOG_ALL may come and go
 * while they run (a migration starts or ends), and a ring restarted now
 * logs, or stops logging, from its first request on. */
static int commit_features(struct vu_conn *c)
{
	uint64_t f = c->staged_features;

	if ((f ^ c->features) & BIT(VU_F_LOG_ALL))
		vlog(LOG_INFO, "[%s] dirty logging %s%s", vu_name(c),
		     f & BIT(VU_F_LOG_ALL) ? "on" : "off",
		     f & BIT(VU_F_LOG_ALL) && !c->log ? " (no log shared yet)" : "");
	c->features = f;
	c->features_set = true;
	/* Without PROTOCOL_FEATURES rings are enabled as soon as they start. */
	if (!(f & BIT(VU_F_PROTOCOL_FEATURES)) && vu_owns_rings(c))
		for (unsigned i = 0; i < VDEV_MAX_QUEUES; i++)
			c->blk->vqs[i].enabled = true;
	return 0;
}

static int h_set_owner(struct vu_conn *c, struct vu_msg *m)
{
	c->owner = true;
	return VU_OK;
}

static int h_reset(struct vu_conn *c, struct vu_msg *m)
{
	vu_reset_device(c);
	return VU_OK;
}

static int h_get_protocol_features(struct vu_conn *c, struct vu_msg *m)
{
	m->payload.u64 = VU_PROTOCOL_FEATURES;
	m->hdr.size = sizeof(uint64_t);
	return VU_REPLY;
}

static int h_set_protocol_features(struct vu_conn *c, struct vu_msg *m)
{
	uint64_t extra = m->payload.u64 & ~VU_PROTOCOL_FEATURES;

	if (extra) {
		snprintf(c->err, sizeof(c->err),
			 "front-end set protocol features 0x%llx we never offered",
			 (unsigned long long)extra);
		return -EINVAL;
	}
	c->protocol_features = m->payload.u64;
	return VU_OK;
}

static int h_get_queue_num(struct vu_conn *c, struct vu_msg *m)
{
	m->payload.u64 = c->blk->params.queues;
	m->hdr.size = sizeof(uint64_t);
	return VU_REPLY;
}

/* Commit of SET_MEM_TABLE and ADD/REM_MEM_REG (every ring stopped). */
static int h_set_status(struct vu_conn *c, struct vu_msg *m)
{
	if (m->payload.u64 > 0xff) {
		snprintf(c->err, sizeof(c->err), "SET_STATUS 0x%llx is not a status byte",
			 (unsigned long long)m->payload.u64);
		return -EINVAL;
	}
	/* Recorded only: the rings follow their own messages (QEMU sends
	 * SET_STATUS 0 before GET_VRING_BASE, whose answer must stay right). */
	c->status = (uint8_t)m->payload.u64;
	vlog(LOG_DEBUG, "[%s] device status 0x%02x", vu_name(c), c->status);
	return VU_OK;
}

static int h_get_status(struct vu_conn *c, struct vu_msg *m)
{
	uint64_t st = c->status;

	/* A backing that went away: the driver should reset the device. */
	if (c->blk->be && atomic_load(&c->blk->be->failed))
		st |= VU_STATUS_NEEDS_RESET;
	m->payload.u64 = st;
	m->hdr.size = sizeof(uint64_t);
	return VU_REPLY;
}

static int h_set_backend_req_fd(struct vu_conn *c, struct vu_msg *m)
{
	if (m->nfds != 1) {
		snprintf(c->err, sizeof(c->err), "SET_BACKEND_REQ_FD with %u fds", m->nfds);
		return -EINVAL;
	}
	if (c->backend_fd >= 0)
		close(c->backend_fd);
	c->backend_fd = m->fds[0];
	m->fds[0] = -1;
	return VU_OK;
}

static int h_get_config(struct vu_conn *c, struct vu_msg *m)
{
	struct vu_config *cfg = &m->payload.config;
	struct virtio_blk_config bc;
	uint8_t space[VU_CONFIG_SPACE_MAX] = { 0 };

	if (cfg->size > VU_CONFIG_SPACE_MAX || cfg->offset > VU_CONFIG_SPACE_MAX - cfg->size ||
	    m->hdr.size != offsetof(struct vu_config, region) + cfg->size) {
		snprintf(c->err, sizeof(c->err), "GET_CONFIG: offset %u size %u in %u bytes",
			 cfg->offset, cfg->size, m->hdr.size);
		return -EINVAL;
	}
	blkcfg_build(c->blk, &bc);
	memcpy(space, &bc, sizeof(bc));
	memcpy(cfg->region, space + cfg->offset, cfg->size);
	return VU_REPLY;
}

static int h_set_config(struct vu_conn *c, struct vu_msg *m)
{
	struct vu_config *cfg = &m->payload.config;
	const uint32_t wce = offsetof(struct virtio_blk_config, writeback);

	if (cfg->size > VU_CONFIG_SPACE_MAX || cfg->offset > VU_CONFIG_SPACE_MAX - cfg->size ||
	    m->hdr.size != offsetof(struct vu_config, region) + cfg->size) {
		snprintf(c->err, sizeof(c->err), "SET_CONFIG: offset %u size %u in %u bytes",
			 cfg->offset, cfg->size, m->hdr.size);
		return -EINVAL;
	}
	/* Only the writeback byte is writable (VIRTIO_BLK_F_CONFIG_WCE). */
	if (cfg->offset != wce || cfg->size != 1 || cfg->region[0] > 1) {
		vlog(LOG_WARNING, "[%s] SET_CONFIG of %u bytes at %u refused", vu_name(c),
		     cfg->size, cfg->offset);
		return -EPERM;
	}
	c->blk->wce = cfg->region[0];
	vlog(LOG_INFO, "[%s] guest set write cache %s", vu_name(c), c->blk->wce ? "on" : "off");
	return VU_OK;
}

#define SIZE(t) .min_size = sizeof(t), .max_size = sizeof(t)
#define SIZES(lo, hi) .min_size = (lo), .max_size = (hi)
#define NONE SIZES(0, 0)
#define VRING_STATE SIZE(struct vu_vring_state), .vring = true
#define VRING_FD SIZE(uint64_t), .vring_fd = true

static const struct vu_handler handlers[VU_REQUEST_MAX] = {
	[VU_GET_FEATURES] = { .name = "GET_FEATURES",
		.fn = h_get_features, NONE },
	[VU_SET_FEATURES] = { .name = "SET_FEATURES",
		.fn = h_set_features, SIZE(uint64_t), .commit = commit_features,
		.quiesce = VU_Q_ALL },
	[VU_SET_OWNER] = { .name = "SET_OWNER",
		.fn = h_set_owner, NONE },
	[VU_RESET_OWNER] = { .name = "RESET_OWNER",
		.fn = h_reset, NONE },
	[VU_SET_MEM_TABLE] = { .name = "SET_MEM_TABLE",
		.fn = h_set_mem_table, SIZES(offsetof(struct vu_memory, regions),
		sizeof(struct vu_memory)), .may_have_fds = true, .commit = vu_swap_mem,
		.quiesce = VU_Q_ALL },
	[VU_SET_LOG_BASE] = { .name = "SET_LOG_BASE",
		.fn = h_set_log_base, SIZES(16, 16),
		.may_have_fds = true, .commit = vu_swap_log, .quiesce = VU_Q_ALL },
	[VU_SET_LOG_FD] = { .name = "SET_LOG_FD",
		.fn = h_set_log_fd, SIZES(0, sizeof(uint64_t)), .may_have_fds = true },
	[VU_SET_VRING_NUM] = { .name = "SET_VRING_NUM",
		.fn = h_set_vring_num, VRING_STATE },
	[VU_SET_VRING_ADDR] = { .name = "SET_VRING_ADDR",
		.fn = h_set_vring_addr, SIZE(struct vu_vring_addr), .vring = true,
		.quiesce = VU_Q_RING },
	[VU_SET_VRING_BASE] = { .name = "SET_VRING_BASE",
		.fn = h_set_vring_base, VRING_STATE },
	[VU_GET_VRING_BASE] = { .name = "GET_VRING_BASE",
		.fn = h_get_vring_base, VRING_STATE },
	[VU_SET_VRING_KICK] = { .name = "SET_VRING_KICK",
		.fn = h_set_vring_kick, VRING_FD },
	[VU_SET_VRING_CALL] = { .name = "SET_VRING_CALL",
		.fn = h_set_vring_call, VRING_FD },
	[VU_SET_VRING_ERR] = { .name = "SET_VRING_ERR",
		.fn = h_set_vring_err, VRING_FD },
	[VU_GET_PROTOCOL_FEATURES] = { .name = "GET_PROTOCOL_FEATURES",
		.fn = h_get_protocol_features, NONE },
	[VU_SET_PROTOCOL_FEATURES] = { .name = "SET_PROTOCOL_FEATURES",
		.fn = h_set_protocol_features, SIZE(uint64_t) },
	[VU_GET_QUEUE_NUM] = { .name = "GET_QUEUE_NUM",
		.fn = h_get_queue_num, NONE },
	[VU_SET_VRING_ENABLE] = { .name = "SET_VRING_ENABLE",
		.fn = h_set_vring_enable, VRING_STATE },
	[VU_SEND_RARP] = { .name = "SEND_RARP" },
	[VU_NET_SET_MTU] = { .name = "NET_SET_MTU" },
	[VU_SET_BACKEND_REQ_FD] = { .name = "SET_BACKEND_REQ_FD",
		.fn = h_set_backend_req_fd, NONE, .may_have_fds = true },
	[VU_IOTLB_MSG] = { .name = "IOTLB_MSG" },
	[VU_SET_VRING_ENDIAN] = { .name = "SET_VRING_ENDIAN" },
	[VU_GET_CONFIG] = { .name = "GET_CONFIG",
		.fn = h_get_config, SIZES(offsetof(struct vu_config, region),
		sizeof(struct vu_config)) },
	[VU_SET_CONFIG] = { .name = "SET_CONFIG",
		.fn = h_set_config, SIZES(offsetof(struct vu_config, region),
		sizeof(struct vu_config)) },
	[VU_CREATE_CRYPTO_SESSION] = { .name = "CREATE_CRYPTO_SESSION" },
	[VU_CLOSE_CRYPTO_SESSION] = { .name = "CLOSE_CRYPTO_SESSION" },
	[VU_POSTCOPY_ADVISE] = { .name = "POSTCOPY_ADVISE" },
	[VU_POSTCOPY_LISTEN] = { .name = "POSTCOPY_LISTEN" },
	[VU_POSTCOPY_END] = { .name = "POSTCOPY_END" },
	/* 20 bytes on the wire; QEMU sends the padded C struct (24) */
	[VU_GET_INFLIGHT_FD] = { .name = "GET_INFLIGHT_FD",
		.fn = h_get_inflight_fd, SIZES(20, sizeof(struct vu_inflight)),
		.commit = vu_swap_inflight, .quiesce = VU_Q_ALL },
	[VU_SET_INFLIGHT_FD] = { .name = "SET_INFLIGHT_FD",
		.fn = h_set_inflight_fd, SIZES(20, sizeof(struct vu_inflight)),
		.may_have_fds = true, .commit = vu_swap_inflight, .quiesce = VU_Q_ALL },
	[VU_GPU_SET_SOCKET] = { .name = "GPU_SET_SOCKET" },
	[VU_RESET_DEVICE] = { .name = "RESET_DEVICE",
		.fn = h_reset, NONE },
	[VU_VRING_KICK] = { .name = "VRING_KICK" },
	[VU_GET_MAX_MEM_SLOTS] = { .name = "GET_MAX_MEM_SLOTS",
		.fn = h_get_max_mem_slots, NONE },
	[VU_ADD_MEM_REG] = { .name = "ADD_MEM_REG",
		.fn = h_add_mem_reg, SIZE(struct vu_mem_reg), .may_have_fds = true,
		.commit = vu_swap_mem, .quiesce = VU_Q_ALL },
	[VU_REM_MEM_REG] = { .name = "REM_MEM_REG",
		.fn = h_rem_mem_reg, SIZE(struct vu_mem_reg), .may_have_fds = true,
		.commit = vu_swap_mem, .quiesce = VU_Q_ALL },
	[VU_SET_STATUS] = { .name = "SET_STATUS",
		.fn = h_set_status, SIZE(uint64_t) },
	[VU_GET_STATUS] = { .name = "GET_STATUS",
		.fn = h_get_status, NONE },
};

/* --- dispatcher ----------------------------------------------------------- */

static int run_commit(struct vu_conn *c, void *arg)
{
	const struct vu_handler *h = arg;
	return h->commit(c);
}

const char *vu_request_name(uint32_t req)
{
	if (req < VU_REQUEST_MAX && handlers[req].name)
		return handlers[req].name;
	return "UNKNOWN";
}

static int send_reply(struct vu_conn *c, struct vu_msg *m)
{
	/* A reply fd is sent, not given away: we keep our copy.  The fds
	 * that came with the request stay in m for the dispatcher to close. */
	int rfd = c->reply_fd, rc;

	c->reply_fd = -1;
	m->hdr.flags = VU_VERSION | VU_FLAG_REPLY;
	rc = vu_send(c->fd, m, &rfd, rfd >= 0 ? 1 : 0);
	if (rc < 0)
		snprintf(c->err, sizeof(c->err), "cannot send the reply to %s: %s",
			 vu_request_name(m->hdr.request), strerror(-rc));
	return rc;
}

/* The running rings a request stops (and, for the VU_Q_* ones, restarts). */
static uint64_t rings_to_stop(const struct vu_conn *c, const struct vu_handler *h,
			      const struct vu_msg *m)
{
	uint64_t all = vu_attached_mask(c), one = BIT(m->payload.state.index % 64);

	switch (m->hdr.request) {
	case VU_GET_VRING_BASE:
		return one & all;
	case VU_SET_VRING_ENABLE:
		return m->payload.state.num == 0 ? one & all : 0;
	case VU_RESET_OWNER:
	case VU_RESET_DEVICE:
		return all;
	}
	if (h->quiesce == VU_Q_RING)
		return one & all;
	if (h->quiesce == VU_Q_ALL)
		return all;
	return 0;
}

/* Start again the rings a parked VU_Q_* request stopped. */
static int restart_rings(struct vu_conn *c)
{
	uint64_t mask = c->restart_mask;
	int rc = 0;

	c->restart_mask = 0;
	for (unsigned i = 0; i < VDEV_MAX_QUEUES && rc == 0; i++)
		if (mask & BIT(i))
			rc = vu_ring_start(c, &c->blk->vqs[i]);
	return rc;
}

static int check_shape(struct vu_conn *c, const struct vu_handler *h, struct vu_msg *m)
{
	uint32_t req = m->hdr.request;
	unsigned idx;

	if (m->hdr.size < h->min_size || m->hdr.size > h->max_size) {
		snprintf(c->err, sizeof(c->err), "%s with a payload of %u bytes",
			 vu_request_name(req), m->hdr.size);
		return -EINVAL;
	}
	if (h->vring_fd) {
		/* u64 index | NOFD, and exactly the fd that flag promises */
		uint64_t v = m->payload.u64;
		unsigned want = (v & VU_VRING_NOFD_MASK) ? 0 : 1;

		if (v & ~(uint64_t)(VU_VRING_IDX_MASK | VU_VRING_NOFD_MASK) || m->nfds != want) {
			snprintf(c->err, sizeof(c->err), "%s: value 0x%llx with %u fds",
				 vu_request_name(req), (unsigned long long)v, m->nfds);
			return -EINVAL;
		}
	} else if (m->nfds && !h->may_have_fds) {
		snprintf(c->err, sizeof(c->err), "%s came with %u unexpected fds",
			 vu_request_name(req), m->nfds);
		return -EINVAL;
	}
	if (h->vring || h->vring_fd) {
		idx = h->vring_fd ? m->payload.u64 & VU_VRING_IDX_MASK : m->payload.state.index;
		if (idx >= c->blk->params.queues) {
			snprintf(c->err, sizeof(c->err), "%s for queue %u; the device has %u",
				 vu_request_name(req), idx, c->blk->params.queues);
			return -EINVAL;
		}
	}
	return 0;
}

int vu_dispatch(struct vu_conn *c, struct vu_msg *m)
{
	uint32_t req = m->hdr.request;
	const struct vu_handler *h = req < VU_REQUEST_MAX ? &handlers[req] : NULL;
	bool need_reply = m->hdr.flags & VU_FLAG_NEED_REPLY;
	int rc;

	/* The payload past what arrived is never read: clear a little so a
	 * short fixed-size payload cannot expose the previous message. */
	if (m->hdr.size < sizeof(struct vu_vring_addr))
		memset(m->payload.bytes + m->hdr.size, 0,
		       sizeof(struct vu_vring_addr) - m->hdr.size);

	if (log_enabled(LOG_DEBUG))
		vlog(LOG_DEBUG, "[%s] %s (%u) size %u flags 0x%x fds %u", vu_name(c),
		     vu_request_name(req), req, m->hdr.size, m->hdr.flags, m->nfds);

	if ((m->hdr.flags & VU_FLAG_VERSION_MASK) != VU_VERSION) {
		snprintf(c->err, sizeof(c->err), "message with protocol version %u",
			 m->hdr.flags & VU_FLAG_VERSION_MASK);
		rc = -EPROTO;
		goto out;
	}
	if (!h || !h->fn) {
		snprintf(c->err, sizeof(c->err), "unsupported request %s (%u)",
			 vu_request_name(req), req);
		rc = -EOPNOTSUPP;
		goto out;
	}
	rc = check_shape(c, h, m);
	if (rc < 0)
		goto out;
	if ((req == VU_SET_VRING_CALL || req == VU_SET_VRING_ERR) && !vu_owns_rings(c)) {
		vu_hold_vring_fd(c, m);
		rc = VU_OK;
		goto ack;
	}
	if (h->vring || h->vring_fd) {
		rc = vu_claim_rings(c);
		if (rc < 0)
			goto out;
	}

	/* Rings to stop first: the engine drains them while this thread
	 * serves the other devices, and the message waits, parked. */
	if (!c->parked && c->detach_fd >= 0) {
		uint64_t stop = rings_to_stop(c, h, m);

		if (stop) {
			if (h->quiesce != VU_Q_NONE)
				c->restart_mask = stop;
			vu_detach_start(c, stop);
			if (!vu_detaches_done(c)) {
				c->parked = true;
				return 0;       /* m (and its fds) kept for vu_resume */
			}
		}
	}
	c->parked = false;

	switch (h->quiesce) {
	case VU_Q_NONE:
		rc = h->fn(c, m);
		break;
	case VU_Q_RING: {
		/* every VU_Q_RING request starts with a vring index (check_shape) */
		struct vq *vq = &c->blk->vqs[m->payload.state.index];
		bool was = vq->attached;

		vu_ring_stop(c, vq);
		rc = h->fn(c, m);
		if (rc >= 0 && was) {
			int rc2 = vu_ring_start(c, vq);
			if (rc2 < 0)
				rc = rc2;
		}
		break;
	}
	case VU_Q_ALL:
		rc = h->fn(c, m);           /* stages what commit applies */
		if (rc >= 0) {
			int rc2 = vu_with_rings_stopped(c, run_commit, (void *)h);
			if (rc2 < 0) {
				c->reply_fd = -1;       /* no reply goes out */
				rc = rc2;
			}
		}
		break;
	}
	if (c->restart_mask) {
		int rc2 = restart_rings(c);
		if (rc2 < 0 && rc >= 0)
			rc = rc2;
	}
	if (rc == VU_REPLY) {
		rc = send_reply(c, m);
		goto out;
	}
ack:
	if (need_reply && vu_has_protocol(c, VU_PROTOCOL_F_REPLY_ACK)) {
		bool refused = rc < 0;

		/* The front-end learns of the failure and goes on. */
		if (refused)
			vlog(LOG_WARNING, "[%s] %s failed: %s", vu_name(c), vu_request_name(req), c->err);
		m->payload.u64 = refused ? 1 : 0;
		m->hdr.size = sizeof(uint64_t);
		rc = send_reply(c, m);
		/* Told and done with: not the reason of a later disconnect. */
		if (refused && rc >= 0)
			c->err[0] = '\0';
	}
out:
	vu_msg_close_fds(m);
	return rc < 0 ? rc : 0;
}

void vu_conn_init(struct vu_conn *c, int fd, struct vblk *blk, struct engine *eng,
		  unsigned thread_hint)
{
	memset(c, 0, offsetof(struct vu_conn, rx));
	c->rx_len = 0;
	c->rx.nfds = 0;
	c->err[0] = '\0';
	c->fd = fd;
	c->blk = blk;
	c->eng = eng;
	c->thread_hint = thread_hint;
	c->inflight_fd = -1;
	c->reply_fd = -1;
	c->backend_fd = -1;
	c->log_fd = -1;
	c->detach_fd = -1;
	for (unsigned i = 0; i < VDEV_MAX_QUEUES; i++)
		c->held_call[i] = c->held_err[i] = -1;
	/* The first front-end owns the queues from the start; a second one
	 * claims them (vu_claim_rings). */
	if (!blk->fe_owner)
		blk->fe_owner = c;
}

int vu_resume(struct vu_conn *c)
{
	if (!vu_detaches_done(c))
		return 1;
	if (c->closing || !c->parked)
		return 0;
	return vu_dispatch(c, &c->rx);
}

bool vu_conn_close_start(struct vu_conn *c)
{
	c->closing = true;
	c->parked = false;
	c->restart_mask = 0;
	vu_msg_close_fds(&c->rx);
	if (c->detach_fd >= 0)
		vu_detach_start(c, vu_attached_mask(c));
	return vu_detaches_done(c);
}

struct quiesce_args {
	int (*fn)(void *arg);
	void *arg;
};

static int run_quiesced(struct vu_conn *c, void *arg)
{
	struct quiesce_args *q = arg;
	return q->fn(q->arg);
}

int vu_conn_quiesce(struct vu_conn *c, int (*fn)(void *arg), void *arg)
{
	struct quiesce_args q = { fn, arg };
	return vu_with_rings_stopped(c, run_quiesced, &q);
}

bool vu_config_changed(struct vu_conn *c)
{
	struct vu_msg m = { .hdr = { .request = VU_BACKEND_CONFIG_CHANGE_MSG,
				     .flags = VU_VERSION, .size = 0 } };
	int rc;

	if (c->backend_fd < 0 || !vu_has_protocol(c, VU_PROTOCOL_F_BACKEND_REQ) ||
	    !vu_has_protocol(c, VU_PROTOCOL_F_CONFIG))
		return false;
	/* No NEED_REPLY: the front-end answers a config change by asking for
	 * the config (GET_CONFIG) on the main channel, which this very thread
	 * serves; waiting here for its reply would deadlock both. */
	rc = vu_send(c->backend_fd, &m, NULL, 0);
	if (rc < 0) {
		vlog(LOG_WARNING, "[%s] cannot announce the config change: %s", vu_name(c),
		     strerror(-rc));
		return false;
	}
	return true;
}

void vu_conn_teardown(struct vu_conn *c)
{
	vu_reset_device(c);
	if (c->backend_fd >= 0)
		close(c->backend_fd);
	c->backend_fd = -1;
	c->status = 0;
	mem_table_unmap(c->mem);
	c->mem = NULL;
	vu_inflight_unmap(c);
	vu_log_teardown(c);
	vu_drop_held_fds(c);
	vu_msg_close_fds(&c->rx);
	c->rx_len = 0;
}

