/* vdev: the public face of the vhostd core — one vhost-user-blk device
 * (a "controller") served on one UNIX socket, plus the core that runs them.
 *
 * Threads: every function here is called from the manager (FUSE threads,
 * main, tests); they are thread-safe and synchronous: each hands its work to
 * the core's control loop thread and waits for it.  Nothing here trusts the
 * peer on the socket; the caller is trusted (parameters were validated by
 * vdev_params_check(), which the create/set calls run again anyway).
 */
#ifndef VHOSTD_VDEV_H
#define VHOSTD_VDEV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "params.h"

enum vdev_state {
	VDEV_LISTENING = 0,             /* socket bound, no front-end */
	VDEV_CONNECTED,                 /* a front-end is attached */
	VDEV_ERROR,                     /* backend failed; see vdev_last_error */
};

/* Request kinds of the latency figures. */
enum vdev_op { VDEV_OP_READ = 0, VDEV_OP_WRITE, VDEV_OP_FLUSH, VDEV_OP_OTHER, VDEV_NOPS };

/* Latency of completed requests of one kind, from the guest's request
 * being taken off the ring to its completion being pushed (nanoseconds;
 * percentiles from a fixed log-linear histogram, within 1/16 of the value). */
struct vdev_latency {
	uint64_t count;
	uint64_t p50_ns, p99_ns, p999_ns, max_ns;
};

struct vdev_stats {
	uint64_t reads, writes, flushes, discards, write_zeroes, get_ids;
	uint64_t bytes_read, bytes_written;
	uint64_t errors;                /* requests completed with IOERR/UNSUPP */
	uint64_t inflight;
	struct vdev_latency lat[VDEV_NOPS];
	uint64_t throttled_ns;          /* time its queues waited for a limit */
	char detail[384];               /* backend lines, e.g. "io_mode direct\n" */
};

struct core;
struct vdev;

/* Start the control loop and the engine threads. 0 or -errno. */
int core_create(const struct core_opts *opts, struct core **out);
/* Destroys every remaining vdev (their sockets are unlinked), stops threads. */
void core_destroy(struct core *core);


/* Create a device and bind+listen its socket at sock_path (an existing
 * socket file there is replaced; any other file type is refused with
 * -EEXIST).  When this returns 0 the socket accepts connections.
 * On failure returns -errno and writes the reason to err. */
int vdev_create(struct core *core, const char *name, const char *sock_path,
		const struct vdev_params *p, struct vdev **out,
		char *err, size_t errlen);

/* Throttle groups: limits shared by every device whose params.group names
 * the group (as qemu's throttle groups).  Set creates or changes a group
 * (at once, devices connected or not); remove refuses (-EBUSY) a group a
 * device still names, -ENOENT for none.  -EINVAL and a reason for a bad
 * name. */
const char *vdev_op_name(enum vdev_op op);
int core_group_set(struct core *core, const char *name, const struct vdev_limits *l,
		   char *err, size_t errlen);
int core_group_remove(struct core *core, const char *name, char *err, size_t errlen);

/* Change the parameters of a device.  While a front-end is connected only
 * the size, allow_shrink, the limits and the group may change (else
 * -EBUSY); a group that does not exist is refused (-EINVAL).
 * Data of a ram backend is kept (truncated/extended to the new size). */
int vdev_set_params(struct vdev *d, const struct vdev_params *p,
		    char *err, size_t errlen);

/* Stop serving and free the device; the socket file is unlinked.
 * -EBUSY (and nothing done) if a front-end is connected, unless force. */
int vdev_destroy(struct vdev *d, bool force);

/* The parameters in force; size is the real one (a file backing given
 * without size gets the file's size). */
void vdev_get_params(struct vdev *d, struct vdev_params *p);
/* Daemon shutdown: stop serving (requests in flight complete first) and
 * free the device, but leave the socket file in place: the next vhostd
 * rebinds it, and nothing a VM or Kata holds vanishes meanwhile. */
void vdev_stop(struct vdev *d);

enum vdev_state vdev_get_state(struct vdev *d);
void vdev_get_stats(struct vdev *d, struct vdev_stats *st);
/* Copy the last error sentence ("" if none). */
void vdev_last_error(struct vdev *d, char *buf, size_t len);
const char *vdev_state_name(enum vdev_state s);

#endif
