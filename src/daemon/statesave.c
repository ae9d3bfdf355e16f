/* statesave: the manager's saves of the state file (state.c writes it),
 * serialised and coalesced. */
#include "mgr_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "state.h"

/* Make the state file cover every change accepted so far.  Synchronous: when
 * it returns 0 the change is durable. */
int mgr_save(struct mgr *m, char *err, size_t errlen)
{
	struct state_ctrl *snap = NULL;
	struct state_group *gsnap = NULL;
	uint64_t want, gen;
	size_t n = 0, ng = 0;
	int r;

	pthread_mutex_lock(&m->lock);
	want = m->gen;
	pthread_mutex_unlock(&m->lock);

	pthread_mutex_lock(&m->save_lock);
	if (m->saved_gen >= want) {
		r = m->save_err;        /* a newer save covered us */
		if (r < 0)
			snprintf(err, errlen, "the state file could not be written");
		goto out;
	}
	pthread_mutex_lock(&m->lock);
	snap = calloc(m->count + 1, sizeof(*snap));
	if (snap) {
		for (struct ctrl *c = m->head; c; c = c->next, n++) {
			memcpy(snap[n].name, c->name, sizeof(c->name));
			snap[n].minor = c->minor;
			snap[n].have_size = c->have_size;
			snap[n].params = c->params;
		}
	}
	gsnap = calloc(m->ngroups + 1, sizeof(*gsnap));
	if (gsnap) {
		for (struct mgr_group *g = m->groups; g; g = g->next, ng++) {
			memcpy(gsnap[ng].name, g->name, sizeof(g->name));
			gsnap[ng].limits = g->limits;
		}
	}
	gen = m->gen;
	pthread_mutex_unlock(&m->lock);
	if (!snap || !gsnap) {
		r = -ENOMEM;
		snprintf(err, errlen, "out of memory writing the state file");
		goto out;
	}
	r = state_save(m->st.state_path, m->st.real, snap, n, gsnap, ng, err, errlen);
	m->save_err = r;
	m->saved_gen = gen;
	if (r < 0)
		vlog(LOG_ERR, "state file not written: %s", err);
out:
	pthread_mutex_unlock(&m->save_lock);
	free(snap);
	free(gsnap);
	return r;
}
