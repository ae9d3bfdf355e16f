/* The config parser (cfgparse.h): sizes and suffixes, key=value sets, the
 * per-key files, names, read-back that can be written back, and refusals
 * with their reasons.  Pure functions: no store needed. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cfgparse.h"
#include "dtest.h"

static char err[256];

static void setup(void)
{
	err[0] = '\0';
}

TestSuite(cfgparse, .init = setup, .timeout = 30);

static uint64_t size_ok(const char *s)
{
	uint64_t v = 0;

	cr_assert_eq(cfg_parse_size(s, &v, err, sizeof(err)), 0, "'%s': %s", s, err);
	return v;
}

static void size_bad(const char *s, const char *why)
{
	uint64_t v = 12345;

	err[0] = '\0';
	cr_assert_eq(cfg_parse_size(s, &v, err, sizeof(err)), -EINVAL, "'%s' accepted", s);
	cr_assert_eq(v, 12345, "'%s' changed the output", s);
	cr_assert(strstr(err, why), "'%s': reason '%s' lacks '%s'", s, err, why);
}

Test(cfgparse, sizes_and_suffixes)
{
	cr_assert_eq(size_ok("67108864"), 67108864);
	cr_assert_eq(size_ok("64M"), 64ull << 20);
	cr_assert_eq(size_ok("64m"), 64ull << 20);
	cr_assert_eq(size_ok("1k"), 1024);
	cr_assert_eq(size_ok("1K"), 1024);
	cr_assert_eq(size_ok("1G"), 1ull << 30);
	cr_assert_eq(size_ok("2T"), 2ull << 40);
	cr_assert_eq(size_ok("16777215T"), 16777215ull << 40);
	cr_assert_eq(size_ok("18446744073709551615"), UINT64_MAX);
}

Test(cfgparse, bad_sizes)
{
	size_bad("", "is not a size");
	size_bad("0", "greater than zero");
	size_bad("0M", "greater than zero");
	size_bad("-1", "is not a size");
	size_bad("+5", "is not a size");
	size_bad(" 5", "is not a size");
	size_bad("64Q", "'64Q' is not a size");
	size_bad("64MB", "is not a size");
	size_bad("64 M", "is not a size");
	size_bad("1.5G", "is not a size");
	size_bad("0x10", "is not a size");
	size_bad("M", "is not a size");
	size_bad("18446744073709551616", "too large");
	size_bad("16777216T", "too large");
	size_bad("99999999999999999999999G", "too large");
}

Test(cfgparse, names)
{
	cr_assert(cfg_name_valid("vhostblk0"));
	cr_assert(cfg_name_valid("a"));
	cr_assert(cfg_name_valid("A-b_c.9"));
	cr_assert(cfg_name_valid("0123456789012345678901234567890123456789012345678901234567890123"));
	cr_assert_not(cfg_name_valid("01234567890123456789012345678901234567890123456789012345678901234"));
	cr_assert_not(cfg_name_valid(""));
	cr_assert_not(cfg_name_valid("."));
	cr_assert_not(cfg_name_valid(".."));
	cr_assert_not(cfg_name_valid(".a"));
	cr_assert_not(cfg_name_valid("a/b"));
	cr_assert_not(cfg_name_valid("a b"));
	cr_assert_not(cfg_name_valid("a:b"));
	cr_assert_not(cfg_name_valid("\xff"));
}

static unsigned config_ok(const char *text, struct vdev_params *p)
{
	unsigned set = 0;

	vdev_params_init(p);
	cr_assert_eq(cfg_parse_config_text(text, strlen(text), p, &set, err, sizeof(err)),
		     0, "'%s': %s", text, err);
	return set;
}

/* Refused with -EINVAL, the reason containing why, p and the set untouched. */
static void config_bad(const char *text, const char *why)
{
	struct vdev_params p, before;
	unsigned set = 0x80;

	vdev_params_init(&p);
	p.size = 777 * 512;
	before = p;
	err[0] = '\0';
	cr_assert_eq(cfg_parse_config_text(text, strlen(text), &p, &set, err, sizeof(err)),
		     -EINVAL, "'%s' accepted", text);
	cr_assert_eq(memcmp(&p, &before, sizeof(p)), 0, "'%s' half-applied", text);
	cr_assert_eq(set, 0x80, "'%s' changed the set", text);
	cr_assert(strstr(err, why), "'%s': reason '%s' lacks '%s'", text, err, why);
}

Test(cfgparse, config_bare_size)
{
	struct vdev_params p;

	cr_assert_eq(config_ok("64M\n", &p), CFG_BIT(CFG_SIZE));
	cr_assert_eq(p.size, 64ull << 20);
	cr_assert_eq(p.block_size, 512, "other keys keep their values");
	cr_assert_eq(config_ok("  1G  ", &p), CFG_BIT(CFG_SIZE));
	cr_assert_eq(p.size, 1ull << 30);
}

Test(cfgparse, config_key_value_sets)
{
	struct vdev_params p;
	unsigned set;

	set = config_ok("size=1G block_size=4096\nbacking=/dev/sdb readonly=1\t"
			"queues=4 serial=ABC-123\n", &p);
	cr_assert_eq(set, CFG_BIT(CFG_SIZE) | CFG_BIT(CFG_BLOCK_SIZE) |
		     CFG_BIT(CFG_BACKING) | CFG_BIT(CFG_READONLY) |
		     CFG_BIT(CFG_QUEUES) | CFG_BIT(CFG_SERIAL));
	cr_assert_eq(p.size, 1ull << 30);
	cr_assert_eq(p.block_size, 4096);
	cr_assert_eq(p.backing, BE_FILE);
	cr_assert_str_eq(p.path, "/dev/sdb");
	cr_assert(p.readonly);
	cr_assert_eq(p.queues, 4);
	cr_assert_str_eq(p.serial, "ABC-123");

	set = config_ok("backing=null", &p);
	cr_assert_eq(set, CFG_BIT(CFG_BACKING));
	cr_assert_eq(p.backing, BE_NULL);
	set = config_ok("readonly=no queues=64", &p);
	cr_assert_eq(set, CFG_BIT(CFG_READONLY) | CFG_BIT(CFG_QUEUES));
	cr_assert_not(p.readonly);
	cr_assert_eq(p.queues, 64);
	set = config_ok("serial=", &p);
	cr_assert_eq(set, CFG_BIT(CFG_SERIAL));
	cr_assert_str_eq(p.serial, "");
	/* ram clears a path given before */
	set = config_ok("backing=/x", &p);
	cr_assert_eq(cfg_parse_config_text("backing=ram", 11, &p, &set, err, sizeof(err)), 0);
	cr_assert_eq(p.backing, BE_RAM);
	cr_assert_str_eq(p.path, "");
}

Test(cfgparse, config_refusals)
{
	config_bad("", "nothing to apply");
	config_bad(" \n\t", "nothing to apply");
	config_bad("64M 1G", "expected key=value pairs or a single size");
	config_bad("size=1G junk", "'junk' is not a key=value pair");
	config_bad("colour=red", "unknown key 'colour'");
	config_bad("size=1G size=2G", "key size is given twice");
	config_bad("size=1G queues=0", "queues");
	config_bad("size=1G block_size=3000", "block_size '3000' is invalid");
	config_bad("block_size=256", "block_size '256' is invalid");
	config_bad("block_size=131072", "block_size '131072' is invalid");
	config_bad("backing=disk.img", "use ram, null or an absolute path");
	config_bad("readonly=maybe", "readonly 'maybe' is invalid");
	config_bad("serial=123456789012345678901", "serial is longer than 20 bytes");
	config_bad("size=64Q", "'64Q' is not a size");
	config_bad("=5", "unknown key");
}

Test(cfgparse, config_text_limits)
{
	char big[CFG_TEXT_MAX + 8];

	memset(big, 'a', sizeof(big));
	memcpy(big, "serial=", 7);
	big[sizeof(big) - 1] = '\0';
	config_bad(big, "too long");
	{
		struct vdev_params p;
		unsigned set = 0;
		static const char nul[] = "size=1G\0queues=1";

		vdev_params_init(&p);
		cr_assert_eq(cfg_parse_config_text(nul, sizeof(nul) - 1, &p, &set, err,
						   sizeof(err)), -EINVAL);
		cr_assert(strstr(err, "NUL"), "%s", err);
	}
}

Test(cfgparse, per_key_files)
{
	struct vdev_params p;
	unsigned set = 0;

	vdev_params_init(&p);
	cr_assert_eq(cfg_parse_key_text(CFG_BLOCK_SIZE, "4096\n", 5, &p, &set, err,
					sizeof(err)), 0, "%s", err);
	cr_assert_eq(p.block_size, 4096);
	cr_assert_eq(set, CFG_BIT(CFG_BLOCK_SIZE));
	cr_assert_eq(cfg_parse_key_text(CFG_BACKING, "  /srv/a.img \n", 14, &p, &set,
					err, sizeof(err)), 0, "%s", err);
	cr_assert_str_eq(p.path, "/srv/a.img");
	cr_assert_eq(set, CFG_BIT(CFG_BLOCK_SIZE) | CFG_BIT(CFG_BACKING));
	/* an empty serial clears it; an empty size is refused */
	cr_assert_eq(cfg_parse_key_text(CFG_SERIAL, "\n", 1, &p, &set, err, sizeof(err)), 0);
	cr_assert_eq(cfg_parse_key_text(CFG_SIZE, "\n", 1, &p, &set, err, sizeof(err)),
		     -EINVAL);
	cr_assert(strstr(err, "empty value for size"), "%s", err);
	cr_assert_eq(cfg_parse_key_text(CFG_SIZE, "1G 2G", 5, &p, &set, err, sizeof(err)),
		     -EINVAL);
	cr_assert(strstr(err, "size takes a single value"), "%s", err);
	/* key=value is not a value of the size file */
	cr_assert_eq(cfg_parse_key_text(CFG_SIZE, "size=1G", 7, &p, &set, err, sizeof(err)),
		     -EINVAL);
	cr_assert_eq(p.size, 0);
}

Test(cfgparse, key_names)
{
	for (int k = 0; k < CFG_NKEYS; k++) {
		const char *name = cfg_key_name(k);

		cr_assert_eq(cfg_key_lookup(name, strlen(name)), k, "%s", name);
	}
	cr_assert_eq(cfg_key_lookup("sizes", 5), -1);
	cr_assert_eq(cfg_key_lookup("size", 3), -1);
	cr_assert_eq(cfg_key_lookup("size=1", 4), CFG_SIZE, "a length bounds the name");
}

Test(cfgparse, read_back_can_be_written_back)
{
	struct vdev_params p, q;
	char text[2 * sizeof(p.path)];
	unsigned set = 0;
	size_t n;

	config_ok("size=3G block_size=1024 backing=/srv/x.img readonly=1 queues=7 "
		  "serial=S%1 allow_shrink=1", &p);
	n = cfg_format_config(&p, true, text, sizeof(text));
	cr_assert_eq(n, strlen(text));
	cr_assert_str_eq(text, "size=3221225472\nblock_size=1024\nbacking=/srv/x.img\n"
			 "readonly=1\nqueues=7\nserial=S%1\nallow_shrink=1\n");
	vdev_params_init(&q);
	cr_assert_eq(cfg_parse_config_text(text, n, &q, &set, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(set, (1u << CFG_NKEYS) - 1);
	cr_assert_eq(memcmp(&p, &q, sizeof(p)), 0);

	/* unconfigured: no size line, and the text still applies */
	vdev_params_init(&p);
	n = cfg_format_config(&p, false, text, sizeof(text));
	cr_assert(strncmp(text, "size=", 5) != 0 && !strstr(text, "\nsize="), "%s", text);
	cr_assert_not_null(strstr(text, "block_size=512\n"), "%s", text);
	cr_assert_eq(cfg_parse_config_text(text, n, &q, &set, err, sizeof(err)), 0, "%s", err);
}

Test(cfgparse, apply_copies_only_the_set_keys)
{
	struct vdev_params dst, src;

	vdev_params_init(&dst);
	vdev_params_init(&src);
	src.size = 4096;
	src.block_size = 4096;
	src.backing = BE_FILE;
	snprintf(src.path, sizeof(src.path), "/p");
	src.readonly = true;
	src.queues = 2;
	snprintf(src.serial, sizeof(src.serial), "X");
	cfg_apply(&dst, &src, CFG_BIT(CFG_BACKING) | CFG_BIT(CFG_QUEUES));
	cr_assert_eq(dst.backing, BE_FILE);
	cr_assert_str_eq(dst.path, "/p");
	cr_assert_eq(dst.queues, 2);
	cr_assert_eq(dst.size, 0);
	cr_assert_eq(dst.block_size, 512);
	cr_assert_not(dst.readonly);
	cr_assert_str_eq(dst.serial, "");
	cfg_apply(&dst, &src, (1u << CFG_NKEYS) - 1);
	cr_assert_eq(memcmp(&dst, &src, sizeof(dst)), 0);
}

Test(cfgparse, cpu_lists)
{
	int cpus[8], n;

	n = cfg_parse_cpulist("0-1,3", cpus, 8, 4, err, sizeof(err));
	cr_assert_eq(n, 3, "%s", err);
	cr_assert_eq(cpus[0], 0);
	cr_assert_eq(cpus[1], 1);
	cr_assert_eq(cpus[2], 3);
	cr_assert_eq(cfg_parse_cpulist("4", cpus, 8, 4, err, sizeof(err)), -EINVAL);
	cr_assert(strstr(err, "cpu 4 does not exist"), "%s", err);
	cr_assert_eq(cfg_parse_cpulist("1,1", cpus, 8, 4, err, sizeof(err)), -EINVAL);
	cr_assert(strstr(err, "listed twice"), "%s", err);
	cr_assert_eq(cfg_parse_cpulist("2-1", cpus, 8, 4, err, sizeof(err)), -EINVAL);
	cr_assert_eq(cfg_parse_cpulist("", cpus, 8, 4, err, sizeof(err)), -EINVAL);
	cr_assert(strstr(err, "is not a cpu list"), "%s", err);
	cr_assert_eq(cfg_parse_cpulist("0-3", cpus, 2, 4, err, sizeof(err)), -EINVAL);
	cr_assert(strstr(err, "too many cpus"), "%s", err);
}
