/* Private to the vhost-user layer (src/vhost): what its files share.
 * vu_dev.c: features, config, status, the request table and dispatcher;
 * vu_ring.c: ring start/stop (also without waiting) and the vring
 * handlers; vu_mem.c: the memory table (whole or region by region) and
 * the inflight region.  Control thread. */
#ifndef VHOSTD_VU_INT_H
#define VHOSTD_VU_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "vu.h"

#define BIT(n) (1ULL << (n))

/* Handler results besides -errno. */
#define VU_OK     0     /* done; REPLY_ACK (if asked) says success */
#define VU_REPLY  1     /* m now holds the reply payload */

static inline bool vu_has_protocol(const struct vu_conn *c, unsigned bit)
{
	/* Protocol features are in force from SET_PROTOCOL_FEATURES on, which
	 * front-ends send before SET_FEATURES (QEMU does). */
	return c->protocol_features & BIT(bit);
}

static inline const char *vu_name(const struct vu_conn *c)
{
	return c->blk->name;
}

/* Whether c's requests may touch the device's queues: it owns them (see
 * vu_claim_rings). */
static inline bool vu_owns_rings(const struct vu_conn *c)
{
	return c->blk->fe_owner == c;
}

/* vu_ring.c */
int vu_claim_rings(struct vu_conn *c);
void vu_hold_vring_fd(struct vu_conn *c, struct vu_msg *m);
void vu_drop_held_fds(struct vu_conn *c);
bool vu_ring_can_run(const struct vu_conn *c, const struct vq *vq);
int vu_ring_start(struct vu_conn *c, struct vq *vq);
void vu_ring_stop(struct vu_conn *c, struct vq *vq);
uint64_t vu_attached_mask(const struct vu_conn *c);
void vu_detach_start(struct vu_conn *c, uint64_t mask);
bool vu_detaches_done(struct vu_conn *c);
int vu_with_rings_stopped(struct vu_conn *c, int (*fn)(struct vu_conn *, void *), void *arg);
void vu_reset_device(struct vu_conn *c);
int h_set_vring_num(struct vu_conn *c, struct vu_msg *m);
int h_set_vring_addr(struct vu_conn *c, struct vu_msg *m);
int h_set_vring_base(struct vu_conn *c, struct vu_msg *m);
int h_get_vring_base(struct vu_conn *c, struct vu_msg *m);
int h_set_vring_kick(struct vu_conn *c, struct vu_msg *m);
int h_set_vring_call(struct vu_conn *c, struct vu_msg *m);
int h_set_vring_err(struct vu_conn *c, struct vu_msg *m);
int h_set_vring_enable(struct vu_conn *c, struct vu_msg *m);

/* vu_mem.c */
int vu_swap_mem(struct vu_conn *c);
int h_set_mem_table(struct vu_conn *c, struct vu_msg *m);
int h_get_max_mem_slots(struct vu_conn *c, struct vu_msg *m);
int h_add_mem_reg(struct vu_conn *c, struct vu_msg *m);
int h_rem_mem_reg(struct vu_conn *c, struct vu_msg *m);
void vu_inflight_unmap(struct vu_conn *c);
int vu_swap_inflight(struct vu_conn *c);
int h_get_inflight_fd(struct vu_conn *c, struct vu_msg *m);
int h_set_inflight_fd(struct vu_conn *c, struct vu_msg *m);

/* vu_log.c */
int h_set_log_base(struct vu_conn *c, struct vu_msg *m);
int h_set_log_fd(struct vu_conn *c, struct vu_msg *m);
int vu_swap_log(struct vu_conn *c);
const struct vq_log *vu_log_for_rings(const struct vu_conn *c);
void vu_log_free(struct vu_dirty_log *l);
void vu_log_teardown(struct vu_conn *c);

#endif
