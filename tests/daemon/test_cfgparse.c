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
	config_bad("backing=disk.img", "use ram, null, an absolute path or rbd:POOL/IMAGE");
	config_bad("readonly=maybe", "readonly 'maybe' is invalid");
	config_bad("packed=2", "packed '2' is invalid");
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
		  "serial=S%1 allow_shrink=1 iops_limit=2000 bps_limit=8M "
		  "read_bps_limit=1K write_bps_limit=1T iops_burst=64 bps_burst=1M "
		  "group=tenant-a", &p);
	n = cfg_format_config(&p, true, text, sizeof(text));
	cr_assert_eq(n, strlen(text));
	cr_assert_str_eq(text, "size=3221225472\nblock_size=1024\nbacking=/srv/x.img\n"
			 "readonly=1\nqueues=7\nserial=S%1\nallow_shrink=1\n"
			 "iops_limit=2000\nbps_limit=8388608\nread_bps_limit=1024\n"
			 "write_bps_limit=1099511627776\niops_burst=64\nbps_burst=1048576\n"
			 "group=tenant-a\nceph_conf=/etc/ceph/ceph.conf\nceph_id=admin\n"
			 "rbd_shared=0\nrbd_timeout=0\npacked=1\n");
	vdev_params_init(&q);
	cr_assert_eq(cfg_parse_config_text(text, n, &q, &set, err, sizeof(err)), 0, "%s", err);
	/* every key (DESIGN.md: reading returns every key) */
	cr_assert_eq(set, (1u << CFG_NKEYS) - 1);
	cr_assert_eq(memcmp(&p, &q, sizeof(p)), 0);

	/* unconfigured: no size line, and the text still applies */
	vdev_params_init(&p);
	n = cfg_format_config(&p, false, text, sizeof(text));
	cr_assert(strncmp(text, "size=", 5) != 0 && !strstr(text, "\nsize="), "%s", text);
	cr_assert_not_null(strstr(text, "block_size=512\n"), "%s", text);
	cr_assert_not_null(strstr(text, "iops_limit=0\n"), "%s", text);
	cr_assert_not_null(strstr(text, "\ngroup=\n"), "%s", text);
	cr_assert_eq(cfg_parse_config_text(text, n, &q, &set, err, sizeof(err)), 0, "%s", err);
}

/* packed rings are offered by default; both values read back and write
 * back */
Test(cfgparse, packed_key)
{
	struct vdev_params p, q;
	char text[2 * sizeof(p.path)];
	unsigned set;
	size_t n;

	set = config_ok("size=1M", &p);
	cr_assert(p.packed);
	n = cfg_format_config(&p, true, text, sizeof(text));
	cr_assert_not_null(strstr(text, "\npacked=1\n"), "%s", text);
	set = config_ok("size=1M packed=0", &p);
	cr_assert_eq(set, CFG_BIT(CFG_SIZE) | CFG_BIT(CFG_PACKED));
	cr_assert(!p.packed);
	n = cfg_format_config(&p, true, text, sizeof(text));
	cr_assert_not_null(strstr(text, "\npacked=0\n"), "%s", text);
	vdev_params_init(&q);
	cr_assert_eq(cfg_parse_config_text(text, n, &q, &set, err, sizeof(err)), 0, "%s", err);
	cr_assert(!q.packed);
	cr_assert_eq(memcmp(&p, &q, sizeof(p)), 0);
	set = config_ok("packed=yes", &p);
	cr_assert(p.packed);
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

/* ---- limits and throttle groups (issue 15) ------------------------------- */

Test(cfgparse, limits)
{
	struct vdev_params p;
	unsigned set;

	set = config_ok("iops_limit=2000 bps_limit=8M read_bps_limit=0 "
			"write_bps_limit=100m iops_burst=0 bps_burst=64K", &p);
	cr_assert_eq(set, CFG_LIMIT_KEYS);
	cr_assert_eq(p.limits.iops, 2000);
	cr_assert_eq(p.limits.bps, 8ull << 20);
	cr_assert_eq(p.limits.read_bps, 0);
	cr_assert_eq(p.limits.write_bps, 100ull << 20);
	cr_assert_eq(p.limits.iops_burst, 0);
	cr_assert_eq(p.limits.bps_burst, 64 << 10);
	cr_assert_eq(p.size, 0, "other keys keep their values");
	/* 0 = unlimited: accepted where a size refuses it */
	set = config_ok("bps_limit=0 iops_limit=0", &p);
	cr_assert_eq(p.limits.bps, 0);
	config_ok("bps_limit=1024T iops_limit=1125899906842624", &p);
	cr_assert_eq(p.limits.bps, 1ull << 50);
	cr_assert_eq(p.limits.iops, 1ull << 50);

	config_bad("iops_limit=-1", "iops_limit '-1' is invalid");
	config_bad("iops_limit=2K", "iops_limit '2K' is invalid: use a number of requests");
	config_bad("iops_limit=", "iops_limit '' is invalid");
	config_bad("iops_limit=1125899906842625", "iops_limit");
	config_bad("iops_burst=1.5", "iops_burst '1.5' is invalid");
	config_bad("bps_limit=8Q", "bps_limit '8Q' is invalid");
	config_bad("bps_limit=1025T", "at most 1024T");
	config_bad("bps_limit=99999999999999999999999", "bps_limit");
	config_bad("read_bps_limit=-5", "read_bps_limit");
	config_bad("write_bps_limit=0x10", "write_bps_limit");
	config_bad("bps_burst=1M2", "bps_burst");
	/* all or nothing with the other keys of the write */
	config_bad("size=1G iops_limit=1000 bps_limit=junk", "bps_limit 'junk'");
	config_bad("iops_limit=1 iops_limit=2", "key iops_limit is given twice");
}

Test(cfgparse, group_key)
{
	struct vdev_params p;
	unsigned set = 0;

	cr_assert_eq(config_ok("group=tenant-a", &p), CFG_BIT(CFG_GROUP));
	cr_assert_str_eq(p.group, "tenant-a");
	config_ok("group=", &p);
	cr_assert_str_eq(p.group, "");
	config_bad("group=.hidden", "group '.hidden' is invalid");
	config_bad("group=a/b", "group 'a/b' is invalid");
	config_bad("group=a:b", "throttle group name");
	config_bad("group=n1234567890123456789012345678901234567890123456789012345678901234",
		   "group");
	/* the group file: an empty write leaves the group */
	vdev_params_init(&p);
	snprintf(p.group, sizeof(p.group), "g");
	cr_assert_eq(cfg_parse_key_text(CFG_GROUP, "\n", 1, &p, &set, err, sizeof(err)), 0,
		     "%s", err);
	cr_assert_str_eq(p.group, "");
	cr_assert_eq(set, CFG_BIT(CFG_GROUP));
	/* an empty limit is refused, not taken as 0 */
	cr_assert_eq(cfg_parse_key_text(CFG_IOPS_LIMIT, "\n", 1, &p, &set, err,
					sizeof(err)), -EINVAL);
	cr_assert(strstr(err, "empty value for iops_limit"), "%s", err);
	cr_assert_eq(cfg_parse_key_text(CFG_BPS_LIMIT, "8M\n", 3, &p, &set, err,
					sizeof(err)), 0, "%s", err);
	cr_assert_eq(p.limits.bps, 8 << 20);
	/* a bad group name in the typed API is caught by the round trip */
	snprintf(p.group, sizeof(p.group), "a b");
	cr_assert_eq(cfg_check_values(&p, CFG_BIT(CFG_GROUP), err, sizeof(err)), -EINVAL);
	p.limits.iops = CFG_LIMIT_MAX + 1;
	cr_assert_eq(cfg_check_values(&p, CFG_BIT(CFG_IOPS_LIMIT), err, sizeof(err)),
		     -EINVAL);
}

Test(cfgparse, group_config_text)
{
	struct vdev_limits l = { .iops = 5, .bps = 7 }, before;
	unsigned set = 0;
	char text[512];
	size_t n;

	cr_assert_eq(cfg_parse_limits_text("iops_limit=100\nbps_burst=1M", 27, &l, &set,
					   err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(set, CFG_BIT(CFG_IOPS_LIMIT) | CFG_BIT(CFG_BPS_BURST));
	cr_assert_eq(l.iops, 100);
	cr_assert_eq(l.bps, 7, "keys not written keep their values");
	cr_assert_eq(l.bps_burst, 1 << 20);

	static const char *const bad[][2] = {
		{ "size=1G", "size is not a setting of a throttle group" },
		{ "64M", "a bare size is not a setting of a throttle group" },
		{ "group=x", "group is not a setting" },
		{ "iops_limit=1 queues=2", "queues is not a setting" },
		{ "iops_limit=x", "iops_limit 'x' is invalid" },
		{ "", "nothing to apply" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		before = l;
		set = 0;
		cr_assert_eq(cfg_parse_limits_text(bad[i][0], strlen(bad[i][0]), &l, &set,
						   err, sizeof(err)), -EINVAL, "%s", bad[i][0]);
		cr_assert(strstr(err, bad[i][1]), "'%s': %s", bad[i][0], err);
		cr_assert_eq(memcmp(&l, &before, sizeof(l)), 0, "half-applied: %s", bad[i][0]);
		cr_assert_eq(set, 0);
	}
	/* read-back writes back */
	n = cfg_format_limits(&l, text, sizeof(text));
	cr_assert_eq(n, strlen(text));
	cr_assert_str_eq(text, "iops_limit=100\nbps_limit=7\nread_bps_limit=0\n"
			 "write_bps_limit=0\niops_burst=0\nbps_burst=1048576\n");
	memset(&before, 0, sizeof(before));
	set = 0;
	cr_assert_eq(cfg_parse_limits_text(text, n, &before, &set, err, sizeof(err)), 0,
		     "%s", err);
	cr_assert_eq(set, CFG_LIMIT_KEYS);
	cr_assert_eq(memcmp(&l, &before, sizeof(l)), 0);
}

/* ---- Ceph RBD ------------------------------------------------------------ */

Test(cfgparse, rbd_backing_forms)
{
	struct vdev_params p;
	char text[2 * sizeof(p.path)];
	unsigned set;

	set = config_ok("backing=rbd:rbd/vm-disk-1", &p);
	cr_assert_eq(set, CFG_BIT(CFG_BACKING));
	cr_assert_eq(p.backing, BE_RBD);
	cr_assert_str_eq(p.rbd.pool, "rbd");
	cr_assert_str_eq(p.rbd.ns, "");
	cr_assert_str_eq(p.rbd.image, "vm-disk-1");
	cr_assert_str_eq(p.rbd.snap, "");
	cr_assert_str_eq(p.path, "");
	/* defaults of the cluster keys */
	cr_assert_str_eq(p.rbd.conf, "/etc/ceph/ceph.conf");
	cr_assert_str_eq(p.rbd.id, "admin");
	cr_assert_not(p.rbd.shared);
	cr_assert_eq(p.rbd.timeout, 0);
	cr_assert_eq(vdev_params_check(&p, err, sizeof(err)), 0, "%s", err);

	config_ok("backing=rbd:pool.a/tenant_1/img@snap-2", &p);
	cr_assert_str_eq(p.rbd.pool, "pool.a");
	cr_assert_str_eq(p.rbd.ns, "tenant_1");
	cr_assert_str_eq(p.rbd.image, "img");
	cr_assert_str_eq(p.rbd.snap, "snap-2");
	cfg_format_value(CFG_BACKING, &p, true, text, sizeof(text));
	cr_assert_str_eq(text, "rbd:pool.a/tenant_1/img@snap-2");
	config_ok("backing=rbd:p/i@s", &p);
	cfg_format_value(CFG_BACKING, &p, true, text, sizeof(text));
	cr_assert_str_eq(text, "rbd:p/i@s");

	/* a later file or ram backing leaves rbd */
	set = 0;
	cr_assert_eq(cfg_parse_config_text("backing=/srv/x", 14, &p, &set, err, sizeof(err)), 0);
	cr_assert_eq(p.backing, BE_FILE);
	cr_assert_str_eq(p.path, "/srv/x");
}

Test(cfgparse, rbd_keys)
{
	struct vdev_params p;
	unsigned set;

	set = config_ok("backing=rbd:rbd/a ceph_conf=/etc/ceph/other.conf ceph_id=vhostd.1 "
			"rbd_shared=1 rbd_timeout=30", &p);
	cr_assert_eq(set, CFG_BIT(CFG_BACKING) | CFG_BIT(CFG_CEPH_CONF) | CFG_BIT(CFG_CEPH_ID) |
		     CFG_BIT(CFG_RBD_SHARED) | CFG_BIT(CFG_RBD_TIMEOUT));
	cr_assert_str_eq(p.rbd.conf, "/etc/ceph/other.conf");
	cr_assert_str_eq(p.rbd.id, "vhostd.1");
	cr_assert(p.rbd.shared);
	cr_assert_eq(p.rbd.timeout, 30);
	config_ok("rbd_timeout=0 rbd_shared=no", &p);
	cr_assert_eq(p.rbd.timeout, 0);
	cr_assert_not(p.rbd.shared);
	config_ok("rbd_timeout=86400", &p);

	set = 0;
	vdev_params_init(&p);
	cr_assert_eq(cfg_parse_key_text(CFG_CEPH_ID, "client7\n", 8, &p, &set, err, sizeof(err)),
		     0, "%s", err);
	cr_assert_eq(set, CFG_BIT(CFG_CEPH_ID));
	cr_assert_str_eq(p.rbd.id, "client7");
}

Test(cfgparse, rbd_refusals)
{
	config_bad("backing=rbd:", "rbd:POOL/IMAGE");
	config_bad("backing=rbd:image", "rbd:POOL/IMAGE");
	config_bad("backing=rbd:pool/", "rbd:POOL/IMAGE");
	config_bad("backing=rbd:/image", "rbd:POOL/IMAGE");
	config_bad("backing=rbd:a/b/c/d", "rbd:POOL/NAMESPACE/IMAGE");
	config_bad("backing=rbd:a//c", "names are 1 to 127");
	config_bad("backing=rbd:a/b@", "@SNAPSHOT");
	config_bad("backing=rbd:a/b@c@d", "'/', '@' or spaces");
	config_bad("backing=rbd:a/b\x01", "rbd:POOL/IMAGE");
	{
		char t[300];

		snprintf(t, sizeof(t), "backing=rbd:p/%0128d", 0);
		config_bad(t, "1 to 127");
	}
	config_bad("ceph_conf=ceph.conf", "ceph_conf 'ceph.conf' is invalid");
	config_bad("ceph_conf=", "ceph_conf '' is invalid");
	config_bad("ceph_id=", "ceph_id '' is invalid");
	config_bad("ceph_id=client/x", "ceph_id 'client/x' is invalid");
	config_bad("ceph_id=a0123456789012345678901234567890123456789012345678901234567890123",
		   "1 to 63");
	config_bad("rbd_shared=2", "rbd_shared '2' is invalid");
	config_bad("rbd_timeout=86401", "rbd_timeout '86401' is invalid");
	config_bad("rbd_timeout=-1", "rbd_timeout");
	config_bad("rbd_timeout=5s", "rbd_timeout");
	/* nothing applied from a text with one bad rbd key */
	config_bad("backing=rbd:rbd/a rbd_timeout=x", "rbd_timeout 'x'");
}

Test(cfgparse, rbd_read_back)
{
	struct vdev_params p, q;
	char text[2 * sizeof(p.path)];
	unsigned set = 0;
	size_t n;

	/* an rbd backing shows its keys (with their defaults); the image's
	 * size is not a setting (no size line when none was given) */
	config_ok("backing=rbd:rbd/ns/img ceph_id=vm rbd_timeout=15", &p);
	n = cfg_format_config(&p, false, text, sizeof(text));
	cr_assert_not_null(strstr(text, "\nbacking=rbd:rbd/ns/img\n"), "%s", text);
	cr_assert_not_null(strstr(text, "\nceph_conf=/etc/ceph/ceph.conf\nceph_id=vm\n"
				  "rbd_shared=0\nrbd_timeout=15\n"), "%s", text);
	cr_assert(strncmp(text, "size=", 5) != 0 && !strstr(text, "\nsize="), "%s", text);
	vdev_params_init(&q);
	cr_assert_eq(cfg_parse_config_text(text, n, &q, &set, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(memcmp(&p, &q, sizeof(p)), 0);
	cr_assert(vdev_same_backing(&p, &q));

	/* another backing shows them too (every key reads back), unused */
	config_ok("backing=ram", &p);
	cfg_format_config(&p, false, text, sizeof(text));
	cr_assert_not_null(strstr(text, "\nceph_conf=/etc/ceph/ceph.conf\nceph_id=admin\n"
				  "rbd_shared=0\nrbd_timeout=0\n"), "%s", text);
	config_ok("backing=ram rbd_timeout=9", &p);
	cfg_format_config(&p, false, text, sizeof(text));
	cr_assert_not_null(strstr(text, "\nrbd_timeout=9\n"), "%s", text);
	/* what the typed API may be given is checked as text */
	cr_assert_eq(cfg_check_values(&p, CFG_BIT(CFG_RBD_TIMEOUT), err, sizeof(err)), 0);
	p.rbd.timeout = 100000;
	cr_assert_eq(cfg_check_values(&p, CFG_BIT(CFG_RBD_TIMEOUT), err, sizeof(err)), -EINVAL);
	memset(p.rbd.id, 'x', sizeof(p.rbd.id));
	cr_assert_eq(cfg_check_values(&p, CFG_BIT(CFG_CEPH_ID), err, sizeof(err)), -EINVAL);
}

Test(cfgparse, rbd_same_backing_and_apply)
{
	struct vdev_params a, b, dst;

	config_ok("backing=rbd:rbd/img", &a);
	b = a;
	cr_assert(vdev_same_backing(&a, &b));
	snprintf(b.rbd.snap, sizeof(b.rbd.snap), "s1");
	cr_assert_not(vdev_same_backing(&a, &b), "a snapshot is another backing");
	b = a;
	b.rbd.shared = true;
	cr_assert_not(vdev_same_backing(&a, &b), "sharing changes how it is opened");
	b = a;
	b.rbd.timeout = 1;
	cr_assert_not(vdev_same_backing(&a, &b));
	b = a;
	snprintf(b.rbd.id, sizeof(b.rbd.id), "other");
	cr_assert_not(vdev_same_backing(&a, &b));

	/* backing copies the image, not the cluster keys */
	vdev_params_init(&dst);
	b = a;
	snprintf(b.rbd.id, sizeof(b.rbd.id), "other");
	cfg_apply(&dst, &b, CFG_BIT(CFG_BACKING));
	cr_assert_eq(dst.backing, BE_RBD);
	cr_assert_str_eq(dst.rbd.image, "img");
	cr_assert_str_eq(dst.rbd.id, "admin");
	cfg_apply(&dst, &b, CFG_BIT(CFG_CEPH_ID));
	cr_assert_str_eq(dst.rbd.id, "other");

	/* no size needed: the image's */
	a.size = 0;
	cr_assert_eq(vdev_params_check(&a, err, sizeof(err)), 0, "%s", err);
}
