/* virtio-blk features and config space; see blk.h. */
#include "blk.h"

#include <string.h>

#define BIT(n) (1ULL << (n))

uint64_t blkcfg_features(const struct vblk *b)
{
	uint64_t f = BIT(VIRTIO_F_VERSION_1) | BIT(VIRTIO_RING_F_INDIRECT_DESC) |
		     BIT(VIRTIO_RING_F_EVENT_IDX) |
		     BIT(VIRTIO_BLK_F_SIZE_MAX) | BIT(VIRTIO_BLK_F_SEG_MAX) |
		     BIT(VIRTIO_BLK_F_BLK_SIZE) | BIT(VIRTIO_BLK_F_TOPOLOGY) |
		     BIT(VIRTIO_BLK_F_FLUSH) | BIT(VIRTIO_BLK_F_CONFIG_WCE) |
		     BIT(VIRTIO_BLK_F_MQ);

	/* Packed rings halve the cache lines a request costs; a driver that
	 * does not know them negotiates split rings. */
	if (b->params.packed)
		f |= BIT(VIRTIO_F_RING_PACKED);
	if (vblk_readonly(b))
		f |= BIT(VIRTIO_BLK_F_RO);
	else {
		if (b->be && b->be->can_discard)
			f |= BIT(VIRTIO_BLK_F_DISCARD);
		if (b->be && b->be->can_write_zeroes)
			f |= BIT(VIRTIO_BLK_F_WRITE_ZEROES);
	}
	return f;
}

void blkcfg_build(const struct vblk *b, struct virtio_blk_config *cfg)
{
	uint32_t bs = b->params.block_size;
	uint32_t pbs = b->be ? b->be->physical_block : 0;
	uint32_t exp = 0;

	/* Never advertise a block smaller than the backing device's: the
	 * guest would send writes the device cannot take directly. */
	if (b->be && b->be->logical_block > bs)
		bs = b->be->logical_block;
	while (pbs > bs && (bs << (exp + 1)) <= pbs && exp < 8)
		exp++;

	memset(cfg, 0, sizeof(*cfg));
	cfg->capacity = (b->be ? b->be->size : b->params.size) / 512;
	cfg->size_max = VBLK_SIZE_MAX;
	cfg->seg_max = VQ_SEG_MAX;
	cfg->blk_size = bs;
	cfg->topology.physical_block_exp = exp;
	cfg->topology.alignment_offset = 0;
	cfg->topology.min_io_size = 1;
	cfg->topology.opt_io_size = 0;
	cfg->writeback = b->wce;
	cfg->num_queues = b->params.queues;
	cfg->max_discard_sectors = VBLK_MAX_DISCARD_SECTORS;
	if (b->be && b->be->discard_max && b->be->discard_max / 512 < cfg->max_discard_sectors)
		cfg->max_discard_sectors = b->be->discard_max / 512;
	cfg->max_discard_seg = VBLK_MAX_DISCARD_SEG;
	cfg->discard_sector_alignment = bs / 512;
	if (b->be && b->be->discard_granularity > bs)
		cfg->discard_sector_alignment = b->be->discard_granularity / 512;
	cfg->max_write_zeroes_sectors = VBLK_MAX_DISCARD_SECTORS;
	cfg->max_write_zeroes_seg = VBLK_MAX_DISCARD_SEG;
	cfg->write_zeroes_may_unmap = 1;
}
