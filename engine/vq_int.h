/* Private to the ring layer (engine/vq*.c): what the split and the packed
 * ring share.  Engine thread, like the functions that call these. */
#ifndef VHOSTD_VQ_INT_H
#define VHOSTD_VQ_INT_H

#include "vq.h"

/* Empty c for the chain whose head (split) or buffer id (packed) is head. */
static inline void vq_chain_reset(struct vq_chain *c, uint16_t head)
{
	c->head = head;
	c->fault = false;
	c->nout = c->nin = 0;
	c->out_len = c->in_len = 0;
	c->last_w_addr = 0;
	c->last_w_len = 0;
}

/* Add one buffer (guest address, length; writable or not) to the chain:
 * translated into iovecs, or c->fault set if it breaks a rule about
 * buffers (address, layout, too many iovecs). */
void vq_chain_add(struct vq *vq, struct vq_chain *c, uint64_t addr, uint32_t len, bool write);

/* The packed ring (vq_packed.c): vq.c's functions of the same name call
 * these for a vq with `packed` set. */
int vq_packed_prepare(struct vq *vq, char *err, size_t errlen);
void vq_packed_release(struct vq *vq);
void vq_packed_engine_start(struct vq *vq);
unsigned vq_packed_recover(struct vq *vq);
int vq_packed_avail_heads(struct vq *vq, uint16_t *heads, unsigned max, char *why, size_t whylen);
int vq_packed_walk(struct vq *vq, uint16_t id, struct vq_chain *c);
void vq_packed_push_used(struct vq *vq, uint16_t id, uint32_t len);
void vq_packed_flush_used(struct vq *vq);
bool vq_packed_set_notify(struct vq *vq, bool on);

#endif
