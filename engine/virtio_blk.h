/* virtio-blk as the virtio 1.2 specification (§5.2) lays it out: feature
 * bits, request types and status values, the request header, discard
 * segments and the configuration space.  Wire definitions only, shared by
 * the device model (blk.c), its config space (blkcfg.c) and the protocol
 * layer that offers the features.  Little-endian host assumed. */
#ifndef VHOSTD_VIRTIO_BLK_H
#define VHOSTD_VIRTIO_BLK_H

#include <stdint.h>

/* virtio-blk request types and status values (virtio 1.2 §5.2.6). */
#define VIRTIO_BLK_T_IN           0
#define VIRTIO_BLK_T_OUT          1
#define VIRTIO_BLK_T_FLUSH        4
#define VIRTIO_BLK_T_GET_ID       8
#define VIRTIO_BLK_T_DISCARD      11
#define VIRTIO_BLK_T_WRITE_ZEROES 13

#define VIRTIO_BLK_S_OK     0
#define VIRTIO_BLK_S_IOERR  1
#define VIRTIO_BLK_S_UNSUPP 2

#define VIRTIO_BLK_ID_BYTES 20
#define VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP 1

#define VIRTIO_BLK_F_SIZE_MAX     1
#define VIRTIO_BLK_F_SEG_MAX      2
#define VIRTIO_BLK_F_RO           5
#define VIRTIO_BLK_F_BLK_SIZE     6
#define VIRTIO_BLK_F_FLUSH        9
#define VIRTIO_BLK_F_TOPOLOGY     10
#define VIRTIO_BLK_F_CONFIG_WCE   11
#define VIRTIO_BLK_F_MQ           12
#define VIRTIO_BLK_F_DISCARD      13
#define VIRTIO_BLK_F_WRITE_ZEROES 14

#define VIRTIO_RING_F_INDIRECT_DESC 28
#define VIRTIO_RING_F_EVENT_IDX     29
#define VIRTIO_F_VERSION_1          32
#define VIRTIO_F_RING_PACKED        34

/* virtio 1.2 §5.2.4, little-endian, packed as the spec lays it out. */
struct virtio_blk_config {
	uint64_t capacity;
	uint32_t size_max;
	uint32_t seg_max;
	struct {
		uint16_t cylinders;
		uint8_t heads;
		uint8_t sectors;
	} geometry;
	uint32_t blk_size;
	struct {
		uint8_t physical_block_exp;
		uint8_t alignment_offset;
		uint16_t min_io_size;
		uint32_t opt_io_size;
	} topology;
	uint8_t writeback;
	uint8_t unused0;
	uint16_t num_queues;
	uint32_t max_discard_sectors;
	uint32_t max_discard_seg;
	uint32_t discard_sector_alignment;
	uint32_t max_write_zeroes_sectors;
	uint32_t max_write_zeroes_seg;
	uint8_t write_zeroes_may_unmap;
	uint8_t unused1[3];
	uint32_t max_secure_erase_sectors;
	uint32_t max_secure_erase_seg;
	uint32_t secure_erase_sector_alignment;
} __attribute__((packed));

_Static_assert(sizeof(struct virtio_blk_config) == 72, "virtio_blk_config layout");

struct vblk_req_hdr {
	uint32_t type;
	uint32_t ioprio;
	uint64_t sector;
};

struct vblk_discard_seg {
	uint64_t sector;
	uint32_t num_sectors;
	uint32_t flags;
};

_Static_assert(sizeof(struct vblk_req_hdr) == 16, "virtio_blk_outhdr layout");
_Static_assert(sizeof(struct vblk_discard_seg) == 16, "virtio_blk_discard_write_zeroes layout");

#endif
