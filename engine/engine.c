/* Engine poll threads and their mailbox; see engine.h.
 * Each thread loops over its vqs; when none had work for idle_us it asks
 * the guests for kicks and sleeps in epoll on their kick eventfds and its
 * mailbox eventfd (adaptive mode). */
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
#include "log.h"

#define ENG_MAX_THREADS 256
#define ENG_DEFAULT_IDLE_US 200

enum eng_cmd_op { ENG_ATTACH, ENG_DETACH, ENG_STOP };

struct eng_cmd {
	enum eng_cmd_op op;
	struct vq *vq;
	int result;
	bool done;
	struct eng_cmd *next;
};

struct eng_thread {
	struct engine *eng;
	unsigned id;
	int cpu;
	pthread_t tid;
	int epfd;
	int wake_fd;                    /* mailbox doorbell */

	pthread_mutex_t lock;           /* mailbox only */
	pthread_cond_t cond;
	struct eng_cmd *cmds;
	atomic_bool pending;
	atomic_bool sleeping;

	struct vq **vqs;                /* owned by the thread */
	unsigned nvq, cap;
} __attribute__((aligned(64)));

struct engine {
	unsigned nthreads;              /* running */
	unsigned nalloc;                /* initialised */
	enum core_poll_mode mode;
	uint64_t idle_ns;
	struct eng_thread *threads;
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

static void vq_started(struct eng_thread *t, struct vq *vq)
{
	vq->thread = t;
	vq->used_idx = READ_ONCE(vq->used->idx);
	vq->signalled_used = vq->used_idx;
	vq->notify_on = true;
	vq_set_notify(vq, false);
	if (vq->kick_fd >= 0) {
		struct epoll_event ev = { .events = EPOLLIN, .data.ptr = vq };
		if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, vq->kick_fd, &ev) < 0)
			vlog(LOG_ERR, "[%s q%u] epoll_ctl: %s", vblk_name(vq->blk),
			     vq->index, strerror(errno));
	}
	/* A kick may have come before we listened: look at the ring now. */
}

static void run_cmds(struct eng_thread *t, bool *stop)
{
	struct eng_cmd *c, *next;

	pthread_mutex_lock(&t->lock);
	c = t->cmds;
	t->cmds = NULL;
	atomic_store(&t->pending, false);
	pthread_mutex_unlock(&t->lock);

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
			vq_started(t, c->vq);
			break;
		case ENG_DETACH:
			for (unsigned i = 0; i < t->nvq; i++) {
				if (t->vqs[i] != c->vq)
					continue;
				t->vqs[i] = t->vqs[--t->nvq];
				if (c->vq->kick_fd >= 0)
					epoll_ctl(t->epfd, EPOLL_CTL_DEL, c->vq->kick_fd, NULL);
				/* Publish whatever was completed. */
				if (!atomic_load(&c->vq->broken))
					vq_flush_used(c->vq);
				c->vq->thread = NULL;
				break;
			}
			break;
		case ENG_STOP:
			*stop = true;
			break;
		}
		pthread_mutex_lock(&t->lock);
		c->done = true;
		pthread_cond_broadcast(&t->cond);
		pthread_mutex_unlock(&t->lock);
	}
}

/* Arm notifications on every vq and sleep unless work is already there. */
static void eng_sleep(struct eng_thread *t)
{
	struct epoll_event evs[64];
	bool work = false;
	int n;

	for (unsigned i = 0; i < t->nvq; i++) {
		struct vq *vq = t->vqs[i];
		if (atomic_load_explicit(&vq->broken, memory_order_relaxed))
			continue;
		if (vq->kick_nofd)
			work = true;    /* a polling driver never kicks */
		if (vq_set_notify(vq, true))
			work = true;
	}
	atomic_store(&t->sleeping, true);
	/* sleeping before pending: pairs with the sender's order (pending,
	 * then sleeping) so one of the two sides sees the other. */
	if (!work && !atomic_load(&t->pending)) {
		n = epoll_wait(t->epfd, evs, 64, -1);
		for (int i = 0; i < n; i++) {
			if (evs[i].data.ptr == NULL)
				drain_fd(t->wake_fd);
			else
				drain_fd(((struct vq *)evs[i].data.ptr)->kick_fd);
		}
	}
	atomic_store(&t->sleeping, false);
	if (t->eng->mode != CORE_POLL_INTERRUPT)
		for (unsigned i = 0; i < t->nvq; i++)
			vq_set_notify(t->vqs[i], false);
}

static void *eng_main(void *arg)
{
	struct eng_thread *t = arg;
	struct engine *eng = t->eng;
	uint64_t idle_since = 0;
	bool stop = false;

	if (t->cpu >= 0) {
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(t->cpu, &set);
		if (pthread_setaffinity_np(pthread_self(), sizeof(set), &set))
			vlog(LOG_WARNING, "[engine %u] cannot pin to cpu %d", t->id, t->cpu);
	}
	while (!stop) {
		int work = 0;

		if (atomic_load_explicit(&t->pending, memory_order_acquire)) {
			run_cmds(t, &stop);
			idle_since = 0;
		}
		for (unsigned i = 0; i < t->nvq; i++) {
			int n = vq_poll(t->vqs[i]);
			if (n > 0)
				work += n;
		}
		if (work) {
			idle_since = 0;
			continue;
		}
		if (eng->mode == CORE_POLL_ALWAYS)
			continue;
		if (eng->mode == CORE_POLL_ADAPTIVE) {
			uint64_t now = now_ns();
			if (!idle_since)
				idle_since = now;
			if (now - idle_since < eng->idle_ns)
				continue;
		}
		eng_sleep(t);
		idle_since = 0;
	}
	return NULL;
}

static int eng_send(struct eng_thread *t, enum eng_cmd_op op, struct vq *vq)
{
	struct eng_cmd c = { .op = op, .vq = vq };
	uint64_t one = 1;

	pthread_mutex_lock(&t->lock);
	c.next = t->cmds;
	t->cmds = &c;
	atomic_store(&t->pending, true);
	pthread_mutex_unlock(&t->lock);
	if (atomic_load(&t->sleeping))
		(void)!write(t->wake_fd, &one, sizeof(one));

	pthread_mutex_lock(&t->lock);
	while (!c.done)
		pthread_cond_wait(&t->cond, &t->lock);
	pthread_mutex_unlock(&t->lock);
	return c.result;
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
	if (posix_memalign((void **)&eng->threads, 64, n * sizeof(*eng->threads))) {
		free(eng);
		return -ENOMEM;
	}
	memset(eng->threads, 0, n * sizeof(*eng->threads));
	eng->nalloc = n;
	for (unsigned i = 0; i < n; i++) {
		eng->threads[i].epfd = eng->threads[i].wake_fd = -1;
		pthread_mutex_init(&eng->threads[i].lock, NULL);
		pthread_cond_init(&eng->threads[i].cond, NULL);
	}

	for (unsigned i = 0; i < n; i++) {
		struct eng_thread *t = &eng->threads[i];
		struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };

		t->eng = eng;
		t->id = i;
		t->cpu = opts->cpus ? opts->cpus[i] : -1;
		t->epfd = epoll_create1(EPOLL_CLOEXEC);
		t->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (t->epfd < 0 || t->wake_fd < 0 ||
		    epoll_ctl(t->epfd, EPOLL_CTL_ADD, t->wake_fd, &ev) < 0) {
			rc = -errno;
			goto fail;
		}
		rc = -pthread_create(&t->tid, NULL, eng_main, t);
		if (rc)
			goto fail;
		{
			char name[16];
			snprintf(name, sizeof(name), "vhostd-eng%u", i);
			pthread_setname_np(t->tid, name);
		}
		eng->nthreads = i + 1;
	}
	*out = eng;
	return 0;
fail:
	vlog(LOG_ERR, "engine: cannot start thread: %s", strerror(-rc));
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
	for (unsigned i = 0; i < eng->nalloc; i++) {
		struct eng_thread *t = &eng->threads[i];
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
	if (!vq->attached)
		return 0;
	rc = eng_send(vq->thread, ENG_DETACH, vq);
	vq->attached = false;
	return rc;
}
