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

size_t iov_to_buf(const struct iovec *iov, unsigned cnt, size_t skip, void *buf, size_t len)
{
	size_t done = 0;
	for (unsigned i = 0; i < cnt && done < len; i++) {
		size_t l = iov[i].iov_len;
		if (skip >= l) {
			skip -= l;
			continue;
		}
		l -= skip;
		if (l > len - done)
			l = len - done;
		memcpy((char *)buf + done, (char *)iov[i].iov_base + skip, l);
		done += l;
		skip = 0;
	}
	return done;
}

size_t iov_from_buf(const struct iovec *iov, unsigned cnt, size_t skip, const void *buf, size_t len)
{
	size_t done = 0;
	for (unsigned i = 0; i < cnt && done < len; i++) {
		size_t l = iov[i].iov_len;
		if (skip >= l) {
			skip -= l;
			continue;
		}
		l -= skip;
		if (l > len - done)
			l = len - done;
		memcpy((char *)iov[i].iov_base + skip, (const char *)buf + done, l);
		done += l;
		skip = 0;
	}
	return done;
}
