/* Guest memory table: mapping and translation; see mem.h.
 * Runs on the control thread (map/unmap) and engine threads (translate). */
#include "mem.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

int mem_table_map(const struct mem_region_desc *descs, const int *fds,
		  unsigned n, struct mem_table **out, char *err, size_t errlen)
{
	struct mem_table *t;
	int rc;

	if (n > MEM_MAX_REGIONS) {
		snprintf(err, errlen, "%u memory regions, at most %d supported",
			 n, MEM_MAX_REGIONS);
		return -EINVAL;
	}
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;

	for (unsigned i = 0; i < n; i++) {
		const struct mem_region_desc *d = &descs[i];
		struct mem_region *r = &t->regions[i];
		struct stat st;
		uint64_t map_len;
		void *p;

		if (d->memory_size == 0 ||
		    d->guest_phys_addr + d->memory_size < d->guest_phys_addr ||
		    d->userspace_addr + d->memory_size < d->userspace_addr ||
		    d->mmap_offset + d->memory_size < d->mmap_offset) {
			snprintf(err, errlen, "memory region %u is empty or wraps around", i);
			rc = -EINVAL;
			goto fail;
		}
		if (fstat(fds[i], &st) < 0) {
			rc = -errno;
			snprintf(err, errlen, "memory region %u: fstat: %s", i, strerror(errno));
			goto fail;
		}
		map_len = d->mmap_offset + d->memory_size;
		if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size < map_len) {
			snprintf(err, errlen,
				 "memory region %u (offset %llu + size %llu) is larger than its file (%lld bytes)",
				 i, (unsigned long long)d->mmap_offset,
				 (unsigned long long)d->memory_size, (long long)st.st_size);
			rc = -EINVAL;
			goto fail;
		}
		if (map_len > SIZE_MAX) {
			rc = -EINVAL;
			goto fail;
		}
		p = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE,
			 fds[i], 0);
		if (p == MAP_FAILED) {
			rc = -errno;
			snprintf(err, errlen, "memory region %u: mmap: %s", i, strerror(errno));
			goto fail;
		}
		/* Guest memory is not ours to dump in a core file. */
		madvise(p, map_len, MADV_DONTDUMP);
		r->gpa = d->guest_phys_addr;
		r->size = d->memory_size;
		r->uva = d->userspace_addr;
		r->map = p;
		r->map_len = map_len;
		r->host = (uint8_t *)p + d->mmap_offset;
		t->nregions = i + 1;
	}
	*out = t;
	return 0;
fail:
	mem_table_unmap(t);
	return rc;
}

void mem_table_unmap(struct mem_table *t)
{
	if (!t)
		return;
	for (unsigned i = 0; i < t->nregions; i++)
		munmap(t->regions[i].map, t->regions[i].map_len);
	free(t);
}

int mem_gpa_to_iov(const struct mem_table *t, uint64_t gpa, uint64_t len,
		   struct iovec *iov, unsigned max)
{
	unsigned n = 0;

	if (gpa + len < gpa)
		return -EFAULT;
	while (len > 0) {
		const struct mem_region *r = NULL;
		uint64_t off = 0, chunk;

		for (unsigned i = 0; i < t->nregions; i++) {
			off = gpa - t->regions[i].gpa;
			if (off < t->regions[i].size) {
				r = &t->regions[i];
				break;
			}
		}
		if (!r)
			return -EFAULT;
		if (n == max)
			return -E2BIG;
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
