#!/usr/bin/env python3
"""How fast a dead reverse link is noticed, per `keepalive` setting (tuning.md, Liveness).

Starts an echo back-end, a DMZ and an internal gateway (the release binaries), parks
`--prepared` connections, then drops every packet of the reverse port with iptables (a link
gone dark: no FIN, no RST) and measures, from the moment the rules are in:
  - dmz:      until the DMZ's /stats shows no prepared connection left,
  - internal: until the internal gateway counts every parked leg lost,
and, once the rules are removed, until the pool is full again. Needs root (iptables).

    cargo build --release -p sallyport -p sallyport-bench
    python3 bench/liveness.py --keepalive 2s,5s,30s
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stats(admin):
    with urllib.request.urlopen(f"http://{admin}/stats", timeout=2) as r:
        return json.load(r)


def wait(what, predicate, limit, since=None):
    """Seconds from `since` (default: now) until `predicate` holds."""
    start = time.monotonic()
    since = start if since is None else since
    while time.monotonic() - start < limit:
        try:
            if predicate():
                return time.monotonic() - since
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"timed out after {limit}s waiting for {what}")


def iptables(op, port):
    for flag in ("--dport", "--sport"):
        subprocess.run(["iptables", op, "INPUT", "-i", "lo", "-p", "tcp", flag, str(port),
                        "-j", "DROP"], check=True)


def run_one(keepalive, prepared, limit):
    tmp = tempfile.mkdtemp(prefix="sallyport-liveness-")
    echo, reverse, public = free_port(), free_port(), free_port()
    dmz_admin, int_admin = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    dmz = os.path.join(tmp, "dmz.toml")
    internal = os.path.join(tmp, "internal.toml")
    with open(dmz, "w") as f:
        f.write(f'[gateway]\nadmin = "{dmz_admin}"\n[reverse]\nlisten = "127.0.0.1:{reverse}"\n'
                f'keepalive = "{keepalive}"\n[[service]]\nname = "echo"\n'
                f'accept = "tcp://127.0.0.1:{public}"\nconnect = "reverse://echo"\n')
    with open(internal, "w") as f:
        f.write(f'[gateway]\nadmin = "{int_admin}"\n[[service]]\nname = "echo"\n'
                f'accept = "reverse://127.0.0.1:{reverse}/echo"\n'
                f'connect = "tcp://127.0.0.1:{echo}"\nprepared = {prepared}\n'
                f'keepalive = "{keepalive}"\nconnect_timeout = "1s"\n')
    procs = [subprocess.Popen([os.path.join(BIN, "sallyport-bench"), "echo", "--listen",
                               f"127.0.0.1:{echo}"], stdout=subprocess.DEVNULL)]
    try:
        for path in (dmz, internal):
            procs.append(subprocess.Popen([os.path.join(BIN, "sallyport"), "run", "--config", path],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            time.sleep(0.3)

        def dmz_prepared():
            return stats(dmz_admin)["services"]["echo"]["prepared"]

        def lost():
            return stats(int_admin)["services"]["echo"].get("prepared_lost", 0)

        wait("the pool to fill", lambda: dmz_prepared() == prepared, 20)
        lost_before = lost()
        iptables("-I", reverse)
        dark = time.monotonic()
        try:
            t_dmz = wait("the DMZ to drop its parked legs", lambda: dmz_prepared() == 0, limit,
                         dark)
            t_int = wait("the internal gateway to count them lost",
                         lambda: lost() >= lost_before + prepared, limit, dark)
        finally:
            iptables("-D", reverse)
        t_refill = wait("the pool to refill", lambda: dmz_prepared() == prepared, limit)
        return t_dmz, t_int, t_refill
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=10)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keepalive", default="2s,5s,30s")
    ap.add_argument("--prepared", type=int, default=4)
    ap.add_argument("--limit", type=float, default=120.0, help="seconds per wait")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (iptables)")
    print("| keepalive | DMZ drops parked legs | internal counts them lost | pool refilled after |")
    print("|---|---|---|---|")
    for k in args.keepalive.split(","):
        t_dmz, t_int, t_refill = run_one(k, args.prepared, args.limit)
        print(f"| `{k}` | {t_dmz:.1f} s | {t_int:.1f} s | {t_refill:.1f} s |", flush=True)


if __name__ == "__main__":
    main()
