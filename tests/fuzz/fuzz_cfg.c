/* Fuzz target "cfg": the control-file parsers (src/cfgparse.c) on untrusted
 * user text, with round-trip properties: what a parser accepted, formatted
 * by the canonical formatter, parses back to the same settings.
 * Input: [0] selects the parser (and a key / limits), the rest is the text. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfgparse.h"
#include "fuzz.h"

static void fail(const char *what, const char *text, size_t len, const char *err)
{
	fprintf(stderr, "fuzz-cfg: %s\n  input (%zu bytes): %.*s\n  err: %s\n", what, len,
		(int)(len > 200 ? 200 : len), text, err);
	abort();
}

static bool same(const struct vdev_params *a, const struct vdev_params *b, unsigned set)
{
	if ((set & CFG_BIT(CFG_SIZE)) && a->size != b->size)
		return false;
	return a->block_size == b->block_size && a->backing == b->backing &&
	       strcmp(a->path, b->path) == 0 && a->readonly == b->readonly &&
	       a->queues == b->queues && strcmp(a->serial, b->serial) == 0 &&
	       memcmp(&a->limits, &b->limits, sizeof(a->limits)) == 0 &&
	       strcmp(a->group, b->group) == 0;
}

/* Every error is one sentence: non-empty, no newline, no final period. */
static void check_err(const char *err, const char *text, size_t len)
{
	size_t n = strlen(err);
	if (n == 0 || strchr(err, '\n') || err[n - 1] == '.')
		fail("malformed error sentence", text, len, err);
}

static void config_text(const char *text, size_t len)
{
	struct vdev_params p, q;
	unsigned set = 0, set2 = 0;
	char err[256] = "", out[2 * CFG_TEXT_MAX];
	size_t n;

	vdev_params_init(&p);
	q = p;
	if (cfg_parse_config_text(text, len, &p, &set, err, sizeof(err)) < 0) {
		check_err(err, text, len);
		if (memcmp(&p, &q, sizeof(p)) != 0 || set)
			fail("failed parse modified the settings", text, len, err);
		return;
	}
	n = cfg_format_config(&p, set & CFG_BIT(CFG_SIZE), out, sizeof(out));
	if (n != strlen(out))
		fail("cfg_format_config length", text, len, out);
	vdev_params_init(&q);
	if (cfg_parse_config_text(out, n, &q, &set2, err, sizeof(err)) < 0)
		fail("formatted config does not parse back", out, n, err);
	if (!same(&p, &q, set))
		fail("formatted config parses to other settings", out, n, "");
}

static void key_text(enum cfg_key k, const char *text, size_t len)
{
	struct vdev_params p, q;
	unsigned set = 0, set2 = 0;
	char err[256] = "", out[CFG_TEXT_MAX + 16];

	vdev_params_init(&p);
	if (cfg_parse_key_text(k, text, len, &p, &set, err, sizeof(err)) < 0) {
		check_err(err, text, len);
		return;
	}
	if (set != CFG_BIT(k))
		fail("set bits", text, len, "");
	cfg_format_value(k, &p, true, out, sizeof(out));
	vdev_params_init(&q);
	if (cfg_parse_key_text(k, out, strlen(out), &q, &set2, err, sizeof(err)) < 0)
		fail("formatted value does not parse back", out, strlen(out), err);
	if (!same(&p, &q, set))
		fail("formatted value parses to another setting", out, strlen(out), "");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text;
	char err[256] = "";
	uint8_t sel;

	if (size < 1)
		return 0;
	sel = data[0];
	/* NUL-terminated copy for the C-string parsers; exact length for the
	 * buffer ones. */
	text = malloc(size);
	if (!text)
		abort();
	memcpy(text, data + 1, size - 1);
	text[size - 1] = '\0';

	switch (sel & 7) {
	case 0:
	case 1:
		config_text(text, size - 1);
		break;
	case 2:
		key_text((enum cfg_key)((sel >> 3) % CFG_NKEYS), text, size - 1);
		break;
	case 3: {
		uint64_t v = 0;
		if (cfg_parse_size(text, &v, err, sizeof(err)) == 0) {
			if (v == 0)
				fail("size 0 accepted", text, size - 1, "");
		} else {
			check_err(err, text, size - 1);
		}
		break;
	}
	case 4: {
		int cpus[64], max_out = 1 + (sel >> 3) % 64, max_cpu = 1 + (sel >> 3) * 8;
		int n = cfg_parse_cpulist(text, cpus, max_out, max_cpu, err, sizeof(err));
		if (n < 0) {
			check_err(err, text, size - 1);
			break;
		}
		if (n == 0 || n > max_out)
			fail("cpulist count", text, size - 1, "");
		for (int i = 0; i < n; i++) {
			if (cpus[i] < 0 || cpus[i] >= max_cpu)
				fail("cpu out of range", text, size - 1, "");
			for (int j = 0; j < i; j++)
				if (cpus[i] == cpus[j])
					fail("cpu twice", text, size - 1, "");
		}
		break;
	}
	case 5: {
		bool ok = cfg_name_valid(text);
		size_t n = strlen(text);
		if (ok && (n == 0 || n > VDEV_NAME_MAX || text[0] == '.' || strchr(text, '/')))
			fail("bad name accepted", text, n, "");
		break;
	}
	case 6: {
		int k = cfg_key_lookup(text, size - 1);
		if (k >= 0 && strcmp(cfg_key_name(k), text) != 0)
			fail("key lookup", text, size - 1, "");
		/* a throttle group's config: limit keys only, round trip */
		struct vdev_limits l = { 0 }, l2 = { 0 };
		unsigned set = 0, set2 = 0;
		char out[512];
		size_t n;

		if (cfg_parse_limits_text(text, size - 1, &l, &set, err, sizeof(err)) < 0) {
			check_err(err, text, size - 1);
			break;
		}
		if (set & ~CFG_LIMIT_KEYS)
			fail("group config took a key that is not a limit", text, size - 1, "");
		n = cfg_format_limits(&l, out, sizeof(out));
		if (cfg_parse_limits_text(out, n, &l2, &set2, err, sizeof(err)) < 0)
			fail("formatted limits do not parse back", out, n, err);
		if (memcmp(&l, &l2, sizeof(l)) != 0)
			fail("formatted limits parse to other limits", out, n, "");
		break;
	}
	default: {
		struct vdev_params p;
		vdev_params_init(&p);
		if (cfg_parse_value((enum cfg_key)((sel >> 3) % (CFG_NKEYS + 1)), text, &p,
				    err, sizeof(err)) < 0)
			check_err(err, text, size - 1);
		break;
	}
	}
	free(text);
	return 0;
}
