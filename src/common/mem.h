/* Guest memory: the table of regions a front-end shared with SET_MEM_TABLE,
 * mapped into this process, and translation of guest addresses into host
 * pointers.  A table is built whole by the control thread and never edited
 * afterwards: the engine reads it without locks, and the control thread only
 * frees one after every queue using it has been stopped.
 * Trust: every address and length handed to the translate functions comes
 * from the guest; they check ranges (with wrap-around) and never fault. */
#ifndef VHOSTD_MEM_H
#define VHOSTD_MEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#define MEM_MAX_REGIONS 8       /* VHOST_MEMORY_BASELINE_NREGIONS */

struct mem_region_desc {        /* as received (VhostUserMemoryRegion) */
	uint64_t guest_phys_addr;
	uint64_t memory_size;
	uint64_t userspace_addr;
	uint64_t mmap_offset;
};

struct mem_region {
	uint64_t gpa;                   /* guest-physical start */
	uint64_t size;
	uint64_t uva;                   /* front-end's user address of gpa */
	uint8_t *host;                  /* our pointer to gpa */
	void *map;                      /* whole mapping (from file offset 0) */
	size_t map_len;
};

struct mem_table {
	unsigned nregions;
	struct mem_region regions[MEM_MAX_REGIONS];
};

/* Map the regions (fds are borrowed, not closed).  Each region must fit in
 * its fd (mmap_offset + memory_size <= file size), be non-empty, and not
 * wrap.  0 and *out, or -errno with a reason in err. */
int mem_table_map(const struct mem_region_desc *descs, const int *fds,
		  unsigned n, struct mem_table **out, char *err, size_t errlen);
void mem_table_unmap(struct mem_table *t);

/* Host pointer for [gpa, gpa+len) if it lies in one region, else NULL. */
static inline void *mem_gpa_to_host(const struct mem_table *t, uint64_t gpa,
				    uint64_t len)
{
	for (unsigned i = 0; i < t->nregions; i++) {
		const struct mem_region *r = &t->regions[i];
		uint64_t off = gpa - r->gpa;    /* wraps to huge when gpa < r->gpa */
		if (off < r->size && len <= r->size - off)
			return r->host + off;
	}
	return NULL;
}

/* Translate [gpa, gpa+len) into at most max iovecs (splitting where it
 * crosses regions).  Returns the number used, -EFAULT if any byte is
 * unmapped or the range wraps, -E2BIG if more than max are needed.
 * len == 0 yields 0 iovecs. */
int mem_gpa_to_iov(const struct mem_table *t, uint64_t gpa, uint64_t len,
		   struct iovec *iov, unsigned max);

/* Front-end user address (ring addresses) to host pointer; whole range in
 * one region, else NULL. */
void *mem_uva_to_host(const struct mem_table *t, uint64_t uva, uint64_t len);

#endif
