/* mgr: the controller manager — the daemon's typed controller API over the
 * registry of controllers, their minors, the store (sockets/ and devices/
 * kept in sync with the controllers) and the state file.  Called from FUSE
 * worker threads (concurrently), from main (create, restore, shutdown) and
 * from tests.  Takes no text: the control fs parses users' writes with
 * cfgparse and calls mgr_ctrl_set with typed values, which are checked
 * again here.  Trusts its caller for pointers; every file found in the store
 * is checked before it is reused and never removed unless it is ours.
 * Parts: mgr.c (registry), ctrl.c (one controller), group.c (throttle
 * groups), store.c, statesave.c.
 *
 * Locking: mgr->lock (innermost, short) guards the registry, the minor map,
 * reference counts, the groups and each controller's committed settings; a
 * controller's op_lock serialises the slow operations on that controller
 * (vdev calls, mknod) and keeps its vdev alive; mgr->group_lock serialises
 * the changes of groups with the changes of a controller's group (so that a
 * group named by a controller is never removed).  Order: op_lock, then
 * group_lock, then mgr->lock.
 */
#ifndef VHOSTD_MGR_H
#define VHOSTD_MGR_H

#include <stdbool.h>
#include <stddef.h>
#include <limits.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

#include "params.h"
#include "store.h"

#define MGR_DEV_MAJOR           STORE_DEV_MAJOR /* 241, as SPDK + Kata */
#define MGR_MINOR_LIMIT         (1u << 20)      /* Linux MINORBITS */
#define MGR_DEFAULT_MAX_CTRLS   4096

/* What a controller is doing, as its `state` file says. */
enum ctrl_state {
	CTRL_UNCONFIGURED = 0,          /* no size yet (nor a file backing) */
	CTRL_LISTENING,                 /* socket bound, node in devices/ */
	CTRL_CONNECTED,                 /* a front-end is attached */
	CTRL_ERROR,                     /* configured but not serving; see error */
};

/* Request kinds of the latency figures (the core's enum vdev_op). */
enum ctrl_op { CTRL_OP_READ = 0, CTRL_OP_WRITE, CTRL_OP_FLUSH, CTRL_OP_OTHER, CTRL_NOPS };
const char *ctrl_op_name(enum ctrl_op op);      /* "read", "write", ... */

/* Latency of completed requests of one kind (nanoseconds). */
struct ctrl_latency {
	uint64_t count;
	uint64_t p50_ns, p99_ns, p999_ns, max_ns;
};

/* I/O counters of a live controller (all zero otherwise). */
struct ctrl_stats {
	uint64_t reads, writes, flushes, discards, write_zeroes, get_ids;
	uint64_t bytes_read, bytes_written;
	uint64_t errors;                /* requests completed with IOERR/UNSUPP */
	uint64_t inflight;
	struct ctrl_latency lat[CTRL_NOPS];
	uint64_t throttled_ns;          /* time its queues waited for a limit */
	char detail[384];               /* backend lines, e.g. "io_mode direct\n" */
};

/* A snapshot of one controller (mgr_ctrl_info). */
struct ctrl_info {
	char name[VDEV_NAME_MAX + 1];
	unsigned minor;                 /* of the node MGR_DEV_MAJOR:minor */
	enum ctrl_state state;
	struct vdev_params params;      /* the accepted settings */
	bool have_size;                 /* size given by the user (a file backing
					 * without one takes the file's size) */
	bool live;                      /* socket listening and node made */
	uint64_t live_size;             /* live: the size in force (the core's) */
	char socket[PATH_MAX];          /* absolute path of the socket */
	char device[PATH_MAX];          /* absolute path of the node */
	struct ctrl_stats stats;
	char error[VDEV_ERR_MAX];       /* last error sentence, "" if none */
	time_t mtime;                   /* last accepted change */
};

/* The manager's own facts, for the top-level files.  The strings live as
 * long as the manager. */
struct mgr_info {
	const char *store, *sockdir, *devdir, *ctldir, *state_path;
	const char *engine_info;        /* "key value\n" lines, may be "" */
	unsigned max_ctrls;
};

struct mgr_opts {
	const char *store;              /* absolute store directory */
	const char *state_path;         /* state file */
	unsigned max_ctrls;             /* new minors are < this; 0 = default */
	const char *engine_info;        /* "key value\n" lines for .info, or NULL */
	const struct store_node_ops *node_ops;  /* NULL: the real syscalls */
};

struct core;
struct mgr;
struct ctrl;

/* Create the store directories (DIR/block/{sockets,devices,ctl}), take the
 * store lock and the state lock.  -errno and a reason in err (-EWOULDBLOCK:
 * another vhostd serves this store or state file). */
int mgr_create(const struct mgr_opts *o, struct mgr **out, char *err, size_t errlen);
/* Load the state file and bring every configured controller live on core
 * (which the manager uses from then on).  A
 * controller that cannot go live (a foreign file in its way...) stays in state
 * `error` with the reason; that is not a failure of mgr_restore.  Fails
 * (-errno, reason) only for an unreadable or malformed state file.  *nctrl
 * counts configured controllers, *nfailed those left in `error`. */
int mgr_restore(struct mgr *m, struct core *core, unsigned *nctrl,
		unsigned *nfailed, char *err, size_t errlen);
/* Stop every device (force: the daemon is going away), keep the state file
 * and the device nodes, release the locks, free.  No other call may run. */
void mgr_destroy(struct mgr *m);

const char *mgr_ctl_dir(struct mgr *m);         /* DIR/block/ctl */

void mgr_get_info(struct mgr *m, struct mgr_info *out);

/* ---- the controller API (the control fs is a thin layer over it) ------- */

/* Create an unconfigured controller with the lowest free minor.  -EINVAL bad
 * name, -EEXIST name taken, -ENOSPC no minor left, -ENAMETOOLONG the socket
 * path would not fit. */
int mgr_ctrl_create(struct mgr *m, const char *name);
/* Stop serving and forget a controller (socket and our node removed).
 * -ENOENT none, -EBUSY a front-end is connected (the reason goes to its
 * error). */
int mgr_ctrl_destroy(struct mgr *m, const char *name);

/* A counted reference to a controller; NULL if there is none of that name. */
struct ctrl *mgr_get(struct mgr *m, const char *name);
void mgr_put(struct mgr *m, struct ctrl *c);
/* Snapshot of the controller names (malloc'd array of malloc'd strings). */
int mgr_list(struct mgr *m, char ***names, size_t *n);
void mgr_list_free(char **names, size_t n);
/* References to every controller, in creation order (mgr_refs_put drops
 * them and frees the array). */
int mgr_refs(struct mgr *m, struct ctrl ***v, size_t *n);
void mgr_refs_put(struct mgr *m, struct ctrl **v, size_t n);

/* Snapshot of a controller.  0, or -ENOENT once it is removed. */
int mgr_ctrl_info(struct mgr *m, struct ctrl *c, struct ctrl_info *out);
/* Apply the settings of p named in set (CFG_BIT(k) of enum cfg_key, see
 * cfgparse.h) to c: all of them or none.  A controller that becomes complete
 * (a size, or a file backing) goes live: when this returns 0 its socket
 * listens and its node exists.  0 or -errno (-EINVAL bad value, -EBUSY not
 * while a front-end is connected, -EEXIST a foreign file in the way...); a
 * refusal leaves "<what>refused: reason" in the controller's error and the
 * log (what: e.g. "write to config ", NULL for none). */
int mgr_ctrl_set(struct mgr *m, struct ctrl *c, const struct vdev_params *p,
		 unsigned set, const char *what);
/* Record a refused operation the caller decided on itself (a write to a
 * read-only file, a value that does not parse): the reason goes to error
 * and the log.  0, or -ENOENT (nothing recorded) once c is removed. */
int mgr_ctrl_refused(struct mgr *m, struct ctrl *c, const char *why);
/* Time of the last accepted change (for st_mtime). */
time_t mgr_ctrl_mtime(struct mgr *m, struct ctrl *c);
time_t mgr_mtime(struct mgr *m);
unsigned mgr_count(struct mgr *m);
const char *ctrl_state_name(enum ctrl_state s);

/* ---- throttle groups (ctl/.groups/NAME) ---------------------------------
 * Limits shared by every controller whose `group` names the group (the
 * core's core_group_set).  Recorded in the state file and restored before
 * the controllers. */

/* A snapshot of one group (mgr_group_info). */
struct group_info {
	char name[VDEV_NAME_MAX + 1];
	struct vdev_limits limits;
	unsigned users;                 /* controllers whose group names it */
	char error[VDEV_ERR_MAX];       /* last refusal, "" if none */
	time_t mtime;                   /* last accepted change */
};

/* Create a group without limits.  -EINVAL bad name, -EEXIST exists, or the
 * core's refusal (the reason in the log). */
int mgr_group_create(struct mgr *m, const char *name);
/* Remove a group.  -ENOENT none, -EBUSY a controller's group names it (the
 * reason in the group's error and the log). */
int mgr_group_destroy(struct mgr *m, const char *name);
/* Apply the limits of l named in set (CFG_BIT(k) of the limit keys, see
 * cfgparse.h CFG_LIMIT_KEYS) to the group, at once, to every controller in
 * it: all or none.  0 or -errno; a refusal leaves "<what>refused: reason"
 * in the group's error and the log. */
int mgr_group_set(struct mgr *m, const char *name, const struct vdev_limits *l,
		  unsigned set, const char *what);
/* Record a refusal the caller decided on (bad text, read-only file). */
int mgr_group_refused(struct mgr *m, const char *name, const char *why);
/* 0 or -ENOENT. */
int mgr_group_info(struct mgr *m, const char *name, struct group_info *out);
/* Snapshot of the group names, in creation order (free: mgr_list_free). */
int mgr_group_list(struct mgr *m, char ***names, size_t *n);
unsigned mgr_group_count(struct mgr *m);

#endif
