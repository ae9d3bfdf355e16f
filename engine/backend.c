/* Backend selection and iovec helpers; see backend.h. */
#include "backend.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

int be_open(const struct vdev_params *p, struct backend **out, char *err, size_t errlen)
{
	switch (p->backing) {
	case BE_RAM:
		return be_ram_ops.open(p, out, err, errlen);
	case BE_NULL:
		return be_null_ops.open(p, out, err, errlen);
	case BE_FILE:
		return be_file_ops.open(p, out, err, errlen);
	default:
		snprintf(err, errlen, "backing '%s' is not supported", p->path);
		return -EINVAL;
	}
}

size_t iov_size(const struct iovec *iov, unsigned cnt)
{
	size_t n = 0;
	for (unsigned i = 0; i < cnt; i++)
		n += iov[i].iov_len;
	return n;
}

/* Copy len bytes between buf and iov, starting skip bytes into iov. */
static size_t iov_copy(const struct iovec *iov, unsigned cnt, size_t skip, char *buf,
		       size_t len, bool to_iov)
{
	size_t done = 0;

	for (unsigned i = 0; i < cnt && done < len; i++) {
		size_t l = iov[i].iov_len;
		char *p;

		if (skip >= l) {
			skip -= l;
			continue;
		}
		p = (char *)iov[i].iov_base + skip;
		l -= skip;
		if (l > len - done)
			l = len - done;
		if (to_iov)
			memcpy(p, buf + done, l);
		else
			memcpy(buf + done, p, l);
		done += l;
		skip = 0;
	}
	return done;
}

size_t iov_to_buf(const struct iovec *iov, unsigned cnt, size_t skip, void *buf, size_t len)
{
	return iov_copy(iov, cnt, skip, buf, len, false);
}

size_t iov_from_buf(const struct iovec *iov, unsigned cnt, size_t skip, const void *buf, size_t len)
{
	return iov_copy(iov, cnt, skip, (char *)buf, len, true);
}
