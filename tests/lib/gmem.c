/* Unit-level fixtures: memfd guest memory and a hand-built split ring; see
 * gmem.h. */
#include "gmem.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int test_memfd(const char *name, uint64_t size)
{
	int fd = memfd_create(name, MFD_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)size) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	return fd;
}

int test_count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	cr_assert_not_null(d);
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1;   /* the directory's own fd */
}

bool test_fd_open(int fd)
{
	return fcntl(fd, F_GETFD) >= 0 || errno != EBADF;
}

void gmem_init(struct gmem *g, const struct mem_region_desc *d, unsigned n)
{
	char err[256] = "";
	int rc;

	memset(g, 0, sizeof(*g));
	g->n = n;
	for (unsigned i = 0; i < n; i++) {
		g->d[i] = d[i];
		g->len[i] = d[i].mmap_offset + d[i].memory_size + 4096;
		g->fd[i] = test_memfd("gmem", g->len[i]);
		cr_assert_geq(g->fd[i], 0, "memfd: %s", strerror(-g->fd[i]));
		g->map[i] = mmap(NULL, g->len[i], PROT_READ | PROT_WRITE, MAP_SHARED,
				 g->fd[i], 0);
		cr_assert_neq(g->map[i], MAP_FAILED);
	}
	rc = mem_table_map(g->d, g->fd, n, &g->t, err, sizeof(err));
	cr_assert_eq(rc, 0, "mem_table_map: %d %s", rc, err);
}

void gmem_std(struct gmem *g)
{
	const struct mem_region_desc d[] = {
		{ R0_GPA, R0_SIZE, 0x7f0000010000ull, 0x2000 },
		{ R1_GPA, R1_SIZE, 0x7f1000000000ull, 0x3000 },
		{ R2_GPA, R2_SIZE, 0x7f2000100000ull, 0x1000 },
		{ R3_GPA, R3_SIZE, 0x7f3000000000ull, 0x5000 },
	};
	gmem_init(g, d, 4);
}

void gmem_fini(struct gmem *g)
{
	mem_table_unmap(g->t);
	g->t = NULL;
	for (unsigned i = 0; i < g->n; i++) {
		munmap(g->map[i], g->len[i]);
		close(g->fd[i]);
	}
	g->n = 0;
}

void *gmem_ptr(const struct gmem *g, uint64_t gpa, uint64_t len)
{
	for (unsigned i = 0; i < g->n; i++) {
		const struct mem_region_desc *d = &g->d[i];
		if (gpa >= d->guest_phys_addr && gpa - d->guest_phys_addr < d->memory_size &&
		    len <= d->memory_size - (gpa - d->guest_phys_addr))
			return g->map[i] + d->mmap_offset + (gpa - d->guest_phys_addr);
	}
	return NULL;
}

uint64_t gmem_uva(const struct gmem *g, uint64_t gpa)
{
	for (unsigned i = 0; i < g->n; i++) {
		const struct mem_region_desc *d = &g->d[i];
		if (gpa >= d->guest_phys_addr && gpa - d->guest_phys_addr < d->memory_size)
			return d->userspace_addr + (gpa - d->guest_phys_addr);
	}
	cr_assert_fail("gpa 0x%llx is not mapped", (unsigned long long)gpa);
	return 0;
}

/* ---- ring ------------------------------------------------------------------ */

static void on_broken(struct vblk *b, struct vq *vq, const char *why)
{
	struct tring *r = b->owner;
	r->broken_calls++;
	snprintf(r->broken_why, sizeof(r->broken_why), "%s", why);
}

void tring_init(struct tring *r, unsigned num, const struct vdev_params *p)
{
	char err[256] = "";
	int rc;

	memset(r, 0, sizeof(*r));
	gmem_std(&r->g);
	r->num = num;
	if (!p) {       /* only walks: a null backend moves nothing */
		static struct vdev_params np;
		vdev_params_init(&np);
		np.backing = BE_NULL;
		np.size = 1 << 20;
		p = &np;
	}
	rc = vblk_create("tblk", p, &r->blk, err, sizeof(err));
	cr_assert_eq(rc, 0, "vblk_create: %s", err);
	r->blk->owner = r;
	r->blk->ring_broken = on_broken;
	r->vq = &r->blk->vqs[0];
	r->vq->num = num;
	r->vq->mem = r->g.t;
	r->vq->desc_uva = gmem_uva(&r->g, TR_DESC_GPA);
	r->vq->avail_uva = gmem_uva(&r->g, TR_AVAIL_GPA);
	r->vq->used_uva = gmem_uva(&r->g, TR_USED_GPA);
	rc = vblk_queue_prepare(r->blk, r->vq, err, sizeof(err));
	cr_assert_eq(rc, 0, "vblk_queue_prepare: %s", err);
	r->chain = calloc(1, sizeof(*r->chain));
	cr_assert_not_null(r->chain);
	r->desc = gmem_ptr(&r->g, TR_DESC_GPA, vring_desc_size(num));
	r->avail = gmem_ptr(&r->g, TR_AVAIL_GPA, vring_avail_size(num));
	r->used = gmem_ptr(&r->g, TR_USED_GPA, vring_used_size(num));
	cr_assert(r->desc && r->avail && r->used);
	/* vq_map_rings must have found the same memory through the uvas. */
	r->desc[0].len = 0x12345678;
	cr_assert_eq(r->vq->desc[0].len, 0x12345678);
	r->desc[0].len = 0;
	r->heap = TR_HEAP_GPA;
}

void tring_fini(struct tring *r)
{
	for (unsigned i = 0; i < VDEV_MAX_QUEUES; i++) {
		struct vq *vq = &r->blk->vqs[i];
		if (vq->call_fd >= 0)
			close(vq->call_fd);
		if (vq->err_fd >= 0)
			close(vq->err_fd);
		if (vq->kick_fd >= 0)
			close(vq->kick_fd);
	}
	free(r->chain);
	vblk_destroy(r->blk);
	gmem_fini(&r->g);
}

uint64_t tring_alloc(struct tring *r, uint64_t len, uint64_t align)
{
	uint64_t a = (r->heap + align - 1) & ~(align - 1);
	cr_assert_leq(a + len, R1_GPA + R1_SIZE, "test heap exhausted");
	r->heap = a + len;
	memset(gmem_ptr(&r->g, a, len), 0, len);
	return a;
}

void *tring_ptr(struct tring *r, uint64_t gpa, uint64_t len)
{
	void *p = gmem_ptr(&r->g, gpa, len);
	cr_assert_not_null(p, "gpa 0x%llx+%llu is not in one region",
			   (unsigned long long)gpa, (unsigned long long)len);
	return p;
}

void tring_set_desc(struct tring *r, unsigned i, uint64_t addr, uint32_t len,
		    uint16_t flags, uint16_t next)
{
	cr_assert_lt(i, r->num);
	r->desc[i].addr = addr;
	r->desc[i].len = len;
	r->desc[i].flags = flags;
	r->desc[i].next = next;
}

uint16_t tring_chain(struct tring *r, const struct seg *segs, unsigned n)
{
	uint16_t head = r->next_desc % r->num;

	cr_assert_gt(n, 0);
	for (unsigned i = 0; i < n; i++) {
		unsigned slot = (r->next_desc + i) % r->num;
		unsigned next = (r->next_desc + i + 1) % r->num;
		uint16_t flags = (segs[i].write ? VRING_DESC_F_WRITE : 0) |
				 (i + 1 < n ? VRING_DESC_F_NEXT : 0);
		tring_set_desc(r, slot, segs[i].gpa, segs[i].len, flags,
			       i + 1 < n ? next : 0);
	}
	r->next_desc += n;
	return head;
}

void tring_publish(struct tring *r, uint16_t head)
{
	r->avail->ring[r->avail_idx % r->num] = head;
	r->avail_idx++;
	__atomic_store_n(&r->avail->idx, r->avail_idx, __ATOMIC_RELEASE);
}

struct vring_used_elem tring_used_elem(struct tring *r, uint16_t i)
{
	return r->used->ring[i % r->num];
}

int tring_poll(struct tring *r)
{
	return vblk_poll(r->vq, &r->ctx, VQ_MAX_SIZE);
}
