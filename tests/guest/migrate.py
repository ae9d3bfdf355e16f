#!/usr/bin/env python3
"""migrate.py: drive one live migration through QMP (tests/guest/qmp.py) and
report what QEMU says about it.

    migrate.py [options] SRC_QMP URI

On the source QEMU (its QMP socket SRC_QMP): turns the migration events on,
sets the downtime limit and the bandwidth, runs ``migrate`` to URI (e.g.
``unix:/path/mig.sock``, where the destination waits with ``-incoming``), and
polls ``query-migrate`` until the migration completed or failed.  Every change
of the status is printed as it is seen (``migrate: +MS status``), then the
final ``query-migrate`` answer as JSON, then one line for the caller to parse:

    MIGRATE-RESULT status=completed total_ms=N downtime_ms=N setup_ms=N
        transferred=BYTES ram_total=BYTES dirty_sync=N wall_ms=N src_status=S
        [dst_status=S]

(one line; ``wall_ms`` is the host's time from ``migrate`` to the answer
``completed``, ``src_status``/``dst_status`` are ``query-status`` of each side
afterwards).

Options:
    --dst-qmp PATH       also ask the destination's status afterwards
    --downtime-ms N      migrate-set-parameters downtime-limit (default 300,
                         QEMU's own default)
    --bandwidth BYTES    max-bandwidth in bytes/s (default 1 GiB/s: QEMU's
                         default of 32 MiB/s is for networks, not one host)
    --timeout SEC        limit for the whole migration (default 120); on
                         timeout the migration is cancelled (migrate_cancel)

Exit status: 0 completed; 1 failed, cancelled or refused (QEMU's error on
stderr and in MIGRATE-RESULT); 3 timeout; 4 QMP connection trouble.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qmp import QMP, QMPError, QMPTimeout  # noqa: E402


def status_of(path, timeout=10):
    try:
        with QMP(path, timeout) as q:
            return q.cmd("query-status").get("status", "?")
    except (QMPError, QMPTimeout, OSError, ConnectionError) as e:
        return "unknown(%s)" % str(e).replace(" ", "_")


def main(argv):
    opts = {"--dst-qmp": None, "--downtime-ms": "300",
            "--bandwidth": str(1 << 30), "--timeout": "120"}
    args = []
    i = 0
    while i < len(argv):
        if argv[i] in opts and i + 1 < len(argv):
            opts[argv[i]] = argv[i + 1]
            i += 2
        elif argv[i] in ("-h", "--help"):
            print(__doc__, file=sys.stderr)
            return 2
        else:
            args.append(argv[i])
            i += 1
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    src, uri = args
    limit = float(opts["--timeout"])
    result = {"status": "not-started"}
    rc = 1
    q = QMP(src, limit + 30)
    try:
        q.connect()
        q.cmd("migrate-set-capabilities",
              {"capabilities": [{"capability": "events", "state": True}]})
        q.cmd("migrate-set-parameters",
              {"downtime-limit": int(opts["--downtime-ms"]),
               "max-bandwidth": int(opts["--bandwidth"])})
        params = q.cmd("query-migrate-parameters")
        print("migrate: parameters downtime-limit=%s ms max-bandwidth=%s B/s" %
              (params.get("downtime-limit"), params.get("max-bandwidth")), flush=True)
        t0 = time.monotonic()
        try:
            q.cmd("migrate", {"uri": uri})
        except QMPError as e:
            # e.g. a migration blocker: "vhost-user backend lacks ..."
            print("migrate: refused: %s: %s" % (e.error_class, e.desc), file=sys.stderr)
            print("MIGRATE-RESULT status=refused error=%s" %
                  json.dumps(e.desc), flush=True)
            return 1
        last = None
        info = {}
        while True:
            info = q.cmd("query-migrate")
            st = info.get("status", "?")
            el = int((time.monotonic() - t0) * 1000)
            if st != last:
                ram = info.get("ram", {})
                print("migrate: +%d ms %s (transferred=%s dirty-sync-count=%s)" %
                      (el, st, ram.get("transferred", "-"),
                       ram.get("dirty-sync-count", "-")), flush=True)
                last = st
            if st in ("completed", "failed", "cancelled"):
                break
            if time.monotonic() - t0 > limit:
                print("migrate: not done after %g s (status %s): migrate_cancel" %
                      (limit, st), file=sys.stderr)
                print(json.dumps(info), flush=True)
                try:
                    q.cmd("migrate_cancel")
                except QMPError:
                    pass
                print("MIGRATE-RESULT status=timeout last=%s" % st, flush=True)
                return 3
            time.sleep(0.1)
        wall = int((time.monotonic() - t0) * 1000)
        print(json.dumps(info), flush=True)
        ram = info.get("ram", {})
        result = {
            "status": info.get("status"),
            "total_ms": info.get("total-time", "?"),
            "downtime_ms": info.get("downtime", "?"),
            "setup_ms": info.get("setup-time", "?"),
            "transferred": ram.get("transferred", "?"),
            "ram_total": ram.get("total", "?"),
            "dirty_sync": ram.get("dirty-sync-count", "?"),
            "wall_ms": wall,
        }
        if info.get("status") != "completed":
            result["error"] = json.dumps(info.get("error-desc", ""))
        rc = 0 if info.get("status") == "completed" else 1
    except QMPTimeout as e:
        print("migrate: QMP: %s" % e, file=sys.stderr)
        print("MIGRATE-RESULT status=qmp-timeout", flush=True)
        return 3
    except QMPError as e:
        print("migrate: %s: %s" % (e.command, e.desc), file=sys.stderr)
        print("MIGRATE-RESULT status=qmp-error error=%s" % json.dumps(e.desc), flush=True)
        return 1
    except (OSError, ConnectionError, ValueError) as e:
        print("migrate: QMP connection: %s" % e, file=sys.stderr)
        print("MIGRATE-RESULT status=qmp-connection", flush=True)
        return 4
    finally:
        q.close()
    result["src_status"] = status_of(src)
    if opts["--dst-qmp"]:
        result["dst_status"] = status_of(opts["--dst-qmp"])
    print("MIGRATE-RESULT " + " ".join("%s=%s" % kv for kv in result.items()), flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
