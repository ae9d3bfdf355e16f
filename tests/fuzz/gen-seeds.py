#!/usr/bin/env python3
"""Write the hand-made seed inputs of the fuzz targets into corpus/NAME/
(seed-*.bin; other files there — minimized inputs, crash regressions — are
left alone).  The formats are described at the top of fuzz_vu.c, fuzz_vq.c
and fuzz_cfg.c.  Run from anywhere: python3 tests/fuzz/gen-seeds.py"""
import os
import re
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(HERE, 'corpus', target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, 'seed-' + name + '.bin'), 'wb') as f:
        f.write(data)


# ---- vu --------------------------------------------------------------------
# The vhost-user / virtio constants are those of tests/lib/vu_wire.h, the one
# copy the test front-ends share (written apart from the daemon's own).


def wire_constants():
    """FFE_* integer constants of vu_wire.h (enum members and #defines whose
    value is a number, a hex number or (1u << n)), without the prefix."""
    path = os.path.join(HERE, '..', 'lib', 'vu_wire.h')
    with open(path) as f:
        src = f.read()
    c = {}
    for name, val in re.findall(r'^\s*FFE_(\w+)\s*=\s*(\d+)\s*,', src, re.M):
        c[name] = int(val)
    for name, val in re.findall(r'^#define FFE_(\w+)\s+([^/\n]+?)\s*(?:/\*.*)?$', src, re.M):
        val = re.sub(r'(?<=[0-9a-fA-F])u\b', '', val)
        if re.fullmatch(r'[0-9a-fA-Fx()<| ]+', val):
            c[name] = eval(val)  # digits, parentheses, << and | only
    return c


W = wire_constants()


def take(names):
    return [W[n] for n in names.split()]


GET_FEATURES, SET_FEATURES, SET_OWNER, RESET_OWNER, SET_MEM_TABLE = \
    take('GET_FEATURES SET_FEATURES SET_OWNER RESET_OWNER SET_MEM_TABLE')
SET_LOG_BASE, SET_LOG_FD, SET_VRING_NUM, SET_VRING_ADDR, SET_VRING_BASE = \
    take('SET_LOG_BASE SET_LOG_FD SET_VRING_NUM SET_VRING_ADDR SET_VRING_BASE')
GET_VRING_BASE, SET_VRING_KICK, SET_VRING_CALL, SET_VRING_ERR = \
    take('GET_VRING_BASE SET_VRING_KICK SET_VRING_CALL SET_VRING_ERR')
GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES, GET_QUEUE_NUM = \
    take('GET_PROTOCOL_FEATURES SET_PROTOCOL_FEATURES GET_QUEUE_NUM')
SET_VRING_ENABLE, GET_CONFIG, SET_CONFIG = take('SET_VRING_ENABLE GET_CONFIG SET_CONFIG')
GET_INFLIGHT_FD, SET_INFLIGHT_FD, RESET_DEVICE = \
    take('GET_INFLIGHT_FD SET_INFLIGHT_FD RESET_DEVICE')
GET_MAX_MEM_SLOTS, ADD_MEM_REG, REM_MEM_REG, SET_STATUS, GET_STATUS, SET_BACKEND_REQ_FD = \
    take('GET_MAX_MEM_SLOTS ADD_MEM_REG REM_MEM_REG SET_STATUS GET_STATUS SET_BACKEND_REQ_FD')
V = W['FLAG_VERSION']
NEED = V | W['FLAG_NEED_REPLY']
NOFD = W['VRING_NOFD']


def bits(names):
    return sum(1 << b for b in take(names))


FEATURES = bits('F_VERSION_1 F_RING_INDIRECT_DESC F_RING_EVENT_IDX F_PROTOCOL_FEATURES '
                'F_BLK_SIZE_MAX F_BLK_SEG_MAX F_BLK_BLK_SIZE F_BLK_FLUSH F_BLK_TOPOLOGY '
                'F_BLK_CONFIG_WCE F_BLK_MQ F_BLK_DISCARD F_BLK_WRITE_ZEROES')
PROTOCOL = bits('PF_MQ PF_REPLY_ACK PF_CONFIG PF_INFLIGHT_SHMFD PF_RESET_DEVICE')

# the pool memfds the target passes: 1M, 1M, 64K, 4K
UVA = 0x7f0000000000
DESC, AVAIL, USED = 0x0, 0x1000, 0x2000         # gpa (= offset in pool 0)


def msg(req, payload=b'', flags=V, nfds=0, memfd=False, pool2=False, split=False,
        defer=False, size=None):
    op = nfds | (8 if memfd else 0) | (0x10 if pool2 else 0) | \
        (0x20 if split else 0) | (0x40 if defer else 0)
    assert op < 0x80
    return bytes([op]) + struct.pack('<III', req, flags,
                                     len(payload) if size is None else size) + payload


def poke(idx, off, data):
    assert off % 16 == 0 and len(data) < 256
    return bytes([0x80, idx, (off // 16) & 0xff, (off // 16) >> 8, len(data)]) + data


def u64(v):
    return struct.pack('<Q', v)


def state(index, num):
    return struct.pack('<II', index, num)


def addr(index, desc, used, avail, flags=0, log=0):
    return struct.pack('<IIQQQQ', index, flags, desc, used, avail, log)


def memtable(regions):
    return struct.pack('<II', len(regions), 0) + b''.join(
        struct.pack('<QQQQ', *r) for r in regions)


def config(offset, size, flags=0, data=None):
    return struct.pack('<III', offset, size, flags) + (data if data is not None
                                                        else bytes(size))


def inflight(size, offset, nq, qs):
    return struct.pack('<QQHH', size, offset, nq, qs) + bytes(4)


def handshake(need=NEED, inflight_fd=True, event_idx=True):
    s = msg(GET_FEATURES) + msg(SET_OWNER) + msg(GET_PROTOCOL_FEATURES)
    s += msg(SET_PROTOCOL_FEATURES, u64(PROTOCOL))
    s += msg(GET_QUEUE_NUM)
    s += msg(GET_CONFIG, config(0, 60))
    f = FEATURES if event_idx else FEATURES & ~(1 << 29)
    s += msg(SET_FEATURES, u64(f), flags=need)
    if inflight_fd:
        s += msg(GET_INFLIGHT_FD, inflight(0, 0, 2, 128))
    return s


def start_queue(q, num=128, base=0, need=V, kick_nofd=False):
    off = q * 0x10000
    s = msg(SET_VRING_NUM, state(q, num), flags=need)
    s += msg(SET_VRING_BASE, state(q, base), flags=need)
    s += msg(SET_VRING_ADDR, addr(q, UVA + off + DESC, UVA + off + USED, UVA + off + AVAIL),
             flags=need)
    if kick_nofd:
        s += msg(SET_VRING_KICK, u64(q | NOFD))
    else:
        s += msg(SET_VRING_KICK, u64(q), nfds=1)
    s += msg(SET_VRING_CALL, u64(q), nfds=1)
    s += msg(SET_VRING_ENABLE, state(q, 1), flags=need)
    return s


MEM1 = memtable([(0, 1 << 20, UVA, 0)])


def vu_seeds():
    # QEMU's order, with REPLY_ACK on the requests QEMU asks it for
    qemu = handshake() + msg(SET_MEM_TABLE, MEM1, flags=NEED, nfds=1, memfd=True)
    qemu += start_queue(0, need=NEED) + start_queue(1, need=NEED)
    qemu += msg(GET_VRING_BASE, state(0, 0)) + msg(GET_VRING_BASE, state(1, 0))
    write('vu', 'qemu-handshake', qemu)
    # the same without NEED_REPLY anywhere
    plain = handshake(need=V) + msg(SET_MEM_TABLE, MEM1, nfds=1, memfd=True)
    plain += start_queue(0) + start_queue(1)
    plain += msg(GET_VRING_BASE, state(0, 0)) + msg(GET_VRING_BASE, state(1, 0))
    write('vu', 'plain-handshake', plain)
    # two regions, contiguous in gpa, the ring in the second
    two = handshake(need=V, inflight_fd=False)
    two += msg(SET_MEM_TABLE, memtable([(0, 1 << 20, UVA, 0),
                                        (1 << 20, 1 << 20, UVA + (1 << 30), 0)]),
               nfds=2, memfd=True)
    two += start_queue(0) + msg(RESET_OWNER)
    write('vu', 'two-regions-reset', two)
    # a FLUSH request in guest memory, a polling driver
    req = poke(0, 0x0, struct.pack('<QIHH', 0x3000, 16, 1, 1) +
               struct.pack('<QIHH', 0x3010, 1, 2, 0))
    req += poke(0, 0x1000, struct.pack('<HHH', 0, 1, 0))
    req += poke(0, 0x3000, struct.pack('<IIQ', 4, 0, 0))
    ring = handshake(need=V, inflight_fd=False) + req
    ring += msg(SET_MEM_TABLE, MEM1, nfds=1, memfd=True)
    ring += start_queue(0, kick_nofd=True)
    ring += msg(GET_VRING_BASE, state(0, 0))
    write('vu', 'ring-flush-polling', ring)
    # inflight region set by the front-end, with a request marked in flight
    infl = handshake(need=V, inflight_fd=False)
    infl += poke(2, 0, struct.pack('<QHHHH', 0, 1, 128, 0, 0) +
                 struct.pack('<B5xHQ', 1, 0, 7))
    infl += msg(SET_INFLIGHT_FD, inflight(0x8000, 0, 2, 128), nfds=1, memfd=True, pool2=True)
    infl += msg(SET_MEM_TABLE, MEM1, nfds=1, memfd=True) + req
    infl += start_queue(0)
    write('vu', 'inflight-set', infl)
    # ring restarts: memory table replaced under a running ring, address change
    rs = handshake(need=V) + msg(SET_MEM_TABLE, MEM1, nfds=1, memfd=True) + start_queue(0)
    rs += msg(SET_MEM_TABLE, MEM1, nfds=1, memfd=True)
    rs += msg(SET_VRING_ADDR, addr(0, UVA + 0x4000, UVA + 0x6000, UVA + 0x5000))
    rs += msg(SET_VRING_CALL, u64(0 | NOFD)) + msg(SET_VRING_ERR, u64(0), nfds=1)
    rs += msg(SET_VRING_ENABLE, state(0, 0)) + msg(SET_VRING_ENABLE, state(0, 1))
    rs += msg(GET_INFLIGHT_FD, inflight(0, 0, 1, 128))
    rs += msg(RESET_DEVICE)
    write('vu', 'ring-restarts', rs)
    # config space
    cfg = msg(GET_CONFIG, config(0, 256)) + msg(GET_CONFIG, config(34, 2))
    cfg += msg(SET_CONFIG, config(32, 1, data=b'\0')) + msg(GET_CONFIG, config(32, 1))
    write('vu', 'config', cfg)
    # REPLY_ACK with failing handlers
    ack = msg(SET_PROTOCOL_FEATURES, u64(1 << 3))
    ack += msg(SET_VRING_NUM, state(0, 3), flags=NEED)
    ack += msg(SET_VRING_BASE, state(0, 0x10000), flags=NEED)
    ack += msg(SET_CONFIG, config(0, 1), flags=NEED)
    ack += msg(SET_MEM_TABLE, memtable([(0, 2 << 20, UVA, 0)]), flags=NEED, nfds=1, memfd=True)
    ack += msg(GET_QUEUE_NUM, flags=NEED)
    write('vu', 'reply-ack-failures', ack)
    # pieces, queued messages, and a message cut by the hangup
    pcs = msg(GET_FEATURES, split=True) + msg(SET_FEATURES, u64(1 << 32), split=True)
    pcs += msg(GET_QUEUE_NUM, defer=True) + msg(GET_PROTOCOL_FEATURES, defer=True)
    pcs += msg(GET_FEATURES)
    pcs += msg(SET_FEATURES, b'\0\0', size=8)
    write('vu', 'pieces-and-eof', pcs)
    # single broken messages, one per file
    bad = {
        'bad-version': msg(GET_FEATURES, flags=0),
        'bad-version-2': msg(GET_FEATURES, flags=2 | 8),
        'unknown-0': msg(0),
        'unknown-log-base': msg(SET_LOG_BASE, u64(0)),
        'unknown-large': msg(0xffffffff),
        'size-get-features': msg(GET_FEATURES, u64(0)),
        'size-set-features': msg(SET_FEATURES, b'\0' * 4),
        'size-vring-addr': msg(SET_VRING_ADDR, addr(0, 0, 0, 0)[:39]),
        'oversized': msg(SET_MEM_TABLE, b'', size=4097),
        'max-payload': msg(SET_MEM_TABLE, bytes(4096)),
        'huge-size': msg(GET_FEATURES, b'', size=0xffffffff),
        'index-range': msg(SET_VRING_NUM, state(2, 128)),
        'index-255': msg(SET_VRING_KICK, u64(255 | NOFD)),
        'vring-fd-extra-bits': msg(SET_VRING_CALL, u64(0x200 | NOFD)),
        'vring-fd-count': msg(SET_VRING_CALL, u64(0 | NOFD), nfds=1),
        'vring-fd-missing': msg(SET_VRING_KICK, u64(0)),
        'num-zero': msg(SET_VRING_NUM, state(0, 0)),
        'num-3': msg(SET_VRING_NUM, state(0, 3)),
        'num-2048': msg(SET_VRING_NUM, state(0, 2048)),
        'base-65536': msg(SET_VRING_BASE, state(0, 0x10000)),
        'enable-2': msg(SET_VRING_ENABLE, state(0, 2)),
        'mem-count-size': msg(SET_MEM_TABLE, struct.pack('<II', 1, 0), nfds=1, memfd=True),
        'mem-2-regions-1-fd': msg(SET_MEM_TABLE, memtable([(0, 4096, UVA, 0),
                                                           (4096, 4096, UVA + 4096, 0)]),
                                  nfds=1, memfd=True),
        'mem-9-regions': msg(SET_MEM_TABLE, struct.pack('<II', 9, 0) +
                             struct.pack('<QQQQ', 0, 4096, UVA, 0) * 8, nfds=7, memfd=True),
        'mem-too-large': msg(SET_MEM_TABLE, memtable([(0, 64 << 10, UVA, 4096)]), nfds=1,
                             memfd=True, pool2=True),
        'mem-wrap': msg(SET_MEM_TABLE, memtable([(2**64 - 4096, 8192, UVA, 0)]), nfds=1,
                        memfd=True),
        'mem-eventfd': msg(SET_MEM_TABLE, memtable([(0, 4096, UVA, 0)]), nfds=1),
        'fds-on-get-features': msg(GET_FEATURES, nfds=2),
        'fds-on-vring-num': msg(SET_VRING_NUM, state(0, 128), nfds=1),
        'fds-on-get-vring-base': msg(GET_VRING_BASE, state(0, 0), nfds=1),
        'too-many-fds': msg(GET_FEATURES, nfds=7, split=True),
        'config-range': msg(GET_CONFIG, config(250, 10)),
        'config-size-mismatch': msg(GET_CONFIG, config(0, 8)[:16], size=16),
        'inflight-shape': msg(GET_INFLIGHT_FD, inflight(0, 0, 0, 128)),
        'inflight-no-fd': msg(SET_INFLIGHT_FD, inflight(0x8000, 0, 1, 128)),
        'inflight-too-big': msg(SET_INFLIGHT_FD, inflight(0x100000, 0, 1, 128), nfds=1,
                                memfd=True, pool2=True),
        'inflight-offset': msg(SET_INFLIGHT_FD, inflight(0x1000, 100, 1, 64), nfds=1,
                               memfd=True),
        'set-features-unoffered': msg(SET_FEATURES, u64(1 << 63)),
        'set-protocol-unoffered': msg(SET_PROTOCOL_FEATURES, u64(1 << 1)),
        'ring-outside-memory': handshake(need=V, inflight_fd=False) +
        msg(SET_MEM_TABLE, MEM1, nfds=1, memfd=True) +
        msg(SET_VRING_NUM, state(0, 128)) +
        msg(SET_VRING_ADDR, addr(0, 0, 0x2000, 0x1000)) + msg(SET_VRING_KICK, u64(0), nfds=1),
    }
    for name, data in bad.items():
        write('vu', name, data)
    slot_seeds()
    log_seeds()


def memreg(gpa, size, uva, off):
    return u64(0) + struct.pack('<QQQQ', gpa, size, uva, off)


def slot_seeds():
    """Memory region by region (CONFIGURE_MEM_SLOTS), status and the
    back-end channel: a good sequence with running rings, and bad ones."""
    pf = u64(PROTOCOL | bits('PF_CONFIGURE_MEM_SLOTS PF_STATUS PF_BACKEND_REQ'))
    hs = msg(GET_FEATURES) + msg(SET_OWNER) + msg(GET_PROTOCOL_FEATURES)
    hs += msg(SET_PROTOCOL_FEATURES, pf) + msg(GET_MAX_MEM_SLOTS)
    hs += msg(SET_FEATURES, u64(FEATURES), flags=NEED)
    good = hs + msg(ADD_MEM_REG, memreg(0, 1 << 20, UVA, 0), flags=NEED, nfds=1, memfd=True)
    good += msg(SET_BACKEND_REQ_FD, nfds=1)
    good += start_queue(0, need=NEED)
    good += msg(ADD_MEM_REG, memreg(1 << 20, 64 << 10, UVA + (1 << 20), 0), flags=NEED,
                nfds=1, memfd=True, pool2=True)
    good += msg(SET_STATUS, u64(0xf)) + msg(GET_STATUS)
    good += msg(REM_MEM_REG, memreg(1 << 20, 64 << 10, UVA + (1 << 20), 0), flags=NEED)
    good += msg(SET_STATUS, u64(0)) + msg(GET_VRING_BASE, state(0, 0))
    write('vu', 'slots-handshake', good)
    bad = {
        'slots-overlap': hs + msg(ADD_MEM_REG, memreg(0, 1 << 20, UVA, 0), flags=NEED,
                                  nfds=1, memfd=True) +
        msg(ADD_MEM_REG, memreg(4096, 8192, UVA + (8 << 20), 0), flags=NEED, nfds=1,
            memfd=True),
        'slots-rem-unknown': hs + msg(REM_MEM_REG, memreg(0, 4096, UVA, 0), flags=NEED),
        'slots-past-fd': hs + msg(ADD_MEM_REG, memreg(0, 64 << 20, UVA, 0), nfds=1,
                                  memfd=True),
        'slots-no-fd': hs + msg(ADD_MEM_REG, memreg(0, 4096, UVA, 0)),
        'slots-short': hs + msg(ADD_MEM_REG, memreg(0, 4096, UVA, 0)[:32], nfds=1, memfd=True),
        'status-too-big': hs + msg(SET_STATUS, u64(0x1ff)),
        'backend-req-no-fd': hs + msg(SET_BACKEND_REQ_FD),
    }
    for name, data in bad.items():
        write('vu', name, data)


def logbase(size, offset):
    return struct.pack('<QQ', size, offset)


def in_request(slot, data_gpa):
    """Pokes of the slot-th IN (512 bytes into data_gpa) of a ring: its
    descriptors 3*slot.., header and status in pool 0 (guest memory) at
    0x3000 and 0x5000 + 0x100 * slot, and the avail ring holding the
    heads of requests 0..slot (avail->idx = slot + 1)."""
    nxt, wr = take('DESC_F_NEXT DESC_F_WRITE')
    first, hdr, status = 3 * slot, 0x3000 + 0x100 * slot, 0x5000 + 0x100 * slot
    s = poke(0, 16 * first, struct.pack('<QIHH', hdr, 16, nxt, first + 1) +
             struct.pack('<QIHH', data_gpa, 512, nxt | wr, first + 2) +
             struct.pack('<QIHH', status, 1, wr, 0))
    s += poke(0, hdr, struct.pack('<IIQ', W['BLK_T_IN'], 0, slot))
    s += poke(0, AVAIL, struct.pack('<HH', 0, slot + 1) +
              b''.join(struct.pack('<H', 3 * k) for k in range(slot + 1)))
    return s


def log_seeds():
    """The dirty log (LOG_SHMFD, VHOST_F_LOG_ALL): a migration as QEMU runs
    it over a polling ring that reads into guest memory (log base, log fd,
    LOG_ALL and VRING_F_LOG on with the ring running, a bigger log at an
    offset, logging off), and broken SET_LOG_BASE / SET_LOG_FD / VRING_F_LOG
    messages.  The logs are pool memfds 2 (64K) and 3 (4K); a 1 MiB guest
    needs 32 bytes of log."""
    log_all = 1 << W['F_LOG_ALL']
    f_log = W['VRING_F_LOG']
    pf = u64(PROTOCOL | bits('PF_LOG_SHMFD'))
    hs = msg(GET_FEATURES) + msg(SET_OWNER) + msg(GET_PROTOCOL_FEATURES)
    hs += msg(SET_PROTOCOL_FEATURES, pf) + msg(GET_QUEUE_NUM)
    hs += msg(SET_FEATURES, u64(FEATURES), flags=NEED)
    hs += msg(SET_MEM_TABLE, MEM1, flags=NEED, nfds=1, memfd=True)
    ring = UVA + DESC, UVA + USED, UVA + AVAIL
    run = hs + in_request(0, 0x4000) + start_queue(0, need=NEED, kick_nofd=True)
    log_on = msg(SET_FEATURES, u64(FEATURES | log_all), flags=NEED)
    log_on += msg(SET_VRING_ADDR, addr(0, *ring, flags=f_log, log=USED), flags=NEED)
    log_off = msg(SET_FEATURES, u64(FEATURES), flags=NEED)
    log_off += msg(SET_VRING_ADDR, addr(0, *ring), flags=NEED)
    mig = run + msg(SET_LOG_BASE, logbase(32, 0), nfds=1, memfd=True, pool2=True)
    mig += msg(SET_LOG_FD, nfds=1) + log_on + in_request(1, 0x6000)
    mig += msg(SET_LOG_BASE, logbase(4096, 4096), nfds=1, memfd=True, pool2=True)
    mig += in_request(2, 0x7000) + log_off
    mig += in_request(3, 0x8000) + msg(GET_VRING_BASE, state(0, 0))
    write('vu', 'log-migration', mig)
    # the reply asked for too; logging on before the ring starts
    early = hs + msg(SET_LOG_BASE, logbase(32, 0), flags=NEED, nfds=1, memfd=True, pool2=True)
    early += msg(SET_LOG_FD, flags=NEED, nfds=1) + msg(SET_FEATURES, u64(FEATURES | log_all))
    early += in_request(0, 0x4000) + msg(SET_VRING_NUM, state(0, 128))
    early += msg(SET_VRING_ADDR, addr(0, *ring, flags=f_log, log=USED))
    early += msg(SET_VRING_KICK, u64(0 | NOFD)) + msg(SET_VRING_CALL, u64(0), nfds=1)
    early += msg(SET_VRING_ENABLE, state(0, 1)) + msg(RESET_OWNER)
    write('vu', 'log-need-reply-early', early)
    # a 1-byte log (8 pages): the data lands beyond it; a used ring log
    # address near 2^64
    tiny = run + msg(SET_LOG_BASE, logbase(1, 0), nfds=1, memfd=True, pool2=True) + log_on
    tiny += in_request(1, 0x40000)
    tiny += msg(SET_VRING_ADDR, addr(0, *ring, flags=f_log, log=2**64 - 8), flags=NEED)
    tiny += in_request(2, 0x4000) + msg(GET_VRING_BASE, state(0, 0))
    write('vu', 'log-tiny', tiny)
    # LOG_ALL and VRING_F_LOG with no log base
    write('vu', 'log-all-no-base', run + log_on + in_request(1, 0x6000) +
          msg(GET_VRING_BASE, state(0, 0)))
    bad = {
        'log-no-fd': hs + msg(SET_LOG_BASE, logbase(32, 0)),
        'log-two-fds': hs + msg(SET_LOG_BASE, logbase(32, 0), nfds=2, memfd=True, pool2=True),
        'log-size-zero': hs + msg(SET_LOG_BASE, logbase(0, 0), nfds=1, memfd=True, pool2=True),
        'log-wrap': hs + msg(SET_LOG_BASE, logbase(8192, 2**64 - 4096), nfds=1, memfd=True,
                             pool2=True),
        'log-past-fd': hs + msg(SET_LOG_BASE, logbase(68 << 10, 0), nfds=1, memfd=True,
                                pool2=True),
        'log-offset-past-fd': hs + msg(SET_LOG_BASE, logbase(4096, 1 << 20), nfds=1,
                                       memfd=True, pool2=True),
        'log-eventfd': hs + msg(SET_LOG_BASE, logbase(32, 0), nfds=1),
        'log-short': hs + msg(SET_LOG_BASE, u64(32), nfds=1, memfd=True, pool2=True),
        'log-long': hs + msg(SET_LOG_BASE, logbase(32, 0) + u64(0), nfds=1, memfd=True,
                             pool2=True),
        'log-not-negotiated': handshake(need=V, inflight_fd=False) +
        msg(SET_LOG_BASE, logbase(32, 0), nfds=1, memfd=True, pool2=True),
        'log-fd-none': hs + msg(SET_LOG_FD, flags=NEED),
        'log-fd-two': hs + msg(SET_LOG_FD, nfds=2),
        'log-fd-payload': hs + msg(SET_LOG_FD, u64(0), nfds=1),
        'log-vring-flag-not-negotiated': handshake(need=V, inflight_fd=False) +
        msg(SET_MEM_TABLE, MEM1, nfds=1, memfd=True) +
        msg(SET_VRING_ADDR, addr(0, *ring, flags=f_log, log=USED)),
    }
    for name, data in bad.items():
        write('vu', name, data)


# ---- vq --------------------------------------------------------------------
G0 = 0x10000                    # guest memory image starts here
DESC_G, AVAIL_G, USED_G, INFL_G = 0x10000, 0x11000, 0x11400, 0x11c00
F_NEXT, F_WRITE, F_IND = take('DESC_F_NEXT DESC_F_WRITE DESC_F_INDIRECT')
T_IN, T_OUT, T_FLUSH, T_GET_ID, T_DISCARD, T_WZ = \
    take('BLK_T_IN BLK_T_OUT BLK_T_FLUSH BLK_T_GET_ID BLK_T_DISCARD BLK_T_WRITE_ZEROES')


class Image:
    def __init__(self, log2num=4):
        self.mem = bytearray(0x20000)
        self.num = 1 << log2num
        self.log2 = log2num
        self.heap = 0x13000
        self.nd = 0
        self.avail = 0

    def put(self, gpa, data):
        self.mem[gpa - G0:gpa - G0 + len(data)] = data

    def alloc(self, n, align=16):
        a = (self.heap + align - 1) & ~(align - 1)
        self.heap = a + n
        return a

    def desc(self, i, a, ln, fl, nx):
        self.put(DESC_G + 16 * i, struct.pack('<QIHH', a, ln, fl, nx))

    def chain(self, segs):
        """segs: (gpa, len, write); returns head"""
        head = self.nd
        for k, (a, ln, w) in enumerate(segs):
            last = k + 1 == len(segs)
            self.desc(self.nd, a, ln, (F_WRITE if w else 0) | (0 if last else F_NEXT),
                      0 if last else self.nd + 1)
            self.nd += 1
        return head

    def publish(self, head):
        self.put(AVAIL_G + 4 + 2 * (self.avail % self.num), struct.pack('<H', head))
        self.avail = (self.avail + 1) & 0xffff
        self.put(AVAIL_G + 2, struct.pack('<H', self.avail))

    def req(self, typ, sector, data=(), in_one=False):
        h = self.alloc(16)
        self.put(h, struct.pack('<IIQ', typ, 0, sector))
        st = self.alloc(1, 1)
        segs = [(h, 16, False)] + list(data) + [(st, 1, True)]
        self.publish(self.chain(segs))

    def bytes(self, flags=0, last_avail=0, used=0, ctl=0, trim=True):
        b = bytes([flags | self.log2]) + struct.pack('<HHB', last_avail, used, ctl)
        m = bytes(self.mem)
        if trim:
            m = m.rstrip(b'\0')
        return b + m



# packed rings (ctl bit 3): descriptors at DESC_G, the driver's event area at
# AVAIL_G; base = offset | wrap << 15 for avail ([1..2]) and used ([3..4])
PK_AVAIL, PK_USED = 1 << 7, 1 << 15
FRESH = 0x8000                   # offset 0, wrap counter 1


class Packed(Image):
    def __init__(self, log2num=4):
        super().__init__(log2num)
        self.pos = 0
        self.wrap = 1

    def pdesc(self, i, a, ln, id_, fl):
        self.put(DESC_G + 16 * i, struct.pack('<QIHH', a, ln, id_, fl))

    def pchain(self, segs, id_, flags=None):
        """segs: (gpa, len, write); the first descriptor's flags last"""
        first = None
        for k, (a, ln, w) in enumerate(segs):
            last = k + 1 == len(segs)
            fl = (F_WRITE if w else 0) | (0 if last else F_NEXT) | \
                (PK_AVAIL if self.wrap else PK_USED)
            if flags is not None:
                fl = flags[k]
            if k == 0:
                first = (self.pos, a, ln, fl)
            self.pdesc(self.pos, a, ln, id_, fl)
            self.pos += 1
            if self.pos == self.num:
                self.pos = 0
                self.wrap ^= 1

    def preq(self, id_, typ, sector, data=()):
        h = self.alloc(16)
        self.put(h, struct.pack('<IIQ', typ, 0, sector))
        st = self.alloc(1, 1)
        self.pchain([(h, 16, False)] + list(data) + [(st, 1, True)], id_)

    def pbytes(self, flags=0, avail=FRESH, used=FRESH, ctl=0):
        return self.bytes(flags=flags, last_avail=avail, used=used, ctl=ctl | 8)


def packed_seeds():
    im = Packed()
    d = im.alloc(4096, 512)
    im.put(d, bytes(range(256)) * 16)
    im.preq(3, T_OUT, 8, [(d, 4096, False)])
    im.preq(4, T_IN, 8, [(im.alloc(4096, 512), 4096, True)])
    im.preq(5, T_GET_ID, 0, [(im.alloc(20), 20, True)])
    im.preq(6, T_FLUSH, 0)
    write('vq', 'packed-write-read-getid', im.pbytes(ctl=1 | 4))
    # indirect
    im = Packed()
    tbl = im.alloc(16 * 3, 16)
    h = im.alloc(16)
    im.put(h, struct.pack('<IIQ', T_IN, 0, 0))
    d = im.alloc(512, 512)
    st = im.alloc(1, 1)
    im.put(tbl, struct.pack('<QIHH', h, 16, 0, 0) +
           struct.pack('<QIHH', d, 512, 0, F_WRITE) +
           struct.pack('<QIHH', st, 1, 0, F_WRITE))
    im.pchain([(tbl, 48, False)], 1, [F_IND | PK_AVAIL])
    write('vq', 'packed-indirect', im.pbytes(flags=0x08))
    # across the end of a ring of 8: positions 6, 7, 0 (wrap 1 then 0)
    im = Packed(3)
    im.pos = 6
    im.preq(2, T_IN, 1, [(im.alloc(512, 512), 512, True)])
    im.preq(3, T_OUT, 1, [(im.alloc(512, 512), 512, False)])
    write('vq', 'packed-wrap', im.pbytes(avail=6 | 0x8000, used=6 | 0x8000, ctl=1))
    # driver event DESC mode with EVENT_IDX
    im = Packed()
    im.preq(0, T_FLUSH, 0)
    im.put(AVAIL_G, struct.pack('<HH', 3 | 0x8000, 2))
    write('vq', 'packed-event-desc', im.pbytes(flags=0x08, ctl=0x10 | 4))
    # inflight: a fresh region, then one to recover
    im = Packed()
    im.preq(7, T_IN, 0, [(im.alloc(512, 512), 512, True)])
    write('vq', 'packed-inflight-fresh', im.pbytes(flags=0x40 | 0x80))
    im = Packed()
    # region: version 1, 16 entries, used 3/1 (old 0/1: a batch not retired)
    hdr = struct.pack('<QHHHHHHBB7x', 0, 1, 16, 0, 0, 3, 0, 1, 1)
    ent = struct.pack('<BBHHHQHHIQ', 1, 0, 1, 1, 2, 5, 9, F_NEXT, 16, 0x13000) + \
        struct.pack('<BBHHHQHHIQ', 0, 0, 0xffff, 0, 0, 0, 9, F_WRITE, 1, 0x13100)
    im.put(INFL_G, hdr + ent)
    write('vq', 'packed-inflight-recover', im.pbytes(flags=0x40 | 0x80, ctl=1))
    # ring breakers
    im = Packed()
    im.preq(16, T_FLUSH, 0)
    write('vq', 'packed-id-out-of-range', im.pbytes())
    im = Packed()
    im.preq(1, T_FLUSH, 0)
    im.preq(1, T_FLUSH, 0)
    write('vq', 'packed-id-twice', im.pbytes())
    im = Packed()
    b = im.alloc(16)
    im.pchain([(b, 16, False)] * 3, 0, [F_NEXT | PK_AVAIL, PK_AVAIL | PK_USED, PK_AVAIL])
    write('vq', 'packed-wrap-bits', im.pbytes())
    im = Packed(2)
    im.pchain([(b, 16, False)] * 4, 0, [F_NEXT | PK_AVAIL] * 4)
    write('vq', 'packed-chain-too-long', im.pbytes())
    im = Packed()
    t1 = im.alloc(16, 16)
    im.put(t1, struct.pack('<QIHH', t1, 16, 0, F_IND))
    im.pchain([(t1, 16, False)], 0, [F_IND | PK_AVAIL])
    write('vq', 'packed-nested-indirect', im.pbytes())
    im = Packed()
    im.pchain([(t1, 0, False)], 0, [F_IND | PK_AVAIL])
    write('vq', 'packed-empty-indirect', im.pbytes())
    write('vq', 'packed-bad-base', im.pbytes(avail=20, used=3))


def vq_seeds():
    packed_seeds()
    im = Image()
    im.req(T_FLUSH, 0)
    write('vq', 'flush', im.bytes())

    im = Image()
    d = im.alloc(4096, 512)
    im.put(d, bytes(range(256)) * 16)
    im.req(T_OUT, 8, [(d, 4096, False)])
    r = im.alloc(4096, 512)
    im.req(T_IN, 8, [(r, 4096, True)])
    im.req(T_GET_ID, 0, [(im.alloc(20), 20, True)])
    write('vq', 'write-read-getid', im.bytes(ctl=1))

    im = Image()
    b = im.alloc(16 + 1024)
    im.put(b, struct.pack('<IIQ', T_OUT, 0, 3))
    st = im.alloc(1, 1)
    im.publish(im.chain([(b, 16 + 1024, False), (st, 1, True)]))
    im.req(T_IN, 3, [(im.alloc(1025), 1025, True)])
    write('vq', 'header-data-one-desc', im.bytes())

    im = Image()
    segs = [(0x1fe00 + 0x200 * i if i % 2 else im.alloc(512, 512), 512, False)
            for i in range(12)]
    segs.append((0x1ff00, 512, False))          # straddles the two regions
    im.req(T_OUT, 0, segs)
    write('vq', 'many-segments-straddle', im.bytes())

    im = Image()
    tbl = im.alloc(16 * 3, 16)
    h = im.alloc(16)
    im.put(h, struct.pack('<IIQ', T_IN, 0, 0))
    d = im.alloc(512, 512)
    st = im.alloc(1, 1)
    im.put(tbl, struct.pack('<QIHH', h, 16, F_NEXT, 1) +
           struct.pack('<QIHH', d, 512, F_NEXT | F_WRITE, 2) +
           struct.pack('<QIHH', st, 1, F_WRITE, 0))
    im.desc(0, tbl, 48, F_IND, 0)
    im.nd = 1
    im.publish(0)
    write('vq', 'indirect', im.bytes())

    # discard / write zeroes
    for name, typ, flags in (('discard', T_DISCARD, 0), ('discard-flag', T_DISCARD, 1),
                             ('write-zeroes-unmap', T_WZ, 1), ('write-zeroes-bad', T_WZ, 2)):
        im = Image()
        s = im.alloc(32)
        im.put(s, struct.pack('<QII', 2, 8, flags) + struct.pack('<QII', 20, 4, 0))
        im.req(typ, 0, [(s, 32, False)])
        write('vq', name, im.bytes())
    # read-only device
    im = Image()
    im.req(T_OUT, 0, [(im.alloc(512, 512), 512, False)])
    write('vq', 'readonly-write', im.bytes(flags=0x10))
    # errors that are statuses
    im = Image()
    im.req(T_OUT, 128, [(im.alloc(512, 512), 512, False)])        # past the end
    im.req(T_IN, 0, [(im.alloc(100), 100, True)])                  # not a sector
    im.req(99, 0)                                                  # unknown type
    im.req(T_IN, 2**55, [(im.alloc(512, 512), 512, True)])            # sector overflow
    im.req(T_IN, 0, [(0x40000, 512, True)])                        # unmapped
    im.req(T_IN, 0, [(2**64 - 16, 32, True)])                      # wraps
    h = im.alloc(16)
    im.publish(im.chain([(h, 16, False)]))                         # no status
    write('vq', 'status-errors', im.bytes())
    # ring breakers
    im = Image()
    im.desc(0, 0x12000, 16, F_NEXT, 1)
    im.desc(1, 0x12000, 16, F_NEXT, 0)
    im.publish(0)
    write('vq', 'loop', im.bytes())
    im = Image()
    im.publish(40)
    write('vq', 'head-out-of-range', im.bytes())
    im = Image()
    im.req(T_FLUSH, 0)
    im.put(AVAIL_G + 2, struct.pack('<H', 100))
    write('vq', 'avail-jump', im.bytes())
    im = Image()
    im.desc(0, 0x12000, 20, F_IND, 0)
    im.publish(0)
    write('vq', 'indirect-bad-len', im.bytes())
    im = Image()
    tbl = im.alloc(32, 16)
    im.put(tbl, struct.pack('<QIHH', tbl, 32, F_IND, 0) + bytes(16))
    im.desc(0, tbl, 32, F_IND, 0)
    im.publish(0)
    write('vq', 'indirect-nested', im.bytes())
    # notifications, index wrap
    im = Image()
    for _ in range(3):
        im.req(T_FLUSH, 0)
    im.put(AVAIL_G + 4 + 2 * im.num, struct.pack('<H', 1))          # used_event
    write('vq', 'event-idx', im.bytes(flags=0x08, ctl=4))
    im = Image()
    im.avail = 65534
    for _ in range(4):
        im.req(T_FLUSH, 0)
    write('vq', 'index-wrap', im.bytes(last_avail=65534, used=65534))
    im = Image(log2num=0)
    im.req(T_FLUSH, 0)
    write('vq', 'size-1', im.bytes())
    im = Image(log2num=7)
    for _ in range(40):
        im.publish(0)
    im.nd = 0
    im.req(T_FLUSH, 0)
    im.put(AVAIL_G + 2, struct.pack('<H', 41))
    write('vq', 'batch-128', im.bytes(ctl=3))
    # inflight: a region with two requests marked in flight, recovered
    im = Image()
    im.req(T_FLUSH, 0)
    im.req(T_FLUSH, 0)
    im.put(INFL_G, struct.pack('<QHHHH', 0, 1, im.num, 0, 0))
    for head, counter in ((0, 2), (3, 1)):
        im.put(INFL_G + 16 + 16 * head, struct.pack('<B5xHQ', 1, 0, counter))
    write('vq', 'inflight-recover', im.bytes(flags=0xc0))
    im = Image()
    im.req(T_FLUSH, 0)
    write('vq', 'inflight-track', im.bytes(flags=0x40))


# ---- cfg -------------------------------------------------------------------
def cfg_seeds():
    texts = {
        'config-size': (0, b'64M\n'),
        'config-full': (0, b'size=64M block_size=4096 backing=ram readonly=0 queues=4 '
                           b'serial=vhostd-01\n'),
        'config-lines': (1, b'size=1G\nbacking=/dev/sdb\nreadonly=yes\n'),
        'config-null': (0, b'backing=null size=1T'),
        'config-dup': (0, b'size=1M size=2M'),
        'config-unknown': (0, b'colour=blue'),
        'config-empty': (0, b'  \n'),
        'config-nul': (0, b'size=1M\0'),
        'config-two-sizes': (0, b'1M 2M'),
        'config-serial-empty': (0, b'serial='),
        'key-size': (2 | (0 << 3), b' 512K\n'),
        'key-block-size': (2 | (1 << 3), b'4096\n'),
        'key-backing': (2 | (2 << 3), b'/var/lib/img.raw\n'),
        'key-readonly': (2 | (3 << 3), b'on\n'),
        'key-queues': (2 | (4 << 3), b'16\n'),
        'key-serial': (2 | (5 << 3), b'ABCDEFGHIJKLMNOPQRST\n'),
        'key-serial-long': (2 | (5 << 3), b'ABCDEFGHIJKLMNOPQRSTU\n'),
        'key-two-values': (2, b'1M 2M'),
        'size-max': (3, b'18446744073709551615'),
        'size-overflow': (3, b'18446744073709551616'),
        'size-shift-overflow': (3, b'16777216T'),
        'size-zero': (3, b'0K'),
        'size-junk': (3, b'12MB'),
        'cpus-list': (4 | (8 << 3), b'0,1,4-5'),
        'cpus-range': (4 | (31 << 3), b'0-3'),
        'cpus-dup': (4 | (8 << 3), b'1,0-2'),
        'cpus-big': (4, b'0-4294967296'),
        'name-ok': (5, b'vhostblk0'),
        'name-dot': (5, b'.hidden'),
        'name-slash': (5, b'a/b'),
        'key-lookup': (6, b'block_size'),
        'value-queues': (7 | (4 << 3), b'17'),
        'value-unknown-key': (7 | (14 << 3), b'x'),
        'config-limits': (0, b'iops_limit=2000 bps_limit=8M read_bps_limit=0 '
                             b'write_bps_limit=1T iops_burst=64 bps_burst=1M group=tenant-a\n'),
        'config-group-empty': (1, b'group=\niops_limit=0'),
        'config-limit-bad': (0, b'bps_limit=1025T'),
        'key-iops-limit': (2 | (7 << 3), b'2000\n'),
        'key-bps-limit': (2 | (8 << 3), b'8M\n'),
        'key-bps-burst': (2 | (12 << 3), b'0\n'),
        'key-group': (2 | (13 << 3), b'tenant-a\n'),
        'key-group-empty': (2 | (13 << 3), b'\n'),
        'key-group-bad': (2 | (13 << 3), b'.x\n'),
        'group-config': (6, b'iops_limit=100\nbps_burst=64K\n'),
        'group-config-size': (6, b'size=1M'),
        'value-iops-max': (7 | (7 << 3), b'1125899906842625'),
    }
    for name, (sel, text) in texts.items():
        write('cfg', name, bytes([sel]) + text)


if __name__ == '__main__':
    vu_seeds()
    vq_seeds()
    cfg_seeds()
    print('seeds written under', os.path.join(HERE, 'corpus'), file=sys.stderr)
