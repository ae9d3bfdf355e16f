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
 * starts it again. */
#include "vu.h"

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

#define BIT(n) (1ULL << (n))

#define VU_PROTOCOL_FEATURES (BIT(VU_PROTOCOL_F_MQ) | BIT(VU_PROTOCOL_F_REPLY_ACK) | \
			      BIT(VU_PROTOCOL_F_BACKEND_REQ) | BIT(VU_PROTOCOL_F_CONFIG) | \
			      BIT(VU_PROTOCOL_F_RESET_DEVICE) | BIT(VU_PROTOCOL_F_INFLIGHT_SHMFD) | \
			      BIT(VU_PROTOCOL_F_CONFIGURE_MEM_SLOTS) | BIT(VU_PROTOCOL_F_STATUS))

/* Handler results besides -errno. */
#define VU_OK     0     /* done; REPLY_ACK (if asked) says success */
#define VU_REPLY  1     /* m now holds the reply payload */

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

static uint64_t offered_features(const struct vu_conn *c)
{
	return blkcfg_features(c->blk) | BIT(VU_F_PROTOCOL_FEATURES);
}

static bool has_protocol(const struct vu_conn *c, unsigned bit)
{
	/* Protocol features are in force from SET_PROTOCOL_FEATURES on, which
	 * front-ends send before SET_FEATURES (QEMU does). */
	return c->protocol_features & BIT(bit);
}

static const char *name(const struct vu_conn *c)
{
	return c->blk->name;
}

/* --- ring start/stop ------------------------------------------------------ */

static bool vq_can_run(const struct vu_conn *c, const struct vq *vq)
{
	return vq->started && vq->enabled && c->mem && vq->num;
}

static int vq_start(struct vu_conn *c, struct vq *vq)
{
	int rc;

	if (vq->attached || !vq_can_run(c, vq))
		return 0;
	vq->mem = c->mem;
	vq->event_idx = c->features & BIT(VIRTIO_RING_F_EVENT_IDX);
	rc = vblk_queue_prepare(c->blk, vq, c->err, sizeof(c->err));
	if (rc < 0)
		return rc;
	vq->infl = NULL;
	if (c->inflight_map && vq->index < c->inflight_nq) {
		if (c->inflight_qs == vq->num) {
			struct fault_scope fs;
			unsigned n = 0;

			vq->infl = (struct vq_inflight *)((uint8_t *)c->inflight_map +
							  vq->index * vq_inflight_size(vq->num));
			/* Both the region and the ring are the front-end's
			 * files: they may have been truncated under us. */
			if (FAULT_TRY(&fs))
				n = vq_inflight_recover(vq);
			else
				rc = -EFAULT;
			fault_end(&fs);
			if (rc < 0) {
				vq->infl = NULL;
				snprintf(c->err, sizeof(c->err),
					 "queue %u: inflight region or ring vanished (truncated by the front-end)",
					 vq->index);
				return rc;
			}
			if (n)
				vlog(LOG_INFO, "[%s q%u] resubmitting %u requests that were in flight",
				     name(c), vq->index, n);
		} else {
			vlog(LOG_WARNING, "[%s q%u] inflight region is for queue size %u, not %u: not tracked",
			     name(c), vq->index, c->inflight_qs, vq->num);
		}
	}
	atomic_store(&vq->broken, false);
	rc = eng_attach(c->eng, vq, c->thread_hint + vq->index);
	if (rc < 0)
		snprintf(c->err, sizeof(c->err), "queue %u: engine refused it", vq->index);
	else
		vlog(LOG_DEBUG, "[%s q%u] started: size %u, base %u%s", name(c), vq->index,
		     vq->num, vq->last_avail, vq->event_idx ? ", event_idx" : "");
	return rc;
}

static void vq_stop(struct vu_conn *c, struct vq *vq)
{
	if (!vq->attached)
		return;
	eng_detach(c->eng, vq);
	vlog(LOG_DEBUG, "[%s q%u] stopped at %u", name(c), vq->index, vq->last_avail);
}

/* Run fn with every running ring stopped, then restart them. */
static int with_rings_stopped(struct vu_conn *c, int (*fn)(struct vu_conn *, void *),
			      void *arg)
{
	bool was[VDEV_MAX_QUEUES];
	int rc, rc2 = 0;

	for (unsigned i = 0; i < VDEV_MAX_QUEUES; i++) {
		was[i] = c->blk->vqs[i].attached;
		vq_stop(c, &c->blk->vqs[i]);
	}
	rc = fn(c, arg);
	for (unsigned i = 0; i < VDEV_MAX_QUEUES; i++)
		if (was[i] && rc2 == 0)
			rc2 = vq_start(c, &c->blk->vqs[i]);
	return rc ? rc : rc2;
}

static void vq_close_fds(struct vq *vq)
{
	if (vq->kick_fd >= 0)
		close(vq->kick_fd);
	if (vq->call_fd >= 0)
		close(vq->call_fd);
	if (vq->err_fd >= 0)
		close(vq->err_fd);
	vq->kick_fd = vq->call_fd = vq->err_fd = -1;
}

static void reset_device(struct vu_conn *c)
{
	for (unsigned i = 0; i < VDEV_MAX_QUEUES; i++) {
		struct vq *vq = &c->blk->vqs[i];
		vq_stop(c, vq);
		vq_close_fds(vq);
		vblk_queue_reset(c->blk, vq);
	}
	c->features = 0;
	c->features_set = false;
}

/* --- handlers ------------------------------------------------------------- */

static int h_get_features(struct vu_conn *c, struct vu_msg *m)
{
	m->payload.u64 = offered_features(c);
	m->hdr.size = sizeof(uint64_t);
	return VU_REPLY;
}

static int h_set_features(struct vu_conn *c, struct vu_msg *m)
{
	uint64_t f = m->payload.u64, extra = f & ~offered_features(c);

	if (extra) {
		snprintf(c->err, sizeof(c->err), "front-end set features 0x%llx we never offered",
			 (unsigned long long)extra);
		return -EINVAL;
	}
	c->features = f;
	c->features_set = true;
	/* Without PROTOCOL_FEATURES rings are enabled as soon as they start. */
	if (!(f & BIT(VU_F_PROTOCOL_FEATURES)))
		for (unsigned i = 0; i < VDEV_MAX_QUEUES; i++)
			c->blk->vqs[i].enabled = true;
	return VU_OK;
}

static int h_set_owner(struct vu_conn *c, struct vu_msg *m)
{
	c->owner = true;
	return VU_OK;
}

static int h_reset(struct vu_conn *c, struct vu_msg *m)
{
	reset_device(c);
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
static int swap_mem(struct vu_conn *c)
{
	struct mem_table *old = c->mem;

	c->mem = c->staged_mem;
	c->staged_mem = NULL;
	for (unsigned i = 0; i < VDEV_MAX_QUEUES; i++)
		c->blk->vqs[i].mem = c->mem;
	/* No ring runs now: nobody reads the old table any more. */
	mem_table_unmap(old);
	return 0;
}

static int h_set_mem_table(struct vu_conn *c, struct vu_msg *m)
{
	struct vu_memory *mem = &m->payload.memory;
	struct mem_table *t;
	int rc;

	if (mem->nregions > MEM_MAX_REGIONS ||
	    m->hdr.size != offsetof(struct vu_memory, regions) +
			   mem->nregions * sizeof(struct mem_region_desc)) {
		snprintf(c->err, sizeof(c->err),
			 "SET_MEM_TABLE: %u regions do not match a payload of %u bytes",
			 mem->nregions, m->hdr.size);
		return -EINVAL;
	}
	if (m->nfds != mem->nregions) {
		snprintf(c->err, sizeof(c->err), "SET_MEM_TABLE: %u regions but %u fds",
			 mem->nregions, m->nfds);
		return -EINVAL;
	}
	rc = mem_table_map(mem->regions, m->fds, mem->nregions, &t, c->err, sizeof(c->err));
	if (rc < 0)
		return rc;
	/* The mappings hold the memory; the fds are not needed any more
	 * (the dispatcher closes them). */
	for (unsigned i = 0; i < t->nregions; i++)
		vlog(LOG_DEBUG, "[%s] region %u: gpa 0x%llx size 0x%llx uva 0x%llx", name(c), i,
		     (unsigned long long)t->regions[i].gpa,
		     (unsigned long long)t->regions[i].size,
		     (unsigned long long)t->regions[i].uva);
	c->staged_mem = t;
	return VU_OK;
}

static int h_get_max_mem_slots(struct vu_conn *c, struct vu_msg *m)
{
	m->payload.u64 = MEM_MAX_SLOTS;
	m->hdr.size = sizeof(uint64_t);
	return VU_REPLY;
}

/* ADD_MEM_REG: the new table is built (the region mapped, checked against
 * the others) while the rings run; only the swap stops them. */
static int h_add_mem_reg(struct vu_conn *c, struct vu_msg *m)
{
	const struct mem_region_desc *d = &m->payload.mem_reg.region;
	struct mem_table *t;
	int rc;

	if (m->nfds != 1) {
		snprintf(c->err, sizeof(c->err), "ADD_MEM_REG with %u fds", m->nfds);
		return -EINVAL;
	}
	rc = mem_table_add(c->mem, d, m->fds[0], &t, c->err, sizeof(c->err));
	if (rc < 0)
		return rc;
	vlog(LOG_DEBUG, "[%s] add region: gpa 0x%llx size 0x%llx uva 0x%llx (%u regions)",
	     name(c), (unsigned long long)d->guest_phys_addr,
	     (unsigned long long)d->memory_size, (unsigned long long)d->userspace_addr,
	     t->nregions);
	c->staged_mem = t;
	return VU_OK;
}

/* REM_MEM_REG: no request in flight may still use the region, so its
 * mapping goes only after the swap, with every ring drained. */
static int h_rem_mem_reg(struct vu_conn *c, struct vu_msg *m)
{
	const struct mem_region_desc *d = &m->payload.mem_reg.region;
	struct mem_table *t;
	int rc;

	/* No fd is due; one is tolerated (and closed) as the spec allows. */
	if (m->nfds > 1) {
		snprintf(c->err, sizeof(c->err), "REM_MEM_REG with %u fds", m->nfds);
		return -EINVAL;
	}
	rc = mem_table_remove(c->mem, d, &t, c->err, sizeof(c->err));
	if (rc < 0)
		return rc;
	vlog(LOG_DEBUG, "[%s] remove region: gpa 0x%llx size 0x%llx (%u regions left)",
	     name(c), (unsigned long long)d->guest_phys_addr,
	     (unsigned long long)d->memory_size, t->nregions);
	c->staged_mem = t;
	return VU_OK;
}

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
	vlog(LOG_DEBUG, "[%s] device status 0x%02x", name(c), c->status);
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

static int h_set_vring_num(struct vu_conn *c, struct vu_msg *m)
{
	struct vq *vq = &c->blk->vqs[m->payload.state.index];
	uint32_t num = m->payload.state.num;

	if (num == 0 || num > VQ_MAX_SIZE || (num & (num - 1))) {
		snprintf(c->err, sizeof(c->err),
			 "queue %u: size %u is not a power of two up to %d",
			 vq->index, num, VQ_MAX_SIZE);
		return -EINVAL;
	}
	if (vq->attached) {
		snprintf(c->err, sizeof(c->err), "queue %u: size changed while running", vq->index);
		return -EBUSY;
	}
	if (vq->num != num)
		vblk_queue_release(c->blk, vq); /* slots are sized by num */
	vq->num = num;
	return VU_OK;
}

/* VU_Q_RING: the ring is stopped meanwhile. */
static int h_set_vring_addr(struct vu_conn *c, struct vu_msg *m)
{
	const struct vu_vring_addr *a = &m->payload.addr;
	struct vq *vq = &c->blk->vqs[a->index];

	vq->desc_uva = a->desc_user_addr;
	vq->used_uva = a->used_user_addr;
	vq->avail_uva = a->avail_user_addr;
	return VU_OK;
}

static int h_set_vring_base(struct vu_conn *c, struct vu_msg *m)
{
	struct vq *vq = &c->blk->vqs[m->payload.state.index];

	if (m->payload.state.num > 0xffff) {
		snprintf(c->err, sizeof(c->err), "queue %u: base %u out of range",
			 vq->index, m->payload.state.num);
		return -EINVAL;
	}
	if (vq->attached) {
		snprintf(c->err, sizeof(c->err), "queue %u: base changed while running", vq->index);
		return -EBUSY;
	}
	vq->last_avail = m->payload.state.num;
	return VU_OK;
}

static int h_get_vring_base(struct vu_conn *c, struct vu_msg *m)
{
	struct vq *vq = &c->blk->vqs[m->payload.state.index];

	vq_stop(c, vq);
	vq->started = false;
	if (vq->kick_fd >= 0)
		close(vq->kick_fd);
	vq->kick_fd = -1;
	vq->kick_nofd = false;
	m->payload.state.num = vq->last_avail;
	m->hdr.size = sizeof(m->payload.state);
	return VU_REPLY;
}

/* Take the fd of a SET_VRING_KICK/CALL/ERR message (or none with NOFD). */
static int take_vring_fd(struct vu_msg *m)
{
	int fd;
	if (m->payload.u64 & VU_VRING_NOFD_MASK)
		return -1;
	fd = m->fds[0];
	m->fds[0] = -1;
	return fd;
}

static int h_set_vring_kick(struct vu_conn *c, struct vu_msg *m)
{
	struct vq *vq = &c->blk->vqs[m->payload.u64 & VU_VRING_IDX_MASK];

	vq_stop(c, vq);
	if (vq->kick_fd >= 0)
		close(vq->kick_fd);
	vq->kick_fd = take_vring_fd(m);
	vq->kick_nofd = vq->kick_fd < 0;
	vq->started = true;
	return vq_start(c, vq);
}

static int replace_fd(struct vu_conn *c, struct vq *vq, int *slot, struct vu_msg *m)
{
	bool was = vq->attached;

	vq_stop(c, vq);
	if (*slot >= 0)
		close(*slot);
	*slot = take_vring_fd(m);
	return was ? vq_start(c, vq) : 0;
}

static int h_set_vring_call(struct vu_conn *c, struct vu_msg *m)
{
	struct vq *vq = &c->blk->vqs[m->payload.u64 & VU_VRING_IDX_MASK];
	return replace_fd(c, vq, &vq->call_fd, m);
}

static int h_set_vring_err(struct vu_conn *c, struct vu_msg *m)
{
	struct vq *vq = &c->blk->vqs[m->payload.u64 & VU_VRING_IDX_MASK];
	return replace_fd(c, vq, &vq->err_fd, m);
}

static int h_set_vring_enable(struct vu_conn *c, struct vu_msg *m)
{
	struct vq *vq = &c->blk->vqs[m->payload.state.index];

	if (m->payload.state.num > 1) {
		snprintf(c->err, sizeof(c->err), "queue %u: enable value %u", vq->index,
			 m->payload.state.num);
		return -EINVAL;
	}
	vq->enabled = m->payload.state.num;
	if (!vq->enabled) {
		vq_stop(c, vq);
		return VU_OK;
	}
	return vq_start(c, vq);
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
		vlog(LOG_WARNING, "[%s] SET_CONFIG of %u bytes at %u refused", name(c),
		     cfg->size, cfg->offset);
		return -EPERM;
	}
	c->blk->wce = cfg->region[0];
	vlog(LOG_INFO, "[%s] guest set write cache %s", name(c), c->blk->wce ? "on" : "off");
	return VU_OK;
}

static void inflight_unmap(struct vu_conn *c)
{
	if (c->inflight_map)
		munmap(c->inflight_map, c->inflight_len);
	if (c->inflight_fd >= 0)
		close(c->inflight_fd);
	c->inflight_map = NULL;
	c->inflight_fd = -1;
	for (unsigned i = 0; i < VDEV_MAX_QUEUES; i++)
		c->blk->vqs[i].infl = NULL;
}

static int check_inflight_shape(struct vu_conn *c, const struct vu_inflight *in)
{
	if (in->num_queues == 0 || in->num_queues > VDEV_MAX_QUEUES ||
	    in->queue_size == 0 || in->queue_size > VQ_MAX_SIZE) {
		snprintf(c->err, sizeof(c->err), "inflight region for %u queues of %u",
			 in->num_queues, in->queue_size);
		return -EINVAL;
	}
	return 0;
}

/* Commit of GET/SET_INFLIGHT_FD: replace the inflight region (every ring
 * stopped: the engine writes to it). */
static int swap_inflight(struct vu_conn *c)
{
	struct vu_inflight_set *s = &c->staged_infl;

	inflight_unmap(c);
	c->inflight_map = s->map;
	c->inflight_len = s->len;
	c->inflight_fd = s->fd;
	c->inflight_nq = s->nq;
	c->inflight_qs = s->qs;
	*s = (struct vu_inflight_set){ .fd = -1 };
	return 0;
}

static int h_get_inflight_fd(struct vu_conn *c, struct vu_msg *m)
{
	struct vu_inflight *in = &m->payload.inflight;
	size_t len;
	void *p;
	int fd, rc;

	rc = check_inflight_shape(c, in);
	if (rc < 0)
		return rc;
	len = vq_inflight_size(in->queue_size) * in->num_queues;
	fd = memfd_create("vhostd-inflight", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0 || ftruncate(fd, len) < 0) {
		rc = -errno;
		if (fd >= 0)
			close(fd);
		snprintf(c->err, sizeof(c->err), "cannot make an inflight region: %s",
			 strerror(-rc));
		return rc;
	}
	/* The front-end keeps it for our successor: it must not shrink. */
	fcntl(fd, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL);
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		rc = -errno;
		close(fd);
		return rc;
	}
	for (unsigned i = 0; i < in->num_queues; i++) {
		struct vq_inflight *q = (struct vq_inflight *)((uint8_t *)p +
							       i * vq_inflight_size(in->queue_size));
		q->version = 1;
		q->desc_num = in->queue_size;
	}
	c->staged_infl = (struct vu_inflight_set){ p, len, fd, in->num_queues, in->queue_size };
	in->mmap_size = len;
	in->mmap_offset = 0;
	c->reply_fd = fd;
	m->hdr.size = sizeof(*in);
	return VU_REPLY;
}

static int h_set_inflight_fd(struct vu_conn *c, struct vu_msg *m)
{
	struct vu_inflight *in = &m->payload.inflight;
	struct vu_inflight_set s;
	struct stat st;
	size_t need;
	int rc;

	rc = check_inflight_shape(c, in);
	if (rc < 0)
		return rc;
	if (m->nfds != 1) {
		snprintf(c->err, sizeof(c->err), "SET_INFLIGHT_FD with %u fds", m->nfds);
		return -EINVAL;
	}
	need = vq_inflight_size(in->queue_size) * in->num_queues;
	if (in->mmap_size < need || in->mmap_size > (1u << 30) ||
	    in->mmap_offset > UINT64_MAX - in->mmap_size ||
	    fstat(m->fds[0], &st) < 0 || (uint64_t)st.st_size < in->mmap_offset + in->mmap_size) {
		snprintf(c->err, sizeof(c->err),
			 "inflight region of %llu bytes at %llu does not fit its file or %u queues of %u",
			 (unsigned long long)in->mmap_size, (unsigned long long)in->mmap_offset,
			 in->num_queues, in->queue_size);
		return -EINVAL;
	}
	/* mmap refuses an offset that is not page-aligned: that is an error
	 * of the front-end's too. */
	s.map = mmap(NULL, in->mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, m->fds[0],
		     in->mmap_offset);
	if (s.map == MAP_FAILED) {
		rc = -errno;
		snprintf(c->err, sizeof(c->err), "cannot map the inflight region: %s", strerror(-rc));
		return rc;
	}
	s.len = in->mmap_size;
	s.fd = m->fds[0];
	m->fds[0] = -1;
	s.nq = in->num_queues;
	s.qs = in->queue_size;
	c->staged_infl = s;
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
		.fn = h_set_features, SIZE(uint64_t) },
	[VU_SET_OWNER] = { .name = "SET_OWNER",
		.fn = h_set_owner, NONE },
	[VU_RESET_OWNER] = { .name = "RESET_OWNER",
		.fn = h_reset, NONE },
	[VU_SET_MEM_TABLE] = { .name = "SET_MEM_TABLE",
		.fn = h_set_mem_table, SIZES(offsetof(struct vu_memory, regions),
		sizeof(struct vu_memory)), .may_have_fds = true, .commit = swap_mem,
		.quiesce = VU_Q_ALL },
	[VU_SET_LOG_BASE] = { .name = "SET_LOG_BASE" },
	[VU_SET_LOG_FD] = { .name = "SET_LOG_FD" },
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
		.commit = swap_inflight, .quiesce = VU_Q_ALL },
	[VU_SET_INFLIGHT_FD] = { .name = "SET_INFLIGHT_FD",
		.fn = h_set_inflight_fd, SIZES(20, sizeof(struct vu_inflight)),
		.may_have_fds = true, .commit = swap_inflight, .quiesce = VU_Q_ALL },
	[VU_GPU_SET_SOCKET] = { .name = "GPU_SET_SOCKET" },
	[VU_RESET_DEVICE] = { .name = "RESET_DEVICE",
		.fn = h_reset, NONE },
	[VU_VRING_KICK] = { .name = "VRING_KICK" },
	[VU_GET_MAX_MEM_SLOTS] = { .name = "GET_MAX_MEM_SLOTS",
		.fn = h_get_max_mem_slots, NONE },
	[VU_ADD_MEM_REG] = { .name = "ADD_MEM_REG",
		.fn = h_add_mem_reg, SIZE(struct vu_mem_reg), .may_have_fds = true,
		.commit = swap_mem, .quiesce = VU_Q_ALL },
	[VU_REM_MEM_REG] = { .name = "REM_MEM_REG",
		.fn = h_rem_mem_reg, SIZE(struct vu_mem_reg), .may_have_fds = true,
		.commit = swap_mem, .quiesce = VU_Q_ALL },
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
		vlog(LOG_DEBUG, "[%s] %s (%u) size %u flags 0x%x fds %u", name(c),
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

	switch (h->quiesce) {
	case VU_Q_NONE:
		rc = h->fn(c, m);
		break;
	case VU_Q_RING: {
		/* every VU_Q_RING request starts with a vring index (check_shape) */
		struct vq *vq = &c->blk->vqs[m->payload.state.index];
		bool was = vq->attached;

		vq_stop(c, vq);
		rc = h->fn(c, m);
		if (rc >= 0 && was) {
			int rc2 = vq_start(c, vq);
			if (rc2 < 0)
				rc = rc2;
		}
		break;
	}
	case VU_Q_ALL:
		rc = h->fn(c, m);           /* stages what commit applies */
		if (rc >= 0) {
			int rc2 = with_rings_stopped(c, run_commit, (void *)h);
			if (rc2 < 0) {
				c->reply_fd = -1;       /* no reply goes out */
				rc = rc2;
			}
		}
		break;
	}
	if (rc == VU_REPLY) {
		rc = send_reply(c, m);
		goto out;
	}
	if (need_reply && has_protocol(c, VU_PROTOCOL_F_REPLY_ACK)) {
		bool refused = rc < 0;

		/* The front-end learns of the failure and goes on. */
		if (refused)
			vlog(LOG_WARNING, "[%s] %s failed: %s", name(c), vu_request_name(req), c->err);
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
	return with_rings_stopped(c, run_quiesced, &q);
}

bool vu_config_changed(struct vu_conn *c)
{
	struct vu_msg m = { .hdr = { .request = VU_BACKEND_CONFIG_CHANGE_MSG,
				     .flags = VU_VERSION, .size = 0 } };
	int rc;

	if (c->backend_fd < 0 || !has_protocol(c, VU_PROTOCOL_F_BACKEND_REQ) ||
	    !has_protocol(c, VU_PROTOCOL_F_CONFIG))
		return false;
	/* No NEED_REPLY: the front-end answers a config change by asking for
	 * the config (GET_CONFIG) on the main channel, which this very thread
	 * serves; waiting here for its reply would deadlock both. */
	rc = vu_send(c->backend_fd, &m, NULL, 0);
	if (rc < 0) {
		vlog(LOG_WARNING, "[%s] cannot announce the config change: %s", name(c),
		     strerror(-rc));
		return false;
	}
	return true;
}

void vu_conn_teardown(struct vu_conn *c)
{
	reset_device(c);
	if (c->backend_fd >= 0)
		close(c->backend_fd);
	c->backend_fd = -1;
	c->status = 0;
	mem_table_unmap(c->mem);
	c->mem = NULL;
	inflight_unmap(c);
	vu_msg_close_fds(&c->rx);
	c->rx_len = 0;
}
