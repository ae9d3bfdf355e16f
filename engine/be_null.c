/* The null backend: every request succeeds and no data moves (reads leave
 * the guest's buffers as they were).  For measuring the data path alone. */
#include "backend.h"

#include <errno.h>
#include <stdlib.h>

static int null_open(const struct vdev_params *p, struct backend **out,
		     char *err, size_t errlen)
{
	struct backend *be = calloc(1, sizeof(*be));
	if (!be)
		return -ENOMEM;
	be->ops = &be_null_ops;
	be->event_fd = -1;
	be->size = p->size;
	be->can_discard = true;
	be->can_write_zeroes = true;
	*out = be;
	return 0;
}

static void null_close(struct backend *be)
{
	free(be);
}

static int null_holds_data(struct backend *be, uint64_t off, uint64_t len)
{
	return 0;       /* it never held any */
}

static int null_resize(struct backend *be, uint64_t size)
{
	be->size = size;
	return 0;
}

static int null_submit(struct backend *be, const struct be_io *io, struct be_ctx *ctx,
		       unsigned *nsqe)
{
	return 0;
}

const struct be_ops be_null_ops = {
	.name = "null",
	.open = null_open,
	.close = null_close,
	.resize = null_resize,
	.holds_data = null_holds_data,
	.submit = null_submit,
};
