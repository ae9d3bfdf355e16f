/* mgr: the controller manager — registry of controllers, their minors, the
 * store (sockets/ and devices/ kept in sync with the controllers) and the
 * state file.  Called from FUSE worker threads (concurrently) and from main
 * (create, restore, shutdown).  Trusts its caller for pointers; every piece
 * of user text goes through cfgparse, every file found in the store is
 * checked before it is reused and never removed unless it is ours.
 *
 * Locking: mgr->lock (innermost, short) guards the registry, the minor map,
 * reference counts and each controller's committed settings; a controller's
 * op_lock serialises the slow operations on that controller (vdev calls,
 * mknod) and keeps its vdev alive.  Order: op_lock, then mgr->lock.
 */
#ifndef VHOSTD_MGR_H
#define VHOSTD_MGR_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "vdev.h"

#define MGR_DEV_MAJOR           241     /* LANANA "local/experimental", as SPDK + Kata */
#define MGR_MINOR_LIMIT         (1u << 20)      /* Linux MINORBITS */
#define MGR_DEFAULT_MAX_CTRLS   4096

/* Files of a controller directory.  The first CFG_NKEYS after CONFIG are the
 * per-key files, in enum cfg_key order. */
enum mgr_attr {
	MGR_A_CONFIG = 0,
	MGR_A_SIZE,
	MGR_A_BLOCK_SIZE,
	MGR_A_BACKING,
	MGR_A_READONLY,
	MGR_A_QUEUES,
	MGR_A_SERIAL,
	MGR_A_STATE,
	MGR_A_SOCKET,
	MGR_A_DEVICE,
	MGR_A_STATS,
	MGR_A_ERROR,
	MGR_NATTRS,
};

/* Read-only files at the top of the control fs.  Their names start with '.',
 * which no controller name may, so they never collide with a controller and
 * `ls ctl/` lists controllers only. */
enum mgr_gattr {
	MGR_G_VERSION = 0,      /* .version */
	MGR_G_INFO,             /* .info: store, engine, totals */
	MGR_G_STATUS,           /* .status: one line per controller */
	MGR_NGATTRS,
};

struct mgr_opts {
	const char *store;              /* absolute store directory */
	const char *state_path;         /* state file */
	unsigned max_ctrls;             /* new minors are < this; 0 = default */
	const char *engine_info;        /* "key value\n" lines for .info, or NULL */
};

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

/* The control fs operations.  All return 0 / -errno (or a length). */
int mgr_mkdir(struct mgr *m, const char *name);
int mgr_rmdir(struct mgr *m, const char *name);

/* A counted reference to a controller; NULL if there is none of that name. */
struct ctrl *mgr_get(struct mgr *m, const char *name);
void mgr_put(struct mgr *m, struct ctrl *c);
/* Snapshot of the controller names (malloc'd array of malloc'd strings). */
int mgr_list(struct mgr *m, char ***names, size_t *n);
void mgr_list_free(char **names, size_t n);

const char *mgr_attr_name(enum mgr_attr a);
bool mgr_attr_writable(enum mgr_attr a);
int mgr_attr_lookup(const char *name);          /* -1 if none */
const char *mgr_gattr_name(enum mgr_gattr g);
int mgr_gattr_lookup(const char *name);         /* -1 if none */

/* Current content of a file (malloc'd in *out, length in *len). */
int mgr_ctrl_read(struct mgr *m, struct ctrl *c, enum mgr_attr a,
		  char **out, size_t *len);
int mgr_global_read(struct mgr *m, enum mgr_gattr g, char **out, size_t *len);
/* Apply one write(2) to a file: all of it or nothing.  0 or -errno; a
 * refusal leaves its reason in the controller's `error` file and the log. */
int mgr_ctrl_write(struct mgr *m, struct ctrl *c, enum mgr_attr a,
		   const char *buf, size_t len);
/* Record a refused operation the fs layer decided on itself (a write to a
 * read-only file...): the reason goes to `error` and the log. */
void mgr_ctrl_refused(struct mgr *m, struct ctrl *c, const char *why);
/* Time of the last accepted change (for st_mtime). */
time_t mgr_ctrl_mtime(struct mgr *m, struct ctrl *c);
time_t mgr_mtime(struct mgr *m);
unsigned mgr_count(struct mgr *m);

#endif
