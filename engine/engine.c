/* Engine poll threads, their mailbox, and the worker pool for backend work
 * that has no asynchronous form; see engine.h.
 * Each thread loops: commands, backend completions, new requests from its
 * vqs, their submissions to the backend context (in chunks of a few, the
 * rest at the end of the pass).  When nothing
 * happened for idle_us it asks the guests for kicks and sleeps in epoll on
 * their kick eventfds, its backend context's eventfd and its mailbox
 * (adaptive mode). */
#include "engine.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "blk.h"
#include "fault.h"
#include "log.h"

#define ENG_MAX_THREADS 256
#define ENG_DEFAULT_IDLE_US 200
#define ENG_DEFAULT_URING 256
#define ENG_WORKERS 2
#define ENG_SLOW_CMD_S 10       /* warn about a control command this late */

#define container_of(ptr, type, member) \
	((type *)((char *)(ptr) - offsetof(type, member)))

enum eng_cmd_op { ENG_ATTACH, ENG_DETACH, ENG_STOP };

struct eng_cmd {
	enum eng_cmd_op op;
	struct vq *vq;
	int result;
	bool done;
	struct eng_cmd *next;
	/* asynchronous detach (eng_detach_start): heap-allocated, announced
	 * on notify_fd, completed by the control thread */
	struct eng_thread *t;
	int notify_fd;                  /* -1: a synchronous waiter */
	uint64_t started_ns;
	unsigned warned;                /* slow warnings given */
};

/* Markers for epoll data besides vq pointers. */
static char ev_wake_marker, ev_ring_marker;

struct eng_thread {
	struct engine *eng;
	unsigned id;
	int cpu;
	pthread_t tid;
	int epfd;
	int wake_fd;                    /* mailbox doorbell */
	struct be_ctx ctx;              /* its backend context (io_uring) */

	pthread_mutex_t lock;           /* mailbox and done list only */
	pthread_cond_t cond;
	struct eng_cmd *cmds;
	struct be_job *done_jobs;       /* offloaded work that finished */
	atomic_bool pending;
	atomic_bool sleeping;

	struct vq *cur_vq;              /* whose guest memory we touch now */
	/* loop state kept in memory: the loop body may be left by a fault jump */
	uint64_t idle_since;
	unsigned idle_passes;           /* empty passes since the last work */
	bool io_waiting;                /* this idle period waits on backend I/O */
	bool io_spinning;               /* ... and spins for it (a spin on trial) */
	unsigned io_spin_hits;          /* share of such spins that ended in a
					 * completion, moving, of ENG_IO_HIT_ONE */
	unsigned io_waits;              /* waits on backend I/O, for the probes */
	bool stop;
	struct vq **vqs;                /* owned by the thread */
	unsigned rr;                    /* the queue a pass starts with */
	unsigned nvq, cap;
	struct eng_cmd *detaching;      /* detach commands waiting for a drain */
} __attribute__((aligned(64)));

struct engine {
	unsigned nthreads;              /* running */
	unsigned nalloc;                /* initialised */
	enum core_poll_mode mode;
	uint64_t idle_ns;
	unsigned uring_entries;
	struct eng_thread *threads;

	pthread_t workers[ENG_WORKERS];
	unsigned nworkers;
	pthread_mutex_t wlock;
	pthread_cond_t wcond;
	struct be_job *jobs, **jobs_tail;
	bool wstop;
};

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static void drain_fd(int fd)
{
	uint64_t v;
	(void)!read(fd, &v, sizeof(v));
}

/* Wake t if it sleeps.  The caller has set t->pending first: the thread sets
 * `sleeping` before it reads `pending`, so one side always sees the other. */
static void wake(struct eng_thread *t)
{
	uint64_t one = 1;
	if (atomic_load(&t->sleeping))
		(void)!write(t->wake_fd, &one, sizeof(one));
}

/* --- worker pool (backend work without an io_uring form) ------------------- */

static void offload(struct be_ctx *ctx, struct be_job *job)
{
	struct engine *eng = container_of(ctx, struct eng_thread, ctx)->eng;

	job->ctx = ctx;
	job->next = NULL;
	pthread_mutex_lock(&eng->wlock);
	*eng->jobs_tail = job;
	eng->jobs_tail = &job->next;
	pthread_cond_signal(&eng->wcond);
	pthread_mutex_unlock(&eng->wlock);
}

/* Any thread: job (with its res set) is finished; its completion is
 * handled on the engine thread of ctx, which this wakes. */
static void post_done(struct be_ctx *ctx, struct be_job *job)
{
	struct eng_thread *t = container_of(ctx, struct eng_thread, ctx);

	pthread_mutex_lock(&t->lock);
	job->next = t->done_jobs;
	t->done_jobs = job;
	atomic_store(&t->pending, true);
	pthread_mutex_unlock(&t->lock);
	wake(t);
}

static void *worker_main(void *arg)
{
	struct engine *eng = arg;

	pthread_mutex_lock(&eng->wlock);
	for (;;) {
		struct be_job *job;

		while (!eng->jobs && !eng->wstop)
			pthread_cond_wait(&eng->wcond, &eng->wlock);
		if (!eng->jobs)
			break;
		job = eng->jobs;
		eng->jobs = job->next;
		if (!eng->jobs)
			eng->jobs_tail = &eng->jobs;
		pthread_mutex_unlock(&eng->wlock);

		job->res = job->fn(job);
		job->ctx->post(job->ctx, job);

		pthread_mutex_lock(&eng->wlock);
	}
	pthread_mutex_unlock(&eng->wlock);
	return NULL;
}

/* --- commands ------------------------------------------------------------- */

static void cmd_done(struct eng_thread *t, struct eng_cmd *c)
{
	pthread_mutex_lock(&t->lock);
	c->done = true;
	/* The doorbell rings under the lock: the waiter reads `done` under it
	 * too, so it sees done when the doorbell rang, and cannot free c and
	 * close the fd (whose number a new socket may take at once) before
	 * the write is over. */
	if (c->notify_fd >= 0) {
		uint64_t one = 1;
		(void)!write(c->notify_fd, &one, sizeof(one));
	}
	pthread_cond_broadcast(&t->cond);
	pthread_mutex_unlock(&t->lock);
}

static void vq_started(struct eng_thread *t, struct vq *vq)
{
	t->cur_vq = vq;
	vq->dead = false;
	vq->thread = t;
	vq->draining = false;
	vq->inflight = 0;
	vq_engine_start(vq);
	vq->notify_on = true;
	vq_set_notify(vq, false);
	if (vq->kick_fd >= 0) {
		struct epoll_event ev = { .events = EPOLLIN, .data.ptr = vq };
		if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, vq->kick_fd, &ev) < 0)
			vlog(LOG_ERR, "[%s q%u] epoll_ctl: %s", vq->devname,
			     vq->index, strerror(errno));
	}
	/* A kick may have come before we listened: the loop looks at the
	 * ring right away anyway. */
}

static void eng_fault(struct eng_thread *t);

static void start_vq(struct eng_thread *t, struct vq *vq)
{
	struct fault_scope fs;

	if (FAULT_TRY(&fs))
		vq_started(t, vq);
	else
		eng_fault(t);
	fault_end(&fs);
}

/* Remove a drained vq from the thread and acknowledge its detach. */
static void finish_detach(struct eng_thread *t, struct eng_cmd *c)
{
	struct vq *vq = c->vq;

	for (unsigned i = 0; i < t->nvq; i++) {
		if (t->vqs[i] != vq)
			continue;
		t->vqs[i] = t->vqs[--t->nvq];
		break;
	}
	struct fault_scope fs;

	if (vq->kick_fd >= 0)
		epoll_ctl(t->epfd, EPOLL_CTL_DEL, vq->kick_fd, NULL);
	/* Its own scope: a fault here must not skip the acknowledgement. */
	if (FAULT_TRY(&fs))
		vq_flush_used(vq);
	fault_end(&fs);
	vq->thread = NULL;
	vq->draining = false;
	cmd_done(t, c);
}

static void check_detaching(struct eng_thread *t)
{
	struct eng_cmd **pp = &t->detaching;

	while (*pp) {
		struct eng_cmd *c = *pp;
		if (c->vq->inflight == 0) {
			*pp = c->next;
			finish_detach(t, c);
		} else {
			pp = &c->next;
		}
	}
}

/* Mailbox work gets its own fault scope each: a fault must not drop the
 * rest of the list (a lost command would never be acknowledged). */
static void complete_job(struct eng_thread *t, struct be_job *job)
{
	struct fault_scope fs;

	t->ctx.inflight--;
	t->cur_vq = vblk_cookie_vq(job->cookie);
	if (FAULT_TRY(&fs))
		vblk_complete(&t->ctx, job->cookie, job->res);
	else
		eng_fault(t);
	fault_end(&fs);
}

/* Run the mailbox: finished offloaded jobs, then commands.  Returns how
 * many requests completed (work to publish). */
static unsigned run_cmds(struct eng_thread *t, bool *stop)
{
	struct eng_cmd *c, *next;
	struct be_job *jobs, *jnext;
	unsigned done = 0;

	pthread_mutex_lock(&t->lock);
	c = t->cmds;
	t->cmds = NULL;
	jobs = t->done_jobs;
	t->done_jobs = NULL;
	atomic_store(&t->pending, false);
	pthread_mutex_unlock(&t->lock);

	for (; jobs; jobs = jnext) {
		jnext = jobs->next;
		complete_job(t, jobs);
		done++;
	}

	/* The list is LIFO; order between different vqs does not matter and
	 * a caller waits for each command before sending the next. */
	for (; c; c = next) {
		next = c->next;
		c->result = 0;
		switch (c->op) {
		case ENG_ATTACH:
			if (t->nvq == t->cap) {
				unsigned cap = t->cap ? t->cap * 2 : 16;
				struct vq **n = realloc(t->vqs, cap * sizeof(*n));
				if (!n) {
					c->result = -ENOMEM;
					break;
				}
				t->vqs = n;
				t->cap = cap;
			}
			t->vqs[t->nvq++] = c->vq;
			start_vq(t, c->vq);
			break;
		case ENG_DETACH:
			/* Requests in flight finish first: their buffers are
			 * guest memory the control thread may unmap next. */
			c->vq->draining = true;
			c->next = t->detaching;
			t->detaching = c;
			continue;
		case ENG_STOP:
			*stop = true;
			break;
		}
		cmd_done(t, c);
	}
	return done;
}

/* --- the loop --------------------------------------------------------------- */

/* A backend completion: the request it belongs to may finish. */
static void complete_io(void *arg, void *cookie, int res)
{
	struct eng_thread *t = arg;

	t->cur_vq = vblk_cookie_vq(cookie);
	vblk_complete(&t->ctx, cookie, res);
}

/* Arm notifications on every vq and sleep unless work is already there. */
static void eng_sleep(struct eng_thread *t)
{
	struct epoll_event evs[64];
	uint64_t until = 0;
	bool work = false;
	int n, timeout = -1;

	for (unsigned i = 0; i < t->nvq; i++) {
		struct vq *vq = t->vqs[i];
		if (atomic_load_explicit(&vq->broken, memory_order_relaxed) || vq->draining)
			continue;
		if (vq->throttled_until) {
			/* held by a limit: no kick needed, the clock wakes us */
			if (!until || vq->throttled_until < until)
				until = vq->throttled_until;
			continue;
		}
		if (vq->kick_nofd)
			work = true;    /* a polling driver never kicks */
		t->cur_vq = vq;
		if (vq_set_notify(vq, true))
			work = true;
	}
	be_ctx_arm(&t->ctx, true);
	if (be_ctx_ready(&t->ctx))
		work = true;
	if (until) {
		uint64_t now = now_ns();
		timeout = until > now ? (int)((until - now + 999999) / 1000000) : 0;
		if (timeout == 0)
			work = true;
	}
	atomic_store(&t->sleeping, true);
	if (!work && !atomic_load(&t->pending)) {
		n = epoll_wait(t->epfd, evs, 64, timeout);
		for (int i = 0; i < n; i++) {
			void *p = evs[i].data.ptr;
			if (p == &ev_wake_marker)
				drain_fd(t->wake_fd);
			else if (p == &ev_ring_marker)
				drain_fd(t->ctx.ring_fd);
			else
				drain_fd(((struct vq *)p)->kick_fd);
		}
	}
	atomic_store(&t->sleeping, false);
	be_ctx_arm(&t->ctx, false);
	if (t->eng->mode != CORE_POLL_INTERRUPT)
		for (unsigned i = 0; i < t->nvq; i++) {
			t->cur_vq = t->vqs[i];
			vq_set_notify(t->vqs[i], false);
		}
}

/* SIGBUS while serving t->cur_vq: its guest memory (or inflight region)
 * was truncated by the front-end.  Stop touching it and have the control
 * thread drop the connection; everything else goes on. */
static void eng_fault(struct eng_thread *t)
{
	struct vq *vq = t->cur_vq;

	if (!vq) {
		vlog(LOG_CRIT, "[engine %u] SIGBUS at %#lx outside any queue", t->id,
		     (unsigned long)fault_addr);
		abort();
	}
	vq->dead = true;
	vlog(LOG_ERR, "[%s q%u] guest memory at %#lx vanished (SIGBUS): the front-end "
	     "truncated it", vq->devname, vq->index, (unsigned long)fault_addr);
	vq_mark_broken(vq, "guest memory vanished under the device (truncated by the front-end)");
}

/* Adaptive mode: has nothing happened for long enough to sleep?  The clock
 * is read every 32 empty passes only (it was a fifth of a busy loop).
 *
 * Waiting with only backend I/O in flight is different from waiting for the
 * guest: spinning pays when the completion comes within microseconds (a fast
 * device), and costs when it does not: the completion often needs this very
 * cpu (the kernel finishes O_DIRECT writes to a file in a worker of the cpu
 * that took the interrupt, and a spinning engine starves it) and, in a VM, a
 * spinning vcpu holds the host cpu the virtual disk needs.  How long a wait
 * lasted does not tell which case this is: a wait that ends in a sleep is
 * short *because* the engine slept (the worker got the cpu).  So the thread
 * judges the spins themselves: a spin of ENG_IO_SPIN_NS is a hit if a
 * completion came before it ran out.  It spins while most recent spins hit,
 * and otherwise sleeps after the first 32 empty passes (the ring's eventfd
 * wakes it), trying a spin again every ENG_IO_PROBE waits so that a device
 * that became fast is noticed.  Waits over within those 32 passes count
 * for nothing.  Measured on a virtio disk with its interrupts on the
 * engine's cpu (docs/benchmarks.md, "File I/O at depth"), against the rule
 * before (spin while a moving average of the waits was under 20 us or 12+
 * requests were in flight): 4 KiB randwrite QD8 17k -> 36k IOPS, QD32
 * 16k -> 40k; randread QD32 76k -> 87k; QD1 the same within noise. */
#define ENG_IO_SPIN_NS 20000
#define ENG_IO_PROBE 64
#define ENG_IO_HIT_ONE 256

static bool idle_long_enough(struct eng_thread *t)
{
	uint64_t now, limit = t->eng->idle_ns;

	if (t->idle_passes++ == 0)
		t->io_waiting = t->ctx.inflight != 0;
	if (t->idle_passes & 31)
		return false;
	now = now_ns();
	if (!t->idle_since) {
		t->idle_since = now;
		if (t->io_waiting)
			t->io_spinning = t->io_spin_hits >= ENG_IO_HIT_ONE / 2 ||
					 ++t->io_waits % ENG_IO_PROBE == 0;
	}
	if (t->io_waiting) {
		uint64_t spin = t->io_spinning ? ENG_IO_SPIN_NS : 0;
		if (limit > spin)
			limit = spin;
	}
	if (now - t->idle_since < limit)
		return false;
	if (t->io_spinning) {
		/* ran out: a miss */
		t->io_spin_hits -= t->io_spin_hits / 8;
		t->io_spinning = false;
	}
	return true;
}

/* Nothing to do but wait for a limit: every queue of the thread is held
 * by one (and no backend I/O is due).  Then sleep until the tokens are due
 * at once rather than spin: a guest over its limit must not cost a core.
 * With an unthrottled queue beside, the usual adaptive spin stays (its
 * guest's next request must not wait for a kick). */
static bool throttled_only(struct eng_thread *t)
{
	bool held = false;

	if (t->ctx.inflight)
		return false;
	for (unsigned i = 0; i < t->nvq; i++) {
		struct vq *vq = t->vqs[i];
		if (atomic_load_explicit(&vq->broken, memory_order_relaxed) || vq->draining)
			continue;
		if (!vq->throttled_until)
			return false;
		held = true;
	}
	return held;
}

/* Publish what the thread's queues completed (and notify the guests). */
static void flush_used(struct eng_thread *t)
{
	for (unsigned i = 0; i < t->nvq; i++) {
		t->cur_vq = t->vqs[i];
		vq_flush_used(t->vqs[i]);
	}
	t->cur_vq = NULL;
}

static void *eng_main(void *arg)
{
	struct eng_thread *t = arg;
	struct engine *eng = t->eng;

	if (t->cpu >= 0) {
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(t->cpu, &set);
		if (pthread_setaffinity_np(pthread_self(), sizeof(set), &set))
			vlog(LOG_WARNING, "[engine %u] cannot pin to cpu %d", t->id, t->cpu);
	}
	fault_init();
	while (!t->stop || t->detaching) {
		struct fault_scope fs;
		unsigned work = 0, reaped;

		if (!FAULT_TRY(&fs)) {
			eng_fault(t);
			continue;
		}
		t->ctx.now_ns = 0;
		if (atomic_load_explicit(&t->pending, memory_order_acquire))
			work += run_cmds(t, &t->stop);
		reaped = be_ctx_reap(&t->ctx, complete_io, t);
		if (reaped) {
			/* Show the guest its completions before taking and
			 * submitting its next requests: submitting a batch to
			 * a real disk takes tens of microseconds, which the
			 * completed requests would otherwise wait on. */
			work += reaped;
			flush_used(t);
		}
		/* The first queue of a pass goes round: under a limit (or a
		 * full completion queue) the queues that come first take what
		 * there is, and none may always be last. */
		for (unsigned k = 0, first = t->rr++; k < t->nvq; k++) {
			struct vq *vq = t->vqs[(first + k) % t->nvq];
			int n;
			t->cur_vq = vq;
			n = vblk_poll(vq, &t->ctx, be_ctx_room(&t->ctx));
			if (n > 0)
				work += n;
		}
		be_ctx_flush(&t->ctx);
		if (work > reaped)
			flush_used(t);
		t->cur_vq = NULL;
		if (t->detaching)
			check_detaching(t);
		if (work) {
			if (t->io_spinning)     /* a completion came in the spin */
				t->io_spin_hits += (ENG_IO_HIT_ONE - t->io_spin_hits) / 8;
			t->idle_since = 0;
			t->idle_passes = 0;
			t->io_waiting = false;
			t->io_spinning = false;
		} else if (eng->mode == CORE_POLL_ALWAYS || t->stop) {
			/* keep polling */
		} else if (eng->mode == CORE_POLL_ADAPTIVE && !throttled_only(t) &&
			   !idle_long_enough(t)) {
			/* busy-poll a little longer */
		} else {
			eng_sleep(t);
			/* a wait on backend I/O keeps its start: no new
			 * decision to spin until work comes */
			if (!t->io_waiting)
				t->idle_since = 0;
		}
		t->cur_vq = NULL;
		fault_end(&fs);
	}
	return NULL;
}

static void post(struct eng_thread *t, struct eng_cmd *c)
{
	pthread_mutex_lock(&t->lock);
	c->next = t->cmds;
	t->cmds = c;
	atomic_store(&t->pending, true);
	pthread_mutex_unlock(&t->lock);
	wake(t);
}

static void warn_slow(struct eng_thread *t, enum eng_cmd_op op, struct vq *vq, unsigned waited)
{
	if (vq)
		vlog(LOG_WARNING, "[%s q%u] still waiting after %u s for engine %u to %s it: "
		     "%u request(s) in flight on the backend have not completed",
		     vq->devname, vq->index, waited, t->id,
		     op == ENG_ATTACH ? "attach" : "detach",
		     (unsigned)atomic_load(&((struct vblk *)vq->dev)->stats[vq->index].inflight));
	else
		vlog(LOG_WARNING, "[engine %u] still waiting after %u s for it to stop",
		     t->id, waited);
}

static int eng_send(struct eng_thread *t, enum eng_cmd_op op, struct vq *vq)
{
	struct eng_cmd c = { .op = op, .vq = vq, .t = t, .notify_fd = -1 };

	post(t, &c);

	/* A detach waits for the queue's requests in flight to finish: no
	 * timeout can be safe (the backend may still write into guest memory),
	 * but a backend that never completes (hung NFS, a dead disk) must not
	 * stall without a word: say so every ENG_SLOW_CMD_S seconds. */
	pthread_mutex_lock(&t->lock);
	for (unsigned waited = 0; !c.done;) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += ENG_SLOW_CMD_S;
		while (!c.done && pthread_cond_timedwait(&t->cond, &t->lock, &ts) != ETIMEDOUT)
			;
		if (c.done)
			break;
		waited += ENG_SLOW_CMD_S;
		warn_slow(t, op, vq, waited);
	}
	pthread_mutex_unlock(&t->lock);
	return c.result;
}

static int thread_init(struct engine *eng, struct eng_thread *t, unsigned i, int cpu)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &ev_wake_marker };
	int rc, why = 0;

	t->eng = eng;
	t->id = i;
	t->cpu = cpu;
	t->ctx.offload = offload;
	t->ctx.post = post_done;
	t->epfd = epoll_create1(EPOLL_CLOEXEC);
	t->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (t->epfd < 0 || t->wake_fd < 0 ||
	    epoll_ctl(t->epfd, EPOLL_CTL_ADD, t->wake_fd, &ev) < 0)
		return -errno;

	rc = be_ctx_init(&t->ctx, eng->uring_entries, &why);
	if (rc == BE_CTX_NO_URING) {
		vlog(LOG_WARNING, "[engine %u] io_uring unavailable (%s): file backends disabled",
		     i, strerror(why));
		return 0;
	}
	if (rc < 0)
		return rc;
	ev.data.ptr = &ev_ring_marker;
	if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, t->ctx.ring_fd, &ev) < 0)
		return -errno;
	return 0;
}

int eng_create(const struct core_opts *opts, struct engine **out)
{
	struct engine *eng;
	unsigned n = opts->nthreads ? opts->nthreads : 1;
	int rc = 0;

	if (n > ENG_MAX_THREADS)
		return -EINVAL;
	eng = calloc(1, sizeof(*eng));
	if (!eng)
		return -ENOMEM;
	eng->mode = opts->poll_mode;
	eng->idle_ns = (uint64_t)(opts->idle_us ? opts->idle_us : ENG_DEFAULT_IDLE_US) * 1000;
	eng->uring_entries = opts->uring_entries ? opts->uring_entries : ENG_DEFAULT_URING;
	if (eng->uring_entries < BE_MAX_SQE_PER_REQ)
		eng->uring_entries = BE_MAX_SQE_PER_REQ;
	pthread_mutex_init(&eng->wlock, NULL);
	pthread_cond_init(&eng->wcond, NULL);
	eng->jobs_tail = &eng->jobs;
	if (posix_memalign((void **)&eng->threads, 64, n * sizeof(*eng->threads))) {
		free(eng);
		return -ENOMEM;
	}
	memset(eng->threads, 0, n * sizeof(*eng->threads));
	eng->nalloc = n;
	for (unsigned i = 0; i < n; i++) {
		struct eng_thread *t = &eng->threads[i];
		t->epfd = t->wake_fd = t->ctx.ring_fd = -1;
		pthread_mutex_init(&t->lock, NULL);
		pthread_condattr_t ca;
		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&t->cond, &ca);
		pthread_condattr_destroy(&ca);
	}
	for (unsigned i = 0; i < ENG_WORKERS; i++) {
		rc = -pthread_create(&eng->workers[i], NULL, worker_main, eng);
		if (rc)
			goto fail;
		pthread_setname_np(eng->workers[i], "vhostd-worker");
		eng->nworkers++;
	}
	for (unsigned i = 0; i < n; i++) {
		struct eng_thread *t = &eng->threads[i];
		char name[16];

		rc = thread_init(eng, t, i, opts->cpus ? opts->cpus[i] : -1);
		if (rc)
			goto fail;
		rc = -pthread_create(&t->tid, NULL, eng_main, t);
		if (rc)
			goto fail;
		snprintf(name, sizeof(name), "vhostd-eng%u", i);
		pthread_setname_np(t->tid, name);
		eng->nthreads = i + 1;
	}
	*out = eng;
	return 0;
fail:
	vlog(LOG_ERR, "engine: cannot start: %s", strerror(-rc));
	eng_destroy(eng);
	return rc;
}

void eng_destroy(struct engine *eng)
{
	if (!eng)
		return;
	for (unsigned i = 0; i < eng->nthreads; i++) {
		struct eng_thread *t = &eng->threads[i];
		eng_send(t, ENG_STOP, NULL);
		pthread_join(t->tid, NULL);
	}
	pthread_mutex_lock(&eng->wlock);
	eng->wstop = true;
	pthread_cond_broadcast(&eng->wcond);
	pthread_mutex_unlock(&eng->wlock);
	for (unsigned i = 0; i < eng->nworkers; i++)
		pthread_join(eng->workers[i], NULL);
	for (unsigned i = 0; i < eng->nalloc; i++) {
		struct eng_thread *t = &eng->threads[i];
		be_ctx_fini(&t->ctx);
		if (t->epfd >= 0)
			close(t->epfd);
		if (t->wake_fd >= 0)
			close(t->wake_fd);
		free(t->vqs);
	}
	free(eng->threads);
	free(eng);
}

unsigned eng_nthreads(const struct engine *eng)
{
	return eng->nthreads;
}

bool eng_has_uring(const struct engine *eng)
{
	return eng->nthreads && eng->threads[0].ctx.ring;
}

int eng_attach(struct engine *eng, struct vq *vq, unsigned hint)
{
	struct eng_thread *t = &eng->threads[hint % eng->nthreads];
	int rc = eng_send(t, ENG_ATTACH, vq);
	if (rc == 0)
		vq->attached = true;
	return rc;
}

int eng_detach(struct engine *eng, struct vq *vq)
{
	int rc;
	if (vq->detach_cmd)
		return eng_detach_wait(vq);
	if (!vq->attached)
		return 0;
	rc = eng_send(vq->thread, ENG_DETACH, vq);
	vq->attached = false;
	return rc;
}

int eng_detach_start(struct engine *eng, struct vq *vq, int notify_fd)
{
	struct eng_cmd *c;

	if (!vq->attached || vq->detach_cmd)
		return 0;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->op = ENG_DETACH;
	c->vq = vq;
	c->t = vq->thread;
	c->notify_fd = notify_fd;
	c->started_ns = now_ns();
	vq->detach_cmd = c;
	post(c->t, c);
	return 1;
}

/* Complete an acknowledged asynchronous detach. */
static void detach_finish(struct vq *vq, struct eng_cmd *c)
{
	free(c);
	vq->detach_cmd = NULL;
	vq->attached = false;
}

bool eng_detach_done(struct vq *vq)
{
	struct eng_cmd *c = vq->detach_cmd;
	bool done;

	if (!c)
		return true;
	pthread_mutex_lock(&c->t->lock);
	done = c->done;
	pthread_mutex_unlock(&c->t->lock);
	if (!done) {
		uint64_t waited = (now_ns() - c->started_ns) / 1000000000ull;
		if (waited >= (uint64_t)(c->warned + 1) * ENG_SLOW_CMD_S) {
			c->warned++;
			warn_slow(c->t, ENG_DETACH, vq, c->warned * ENG_SLOW_CMD_S);
		}
		return false;
	}
	detach_finish(vq, c);
	return true;
}

int eng_detach_wait(struct vq *vq)
{
	struct eng_cmd *c = vq->detach_cmd;
	struct eng_thread *t;

	if (!c)
		return 0;
	t = c->t;
	pthread_mutex_lock(&t->lock);
	while (!c->done) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += 1;
		pthread_cond_timedwait(&t->cond, &t->lock, &ts);
		if (!c->done) {
			uint64_t waited = (now_ns() - c->started_ns) / 1000000000ull;
			if (waited >= (uint64_t)(c->warned + 1) * ENG_SLOW_CMD_S) {
				c->warned++;
				warn_slow(t, ENG_DETACH, vq, c->warned * ENG_SLOW_CMD_S);
			}
		}
	}
	pthread_mutex_unlock(&t->lock);
	detach_finish(vq, c);
	return 0;
}
