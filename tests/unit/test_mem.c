/* Guest memory table: mapping rules and gpa/uva translation (src/mem.c),
 * on real memfd mappings checked against an independent mapping. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "gmem.h"

static struct gmem g;

static void setup(void)
{
	gmem_std(&g);
}

static void teardown(void)
{
	gmem_fini(&g);
}

TestSuite(mem, .init = setup, .fini = teardown);

Test(mem, table_shape)
{
	cr_assert_eq(g.t->nregions, 4);
	for (unsigned i = 0; i < 4; i++) {
		cr_assert_eq(g.t->regions[i].gpa, g.d[i].guest_phys_addr);
		cr_assert_eq(g.t->regions[i].size, g.d[i].memory_size);
		cr_assert_eq(g.t->regions[i].uva, g.d[i].userspace_addr);
		cr_assert_eq(g.t->regions[i].map->len, g.d[i].mmap_offset + g.d[i].memory_size);
	}
}

Test(mem, inside_region)
{
	uint8_t *mine = gmem_ptr(&g, R1_GPA + 0x1234, 100);
	uint8_t *p = mem_gpa_to_host(g.t, R1_GPA + 0x1234, 100);

	cr_assert_not_null(p);
	/* A different mapping of the same file page: compare through data. */
	memset(mine, 0xab, 100);
	cr_assert_eq(p[0], 0xab);
	cr_assert_eq(p[99], 0xab);
	p[50] = 0x11;
	cr_assert_eq(mine[50], 0x11);
	/* The mmap_offset was honoured: the byte before the region is the
	 * file's byte at mmap_offset - 1. */
	g.map[1][g.d[1].mmap_offset - 1] = 0x77;
	g.map[1][g.d[1].mmap_offset] = 0x78;
	cr_assert_eq(*(uint8_t *)mem_gpa_to_host(g.t, R1_GPA, 1), 0x78);

	/* guest address 0 is a normal address */
	cr_assert_not_null(mem_gpa_to_host(g.t, 0, 1));
	cr_assert_not_null(mem_gpa_to_host(g.t, R3_GPA + 10, 10));
}

Test(mem, region_edges)
{
	/* whole region */
	cr_assert_not_null(mem_gpa_to_host(g.t, R1_GPA, R1_SIZE));
	cr_assert_null(mem_gpa_to_host(g.t, R1_GPA, R1_SIZE + 1));
	/* last byte */
	uint8_t *last = mem_gpa_to_host(g.t, R1_GPA + R1_SIZE - 1, 1);
	cr_assert_not_null(last);
	*last = 0x5a;
	cr_assert_eq(*(uint8_t *)gmem_ptr(&g, R1_GPA + R1_SIZE - 1, 1), 0x5a);
	/* straddling R1/R2 (contiguous in GPA, not on the host): NULL */
	cr_assert_null(mem_gpa_to_host(g.t, R1_GPA + R1_SIZE - 1, 2));
	cr_assert_null(mem_gpa_to_host(g.t, R1_GPA + R1_SIZE - 0x800, 0x1000));
	/* first byte of R2 */
	cr_assert_eq(mem_gpa_to_host(g.t, R2_GPA, 1),
		     (uint8_t *)g.t->regions[2].host);
	/* end of R2 into the gap */
	cr_assert_null(mem_gpa_to_host(g.t, R2_GPA + R2_SIZE - 1, 2));
	cr_assert_null(mem_gpa_to_host(g.t, GAP_GPA, 1));
	cr_assert_null(mem_gpa_to_host(g.t, R3_GPA - 1, 1));
	cr_assert_null(mem_gpa_to_host(g.t, R3_GPA - 1, 2));
	cr_assert_null(mem_gpa_to_host(g.t, R3_GPA + R3_SIZE, 1));
	/* len 0 at the end of a region is inside it; past the end is not */
	cr_assert_not_null(mem_gpa_to_host(g.t, R3_GPA + R3_SIZE - 1, 0));
	cr_assert_null(mem_gpa_to_host(g.t, R3_GPA + R3_SIZE, 0));
}

Test(mem, iov_straddle_contiguous_gpa)
{
	struct iovec iov[4];
	int n = mem_gpa_to_iov(g.t, R2_GPA - 0x1000, 0x3000, iov, 4);

	cr_assert_eq(n, 2);
	cr_assert_eq(iov[0].iov_base, (void *)(g.t->regions[1].host + R1_SIZE - 0x1000));
	cr_assert_eq(iov[0].iov_len, 0x1000);
	cr_assert_eq(iov[1].iov_base, (void *)g.t->regions[2].host);
	cr_assert_eq(iov[1].iov_len, 0x2000);
	/* the pointers reach the right file bytes */
	memset(gmem_ptr(&g, R2_GPA - 1, 1), 0xc1, 1);
	memset(gmem_ptr(&g, R2_GPA, 1), 0xc2, 1);
	cr_assert_eq(((uint8_t *)iov[0].iov_base)[0xfff], 0xc1);
	cr_assert_eq(((uint8_t *)iov[1].iov_base)[0], 0xc2);

	/* inside one region: one iovec */
	n = mem_gpa_to_iov(g.t, R1_GPA + 8, 4096, iov, 4);
	cr_assert_eq(n, 1);
	cr_assert_eq(iov[0].iov_base, (void *)(g.t->regions[1].host + 8));
	cr_assert_eq(iov[0].iov_len, 4096);
	/* exactly a whole region then one byte of the next */
	n = mem_gpa_to_iov(g.t, R1_GPA, R1_SIZE + 1, iov, 4);
	cr_assert_eq(n, 2);
	cr_assert_eq(iov[0].iov_len, R1_SIZE);
	cr_assert_eq(iov[1].iov_len, 1);
}

Test(mem, iov_gap_efault)
{
	struct iovec iov[4];

	cr_assert_eq(mem_gpa_to_iov(g.t, R2_GPA + R2_SIZE - 0x10, 0x20, iov, 4), -EFAULT);
	cr_assert_eq(mem_gpa_to_iov(g.t, GAP_GPA, 1, iov, 4), -EFAULT);
	cr_assert_eq(mem_gpa_to_iov(g.t, R3_GPA - 1, 2, iov, 4), -EFAULT);
	/* R0 ends at 64K, R1 starts at 1M */
	cr_assert_eq(mem_gpa_to_iov(g.t, R0_SIZE - 1, 2, iov, 4), -EFAULT);
	cr_assert_eq(mem_gpa_to_iov(g.t, R3_GPA + R3_SIZE, 1, iov, 4), -EFAULT);
	/* R1 + R2 + into the gap */
	cr_assert_eq(mem_gpa_to_iov(g.t, R1_GPA, R1_SIZE + R2_SIZE + 1, iov, 4), -EFAULT);
	cr_assert_eq(mem_gpa_to_iov(g.t, R1_GPA, R1_SIZE + R2_SIZE, iov, 4), 2);
}

Test(mem, iov_len0_and_e2big)
{
	struct iovec iov[2];

	cr_assert_eq(mem_gpa_to_iov(g.t, R1_GPA, 0, iov, 2), 0);
	cr_assert_eq(mem_gpa_to_iov(g.t, GAP_GPA, 0, iov, 2), 0);
	cr_assert_eq(mem_gpa_to_iov(g.t, R1_GPA, 1, iov, 0), -E2BIG);
	cr_assert_eq(mem_gpa_to_iov(g.t, R2_GPA - 1, 2, iov, 1), -E2BIG);
	cr_assert_eq(mem_gpa_to_iov(g.t, R2_GPA - 1, 2, iov, 2), 2);
	/* iovecs run out before the end of R2 is reached */
	cr_assert_eq(mem_gpa_to_iov(g.t, R2_GPA - 1, R2_SIZE + 2, iov, 1), -E2BIG);
}

Test(mem, wrap_around)
{
	struct iovec iov[4];

	cr_assert_null(mem_gpa_to_host(g.t, UINT64_MAX, 1));
	cr_assert_null(mem_gpa_to_host(g.t, UINT64_MAX, 2));
	cr_assert_null(mem_gpa_to_host(g.t, UINT64_MAX - 15, 32));
	cr_assert_null(mem_gpa_to_host(g.t, R1_GPA, UINT64_MAX));
	cr_assert_null(mem_gpa_to_host(g.t, R1_GPA + 1, UINT64_MAX));
	/* [2^64-16, 2^64+16) would wrap onto guest address 0, which is mapped */
	cr_assert_eq(mem_gpa_to_iov(g.t, UINT64_MAX - 15, 32, iov, 4), -EFAULT);
	cr_assert_eq(mem_gpa_to_iov(g.t, UINT64_MAX, 2, iov, 4), -EFAULT);
	cr_assert_eq(mem_gpa_to_iov(g.t, R1_GPA, UINT64_MAX, iov, 4), -EFAULT);
	cr_assert_eq(mem_gpa_to_iov(g.t, R0_GPA + 1, UINT64_MAX, iov, 4), -EFAULT);
	cr_assert_null(mem_uva_to_host(g.t, UINT64_MAX - 15, 32));
	cr_assert_null(mem_uva_to_host(g.t, g.d[1].userspace_addr, UINT64_MAX));
}

Test(mem, region_near_top_of_address_space)
{
	struct gmem h;
	const struct mem_region_desc d[] = {
		{ UINT64_MAX - 0x1fff, 0x1000, UINT64_MAX - 0x3fff, 0x1000 },
	};
	struct iovec iov[2];
	uint64_t top = UINT64_MAX - 0x1fff;

	gmem_init(&h, d, 1);
	cr_assert_not_null(mem_gpa_to_host(h.t, top, 0x1000));
	cr_assert_not_null(mem_gpa_to_host(h.t, top + 0xfff, 1));
	cr_assert_null(mem_gpa_to_host(h.t, top + 0xfff, 2));
	cr_assert_null(mem_gpa_to_host(h.t, top + 0x1000, 1));
	cr_assert_null(mem_gpa_to_host(h.t, top - 1, 2));
	cr_assert_eq(mem_gpa_to_iov(h.t, top + 0x10, 0x10, iov, 2), 1);
	cr_assert_eq(mem_gpa_to_iov(h.t, top + 0x10, 0x1000, iov, 2), -EFAULT);
	cr_assert_not_null(mem_uva_to_host(h.t, UINT64_MAX - 0x3fff + 0xff0, 0x10));
	cr_assert_null(mem_uva_to_host(h.t, UINT64_MAX - 0x3fff + 0xff0, 0x11));
	gmem_fini(&h);
}

Test(mem, uva_translation)
{
	uint64_t uva1 = g.d[1].userspace_addr, uva2 = g.d[2].userspace_addr;
	uint8_t *p = mem_uva_to_host(g.t, uva1 + 0x10, 16);

	cr_assert_eq(p, g.t->regions[1].host + 0x10);
	cr_assert_eq(mem_uva_to_host(g.t, uva2, R2_SIZE), (void *)g.t->regions[2].host);
	cr_assert_null(mem_uva_to_host(g.t, uva2, R2_SIZE + 1));
	cr_assert_null(mem_uva_to_host(g.t, uva1 + R1_SIZE - 1, 2));
	cr_assert_null(mem_uva_to_host(g.t, uva1 - 1, 2));
	/* a guest-physical address is not a user address */
	cr_assert_null(mem_uva_to_host(g.t, R1_GPA + 0x10, 16));
	cr_assert_null(mem_uva_to_host(g.t, 0, 1));
	/* and a user address is not a guest-physical address */
	cr_assert_null(mem_gpa_to_host(g.t, uva1, 1));
}

/* ---- mapping rules --------------------------------------------------------- */

static int map1(uint64_t gpa, uint64_t size, uint64_t uva, uint64_t off, int fd,
		char *err, size_t errlen)
{
	struct mem_region_desc d = { gpa, size, uva, off };
	struct mem_table *t = NULL;
	int rc;

	err[0] = '\0';
	rc = mem_table_map(&d, &fd, 1, &t, err, errlen);
	if (rc == 0) {
		cr_assert_not_null(t);
		mem_table_unmap(t);
	}
	return rc;
}

Test(mem, region_larger_than_file_refused)
{
	char err[256];
	int fd = test_memfd("small", 0x10000);

	cr_assert_geq(fd, 0);
	cr_assert_eq(map1(0x1000, 0x10000, 0x5000, 0, fd, err, sizeof(err)), 0);
	cr_assert_eq(map1(0x1000, 0xf000, 0x5000, 0x1000, fd, err, sizeof(err)), 0);
	cr_assert_eq(map1(0x1000, 0x10000, 0x5000, 0x1000, fd, err, sizeof(err)), -EINVAL);
	cr_assert_neq(err[0], '\0');
	cr_assert_eq(map1(0x1000, 0x10001, 0x5000, 0, fd, err, sizeof(err)), -EINVAL);
	cr_assert_eq(map1(0x1000, 0x1000, 0x5000, 0x10000, fd, err, sizeof(err)), -EINVAL);
	/* offset + size wrapping to a small number */
	cr_assert_eq(map1(0x1000, 0x1000, 0x5000, UINT64_MAX - 0x7ff, fd, err, sizeof(err)),
		     -EINVAL);
	close(fd);
}

Test(mem, empty_or_wrapping_region_refused)
{
	char err[256];
	int fd = test_memfd("r", 0x10000);

	cr_assert_eq(map1(0x1000, 0, 0x5000, 0, fd, err, sizeof(err)), -EINVAL);
	cr_assert_neq(err[0], '\0');
	cr_assert_eq(map1(UINT64_MAX - 0x7ff, 0x1000, 0x5000, 0, fd, err, sizeof(err)), -EINVAL);
	cr_assert_eq(map1(0x1000, 0x1000, UINT64_MAX - 0x7ff, 0, fd, err, sizeof(err)), -EINVAL);
	cr_assert_eq(map1(0x1000, UINT64_MAX, 0, 0, fd, err, sizeof(err)), -EINVAL);
	close(fd);
}

Test(mem, bad_fds_refused)
{
	char err[256];
	int p[2];

	cr_assert_eq(pipe(p), 0);
	cr_assert_eq(map1(0x1000, 0x1000, 0x5000, 0, p[0], err, sizeof(err)), -EINVAL);
	cr_assert_eq(map1(0x1000, 0x1000, 0x5000, 0, -1, err, sizeof(err)), -EBADF);
	close(p[0]);
	close(p[1]);
}

Test(mem, too_many_regions_refused)
{
	static struct mem_region_desc d[MEM_MAX_SLOTS + 1];
	static int fds[MEM_MAX_SLOTS + 1];
	struct mem_table *t = NULL;
	char err[256] = "";
	int fd = test_memfd("r", (MEM_MAX_SLOTS + 1) * 0x1000ull);

	for (unsigned i = 0; i <= MEM_MAX_SLOTS; i++) {
		d[i] = (struct mem_region_desc){ i * 0x1000ull, 0x1000, 0x10000000 + i * 0x1000ull,
						 i * 0x1000ull };
		fds[i] = fd;
	}
	cr_assert_eq(mem_table_map(d, fds, MEM_MAX_SLOTS + 1, &t, err, sizeof(err)), -EINVAL);
	cr_assert_neq(err[0], '\0');
	/* the most regions, sharing one fd at different offsets, are fine */
	cr_assert_eq(mem_table_map(d, fds, MEM_MAX_SLOTS, &t, err, sizeof(err)), 0);
	cr_assert_eq(t->nregions, MEM_MAX_SLOTS);
	/* and translate by binary search */
	for (unsigned i = 0; i < MEM_MAX_SLOTS; i += 37)
		cr_assert_not_null(mem_gpa_to_host(t, i * 0x1000ull + 0x10, 0x100));
	cr_assert_null(mem_gpa_to_host(t, MEM_MAX_SLOTS * 0x1000ull, 1));
	mem_table_unmap(t);
	/* zero regions: an empty table that translates nothing */
	t = NULL;
	cr_assert_eq(mem_table_map(d, fds, 0, &t, err, sizeof(err)), 0);
	cr_assert_eq(t->nregions, 0);
	cr_assert_null(mem_gpa_to_host(t, 0, 1));
	mem_table_unmap(t);
	mem_table_unmap(NULL);
	close(fd);
}

static int count_maps(const char *name)
{
	char line[512];
	int n = 0;
	FILE *f = fopen("/proc/self/maps", "r");

	cr_assert_not_null(f);
	while (fgets(line, sizeof(line), f))
		if (strstr(line, name))
			n++;
	fclose(f);
	return n;
}

Test(mem, failure_unmaps_earlier_regions)
{
	struct mem_region_desc d[2] = {
		{ 0x100000, 0x10000, 0x7000000, 0x1000 },
		{ 0x200000, 0x20000, 0x8000000, 0 },    /* larger than its file */
	};
	int fds[2];
	struct mem_table *t = NULL;
	char err[256] = "";

	fds[0] = test_memfd("vhostd-leakcheck-a", 0x20000);
	fds[1] = test_memfd("vhostd-leakcheck-b", 0x10000);
	cr_assert_eq(mem_table_map(d, fds, 2, &t, err, sizeof(err)), -EINVAL);
	cr_assert_eq(count_maps("vhostd-leakcheck"), 0, "a mapping was left behind");
	/* the fds are borrowed, not closed */
	cr_assert(test_fd_open(fds[0]) && test_fd_open(fds[1]));
	close(fds[0]);
	close(fds[1]);
}

Test(mem, unmap_releases_mappings)
{
	struct mem_region_desc d = { 0x100000, 0x10000, 0x7000000, 0x1000 };
	int fd = test_memfd("vhostd-unmapcheck", 0x20000);
	struct mem_table *t = NULL;
	char err[256] = "";

	cr_assert_eq(mem_table_map(&d, &fd, 1, &t, err, sizeof(err)), 0);
	close(fd);      /* the mapping keeps the memory */
	cr_assert_eq(count_maps("vhostd-unmapcheck"), 1);
	*(uint8_t *)mem_gpa_to_host(t, 0x100000, 1) = 1;
	mem_table_unmap(t);
	cr_assert_eq(count_maps("vhostd-unmapcheck"), 0);
}

/* ADD/REM_MEM_REG: tables built region by region share their mappings; a
 * region is mapped once, and unmapped with the last table holding it. */
Test(mem, add_and_remove_share_mappings)
{
	struct mem_region_desc a = { 0x100000, 0x10000, 0x7000000, 0 };
	struct mem_region_desc b = { 0x400000, 0x10000, 0x9000000, 0x1000 };
	int fa = test_memfd("vhostd-slot-a", 0x10000);
	int fb = test_memfd("vhostd-slot-b", 0x20000);
	struct mem_table *t1 = NULL, *t2 = NULL, *t3 = NULL;
	char err[256] = "";

	cr_assert_eq(mem_table_add(NULL, &a, fa, &t1, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(mem_table_add(t1, &b, fb, &t2, err, sizeof(err)), 0, "%s", err);
	close(fa);
	close(fb);
	cr_assert_eq(t2->nregions, 2);
	cr_assert_eq(count_maps("vhostd-slot-a"), 1, "region a mapped once for both tables");
	cr_assert_eq(t1->regions[0].host, t2->regions[0].host);
	*(uint8_t *)mem_gpa_to_host(t2, 0x400000 + 5, 1) = 0x5a;
	mem_table_unmap(t1);    /* the old table goes; a stays for t2 */
	cr_assert_eq(count_maps("vhostd-slot-a"), 1);
	cr_assert_eq(mem_table_remove(t2, &a, &t3, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(t3->nregions, 1);
	cr_assert_null(mem_gpa_to_host(t3, 0x100000, 1));
	cr_assert_eq(*(uint8_t *)mem_gpa_to_host(t3, 0x400000 + 5, 1), 0x5a);
	mem_table_unmap(t2);    /* the last table holding a */
	cr_assert_eq(count_maps("vhostd-slot-a"), 0);
	cr_assert_eq(count_maps("vhostd-slot-b"), 1);
	mem_table_unmap(t3);
	cr_assert_eq(count_maps("vhostd-slot-b"), 0);
}

Test(mem, add_refuses_overlap_and_bad_regions)
{
	struct mem_region_desc a = { 0x100000, 0x10000, 0x7000000, 0 };
	int fd = test_memfd("vhostd-slot-bad", 0x20000);
	struct mem_table *t = NULL, *t2 = NULL;
	char err[256] = "";
	const struct mem_region_desc bad[] = {
		{ 0x108000, 0x10000, 0x8000000, 0 },            /* guest range overlaps */
		{ 0x200000, 0x10000, 0x7008000, 0 },            /* user range overlaps */
		{ 0x200000, 0x10000, 0x8000000, 0x18000 },      /* beyond its file */
		{ 0x200000, 0, 0x8000000, 0 },                  /* empty */
		{ UINT64_MAX - 0x1000, 0x10000, 0x8000000, 0 }, /* wraps */
	};

	cr_assert_eq(mem_table_add(NULL, &a, fd, &t, err, sizeof(err)), 0, "%s", err);
	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		cr_assert_eq(mem_table_add(t, &bad[i], fd, &t2, err, sizeof(err)), -EINVAL,
			     "bad region %u accepted", i);
		cr_assert_neq(err[0], '\0');
	}
	cr_assert_eq(count_maps("vhostd-slot-bad"), 1, "a refused region stayed mapped");
	cr_assert_eq(t->nregions, 1, "the old table is untouched");
	mem_table_unmap(t);
	close(fd);
}

Test(mem, remove_unknown_region_refused)
{
	struct mem_region_desc a = { 0x100000, 0x10000, 0x7000000, 0 };
	struct mem_region_desc other = { 0x100000, 0x8000, 0x7000000, 0 };    /* size differs */
	int fd = test_memfd("vhostd-slot-rem", 0x10000);
	struct mem_table *t = NULL, *t2 = NULL;
	char err[256] = "";

	cr_assert_eq(mem_table_add(NULL, &a, fd, &t, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(mem_table_remove(t, &other, &t2, err, sizeof(err)), -ENOENT);
	cr_assert_neq(err[0], '\0');
	cr_assert_eq(mem_table_remove(NULL, &a, &t2, err, sizeof(err)), -ENOENT);
	mem_table_unmap(t);
	close(fd);
}

Test(mem, slots_fill_up)
{
	int fd = test_memfd("vhostd-slot-full", 0x1000);
	struct mem_table *t = NULL, *n;
	char err[256] = "";

	for (unsigned i = 0; i < MEM_MAX_SLOTS; i++) {
		struct mem_region_desc d = { i * 0x2000ull, 0x1000, 0x10000000 + i * 0x2000ull, 0 };
		cr_assert_eq(mem_table_add(t, &d, fd, &n, err, sizeof(err)), 0, "slot %u: %s", i, err);
		mem_table_unmap(t);
		t = n;
	}
	{
		struct mem_region_desc d = { 0x40000000, 0x1000, 0x50000000, 0 };
		cr_assert_eq(mem_table_add(t, &d, fd, &n, err, sizeof(err)), -ENOSPC);
	}
	cr_assert_not_null(mem_gpa_to_host(t, 300 * 0x2000ull, 0x1000));
	cr_assert_null(mem_gpa_to_host(t, 300 * 0x2000ull + 0x1000, 1), "the hole between slots");
	mem_table_unmap(t);
	close(fd);
}
