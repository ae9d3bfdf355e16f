/* The file backend: a regular file or a block device, read and written
 * through the engine thread's io_uring straight from and into guest memory
 * (no bounce buffer).  O_DIRECT when the block size and the request's
 * alignment allow it, the page cache otherwise.  Work io_uring cannot do
 * (BLKDISCARD, zeroing on filesystems without FALLOC_FL_ZERO_RANGE) runs on
 * the engine's worker threads.  Geometry of block devices comes from ioctls
 * and sysfs through libudev.
 * open/close: control thread.  submit: engine threads. */
#include "backend.h"

#include <errno.h>
#include <fcntl.h>
#include <libudev.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <liburing.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "log.h"

#define TMPFS_MAGIC_ 0x01021994

struct file_backend {
	struct backend be;
	int fd;                 /* O_DIRECT when direct */
	int fd_buffered;        /* for requests O_DIRECT cannot take */
	bool direct;
	bool is_blk;
	bool zero_range;        /* FALLOC_FL_ZERO_RANGE works here */
	uint32_t dio_align;
	dev_t dev;
	ino_t ino;
	char path[4096];
};

#define to_file(b) ((struct file_backend *)(b))

/* Files in use by some device: one device per backing. */
static pthread_mutex_t inuse_lock = PTHREAD_MUTEX_INITIALIZER;
static struct file_backend **inuse;
static unsigned ninuse, capinuse;

static int claim(struct file_backend *f)
{
	int rc = 0;
	pthread_mutex_lock(&inuse_lock);
	for (unsigned i = 0; i < ninuse; i++)
		if (inuse[i]->dev == f->dev && inuse[i]->ino == f->ino)
			rc = -EBUSY;
	if (rc == 0 && ninuse == capinuse) {
		unsigned cap = capinuse ? capinuse * 2 : 16;
		void *n = realloc(inuse, cap * sizeof(*inuse));
		if (!n)
			rc = -ENOMEM;
		else {
			inuse = n;
			capinuse = cap;
		}
	}
	if (rc == 0)
		inuse[ninuse++] = f;
	pthread_mutex_unlock(&inuse_lock);
	return rc;
}

static void unclaim(struct file_backend *f)
{
	pthread_mutex_lock(&inuse_lock);
	for (unsigned i = 0; i < ninuse; i++)
		if (inuse[i] == f) {
			inuse[i] = inuse[--ninuse];
			break;
		}
	pthread_mutex_unlock(&inuse_lock);
}

static void udev_geometry(struct file_backend *f, dev_t rdev)
{
	struct udev *udev = udev_new();
	struct udev_device *d;
	const char *v;

	if (!udev)
		return;
	d = udev_device_new_from_devnum(udev, 'b', rdev);
	if (d) {
		if ((v = udev_device_get_sysattr_value(d, "queue/discard_granularity")))
			f->be.discard_granularity = strtoul(v, NULL, 10);
		if ((v = udev_device_get_sysattr_value(d, "queue/discard_max_bytes")))
			f->be.discard_max = strtoull(v, NULL, 10);
		if ((v = udev_device_get_sysattr_value(d, "queue/rotational")))
			f->be.rotational = v[0] == '1';
		v = udev_device_get_property_value(d, "ID_SERIAL_SHORT");
		if (!v)
			v = udev_device_get_sysattr_value(d, "device/serial");
		if (!v)
			v = udev_device_get_sysattr_value(d, "serial");
		if (v) {
			while (*v == ' ')
				v++;
			snprintf(f->be.serial, sizeof(f->be.serial), "%s", v);
		}
		udev_device_unref(d);
	}
	udev_unref(udev);
}

static int open_blk(struct file_backend *f, const struct vdev_params *p, int flags,
		    struct stat *st, char *err, size_t errlen)
{
	uint64_t bytes = 0;
	int lbs = 512;
	unsigned pbs = 512;

	/* O_EXCL on a block device: nobody else (a mount, another device)
	 * may have it, and we fail with EBUSY if somebody does. */
	f->fd = open(f->path, flags | O_EXCL | O_DIRECT);
	f->direct = f->fd >= 0;
	if (f->fd < 0 && errno == EINVAL)
		f->fd = open(f->path, flags | O_EXCL);
	if (f->fd < 0) {
		int e = errno;
		snprintf(err, errlen, "cannot open %s: %s", f->path,
			 e == EBUSY ? "device is in use" : strerror(e));
		return -e;
	}
	if (ioctl(f->fd, BLKGETSIZE64, &bytes) < 0 || ioctl(f->fd, BLKSSZGET, &lbs) < 0) {
		int e = errno;
		snprintf(err, errlen, "cannot read the geometry of %s: %s", f->path, strerror(e));
		return -e;
	}
	ioctl(f->fd, BLKPBSZGET, &pbs);
	f->is_blk = true;
	f->be.rdev = st->st_rdev;
	f->be.logical_block = lbs;
	f->be.physical_block = pbs;
	f->dio_align = lbs;
	f->zero_range = true;
	udev_geometry(f, st->st_rdev);
	f->be.can_discard = f->be.discard_max > 0;
	if (p->size > bytes) {
		snprintf(err, errlen, "size %llu is larger than %s (%llu bytes)",
			 (unsigned long long)p->size, f->path, (unsigned long long)bytes);
		return -EINVAL;
	}
	f->be.size = p->size ? p->size : bytes;
	return 0;
}

static int open_reg(struct file_backend *f, const struct vdev_params *p, int flags,
		    struct stat *st, char *err, size_t errlen)
{
	struct statfs sfs;

	f->fd = open(f->path, flags | O_DIRECT);
	f->direct = f->fd >= 0;
	if (f->fd < 0 && errno == EINVAL)
		f->fd = open(f->path, flags);
	if (f->fd < 0) {
		int e = errno;
		snprintf(err, errlen, "cannot open %s: %s", f->path, strerror(e));
		return -e;
	}
	f->dio_align = st->st_blksize >= 512 && st->st_blksize <= 4096 ? 512 : 4096;
	f->be.logical_block = 512;
	f->be.physical_block = st->st_blksize;
	f->be.can_discard = true;
	f->zero_range = !(fstatfs(f->fd, &sfs) == 0 && sfs.f_type == TMPFS_MAGIC_);
	if (p->size == 0) {
		if (st->st_size == 0) {
			snprintf(err, errlen, "%s is empty: give a size", f->path);
			return -EINVAL;
		}
		f->be.size = st->st_size - st->st_size % p->block_size;
		if (f->be.size == 0) {
			snprintf(err, errlen, "%s is smaller than one block", f->path);
			return -EINVAL;
		}
	} else {
		f->be.size = p->size;
		/* A larger size grows the file (sparse); a smaller one uses
		 * the start of it: we never cut a user's file short. */
		if ((uint64_t)st->st_size < p->size && !p->readonly &&
		    ftruncate(f->fd, p->size) < 0) {
			int e = errno;
			snprintf(err, errlen, "cannot extend %s to %llu bytes: %s", f->path,
				 (unsigned long long)p->size, strerror(e));
			return -e;
		}
		if ((uint64_t)st->st_size < p->size && p->readonly) {
			snprintf(err, errlen, "%s is smaller than size and read-only", f->path);
			return -EINVAL;
		}
	}
	return 0;
}

static void file_close(struct backend *be);

static int file_open(const struct vdev_params *p, struct backend **out, char *err, size_t errlen)
{
	struct file_backend *f = calloc(1, sizeof(*f));
	int flags = (p->readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC;
	struct stat st;
	int rc;

	if (!f)
		return -ENOMEM;
	f->fd = f->fd_buffered = -1;
	f->be.ops = &be_file_ops;
	f->be.event_fd = -1;
	f->be.has_cache = true;
	f->be.can_write_zeroes = true;
	snprintf(f->path, sizeof(f->path), "%s", p->path);

	if (stat(f->path, &st) < 0) {
		if (errno != ENOENT || p->readonly) {
			rc = -errno;
			snprintf(err, errlen, "cannot use %s: %s", f->path, strerror(errno));
			goto fail;
		}
		if (p->size == 0) {
			snprintf(err, errlen, "%s does not exist; give a size to create it", f->path);
			rc = -EINVAL;
			goto fail;
		}
		rc = open(f->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (rc < 0 || ftruncate(rc, p->size) < 0 || fstat(rc, &st) < 0) {
			int e = errno;
			if (rc >= 0)
				close(rc);
			snprintf(err, errlen, "cannot create %s: %s", f->path, strerror(e));
			rc = -e;
			goto fail;
		}
		close(rc);
		vlog(LOG_INFO, "created sparse file %s of %llu bytes", f->path,
		     (unsigned long long)p->size);
	}
	if (S_ISBLK(st.st_mode))
		rc = open_blk(f, p, flags, &st, err, errlen);
	else if (S_ISREG(st.st_mode))
		rc = open_reg(f, p, flags, &st, err, errlen);
	else {
		snprintf(err, errlen, "%s is not a regular file or a block device", f->path);
		rc = -EINVAL;
	}
	if (rc < 0)
		goto fail;
	if (f->be.size % p->block_size) {
		snprintf(err, errlen, "size %llu of %s is not a multiple of block_size %u",
			 (unsigned long long)f->be.size, f->path, p->block_size);
		rc = -EINVAL;
		goto fail;
	}
	f->dev = S_ISBLK(st.st_mode) ? st.st_rdev : st.st_dev;
	f->ino = S_ISBLK(st.st_mode) ? 0 : st.st_ino;
	rc = claim(f);
	if (rc < 0) {
		snprintf(err, errlen, "%s is already the backing of another device", f->path);
		goto fail;
	}
	/* Direct I/O only when every request the guest may send can be
	 * aligned: the block size must be a multiple of the device's. */
	if (f->direct && p->block_size % f->dio_align) {
		close(f->fd);
		f->fd = -1;
		f->direct = false;
	}
	f->fd_buffered = open(f->path, flags);
	if (f->fd_buffered < 0) {
		rc = -errno;
		snprintf(err, errlen, "cannot open %s: %s", f->path, strerror(errno));
		unclaim(f);
		goto fail;
	}
	if (f->fd < 0)
		f->fd = f->fd_buffered;
	*out = &f->be;
	vlog(LOG_INFO, "opened %s: %s, %llu bytes, %s I/O, logical block %u", f->path,
	     f->is_blk ? "block device" : "file", (unsigned long long)f->be.size,
	     f->direct ? "direct" : "buffered", f->be.logical_block);
	return 0;
fail:
	f->be.ops = NULL;
	if (f->fd >= 0 && f->fd != f->fd_buffered)
		close(f->fd);
	if (f->fd_buffered >= 0)
		close(f->fd_buffered);
	free(f);
	return rc;
}

static void file_close(struct backend *be)
{
	struct file_backend *f = to_file(be);

	unclaim(f);
	if (f->fd >= 0 && f->fd != f->fd_buffered)
		close(f->fd);
	if (f->fd_buffered >= 0)
		close(f->fd_buffered);
	free(f);
}

static int file_resize(struct backend *be, uint64_t size)
{
	struct file_backend *f = to_file(be);
	struct stat st;

	if (fstat(f->fd_buffered, &st) < 0)
		return -errno;
	if (f->is_blk) {
		uint64_t bytes = 0;
		if (ioctl(f->fd_buffered, BLKGETSIZE64, &bytes) < 0)
			return -errno;
		if (size > bytes)
			return -EINVAL;
	} else if ((uint64_t)st.st_size < size) {
		/* Grow (sparse); a smaller size never cuts the file. */
		if (ftruncate(f->fd_buffered, size) < 0)
			return -errno;
	}
	be->size = size;
	return 0;
}

/* A regular file knows where its data is (SEEK_DATA); a block device
 * does not say, so all of it counts. */
static int file_holds_data(struct backend *be, uint64_t off, uint64_t len)
{
	struct file_backend *f = to_file(be);
	off_t d;

	if (f->is_blk)
		return 1;
	d = lseek(f->fd_buffered, (off_t)off, SEEK_DATA);
	if (d < 0)
		return errno == ENXIO ? 0 : (errno == EINVAL ? 1 : -errno);
	return (uint64_t)d < off + len;
}

/* Could O_DIRECT take this request as it is? */
static bool aligned(const struct file_backend *f, const struct be_io *io)
{
	uintptr_t mask = f->dio_align - 1, acc = io->offset;

	for (unsigned i = 0; i < io->iovcnt; i++)
		acc |= (uintptr_t)io->iov[i].iov_base | io->iov[i].iov_len;
	return (acc & mask) == 0;
}

/* Worker: BLKDISCARD on a block device, one range after the other. */
static int discard_job(struct be_job *job)
{
	for (unsigned i = 0; i < job->nranges; i++) {
		uint64_t r[2] = { job->ranges[i].offset, job->ranges[i].len };
		if (ioctl(job->fd, BLKDISCARD, r) < 0)
			return -errno;
	}
	return 0;
}

/* Worker: zero ranges of a file whose filesystem has no ZERO_RANGE: punch
 * the hole (reads as zeros) and, unless unmapping is allowed, allocate the
 * blocks again. */
static int zero_job(struct be_job *job)
{
	for (unsigned i = 0; i < job->nranges; i++) {
		const struct be_range *r = &job->ranges[i];
		if (fallocate(job->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			      r->offset, r->len) < 0)
			return -errno;
		if (!r->unmap && fallocate(job->fd, FALLOC_FL_KEEP_SIZE, r->offset, r->len) < 0 &&
		    errno != EOPNOTSUPP)
			return -errno;
	}
	return 0;
}

static int file_submit(struct backend *be, const struct be_io *io, struct be_ctx *ctx,
		       unsigned *nsqe)
{
	struct file_backend *f = to_file(be);
	struct io_uring_sqe *sqe;
	struct be_job *job = io->job;

	if (!ctx->ring)
		return -EIO;
	switch (io->op) {
	case BE_OP_READ:
	case BE_OP_WRITE: {
		int fd = f->direct && aligned(f, io) ? f->fd : f->fd_buffered;
		sqe = io_uring_get_sqe(ctx->ring);
		if (!sqe)
			return -EAGAIN;
		if (io->op == BE_OP_READ)
			io_uring_prep_readv(sqe, fd, io->iov, io->iovcnt, io->offset);
		else {
			io_uring_prep_writev(sqe, fd, io->iov, io->iovcnt, io->offset);
			if (io->fua)
				sqe->rw_flags = RWF_DSYNC;
		}
		io_uring_sqe_set_data(sqe, io->cookie);
		*nsqe = 1;
		break;
	}
	case BE_OP_FLUSH:
		sqe = io_uring_get_sqe(ctx->ring);
		if (!sqe)
			return -EAGAIN;
		io_uring_prep_fsync(sqe, f->fd_buffered, IORING_FSYNC_DATASYNC);
		io_uring_sqe_set_data(sqe, io->cookie);
		*nsqe = 1;
		break;
	case BE_OP_DISCARD:
	case BE_OP_WRITE_ZEROES:
		if ((io->op == BE_OP_DISCARD && f->is_blk) ||
		    (io->op == BE_OP_WRITE_ZEROES && !f->zero_range)) {
			job->fn = io->op == BE_OP_DISCARD ? discard_job : zero_job;
			job->fd = f->fd_buffered;
			job->ranges = io->ranges;
			job->nranges = io->nranges;
			job->cookie = io->cookie;
			ctx->offload(ctx, job);
			*nsqe = 1;
			break;
		}
		if (io_uring_sq_space_left(ctx->ring) < io->nranges)
			return -EAGAIN;
		for (unsigned i = 0; i < io->nranges; i++) {
			const struct be_range *r = &io->ranges[i];
			int mode;
			if (io->op == BE_OP_DISCARD || r->unmap)
				mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
			else
				mode = FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
			sqe = io_uring_get_sqe(ctx->ring);
			io_uring_prep_fallocate(sqe, f->fd_buffered, mode, r->offset, r->len);
			io_uring_sqe_set_data(sqe, io->cookie);
		}
		*nsqe = io->nranges;
		break;
	}
	ctx->inflight += *nsqe;
	return BE_QUEUED;
}

static void file_describe(struct backend *be, char *buf, size_t len)
{
	struct file_backend *f = to_file(be);
	snprintf(buf, len, "io_mode %s\n", f->direct ? "direct" : "buffered");
}

const struct be_ops be_file_ops = {
	.name = "file",
	.open = file_open,
	.close = file_close,
	.resize = file_resize,
	.holds_data = file_holds_data,
	.submit = file_submit,
	.describe = file_describe,
};
