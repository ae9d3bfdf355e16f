/* The engine: poll threads that own virtqueues.  The control thread hands a
 * queue to a thread with eng_attach() and takes it back with eng_detach();
 * both wait for the thread's acknowledgement, so on return the vq belongs to
 * exactly one side.  The data path takes no lock: commands arrive through a
 * mailbox the thread checks once per loop. */
#ifndef VHOSTD_ENGINE_H
#define VHOSTD_ENGINE_H

#include <stdint.h>

#include "params.h"
#include "vq.h"

struct engine;

int eng_create(const struct core_opts *opts, struct engine **out);
void eng_destroy(struct engine *eng);
unsigned eng_nthreads(const struct engine *eng);

/* Start serving vq on thread (hint % nthreads).  The vq's rings must be
 * mapped.  0 or -errno. */
int eng_attach(struct engine *eng, struct vq *vq, unsigned hint);
/* Stop serving vq; on return the engine no longer touches it and
 * vq->last_avail is the next avail index to process. */
int eng_detach(struct engine *eng, struct vq *vq);
/* Whether engine threads have io_uring (file backends need it). */
bool eng_has_uring(const struct engine *eng);

#endif
