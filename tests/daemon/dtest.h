/* Fixtures of the daemon library tests (tests/daemon): a temporary store
 * served by a real manager and core, with device nodes made by a stand-in
 * that records its calls instead of calling mknod (which needs root).
 *
 * The whole program runs as an ordinary user: dtest.c drops root before
 * main (setgroups/setgid/setuid to 65534) and exits 77 if it cannot. */
#ifndef VHOSTD_TESTS_DTEST_H
#define VHOSTD_TESTS_DTEST_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "mgr.h"
#include "vdev.h"

/* The uid/gid the program runs as when started as root. */
#define DT_UID 65534
#define DT_GID 65534

struct dt {
	char dir[64];                   /* mkdtemp: everything lives below */
	char store[PATH_MAX];           /* DIR/store */
	char state[PATH_MAX];           /* DIR/state/vhostd.state */
	unsigned max_ctrls;
	struct core *core;
	struct mgr *m;
};
extern struct dt dt;

/* A temporary directory only (for the state file and parser tests). */
void dt_tmpdir(void);
/* dt_tmpdir, then a manager on DIR/store (max_ctrls: 0 = default) with the
 * stand-in node hooks, a core, and mgr_restore of the (missing) state. */
void dt_setup_mgr(unsigned max_ctrls);
/* What vhostd's restart does: mgr_destroy, then mgr_create + mgr_restore on
 * the same store, state file and core.  Returns mgr_restore's result. */
int dt_restart(unsigned *nctrl, unsigned *nfailed, char *err, size_t errlen);
/* mgr_destroy, core_destroy, rm -r DIR. */
void dt_teardown(void);

/* The stand-in for mknod/unlink/lstat of device nodes. */
struct dt_node_call {
	char op;                        /* 'm' mknod, 'u' unlink */
	char path[PATH_MAX];
	mode_t mode;
	dev_t dev;
	unsigned seq;                   /* order among node and group calls */
};
extern const struct store_node_ops dt_node_ops;
size_t dt_node_calls(char op);                  /* count of op calls */
const struct dt_node_call *dt_node_call(size_t i);      /* i-th call, any op */
/* A major:minor node that the stand-in reports at path (not recorded as a
 * call): what another program's mknod would have left there. */
void dt_fake_node(const char *path, unsigned major, unsigned minor);

/* Stand-ins for the core's throttle groups (core_group_set/remove), which
 * are written on another branch: weak definitions, replaced by the core's
 * own as soon as they are linked in.  They accept every call and record it
 * (op 's' set, 'r' remove); with the core's, nothing is recorded. */

/* DIR/store/block/{sockets,devices}/NAME */
void dt_sock_path(const char *name, char *buf, size_t len);
void dt_node_path(const char *name, char *buf, size_t len);

/* The controller's snapshot (asserts it exists). */
void dt_info(const char *name, struct ctrl_info *ci);
/* mgr_ctrl_set on the named controller. */
int dt_set(const char *name, const struct vdev_params *p, unsigned set);
/* Wait (at most ms) until the controller is in state st. */
bool dt_wait_state(const char *name, enum ctrl_state st, int ms);
/* Connect to a UNIX socket as a front-end would; the fd. */
int dt_connect(const char *path);
/* Whole content of a file (malloc'd, NUL-terminated), NULL if unreadable. */
char *dt_slurp(const char *path);
/* Write text to a file (created or truncated). */
void dt_write_file(const char *path, const char *text);

#endif
