/* mgr_attrs: the files of the control fs — names, rendering of reads and
 * parsing of writes into controller changes. */
#include "mgr_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include "config.h"
#include "cfgparse.h"
#include "log.h"
#include "state.h"

static const struct {
	const char *name;
	bool writable;
} attrs[MGR_NATTRS] = {
	[MGR_A_CONFIG] = { "config", true },
	[MGR_A_SIZE] = { "size", true },
	[MGR_A_BLOCK_SIZE] = { "block_size", true },
	[MGR_A_BACKING] = { "backing", true },
	[MGR_A_READONLY] = { "readonly", true },
	[MGR_A_QUEUES] = { "queues", true },
	[MGR_A_SERIAL] = { "serial", true },
	[MGR_A_STATE] = { "state", false },
	[MGR_A_SOCKET] = { "socket", false },
	[MGR_A_DEVICE] = { "device", false },
	[MGR_A_STATS] = { "stats", false },
	[MGR_A_ERROR] = { "error", false },
};

static const char *const gattrs[MGR_NGATTRS] = {
	[MGR_G_VERSION] = ".version",
	[MGR_G_INFO] = ".info",
	[MGR_G_STATUS] = ".status",
};

const char *mgr_attr_name(enum mgr_attr a)
{
	return (unsigned)a < MGR_NATTRS ? attrs[a].name : "?";
}

bool mgr_attr_writable(enum mgr_attr a)
{
	return (unsigned)a < MGR_NATTRS && attrs[a].writable;
}

int mgr_attr_lookup(const char *name)
{
	for (int a = 0; a < MGR_NATTRS; a++)
		if (strcmp(attrs[a].name, name) == 0)
			return a;
	return -1;
}

const char *mgr_gattr_name(enum mgr_gattr g)
{
	return (unsigned)g < MGR_NGATTRS ? gattrs[g] : "?";
}

int mgr_gattr_lookup(const char *name)
{
	for (int g = 0; g < MGR_NGATTRS; g++)
		if (strcmp(gattrs[g], name) == 0)
			return g;
	return -1;
}

/* ---- attribute reads ----------------------------------------------------- */

/* Close a memstream opened on (*buf, len): its content becomes *out. */
static int finish(FILE *f, char **buf, char **out)
{
	if (fclose(f) != 0) {
		free(*buf);
		return -ENOMEM;
	}
	*out = *buf;
	return 0;
}

static const char *state_name(struct ctrl *c)
{
	if (!c->vdev)
		return mgr_complete(&c->params, c->have_size) ? "error" : "unconfigured";
	switch (vdev_get_state(c->vdev)) {
	case VDEV_LISTENING: return "listening";
	case VDEV_CONNECTED: return "connected";
	default: return "error";
	}
}

int mgr_ctrl_read(struct mgr *m, struct ctrl *c, enum mgr_attr a,
		  char **out, size_t *len)
{
	char val[2 * sizeof(c->params.path)];
	struct vdev_params p;
	struct vdev_stats st;
	char *buf = NULL;
	bool have;
	FILE *f;

	f = open_memstream(&buf, len);
	if (!f)
		return -ENOMEM;
	pthread_mutex_lock(&c->op_lock);
	if (c->removed) {
		pthread_mutex_unlock(&c->op_lock);
		fclose(f);
		free(buf);
		return -ENOENT;
	}
	pthread_mutex_lock(&m->lock);
	p = c->params;
	have = c->have_size;
	pthread_mutex_unlock(&m->lock);
	if (c->vdev && !have) {
		/* A file backing without a size: show the size in force. */
		struct vdev_params cur;
		vdev_get_params(c->vdev, &cur);
		p.size = cur.size;
		have = true;
	}

	switch (a) {
	case MGR_A_CONFIG:
		cfg_format_config(&p, have, val, sizeof(val));
		fputs(val, f);
		break;
	case MGR_A_SIZE:
	case MGR_A_BLOCK_SIZE:
	case MGR_A_BACKING:
	case MGR_A_READONLY:
	case MGR_A_QUEUES:
	case MGR_A_SERIAL:
		cfg_format_value(a - MGR_A_SIZE, &p, have, val, sizeof(val));
		if (a != MGR_A_SIZE || have)
			fprintf(f, "%s\n", val);
		break;
	case MGR_A_STATE:
		fprintf(f, "%s\n", state_name(c));
		break;
	case MGR_A_SOCKET:
		mgr_sock_path(m, c, val, sizeof(val));
		fprintf(f, "%s\n", val);
		break;
	case MGR_A_DEVICE:
		mgr_node_path(m, c, val, sizeof(val));
		fprintf(f, "%d:%u %s\n", MGR_DEV_MAJOR, c->minor, val);
		break;
	case MGR_A_STATS:
		memset(&st, 0, sizeof(st));
		if (c->vdev)
			vdev_get_stats(c->vdev, &st);
		fprintf(f, "reads %" PRIu64 "\nwrites %" PRIu64 "\nflushes %" PRIu64
			"\ndiscards %" PRIu64 "\nwrite_zeroes %" PRIu64
			"\nget_ids %" PRIu64 "\nbytes %" PRIu64 "\nbytes_read %" PRIu64
			"\nbytes_written %" PRIu64 "\nerrors %" PRIu64
			"\nin-flight %" PRIu64 "\n",
			st.reads, st.writes, st.flushes, st.discards, st.write_zeroes,
			st.get_ids, st.bytes_read + st.bytes_written, st.bytes_read,
			st.bytes_written, st.errors, st.inflight);
		/* Backend lines ("io_mode direct"...), already "key value\n". */
		st.detail[sizeof(st.detail) - 1] = '\0';
		fputs(st.detail, f);
		break;
	case MGR_A_ERROR:
		pthread_mutex_lock(&m->lock);
		snprintf(val, sizeof(val), "%s", c->err);
		pthread_mutex_unlock(&m->lock);
		if (!val[0] && c->vdev)
			vdev_last_error(c->vdev, val, VDEV_ERR_MAX);
		if (val[0])
			fprintf(f, "%s\n", val);
		break;
	default:
		break;
	}
	pthread_mutex_unlock(&c->op_lock);
	return finish(f, &buf, out);
}

int mgr_global_read(struct mgr *m, enum mgr_gattr g, char **out, size_t *len)
{
	struct ctrl **v = NULL;
	char *buf = NULL;
	size_t n = 0;
	FILE *f;

	f = open_memstream(&buf, len);
	if (!f)
		return -ENOMEM;
	if (g == MGR_G_VERSION) {
		fprintf(f, "vhostd %s\n", VHOSTD_VERSION);
		return finish(f, &buf, out);
	}

	/* Take references, then look at each controller under its own lock. */
	pthread_mutex_lock(&m->lock);
	v = calloc(m->count + 1, sizeof(*v));
	if (v) {
		for (struct ctrl *c = m->head; c; c = c->next) {
			c->refs++;
			v[n++] = c;
		}
	}
	pthread_mutex_unlock(&m->lock);
	if (!v) {
		fclose(f);
		free(buf);
		return -ENOMEM;
	}

	unsigned live = 0, connected = 0, failed = 0, unconf = 0;
	if (g == MGR_G_STATUS)
		fprintf(f, "%-20s %-12s %7s %14s %s\n", "NAME", "STATE", "MINOR",
			"SIZE", "BACKING");
	for (size_t i = 0; i < n; i++) {
		struct ctrl *c = v[i];
		const char *s;
		char back[sizeof(c->params.path)];

		pthread_mutex_lock(&c->op_lock);
		s = c->removed ? NULL : state_name(c);
		if (s && g == MGR_G_STATUS) {
			struct vdev_params cur = c->params;
			if (c->vdev)
				vdev_get_params(c->vdev, &cur);
			else if (!c->have_size)
				cur.size = 0;
			cfg_format_value(CFG_BACKING, &cur, true, back, sizeof(back));
			fprintf(f, "%-20s %-12s %7u %14" PRIu64 " %s\n", c->name, s,
				c->minor, cur.size, back);
		}
		pthread_mutex_unlock(&c->op_lock);
		if (!s)
			continue;
		if (strcmp(s, "listening") == 0)
			live++;
		else if (strcmp(s, "connected") == 0)
			live++, connected++;
		else if (strcmp(s, "error") == 0)
			failed++;
		else
			unconf++;
	}
	if (g == MGR_G_INFO)
		fprintf(f, "version %s\nstore %s\nsockets %s\ndevices %s\nstate_file %s\n"
			"%smax_controllers %u\ncontrollers %zu\nlive %u\nconnected %u\n"
			"unconfigured %u\nerror %u\n", VHOSTD_VERSION, m->store,
			m->sockdir, m->devdir, m->state_path, m->engine_info,
			m->max_ctrls, n, live, connected, unconf, failed);
	for (size_t i = 0; i < n; i++)
		mgr_put(m, v[i]);
	free(v);
	return finish(f, &buf, out);
}

/* ---- attribute writes ---------------------------------------------------- */

static bool params_equal(const struct vdev_params *a, const struct vdev_params *b)
{
	return a->size == b->size && a->block_size == b->block_size &&
	       a->backing == b->backing && a->readonly == b->readonly &&
	       a->queues == b->queues && strcmp(a->serial, b->serial) == 0 &&
	       (a->backing != BE_FILE || strcmp(a->path, b->path) == 0);
}

static void refuse(struct mgr *m, struct ctrl *c, const char *what, const char *why)
{
	pthread_mutex_lock(&m->lock);
	mgr_join(c->err, sizeof(c->err), what, why);
	pthread_mutex_unlock(&m->lock);
	vlog(LOG_WARNING, "[%s] %s%s", c->name, what, why);
}

void mgr_ctrl_refused(struct mgr *m, struct ctrl *c, const char *why)
{
	refuse(m, c, "", why);
}

int mgr_ctrl_write(struct mgr *m, struct ctrl *c, enum mgr_attr a,
		   const char *buf, size_t len)
{
	char why[VDEV_ERR_MAX] = "", what[48];
	struct vdev_params p;
	struct vdev *d = NULL;
	unsigned set = 0;
	bool have, changed = true;
	int r;

	snprintf(what, sizeof(what), "write to %s refused: ", mgr_attr_name(a));
	if (!mgr_attr_writable(a)) {
		refuse(m, c, what, "the file is read-only");
		return -EACCES;
	}
	pthread_mutex_lock(&c->op_lock);
	if (c->removed) {
		pthread_mutex_unlock(&c->op_lock);
		return -ENOENT;
	}
	pthread_mutex_lock(&m->lock);
	p = c->params;
	have = c->have_size;
	pthread_mutex_unlock(&m->lock);

	if (a == MGR_A_CONFIG)
		r = cfg_parse_config_text(buf, len, &p, &set, why, sizeof(why));
	else
		r = cfg_parse_key_text(a - MGR_A_SIZE, buf, len, &p, &set, why, sizeof(why));
	if (r < 0)
		goto refused;
	have = have || (set & CFG_BIT(CFG_SIZE));

	if (!mgr_complete(&p, have)) {
		/* Still unconfigured: check the other settings with a stand-in
		 * size that every valid block size divides. */
		struct vdev_params t = p;
		t.size = 1u << 20;
		r = vdev_params_check(&t, why, sizeof(why));
		if (r < 0)
			goto refused;
	} else {
		struct vdev_params cp;

		mgr_core_params(c, &p, have, &cp);
		r = vdev_params_check(&cp, why, sizeof(why));
		if (r < 0)
			goto refused;
		if (!c->vdev) {
			r = mgr_go_live(m, c, &cp, &d, why, sizeof(why));
			if (r < 0)
				goto refused;
			vlog(LOG_INFO, "[%s] live, node devices/%s is %d:%u", c->name,
			     c->name, MGR_DEV_MAJOR, c->minor);
		} else if (params_equal(&p, &c->params)) {
			changed = false;
		} else {
			why[0] = '\0';
			r = vdev_set_params(c->vdev, &cp, why, sizeof(why));
			if (r == -EBUSY)
				snprintf(why, sizeof(why), "the settings cannot change while "
					 "a front-end is connected");
			else if (r < 0 && !why[0])
				snprintf(why, sizeof(why), "%s", strerror(-r));
			if (r < 0)
				goto refused;
		}
	}

	pthread_mutex_lock(&m->lock);
	c->params = p;
	c->have_size = have;
	if (d)
		c->vdev = d;
	c->err[0] = '\0';
	if (changed) {
		c->mtime = time(NULL);
		m->gen++;
	}
	pthread_mutex_unlock(&m->lock);
	pthread_mutex_unlock(&c->op_lock);
	if (changed && mgr_save(m, why, sizeof(why)) < 0) {
		pthread_mutex_lock(&m->lock);
		mgr_join(c->err, sizeof(c->err), "the change was applied but ", why);
		pthread_mutex_unlock(&m->lock);
	}
	return 0;
refused:
	if (r >= 0)
		r = -EINVAL;
	refuse(m, c, what, why);
	pthread_mutex_unlock(&c->op_lock);
	return r;
}
