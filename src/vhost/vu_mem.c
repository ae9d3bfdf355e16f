/* vhost-user guest memory: the memory table (SET_MEM_TABLE, or region by
 * region with ADD/REM_MEM_REG; prepared while the rings run, swapped with
 * them stopped) and the inflight region (GET/SET_INFLIGHT_FD).  Control
 * thread.  See vu_int.h. */
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

int vu_swap_mem(struct vu_conn *c)
{
	struct mem_table *old = c->mem;

	c->mem = c->staged_mem;
	c->staged_mem = NULL;
	if (vu_owns_rings(c))
		for (unsigned i = 0; i < VDEV_MAX_QUEUES; i++)
			c->blk->vqs[i].mem = c->mem;
	/* No ring runs now: nobody reads the old table any more. */
	mem_table_unmap(old);
	return 0;
}

int h_set_mem_table(struct vu_conn *c, struct vu_msg *m)
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
		vlog(LOG_DEBUG, "[%s] region %u: gpa 0x%llx size 0x%llx uva 0x%llx", vu_name(c), i,
		     (unsigned long long)t->regions[i].gpa,
		     (unsigned long long)t->regions[i].size,
		     (unsigned long long)t->regions[i].uva);
	c->staged_mem = t;
	return VU_OK;
}

int h_get_max_mem_slots(struct vu_conn *c, struct vu_msg *m)
{
	m->payload.u64 = MEM_MAX_SLOTS;
	m->hdr.size = sizeof(uint64_t);
	return VU_REPLY;
}

/* ADD_MEM_REG: the new table is built (the region mapped, checked against
 * the others) while the rings run; only the swap stops them. */
int h_add_mem_reg(struct vu_conn *c, struct vu_msg *m)
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
	     vu_name(c), (unsigned long long)d->guest_phys_addr,
	     (unsigned long long)d->memory_size, (unsigned long long)d->userspace_addr,
	     t->nregions);
	c->staged_mem = t;
	return VU_OK;
}

/* REM_MEM_REG: no request in flight may still use the region, so its
 * mapping goes only after the swap, with every ring drained. */
int h_rem_mem_reg(struct vu_conn *c, struct vu_msg *m)
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
	     vu_name(c), (unsigned long long)d->guest_phys_addr,
	     (unsigned long long)d->memory_size, t->nregions);
	c->staged_mem = t;
	return VU_OK;
}


/* --- inflight region -------------------------------------------------------- */

void vu_inflight_unmap(struct vu_conn *c)
{
	if (c->inflight_map)
		munmap(c->inflight_map, c->inflight_len);
	if (c->inflight_fd >= 0)
		close(c->inflight_fd);
	c->inflight_map = NULL;
	c->inflight_fd = -1;
	if (vu_owns_rings(c))
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
int vu_swap_inflight(struct vu_conn *c)
{
	struct vu_inflight_set *s = &c->staged_infl;

	vu_inflight_unmap(c);
	c->inflight_map = s->map;
	c->inflight_len = s->len;
	c->inflight_fd = s->fd;
	c->inflight_nq = s->nq;
	c->inflight_qs = s->qs;
	*s = (struct vu_inflight_set){ .fd = -1 };
	return 0;
}

int h_get_inflight_fd(struct vu_conn *c, struct vu_msg *m)
{
	struct vu_inflight *in = &m->payload.inflight;
	size_t len, stride;
	bool packed;
	void *p;
	int fd, rc;

	rc = check_inflight_shape(c, in);
	if (rc < 0)
		return rc;
	/* The layout follows the ring kind negotiated (QEMU sends
	 * SET_FEATURES before asking for the region). */
	packed = c->features & BIT(VIRTIO_F_RING_PACKED);
	stride = packed ? vq_inflight_packed_size(in->queue_size) : vq_inflight_size(in->queue_size);
	len = stride * in->num_queues;
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
	/* A packed queue's part stays version 0: it is laid out when its ring
	 * first starts, from the ring's positions (vq_inflight_recover). */
	for (unsigned i = 0; i < in->num_queues && !packed; i++) {
		struct vq_inflight *q = (struct vq_inflight *)((uint8_t *)p + i * stride);
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

int h_set_inflight_fd(struct vu_conn *c, struct vu_msg *m)
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
	/* At least a split region's size: whether it suits the ring kind is
	 * checked when a ring starts. */
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

