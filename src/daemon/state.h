/* state: the state file that lets a restarted vhostd bring back every
 * controller with the same name, minor and settings.  Called by the manager
 * (any thread, but never concurrently on the same path: the manager
 * serialises saves).  The file is our own output, yet it is parsed strictly
 * because an operator may have edited it: a malformed line refuses the load.
 *
 * Format (one controller per line, values %XX-escaped, '#' comments):
 *   vhostd-state 1
 *   store /ABSOLUTE/STORE/PATH
 *   group NAME [key=value ...]          throttle groups: limit keys only
 *   ctrl NAME MINOR [key=value ...]
 * A controller line without size= is an unconfigured controller.  Groups
 * are written first; a loader takes them anywhere (the manager restores
 * every group before any controller).
 */
#ifndef VHOSTD_STATE_H
#define VHOSTD_STATE_H

#include <stdbool.h>
#include <stddef.h>

#include "params.h"

struct state_ctrl {
	char name[VDEV_NAME_MAX + 1];
	unsigned minor;
	bool have_size;
	struct vdev_params params;
};

struct state_group {
	char name[VDEV_NAME_MAX + 1];
	struct vdev_limits limits;
};

/* Load path into malloc'd arrays (*out and *groups, caller frees; *n and
 * *ngroups entries; groups may be NULL to refuse any group line) and the
 * store it belongs to (store[0] == '\0' if it names none).  A missing file
 * is an empty state (0).  -errno and a reason on error. */
int state_load(const char *path, struct state_ctrl **out, size_t *n,
	       struct state_group **groups, size_t *ngroups,
	       char *store, size_t storelen, char *err, size_t errlen);

/* Atomically replace path: write path.tmp, fsync, rename, fsync the directory.
 * 0 or -errno and a reason. */
int state_save(const char *path, const char *store, const struct state_ctrl *c,
	       size_t n, const struct state_group *g, size_t ng,
	       char *err, size_t errlen);

#endif
