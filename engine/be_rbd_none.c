/* The rbd backend of a build without librbd: an rbd backing is refused
 * with the reason. */
#include "backend.h"

#include <errno.h>
#include <stdio.h>

static int none_open(const struct vdev_params *p, struct backend **out, char *err,
		     size_t errlen)
{
	snprintf(err, errlen, "this vhostd was built without Ceph RBD support (librbd-dev)");
	return -EOPNOTSUPP;
}

const struct be_ops be_rbd_ops = {
	.name = "rbd",
	.open = none_open,
};
