/* state: load and atomically save the state file; see state.h.
 * Runs on the manager's saving thread (or main at start); trusts nothing in
 * the file it reads. */
#include "state.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cfgparse.h"

#define STATE_MAGIC     "vhostd-state"
#define STATE_VERSION   1
#define STATE_MINOR_MAX ((1u << 20) - 1)        /* Linux MINORBITS */

static void escape(const char *s, FILE *f)
{
	for (; *s; s++) {
		unsigned char c = *s;
		if (c <= 0x20 || c >= 0x7f || c == '%')
			fprintf(f, "%%%02X", c);
		else
			fputc(c, f);
	}
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* In place; -EINVAL on a bad or NUL escape. */
static int unescape(char *s)
{
	char *w = s;

	for (; *s; s++) {
		if (*s == '%') {
			int hi = hexval(s[1]), lo = hi < 0 ? -1 : hexval(s[2]);
			if (lo < 0 || (hi == 0 && lo == 0))
				return -EINVAL;
			*w++ = (char)(hi << 4 | lo);
			s += 2;
		} else {
			*w++ = *s;
		}
	}
	*w = '\0';
	return 0;
}

static int parse_line(char *line, struct state_ctrl *c, char *err, size_t errlen)
{
	char *save, *tok, *end;
	unsigned long minor;
	unsigned seen = 0;

	tok = strtok_r(line, " \t", &save);
	if (!tok || strcmp(tok, "ctrl") != 0) {
		snprintf(err, errlen, "expected 'ctrl NAME MINOR key=value...'");
		return -EINVAL;
	}
	tok = strtok_r(NULL, " \t", &save);
	if (!tok || !cfg_name_valid(tok)) {
		snprintf(err, errlen, "bad controller name");
		return -EINVAL;
	}
	memset(c, 0, sizeof(*c));
	strcpy(c->name, tok);
	tok = strtok_r(NULL, " \t", &save);
	errno = 0;
	minor = tok ? strtoul(tok, &end, 10) : 0;
	if (!tok || *tok < '0' || *tok > '9' || *end || errno || minor > STATE_MINOR_MAX) {
		snprintf(err, errlen, "bad minor for controller %s", c->name);
		return -EINVAL;
	}
	c->minor = (unsigned)minor;
	vdev_params_init(&c->params);
	while ((tok = strtok_r(NULL, " \t", &save))) {
		char *eq = strchr(tok, '=');
		char why[160];
		int k = eq ? cfg_key_lookup(tok, eq - tok) : -1;

		if (k < 0 || (seen & CFG_BIT(k))) {
			snprintf(err, errlen, "bad or repeated key in controller %s", c->name);
			return -EINVAL;
		}
		seen |= CFG_BIT(k);
		if (unescape(eq + 1) < 0) {
			snprintf(err, errlen, "bad escape in controller %s", c->name);
			return -EINVAL;
		}
		if (cfg_parse_value(k, eq + 1, &c->params, why, sizeof(why)) < 0) {
			snprintf(err, errlen, "controller %s: %s", c->name, why);
			return -EINVAL;
		}
	}
	c->have_size = seen & CFG_BIT(CFG_SIZE);
	return 0;
}

/* "group NAME key=value...": limit keys only, each once. */
static int parse_group_line(char *line, struct state_group *g, char *err, size_t errlen)
{
	char *save, *tok;
	unsigned seen = 0;
	struct vdev_params p;

	tok = strtok_r(line, " \t", &save);    /* "group" */
	tok = strtok_r(NULL, " \t", &save);
	if (!tok || !cfg_group_name_valid(tok)) {
		snprintf(err, errlen, "bad throttle group name");
		return -EINVAL;
	}
	memset(g, 0, sizeof(*g));
	strcpy(g->name, tok);
	vdev_params_init(&p);
	while ((tok = strtok_r(NULL, " \t", &save))) {
		char *eq = strchr(tok, '=');
		char why[160];
		int k = eq ? cfg_key_lookup(tok, eq - tok) : -1;

		if (k < 0 || !(CFG_LIMIT_KEYS & CFG_BIT(k)) || (seen & CFG_BIT(k))) {
			snprintf(err, errlen, "bad or repeated key in throttle group %s",
				 g->name);
			return -EINVAL;
		}
		seen |= CFG_BIT(k);
		if (unescape(eq + 1) < 0) {
			snprintf(err, errlen, "bad escape in throttle group %s", g->name);
			return -EINVAL;
		}
		if (cfg_parse_value(k, eq + 1, &p, why, sizeof(why)) < 0) {
			snprintf(err, errlen, "throttle group %s: %s", g->name, why);
			return -EINVAL;
		}
	}
	g->limits = p.limits;
	return 0;
}

/* Room for one more element in a growing array. */
static int grow(void **v, size_t *cap, size_t cnt, size_t size)
{
	size_t ncap;
	void *nv;

	if (cnt < *cap)
		return 0;
	ncap = *cap ? *cap * 2 : 16;
	nv = realloc(*v, ncap * size);
	if (!nv)
		return -ENOMEM;
	*v = nv;
	*cap = ncap;
	return 0;
}

int state_load(const char *path, struct state_ctrl **out, size_t *n,
	       struct state_group **groups, size_t *ngroups,
	       char *store, size_t storelen, char *err, size_t errlen)
{
	struct state_ctrl *v = NULL;
	struct state_group *gv = NULL;
	size_t gcap = 0, gcnt = 0;
	size_t cap = 0, cnt = 0, linecap = 0;
	char *line = NULL, why[VDEV_ERR_MAX];
	unsigned lineno = 0;
	bool magic = false;
	ssize_t len;
	FILE *f;
	int r = 0;

	*out = NULL;
	*n = 0;
	if (groups) {
		*groups = NULL;
		*ngroups = 0;
	}
	store[0] = '\0';
	f = fopen(path, "re");
	if (!f) {
		if (errno == ENOENT)
			return 0;
		r = -errno;
		snprintf(err, errlen, "cannot open state file %s: %s", path, strerror(errno));
		return r;
	}
	while ((len = getline(&line, &linecap, f)) >= 0) {
		char *s = line;

		lineno++;
		if (len > 0 && line[len - 1] == '\n')
			line[--len] = '\0';
		if (strlen(line) != (size_t)len) {
			snprintf(why, sizeof(why), "NUL byte");
			goto bad;
		}
		while (*s == ' ' || *s == '\t')
			s++;
		if (*s == '\0' || *s == '#')
			continue;
		if (!magic) {
			char m[32];
			int ver, used = 0;
			if (sscanf(s, "%31s %d%n", m, &ver, &used) != 2 ||
			    strcmp(m, STATE_MAGIC) != 0 || s[used] != '\0') {
				snprintf(why, sizeof(why), "not a vhostd state file");
				goto bad;
			}
			if (ver != STATE_VERSION) {
				snprintf(why, sizeof(why), "unsupported version %d", ver);
				goto bad;
			}
			magic = true;
			continue;
		}
		if (strncmp(s, "store ", 6) == 0) {
			if (store[0] || cnt || gcnt || unescape(s + 6) < 0 || s[6] != '/' ||
			    strlen(s + 6) >= storelen) {
				snprintf(why, sizeof(why), "bad store line");
				goto bad;
			}
			strcpy(store, s + 6);
			continue;
		}
		if (strncmp(s, "group ", 6) == 0 || strcmp(s, "group") == 0) {
			if (!groups) {
				snprintf(why, sizeof(why), "unexpected throttle group");
				goto bad;
			}
			if (grow((void **)&gv, &gcap, gcnt, sizeof(*gv)) < 0) {
				r = -ENOMEM;
				snprintf(err, errlen, "out of memory reading %s", path);
				goto out;
			}
			if (parse_group_line(s, &gv[gcnt], why, sizeof(why)) < 0)
				goto bad;
			for (size_t i = 0; i < gcnt; i++) {
				if (strcmp(gv[i].name, gv[gcnt].name) == 0) {
					snprintf(why, sizeof(why), "throttle group %s is "
						 "given twice", gv[gcnt].name);
					goto bad;
				}
			}
			gcnt++;
			continue;
		}
		if (grow((void **)&v, &cap, cnt, sizeof(*v)) < 0) {
			r = -ENOMEM;
			snprintf(err, errlen, "out of memory reading %s", path);
			goto out;
		}
		if (parse_line(s, &v[cnt], why, sizeof(why)) < 0)
			goto bad;
		for (size_t i = 0; i < cnt; i++) {
			if (strcmp(v[i].name, v[cnt].name) == 0 || v[i].minor == v[cnt].minor) {
				snprintf(why, sizeof(why), "controller %s repeats a name or "
					 "minor", v[cnt].name);
				goto bad;
			}
		}
		cnt++;
	}
	if (ferror(f)) {
		r = -EIO;
		snprintf(err, errlen, "cannot read state file %s", path);
		goto out;
	}
	if (!magic && cnt == 0 && gcnt == 0 && lineno > 0) {
		snprintf(why, sizeof(why), "not a vhostd state file");
		goto bad;
	}
	*out = v;
	*n = cnt;
	v = NULL;
	if (groups) {
		*groups = gv;
		*ngroups = gcnt;
		gv = NULL;
	}
	goto out;
bad:
	r = -EINVAL;
	snprintf(err, errlen, "state file %s line %u: %s", path, lineno, why);
out:
	free(v);
	free(gv);
	free(line);
	fclose(f);
	return r;
}

static int fsync_dir_of(const char *path)
{
	char copy[PATH_MAX];
	int fd, r = 0;

	snprintf(copy, sizeof(copy), "%s", path);
	fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		r = -errno;
	close(fd);
	return r;
}

int state_save(const char *path, const char *store, const struct state_ctrl *c,
	       size_t n, const struct state_group *g, size_t ng,
	       char *err, size_t errlen)
{
	char tmp[PATH_MAX], val[sizeof(c->params.path)];
	char *text = NULL;
	size_t textlen = 0, off = 0;
	FILE *m;
	int fd = -1, r;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp)) {
		snprintf(err, errlen, "state file path is too long");
		return -ENAMETOOLONG;
	}
	m = open_memstream(&text, &textlen);
	if (!m) {
		snprintf(err, errlen, "out of memory writing the state file");
		return -ENOMEM;
	}
	fprintf(m, "# vhostd controllers; rewritten on every change, do not edit "
		"while vhostd runs\n%s %d\nstore ", STATE_MAGIC, STATE_VERSION);
	escape(store, m);
	fputc('\n', m);
	/* Groups first: a controller's group must exist when it goes live. */
	for (size_t i = 0; i < ng; i++) {
		struct vdev_params p;

		vdev_params_init(&p);
		p.limits = g[i].limits;
		fprintf(m, "group %s", g[i].name);
		for (int k = 0; k < CFG_NKEYS; k++) {
			if (!(CFG_LIMIT_KEYS & CFG_BIT(k)))
				continue;
			cfg_format_value(k, &p, true, val, sizeof(val));
			fprintf(m, " %s=", cfg_key_name(k));
			escape(val, m);
		}
		fputc('\n', m);
	}
	for (size_t i = 0; i < n; i++) {
		fprintf(m, "ctrl %s %u", c[i].name, c[i].minor);
		for (int k = 0; k < CFG_NKEYS; k++) {
			if (k == CFG_SIZE && !c[i].have_size)
				continue;
			cfg_format_value(k, &c[i].params, c[i].have_size, val, sizeof(val));
			fprintf(m, " %s=", cfg_key_name(k));
			escape(val, m);
		}
		fputc('\n', m);
	}
	if (fclose(m) != 0) {
		free(text);
		snprintf(err, errlen, "out of memory writing the state file");
		return -ENOMEM;
	}

	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		r = -errno;
		snprintf(err, errlen, "cannot create %s: %s", tmp, strerror(-r));
		goto out;
	}
	while (off < textlen) {
		ssize_t w = write(fd, text + off, textlen - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			r = -errno;
			snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(-r));
			goto fail;
		}
		off += w;
	}
	if (fsync(fd) < 0) {
		r = -errno;
		snprintf(err, errlen, "cannot sync %s: %s", tmp, strerror(-r));
		goto fail;
	}
	if (close(fd) < 0) {
		fd = -1;
		r = -errno;
		snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(-r));
		goto fail;
	}
	fd = -1;
	if (rename(tmp, path) < 0) {
		r = -errno;
		snprintf(err, errlen, "cannot rename %s to %s: %s", tmp, path, strerror(-r));
		goto fail;
	}
	/* The rename is durable only once the directory entry is. */
	r = fsync_dir_of(path);
	if (r < 0)
		snprintf(err, errlen, "cannot sync the directory of %s: %s", path,
			 strerror(-r));
	goto out;
fail:
	if (fd >= 0)
		close(fd);
	unlink(tmp);
out:
	free(text);
	return r;
}
