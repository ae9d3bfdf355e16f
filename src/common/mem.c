/* Guest memory table: mapping and translation; see mem.h.
 * Runs on the control thread (map/add/remove/unmap) and engine threads
 * (translate). */
#include "mem.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

static struct mem_table *table_alloc(unsigned n)
{
	return calloc(1, sizeof(struct mem_table) + n * sizeof(struct mem_region));
}

/* Map one region from fd into r.  `what` names it in the reason. */
static int region_map(const struct mem_region_desc *d, int fd, struct mem_region *r,
		      const char *what, char *err, size_t errlen)
{
	struct mem_mapping *m;
	struct stat st;
	uint64_t map_len;
	void *p;

	if (d->memory_size == 0 ||
	    d->guest_phys_addr + d->memory_size < d->guest_phys_addr ||
	    d->userspace_addr + d->memory_size < d->userspace_addr ||
	    d->mmap_offset + d->memory_size < d->mmap_offset) {
		snprintf(err, errlen, "%s is empty or wraps around", what);
		return -EINVAL;
	}
	if (fstat(fd, &st) < 0) {
		snprintf(err, errlen, "%s: fstat: %s", what, strerror(errno));
		return -errno;
	}
	map_len = d->mmap_offset + d->memory_size;
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size < map_len) {
		snprintf(err, errlen,
			 "%s (offset %llu + size %llu) is larger than its file (%lld bytes)",
			 what, (unsigned long long)d->mmap_offset,
			 (unsigned long long)d->memory_size, (long long)st.st_size);
		return -EINVAL;
	}
	if (map_len > SIZE_MAX) {
		snprintf(err, errlen, "%s is too large to map", what);
		return -EINVAL;
	}
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	p = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
	if (p == MAP_FAILED) {
		int e = errno;
		free(m);
		snprintf(err, errlen, "%s: mmap: %s", what, strerror(e));
		return -e;
	}
	/* Guest memory is not ours to dump in a core file. */
	madvise(p, map_len, MADV_DONTDUMP);
	m->addr = p;
	m->len = map_len;
	m->refs = 1;
	r->gpa = d->guest_phys_addr;
	r->size = d->memory_size;
	r->uva = d->userspace_addr;
	r->map = m;
	r->host = (uint8_t *)p + d->mmap_offset;
	return 0;
}

static void mapping_put(struct mem_mapping *m)
{
	if (m && --m->refs == 0) {
		munmap(m->addr, m->len);
		free(m);
	}
}

static int cmp_gpa(const void *a, const void *b)
{
	const struct mem_region *x = a, *y = b;
	return x->gpa < y->gpa ? -1 : x->gpa > y->gpa;
}

static bool overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return a < b + blen && b < a + alen;
}

/* Sort t by guest address and refuse overlapping regions: translation
 * must find exactly one region for an address, in both address spaces. */
static int table_check(struct mem_table *t, char *err, size_t errlen)
{
	qsort(t->regions, t->nregions, sizeof(t->regions[0]), cmp_gpa);
	for (unsigned i = 0; i < t->nregions; i++) {
		const struct mem_region *a = &t->regions[i];
		for (unsigned j = i + 1; j < t->nregions; j++) {
			const struct mem_region *b = &t->regions[j];
			if (overlap(a->gpa, a->size, b->gpa, b->size) ||
			    overlap(a->uva, a->size, b->uva, b->size)) {
				snprintf(err, errlen,
					 "memory regions at guest 0x%llx and 0x%llx overlap",
					 (unsigned long long)a->gpa, (unsigned long long)b->gpa);
				return -EINVAL;
			}
		}
	}
	return 0;
}

int mem_table_map(const struct mem_region_desc *descs, const int *fds,
		  unsigned n, struct mem_table **out, char *err, size_t errlen)
{
	struct mem_table *t;
	int rc;

	if (n > MEM_MAX_SLOTS) {
		snprintf(err, errlen, "%u memory regions, at most %d supported",
			 n, MEM_MAX_SLOTS);
		return -EINVAL;
	}
	t = table_alloc(n);
	if (!t)
		return -ENOMEM;
	for (unsigned i = 0; i < n; i++) {
		char what[32];

		snprintf(what, sizeof(what), "memory region %u", i);
		rc = region_map(&descs[i], fds[i], &t->regions[i], what, err, errlen);
		if (rc < 0)
			goto fail;
		t->nregions = i + 1;
	}
	rc = table_check(t, err, errlen);
	if (rc < 0)
		goto fail;
	*out = t;
	return 0;
fail:
	mem_table_unmap(t);
	return rc;
}

int mem_table_add(const struct mem_table *old, const struct mem_region_desc *d, int fd,
		  struct mem_table **out, char *err, size_t errlen)
{
	unsigned n = old ? old->nregions : 0;
	struct mem_table *t;
	int rc;

	if (n >= MEM_MAX_SLOTS) {
		snprintf(err, errlen, "memory region at guest 0x%llx: all %d slots are in use",
			 (unsigned long long)d->guest_phys_addr, MEM_MAX_SLOTS);
		return -ENOSPC;
	}
	t = table_alloc(n + 1);
	if (!t)
		return -ENOMEM;
	rc = region_map(d, fd, &t->regions[n], "the added memory region", err, errlen);
	if (rc < 0) {
		free(t);
		return rc;
	}
	for (unsigned i = 0; i < n; i++) {
		t->regions[i] = old->regions[i];
		t->regions[i].map->refs++;
	}
	t->nregions = n + 1;
	rc = table_check(t, err, errlen);
	if (rc < 0) {
		mem_table_unmap(t);
		return rc;
	}
	*out = t;
	return 0;
}

int mem_table_remove(const struct mem_table *old, const struct mem_region_desc *d,
		     struct mem_table **out, char *err, size_t errlen)
{
	unsigned n = old ? old->nregions : 0, k = 0;
	struct mem_table *t;
	bool found = false;

	t = table_alloc(n);
	if (!t)
		return -ENOMEM;
	for (unsigned i = 0; i < n; i++) {
		const struct mem_region *r = &old->regions[i];
		if (!found && r->gpa == d->guest_phys_addr && r->uva == d->userspace_addr &&
		    r->size == d->memory_size) {
			found = true;
			continue;
		}
		t->regions[k] = *r;
		t->regions[k].map->refs++;
		k++;
	}
	t->nregions = k;
	if (!found) {
		mem_table_unmap(t);
		snprintf(err, errlen,
			 "no memory region at guest 0x%llx, user 0x%llx, size 0x%llx to remove",
			 (unsigned long long)d->guest_phys_addr,
			 (unsigned long long)d->userspace_addr,
			 (unsigned long long)d->memory_size);
		return -ENOENT;
	}
	*out = t;
	return 0;
}

void mem_table_unmap(struct mem_table *t)
{
	if (!t)
		return;
	for (unsigned i = 0; i < t->nregions; i++)
		mapping_put(t->regions[i].map);
	free(t);
}

int mem_gpa_to_iov(const struct mem_table *t, uint64_t gpa, uint64_t len,
		   struct iovec *iov, unsigned max)
{
	unsigned n = 0;

	if (gpa + len < gpa)
		return -EFAULT;
	while (len > 0) {
		const struct mem_region *r = mem_find(t, gpa);
		uint64_t off, chunk;

		if (!r)
			return -EFAULT;
		if (n == max)
			return -E2BIG;
		off = gpa - r->gpa;
		chunk = r->size - off;
		if (chunk > len)
			chunk = len;
		iov[n].iov_base = r->host + off;
		iov[n].iov_len = chunk;
		n++;
		gpa += chunk;
		len -= chunk;
	}
	return n;
}

void *mem_uva_to_host(const struct mem_table *t, uint64_t uva, uint64_t len)
{
	if (uva + len < uva)
		return NULL;
	for (unsigned i = 0; i < t->nregions; i++) {
		const struct mem_region *r = &t->regions[i];
		uint64_t off = uva - r->uva;
		if (off < r->size && len <= r->size - off)
			return r->host + off;
	}
	return NULL;
}

bool mem_host_to_gpa(const struct mem_table *t, const void *p, uint64_t *gpa)
{
	for (unsigned i = 0; i < t->nregions; i++) {
		const struct mem_region *r = &t->regions[i];
		uintptr_t off = (uintptr_t)p - (uintptr_t)r->host;
		if (off < r->size) {
			*gpa = r->gpa + off;
			return true;
		}
	}
	return false;
}
