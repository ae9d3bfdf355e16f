/* Guest memory: the table of regions a front-end shared (SET_MEM_TABLE, or
 * one region at a time with ADD/REM_MEM_REG), mapped into this process, and
 * translation of guest addresses into host pointers.  A table is built whole
 * by the control thread and never edited afterwards: the engine reads it
 * without locks, and the control thread only frees one after every queue
 * using it has been stopped.  Successive tables share the mappings of the
 * regions they have in common (counted references, control thread only), so
 * adding or removing one region maps or unmaps that region alone.
 * Trust: every address and length handed to the translate functions comes
 * from the guest; they check ranges (with wrap-around) and never fault. */
#ifndef VHOSTD_MEM_H
#define VHOSTD_MEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#define MEM_MAX_REGIONS 8       /* in one SET_MEM_TABLE (VHOST_MEMORY_BASELINE_NREGIONS) */
#define MEM_MAX_SLOTS   509     /* in one table, region by region (ADD_MEM_REG) */

struct mem_region_desc {        /* as received (VhostUserMemoryRegion) */
	uint64_t guest_phys_addr;
	uint64_t memory_size;
	uint64_t userspace_addr;
	uint64_t mmap_offset;
};

/* One mmap of a region's file, shared by the tables that hold the region. */
struct mem_mapping {
	void *addr;                     /* from file offset 0 */
	size_t len;
	unsigned refs;                  /* tables holding it (control thread) */
};

struct mem_region {
	uint64_t gpa;                   /* guest-physical start */
	uint64_t size;
	uint64_t uva;                   /* front-end's user address of gpa */
	uint8_t *host;                  /* our pointer to gpa */
	struct mem_mapping *map;
};

struct mem_table {
	unsigned nregions;
	struct mem_region regions[];    /* sorted by gpa, disjoint */
};

/* Map the regions (fds are borrowed, not closed).  Each region must fit in
 * its fd (mmap_offset + memory_size <= file size), be non-empty, not wrap,
 * and overlap no other region (in guest or user addresses).  0 and *out, or
 * -errno with a reason in err. */
int mem_table_map(const struct mem_region_desc *descs, const int *fds,
		  unsigned n, struct mem_table **out, char *err, size_t errlen);
/* A new table: old (NULL = empty) plus the region d mapped from fd, by the
 * same rules; old is left as it is (it shares its mappings). */
int mem_table_add(const struct mem_table *old, const struct mem_region_desc *d, int fd,
		  struct mem_table **out, char *err, size_t errlen);
/* A new table: old without the region of d's guest address, user address
 * and size (-ENOENT if it has none).  The removed mapping goes away with the
 * last table that holds it. */
int mem_table_remove(const struct mem_table *old, const struct mem_region_desc *d,
		     struct mem_table **out, char *err, size_t errlen);
/* Free t, unmapping the regions no other table holds. */
void mem_table_unmap(struct mem_table *t);

/* The region holding gpa, or NULL. */
static inline const struct mem_region *mem_find(const struct mem_table *t, uint64_t gpa)
{
	unsigned lo = 0, hi = t->nregions;

	if (hi <= 8) {          /* the usual few regions: a scan is cheapest */
		for (unsigned i = 0; i < hi; i++) {
			const struct mem_region *r = &t->regions[i];
			if (gpa - r->gpa < r->size)     /* wraps to huge when gpa < r->gpa */
				return r;
		}
		return NULL;
	}
	while (lo < hi) {       /* many hot-plugged regions: sorted, disjoint */
		unsigned mid = lo + (hi - lo) / 2;
		const struct mem_region *r = &t->regions[mid];
		if (gpa < r->gpa)
			hi = mid;
		else if (gpa - r->gpa < r->size)
			return r;
		else
			lo = mid + 1;
	}
	return NULL;
}

/* Host pointer for [gpa, gpa+len) if it lies in one region, else NULL. */
static inline void *mem_gpa_to_host(const struct mem_table *t, uint64_t gpa,
				    uint64_t len)
{
	const struct mem_region *r = mem_find(t, gpa);
	uint64_t off;

	if (!r)
		return NULL;
	off = gpa - r->gpa;
	return len <= r->size - off ? r->host + off : NULL;
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
/* The guest address of host pointer p (which points into one of t's
 * regions): true and *gpa, or false if p is in none.  A scan: for the dirty
 * log, which only runs during a migration. */
bool mem_host_to_gpa(const struct mem_table *t, const void *p, uint64_t *gpa);

#endif
