/* virtio-blk config space and feature bits (src/blkcfg.c). */
#include <criterion/criterion.h>
#include <stddef.h>
#include <string.h>

#include "blk.h"

#define BIT(n) (1ULL << (n))

static struct vblk *mkblk(uint64_t size, uint32_t bs, uint16_t queues, bool ro,
			  enum be_kind kind)
{
	static struct vblk b;
	char err[256];

	memset(&b, 0, sizeof(b));
	vdev_params_init(&b.params);
	b.params.size = size;
	b.params.block_size = bs;
	b.params.queues = queues;
	b.params.readonly = ro;
	b.params.backing = kind;
	b.wce = true;
	cr_assert_eq(vdev_params_check(&b.params, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(be_open(&b.params, &b.be, err, sizeof(err)), 0, "%s", err);
	return &b;
}

Test(blkcfg, layout_matches_spec)
{
	/* virtio 1.2 §5.2.4 offsets */
	cr_assert_eq(offsetof(struct virtio_blk_config, capacity), 0);
	cr_assert_eq(offsetof(struct virtio_blk_config, size_max), 8);
	cr_assert_eq(offsetof(struct virtio_blk_config, seg_max), 12);
	cr_assert_eq(offsetof(struct virtio_blk_config, geometry), 16);
	cr_assert_eq(offsetof(struct virtio_blk_config, blk_size), 20);
	cr_assert_eq(offsetof(struct virtio_blk_config, topology), 24);
	cr_assert_eq(offsetof(struct virtio_blk_config, writeback), 32);
	cr_assert_eq(offsetof(struct virtio_blk_config, num_queues), 34);
	cr_assert_eq(offsetof(struct virtio_blk_config, max_discard_sectors), 36);
	cr_assert_eq(offsetof(struct virtio_blk_config, max_discard_seg), 40);
	cr_assert_eq(offsetof(struct virtio_blk_config, discard_sector_alignment), 44);
	cr_assert_eq(offsetof(struct virtio_blk_config, max_write_zeroes_sectors), 48);
	cr_assert_eq(offsetof(struct virtio_blk_config, max_write_zeroes_seg), 52);
	cr_assert_eq(offsetof(struct virtio_blk_config, write_zeroes_may_unmap), 56);
	cr_assert_eq(offsetof(struct virtio_blk_config, max_secure_erase_sectors), 60);
}

Test(blkcfg, values)
{
	struct vblk *b = mkblk(1ull << 30, 4096, 4, false, BE_RAM);
	struct virtio_blk_config c;

	memset(&c, 0xff, sizeof(c));
	blkcfg_build(b, &c);
	cr_assert_eq(c.capacity, (1ull << 30) / 512, "capacity is in 512-byte sectors");
	cr_assert_eq(c.blk_size, 4096);
	cr_assert_eq(c.num_queues, 4);
	cr_assert_eq(c.seg_max, VQ_SEG_MAX);
	cr_assert_eq(c.size_max, VBLK_SIZE_MAX);
	cr_assert_eq(c.writeback, 1);
	cr_assert_eq(c.max_discard_sectors, VBLK_MAX_DISCARD_SECTORS);
	cr_assert_eq(c.max_discard_seg, VBLK_MAX_DISCARD_SEG);
	cr_assert_eq(c.discard_sector_alignment, 8, "4096-byte blocks are 8 sectors");
	cr_assert_eq(c.max_write_zeroes_sectors, VBLK_MAX_DISCARD_SECTORS);
	cr_assert_eq(c.max_write_zeroes_seg, VBLK_MAX_DISCARD_SEG);
	cr_assert_eq(c.write_zeroes_may_unmap, 1);
	cr_assert_eq(c.topology.physical_block_exp, 0);
	cr_assert_eq(c.topology.min_io_size, 1);
	cr_assert_eq(c.geometry.cylinders, 0);
	cr_assert_eq(c.unused0, 0);
	cr_assert_eq(c.max_secure_erase_sectors, 0);
	/* seg_max leaves room for header and status in the iovec budget */
	cr_assert_leq(c.seg_max + 2, VQ_MAX_IOV);
	be_close(b->be);
}

Test(blkcfg, values_small_device)
{
	struct vblk *b = mkblk(512, 512, 1, false, BE_NULL);
	struct virtio_blk_config c;

	b->wce = false;
	blkcfg_build(b, &c);
	cr_assert_eq(c.capacity, 1);
	cr_assert_eq(c.blk_size, 512);
	cr_assert_eq(c.num_queues, 1);
	cr_assert_eq(c.writeback, 0);
	cr_assert_eq(c.discard_sector_alignment, 1);
	be_close(b->be);

	b = mkblk(65536ull * 3, 65536, VDEV_MAX_QUEUES, false, BE_RAM);
	blkcfg_build(b, &c);
	cr_assert_eq(c.capacity, 3 * 128);
	cr_assert_eq(c.blk_size, 65536);
	cr_assert_eq(c.num_queues, VDEV_MAX_QUEUES);
	cr_assert_eq(c.discard_sector_alignment, 128);
	be_close(b->be);
}

static const uint64_t always = BIT(VIRTIO_F_VERSION_1) | BIT(VIRTIO_RING_F_INDIRECT_DESC) |
	BIT(VIRTIO_RING_F_EVENT_IDX) | BIT(VIRTIO_BLK_F_SEG_MAX) | BIT(VIRTIO_BLK_F_SIZE_MAX) |
	BIT(VIRTIO_BLK_F_BLK_SIZE) | BIT(VIRTIO_BLK_F_FLUSH) | BIT(VIRTIO_BLK_F_CONFIG_WCE) |
	BIT(VIRTIO_BLK_F_MQ) | BIT(VIRTIO_BLK_F_TOPOLOGY);

Test(blkcfg, features_rw)
{
	struct vblk *b = mkblk(1 << 20, 512, 2, false, BE_RAM);
	uint64_t f = blkcfg_features(b);

	cr_assert_eq(f & always, always, "features 0x%llx", (unsigned long long)f);
	cr_assert(f & BIT(VIRTIO_BLK_F_DISCARD));
	cr_assert(f & BIT(VIRTIO_BLK_F_WRITE_ZEROES));
	cr_assert_eq(f & BIT(VIRTIO_BLK_F_RO), 0);
	cr_assert_eq(f & BIT(30), 0, "vhost-user's PROTOCOL_FEATURES is not a blk feature");
	be_close(b->be);
}

Test(blkcfg, features_readonly)
{
	struct vblk *b = mkblk(1 << 20, 512, 1, true, BE_RAM);
	uint64_t f = blkcfg_features(b);

	cr_assert_eq(f & always, always);
	cr_assert(f & BIT(VIRTIO_BLK_F_RO));
	cr_assert_eq(f & BIT(VIRTIO_BLK_F_DISCARD), 0);
	cr_assert_eq(f & BIT(VIRTIO_BLK_F_WRITE_ZEROES), 0);
	be_close(b->be);
}

Test(blkcfg, features_follow_backend)
{
	struct vblk *b = mkblk(1 << 20, 512, 1, false, BE_NULL);

	b->be->can_discard = false;
	cr_assert_eq(blkcfg_features(b) & BIT(VIRTIO_BLK_F_DISCARD), 0);
	cr_assert(blkcfg_features(b) & BIT(VIRTIO_BLK_F_WRITE_ZEROES));
	b->be->can_write_zeroes = false;
	cr_assert_eq(blkcfg_features(b) & BIT(VIRTIO_BLK_F_WRITE_ZEROES), 0);
	be_close(b->be);
	b->be = NULL;
	cr_assert_eq(blkcfg_features(b) & (BIT(VIRTIO_BLK_F_DISCARD) |
					   BIT(VIRTIO_BLK_F_WRITE_ZEROES)), 0);
}
