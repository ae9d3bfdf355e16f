/* Fixtures of the programs that test the core's units directly (tests/unit,
 * restart/test_inflight.c): guest memory made of memfds (with
 * guest-physical addresses, front-end user addresses and file offsets that
 * all differ) mapped twice — once by mem_table_map, the code under test, and
 * once here so every translation is checked against an independent pointer —
 * and a hand-built split virtqueue living in that memory.
 * Single-threaded test code; failures abort the test through criterion. */
#ifndef TEST_GMEM_H
#define TEST_GMEM_H

#include <stdbool.h>
#include <stdint.h>

#include "blk.h"
#include "mem.h"
#include "vq.h"

/* The standard layout (gmem_std):
 *   R0 gpa 0x000000 size  64K   (guest address 0 is mapped)
 *   R1 gpa 0x100000 size   1M   rings + buffers
 *   R2 gpa 0x200000 size   1M   contiguous with R1 in GPA, not in uva/file
 *   -- gap 0x300000..0x400000 --
 *   R3 gpa 0x400000 size  64K */
#define R0_GPA  0x000000ull
#define R0_SIZE 0x10000ull
#define R1_GPA  0x100000ull
#define R1_SIZE 0x100000ull
#define R2_GPA  0x200000ull
#define R2_SIZE 0x100000ull
#define GAP_GPA 0x300000ull
#define R3_GPA  0x400000ull
#define R3_SIZE 0x10000ull

struct gmem {
	unsigned n;
	struct mem_region_desc d[MEM_MAX_REGIONS];
	int fd[MEM_MAX_REGIONS];
	uint8_t *map[MEM_MAX_REGIONS];  /* our own mapping of each whole file */
	size_t len[MEM_MAX_REGIONS];
	struct mem_table *t;            /* the table under test */
};

/* A memfd of `size` bytes; -errno on failure. */
int test_memfd(const char *name, uint64_t size);
/* Number of open fds of this process. */
int test_count_fds(void);
/* true if fd is open. */
bool test_fd_open(int fd);

/* Build and map n regions; files are offset+size+4K long.  Asserts. */
void gmem_init(struct gmem *g, const struct mem_region_desc *d, unsigned n);
void gmem_std(struct gmem *g);
void gmem_fini(struct gmem *g);
/* Independent translation (our mapping); NULL unless [gpa, gpa+len) lies in
 * one region. */
void *gmem_ptr(const struct gmem *g, uint64_t gpa, uint64_t len);
/* Front-end user address of a gpa; asserts it is mapped. */
uint64_t gmem_uva(const struct gmem *g, uint64_t gpa);

/* ---- a split ring in the standard memory --------------------------------- */

#define TR_DESC_GPA  (R1_GPA + 0x00000)
#define TR_AVAIL_GPA (R1_GPA + 0x04000)
#define TR_USED_GPA  (R1_GPA + 0x06000)
#define TR_HEAP_GPA  (R1_GPA + 0x10000)

struct tring {
	struct gmem g;
	struct vblk *blk;
	struct vq *vq;                  /* &blk->vqs[0] */
	unsigned num;
	struct vring_desc *desc;        /* our view of the rings */
	struct vring_avail *avail;
	struct vring_used *used;
	uint16_t avail_idx;             /* driver's shadow */
	unsigned next_desc;             /* next free descriptor slot */
	uint64_t heap;                  /* next free buffer gpa */
	struct be_ctx ctx;              /* no io_uring: ram/null complete at once */
	struct vq_chain *chain;         /* scratch chain for vq_walk tests */
	int broken_calls;
	char broken_why[160];
};

struct seg {
	uint64_t gpa;
	uint32_t len;
	bool write;
};

/* A ring of `num` entries on queue 0 of a vblk; p == NULL: no backend
 * (enough for vq_walk).  The rings are mapped with vblk_queue_prepare. */
void tring_init(struct tring *r, unsigned num, const struct vdev_params *p);
void tring_fini(struct tring *r);
/* Allocate a zeroed guest buffer in R1 (aligned to `align`). */
uint64_t tring_alloc(struct tring *r, uint64_t len, uint64_t align);
void *tring_ptr(struct tring *r, uint64_t gpa, uint64_t len);
/* Write descriptor i. */
void tring_set_desc(struct tring *r, unsigned i, uint64_t addr, uint32_t len,
		    uint16_t flags, uint16_t next);
/* Chain segs into fresh descriptors (NEXT-linked); returns the head. */
uint16_t tring_chain(struct tring *r, const struct seg *segs, unsigned n);
/* Put head in the avail ring and publish the new avail->idx. */
void tring_publish(struct tring *r, uint16_t head);
/* Used element i (modulo num). */
struct vring_used_elem tring_used_elem(struct tring *r, uint16_t i);
/* vblk_poll with unlimited room, as the engine does with a synchronous backend. */
int tring_poll(struct tring *r);

#endif
