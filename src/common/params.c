/* Device parameters: defaults, validation, names; see params.h. */
#include "params.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

const char *be_kind_name(enum be_kind k)
{
	switch (k) {
	case BE_RAM: return "ram";
	case BE_NULL: return "null";
	case BE_FILE: return "file";
	}
	return "?";
}

void vdev_params_init(struct vdev_params *p)
{
	memset(p, 0, sizeof(*p));
	p->block_size = 512;
	p->backing = BE_RAM;
	/* The most we serve: QEMU's vhost-user-blk-pci asks for one queue per
	 * vCPU unless told otherwise, and refuses a back-end with fewer. */
	p->queues = VDEV_MAX_QUEUES;
}

int vdev_params_check(const struct vdev_params *p, char *err, size_t errlen)
{
	if (p->block_size < 512 || p->block_size > 65536 ||
	    (p->block_size & (p->block_size - 1))) {
		snprintf(err, errlen, "block_size %u is not a power of two from 512 to 65536",
			 p->block_size);
		return -EINVAL;
	}
	if (p->size == 0 && p->backing != BE_FILE) {
		snprintf(err, errlen, "size must be greater than zero");
		return -EINVAL;
	}
	if (p->size % p->block_size) {
		snprintf(err, errlen, "size %llu is not a multiple of block_size %u",
			 (unsigned long long)p->size, p->block_size);
		return -EINVAL;
	}
	if (p->queues < 1 || p->queues > VDEV_MAX_QUEUES) {
		snprintf(err, errlen, "queues %u is not between 1 and %d", p->queues,
			 VDEV_MAX_QUEUES);
		return -EINVAL;
	}
	if (strnlen(p->serial, sizeof(p->serial)) > VDEV_SERIAL_MAX) {
		snprintf(err, errlen, "serial is longer than %d bytes", VDEV_SERIAL_MAX);
		return -EINVAL;
	}
	if (p->backing == BE_FILE && p->path[0] != '/') {
		snprintf(err, errlen, "backing path must be absolute");
		return -EINVAL;
	}
	if (p->backing > BE_FILE) {
		snprintf(err, errlen, "unknown backing");
		return -EINVAL;
	}
	return 0;
}
