/* The fixture of the core-driving test programs: see coretest.h. */
#include <criterion/criterion.h>

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <liburing.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "coretest.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

struct corefx fx;

/* ---- core and devices ------------------------------------------------------ */

void fx_begin(const char *dir_prefix)
{
	signal(SIGPIPE, SIG_IGN);
	memset(&fx, 0, sizeof(fx));
	if (!dir_prefix)
		return;
	snprintf(fx.dir, sizeof(fx.dir), "%s-XXXXXX", dir_prefix);
	cr_assert_not_null(mkdtemp(fx.dir), "mkdtemp %s: %s", fx.dir, strerror(errno));
}

void fx_core_up(const struct core_opts *o)
{
	int r = core_create(o, &fx.core);

	cr_assert_eq(r, 0, "core_create: %s", strerror(-r));
}

void fx_params(struct vdev_params *p, uint64_t size, unsigned queues, const char *serial)
{
	vdev_params_init(p);
	p->size = size;
	p->queues = (uint16_t)queues;
	if (serial)
		snprintf(p->serial, sizeof(p->serial), "%s", serial);
}

int fx_try_add(const char *name, const struct vdev_params *p, char *err, size_t errlen,
	       unsigned *idx)
{
	unsigned i = fx.ndev;
	int r;

	cr_assert_lt(i, FX_MAXDEV);
	snprintf(fx.name[i], sizeof(fx.name[i]), "%s", name);
	snprintf(fx.sock[i], sizeof(fx.sock[i]), "%s/%s.sock", fx.dir, name);
	r = vdev_create(fx.core, name, fx.sock[i], p, &fx.dev[i], err, errlen);
	if (r == 0) {
		fx.queues[i] = p->queues;
		fx.ndev++;
		if (idx)
			*idx = i;
	} else {
		fx.dev[i] = NULL;
	}
	return r;
}

unsigned fx_add(const char *name, const struct vdev_params *p)
{
	char err[VDEV_ERR_MAX] = "";
	unsigned i = 0;
	int r = fx_try_add(name, p, err, sizeof(err), &i);

	cr_assert_eq(r, 0, "vdev_create(%s, backing %s): %s: %s", name,
		     p->backing == BE_FILE ? p->path : be_kind_name(p->backing), strerror(-r), err);
	return i;
}

void fx_drop(unsigned i)
{
	int r = vdev_destroy(fx.dev[i], false);

	cr_assert_eq(r, 0, "vdev_destroy(%s): %s", fx.name[i], strerror(-r));
	fx.dev[i] = NULL;
}

void fx_stop(void)
{
	for (unsigned i = 0; i < FX_MAXFE; i++)
		if (fx.fe[i]) {
			ffe_close(fx.fe[i]);
			fx.fe[i] = NULL;
		}
	for (unsigned i = fx.ndev; i-- > 0;)
		if (fx.dev[i]) {
			vdev_destroy(fx.dev[i], true);
			fx.dev[i] = NULL;
		}
	if (fx.core)
		core_destroy(fx.core);
	fx.core = NULL;
}

void fx_rm_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;

	if (!d)
		return;
	while ((e = readdir(d))) {
		char p[400];

		if (e->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
		unlink(p);
	}
	closedir(d);
	rmdir(dir);
}

int fx_lsan_leaks(void)
{
#if defined(__SANITIZE_ADDRESS__)
	return __lsan_do_recoverable_leak_check();
#else
	return 0;
#endif
}

void fx_leak_check(void)
{
	cr_expect_eq(fx_lsan_leaks(), 0, "LeakSanitizer found leaks (see stderr)");
}

bool vdev_wait_state(struct vdev *d, enum vdev_state st, int ms)
{
	struct ffe_deadline dl;

	ffe_deadline_start(&dl, ms);
	while (vdev_get_state(d) != st) {
		if (!ffe_deadline_left(&dl))
			return false;
		usleep(2000);
	}
	return true;
}

bool fx_wait_state(unsigned dev, enum vdev_state st, int ms)
{
	return vdev_wait_state(fx.dev[dev], st, ms);
}

void need_uring(void)
{
	static int ok = -1;

	if (ok < 0) {
		struct io_uring r;

		ok = io_uring_queue_init(4, &r, 0) == 0;
		if (ok)
			io_uring_queue_exit(&r);
	}
	if (!ok)
		cr_skip_test("io_uring is not available here (io_uring_setup failed or "
			     "kernel.io_uring_disabled): the file backend cannot run");
}

/* ---- front-ends ---------------------------------------------------------- */

struct ffe *fx_open(unsigned dev, const struct ffe_opts *o)
{
	struct ffe *fe = ffe_open(fx.sock[dev], o);

	cr_assert_not_null(fe, "connect to %s: %s", fx.sock[dev], strerror(errno));
	return fe;
}

struct ffe *fx_ready(unsigned dev, const struct ffe_opts *o, uint64_t feat, unsigned nq,
		     unsigned qsize)
{
	struct ffe *fe = fx_open(dev, o);
	int r = ffe_setup(fe, feat, nq, qsize);

	cr_assert_eq(r, 0, "set-up of a well-behaved front-end on %s failed: %s (%s)",
		     fx.name[dev], strerror(-r), fe->err);
	return fe;
}

struct ffe *fx_negotiated(unsigned dev)
{
	struct ffe *fe = fx_open(dev, NULL);
	int r = ffe_negotiate(fe, 0);

	cr_assert_eq(r, 0, "negotiation with %s failed: %s (%s)", fx.name[dev],
		     strerror(-r), fe->err);
	return fe;
}

struct ffe *fx_keep(struct ffe *fe)
{
	unsigned slot;

	for (slot = 0; slot < FX_MAXFE && fx.fe[slot]; slot++)
		;
	cr_assert_lt(slot, FX_MAXFE, "more than %u front-ends kept", FX_MAXFE);
	fx.fe[slot] = fe;
	return fe;
}

void fx_close(struct ffe *fe)
{
	for (unsigned i = 0; i < FX_MAXFE; i++)
		if (fx.fe[i] == fe)
			fx.fe[i] = NULL;
	ffe_close(fe);
}

void fx_close_wait(unsigned dev, struct ffe *fe, enum vdev_state want)
{
	fx_close(fe);
	cr_assert(fx_wait_state(dev, want, 3000), "%s is '%s' 3 s after its front-end "
		  "closed the socket, expected '%s'", fx.name[dev],
		  vdev_state_name(vdev_get_state(fx.dev[dev])), vdev_state_name(want));
}

/* ---- data ------------------------------------------------------------------ */

const char *fx_layout_name(const struct ffe_layout *l)
{
	static char buf[64];

	if (!l)
		return "natural";
	snprintf(buf, sizeof(buf), "%s seg=%u%s",
		 l->kind == FFE_L_NATURAL ? "natural" : l->kind == FFE_L_MERGED ? "merged" : "chopped",
		 l->seg, l->indirect ? " indirect" : "");
	return buf;
}

void fx_write_ok(struct ffe_vq *vq, uint64_t sector, const void *buf, size_t len,
		 const struct ffe_layout *lay)
{
	int s = ffe_blk_write(vq, sector, buf, len, lay);

	cr_assert_eq(s, FFE_BLK_S_OK, "q%u OUT sector %" PRIu64 " len %zu (%s): status %d %s",
		     vq->index, sector, len, fx_layout_name(lay), s, s < 0 ? vq->fe->err : "");
}

void fx_read_ok(struct ffe_vq *vq, uint64_t sector, void *buf, size_t len,
		const struct ffe_layout *lay)
{
	int s = ffe_blk_read(vq, sector, buf, len, lay);

	cr_assert_eq(s, FFE_BLK_S_OK, "q%u IN sector %" PRIu64 " len %zu (%s): status %d %s",
		     vq->index, sector, len, fx_layout_name(lay), s, s < 0 ? vq->fe->err : "");
}

static size_t first_diff(const uint8_t *buf, size_t len, uint64_t seed)
{
	uint8_t *ref = malloc(len);
	size_t i;

	ffe_pattern(ref, len, seed);
	for (i = 0; i < len && buf[i] == ref[i]; i++)
		;
	free(ref);
	return i;
}

void fx_check_pattern(const uint8_t *buf, size_t len, uint64_t seed, const char *what)
{
	if (!ffe_pattern_ok(buf, len, seed)) {
		size_t d = first_diff(buf, len, seed);

		cr_assert_fail("%s: data differs from the pattern written at byte %zu of %zu "
			       "(got %02x %02x %02x %02x)", what, d, len, buf[d],
			       d + 1 < len ? buf[d + 1] : 0, d + 2 < len ? buf[d + 2] : 0,
			       d + 3 < len ? buf[d + 3] : 0);
	}
}

void fx_check_zero(const uint8_t *buf, size_t len, const char *what)
{
	for (size_t i = 0; i < len; i++)
		if (buf[i])
			cr_assert_fail("%s: byte %zu is %#x, expected 0", what, i, buf[i]);
}

void fx_write_pattern(struct ffe_vq *vq, uint64_t sector, size_t len, uint64_t seed,
		      const struct ffe_layout *lay)
{
	uint8_t *w = malloc(len);

	ffe_pattern(w, len, seed);
	fx_write_ok(vq, sector, w, len, lay);
	free(w);
}

void fx_read_check(struct ffe_vq *vq, uint64_t sector, size_t len, uint64_t seed,
		   const struct ffe_layout *lay, const char *what)
{
	uint8_t *r = malloc(len);
	char w[300];

	memset(r, 0x5c, len);
	fx_read_ok(vq, sector, r, len, lay);
	snprintf(w, sizeof(w), "%s (front-end IN q%u sector %" PRIu64 " len %zu, %s)", what,
		 vq->index, sector, len, fx_layout_name(lay));
	if (seed)
		fx_check_pattern(r, len, seed, w);
	else
		fx_check_zero(r, len, w);
	free(r);
}

void fx_rw_verify(struct ffe_vq *vq, uint64_t sector, size_t len, uint64_t seed,
		  const struct ffe_layout *lay)
{
	uint8_t *w = malloc(len), *r = malloc(len);
	char what[160];

	ffe_pattern(w, len, seed);
	fx_write_ok(vq, sector, w, len, lay);
	memset(r, 0, len);
	fx_read_ok(vq, sector, r, len, lay);
	snprintf(what, sizeof(what), "q%u sector %" PRIu64 " len %zu (%s)", vq->index, sector,
		 len, fx_layout_name(lay));
	fx_check_pattern(r, len, seed, what);
	free(w);
	free(r);
}
