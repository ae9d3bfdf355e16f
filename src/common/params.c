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
	case BE_RBD: return "rbd";
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
	p->packed = true;
	strcpy(p->rbd.conf, VDEV_RBD_CONF_DEFAULT);
	strcpy(p->rbd.id, VDEV_RBD_ID_DEFAULT);
}

bool vdev_rbd_name_valid(const char *s)
{
	size_t n = strnlen(s, VDEV_RBD_NAME_MAX + 1);

	if (n == 0 || n > VDEV_RBD_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = s[i];
		if (c <= 0x20 || c >= 0x7f || c == '/' || c == '@')
			return false;
	}
	return true;
}

static bool same_rbd(const struct vdev_rbd *a, const struct vdev_rbd *b)
{
	return strcmp(a->pool, b->pool) == 0 && strcmp(a->ns, b->ns) == 0 &&
	       strcmp(a->image, b->image) == 0 && strcmp(a->snap, b->snap) == 0 &&
	       strcmp(a->conf, b->conf) == 0 && strcmp(a->id, b->id) == 0 &&
	       a->shared == b->shared && a->timeout == b->timeout;
}

bool vdev_same_backing(const struct vdev_params *a, const struct vdev_params *b)
{
	if (a->backing != b->backing)
		return false;
	if (a->backing == BE_FILE)
		return strcmp(a->path, b->path) == 0;
	if (a->backing == BE_RBD)
		return same_rbd(&a->rbd, &b->rbd);
	return true;
}

static int rbd_check(const struct vdev_params *p, char *err, size_t errlen)
{
	const struct vdev_rbd *r = &p->rbd;

	if (!vdev_rbd_name_valid(r->pool) || !vdev_rbd_name_valid(r->image) ||
	    (r->ns[0] && !vdev_rbd_name_valid(r->ns)) ||
	    (r->snap[0] && !vdev_rbd_name_valid(r->snap))) {
		snprintf(err, errlen, "rbd backing needs a pool and an image name of 1 to %d "
			 "printable bytes without '/', '@' or spaces", VDEV_RBD_NAME_MAX);
		return -EINVAL;
	}
	if (r->conf[0] != '/' || strnlen(r->conf, sizeof(r->conf)) == sizeof(r->conf)) {
		snprintf(err, errlen, "ceph_conf must be an absolute path of at most %d bytes",
			 VDEV_RBD_CONF_MAX);
		return -EINVAL;
	}
	if (!r->id[0] || strnlen(r->id, sizeof(r->id)) == sizeof(r->id)) {
		snprintf(err, errlen, "ceph_id must be 1 to %d bytes", VDEV_RBD_ID_MAX);
		return -EINVAL;
	}
	if (r->timeout > VDEV_RBD_TIMEOUT_MAX) {
		snprintf(err, errlen, "rbd_timeout %u is more than %d seconds", r->timeout,
			 VDEV_RBD_TIMEOUT_MAX);
		return -EINVAL;
	}
	return 0;
}

int vdev_params_check(const struct vdev_params *p, char *err, size_t errlen)
{
	if (p->block_size < 512 || p->block_size > 65536 ||
	    (p->block_size & (p->block_size - 1))) {
		snprintf(err, errlen, "block_size %u is not a power of two from 512 to 65536",
			 p->block_size);
		return -EINVAL;
	}
	if (p->size == 0 && p->backing != BE_FILE && p->backing != BE_RBD) {
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
	if (p->backing > BE_RBD) {
		snprintf(err, errlen, "unknown backing");
		return -EINVAL;
	}
	if (p->backing == BE_RBD)
		return rbd_check(p, err, errlen);
	return 0;
}
