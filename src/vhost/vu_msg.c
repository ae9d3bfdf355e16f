/* vhost-user wire format: receiving a message (header, payload, fds) from a
 * non-blocking socket in as many pieces as it comes, and sending replies.
 * Control thread.  Trust: the size field and the number of fds are checked
 * before anything is stored; stray fds are closed. */
#include "vu.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

void vu_msg_close_fds(struct vu_msg *m)
{
	for (unsigned i = 0; i < m->nfds; i++)
		if (m->fds[i] >= 0)
			close(m->fds[i]);
	m->nfds = 0;
}

int vu_recv(struct vu_conn *c)
{
	struct vu_msg *m = &c->rx;
	const size_t hl = sizeof(m->hdr);

	for (;;) {
		union {
			char buf[CMSG_SPACE(sizeof(int) * VU_MAX_FDS)];
			struct cmsghdr align;
		} ctl;
		struct iovec iov;
		struct msghdr mh = {
			.msg_iov = &iov, .msg_iovlen = 1,
			.msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf),
		};
		bool too_many = false;
		ssize_t n;

		if (c->rx_len < hl) {
			iov.iov_base = (uint8_t *)&m->hdr + c->rx_len;
			iov.iov_len = hl - c->rx_len;
		} else {
			if (c->rx_len == hl + m->hdr.size)
				return 1;
			iov.iov_base = m->payload.bytes + (c->rx_len - hl);
			iov.iov_len = hl + m->hdr.size - c->rx_len;
		}
		n = recvmsg(c->fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			return -errno;
		}
		if (n == 0)
			return -ECONNRESET;

		for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
			if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
				continue;
			unsigned cnt = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			int *fds = (int *)CMSG_DATA(cm);
			for (unsigned i = 0; i < cnt; i++) {
				int fd;
				memcpy(&fd, &fds[i], sizeof(fd));
				if (m->nfds < VU_MAX_FDS) {
					m->fds[m->nfds++] = fd;
				} else {
					close(fd);
					too_many = true;
				}
			}
		}
		c->rx_len += n;
		if (too_many || (mh.msg_flags & MSG_CTRUNC)) {
			snprintf(c->err, sizeof(c->err), "more than %d file descriptors in one message",
				 VU_MAX_FDS);
			return -EINVAL;
		}
		if (c->rx_len >= hl && m->hdr.size > VU_MAX_PAYLOAD) {
			snprintf(c->err, sizeof(c->err), "%s with a payload of %u bytes",
				 vu_request_name(m->hdr.request), m->hdr.size);
			return -EMSGSIZE;
		}
		if (c->rx_len >= hl && c->rx_len == hl + m->hdr.size)
			return 1;
	}
}

int vu_send(int fd, const struct vu_msg *m, const int *fds, unsigned nfds)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * VU_MAX_FDS)];
		struct cmsghdr align;
	} ctl;
	struct iovec iov[2] = {
		{ .iov_base = (void *)&m->hdr, .iov_len = sizeof(m->hdr) },
		{ .iov_base = (void *)m->payload.bytes, .iov_len = m->hdr.size },
	};
	struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 2 };
	size_t total = sizeof(m->hdr) + m->hdr.size;
	ssize_t n;

	if (nfds > VU_MAX_FDS)
		return -EINVAL;
	if (nfds) {
		struct cmsghdr *cm;
		mh.msg_control = ctl.buf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
	}
	do {
		n = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	/* A reply is a few hundred bytes at most: a peer that leaves its
	 * socket buffer full is not reading its replies. */
	if ((size_t)n != total)
		return -EAGAIN;
	return 0;
}
