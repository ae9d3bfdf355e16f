/* The state file (state.h) as an ordinary user in a temporary directory:
 * atomic save, restore of names/minors/settings, refusal of a corrupt or
 * cut-off file with a reason, unknown keys, a missing file. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cfgparse.h"
#include "dtest.h"
#include "state.h"

static char path[PATH_MAX], store[PATH_MAX], err[512];
static struct state_ctrl *sc;
static struct state_group *sg;
static size_t n, ng;

static void setup(void)
{
	dt_tmpdir();
	snprintf(path, sizeof(path), "%s/vhostd.state", dt.dir);
	err[0] = '\0';
	sc = NULL;
	sg = NULL;
	n = ng = 0;
}

static void teardown(void)
{
	free(sc);
	free(sg);
	dt_teardown();
}

TestSuite(state, .init = setup, .fini = teardown, .timeout = 30);

static void three(struct state_ctrl *c)
{
	memset(c, 0, 3 * sizeof(*c));
	snprintf(c[0].name, sizeof(c[0].name), "unconf");
	c[0].minor = 5;
	vdev_params_init(&c[0].params);
	c[0].params.queues = 3;

	snprintf(c[1].name, sizeof(c[1].name), "vhostblk0");
	c[1].minor = 0;
	c[1].have_size = true;
	vdev_params_init(&c[1].params);
	c[1].params.size = 64 << 20;
	c[1].params.block_size = 4096;
	c[1].params.backing = BE_NULL;
	/* a percent sign, '=' and '#' must survive the escaping */
	snprintf(c[1].params.serial, sizeof(c[1].params.serial), "ab%%c=d#e");

	snprintf(c[2].name, sizeof(c[2].name), "file.1");
	c[2].minor = (1u << 20) - 1;
	vdev_params_init(&c[2].params);
	c[2].params.backing = BE_FILE;
	snprintf(c[2].params.path, sizeof(c[2].params.path), "/srv/disks/a.img");
	c[2].params.readonly = true;
}

static int load(void)
{
	free(sc);
	free(sg);
	sc = NULL;
	sg = NULL;
	return state_load(path, &sc, &n, &sg, &ng, store, sizeof(store), err, sizeof(err));
}

static void assert_same(const struct state_ctrl *a, const struct state_ctrl *b)
{
	cr_assert_str_eq(a->name, b->name);
	cr_assert_eq(a->minor, b->minor, "%s", a->name);
	cr_assert_eq(a->have_size, b->have_size, "%s", a->name);
	if (a->have_size)
		cr_assert_eq(a->params.size, b->params.size, "%s", a->name);
	cr_assert_eq(a->params.block_size, b->params.block_size, "%s", a->name);
	cr_assert_eq(a->params.backing, b->params.backing, "%s", a->name);
	cr_assert_str_eq(a->params.path, b->params.path, "%s", a->name);
	cr_assert_eq(a->params.readonly, b->params.readonly, "%s", a->name);
	cr_assert_eq(a->params.queues, b->params.queues, "%s", a->name);
	cr_assert_str_eq(a->params.serial, b->params.serial, "%s", a->name);
	cr_assert_eq(memcmp(&a->params.limits, &b->params.limits, sizeof(a->params.limits)),
		     0, "%s", a->name);
	cr_assert_str_eq(a->params.group, b->params.group, "%s", a->name);
	cr_assert_eq(memcmp(&a->params.rbd, &b->params.rbd, sizeof(a->params.rbd)), 0,
		     "%s: rbd settings differ", a->name);
}

Test(state, save_and_load_round_trip)
{
	struct state_ctrl c[3];

	three(c);
	cr_assert_eq(state_save(path, "/var/run/kata containers", c, 3, NULL, 0, err,
				sizeof(err)), 0, "%s", err);
	cr_assert_eq(load(), 0, "%s", err);
	cr_assert_eq(n, 3);
	cr_assert_str_eq(store, "/var/run/kata containers");
	for (size_t i = 0; i < 3; i++)
		assert_same(&sc[i], &c[i]);
}

Test(state, saved_file_is_complete_and_private)
{
	struct state_ctrl c[3];
	char tmp[PATH_MAX + 8], *text;
	struct stat st;

	three(c);
	cr_assert_eq(state_save(path, "/s", c, 3, NULL, 0, err, sizeof(err)), 0, "%s", err);
	text = dt_slurp(path);
	cr_assert_not_null(text);
	cr_assert(strstr(text, "\nvhostd-state 1\n"), "%s", text);
	cr_assert(strstr(text, "\nctrl vhostblk0 0 size=67108864 "), "%s", text);
	cr_assert_eq(text[strlen(text) - 1], '\n');
	free(text);
	cr_assert_eq(stat(path, &st), 0);
	cr_assert_eq(st.st_mode & 0777, 0600);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	cr_assert_eq(access(tmp, F_OK), -1, "no temporary file is left");
}

Test(state, save_replaces_atomically)
{
	struct state_ctrl c[3];
	char tmp[PATH_MAX + 8], *before, *after;

	three(c);
	cr_assert_eq(state_save(path, "/s", c, 3, NULL, 0, err, sizeof(err)), 0, "%s", err);
	before = dt_slurp(path);
	/* a temporary file left by a crash mid-save is simply overwritten */
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	dt_write_file(tmp, "vhostd-state 1\nctrl half");
	cr_assert_eq(state_save(path, "/s", c, 1, NULL, 0, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(load(), 0, "%s", err);
	cr_assert_eq(n, 1);

	/* a save that cannot complete leaves the previous file whole */
	cr_assert_eq(state_save(path, "/s", c, 3, NULL, 0, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(chmod(dt.dir, 0500), 0);
	err[0] = '\0';
	cr_assert_lt(state_save(path, "/s", c, 1, NULL, 0, err, sizeof(err)), 0);
	cr_assert(strstr(err, ".tmp"), "the reason names the file: %s", err);
	cr_assert_eq(chmod(dt.dir, 0700), 0);
	after = dt_slurp(path);
	cr_assert_str_eq(after, before);
	cr_assert_eq(load(), 0, "%s", err);
	cr_assert_eq(n, 3);
	free(before);
	free(after);
}

Test(state, missing_file_is_empty)
{
	cr_assert_eq(load(), 0, "%s", err);
	cr_assert_eq(n, 0);
	cr_assert_str_eq(store, "");
}

Test(state, empty_and_comment_only_files)
{
	dt_write_file(path, "");
	cr_assert_eq(load(), 0, "%s", err);
	cr_assert_eq(n, 0);
	dt_write_file(path, "vhostd-state 1\n");
	cr_assert_eq(load(), 0, "%s", err);
	cr_assert_eq(n, 0);
}

/* Each text must be refused with -EINVAL and a reason containing why. */
static void refused(const char *text, const char *why)
{
	dt_write_file(path, text);
	err[0] = '\0';
	cr_assert_eq(load(), -EINVAL, "accepted: %s", text);
	cr_assert_null(sc);
	cr_assert_eq(n, 0);
	cr_assert(strstr(err, path), "the reason names the file: %s", err);
	cr_assert(strstr(err, why), "for '%s': reason '%s' lacks '%s'", text, err, why);
}

Test(state, corrupt_files_refused)
{
	refused("hello world\n", "line 1: not a vhostd state file");
	/* lines, but no header: not ours (an empty file is an empty state) */
	refused("# nothing\n\n   \n", "line 3: not a vhostd state file");
	refused("vhostd-state 2\n", "unsupported version 2");
	refused("vhostd-state 1 extra\n", "not a vhostd state file");
	refused("ctrl a 0\n", "not a vhostd state file");
	refused("vhostd-state 1\nctrl a 0\nctrl b 0\n", "line 3: controller b repeats");
	refused("vhostd-state 1\nctrl a 0\nctrl a 1\n", "repeats a name or minor");
	refused("vhostd-state 1\nctrl .a 0\n", "bad controller name");
	refused("vhostd-state 1\nctrl a -1\n", "bad minor");
	refused("vhostd-state 1\nctrl a 1048576\n", "bad minor");
	refused("vhostd-state 1\nctrl a x\n", "bad minor");
	refused("vhostd-state 1\nctrl a 0 size=1M size=2M\n", "bad or repeated key");
	refused("vhostd-state 1\nctrl a 0 size=1Q\n", "controller a: ");
	refused("vhostd-state 1\nctrl a 0 serial=%00\n", "bad escape");
	refused("vhostd-state 1\nctrl a 0 serial=%4\n", "bad escape");
	refused("vhostd-state 1\nstore relative\n", "bad store line");
	refused("vhostd-state 1\nctrl a 0\nstore /late\n", "bad store line");
	refused("vhostd-state 1\nfoo\n", "line 2: expected 'ctrl NAME MINOR");
}

Test(state, unknown_key_refused)
{
	refused("vhostd-state 1\nctrl a 0 size=1M colour=blue\n", "bad or repeated key");
	refused("vhostd-state 1\nctrl a 0 sizes=1M\n", "bad or repeated key");
	refused("vhostd-state 1\nctrl a 0 size\n", "bad or repeated key");
}

Test(state, nul_byte_refused)
{
	static const char text[] = "vhostd-state 1\nctrl a\0 0\n";
	FILE *f = fopen(path, "we");

	cr_assert_not_null(f);
	fwrite(text, 1, sizeof(text) - 1, f);
	fclose(f);
	cr_assert_eq(load(), -EINVAL);
	cr_assert(strstr(err, "NUL byte"), "%s", err);
}

/* A file cut short (a disk full or a copy interrupted; our own saves are
 * atomic) is refused wherever the cut makes it malformed. */
Test(state, partial_file_refused)
{
	struct state_ctrl c[3];
	char *text;
	static const char *const cuts[] = {
		"vhostd-st",            /* in the header */
		"serial=ab%2",          /* in an escape */
		"block_si",             /* in a key */
	};

	three(c);
	cr_assert_eq(state_save(path, "/s", c, 3, NULL, 0, err, sizeof(err)), 0, "%s", err);
	text = dt_slurp(path);
	for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
		char *at = strstr(text, cuts[i]);
		char *part;

		cr_assert_not_null(at, "%s not in %s", cuts[i], text);
		part = strndup(text, at - text + strlen(cuts[i]));
		dt_write_file(path, part);
		err[0] = '\0';
		cr_assert_eq(load(), -EINVAL, "accepted a file cut after '%s'", cuts[i]);
		cr_assert_neq(err[0], '\0');
		free(part);
	}
	free(text);
}

Test(state, unreadable_file_is_an_error_not_empty)
{
	dt_write_file(path, "vhostd-state 1\n");
	cr_assert_eq(chmod(path, 0), 0);
	cr_assert_eq(load(), -EACCES);
	cr_assert(strstr(err, "cannot open state file"), "%s", err);
}

/* ---- throttle groups and limits (issue 15) ------------------------------- */

Test(state, groups_and_limits_round_trip)
{
	struct state_ctrl c[3];
	struct state_group g[2];
	char *text;

	three(c);
	c[1].params.limits = (struct vdev_limits){ .iops = 2000, .bps = 8 << 20,
		.read_bps = 1, .write_bps = 1ull << 40, .iops_burst = 64,
		.bps_burst = 1 << 20 };
	snprintf(c[1].params.group, sizeof(c[1].params.group), "tenant-a");
	snprintf(c[0].params.group, sizeof(c[0].params.group), "tenant.b");
	memset(g, 0, sizeof(g));
	snprintf(g[0].name, sizeof(g[0].name), "tenant.b");
	snprintf(g[1].name, sizeof(g[1].name), "tenant-a");
	g[1].limits = (struct vdev_limits){ .iops = 5000, .write_bps = 100 << 20,
		.bps_burst = 7 };
	cr_assert_eq(state_save(path, "/s", c, 3, g, 2, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(load(), 0, "%s", err);
	cr_assert_eq(n, 3);
	cr_assert_eq(ng, 2);
	for (size_t i = 0; i < 3; i++)
		assert_same(&sc[i], &c[i]);
	for (size_t i = 0; i < 2; i++) {
		cr_assert_str_eq(sg[i].name, g[i].name);
		cr_assert_eq(memcmp(&sg[i].limits, &g[i].limits, sizeof(g[i].limits)), 0,
			     "%s", g[i].name);
	}
	/* the groups are written before the controllers */
	text = dt_slurp(path);
	cr_assert_not_null(text);
	cr_assert(strstr(text, "\ngroup tenant-a ") && strstr(text, "\nctrl ") &&
		  strstr(text, "\ngroup tenant-a ") < strstr(text, "\nctrl "), "%s", text);
	cr_assert_not_null(strstr(text, " iops_limit=2000 bps_limit=8388608 "), "%s", text);
	cr_assert_not_null(strstr(text, " group=tenant-a"), "%s", text);
	free(text);
}

Test(state, group_lines_anywhere_and_checked)
{
	/* a group after the controller that names it (an operator's edit) */
	dt_write_file(path, "vhostd-state 1\nstore /s\n"
		      "ctrl a 0 size=1048576 group=g iops_limit=10\n"
		      "group g bps_limit=4096 iops_burst=3\n");
	cr_assert_eq(load(), 0, "%s", err);
	cr_assert_eq(n, 1);
	cr_assert_eq(ng, 1);
	cr_assert_str_eq(sc[0].params.group, "g");
	cr_assert_eq(sc[0].params.limits.iops, 10);
	cr_assert_eq(sg[0].limits.bps, 4096);
	cr_assert_eq(sg[0].limits.iops_burst, 3);

	static const char *const bad[] = {
		"group .g\n",                          /* bad name */
		"group g size=1M\n",                   /* not a group key */
		"group g iops_limit=1 iops_limit=2\n", /* repeated */
		"group g\ngroup g\n",                  /* twice */
		"group g bps_limit=-1\n",
		"ctrl a 0 group=.x\n",
		"ctrl a 0 iops_limit=1x\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char text[256];

		snprintf(text, sizeof(text), "vhostd-state 1\n%s", bad[i]);
		dt_write_file(path, text);
		cr_assert_eq(load(), -EINVAL, "accepted: %s", bad[i]);
		cr_assert(strstr(err, "line "), "%s", err);
	}
	/* a loader that takes no groups refuses them */
	dt_write_file(path, "vhostd-state 1\ngroup g\n");
	free(sc);
	sc = NULL;
	cr_assert_eq(state_load(path, &sc, &n, NULL, NULL, store, sizeof(store), err,
				sizeof(err)), -EINVAL);
}

Test(state, rbd_round_trip)
{
	struct state_ctrl c[3];
	char *text;

	three(c);
	/* an rbd image without a size (the image's), a snapshot with every
	 * cluster key, and a ram controller with an rbd key left set */
	c[0].params.backing = BE_RBD;
	snprintf(c[0].params.rbd.pool, sizeof(c[0].params.rbd.pool), "rbd");
	snprintf(c[0].params.rbd.image, sizeof(c[0].params.rbd.image), "vm-1");
	c[1].params.backing = BE_RBD;
	c[1].have_size = false;
	snprintf(c[1].params.rbd.pool, sizeof(c[1].params.rbd.pool), "p.1");
	snprintf(c[1].params.rbd.ns, sizeof(c[1].params.rbd.ns), "tenant");
	snprintf(c[1].params.rbd.image, sizeof(c[1].params.rbd.image), "img_2");
	snprintf(c[1].params.rbd.snap, sizeof(c[1].params.rbd.snap), "before-upgrade");
	snprintf(c[1].params.rbd.conf, sizeof(c[1].params.rbd.conf), "/etc/ceph/c%%1.conf");
	snprintf(c[1].params.rbd.id, sizeof(c[1].params.rbd.id), "vhostd");
	c[1].params.rbd.shared = true;
	c[1].params.rbd.timeout = 30;
	c[1].params.readonly = true;
	c[2].params.backing = BE_RAM;
	c[2].params.path[0] = '\0';
	c[2].have_size = true;
	c[2].params.size = 1 << 20;
	c[2].params.rbd.timeout = 7;
	cr_assert_eq(state_save(path, "/s", c, 3, NULL, 0, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(load(), 0, "%s", err);
	cr_assert_eq(n, 3);
	for (size_t i = 0; i < 3; i++)
		assert_same(&sc[i], &c[i]);
	text = dt_slurp(path);
	cr_assert_not_null(text);
	cr_assert_not_null(strstr(text, "\nctrl unconf 5 block_size=512 backing=rbd:rbd/vm-1 "),
			   "%s", text);
	cr_assert_not_null(strstr(text, " backing=rbd:p.1/tenant/img_2@before-upgrade "), "%s",
			   text);
	cr_assert_not_null(strstr(text, " ceph_conf=/etc/ceph/c%251.conf ceph_id=vhostd "
				  "rbd_shared=1 rbd_timeout=30 packed=1\n"), "%s", text);
	/* a ram controller: every key, the rbd ones too */
	cr_assert_not_null(strstr(text, "group= ceph_conf=/etc/ceph/ceph.conf ceph_id=admin "
				  "rbd_shared=0 rbd_timeout=7 packed=1\n"), "%s", text);
	free(text);
}

Test(state, rbd_bad_values_refused)
{
	static const char *const bad[] = {
		"ctrl a 0 backing=rbd:nopool\n",
		"ctrl a 0 backing=rbd:a/b/c/d\n",
		"ctrl a 0 backing=rbd:a/b ceph_conf=relative\n",
		"ctrl a 0 backing=rbd:a/b ceph_id=a%20b\n",
		"ctrl a 0 backing=rbd:a/b rbd_timeout=1e3\n",
		"ctrl a 0 backing=rbd:a/b rbd_shared=1 rbd_shared=0\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char text[256];

		snprintf(text, sizeof(text), "vhostd-state 1\n%s", bad[i]);
		dt_write_file(path, text);
		cr_assert_eq(load(), -EINVAL, "accepted: %s", bad[i]);
		cr_assert(strstr(err, "line 2"), "%s", err);
	}
}
