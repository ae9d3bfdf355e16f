/* SIGBUS recovery for guest memory; see fault.h.  Any thread. */
#include "fault.h"

#include <pthread.h>
#include <signal.h>
#include <string.h>

__thread struct fault_scope *fault_top;
__thread uintptr_t fault_addr;

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
	struct fault_scope *s = fault_top;

	(void)uc;
	if (s) {
		fault_addr = (uintptr_t)si->si_addr;
		fault_top = s->prev;
		siglongjmp(s->jb, 1);
	}
	/* Not in guest memory work: a bug of ours; die as without us. */
	signal(sig, SIG_DFL);
}

static void install(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_sigbus;
	sa.sa_flags = SA_SIGINFO | SA_NODEFER;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, NULL);
}

void fault_init(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	pthread_once(&once, install);
}
