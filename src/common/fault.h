/* Surviving guest memory that vanishes under us.  Guest memory is a shared
 * mapping of the front-end's file; if the front-end truncates that file,
 * touching the lost pages raises SIGBUS.  Code that touches guest memory
 * runs inside a fault scope: the SIGBUS handler jumps back to the scope,
 * which then retires whatever it was serving instead of the process dying.
 * Scopes nest per thread; outside any scope SIGBUS kills as it always did. */
#ifndef VHOSTD_FAULT_H
#define VHOSTD_FAULT_H

#include <setjmp.h>
#include <stdint.h>

struct fault_scope {
	sigjmp_buf jb;
	struct fault_scope *prev;
};

extern __thread struct fault_scope *fault_top;
extern __thread uintptr_t fault_addr;   /* address of the last caught fault */

/* Install the SIGBUS handler (idempotent, thread-safe). */
void fault_init(void);

/* if (FAULT_TRY(&s)) { guest memory work } else { it faulted }  then
 * fault_end(&s) on both paths.  Does not save the signal mask: the handler
 * runs with SA_NODEFER, so nothing stays blocked after the jump. */
#define FAULT_TRY(s) ((s)->prev = fault_top, fault_top = (s), sigsetjmp((s)->jb, 0) == 0)

static inline void fault_end(struct fault_scope *s)
{
	fault_top = s->prev;
}

#endif
