/* Definitions every layer shares: a device's parameters, the backend kinds
 * and the engine's options.  They live in the common leaf so that the engine
 * (which opens backends and builds virtio-blk devices from them) never needs
 * a header of the layers above it.  Pure functions (params.c). */
#ifndef VHOSTD_PARAMS_H
#define VHOSTD_PARAMS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VDEV_NAME_MAX    64
#define VDEV_SERIAL_MAX  20     /* VIRTIO_BLK_ID_BYTES */
#define VDEV_MAX_QUEUES  64     /* QEMU uses one per vCPU by default */
#define VDEV_ERR_MAX     256

enum be_kind {
	BE_RAM = 0,     /* zeroed anonymous memory of `size` bytes */
	BE_NULL,        /* accepts everything, moves no data */
	BE_FILE,        /* regular file or block device at `path` (io_uring) */
	BE_RBD,         /* Ceph RBD image `rbd` (librbd) */
};

#define VDEV_RBD_NAME_MAX 127           /* pool, namespace, image, snapshot */
#define VDEV_RBD_CONF_MAX 1023          /* ceph_conf path */
#define VDEV_RBD_ID_MAX   63            /* ceph_id (client.ID) */
#define VDEV_RBD_TIMEOUT_MAX 86400      /* rbd_timeout, seconds */
#define VDEV_RBD_CONF_DEFAULT "/etc/ceph/ceph.conf"
#define VDEV_RBD_ID_DEFAULT   "admin"

/* A Ceph RBD image and how to reach it (BE_RBD).  Names are what Ceph
 * allows in them, minus '/', '@' and whitespace (they separate the parts of
 * `backing=rbd:POOL[/NAMESPACE]/IMAGE[@SNAP]`). */
struct vdev_rbd {
	char pool[VDEV_RBD_NAME_MAX + 1];
	char ns[VDEV_RBD_NAME_MAX + 1];         /* "" = the default namespace */
	char image[VDEV_RBD_NAME_MAX + 1];
	char snap[VDEV_RBD_NAME_MAX + 1];       /* "" = the head; a snapshot is
						 * served read-only whatever
						 * `readonly` says */
	char conf[VDEV_RBD_CONF_MAX + 1];       /* ceph.conf (monitors, keyring) */
	char id[VDEV_RBD_ID_MAX + 1];           /* client id, "admin" */
	bool shared;            /* other writers allowed: no exclusive lock taken */
	uint32_t timeout;       /* s an OSD request may wait, 0 = for ever */
};

/* I/O limits of a device or of a group of devices: per second, 0 =
 * unlimited.  A burst is how much the bucket may hold beyond the steady
 * rate (requests, bytes); 0 = a tenth of a second's worth. */
struct vdev_limits {
	uint64_t iops;
	uint64_t bps, read_bps, write_bps;      /* bytes per second */
	uint64_t iops_burst;                    /* requests */
	uint64_t bps_burst;                     /* bytes */
};

struct vdev_params {
	uint64_t size;                  /* bytes; multiple of block_size; 0 only
					 * for BE_FILE and BE_RBD: the file's,
					 * device's or image's size */
	uint32_t block_size;            /* 512..65536, power of two */
	enum be_kind backing;
	char path[4096];                /* BE_FILE only: absolute path */
	bool readonly;
	uint16_t queues;                /* 1..VDEV_MAX_QUEUES */
	char serial[VDEV_SERIAL_MAX + 1];
	bool allow_shrink;              /* a smaller size may cut data off the end */
	struct vdev_limits limits;      /* this device's own */
	char group[VDEV_NAME_MAX + 1];  /* throttle group shared with others, "" = none */
	struct vdev_rbd rbd;            /* BE_RBD only (kept, but unused, otherwise) */
	bool packed;                    /* offer packed virtqueues (VIRTIO_F_RING_PACKED) */
};

enum core_poll_mode {
	CORE_POLL_ADAPTIVE = 0,         /* busy-poll while busy, sleep when idle */
	CORE_POLL_ALWAYS,               /* never sleep (lowest latency, 100% cpu) */
	CORE_POLL_INTERRUPT,            /* always sleep on kicks */
};

struct core_opts {
	unsigned nthreads;              /* engine poll threads; 0 = 1 */
	const int *cpus;                /* optional: cpu for thread i (-1 = any) */
	enum core_poll_mode poll_mode;
	unsigned idle_us;               /* adaptive: idle time before sleeping; 0 = default */
	unsigned uring_entries;         /* io_uring SQ size per engine thread; 0 = default */
};

/* Fill defaults: size 0 (must be set), block_size 512, ram, rw,
 * VDEV_MAX_QUEUES queues, packed rings offered; rbd: ceph_conf /etc/ceph/ceph.conf, id admin. */
void vdev_params_init(struct vdev_params *p);
/* 0 if the parameters make a valid device, else -EINVAL and a one-sentence
 * reason in err. */
int vdev_params_check(const struct vdev_params *p, char *err, size_t errlen);
const char *be_kind_name(enum be_kind k);
/* Whether a and b name the same backing, opened the same way (kind, file
 * path, rbd image, snapshot, cluster, client, sharing, timeout). */
bool vdev_same_backing(const struct vdev_params *a, const struct vdev_params *b);
/* A valid name of a pool, namespace, image or snapshot: 1..VDEV_RBD_NAME_MAX
 * printable ASCII bytes without '/', '@' or whitespace. */
bool vdev_rbd_name_valid(const char *s);

#endif
