/* cfgparse: the text forms of controller settings — strict parsers for what
 * a user writes into the control filesystem (and what the state file holds),
 * and the canonical formatter used for read-back.  Pure functions, no locks;
 * any thread.  Input is untrusted user text: every parser bounds its input,
 * rejects anything it does not fully understand and explains why in one
 * sentence (no trailing period, no newline).
 */
#ifndef VHOSTD_CFGPARSE_H
#define VHOSTD_CFGPARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "params.h"

/* Settings a user can write, in read-back order. */
enum cfg_key {
	CFG_SIZE = 0,
	CFG_BLOCK_SIZE,
	CFG_BACKING,
	CFG_READONLY,
	CFG_QUEUES,
	CFG_SERIAL,
	CFG_ALLOW_SHRINK,
	/* I/O limits (struct vdev_limits): per second, 0 = unlimited; bursts
	 * are amounts (requests, bytes) the bucket holds beyond the rate. */
	CFG_IOPS_LIMIT,
	CFG_BPS_LIMIT,
	CFG_READ_BPS_LIMIT,
	CFG_WRITE_BPS_LIMIT,
	CFG_IOPS_BURST,
	CFG_BPS_BURST,
	CFG_GROUP,                      /* throttle group name, "" = none */
	/* Ceph RBD (backing=rbd:...); the defaults are harmless elsewhere */
	CFG_CEPH_CONF,                  /* path of ceph.conf */
	CFG_CEPH_ID,                    /* client id (client.ID), "admin" */
	CFG_RBD_SHARED,                 /* 0/1: other writers allowed */
	CFG_RBD_TIMEOUT,                /* seconds, 0 = wait for the cluster */
	/* 0/1: offer packed virtqueues (default 1) */
	CFG_PACKED,
	CFG_NKEYS,
};
#define CFG_BIT(k) (1u << (k))
/* The keys of a throttle group (ctl/.groups/NAME): the limits. */
#define CFG_LIMIT_KEYS (CFG_BIT(CFG_IOPS_LIMIT) | CFG_BIT(CFG_BPS_LIMIT) | \
			CFG_BIT(CFG_READ_BPS_LIMIT) | CFG_BIT(CFG_WRITE_BPS_LIMIT) | \
			CFG_BIT(CFG_IOPS_BURST) | CFG_BIT(CFG_BPS_BURST))
/* Largest limit or burst accepted: 2^50 (1024T bytes, or requests); the
 * engine's token arithmetic need not fear overflow below it. */
#define CFG_LIMIT_MAX (1ull << 50)

/* Longest value or config text we accept in one write. */
#define CFG_TEXT_MAX 4096
/* Longest backing path accepted (the config text must hold it and the rest). */
#define CFG_PATH_MAX 2048

const char *cfg_key_name(enum cfg_key k);
/* -1 if unknown. */
int cfg_key_lookup(const char *name, size_t len);

/* A controller name: 1..VDEV_NAME_MAX of [A-Za-z0-9._-], not starting with '.'. */
bool cfg_name_valid(const char *name);

/* A throttle group name: the same rules as a controller name. */
static inline bool cfg_group_name_valid(const char *name)
{
	return cfg_name_valid(name);
}

/* "64M", "1G", "67108864": decimal, optional K/M/G/T suffix (powers of 1024,
 * either case).  Zero, signs, overflow and trailing junk are refused. */
int cfg_parse_size(const char *s, uint64_t *out, char *err, size_t errlen);

/* Parse one value of key k (already trimmed, NUL-terminated) into p.
 * Only the field of k changes; cross-field rules (size vs block_size...) are
 * vdev_params_check's job.  0 or -EINVAL with the reason in err. */
int cfg_parse_value(enum cfg_key k, const char *val, struct vdev_params *p,
		    char *err, size_t errlen);

/* A write to a per-key file: surrounding whitespace (the shell's newline) is
 * dropped, the rest must be one value.  Sets CFG_BIT(k) in *set. */
int cfg_parse_key_text(enum cfg_key k, const char *buf, size_t len,
		       struct vdev_params *p, unsigned *set,
		       char *err, size_t errlen);

/* A write to `config`: either one bare size or whitespace/newline separated
 * key=value pairs.  All or nothing: p is only modified on success (0); the
 * keys written are ORed into *set. */
int cfg_parse_config_text(const char *buf, size_t len, struct vdev_params *p,
			  unsigned *set, char *err, size_t errlen);

/* Copy the settings named in set (CFG_BIT(k)) from src to dst; backing
 * carries its path. */
void cfg_apply(struct vdev_params *dst, const struct vdev_params *src, unsigned set);

/* Would a user's write (and so the state file) take these values?  Each
 * key in set is formatted and parsed again by the rules above: callers of
 * the typed API (mgr_ctrl_set) may bypass the text.  0 or -EINVAL with the
 * reason. */
int cfg_check_values(const struct vdev_params *p, unsigned set,
		     char *err, size_t errlen);

/* The canonical value of k ("" for an unset size), without newline. */
void cfg_format_value(enum cfg_key k, const struct vdev_params *p, bool have_size,
		      char *buf, size_t len);

/* Every key as "key=value\n" (size omitted while unset); the result can be
 * written back to `config`.  Returns the length. */
size_t cfg_format_config(const struct vdev_params *p, bool have_size,
			 char *buf, size_t len);

/* A write to a throttle group's `config`: key=value pairs of the limit keys
 * only (CFG_LIMIT_KEYS).  All or nothing: l is only modified on success; the
 * keys written are ORed into *set. */
int cfg_parse_limits_text(const char *buf, size_t len, struct vdev_limits *l,
			  unsigned *set, char *err, size_t errlen);

/* Every limit key as "key=value\n"; can be written back to a group's
 * `config`.  Returns the length. */
size_t cfg_format_limits(const struct vdev_limits *l, char *buf, size_t len);

/* "0,1", "0-3", "0-1,4": a list of distinct cpu numbers < max_cpu.
 * Returns the count (>0) or -EINVAL with the reason. */
int cfg_parse_cpulist(const char *s, int *cpus, int max_out, int max_cpu,
		      char *err, size_t errlen);

#endif
