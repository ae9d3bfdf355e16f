/* vhost-user dirty logging for live migration (VHOST_F_LOG_ALL with
 * VHOST_USER_PROTOCOL_F_LOG_SHMFD): the log the front-end shares
 * (SET_LOG_BASE, prepared while the rings run, swapped with them stopped),
 * and whether the rings write to it.  The engine marks the pages
 * (vq_log_mark); this file only maps, swaps and unmaps.  Control thread.
 * See vu_int.h. */
#include "vu_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

/* A log bigger than this would describe more than 32 TiB of guest memory. */
#define VU_LOG_MAX (1ull << 30)

struct vu_log_payload {
	uint64_t mmap_size;
	uint64_t mmap_offset;
};
_Static_assert(sizeof(struct vu_log_payload) == 16, "log description");

void vu_log_free(struct vu_dirty_log *l)
{
	if (!l)
		return;
	munmap(l->map, l->maplen);
	free(l);
}

/* What a ring started now logs to: the log, while LOG_ALL is negotiated. */
const struct vq_log *vu_log_for_rings(const struct vu_conn *c)
{
	return c->log && (c->features & BIT(VU_F_LOG_ALL)) ? &c->log->log : NULL;
}

int h_set_log_base(struct vu_conn *c, struct vu_msg *m)
{
	struct vu_log_payload p;
	struct vu_dirty_log *l;
	struct stat st;
	void *map;

	memcpy(&p, m->payload.bytes, sizeof(p));
	if (!vu_has_protocol(c, VU_PROTOCOL_F_LOG_SHMFD)) {
		snprintf(c->err, sizeof(c->err), "SET_LOG_BASE without LOG_SHMFD negotiated");
		return -EINVAL;
	}
	if (m->nfds != 1) {
		snprintf(c->err, sizeof(c->err), "SET_LOG_BASE with %u fds", m->nfds);
		return -EINVAL;
	}
	if (p.mmap_size == 0 || p.mmap_size > VU_LOG_MAX || p.mmap_offset > UINT64_MAX - p.mmap_size) {
		snprintf(c->err, sizeof(c->err), "SET_LOG_BASE: size %llu at offset %llu",
			 (unsigned long long)p.mmap_size, (unsigned long long)p.mmap_offset);
		return -EINVAL;
	}
	if (fstat(m->fds[0], &st) < 0 || (uint64_t)st.st_size < p.mmap_offset + p.mmap_size) {
		snprintf(c->err, sizeof(c->err),
			 "SET_LOG_BASE: %llu bytes at offset %llu do not fit in the log file",
			 (unsigned long long)p.mmap_size, (unsigned long long)p.mmap_offset);
		return -EINVAL;
	}
	/* From offset 0: mmap wants a page-aligned offset, the front-end
	 * need not give one. */
	map = mmap(NULL, p.mmap_offset + p.mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED,
		   m->fds[0], 0);
	if (map == MAP_FAILED) {
		snprintf(c->err, sizeof(c->err), "SET_LOG_BASE: cannot map the log: %s",
			 strerror(errno));
		return -errno;
	}
	l = calloc(1, sizeof(*l));
	if (!l) {
		munmap(map, p.mmap_offset + p.mmap_size);
		snprintf(c->err, sizeof(c->err), "out of memory");
		return -ENOMEM;
	}
	l->map = map;
	l->maplen = p.mmap_offset + p.mmap_size;
	l->log.bits = (uint8_t *)map + p.mmap_offset;
	l->log.len = p.mmap_size;
	vu_log_free(c->staged_log);
	c->staged_log = l;
	vlog(LOG_INFO, "[%s] dirty log of %llu bytes (guest memory up to %llu MiB)", vu_name(c),
	     (unsigned long long)p.mmap_size,
	     (unsigned long long)(p.mmap_size * 8 * VQ_LOG_PAGE >> 20));
	/* Always answered (QEMU waits for it), with a u64 0. */
	m->payload.u64 = 0;
	m->hdr.size = sizeof(uint64_t);
	return VU_REPLY;
}

/* Commit of SET_LOG_BASE: the rings are stopped; they restart on the new
 * log (vu_ring_start), and nothing writes to the old one any more. */
int vu_swap_log(struct vu_conn *c)
{
	vu_log_free(c->log);
	c->log = c->staged_log;
	c->staged_log = NULL;
	return 0;
}

int h_set_log_fd(struct vu_conn *c, struct vu_msg *m)
{
	/* The eventfd a back-end may signal after logging (the kernel's way;
	 * QEMU reads the shared log at its own pace).  Kept, never needed. */
	if (m->nfds != 1) {
		snprintf(c->err, sizeof(c->err), "SET_LOG_FD with %u fds", m->nfds);
		return -EINVAL;
	}
	if (c->log_fd >= 0)
		close(c->log_fd);
	c->log_fd = m->fds[0];
	m->fds[0] = -1;
	return VU_OK;
}

void vu_log_teardown(struct vu_conn *c)
{
	vu_log_free(c->log);
	vu_log_free(c->staged_log);
	c->log = c->staged_log = NULL;
	if (c->log_fd >= 0)
		close(c->log_fd);
	c->log_fd = -1;
}
