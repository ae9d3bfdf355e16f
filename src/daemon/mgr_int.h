/* mgr_int: what the files of the manager share and nobody else sees — the
 * manager and controller structures and the helpers one part of the manager
 * calls in another (registry: mgr.c, one controller's snapshot and
 * settings: ctrl.c, state saving: statesave.c; the store on disk is a
 * module of its own, store.h).
 * Locking rules: see mgr.h. */
#ifndef VHOSTD_MGR_INT_H
#define VHOSTD_MGR_INT_H

#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "mgr.h"
#include "vdev.h"

#define MGR_HASH        1024

struct ctrl {
	struct ctrl *hnext;             /* hash chain; mgr->lock */
	struct ctrl *prev, *next;       /* creation order; mgr->lock */
	char name[VDEV_NAME_MAX + 1];
	unsigned minor;
	unsigned refs;                  /* mgr->lock */
	pthread_mutex_t op_lock;

	/* Written with op_lock and mgr->lock held, read under either. */
	bool removed;
	bool have_size;                 /* size given by the user (a file backing
					 * without it takes the file's size) */
	struct vdev_params params;      /* accepted settings */
	struct vdev *vdev;              /* NULL unless live */
	time_t mtime;

	/* From the state file: a dead socket at its path is ours, left by a
	 * crash, and may be replaced.  op_lock. */
	bool restored;
	char err[VDEV_ERR_MAX];         /* our last refusal; mgr->lock */
};

/* A throttle group as the daemon records it (the core holds its own copy). */
struct mgr_group {
	struct mgr_group *next;         /* creation order; mgr->lock */
	char name[VDEV_NAME_MAX + 1];
	struct vdev_limits limits;      /* group_lock and mgr->lock to write */
	char err[VDEV_ERR_MAX];         /* mgr->lock */
	time_t mtime;                   /* mgr->lock */
};

struct mgr {
	pthread_mutex_t lock;
	pthread_mutex_t group_lock;     /* see mgr.h */
	struct store st;                /* immutable after mgr_create */
	struct core *core;
	unsigned max_ctrls;
	char *engine_info;

	/* mgr->lock */
	struct ctrl *hash[MGR_HASH];
	struct ctrl *head, *tail;
	unsigned count;
	uint64_t *minors;               /* bitmap of MGR_MINOR_LIMIT bits */
	time_t mtime;
	uint64_t gen;                   /* bumped on every accepted change */
	struct mgr_group *groups;       /* creation order */
	unsigned ngroups;

	/* Saves are serialised and coalesced: a writer that finds its change
	 * already covered by a newer save returns at once. */
	pthread_mutex_t save_lock;
	uint64_t saved_gen;             /* save_lock */
	int save_err;                   /* save_lock */
};

/* mgr.c: registry (mgr->lock held) */
void mgr_join(char *dst, size_t len, const char *a, const char *b);
struct ctrl *mgr_find_locked(struct mgr *m, const char *name);
bool mgr_minor_used(struct mgr *m, unsigned minor);

/* group.c (mgr->lock held) */
struct mgr_group *mgr_group_find_locked(struct mgr *m, const char *name);
/* group.c: mgr_restore's first step, groups before controllers. */
void mgr_group_restore(struct mgr *m, const char *name, const struct vdev_limits *l);
void mgr_groups_free(struct mgr *m);

/* statesave.c */
int mgr_save(struct mgr *m, char *err, size_t errlen);

/* ctrl.c */
bool mgr_complete(const struct vdev_params *p, bool have_size);
int mgr_go_live(struct mgr *m, struct ctrl *c, const struct vdev_params *p,
		struct vdev **out, char *err, size_t errlen);

#endif
