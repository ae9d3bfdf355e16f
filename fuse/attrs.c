/* attrs: the control fs files as show/store tables; see attrs.h.  Renders
 * snapshots (mgr_ctrl_info, mgr_get_info) and parses user text with cfgparse
 * into mgr_ctrl_set calls.  Trusts: the daemon's API.  Checks: every byte a
 * user writes (through cfgparse). */
#include "attrs.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "cfgparse.h"
#include "config.h"

/* ---- controller files: show ---------------------------------------------- */

/* The settings as read back: a file backing without a size of its own shows
 * the size in force. */
static void shown_params(const struct ctrl_info *ci, struct vdev_params *p, bool *have)
{
	*p = ci->params;
	*have = ci->have_size;
	if (ci->live && !ci->have_size) {
		p->size = ci->live_size;
		*have = true;
	}
}

static void show_config(const struct cfs_attr *a, const struct ctrl_info *ci, FILE *f)
{
	char val[2 * sizeof(ci->params.path)];
	struct vdev_params p;
	bool have;

	shown_params(ci, &p, &have);
	cfg_format_config(&p, have, val, sizeof(val));
	fputs(val, f);
}

static void show_key(const struct cfs_attr *a, const struct ctrl_info *ci, FILE *f)
{
	char val[2 * sizeof(ci->params.path)];
	struct vdev_params p;
	bool have;

	shown_params(ci, &p, &have);
	cfg_format_value(a->key, &p, have, val, sizeof(val));
	if (a->key != CFG_SIZE || have)
		fprintf(f, "%s\n", val);
}

static void show_state(const struct cfs_attr *a, const struct ctrl_info *ci, FILE *f)
{
	fprintf(f, "%s\n", ctrl_state_name(ci->state));
}

static void show_socket(const struct cfs_attr *a, const struct ctrl_info *ci, FILE *f)
{
	fprintf(f, "%s\n", ci->socket);
}

static void show_device(const struct cfs_attr *a, const struct ctrl_info *ci, FILE *f)
{
	fprintf(f, "%d:%u %s\n", MGR_DEV_MAJOR, ci->minor, ci->device);
}

static void show_stats(const struct cfs_attr *a, const struct ctrl_info *ci, FILE *f)
{
	const struct ctrl_stats *st = &ci->stats;

	fprintf(f, "reads %" PRIu64 "\nwrites %" PRIu64 "\nflushes %" PRIu64
		"\ndiscards %" PRIu64 "\nwrite_zeroes %" PRIu64
		"\nget_ids %" PRIu64 "\nbytes %" PRIu64 "\nbytes_read %" PRIu64
		"\nbytes_written %" PRIu64 "\nerrors %" PRIu64
		"\nin-flight %" PRIu64 "\n",
		st->reads, st->writes, st->flushes, st->discards, st->write_zeroes,
		st->get_ids, st->bytes_read + st->bytes_written, st->bytes_read,
		st->bytes_written, st->errors, st->inflight);
	/* Backend lines ("io_mode direct"...), already "key value\n". */
	fprintf(f, "%.*s", (int)sizeof(st->detail), st->detail);
	/* Latency of completed requests since the controller went live, for
	 * every kind whether it saw requests or not (a fixed set of lines):
	 * microseconds with three decimals (the figures are nanoseconds). */
	for (int op = 0; op < CTRL_NOPS; op++) {
		const struct ctrl_latency *l = &st->lat[op];
		const char *k = ctrl_op_name(op);

		fprintf(f, "lat_%s_count %" PRIu64 "\n", k, l->count);
		fprintf(f, "lat_%s_p50_us %" PRIu64 ".%03" PRIu64 "\n", k,
			l->p50_ns / 1000, l->p50_ns % 1000);
		fprintf(f, "lat_%s_p99_us %" PRIu64 ".%03" PRIu64 "\n", k,
			l->p99_ns / 1000, l->p99_ns % 1000);
		fprintf(f, "lat_%s_p999_us %" PRIu64 ".%03" PRIu64 "\n", k,
			l->p999_ns / 1000, l->p999_ns % 1000);
		fprintf(f, "lat_%s_max_us %" PRIu64 ".%03" PRIu64 "\n", k,
			l->max_ns / 1000, l->max_ns % 1000);
	}
	fprintf(f, "throttled_ms %" PRIu64 ".%03" PRIu64 "\n",
		st->throttled_ns / 1000000, st->throttled_ns / 1000 % 1000);
}

static void show_error(const struct cfs_attr *a, const struct ctrl_info *ci, FILE *f)
{
	if (ci->error[0])
		fprintf(f, "%s\n", ci->error);
}

/* ---- controller files: store --------------------------------------------- */

static int store_text(const struct cfs_attr *a, struct mgr *m, struct ctrl *c,
		      const char *buf, size_t len)
{
	char why[VDEV_ERR_MAX] = "", what[48];
	struct vdev_params p;
	unsigned set = 0;
	int r;

	/* Only the fields of the keys written are filled (and sent). */
	vdev_params_init(&p);
	if (a->key < 0)
		r = cfg_parse_config_text(buf, len, &p, &set, why, sizeof(why));
	else
		r = cfg_parse_key_text(a->key, buf, len, &p, &set, why, sizeof(why));
	snprintf(what, sizeof(what), "write to %s ", a->name);
	if (r < 0) {
		char full[VDEV_ERR_MAX + 64];

		snprintf(full, sizeof(full), "%srefused: %s", what, why);
		/* a write to a file of a removed controller: ENOENT, as before
		 * anything is parsed */
		return mgr_ctrl_refused(m, c, full) < 0 ? -ENOENT : r;
	}
	return mgr_ctrl_set(m, c, &p, set, what);
}

#define KEY_ATTR(k, n) { n, 0644, k, show_key, store_text }

const struct cfs_attr cfs_attrs[] = {
	{ "config", 0644, -1, show_config, store_text },
	KEY_ATTR(CFG_SIZE, "size"),
	KEY_ATTR(CFG_BLOCK_SIZE, "block_size"),
	KEY_ATTR(CFG_BACKING, "backing"),
	KEY_ATTR(CFG_READONLY, "readonly"),
	KEY_ATTR(CFG_QUEUES, "queues"),
	KEY_ATTR(CFG_SERIAL, "serial"),
	KEY_ATTR(CFG_ALLOW_SHRINK, "allow_shrink"),
	KEY_ATTR(CFG_IOPS_LIMIT, "iops_limit"),
	KEY_ATTR(CFG_BPS_LIMIT, "bps_limit"),
	KEY_ATTR(CFG_READ_BPS_LIMIT, "read_bps_limit"),
	KEY_ATTR(CFG_WRITE_BPS_LIMIT, "write_bps_limit"),
	KEY_ATTR(CFG_IOPS_BURST, "iops_burst"),
	KEY_ATTR(CFG_BPS_BURST, "bps_burst"),
	KEY_ATTR(CFG_GROUP, "group"),
	KEY_ATTR(CFG_CEPH_CONF, "ceph_conf"),
	KEY_ATTR(CFG_CEPH_ID, "ceph_id"),
	KEY_ATTR(CFG_RBD_SHARED, "rbd_shared"),
	KEY_ATTR(CFG_RBD_TIMEOUT, "rbd_timeout"),
	KEY_ATTR(CFG_PACKED, "packed"),
	{ "state", 0444, -1, show_state, NULL },
	{ "socket", 0444, -1, show_socket, NULL },
	{ "device", 0444, -1, show_device, NULL },
	{ "stats", 0444, -1, show_stats, NULL },
	{ "error", 0444, -1, show_error, NULL },
};
const size_t cfs_nattrs = sizeof(cfs_attrs) / sizeof(cfs_attrs[0]);

/* ---- top-level files ----------------------------------------------------- */

static int show_version(struct mgr *m, FILE *f)
{
	fprintf(f, "vhostd %s\n", VHOSTD_VERSION);
	return 0;
}

/* .info (totals) and .status (one line per controller) walk the same
 * snapshots. */
static int show_ctrls(struct mgr *m, FILE *f, bool status)
{
	unsigned live = 0, connected = 0, failed = 0, unconf = 0;
	struct ctrl_info *ci;
	struct ctrl **v;
	size_t n;

	ci = malloc(sizeof(*ci));
	if (!ci || mgr_refs(m, &v, &n) < 0) {
		free(ci);
		return -ENOMEM;
	}
	if (status)
		fprintf(f, "%-20s %-12s %7s %14s %s\n", "NAME", "STATE", "MINOR",
			"SIZE", "BACKING");
	for (size_t i = 0; i < n; i++) {
		if (mgr_ctrl_info(m, v[i], ci) < 0)
			continue;       /* removed meanwhile */
		if (status) {
			char back[sizeof(ci->params.path)];
			struct vdev_params cur = ci->params;

			if (ci->live)
				cur.size = ci->live_size;
			else if (!ci->have_size)
				cur.size = 0;
			cfg_format_value(CFG_BACKING, &cur, true, back, sizeof(back));
			fprintf(f, "%-20s %-12s %7u %14" PRIu64 " %s\n", ci->name,
				ctrl_state_name(ci->state), ci->minor, cur.size, back);
		}
		switch (ci->state) {
		case CTRL_LISTENING: live++; break;
		case CTRL_CONNECTED: live++, connected++; break;
		case CTRL_ERROR: failed++; break;
		default: unconf++; break;
		}
	}
	if (!status) {
		struct mgr_info mi;

		mgr_get_info(m, &mi);
		fprintf(f, "version %s\nstore %s\nsockets %s\ndevices %s\nstate_file %s\n"
			"%smax_controllers %u\ncontrollers %zu\nlive %u\nconnected %u\n"
			"unconfigured %u\nerror %u\n", VHOSTD_VERSION, mi.store,
			mi.sockdir, mi.devdir, mi.state_path, mi.engine_info,
			mi.max_ctrls, n, live, connected, unconf, failed);
	}
	mgr_refs_put(m, v, n);
	free(ci);
	return 0;
}

static int show_info(struct mgr *m, FILE *f)
{
	return show_ctrls(m, f, false);
}

static int show_status(struct mgr *m, FILE *f)
{
	return show_ctrls(m, f, true);
}

/* .metrics: the Prometheus text exposition format, for node_exporter's
 * textfile collector.  Every family is one block (HELP, TYPE, a sample per
 * controller), so the snapshots are taken first. */
struct metric_snap {
	char name[VDEV_NAME_MAX + 1];
	enum ctrl_state state;
	struct ctrl_stats st;
};

/* Nanoseconds as seconds, exactly. */
static void put_seconds(FILE *f, uint64_t ns)
{
	fprintf(f, "%" PRIu64 ".%09" PRIu64 "\n", ns / 1000000000, ns % 1000000000);
}

static void family(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static int show_metrics(struct mgr *m, FILE *f)
{
	static const enum ctrl_state states[] = { CTRL_UNCONFIGURED, CTRL_LISTENING,
						  CTRL_CONNECTED, CTRL_ERROR };
	static const char *const qname[] = { "0.5", "0.99", "0.999" };
	struct metric_snap *s;
	struct ctrl_info *ci;
	struct ctrl **v;
	size_t n, k = 0;

	ci = malloc(sizeof(*ci));
	if (!ci || mgr_refs(m, &v, &n) < 0) {
		free(ci);
		return -ENOMEM;
	}
	s = calloc(n + 1, sizeof(*s));
	if (!s) {
		mgr_refs_put(m, v, n);
		free(ci);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		if (mgr_ctrl_info(m, v[i], ci) < 0)
			continue;       /* removed meanwhile */
		memcpy(s[k].name, ci->name, sizeof(s[k].name));
		s[k].state = ci->state;
		s[k].st = ci->stats;
		k++;
	}
	mgr_refs_put(m, v, n);
	free(ci);

	/* Controller names are [A-Za-z0-9._-]: label values need no escaping. */
	family(f, "vhostd_requests_total", "counter",
	       "Requests completed by a controller, by kind.");
	for (size_t i = 0; i < k; i++) {
		const struct ctrl_stats *st = &s[i].st;
		const struct { const char *op; uint64_t v; } r[] = {
			{ "read", st->reads }, { "write", st->writes },
			{ "flush", st->flushes }, { "discard", st->discards },
			{ "write_zeroes", st->write_zeroes }, { "get_id", st->get_ids },
		};
		for (size_t j = 0; j < sizeof(r) / sizeof(r[0]); j++)
			fprintf(f, "vhostd_requests_total{controller=\"%s\",op=\"%s\"} %"
				PRIu64 "\n", s[i].name, r[j].op, r[j].v);
	}
	family(f, "vhostd_bytes_total", "counter",
	       "Bytes moved by a controller's reads and writes.");
	for (size_t i = 0; i < k; i++) {
		fprintf(f, "vhostd_bytes_total{controller=\"%s\",direction=\"read\"} %"
			PRIu64 "\n", s[i].name, s[i].st.bytes_read);
		fprintf(f, "vhostd_bytes_total{controller=\"%s\",direction=\"write\"} %"
			PRIu64 "\n", s[i].name, s[i].st.bytes_written);
	}
	family(f, "vhostd_errors_total", "counter",
	       "Requests completed with an error status (IOERR or UNSUPP).");
	for (size_t i = 0; i < k; i++)
		fprintf(f, "vhostd_errors_total{controller=\"%s\"} %" PRIu64 "\n",
			s[i].name, s[i].st.errors);
	family(f, "vhostd_inflight", "gauge", "Requests taken from the rings and not "
	       "yet completed.");
	for (size_t i = 0; i < k; i++)
		fprintf(f, "vhostd_inflight{controller=\"%s\"} %" PRIu64 "\n",
			s[i].name, s[i].st.inflight);
	family(f, "vhostd_latency_seconds", "summary",
	       "Latency of completed requests since the controller went live, from "
	       "the ring to the completion (NaN before the first).");
	for (size_t i = 0; i < k; i++) {
		for (int op = 0; op < CTRL_NOPS; op++) {
			const struct ctrl_latency *l = &s[i].st.lat[op];
			const uint64_t q[] = { l->p50_ns, l->p99_ns, l->p999_ns };

			for (int j = 0; j < 3; j++) {
				fprintf(f, "vhostd_latency_seconds{controller=\"%s\",op="
					"\"%s\",quantile=\"%s\"} ", s[i].name,
					ctrl_op_name(op), qname[j]);
				if (l->count)
					put_seconds(f, q[j]);
				else
					fputs("NaN\n", f);
			}
			fprintf(f, "vhostd_latency_seconds_count{controller=\"%s\",op=\"%s\"} %"
				PRIu64 "\n", s[i].name, ctrl_op_name(op), l->count);
		}
	}
	family(f, "vhostd_latency_seconds_max", "gauge",
	       "Longest latency of a completed request since the controller went live.");
	for (size_t i = 0; i < k; i++) {
		for (int op = 0; op < CTRL_NOPS; op++) {
			fprintf(f, "vhostd_latency_seconds_max{controller=\"%s\",op=\"%s\"} ",
				s[i].name, ctrl_op_name(op));
			put_seconds(f, s[i].st.lat[op].max_ns);
		}
	}
	family(f, "vhostd_throttled_seconds_total", "counter",
	       "Time a controller's queues waited for its limits or its group's.");
	for (size_t i = 0; i < k; i++) {
		fprintf(f, "vhostd_throttled_seconds_total{controller=\"%s\"} ", s[i].name);
		put_seconds(f, s[i].st.throttled_ns);
	}
	family(f, "vhostd_controller_state", "gauge",
	       "1 for the state the controller is in, 0 for the others.");
	for (size_t i = 0; i < k; i++)
		for (size_t j = 0; j < sizeof(states) / sizeof(states[0]); j++)
			fprintf(f, "vhostd_controller_state{controller=\"%s\",state=\"%s\"} "
				"%d\n", s[i].name, ctrl_state_name(states[j]),
				s[i].state == states[j]);
	free(s);
	return 0;
}

const struct cfs_gattr cfs_gattrs[] = {
	{ ".version", show_version },
	{ ".info", show_info },
	{ ".status", show_status },
	{ ".metrics", show_metrics },
};
const size_t cfs_ngattrs = sizeof(cfs_gattrs) / sizeof(cfs_gattrs[0]);

/* ---- throttle group files ------------------------------------------------- */

static void show_gr_config(const struct cfs_gr_attr *a, const struct group_info *gi,
			   FILE *f)
{
	char buf[512];

	cfg_format_limits(&gi->limits, buf, sizeof(buf));
	fputs(buf, f);
}

static void show_gr_key(const struct cfs_gr_attr *a, const struct group_info *gi, FILE *f)
{
	struct vdev_params p;
	char val[64];

	vdev_params_init(&p);
	p.limits = gi->limits;
	cfg_format_value(a->key, &p, true, val, sizeof(val));
	fprintf(f, "%s\n", val);
}

static void show_gr_error(const struct cfs_gr_attr *a, const struct group_info *gi,
			  FILE *f)
{
	if (gi->error[0])
		fprintf(f, "%s\n", gi->error);
}

static int store_gr_text(const struct cfs_gr_attr *a, struct mgr *m, const char *group,
			 const char *buf, size_t len)
{
	char why[VDEV_ERR_MAX] = "", what[48];
	struct vdev_params p;
	unsigned set = 0;
	int r;

	vdev_params_init(&p);
	if (a->key < 0)
		r = cfg_parse_limits_text(buf, len, &p.limits, &set, why, sizeof(why));
	else
		r = cfg_parse_key_text(a->key, buf, len, &p, &set, why, sizeof(why));
	snprintf(what, sizeof(what), "write to %s ", a->name);
	if (r < 0) {
		char full[VDEV_ERR_MAX + 64];

		snprintf(full, sizeof(full), "%srefused: %s", what, why);
		return mgr_group_refused(m, group, full) < 0 ? -ENOENT : r;
	}
	return mgr_group_set(m, group, &p.limits, set, what);
}

#define GR_KEY_ATTR(k, n) { n, 0644, k, show_gr_key, store_gr_text }

const struct cfs_gr_attr cfs_gr_attrs[] = {
	{ "config", 0644, -1, show_gr_config, store_gr_text },
	GR_KEY_ATTR(CFG_IOPS_LIMIT, "iops_limit"),
	GR_KEY_ATTR(CFG_BPS_LIMIT, "bps_limit"),
	GR_KEY_ATTR(CFG_READ_BPS_LIMIT, "read_bps_limit"),
	GR_KEY_ATTR(CFG_WRITE_BPS_LIMIT, "write_bps_limit"),
	GR_KEY_ATTR(CFG_IOPS_BURST, "iops_burst"),
	GR_KEY_ATTR(CFG_BPS_BURST, "bps_burst"),
	{ "error", 0444, -1, show_gr_error, NULL },
};
const size_t cfs_ngr_attrs = sizeof(cfs_gr_attrs) / sizeof(cfs_gr_attrs[0]);

/* ---- lookups and the calls of cfs.c -------------------------------------- */

int cfs_attr_lookup(const char *name)
{
	for (size_t a = 0; a < cfs_nattrs; a++)
		if (strcmp(cfs_attrs[a].name, name) == 0)
			return (int)a;
	return -1;
}

int cfs_gr_attr_lookup(const char *name)
{
	for (size_t a = 0; a < cfs_ngr_attrs; a++)
		if (strcmp(cfs_gr_attrs[a].name, name) == 0)
			return (int)a;
	return -1;
}

int cfs_gattr_lookup(const char *name)
{
	for (size_t g = 0; g < cfs_ngattrs; g++)
		if (strcmp(cfs_gattrs[g].name, name) == 0)
			return (int)g;
	return -1;
}

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

int cfs_attr_read(struct mgr *m, struct ctrl *c, int a, char **out, size_t *len)
{
	struct ctrl_info *ci;
	char *buf = NULL;
	FILE *f;
	int r;

	if (a < 0 || (size_t)a >= cfs_nattrs)
		return -ENOENT;
	ci = malloc(sizeof(*ci));       /* two paths of PATH_MAX and more */
	if (!ci)
		return -ENOMEM;
	r = mgr_ctrl_info(m, c, ci);
	if (r < 0) {
		free(ci);
		return r;
	}
	f = open_memstream(&buf, len);
	if (!f) {
		free(ci);
		return -ENOMEM;
	}
	cfs_attrs[a].show(&cfs_attrs[a], ci, f);
	free(ci);
	return finish(f, &buf, out);
}

int cfs_gattr_read(struct mgr *m, int g, char **out, size_t *len)
{
	char *buf = NULL;
	FILE *f;

	if (g < 0 || (size_t)g >= cfs_ngattrs)
		return -ENOENT;
	f = open_memstream(&buf, len);
	if (!f)
		return -ENOMEM;
	if (cfs_gattrs[g].show(m, f) < 0) {
		fclose(f);
		free(buf);
		return -ENOMEM;
	}
	return finish(f, &buf, out);
}

void cfs_attr_refuse_readonly(struct mgr *m, struct ctrl *c, int a)
{
	char why[96];

	snprintf(why, sizeof(why), "write to %s refused: the file is read-only",
		 a >= 0 && (size_t)a < cfs_nattrs ? cfs_attrs[a].name : "?");
	mgr_ctrl_refused(m, c, why);
}

int cfs_attr_write(struct mgr *m, struct ctrl *c, int a, const char *buf, size_t len)
{
	if (!cfs_attr_writable(a)) {
		cfs_attr_refuse_readonly(m, c, a);
		return -EACCES;
	}
	return cfs_attrs[a].store(&cfs_attrs[a], m, c, buf, len);
}

int cfs_gr_attr_read(struct mgr *m, const char *group, int a, char **out, size_t *len)
{
	struct group_info gi;
	char *buf = NULL;
	FILE *f;
	int r;

	if (a < 0 || (size_t)a >= cfs_ngr_attrs)
		return -ENOENT;
	r = mgr_group_info(m, group, &gi);
	if (r < 0)
		return r;
	f = open_memstream(&buf, len);
	if (!f)
		return -ENOMEM;
	cfs_gr_attrs[a].show(&cfs_gr_attrs[a], &gi, f);
	return finish(f, &buf, out);
}

void cfs_gr_attr_refuse_readonly(struct mgr *m, const char *group, int a)
{
	char why[96];

	snprintf(why, sizeof(why), "write to %s refused: the file is read-only",
		 a >= 0 && (size_t)a < cfs_ngr_attrs ? cfs_gr_attrs[a].name : "?");
	mgr_group_refused(m, group, why);
}

int cfs_gr_attr_write(struct mgr *m, const char *group, int a, const char *buf,
		      size_t len)
{
	if (!cfs_gr_attr_writable(a)) {
		cfs_gr_attr_refuse_readonly(m, group, a);
		return -EACCES;
	}
	return cfs_gr_attrs[a].store(&cfs_gr_attrs[a], m, group, buf, len);
}
