/* Private to the ring layer (engine/vq*.c): what its files share.  Engine
 * thread, like the functions that call these. */
#ifndef VHOSTD_VQ_INT_H
#define VHOSTD_VQ_INT_H

#include "vq.h"

/* Empty c for the chain whose head is head. */
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

#endif
