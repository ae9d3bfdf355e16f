/* store: the Kata "vhost-user store" on disk — DIR/block/{sockets,devices,ctl},
 * the store and state lock files, and the checks that keep vhostd's hands
 * off files it did not create.  It knows names and minors, not controllers
 * or devices: the registry (mgr.c) decides, the store looks and touches.
 * Any thread; a struct store is immutable after store_open, so the callers
 * serialise only what they do to one name (the controller's op_lock).
 */
#ifndef VHOSTD_STORE_H
#define VHOSTD_STORE_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>

#define STORE_DEV_MAJOR  241    /* LANANA "local/experimental", as SPDK + Kata */
/* Directories are kept well below PATH_MAX so "DIR/NAME" always fits. */
#define STORE_DIR_MAX    (PATH_MAX - 256)

/* The device nodes in devices/ are made and looked at through these (tests
 * replace them: mknod needs root).  Each returns like the syscall it stands
 * for (-1 and errno).  NULL members use the real syscall. */
struct store_node_ops {
	int (*mknod)(void *arg, const char *path, mode_t mode, dev_t dev);
	int (*unlink)(void *arg, const char *path);
	int (*lstat)(void *arg, const char *path, struct stat *st);
	void *arg;
};

struct store {
	char dir[STORE_DIR_MAX];        /* as given */
	char real[PATH_MAX];            /* canonical, for the state file */
	char sockdir[STORE_DIR_MAX], devdir[STORE_DIR_MAX], ctldir[STORE_DIR_MAX];
	char state_path[PATH_MAX];
	int store_lock_fd, state_lock_fd;
	struct store_node_ops nodes;    /* every member set */
};

/* Check the paths, create the store directories and the state file's
 * directory, take the store lock and the state lock.  -errno and a reason
 * in err (-EWOULDBLOCK: another vhostd serves this store or state file). */
int store_open(struct store *s, const char *dir, const char *state_path,
	       const struct store_node_ops *ops, char *err, size_t errlen);
/* Release the locks.  Files stay. */
void store_close(struct store *s);

/* sockets/NAME fits in a UNIX socket address. */
bool store_name_fits(const struct store *s, const char *name);
void store_sock_path(const struct store *s, const char *name, char *buf, size_t len);
void store_node_path(const struct store *s, const char *name, char *buf, size_t len);

/* May NAME go live with minor?  devices/NAME must be absent or our node
 * (then *need_node is false: it is reused); sockets/NAME absent, or, for a
 * controller restored from the state file, a dead socket (left by a crash,
 * which vdev_create replaces).  -EEXIST / -EADDRINUSE / -errno and the
 * reason; nothing is touched. */
int store_check(struct store *s, const char *name, unsigned minor, bool restored,
		bool *need_node, char *err, size_t errlen);
/* mknod devices/NAME as STORE_DEV_MAJOR:minor.  0 or -errno and the reason. */
int store_node_make(struct store *s, const char *name, unsigned minor,
		    char *err, size_t errlen);
/* Remove devices/NAME if it is our node STORE_DEV_MAJOR:minor; anything
 * else there stays (and is logged if warn). */
void store_node_remove(struct store *s, const char *name, unsigned minor, bool warn);
/* Minors of STORE_DEV_MAJOR nodes in devices/ that are not ours: ours(arg,
 * name, minor) says which are.  Kata finds a controller by the major:minor
 * of the node it is given, so a new minor must not repeat one of them.
 * A malloc'd array (NULL and *n = 0 if none or unreadable). */
unsigned *store_foreign_minors(struct store *s,
			       bool (*ours)(void *arg, const char *name, unsigned minor),
			       void *arg, size_t *n);

#endif
