/* The controller registry (mgr.h) on a temporary store, as an ordinary user:
 * create/destroy, names, minors, settings with a mask, all-or-nothing
 * refusals, files in the way, EBUSY while a front-end is connected, the
 * state file it keeps and the restart that reads it back.  Device nodes are
 * made by the stand-in of dtest.c. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "cfgparse.h"
#include "dtest.h"
#include "state.h"
#include "store.h"

static struct ctrl_info *ci;

static void setup(void)
{
	dt_setup_mgr(0);
	ci = malloc(sizeof(*ci));
	cr_assert_not_null(ci);
}

static void setup_small(void)
{
	dt_setup_mgr(3);
	ci = malloc(sizeof(*ci));
	cr_assert_not_null(ci);
}

static void teardown(void)
{
	free(ci);
	ci = NULL;
	dt_teardown();
}

static struct vdev_params params(void)
{
	struct vdev_params p;

	vdev_params_init(&p);
	return p;
}

static int set_size(const char *name, uint64_t size)
{
	struct vdev_params p = params();

	p.size = size;
	return dt_set(name, &p, CFG_BIT(CFG_SIZE));
}

/* (A test's own .init runs after its suite's, not instead: a registry of
 * another size is a suite of its own.) */
TestSuite(registry, .init = setup, .fini = teardown, .timeout = 30);
TestSuite(registry_small, .init = setup_small, .fini = teardown, .timeout = 30);

Test(registry, runs_unprivileged)
{
	char path[PATH_MAX];

	cr_assert_neq(geteuid(), 0, "the suite must not run as root");
	/* so a real node could not be made here: the stand-in is what made
	 * every node these tests see */
	snprintf(path, sizeof(path), "%s/realnode", dt.dir);
	cr_assert_eq(mknod(path, S_IFBLK | 0600, makedev(MGR_DEV_MAJOR, 0)), -1);
	cr_assert_eq(errno, EPERM);
}

Test(registry, create_info_destroy)
{
	char sock[PATH_MAX], node[PATH_MAX];
	char **names;
	size_t n;

	cr_assert_eq(mgr_ctrl_create(dt.m, "vhostblk0"), 0);
	cr_assert_eq(mgr_count(dt.m), 1);
	dt_info("vhostblk0", ci);
	dt_sock_path("vhostblk0", sock, sizeof(sock));
	dt_node_path("vhostblk0", node, sizeof(node));
	cr_assert_str_eq(ci->name, "vhostblk0");
	cr_assert_eq(ci->minor, 0);
	cr_assert_eq(ci->state, CTRL_UNCONFIGURED);
	cr_assert_str_eq(ctrl_state_name(ci->state), "unconfigured");
	cr_assert_not(ci->have_size);
	cr_assert_not(ci->live);
	cr_assert_str_eq(ci->socket, sock);
	cr_assert_str_eq(ci->device, node);
	cr_assert_str_eq(ci->error, "");
	cr_assert_eq(ci->params.block_size, 512);
	cr_assert_eq(ci->stats.reads, 0);
	cr_assert_geq(ci->mtime, time(NULL) - 60);
	/* unconfigured: nothing in the store yet */
	cr_assert_eq(access(sock, F_OK), -1);
	cr_assert_eq(access(node, F_OK), -1);
	cr_assert_eq(dt_node_calls('m'), 0);

	cr_assert_eq(mgr_list(dt.m, &names, &n), 0);
	cr_assert_eq(n, 1);
	cr_assert_str_eq(names[0], "vhostblk0");
	mgr_list_free(names, n);

	cr_assert_eq(mgr_ctrl_destroy(dt.m, "vhostblk0"), 0);
	cr_assert_null(mgr_get(dt.m, "vhostblk0"));
	cr_assert_eq(mgr_count(dt.m), 0);
	cr_assert_eq(mgr_ctrl_destroy(dt.m, "vhostblk0"), -ENOENT);
}

Test(registry, names_refused)
{
	char longname[VDEV_NAME_MAX + 2];

	cr_assert_eq(mgr_ctrl_create(dt.m, ""), -EINVAL);
	cr_assert_eq(mgr_ctrl_create(dt.m, ".hidden"), -EINVAL);
	cr_assert_eq(mgr_ctrl_create(dt.m, "a/b"), -EINVAL);
	cr_assert_eq(mgr_ctrl_create(dt.m, "a b"), -EINVAL);
	cr_assert_eq(mgr_ctrl_create(dt.m, "a\nb"), -EINVAL);
	cr_assert_eq(mgr_ctrl_create(dt.m, "caf\xc3\xa9"), -EINVAL);
	memset(longname, 'x', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';          /* 65 characters */
	cr_assert_eq(mgr_ctrl_create(dt.m, longname), -EINVAL);
	cr_assert_eq(mgr_count(dt.m), 0);
	cr_assert_eq(mgr_ctrl_create(dt.m, "A-z_0.9"), 0);
	cr_assert_eq(mgr_ctrl_create(dt.m, "x."), 0);
}

Test(registry, name_too_long_for_a_socket_path)
{
	char name[VDEV_NAME_MAX + 1], sock[PATH_MAX];
	int want;

	memset(name, 'n', VDEV_NAME_MAX);
	name[VDEV_NAME_MAX] = '\0';                     /* valid: 64 characters */
	dt_sock_path(name, sock, sizeof(sock));
	/* sun_path holds 107 bytes and a NUL */
	want = strlen(sock) > 107 ? -ENAMETOOLONG : 0;
	cr_assert_eq(mgr_ctrl_create(dt.m, name), want, "socket path %zu bytes",
		     strlen(sock));
}

Test(registry, exists)
{
	cr_assert_eq(mgr_ctrl_create(dt.m, "a"), 0);
	cr_assert_eq(mgr_ctrl_create(dt.m, "a"), -EEXIST);
	cr_assert_eq(mgr_count(dt.m), 1);
}

Test(registry_small, minors_run_out)
{
	struct ctrl_info *b = malloc(sizeof(*b));

	cr_assert_eq(mgr_ctrl_create(dt.m, "a"), 0);
	cr_assert_eq(mgr_ctrl_create(dt.m, "b"), 0);
	cr_assert_eq(mgr_ctrl_create(dt.m, "c"), 0);
	cr_assert_eq(mgr_ctrl_create(dt.m, "d"), -ENOSPC);
	cr_assert_null(mgr_get(dt.m, "d"));
	dt_info("b", b);
	cr_assert_eq(b->minor, 1);
	/* a freed minor is reused, the lowest first */
	cr_assert_eq(mgr_ctrl_destroy(dt.m, "b"), 0);
	cr_assert_eq(mgr_ctrl_create(dt.m, "d"), 0);
	dt_info("d", ci);
	cr_assert_eq(ci->minor, 1);
	free(b);
}

Test(registry_small, foreign_node_minor_not_reused)
{
	char node[PATH_MAX];

	/* another program's node 241:0 in devices/: Kata tells controllers
	 * apart by major:minor, so no new controller may take minor 0 */
	dt_node_path("other", node, sizeof(node));
	dt_fake_node(node, MGR_DEV_MAJOR, 0);
	cr_assert_eq(mgr_ctrl_create(dt.m, "a"), 0);
	dt_info("a", ci);
	cr_assert_eq(ci->minor, 1);
	/* nodes of other majors do not count */
	dt_node_path("disk", node, sizeof(node));
	dt_fake_node(node, 8, 2);
	cr_assert_eq(mgr_ctrl_create(dt.m, "b"), 0);
	dt_info("b", ci);
	cr_assert_eq(ci->minor, 2);
	/* minors 0..2 of 3 are taken (one by the foreign node) */
	cr_assert_eq(mgr_ctrl_create(dt.m, "c"), -ENOSPC);
	/* and the foreign node is never touched */
	cr_assert_eq(dt_node_calls('u'), 0);
	dt_node_path("other", node, sizeof(node));
	cr_assert_eq(access(node, F_OK), 0);
}

Test(registry, set_size_goes_live)
{
	char node[PATH_MAX];
	struct stat st;
	const struct dt_node_call *call;

	cr_assert_eq(mgr_ctrl_create(dt.m, "a"), 0);
	cr_assert_eq(set_size("a", 64 << 20), 0);
	dt_info("a", ci);
	cr_assert_eq(ci->state, CTRL_LISTENING);
	cr_assert(ci->live);
	cr_assert(ci->have_size);
	cr_assert_eq(ci->params.size, 64 << 20);
	cr_assert_eq(ci->live_size, 64 << 20);
	/* when the call returns, the socket listens and the node exists */
	cr_assert_eq(stat(ci->socket, &st), 0);
	cr_assert(S_ISSOCK(st.st_mode));
	cr_assert_eq(dt_node_calls('m'), 1);
	call = dt_node_call(0);
	dt_node_path("a", node, sizeof(node));
	cr_assert_str_eq(call->path, node);
	cr_assert_eq(call->mode, S_IFBLK | 0660);
	cr_assert_eq(major(call->dev), MGR_DEV_MAJOR);
	cr_assert_eq(minor(call->dev), 0);
	/* a file in devices/ is what Kata is given */
	cr_assert_eq(access(node, F_OK), 0);
}

Test(registry, set_with_mask_changes_only_masked_keys)
{
	struct vdev_params p = params();

	cr_assert_eq(mgr_ctrl_create(dt.m, "a"), 0);
	/* every field differs from the defaults, only two are named */
	p.size = 1 << 20;
	p.block_size = 4096;
	p.readonly = true;
	p.queues = 2;
	snprintf(p.serial, sizeof(p.serial), "SER1");
	cr_assert_eq(dt_set("a", &p, CFG_BIT(CFG_BLOCK_SIZE) | CFG_BIT(CFG_SERIAL)), 0);
	dt_info("a", ci);
	cr_assert_eq(ci->state, CTRL_UNCONFIGURED);
	cr_assert_not(ci->have_size);
	cr_assert_eq(ci->params.block_size, 4096);
	cr_assert_str_eq(ci->params.serial, "SER1");
	cr_assert_eq(ci->params.readonly, false);
	cr_assert_eq(ci->params.queues, VDEV_MAX_QUEUES);
	cr_assert_eq(ci->params.size, 0);
	cr_assert_eq(dt_node_calls('m'), 0);
	/* an empty mask changes nothing and is not an error */
	cr_assert_eq(dt_set("a", &p, 0), 0);
	dt_info("a", ci);
	cr_assert_eq(ci->params.readonly, false);
	/* the size completes it: live with the settings given before */
	cr_assert_eq(dt_set("a", &p, CFG_BIT(CFG_SIZE) | CFG_BIT(CFG_QUEUES)), 0);
	dt_info("a", ci);
	cr_assert_eq(ci->state, CTRL_LISTENING);
	cr_assert_eq(ci->params.queues, 2);
	cr_assert_eq(ci->params.block_size, 4096);
}

Test(registry, refusal_is_all_or_nothing)
{
	struct vdev_params p = params();

	cr_assert_eq(mgr_ctrl_create(dt.m, "a"), 0);
	/* a good size with a bad queue count: neither applies */
	p.size = 64 << 20;
	p.queues = 0;
	cr_assert_eq(dt_set("a", &p, CFG_BIT(CFG_SIZE) | CFG_BIT(CFG_QUEUES)), -EINVAL);
	dt_info("a", ci);
	cr_assert_eq(ci->state, CTRL_UNCONFIGURED);
	cr_assert_not(ci->have_size);
	cr_assert_eq(ci->params.size, 0);
	cr_assert_eq(ci->params.queues, VDEV_MAX_QUEUES);
	cr_assert(strncmp(ci->error, "test refused: ", 14) == 0, "error: %s", ci->error);
	cr_assert(strstr(ci->error, "queue"), "error: %s", ci->error);
	cr_assert_eq(dt_node_calls('m'), 0);
	cr_assert_eq(access(ci->socket, F_OK), -1);

	/* a size that is no multiple of the block size */
	p = params();
	p.size = 1000;
	cr_assert_eq(dt_set("a", &p, CFG_BIT(CFG_SIZE)), -EINVAL);
	dt_info("a", ci);
	cr_assert_eq(ci->state, CTRL_UNCONFIGURED);
	cr_assert_neq(ci->error[0], '\0');

	/* an unconfigured controller's settings are checked too */
	p.block_size = 3000;
	cr_assert_eq(dt_set("a", &p, CFG_BIT(CFG_BLOCK_SIZE)), -EINVAL);
	dt_info("a", ci);
	cr_assert_eq(ci->params.block_size, 512);
	cr_assert(strstr(ci->error, "block"), "error: %s", ci->error);

	/* an accepted change clears the error */
	cr_assert_eq(set_size("a", 1 << 20), 0);
	dt_info("a", ci);
	cr_assert_str_eq(ci->error, "");
	cr_assert_eq(ci->state, CTRL_LISTENING);
}

Test(registry, refused_records_the_reason)
{
	struct ctrl *c;

	cr_assert_eq(mgr_ctrl_create(dt.m, "a"), 0);
	c = mgr_get(dt.m, "a");
	cr_assert_eq(mgr_ctrl_refused(dt.m, c, "write to state refused: the file is "
				      "read-only"), 0);
	dt_info("a", ci);
	cr_assert_str_eq(ci->error, "write to state refused: the file is read-only");
	/* a reference outlives rmdir: the controller answers ENOENT from then on */
	cr_assert_eq(mgr_ctrl_destroy(dt.m, "a"), 0);
	cr_assert_eq(mgr_ctrl_refused(dt.m, c, "late"), -ENOENT);
	cr_assert_eq(mgr_ctrl_info(dt.m, c, ci), -ENOENT);
	cr_assert_eq(mgr_ctrl_set(dt.m, c, &ci->params, 0, NULL), -ENOENT);
	mgr_put(dt.m, c);
}

Test(registry, foreign_node_in_the_way)
{
	char node[PATH_MAX];
	char *text;

	cr_assert_eq(mgr_ctrl_create(dt.m, "a"), 0);
	dt_node_path("a", node, sizeof(node));
	dt_write_file(node, "not ours\n");
	cr_assert_eq(set_size("a", 1 << 20), -EEXIST);
	dt_info("a", ci);
	cr_assert_eq(ci->state, CTRL_UNCONFIGURED);
	cr_assert(strstr(ci->error, "devices/a already exists"), "error: %s", ci->error);
	cr_assert_eq(access(ci->socket, F_OK), -1, "no socket is left behind");
	cr_assert_eq(dt_node_calls('m'), 0);
	/* rmdir leaves it alone as well */
	cr_assert_eq(mgr_ctrl_destroy(dt.m, "a"), 0);
	text = dt_slurp(node);
	cr_assert_str_eq(text, "not ours\n");
	free(text);
	cr_assert_eq(dt_node_calls('u'), 0);
}

Test(registry, foreign_node_with_another_minor_in_the_way)
{
	char node[PATH_MAX];

	cr_assert_eq(mgr_ctrl_create(dt.m, "a"), 0);
	dt_node_path("a", node, sizeof(node));
	dt_fake_node(node, MGR_DEV_MAJOR, 7);           /* not a's minor 0 */
	cr_assert_eq(set_size("a", 1 << 20), -EEXIST);
	dt_info("a", ci);
	cr_assert(strstr(ci->error, "241:0"), "error: %s", ci->error);
}

Test(registry, foreign_socket_file_in_the_way)
{
	char sock[PATH_MAX];

	cr_assert_eq(mgr_ctrl_create(dt.m, "b"), 0);
	dt_sock_path("b", sock, sizeof(sock));
	dt_write_file(sock, "");
	cr_assert_eq(set_size("b", 1 << 20), -EEXIST);
	dt_info("b", ci);
	cr_assert(strstr(ci->error, "sockets/b already exists"), "error: %s", ci->error);
	cr_assert_eq(dt_node_calls('m'), 0);
	cr_assert_eq(access(sock, F_OK), 0);
}

Test(registry, busy_while_connected)
{
	struct vdev_params p = params();
	char node[PATH_MAX];
	int fd;

	cr_assert_eq(mgr_ctrl_create(dt.m, "a"), 0);
	cr_assert_eq(set_size("a", 1 << 20), 0);
	dt_info("a", ci);
	fd = dt_connect(ci->socket);
	cr_assert(dt_wait_state("a", CTRL_CONNECTED, 5000));

	cr_assert_eq(mgr_ctrl_destroy(dt.m, "a"), -EBUSY);
	dt_info("a", ci);
	cr_assert(strstr(ci->error, "connected"), "error: %s", ci->error);
	cr_assert_eq(dt_node_calls('u'), 0);

	p.block_size = 4096;
	cr_assert_eq(dt_set("a", &p, CFG_BIT(CFG_BLOCK_SIZE)), -EBUSY);
	dt_info("a", ci);
	cr_assert_eq(ci->params.block_size, 512);
	cr_assert(strstr(ci->error, "front-end is connected"), "error: %s", ci->error);

	/* the front-end goes away: both are allowed again */
	close(fd);
	cr_assert(dt_wait_state("a", CTRL_LISTENING, 5000));
	cr_assert_eq(dt_set("a", &p, CFG_BIT(CFG_BLOCK_SIZE)), 0);
	cr_assert_eq(mgr_ctrl_destroy(dt.m, "a"), 0);
	dt_node_path("a", node, sizeof(node));
	cr_assert_eq(dt_node_calls('u'), 1);
	cr_assert_str_eq(dt_node_call(1)->path, node);
	cr_assert_eq(access(node, F_OK), -1);
	cr_assert_eq(access(ci->socket, F_OK), -1, "the socket is removed");
}

Test(registry, state_file_follows_changes)
{
	struct state_ctrl *sc;
	char store[PATH_MAX], err[256];
	size_t n;

	cr_assert_eq(mgr_ctrl_create(dt.m, "a"), 0);
	cr_assert_eq(mgr_ctrl_create(dt.m, "b"), 0);
	cr_assert_eq(set_size("b", 2 << 20), 0);
	cr_assert_eq(state_load(dt.state, &sc, &n, NULL, NULL, store, sizeof(store), err,
				sizeof(err)), 0, "%s", err);
	cr_assert_eq(n, 2);
	cr_assert_str_eq(sc[0].name, "a");
	cr_assert_not(sc[0].have_size);
	cr_assert_str_eq(sc[1].name, "b");
	cr_assert_eq(sc[1].minor, 1);
	cr_assert(sc[1].have_size);
	cr_assert_eq(sc[1].params.size, 2 << 20);
	cr_assert_neq(store[0], '\0');
	free(sc);

	cr_assert_eq(mgr_ctrl_destroy(dt.m, "a"), 0);
	cr_assert_eq(state_load(dt.state, &sc, &n, NULL, NULL, store, sizeof(store), err,
				sizeof(err)), 0, "%s", err);
	cr_assert_eq(n, 1);
	cr_assert_str_eq(sc[0].name, "b");
	free(sc);
}

Test(registry, restart_restores_names_minors_settings)
{
	struct vdev_params p = params();
	unsigned nctrl, nfailed;
	char err[256] = "";
	int r;

	cr_assert_eq(mgr_ctrl_create(dt.m, "a"), 0);
	cr_assert_eq(mgr_ctrl_create(dt.m, "b"), 0);
	cr_assert_eq(mgr_ctrl_create(dt.m, "c"), 0);
	cr_assert_eq(mgr_ctrl_destroy(dt.m, "a"), 0);   /* minor 0 free again */
	p.size = 8 << 20;
	p.block_size = 4096;
	p.backing = BE_NULL;
	snprintf(p.serial, sizeof(p.serial), "sn%%1=#");
	cr_assert_eq(dt_set("b", &p, CFG_BIT(CFG_SIZE) | CFG_BIT(CFG_BLOCK_SIZE) |
			    CFG_BIT(CFG_BACKING) | CFG_BIT(CFG_SERIAL)), 0);
	cr_assert_eq(dt_node_calls('m'), 1);

	r = dt_restart(&nctrl, &nfailed, err, sizeof(err));
	cr_assert_eq(r, 0, "%s", err);
	cr_assert_eq(nctrl, 1);         /* configured ones */
	cr_assert_eq(nfailed, 0);
	cr_assert_eq(mgr_count(dt.m), 2);
	cr_assert_null(mgr_get(dt.m, "a"));
	dt_info("b", ci);
	cr_assert_eq(ci->minor, 1);
	cr_assert_eq(ci->state, CTRL_LISTENING);
	cr_assert_eq(ci->params.size, 8 << 20);
	cr_assert_eq(ci->params.block_size, 4096);
	cr_assert_eq(ci->params.backing, BE_NULL);
	cr_assert_str_eq(ci->params.serial, "sn%1=#");
	dt_info("c", ci);
	cr_assert_eq(ci->minor, 2);
	cr_assert_eq(ci->state, CTRL_UNCONFIGURED);
	/* our node from before the restart is reused, not made again */
	cr_assert_eq(dt_node_calls('m'), 1);
	/* and the next new controller still gets the lowest free minor */
	cr_assert_eq(mgr_ctrl_create(dt.m, "d"), 0);
	dt_info("d", ci);
	cr_assert_eq(ci->minor, 0);
}

Test(registry, restart_leaves_a_blocked_controller_in_error)
{
	unsigned nctrl, nfailed;
	char err[256] = "", node[PATH_MAX];

	cr_assert_eq(mgr_ctrl_create(dt.m, "a"), 0);
	cr_assert_eq(set_size("a", 1 << 20), 0);
	mgr_destroy(dt.m);
	dt.m = NULL;
	/* while vhostd is down, someone replaces the node with a file */
	dt_node_path("a", node, sizeof(node));
	cr_assert_eq(dt_node_ops.unlink(NULL, node), 0);
	dt_write_file(node, "x");
	cr_assert_eq(dt_restart(&nctrl, &nfailed, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(nctrl, 1);
	cr_assert_eq(nfailed, 1);
	dt_info("a", ci);
	cr_assert_eq(ci->state, CTRL_ERROR);
	cr_assert_not(ci->live);
	cr_assert(strstr(ci->error, "restore failed"), "error: %s", ci->error);
	cr_assert(strstr(ci->error, "devices/a"), "error: %s", ci->error);
}

Test(registry, second_manager_on_the_store_refused)
{
	struct mgr_opts o = {
		.store = dt.store,
		.state_path = dt.state,
		.node_ops = &dt_node_ops,
	};
	struct mgr *m2 = NULL;
	char err[512] = "";

	cr_assert_eq(mgr_create(&o, &m2, err, sizeof(err)), -EWOULDBLOCK);
	cr_assert_null(m2);
	cr_assert(strstr(err, "already served by another vhostd"), "err: %s", err);
}

Test(registry, state_file_of_another_store_refused)
{
	unsigned nctrl, nfailed;
	char err[512] = "", text[PATH_MAX + 64];

	snprintf(text, sizeof(text), "vhostd-state 1\nstore %s/elsewhere\nctrl x 3\n",
		 dt.dir);
	dt_write_file(dt.state, text);
	cr_assert_eq(dt_restart(&nctrl, &nfailed, err, sizeof(err)), -EEXIST);
	cr_assert(strstr(err, "belongs to store"), "err: %s", err);
	cr_assert_eq(mgr_count(dt.m), 0);
}

Test(registry, corrupt_state_file_refused_at_restart)
{
	unsigned nctrl, nfailed;
	char err[512] = "";

	dt_write_file(dt.state, "vhostd-state 1\nctrl a 0 size=1M colour=red\n");
	cr_assert_eq(dt_restart(&nctrl, &nfailed, err, sizeof(err)), -EINVAL);
	cr_assert(strstr(err, "line 2"), "err: %s", err);
	cr_assert_eq(mgr_count(dt.m), 0);
}

/* What the registry accepts, a restart must be able to restore: a value
 * the state file's parser would refuse (a serial with a space, a relative
 * or spaced backing path) is refused when it is set, not at the next start
 * (where the whole state file would be refused). */
Test(registry, set_refuses_what_a_restart_could_not_restore)
{
	struct vdev_params p = params();
	unsigned nctrl, nfailed;
	char err[256] = "";

	cr_assert_eq(mgr_ctrl_create(dt.m, "a"), 0);
	snprintf(p.serial, sizeof(p.serial), "s n");
	cr_assert_eq(dt_set("a", &p, CFG_BIT(CFG_SERIAL)), -EINVAL);
	dt_info("a", ci);
	cr_assert(strstr(ci->error, "serial"), "error: %s", ci->error);
	cr_assert_str_eq(ci->params.serial, "");
	p = params();
	p.backing = BE_FILE;
	snprintf(p.path, sizeof(p.path), "/srv/a b.img");
	cr_assert_eq(dt_set("a", &p, CFG_BIT(CFG_BACKING)), -EINVAL);
	dt_info("a", ci);
	cr_assert_eq(ci->params.backing, BE_RAM);
	cr_assert_eq(dt_restart(&nctrl, &nfailed, err, sizeof(err)), 0, "%s", err);
	dt_info("a", ci);
	cr_assert_str_eq(ci->params.serial, "");
}

/* The store module on its own: paths checked, directories made, both locks. */
Test(registry, store_paths_and_locks)
{
	struct store s;
	char dir[PATH_MAX], state[PATH_MAX], err[512] = "", longdir[200];
	struct stat st;

	cr_assert_eq(store_open(&s, "relative/store", dt.state, NULL, err, sizeof(err)),
		     -EINVAL);
	cr_assert(strstr(err, "absolute"), "%s", err);
	memset(longdir, 'd', sizeof(longdir) - 1);
	longdir[0] = '/';
	longdir[sizeof(longdir) - 1] = '\0';
	cr_assert_eq(store_open(&s, longdir, dt.state, NULL, err, sizeof(err)),
		     -ENAMETOOLONG);
	cr_assert(strstr(err, "too long for UNIX socket paths"), "%s", err);

	/* another store, but the state file of the running manager */
	snprintf(dir, sizeof(dir), "%s/other", dt.dir);
	cr_assert_eq(store_open(&s, dir, dt.state, NULL, err, sizeof(err)), -EWOULDBLOCK);
	cr_assert(strstr(err, "state file"), "%s", err);
	cr_assert(strstr(err, "already served by another vhostd"), "%s", err);
	/* the store lock was given back: with its own state file it opens */
	snprintf(state, sizeof(state), "%s/other-state/x.state", dt.dir);
	cr_assert_eq(store_open(&s, dir, state, NULL, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(stat(s.sockdir, &st), 0);
	cr_assert(S_ISDIR(st.st_mode));
	cr_assert_eq(stat(s.devdir, &st), 0);
	cr_assert_eq(stat(s.ctldir, &st), 0);
	cr_assert(store_name_fits(&s, "vhostblk0"));
	store_close(&s);
	/* closed: the next one gets the locks */
	cr_assert_eq(store_open(&s, dir, state, NULL, err, sizeof(err)), 0, "%s", err);
	store_close(&s);
}

/* ---- throttle groups and limits (issue 15) -------------------------------- */

static struct group_info gi;

Test(registry, groups_create_set_destroy)
{
	struct vdev_limits l = { .iops = 500, .bps_burst = 4096 };
	char **names;
	size_t n;

	cr_assert_eq(mgr_group_create(dt.m, "g1"), 0);
	cr_assert_eq(mgr_group_create(dt.m, "g1"), -EEXIST);
	cr_assert_eq(mgr_group_create(dt.m, ".g"), -EINVAL);
	cr_assert_eq(mgr_group_create(dt.m, "a/b"), -EINVAL);
	cr_assert_eq(mgr_group_create(dt.m, ""), -EINVAL);
	cr_assert_eq(mgr_group_create(dt.m, "g0"), 0);
	cr_assert_eq(mgr_group_count(dt.m), 2);
	cr_assert_eq(mgr_count(dt.m), 0, "groups are not controllers");
	cr_assert_null(mgr_get(dt.m, "g1"));
	cr_assert_eq(mgr_group_list(dt.m, &names, &n), 0);
	cr_assert_eq(n, 2);
	cr_assert_str_eq(names[0], "g1", "creation order");
	cr_assert_str_eq(names[1], "g0");
	mgr_list_free(names, n);

	/* a new group has no limits */
	cr_assert_eq(mgr_group_info(dt.m, "g1", &gi), 0);
	cr_assert_str_eq(gi.name, "g1");
	cr_assert_eq(gi.limits.iops | gi.limits.bps | gi.limits.read_bps |
		     gi.limits.write_bps | gi.limits.iops_burst | gi.limits.bps_burst, 0);
	cr_assert_eq(gi.users, 0);

	/* only the keys in the set change */
	cr_assert_eq(mgr_group_set(dt.m, "g1", &l, CFG_BIT(CFG_IOPS_LIMIT), NULL), 0);
	cr_assert_eq(mgr_group_info(dt.m, "g1", &gi), 0);
	cr_assert_eq(gi.limits.iops, 500);
	cr_assert_eq(gi.limits.bps_burst, 0);
	cr_assert_eq(mgr_group_set(dt.m, "g1", &l, CFG_LIMIT_KEYS, NULL), 0);
	cr_assert_eq(mgr_group_info(dt.m, "g1", &gi), 0);
	cr_assert_eq(gi.limits.bps_burst, 4096);

	/* refusals: nothing applied, the reason kept */
	l.iops = CFG_LIMIT_MAX + 1;
	l.bps = 1;
	cr_assert_eq(mgr_group_set(dt.m, "g1", &l, CFG_BIT(CFG_IOPS_LIMIT) |
				   CFG_BIT(CFG_BPS_LIMIT), "write to config "), -EINVAL);
	cr_assert_eq(mgr_group_info(dt.m, "g1", &gi), 0);
	cr_assert_eq(gi.limits.iops, 500);
	cr_assert_eq(gi.limits.bps, 0);
	cr_assert(strstr(gi.error, "write to config refused: iops_limit"), "%s", gi.error);
	cr_assert_eq(mgr_group_set(dt.m, "g1", &l, CFG_BIT(CFG_SIZE), NULL), -EINVAL);
	cr_assert(strstr(gi.error, "refused"), "%s", gi.error);
	cr_assert_eq(mgr_group_set(dt.m, "nope", &l, CFG_BIT(CFG_BPS_LIMIT), NULL), -ENOENT);
	/* an accepted change clears the error */
	cr_assert_eq(mgr_group_set(dt.m, "g1", &l, CFG_BIT(CFG_BPS_LIMIT), NULL), 0);
	cr_assert_eq(mgr_group_info(dt.m, "g1", &gi), 0);
	cr_assert_str_eq(gi.error, "");
	cr_assert_eq(gi.limits.bps, 1);

	cr_assert_eq(mgr_group_destroy(dt.m, "g1"), 0);
	cr_assert_eq(mgr_group_destroy(dt.m, "g1"), -ENOENT);
	cr_assert_eq(mgr_group_info(dt.m, "g1", &gi), -ENOENT);
	cr_assert_eq(mgr_group_count(dt.m), 1);
}

Test(registry, controller_group_must_exist)
{
	struct vdev_params p = params();

	cr_assert_eq(mgr_ctrl_create(dt.m, "a"), 0);
	p.limits.iops = 100;
	snprintf(p.group, sizeof(p.group), "nog");
	cr_assert_eq(dt_set("a", &p, CFG_BIT(CFG_IOPS_LIMIT) | CFG_BIT(CFG_GROUP)), -EINVAL);
	dt_info("a", ci);
	cr_assert(strstr(ci->error, "no throttle group nog (mkdir ctl/.groups/nog first)"),
		  "%s", ci->error);
	cr_assert_eq(ci->params.limits.iops, 0, "nothing half-applied");
	cr_assert_str_eq(ci->params.group, "");

	cr_assert_eq(mgr_group_create(dt.m, "nog"), 0);
	cr_assert_eq(dt_set("a", &p, CFG_BIT(CFG_IOPS_LIMIT) | CFG_BIT(CFG_GROUP)), 0);
	dt_info("a", ci);
	cr_assert_str_eq(ci->params.group, "nog");
	cr_assert_eq(ci->params.limits.iops, 100);
	cr_assert_str_eq(ci->error, "");

	/* a bad name through the typed API */
	snprintf(p.group, sizeof(p.group), ".x");
	cr_assert_eq(dt_set("a", &p, CFG_BIT(CFG_GROUP)), -EINVAL);
	dt_info("a", ci);
	cr_assert_str_eq(ci->params.group, "nog");
}

Test(registry, limits_on_a_live_controller)
{
	struct vdev_params p = params();

	cr_assert_eq(mgr_ctrl_create(dt.m, "a"), 0);
	cr_assert_eq(set_size("a", 1 << 20), 0);
	p.limits = (struct vdev_limits){ .iops = 2000, .bps = 8 << 20, .read_bps = 1,
		.write_bps = 2, .iops_burst = 3, .bps_burst = 4 };
	cr_assert_eq(dt_set("a", &p, CFG_LIMIT_KEYS), 0);
	dt_info("a", ci);
	cr_assert_eq(ci->state, CTRL_LISTENING);
	cr_assert_eq(memcmp(&ci->params.limits, &p.limits, sizeof(p.limits)), 0);
	/* 0 lifts a limit */
	p.limits.iops = 0;
	cr_assert_eq(dt_set("a", &p, CFG_BIT(CFG_IOPS_LIMIT)), 0);
	dt_info("a", ci);
	cr_assert_eq(ci->params.limits.iops, 0);
	cr_assert_eq(ci->params.limits.bps, 8 << 20);
	p.limits.bps = CFG_LIMIT_MAX + 1;
	cr_assert_eq(dt_set("a", &p, CFG_BIT(CFG_BPS_LIMIT)), -EINVAL);
	dt_info("a", ci);
	cr_assert_eq(ci->params.limits.bps, 8 << 20);
}

/* The daemon refuses nothing of its own under a front-end: the limits and
 * the group go to vdev_set_params. */
Test(registry, limits_and_group_change_while_connected)
{
	struct vdev_params p = params();
	int fd;

	cr_assert_eq(mgr_ctrl_create(dt.m, "a"), 0);
	cr_assert_eq(set_size("a", 1 << 20), 0);
	cr_assert_eq(mgr_group_create(dt.m, "g"), 0);
	dt_info("a", ci);
	fd = dt_connect(ci->socket);
	cr_assert(dt_wait_state("a", CTRL_CONNECTED, 5000));
	p.limits.iops = 2000;
	p.limits.bps = 8 << 20;
	snprintf(p.group, sizeof(p.group), "g");
	cr_assert_eq(dt_set("a", &p, CFG_BIT(CFG_IOPS_LIMIT) | CFG_BIT(CFG_BPS_LIMIT) |
			    CFG_BIT(CFG_GROUP)), 0, "%s", (dt_info("a", ci), ci->error));
	dt_info("a", ci);
	cr_assert_eq(ci->params.limits.iops, 2000);
	cr_assert_str_eq(ci->params.group, "g");
	cr_assert_eq(mgr_group_destroy(dt.m, "g"), -EBUSY);
	snprintf(p.group, sizeof(p.group), "%s", "");
	cr_assert_eq(dt_set("a", &p, CFG_BIT(CFG_GROUP)), 0);
	cr_assert_eq(mgr_group_destroy(dt.m, "g"), 0);
	close(fd);
}

Test(registry, rmdir_of_a_group_in_use_is_busy)
{
	struct vdev_params p = params();

	cr_assert_eq(mgr_group_create(dt.m, "g"), 0);
	cr_assert_eq(mgr_ctrl_create(dt.m, "a"), 0);
	cr_assert_eq(mgr_ctrl_create(dt.m, "b"), 0);
	snprintf(p.group, sizeof(p.group), "g");
	cr_assert_eq(dt_set("a", &p, CFG_BIT(CFG_GROUP)), 0);     /* unconfigured */
	p.size = 1 << 20;
	cr_assert_eq(dt_set("b", &p, CFG_BIT(CFG_GROUP) | CFG_BIT(CFG_SIZE)), 0);  /* live */
	cr_assert_eq(mgr_group_info(dt.m, "g", &gi), 0);
	cr_assert_eq(gi.users, 2);

	cr_assert_eq(mgr_group_destroy(dt.m, "g"), -EBUSY);
	cr_assert_eq(mgr_group_info(dt.m, "g", &gi), 0, "still there");
	cr_assert(strstr(gi.error, "rmdir refused: controllers a, b are in this group"),
		  "%s", gi.error);

	p.group[0] = '\0';
	cr_assert_eq(dt_set("a", &p, CFG_BIT(CFG_GROUP)), 0);
	cr_assert_eq(mgr_group_destroy(dt.m, "g"), -EBUSY);
	cr_assert_eq(mgr_group_info(dt.m, "g", &gi), 0);
	cr_assert(strstr(gi.error, "controller b is in this group"), "%s", gi.error);
	/* a removed controller names no group */
	cr_assert_eq(mgr_ctrl_destroy(dt.m, "b"), 0);
	cr_assert_eq(mgr_group_destroy(dt.m, "g"), 0);
}

Test(registry, groups_and_limits_survive_a_restart)
{
	struct vdev_limits l = { .iops = 300, .write_bps = 1 << 20 };
	struct vdev_params p = params();
	unsigned nctrl, nfailed;
	char err[256] = "";

	cr_assert_eq(mgr_group_create(dt.m, "tenant-a"), 0);
	cr_assert_eq(mgr_group_set(dt.m, "tenant-a", &l, CFG_LIMIT_KEYS, NULL), 0);
	cr_assert_eq(mgr_group_create(dt.m, "empty"), 0);
	cr_assert_eq(mgr_ctrl_create(dt.m, "a"), 0);
	p.size = 1 << 20;
	p.limits.bps = 8 << 20;
	p.limits.iops_burst = 16;
	snprintf(p.group, sizeof(p.group), "tenant-a");
	cr_assert_eq(dt_set("a", &p, CFG_BIT(CFG_SIZE) | CFG_LIMIT_KEYS | CFG_BIT(CFG_GROUP)),
		     0);

	cr_assert_eq(dt_restart(&nctrl, &nfailed, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(nctrl, 1);
	cr_assert_eq(nfailed, 0);
	cr_assert_eq(mgr_group_count(dt.m), 2);
	cr_assert_eq(mgr_group_info(dt.m, "tenant-a", &gi), 0);
	cr_assert_eq(memcmp(&gi.limits, &l, sizeof(l)), 0);
	cr_assert_eq(gi.users, 1);
	cr_assert_eq(mgr_group_info(dt.m, "empty", &gi), 0);
	dt_info("a", ci);
	cr_assert_eq(ci->state, CTRL_LISTENING, "%s", ci->error);
	cr_assert_str_eq(ci->params.group, "tenant-a");
	cr_assert_eq(ci->params.limits.bps, 8 << 20);
	cr_assert_eq(ci->params.limits.iops_burst, 16);
	cr_assert_eq(ci->params.limits.iops, 0);
}

Test(registry, restart_restores_groups_before_controllers)
{
	unsigned nctrl, nfailed;
	char err[256] = "";

	/* as an operator might have edited it: the group after its user */
	dt_write_file(dt.state, "vhostd-state 1\n"
		      "ctrl a 3 size=1048576 group=g iops_limit=100\n"
		      "ctrl b 4 size=1048576 group=missing\n"
		      "group g iops_limit=500 bps_burst=4096\n");
	cr_assert_eq(dt_restart(&nctrl, &nfailed, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(nctrl, 2);
	cr_assert_eq(nfailed, 1);
	dt_info("a", ci);
	cr_assert_eq(ci->state, CTRL_LISTENING, "%s", ci->error);
	cr_assert_eq(ci->minor, 3);
	cr_assert_str_eq(ci->params.group, "g");
	cr_assert_eq(ci->params.limits.iops, 100);
	cr_assert_eq(mgr_group_info(dt.m, "g", &gi), 0);
	cr_assert_eq(gi.limits.iops, 500);
	cr_assert_eq(gi.limits.bps_burst, 4096);
	dt_info("b", ci);
	cr_assert_eq(ci->state, CTRL_ERROR);
	cr_assert(strstr(ci->error, "no throttle group missing"), "%s", ci->error);

}
