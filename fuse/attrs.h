/* attrs: the files of the control fs, declared as tables the way Linux
 * configfs (and nvmet on top of it) declares attributes: a name, a mode and
 * a show()/store() pair.  show() renders a snapshot of the daemon's state as
 * text; store() parses what a user wrote and turns it into one typed call of
 * the daemon's controller API (mgr.h).  Nothing here touches a device.
 * Called from libfuse worker threads (cfs.c), any number at once.
 */
#ifndef VHOSTD_ATTRS_H
#define VHOSTD_ATTRS_H

#include <stddef.h>
#include <stdio.h>
#include <sys/types.h>

#include "mgr.h"

/* A file of a controller directory. */
struct cfs_attr {
	const char *name;
	mode_t mode;                    /* 0644 (writable) or 0444 */
	int key;                        /* enum cfg_key of a per-key file, or -1 */
	/* Write the file's content for the snapshot ci to f. */
	void (*show)(const struct cfs_attr *a, const struct ctrl_info *ci, FILE *f);
	/* Apply one write(2): all of it or nothing.  0 or -errno, the reason
	 * in the controller's error.  NULL for a read-only file. */
	int (*store)(const struct cfs_attr *a, struct mgr *m, struct ctrl *c,
		     const char *buf, size_t len);
};

/* A read-only file at the top of the control fs.  Their names start with '.',
 * which no controller name may, so they never collide with a controller and
 * `ls ctl/` lists controllers only. */
struct cfs_gattr {
	const char *name;
	int (*show)(struct mgr *m, FILE *f);     /* 0 or -errno */
};

/* The directory of throttle groups at the top of the control fs
 * (ctl/.groups/NAME/): a dot name, so `ls ctl/` lists controllers only. */
#define CFS_GROUPS_DIR ".groups"

/* A file of a throttle group directory. */
struct cfs_gr_attr {
	const char *name;
	mode_t mode;                    /* 0644 (writable) or 0444 */
	int key;                        /* enum cfg_key of a per-key file, or -1 */
	void (*show)(const struct cfs_gr_attr *a, const struct group_info *gi, FILE *f);
	/* One write(2), all of it or nothing; NULL for a read-only file. */
	int (*store)(const struct cfs_gr_attr *a, struct mgr *m, const char *group,
		     const char *buf, size_t len);
};

extern const struct cfs_attr cfs_attrs[];
extern const size_t cfs_nattrs;
extern const struct cfs_gattr cfs_gattrs[];
extern const size_t cfs_ngattrs;
extern const struct cfs_gr_attr cfs_gr_attrs[];
extern const size_t cfs_ngr_attrs;

/* Index in cfs_attrs / cfs_gattrs, or -1. */
int cfs_attr_lookup(const char *name);
int cfs_gattr_lookup(const char *name);
int cfs_gr_attr_lookup(const char *name);
static inline int cfs_attr_writable(int a)
{
	return a >= 0 && (size_t)a < cfs_nattrs && cfs_attrs[a].store != NULL;
}
static inline int cfs_gr_attr_writable(int a)
{
	return a >= 0 && (size_t)a < cfs_ngr_attrs && cfs_gr_attrs[a].store != NULL;
}

/* The content of a file now (malloc'd in *out, length in *len).  0 or
 * -errno (-ENOENT: the controller was removed). */
int cfs_attr_read(struct mgr *m, struct ctrl *c, int a, char **out, size_t *len);
int cfs_gattr_read(struct mgr *m, int g, char **out, size_t *len);
/* Apply one write(2) to a controller file. */
int cfs_attr_write(struct mgr *m, struct ctrl *c, int a, const char *buf, size_t len);
/* Record in the controller's error that a write to a read-only file was
 * refused. */
void cfs_attr_refuse_readonly(struct mgr *m, struct ctrl *c, int a);

/* The same for a file of a throttle group (-ENOENT: no such group). */
int cfs_gr_attr_read(struct mgr *m, const char *group, int a, char **out, size_t *len);
int cfs_gr_attr_write(struct mgr *m, const char *group, int a, const char *buf,
		      size_t len);
void cfs_gr_attr_refuse_readonly(struct mgr *m, const char *group, int a);

#endif
