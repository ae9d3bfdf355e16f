/* Logging: syslog levels to stderr (journald-friendly "<N>" prefixes when
 * stderr is the journal), object identity in the message, and a rate
 * limiter for the data path.  Thread-safe; any thread. */
#ifndef VHOSTD_LOG_H
#define VHOSTD_LOG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <syslog.h>

void log_set_level(int level);
int log_get_level(void);
/* Parse "err", "warning", "info", "debug" (or 0..7); -1 if unknown. */
int log_parse_level(const char *s);
void vlog(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_enabled(level) ((level) <= log_get_level())

/* At most `burst` messages per second per call site (data path). */
struct log_ratelimit {
	_Atomic uint64_t window;        /* second of the current window */
	atomic_uint count;
};
bool log_ratelimit_ok(struct log_ratelimit *rl, unsigned burst);

#define vlog_rl(level, ...) do {                                        \
		static struct log_ratelimit rl_;                        \
		if (log_enabled(level) && log_ratelimit_ok(&rl_, 10))   \
			vlog(level, __VA_ARGS__);                       \
	} while (0)

#endif
