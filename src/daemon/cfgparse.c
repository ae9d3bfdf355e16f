/* cfgparse: parsers and formatters of controller settings; see cfgparse.h.
 * Pure functions on untrusted text; any thread. */
#include "cfgparse.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static const char *const key_names[CFG_NKEYS] = {
	[CFG_SIZE] = "size",
	[CFG_BLOCK_SIZE] = "block_size",
	[CFG_BACKING] = "backing",
	[CFG_READONLY] = "readonly",
	[CFG_QUEUES] = "queues",
	[CFG_SERIAL] = "serial",
	[CFG_ALLOW_SHRINK] = "allow_shrink",
	[CFG_IOPS_LIMIT] = "iops_limit",
	[CFG_BPS_LIMIT] = "bps_limit",
	[CFG_READ_BPS_LIMIT] = "read_bps_limit",
	[CFG_WRITE_BPS_LIMIT] = "write_bps_limit",
	[CFG_IOPS_BURST] = "iops_burst",
	[CFG_BPS_BURST] = "bps_burst",
	[CFG_GROUP] = "group",
	[CFG_CEPH_CONF] = "ceph_conf",
	[CFG_CEPH_ID] = "ceph_id",
	[CFG_RBD_SHARED] = "rbd_shared",
	[CFG_RBD_TIMEOUT] = "rbd_timeout",
	[CFG_PACKED] = "packed",
};

/* The field of a limit key, NULL for another key. */
static uint64_t *limit_field(enum cfg_key k, struct vdev_limits *l)
{
	switch (k) {
	case CFG_IOPS_LIMIT: return &l->iops;
	case CFG_BPS_LIMIT: return &l->bps;
	case CFG_READ_BPS_LIMIT: return &l->read_bps;
	case CFG_WRITE_BPS_LIMIT: return &l->write_bps;
	case CFG_IOPS_BURST: return &l->iops_burst;
	case CFG_BPS_BURST: return &l->bps_burst;
	default: return NULL;
	}
}

static uint64_t limit_get(enum cfg_key k, const struct vdev_limits *l)
{
	struct vdev_limits copy = *l;

	return *limit_field(k, &copy);
}

const char *cfg_key_name(enum cfg_key k)
{
	return (unsigned)k < CFG_NKEYS ? key_names[k] : "?";
}

int cfg_key_lookup(const char *name, size_t len)
{
	for (int k = 0; k < CFG_NKEYS; k++)
		if (strlen(key_names[k]) == len && memcmp(key_names[k], name, len) == 0)
			return k;
	return -1;
}

bool cfg_name_valid(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n > VDEV_NAME_MAX || name[0] == '.')
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = name[i];
		if (!(isascii(c) && (isalnum(c) || c == '.' || c == '_' || c == '-')))
			return false;
	}
	return true;
}

/* Printable for an error message: at most 40 bytes, non-printables as '?'. */
static const char *shown(const char *s, char *buf, size_t len)
{
	size_t i;

	for (i = 0; s[i] && i + 4 < len && i < 40; i++)
		buf[i] = isprint((unsigned char)s[i]) ? s[i] : '?';
	if (s[i] && i + 4 < len) {
		memcpy(buf + i, "...", 3);
		i += 3;
	}
	buf[i] = '\0';
	return buf;
}

static int parse_u64(const char *s, uint64_t *out, const char **end)
{
	uint64_t v = 0;
	const char *p = s;

	if (!isdigit((unsigned char)*p))
		return -EINVAL;
	for (; isdigit((unsigned char)*p); p++) {
		unsigned d = *p - '0';
		if (v > (UINT64_MAX - d) / 10)
			return -ERANGE;
		v = v * 10 + d;
	}
	*out = v;
	*end = p;
	return 0;
}

int cfg_parse_size(const char *s, uint64_t *out, char *err, size_t errlen)
{
	char sh[48];
	const char *end;
	uint64_t v;
	unsigned shift = 0;
	int r;

	r = parse_u64(s, &v, &end);
	if (r == -ERANGE) {
		snprintf(err, errlen, "size '%s' is too large", shown(s, sh, sizeof(sh)));
		return -EINVAL;
	}
	if (r < 0)
		goto bad;
	switch (*end) {
	case '\0': break;
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	case 't': case 'T': shift = 40; end++; break;
	default: goto bad;
	}
	if (*end != '\0')
		goto bad;
	if (v == 0) {
		snprintf(err, errlen, "size must be greater than zero");
		return -EINVAL;
	}
	if (shift && v > (UINT64_MAX >> shift)) {
		snprintf(err, errlen, "size '%s' is too large", shown(s, sh, sizeof(sh)));
		return -EINVAL;
	}
	*out = v << shift;
	return 0;
bad:
	snprintf(err, errlen, "'%s' is not a size (use a number of bytes with an "
		 "optional K, M, G or T suffix, e.g. 64M)", shown(s, sh, sizeof(sh)));
	return -EINVAL;
}

static int parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = { "1", "y", "yes", "true", "on" };
	static const char *const no[] = { "0", "n", "no", "false", "off" };

	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return -EINVAL;
}

static bool graph_only(const char *s)
{
	for (; *s; s++)
		if (!isgraph((unsigned char)*s) || !isascii((unsigned char)*s))
			return false;
	return true;
}

/* A client id: the characters of a controller name, any first one. */
static bool cfg_id_valid(const char *s)
{
	for (; *s; s++) {
		unsigned char c = *s;
		if (!(isascii(c) && (isalnum(c) || c == '.' || c == '_' || c == '-')))
			return false;
	}
	return true;
}

/* "POOL/IMAGE", "POOL/NAMESPACE/IMAGE", either with "@SNAP": the image
 * fields of p->rbd (the cluster keys are their own). */
static int parse_rbd(const char *spec, struct vdev_params *p, char *err, size_t errlen)
{
	char buf[4 * (VDEV_RBD_NAME_MAX + 1)], sh[48];
	char *part[3], *at, *s = buf;
	size_t n = strlen(spec);
	unsigned np = 0;

	if (n >= sizeof(buf))
		goto bad;
	memcpy(buf, spec, n + 1);
	at = strchr(buf, '@');
	if (at)
		*at++ = '\0';
	for (;;) {
		char *slash = strchr(s, '/');

		if (np == 3)
			goto bad;
		part[np++] = s;
		if (!slash)
			break;
		*slash = '\0';
		s = slash + 1;
	}
	if (np < 2)
		goto bad;
	for (unsigned i = 0; i < np; i++)
		if (!vdev_rbd_name_valid(part[i]))
			goto bad;
	if (at && !vdev_rbd_name_valid(at))
		goto bad;
	snprintf(p->rbd.pool, sizeof(p->rbd.pool), "%s", part[0]);
	snprintf(p->rbd.ns, sizeof(p->rbd.ns), "%s", np == 3 ? part[1] : "");
	snprintf(p->rbd.image, sizeof(p->rbd.image), "%s", part[np - 1]);
	snprintf(p->rbd.snap, sizeof(p->rbd.snap), "%s", at ? at : "");
	p->backing = BE_RBD;
	p->path[0] = '\0';
	return 0;
bad:
	snprintf(err, errlen, "backing 'rbd:%s' is invalid: use rbd:POOL/IMAGE or "
		 "rbd:POOL/NAMESPACE/IMAGE, optionally with @SNAPSHOT; names are 1 to %d "
		 "printable bytes without '/', '@' or spaces", shown(spec, sh, sizeof(sh)),
		 VDEV_RBD_NAME_MAX);
	return -EINVAL;
}

int cfg_parse_value(enum cfg_key k, const char *val, struct vdev_params *p,
		    char *err, size_t errlen)
{
	char sh[48];
	uint64_t v;
	const char *end;
	size_t n = strlen(val);

	switch (k) {
	case CFG_SIZE:
		return cfg_parse_size(val, &p->size, err, errlen);
	case CFG_BLOCK_SIZE:
		if (cfg_parse_size(val, &v, err, errlen) < 0 || v < 512 || v > 65536 ||
		    (v & (v - 1))) {
			snprintf(err, errlen, "block_size '%s' is invalid: it must be a "
				 "power of two from 512 to 65536",
				 shown(val, sh, sizeof(sh)));
			return -EINVAL;
		}
		p->block_size = (uint32_t)v;
		return 0;
	case CFG_BACKING:
		if (strcmp(val, "ram") == 0) {
			p->backing = BE_RAM;
			p->path[0] = '\0';
		} else if (strcmp(val, "null") == 0) {
			p->backing = BE_NULL;
			p->path[0] = '\0';
		} else if (strncmp(val, "rbd:", 4) == 0) {
			return parse_rbd(val + 4, p, err, errlen);
		} else if (val[0] == '/') {
			/* Bounded well below the config text limit, so that what
			 * `config` prints can always be written back. */
			if (n > CFG_PATH_MAX) {
				snprintf(err, errlen, "backing path is longer than %d bytes",
					 CFG_PATH_MAX);
				return -EINVAL;
			}
			for (size_t i = 0; i < n; i++) {
				if (!isgraph((unsigned char)val[i])) {
					snprintf(err, errlen, "backing path must not contain "
						 "spaces or control characters");
					return -EINVAL;
				}
			}
			p->backing = BE_FILE;
			memcpy(p->path, val, n + 1);
		} else {
			snprintf(err, errlen, "backing '%s' is invalid: use ram, null, "
				 "an absolute path or rbd:POOL/IMAGE", shown(val, sh, sizeof(sh)));
			return -EINVAL;
		}
		return 0;
	case CFG_READONLY:
		if (parse_bool(val, &p->readonly) < 0) {
			snprintf(err, errlen, "readonly '%s' is invalid: use 0 or 1",
				 shown(val, sh, sizeof(sh)));
			return -EINVAL;
		}
		return 0;
	case CFG_PACKED:
		if (parse_bool(val, &p->packed) < 0) {
			snprintf(err, errlen, "packed '%s' is invalid: use 0 or 1",
				 shown(val, sh, sizeof(sh)));
			return -EINVAL;
		}
		return 0;
	case CFG_ALLOW_SHRINK:
		if (parse_bool(val, &p->allow_shrink) < 0) {
			snprintf(err, errlen, "allow_shrink '%s' is invalid: use 0 or 1",
				 shown(val, sh, sizeof(sh)));
			return -EINVAL;
		}
		return 0;
	case CFG_QUEUES:
		if (parse_u64(val, &v, &end) < 0 || *end != '\0' || v < 1 ||
		    v > VDEV_MAX_QUEUES) {
			snprintf(err, errlen, "queues '%s' is invalid: use a number from "
				 "1 to %d", shown(val, sh, sizeof(sh)), VDEV_MAX_QUEUES);
			return -EINVAL;
		}
		p->queues = (uint16_t)v;
		return 0;
	case CFG_SERIAL:
		if (n > VDEV_SERIAL_MAX) {
			snprintf(err, errlen, "serial is longer than %d bytes",
				 VDEV_SERIAL_MAX);
			return -EINVAL;
		}
		for (size_t i = 0; i < n; i++) {
			if (!isgraph((unsigned char)val[i]) || !isascii((unsigned char)val[i])) {
				snprintf(err, errlen, "serial must be printable ASCII "
					 "without spaces");
				return -EINVAL;
			}
		}
		memcpy(p->serial, val, n + 1);
		return 0;
	case CFG_IOPS_LIMIT:
	case CFG_IOPS_BURST:
		/* a count of requests: plain decimal, 0 allowed */
		if (parse_u64(val, &v, &end) < 0 || *end != '\0' || v > CFG_LIMIT_MAX) {
			snprintf(err, errlen, "%s '%s' is invalid: use a number of requests "
				 "from 0 (%s) to %llu", key_names[k], shown(val, sh, sizeof(sh)),
				 k == CFG_IOPS_LIMIT ? "unlimited" : "a tenth of a second's worth",
				 (unsigned long long)CFG_LIMIT_MAX);
			return -EINVAL;
		}
		*limit_field(k, &p->limits) = v;
		return 0;
	case CFG_BPS_LIMIT:
	case CFG_READ_BPS_LIMIT:
	case CFG_WRITE_BPS_LIMIT:
	case CFG_BPS_BURST:
		/* bytes (per second), with the suffixes of a size; 0 allowed */
		if (strcmp(val, "0") == 0) {
			v = 0;
		} else if (cfg_parse_size(val, &v, err, errlen) < 0 || v > CFG_LIMIT_MAX) {
			snprintf(err, errlen, "%s '%s' is invalid: use 0 (%s) or a number of "
				 "bytes with an optional K, M, G or T suffix, at most 1024T",
				 key_names[k], shown(val, sh, sizeof(sh)),
				 k == CFG_BPS_BURST ? "a tenth of a second's worth" : "unlimited");
			return -EINVAL;
		}
		*limit_field(k, &p->limits) = v;
		return 0;
	case CFG_CEPH_CONF:
		if (val[0] != '/' || n > VDEV_RBD_CONF_MAX || !graph_only(val)) {
			snprintf(err, errlen, "ceph_conf '%s' is invalid: use an absolute path "
				 "of at most %d bytes without spaces", shown(val, sh, sizeof(sh)),
				 VDEV_RBD_CONF_MAX);
			return -EINVAL;
		}
		memcpy(p->rbd.conf, val, n + 1);
		return 0;
	case CFG_CEPH_ID:
		if (n == 0 || n > VDEV_RBD_ID_MAX || !cfg_id_valid(val)) {
			snprintf(err, errlen, "ceph_id '%s' is invalid: use 1 to %d characters "
				 "of A-Z a-z 0-9 . _ - (the client is client.ID)",
				 shown(val, sh, sizeof(sh)), VDEV_RBD_ID_MAX);
			return -EINVAL;
		}
		memcpy(p->rbd.id, val, n + 1);
		return 0;
	case CFG_RBD_SHARED:
		if (parse_bool(val, &p->rbd.shared) < 0) {
			snprintf(err, errlen, "rbd_shared '%s' is invalid: use 0 or 1",
				 shown(val, sh, sizeof(sh)));
			return -EINVAL;
		}
		return 0;
	case CFG_RBD_TIMEOUT:
		if (parse_u64(val, &v, &end) < 0 || *end != '\0' || v > VDEV_RBD_TIMEOUT_MAX) {
			snprintf(err, errlen, "rbd_timeout '%s' is invalid: use seconds from 0 "
				 "(wait for the cluster) to %d", shown(val, sh, sizeof(sh)),
				 VDEV_RBD_TIMEOUT_MAX);
			return -EINVAL;
		}
		p->rbd.timeout = (uint32_t)v;
		return 0;
	case CFG_GROUP:
		if (n && !cfg_group_name_valid(val)) {
			snprintf(err, errlen, "group '%s' is invalid: a throttle group name is "
				 "1-%d characters of A-Z a-z 0-9 . _ - not starting with '.' "
				 "(empty: none)", shown(val, sh, sizeof(sh)), VDEV_NAME_MAX);
			return -EINVAL;
		}
		memcpy(p->group, val, n + 1);
		return 0;
	default:
		snprintf(err, errlen, "unknown setting");
		return -EINVAL;
	}
}

static bool is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* Copy buf[0..len) into out without surrounding whitespace; refuses NULs. */
static int trim_copy(const char *buf, size_t len, char *out, size_t outlen,
		     char *err, size_t errlen)
{
	if (len >= CFG_TEXT_MAX || len >= outlen) {
		snprintf(err, errlen, "value is too long (at most %d bytes)", CFG_TEXT_MAX - 1);
		return -EINVAL;
	}
	if (memchr(buf, '\0', len)) {
		snprintf(err, errlen, "value contains a NUL byte");
		return -EINVAL;
	}
	while (len && is_ws(*buf)) {
		buf++;
		len--;
	}
	while (len && is_ws(buf[len - 1]))
		len--;
	memcpy(out, buf, len);
	out[len] = '\0';
	return 0;
}

int cfg_parse_key_text(enum cfg_key k, const char *buf, size_t len,
		       struct vdev_params *p, unsigned *set,
		       char *err, size_t errlen)
{
	char text[CFG_TEXT_MAX];
	struct vdev_params tmp = *p;
	int r;

	r = trim_copy(buf, len, text, sizeof(text), err, errlen);
	if (r < 0)
		return r;
	if (text[0] == '\0' && k != CFG_SERIAL && k != CFG_GROUP) {
		snprintf(err, errlen, "empty value for %s", cfg_key_name(k));
		return -EINVAL;
	}
	for (const char *c = text; *c; c++) {
		if (is_ws(*c)) {
			snprintf(err, errlen, "%s takes a single value", cfg_key_name(k));
			return -EINVAL;
		}
	}
	r = cfg_parse_value(k, text, &tmp, err, errlen);
	if (r < 0)
		return r;
	*p = tmp;
	*set |= CFG_BIT(k);
	return 0;
}

int cfg_parse_config_text(const char *buf, size_t len, struct vdev_params *p,
			  unsigned *set, char *err, size_t errlen)
{
	char text[CFG_TEXT_MAX], sh[48];
	struct vdev_params tmp = *p;
	unsigned seen = 0;
	char *tok, *save;
	int ntok = 0, r;

	r = trim_copy(buf, len, text, sizeof(text), err, errlen);
	if (r < 0)
		return r;
	if (text[0] == '\0') {
		snprintf(err, errlen, "nothing to apply: write a size or key=value pairs");
		return -EINVAL;
	}
	/* A bare size is the whole text or nothing. */
	if (!strchr(text, '=')) {
		for (const char *c = text; *c; c++) {
			if (is_ws(*c)) {
				snprintf(err, errlen, "expected key=value pairs or a "
					 "single size");
				return -EINVAL;
			}
		}
		r = cfg_parse_size(text, &tmp.size, err, errlen);
		if (r < 0)
			return r;
		*p = tmp;
		*set |= CFG_BIT(CFG_SIZE);
		return 0;
	}
	for (tok = strtok_r(text, " \t\n\r\v\f", &save); tok;
	     tok = strtok_r(NULL, " \t\n\r\v\f", &save), ntok++) {
		char *eq = strchr(tok, '=');
		int k;

		if (!eq) {
			snprintf(err, errlen, "'%s' is not a key=value pair",
				 shown(tok, sh, sizeof(sh)));
			return -EINVAL;
		}
		k = cfg_key_lookup(tok, eq - tok);
		if (k < 0) {
			char keys[384];
			size_t kn = 0;

			for (int i = 0; i < CFG_NKEYS && kn < sizeof(keys); i++)
				kn += snprintf(keys + kn, sizeof(keys) - kn, "%s%s",
					       i ? ", " : "", key_names[i]);
			*eq = '\0';
			snprintf(err, errlen, "unknown key '%s' (keys: %s)",
				 shown(tok, sh, sizeof(sh)), keys);
			return -EINVAL;
		}
		if (seen & CFG_BIT(k)) {
			snprintf(err, errlen, "key %s is given twice", cfg_key_name(k));
			return -EINVAL;
		}
		seen |= CFG_BIT(k);
		r = cfg_parse_value(k, eq + 1, &tmp, err, errlen);
		if (r < 0)
			return r;
	}
	*p = tmp;
	*set |= seen;
	return 0;
}

void cfg_apply(struct vdev_params *dst, const struct vdev_params *src, unsigned set)
{
	if (set & CFG_BIT(CFG_SIZE))
		dst->size = src->size;
	if (set & CFG_BIT(CFG_BLOCK_SIZE))
		dst->block_size = src->block_size;
	if (set & CFG_BIT(CFG_BACKING)) {
		dst->backing = src->backing;
		memcpy(dst->path, src->path, sizeof(dst->path));
		memcpy(dst->rbd.pool, src->rbd.pool, sizeof(dst->rbd.pool));
		memcpy(dst->rbd.ns, src->rbd.ns, sizeof(dst->rbd.ns));
		memcpy(dst->rbd.image, src->rbd.image, sizeof(dst->rbd.image));
		memcpy(dst->rbd.snap, src->rbd.snap, sizeof(dst->rbd.snap));
	}
	if (set & CFG_BIT(CFG_CEPH_CONF))
		memcpy(dst->rbd.conf, src->rbd.conf, sizeof(dst->rbd.conf));
	if (set & CFG_BIT(CFG_CEPH_ID))
		memcpy(dst->rbd.id, src->rbd.id, sizeof(dst->rbd.id));
	if (set & CFG_BIT(CFG_RBD_SHARED))
		dst->rbd.shared = src->rbd.shared;
	if (set & CFG_BIT(CFG_RBD_TIMEOUT))
		dst->rbd.timeout = src->rbd.timeout;
	if (set & CFG_BIT(CFG_READONLY))
		dst->readonly = src->readonly;
	if (set & CFG_BIT(CFG_QUEUES))
		dst->queues = src->queues;
	if (set & CFG_BIT(CFG_SERIAL))
		memcpy(dst->serial, src->serial, sizeof(dst->serial));
	if (set & CFG_BIT(CFG_ALLOW_SHRINK))
		dst->allow_shrink = src->allow_shrink;
	if (set & CFG_BIT(CFG_PACKED))
		dst->packed = src->packed;
	for (int k = 0; k < CFG_NKEYS; k++)
		if (set & CFG_BIT(k) & CFG_LIMIT_KEYS)
			*limit_field(k, &dst->limits) = limit_get(k, &src->limits);
	if (set & CFG_BIT(CFG_GROUP))
		memcpy(dst->group, src->group, sizeof(dst->group));
}

int cfg_check_values(const struct vdev_params *p, unsigned set,
		     char *err, size_t errlen)
{
	char val[sizeof(p->path) + 32];
	struct vdev_params scratch;

	if ((set & CFG_BIT(CFG_SERIAL)) &&
	    strnlen(p->serial, sizeof(p->serial)) == sizeof(p->serial)) {
		snprintf(err, errlen, "serial is longer than %d bytes", VDEV_SERIAL_MAX);
		return -EINVAL;
	}
	if ((set & CFG_BIT(CFG_BACKING)) && p->backing == BE_FILE &&
	    strnlen(p->path, sizeof(p->path)) == sizeof(p->path)) {
		snprintf(err, errlen, "backing path is longer than %d bytes", CFG_PATH_MAX);
		return -EINVAL;
	}
	if ((set & CFG_BIT(CFG_BACKING)) && p->backing == BE_RBD &&
	    (strnlen(p->rbd.pool, sizeof(p->rbd.pool)) == sizeof(p->rbd.pool) ||
	     strnlen(p->rbd.ns, sizeof(p->rbd.ns)) == sizeof(p->rbd.ns) ||
	     strnlen(p->rbd.image, sizeof(p->rbd.image)) == sizeof(p->rbd.image) ||
	     strnlen(p->rbd.snap, sizeof(p->rbd.snap)) == sizeof(p->rbd.snap))) {
		snprintf(err, errlen, "an rbd name is longer than %d bytes", VDEV_RBD_NAME_MAX);
		return -EINVAL;
	}
	if (((set & CFG_BIT(CFG_CEPH_CONF)) &&
	     strnlen(p->rbd.conf, sizeof(p->rbd.conf)) == sizeof(p->rbd.conf)) ||
	    ((set & CFG_BIT(CFG_CEPH_ID)) &&
	     strnlen(p->rbd.id, sizeof(p->rbd.id)) == sizeof(p->rbd.id))) {
		snprintf(err, errlen, "ceph_conf or ceph_id is too long");
		return -EINVAL;
	}
	if ((set & CFG_BIT(CFG_GROUP)) &&
	    strnlen(p->group, sizeof(p->group)) == sizeof(p->group)) {
		snprintf(err, errlen, "group is longer than %d bytes", VDEV_NAME_MAX);
		return -EINVAL;
	}
	vdev_params_init(&scratch);
	for (int k = 0; k < CFG_NKEYS; k++) {
		int r;

		if (!(set & CFG_BIT(k)))
			continue;
		cfg_format_value(k, p, true, val, sizeof(val));
		r = cfg_parse_value(k, val, &scratch, err, errlen);
		if (r < 0)
			return r;
	}
	return 0;
}

void cfg_format_value(enum cfg_key k, const struct vdev_params *p, bool have_size,
		      char *buf, size_t len)
{
	switch (k) {
	case CFG_SIZE:
		if (have_size)
			snprintf(buf, len, "%" PRIu64, p->size);
		else
			snprintf(buf, len, "%s", "");
		break;
	case CFG_BLOCK_SIZE:
		snprintf(buf, len, "%" PRIu32, p->block_size);
		break;
	case CFG_BACKING:
		if (p->backing == BE_FILE)
			snprintf(buf, len, "%s", p->path);
		else if (p->backing == BE_RBD)
			snprintf(buf, len, "rbd:%s/%s%s%s%s%s", p->rbd.pool, p->rbd.ns,
				 p->rbd.ns[0] ? "/" : "", p->rbd.image,
				 p->rbd.snap[0] ? "@" : "", p->rbd.snap);
		else
			snprintf(buf, len, "%s", p->backing == BE_NULL ? "null" : "ram");
		break;
	case CFG_READONLY:
		snprintf(buf, len, "%d", p->readonly ? 1 : 0);
		break;
	case CFG_QUEUES:
		snprintf(buf, len, "%u", (unsigned)p->queues);
		break;
	case CFG_SERIAL:
		snprintf(buf, len, "%s", p->serial);
		break;
	case CFG_ALLOW_SHRINK:
		snprintf(buf, len, "%d", p->allow_shrink ? 1 : 0);
		break;
	case CFG_IOPS_LIMIT:
	case CFG_BPS_LIMIT:
	case CFG_READ_BPS_LIMIT:
	case CFG_WRITE_BPS_LIMIT:
	case CFG_IOPS_BURST:
	case CFG_BPS_BURST:
		snprintf(buf, len, "%" PRIu64, limit_get(k, &p->limits));
		break;
	case CFG_GROUP:
		snprintf(buf, len, "%s", p->group);
		break;
	case CFG_CEPH_CONF:
		snprintf(buf, len, "%s", p->rbd.conf);
		break;
	case CFG_CEPH_ID:
		snprintf(buf, len, "%s", p->rbd.id);
		break;
	case CFG_RBD_SHARED:
		snprintf(buf, len, "%d", p->rbd.shared ? 1 : 0);
		break;
	case CFG_RBD_TIMEOUT:
		snprintf(buf, len, "%" PRIu32, p->rbd.timeout);
		break;
	case CFG_PACKED:
		snprintf(buf, len, "%d", p->packed ? 1 : 0);
		break;
	default:
		snprintf(buf, len, "%s", "");
		break;
	}
}

size_t cfg_format_config(const struct vdev_params *p, bool have_size,
			 char *buf, size_t len)
{
	char val[sizeof(p->path)];
	size_t n = 0;

	if (len)
		buf[0] = '\0';
	for (int k = 0; k < CFG_NKEYS; k++) {
		int w;

		if (k == CFG_SIZE && !have_size)
			continue;
		cfg_format_value(k, p, have_size, val, sizeof(val));
		w = snprintf(buf + n, len - n, "%s=%s\n", key_names[k], val);
		if (w < 0 || (size_t)w >= len - n)
			break;
		n += w;
	}
	return n;
}

int cfg_parse_limits_text(const char *buf, size_t len, struct vdev_limits *l,
			  unsigned *set, char *err, size_t errlen)
{
	struct vdev_params p;
	unsigned seen = 0;
	int r;

	vdev_params_init(&p);
	p.limits = *l;
	r = cfg_parse_config_text(buf, len, &p, &seen, err, errlen);
	if (r < 0)
		return r;
	if (seen & ~CFG_LIMIT_KEYS) {
		int k = __builtin_ctz(seen & ~CFG_LIMIT_KEYS);

		snprintf(err, errlen, "%s is not a setting of a throttle group (keys: "
			 "iops_limit, bps_limit, read_bps_limit, write_bps_limit, "
			 "iops_burst, bps_burst)", k == CFG_SIZE && !memchr(buf, '=', len) ?
			 "a bare size" : key_names[k]);
		return -EINVAL;
	}
	*l = p.limits;
	*set |= seen;
	return 0;
}

size_t cfg_format_limits(const struct vdev_limits *l, char *buf, size_t len)
{
	size_t n = 0;

	if (len)
		buf[0] = '\0';
	for (int k = 0; k < CFG_NKEYS; k++) {
		int w;

		if (!(CFG_LIMIT_KEYS & CFG_BIT(k)))
			continue;
		w = snprintf(buf + n, len - n, "%s=%" PRIu64 "\n", key_names[k],
			     limit_get(k, l));
		if (w < 0 || (size_t)w >= len - n)
			break;
		n += w;
	}
	return n;
}

int cfg_parse_cpulist(const char *s, int *cpus, int max_out, int max_cpu,
		      char *err, size_t errlen)
{
	char sh[48];
	const char *p = s, *end;
	int n = 0;

	if (*s == '\0')
		goto bad;
	for (;;) {
		uint64_t a, b;

		if (parse_u64(p, &a, &end) < 0)
			goto bad;
		b = a;
		p = end;
		if (*p == '-') {
			if (parse_u64(p + 1, &b, &end) < 0 || b < a)
				goto bad;
			p = end;
		}
		if (b >= (uint64_t)max_cpu) {
			snprintf(err, errlen, "cpu %" PRIu64 " does not exist (this machine "
				 "has cpus 0-%d)", b, max_cpu - 1);
			return -EINVAL;
		}
		for (uint64_t c = a; c <= b; c++) {
			for (int i = 0; i < n; i++) {
				if (cpus[i] == (int)c) {
					snprintf(err, errlen, "cpu %" PRIu64 " is listed twice", c);
					return -EINVAL;
				}
			}
			if (n == max_out) {
				snprintf(err, errlen, "too many cpus (at most %d)", max_out);
				return -EINVAL;
			}
			cpus[n++] = (int)c;
		}
		if (*p == '\0')
			return n;
		if (*p != ',')
			goto bad;
		p++;
	}
bad:
	snprintf(err, errlen, "'%s' is not a cpu list (e.g. 0,1 or 0-3)",
		 shown(s, sh, sizeof(sh)));
	return -EINVAL;
}
