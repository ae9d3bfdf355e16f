/* The fixture of the criterion programs that drive a live core (vdev.h)
 * through fakefe: test_vu_*, test_backend, test_hung (and the pieces
 * test_inflight_crash shares).
 *
 * One core per test, its devices added through the core API, a temporary
 * directory for their sockets, front-ends the teardown closes, and a
 * teardown that leaves nothing behind and asks LeakSanitizer (ASan builds)
 * whether the core freed everything.  Plus the pattern write/verify helpers
 * every data test uses.  All of it asserts through criterion: call it from
 * a test or its .init/.fini. */
#ifndef VHOSTD_TESTS_CORETEST_H
#define VHOSTD_TESTS_CORETEST_H

#include <criterion/criterion.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fakefe.h"
#include "vdev.h"

#define FX_MAXDEV       8
#define FX_MAXFE        8

/* The fixture of the running test (each test is its own process). */
struct corefx {
	struct core *core;
	struct vdev *dev[FX_MAXDEV];    /* NULL once dropped */
	char name[FX_MAXDEV][32];
	char sock[FX_MAXDEV][160];      /* DIR/NAME.sock */
	unsigned queues[FX_MAXDEV];
	unsigned ndev;
	struct ffe *fe[FX_MAXFE];       /* front-ends closed by fx_stop */
	char dir[128];                  /* the test's directory ("" if none) */
};

extern struct corefx fx;

/* ---- core and devices ------------------------------------------------------ */

/* Start a test: SIGPIPE ignored (as vhostd's main does: a front-end that
 * vanished must not kill us), fx cleared, and with dir_prefix a fresh
 * directory dir_prefix-XXXXXX in fx.dir. */
void fx_begin(const char *dir_prefix);
/* core_create into fx.core. */
void fx_core_up(const struct core_opts *o);
/* vdev_params with the defaults and size, queues, serial. */
void fx_params(struct vdev_params *p, uint64_t size, unsigned queues, const char *serial);
/* vdev_create(NAME, fx.dir/NAME.sock); 0 and *idx, or -errno and err. */
int fx_try_add(const char *name, const struct vdev_params *p, char *err, size_t errlen,
	       unsigned *idx);
/* The same, asserting success; returns the device's index. */
unsigned fx_add(const char *name, const struct vdev_params *p);
/* vdev_destroy (not forced) of device i, asserting success. */
void fx_drop(unsigned i);
/* Close the kept front-ends, destroy the devices (forced) and the core. */
void fx_stop(void);
/* Remove dir's entries (not recursively) and dir itself. */
void fx_rm_dir(const char *dir);
/* LeakSanitizer's verdict now (ASan builds; 0 elsewhere): criterion's
 * workers _exit, so LeakSanitizer would not look by itself. */
int fx_lsan_leaks(void);
/* Fail the test (expect) if LeakSanitizer finds leaks. */
void fx_leak_check(void);

/* Wait until d is in state st, at most ms (a stall of the machine given
 * back, see struct ffe_deadline). */
bool vdev_wait_state(struct vdev *d, enum vdev_state st, int ms);
bool fx_wait_state(unsigned dev, enum vdev_state st, int ms);
/* Skip the test where io_uring cannot be set up (the file backend needs it). */
void need_uring(void);

/* ---- front-ends ---------------------------------------------------------- */

/* Connect to device dev (asserts). */
struct ffe *fx_open(unsigned dev, const struct ffe_opts *o);
/* Connect, negotiate feat (0: the default), memory table, start nq queues
 * of qsize (asserts). */
struct ffe *fx_ready(unsigned dev, const struct ffe_opts *o, uint64_t feat, unsigned nq,
		     unsigned qsize);
/* Connect and negotiate only (asserts). */
struct ffe *fx_negotiated(unsigned dev);
/* Keep fe in fx.fe (fx_stop closes it); fx_close closes and forgets it. */
struct ffe *fx_keep(struct ffe *fe);
void fx_close(struct ffe *fe);
/* fx_close, then assert device dev reaches state want within 3 s. */
void fx_close_wait(unsigned dev, struct ffe *fe, enum vdev_state want);

/* ---- data ------------------------------------------------------------------ */

/* "natural", "chopped seg=3 indirect", ... (a static buffer). */
const char *fx_layout_name(const struct ffe_layout *l);
/* OUT / IN through vq, asserting status OK. */
void fx_write_ok(struct ffe_vq *vq, uint64_t sector, const void *buf, size_t len,
		 const struct ffe_layout *lay);
void fx_read_ok(struct ffe_vq *vq, uint64_t sector, void *buf, size_t len,
		const struct ffe_layout *lay);
/* Assert buf holds ffe_pattern(seed) / zeros; what names it in the message,
 * which gives the first differing byte. */
void fx_check_pattern(const uint8_t *buf, size_t len, uint64_t seed, const char *what);
void fx_check_zero(const uint8_t *buf, size_t len, const char *what);
/* Write ffe_pattern(seed) at sector. */
void fx_write_pattern(struct ffe_vq *vq, uint64_t sector, size_t len, uint64_t seed,
		      const struct ffe_layout *lay);
/* Read at sector and check it holds ffe_pattern(seed), or zeros (seed 0). */
void fx_read_check(struct ffe_vq *vq, uint64_t sector, size_t len, uint64_t seed,
		   const struct ffe_layout *lay, const char *what);
/* Write ffe_pattern(seed), read it back, compare. */
void fx_rw_verify(struct ffe_vq *vq, uint64_t sector, size_t len, uint64_t seed,
		  const struct ffe_layout *lay);

#endif
