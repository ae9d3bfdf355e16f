/* cfs: the control filesystem (DIR/block/ctl) — nothing but the translation
 * of file operations into calls of the daemon's controller API (mgr.h),
 * with the files declared as show/store tables (attrs.h).  libfuse3 high-level API,
 * multithreaded loop; the operations run on libfuse worker threads and the
 * loop on the thread that calls cfs_run().  Paths from the kernel are
 * trusted to be well formed; names in them are checked by the manager.
 */
#ifndef VHOSTD_CFS_H
#define VHOSTD_CFS_H

#include <stddef.h>

struct mgr;
struct cfs;

struct cfs_opts {
	struct mgr *mgr;
	const char *mountpoint;
	/* Called once the kernel has initialised the mount (from a worker
	 * thread): the control fs answers from then on. */
	void (*on_ready)(void *arg);
	void *arg;
};

/* Mount the control fs.  A dead mount left there by a crashed vhostd
 * ("Transport endpoint is not connected") is detached first. */
int cfs_mount(const struct cfs_opts *o, struct cfs **out, char *err, size_t errlen);
/* Serve until SIGTERM, SIGINT or SIGHUP (or an unmount).  Call from the
 * thread that should receive those signals, with them blocked everywhere
 * else; they are unblocked here.  0 or -errno. */
int cfs_run(struct cfs *fs);
/* Unmount and free. */
void cfs_destroy(struct cfs *fs);

#endif
