#!/usr/bin/env python3
"""qmp.py: a small client of the QEMU Machine Protocol (QMP), standard
library only, usable as a module or from shell scripts.

    qmp.py [options] SOCKET COMMAND [ARGUMENTS-JSON]

connects to QEMU's QMP UNIX socket (``-qmp unix:SOCKET,server=on,wait=off``),
negotiates capabilities, runs COMMAND with the JSON object ARGUMENTS and
prints its ``return`` value as one line of JSON on stdout.  Options:

    --timeout SEC        overall limit (connect, command, event; default 30)
    --event NAME         after the command succeeded, wait for the event NAME
                         (e.g. DEVICE_DELETED) and print it as a second line
    --match KEY=VALUE    with --event: only an event whose data[KEY] == VALUE
                         counts (repeatable), e.g. --match device=dimm3

Exit status: 0 success; 1 QEMU answered with an error (its class and
description on stderr); 2 usage; 3 timeout (no connection, no answer or no
matching event in time); 4 the connection failed or was closed.

As a module:  with QMP(path) as q: q.cmd("query-status"); q.wait_event(...)
"""
import json
import socket
import sys
import time


class QMPError(Exception):
    """QEMU answered a command with {"error": ...}."""

    def __init__(self, command, error):
        self.command = command
        self.error_class = error.get("class", "?")
        self.desc = error.get("desc", "")
        super().__init__("%s: %s: %s" % (command, self.error_class, self.desc))


class QMPTimeout(Exception):
    pass


class QMP:
    def __init__(self, path, timeout=30.0):
        self.path = path
        self.deadline = time.monotonic() + timeout
        self.sock = None
        self.buf = b""
        self.events = []
        self.greeting = None

    # -- connection -------------------------------------------------------
    def _left(self):
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise QMPTimeout("timed out")
        return left

    def connect(self):
        last = None
        while True:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.settimeout(self._left())
                s.connect(self.path)
                break
            except (FileNotFoundError, ConnectionRefusedError) as e:
                s.close()
                last = e
                if time.monotonic() + 0.1 >= self.deadline:
                    raise QMPTimeout("cannot connect to %s: %s" % (self.path, last))
                time.sleep(0.1)
        self.sock = s
        self.greeting = self._read()
        if "QMP" not in self.greeting:
            raise ConnectionError("no QMP greeting from %s: %r" % (self.path, self.greeting))
        self.cmd("qmp_capabilities")
        return self

    def close(self):
        if self.sock:
            self.sock.close()
            self.sock = None

    def __enter__(self):
        return self.connect()

    def __exit__(self, *exc):
        self.close()

    # -- messages ---------------------------------------------------------
    def _read(self):
        while b"\n" not in self.buf:
            self.sock.settimeout(self._left())
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise QMPTimeout("timed out waiting for QEMU")
            if not chunk:
                raise ConnectionError("QEMU closed the QMP connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        line = line.strip()
        if not line:
            return self._read()
        return json.loads(line)

    def cmd(self, command, arguments=None):
        msg = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        self.sock.settimeout(self._left())
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            m = self._read()
            if "event" in m:
                self.events.append(m)
                continue
            if "error" in m:
                raise QMPError(command, m["error"])
            if "return" in m:
                return m["return"]

    def wait_event(self, name, match=None):
        match = match or {}

        def ok(ev):
            if ev.get("event") != name:
                return False
            data = ev.get("data", {})
            return all(str(data.get(k)) == v for k, v in match.items())

        for i, ev in enumerate(self.events):
            if ok(ev):
                del self.events[i]
                return ev
        while True:
            m = self._read()
            if "event" in m and ok(m):
                return m
            if "event" in m:
                self.events.append(m)


def main(argv):
    timeout = 30.0
    event = None
    match = {}
    args = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--timeout" and i + 1 < len(argv):
            timeout = float(argv[i + 1])
            i += 2
        elif a == "--event" and i + 1 < len(argv):
            event = argv[i + 1]
            i += 2
        elif a == "--match" and i + 1 < len(argv) and "=" in argv[i + 1]:
            k, v = argv[i + 1].split("=", 1)
            match[k] = v
            i += 2
        elif a in ("-h", "--help"):
            print(__doc__, file=sys.stderr)
            return 2
        else:
            args.append(a)
            i += 1
    if len(args) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    path, command = args[0], args[1]
    try:
        arguments = json.loads(args[2]) if len(args) == 3 else None
    except ValueError as e:
        print("qmp: bad ARGUMENTS-JSON %r: %s" % (args[2], e), file=sys.stderr)
        return 2
    q = QMP(path, timeout)
    phase = "connect to " + path
    try:
        q.connect()
        phase = command
        ret = q.cmd(command, arguments)
        print(json.dumps(ret), flush=True)
        if event:
            phase = "event %s%s" % (event, " " + json.dumps(match) if match else "")
            print(json.dumps(q.wait_event(event, match)), flush=True)
        return 0
    except QMPError as e:
        print("qmp: %s: error %s: %s" % (command, e.error_class, e.desc), file=sys.stderr)
        return 1
    except QMPTimeout as e:
        print("qmp: %s: %s (%gs)" % (phase, e, timeout), file=sys.stderr)
        return 3
    except (OSError, ConnectionError, ValueError) as e:
        print("qmp: %s: %s" % (phase, e), file=sys.stderr)
        return 4
    finally:
        q.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
