/* Backends: where a device's blocks live, behind one ops table.
 * Called from engine threads (submit) and the control thread (open, close,
 * resize — only while no queue of the device runs).  A backend trusts its
 * caller: offsets and lengths were range-checked by the request parser. */
#ifndef VHOSTD_BACKEND_H
#define VHOSTD_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "vdev.h"

enum be_op {
	BE_OP_READ,
	BE_OP_WRITE,
	BE_OP_FLUSH,
	BE_OP_DISCARD,
	BE_OP_WRITE_ZEROES,
};

struct be_io {
	enum be_op op;
	bool unmap;             /* WRITE_ZEROES: may deallocate */
	uint64_t offset;        /* bytes */
	uint64_t len;           /* bytes (READ/WRITE: sum of iov lengths) */
	struct iovec *iov;      /* READ/WRITE: guest buffers */
	unsigned iovcnt;
};

struct backend;

struct be_ops {
	const char *name;
	/* Required.  Open for p (p->size is final); -errno and err on failure. */
	int (*open)(const struct vdev_params *p, struct backend **out,
		    char *err, size_t errlen);
	/* Required.  Release everything; no I/O is in flight. */
	void (*close)(struct backend *be);
	/* Optional.  Change the size keeping the data that still fits. */
	int (*resize)(struct backend *be, uint64_t size);
	/* Required.  Carry out io synchronously: 0 or -errno (-EIO, -ENOSPC..). */
	int (*submit)(struct backend *be, const struct be_io *io);
};

struct backend {
	const struct be_ops *ops;
	uint64_t size;
	bool can_discard;       /* advertise DISCARD */
	bool can_write_zeroes;  /* advertise WRITE_ZEROES */
	bool has_cache;         /* FLUSH means something */
};

extern const struct be_ops be_ram_ops;
extern const struct be_ops be_null_ops;

/* Open the backend p->backing names. */
int be_open(const struct vdev_params *p, struct backend **out, char *err, size_t errlen);
static inline void be_close(struct backend *be)
{
	if (be)
		be->ops->close(be);
}

/* iovec helpers shared by backends and the request parser. */
size_t iov_size(const struct iovec *iov, unsigned cnt);
/* Copy between a flat buffer and iov (starting `skip` bytes in); returns
 * bytes copied. */
size_t iov_to_buf(const struct iovec *iov, unsigned cnt, size_t skip, void *buf, size_t len);
size_t iov_from_buf(const struct iovec *iov, unsigned cnt, size_t skip, const void *buf, size_t len);

#endif
