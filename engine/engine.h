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
/* The same, for a caller that must not wait (the control thread serves
 * every device): the detach is posted and this returns at once (1; 0 if
 * vq was not attached, -errno).  Once the engine let go of vq it writes to
 * notify_fd (an eventfd); eng_detach_done() then completes it.  Until then
 * vq still belongs to the engine. */
int eng_detach_start(struct engine *eng, struct vq *vq, int notify_fd);
/* Whether vq's asynchronous detach (if any) is over; completes it.  While
 * it is not, warns every 10 s that it still waits. */
bool eng_detach_done(struct vq *vq);
/* Wait for vq's asynchronous detach to be over (shutdown: nothing else
 * to do meanwhile), and complete it. */
int eng_detach_wait(struct vq *vq);
/* Whether engine threads have io_uring (file backends need it). */
bool eng_has_uring(const struct engine *eng);

#endif
