#!/usr/bin/python3
"""System calls per plain IMAP login, counted by strace (issue 16).

    /usr/bin/python3 bench/syscalls.py [--n 500] [--concurrency 16]
        [--bin build/switchyard] [--before OLD_BINARY]

Starts the harness Dovecot and Switchyard with one worker thread (the
side-by-side bench's configuration), warms it up with 200 logins, then
attaches `strace -f -c` to it for --n logins of sy-loadgen and prints each
system call's count per login, errors included, and the total. With
--before, the other binary is counted the same way right after, in front of
the same Dovecot. strace slows the proxy down a lot, so only the counts mean
something here, never the times.
"""

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import side_by_side as sbs  # noqa: E402
import benchlib  # noqa: E402


def count(d, binary, backend, n, conc, name):
    p, pid, port = sbs.start_switchyard(d, binary, backend, 1, name)
    try:
        sbs.loadgen(port, 200, conc)
        out = os.path.join(d, f"{name}.strace")
        st = subprocess.Popen(["strace", "-f", "-c", "-o", out, "-p", str(pid)],
                              stderr=subprocess.PIPE, text=True)
        # strace says "Process N attached" once it is tracing every thread.
        for line in st.stderr:
            if "attached" in line:
                break
        logins, errors, _ = sbs.loadgen(port, n, conc)
        st.send_signal(signal.SIGINT)
        st.wait()
    finally:
        p.kill()
        p.wait()
    calls = {}
    with open(out) as f:
        for line in f:
            m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(\d+)?\s*(\w+)$", line)
            if m and m.group(3) != "total":
                calls[m.group(3)] = (int(m.group(1)), int(m.group(2) or 0))
    return logins, errors, calls


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--bin", default=benchlib.DEFAULT_BIN)
    ap.add_argument("--before", help="another switchyard binary, counted after --bin")
    a = ap.parse_args()
    from harness import Dovecot, TestPKI
    d = tempfile.mkdtemp(prefix="sy-sysc-")
    pki = TestPKI()
    backend = Dovecot(pki, listeners={"imap": ("plain",)},
                      extra_conf="service imap {\n  process_limit = 1024\n}\n"
                                 "protocol imap {\n  mail_max_userip_connections = 10000\n}\n"
                                 "service imap-login {\n  process_min_avail = 4\n}\n")
    try:
        backend.start()
        runs = [("after" if a.before else "switchyard", a.bin)]
        if a.before:
            runs.append(("before", a.before))
        results = {name: count(d, b, backend.imap, a.n, a.concurrency, name) for name, b in runs}
        names = sorted({c for _, _, calls in results.values() for c in calls},
                       key=lambda c: -results[runs[0][0]][2].get(c, (0, 0))[0])
        print(f"{'per login':<16}" + "".join(f"{name:>18}" for name, _ in runs))
        for c in names:
            row = ""
            for name, _ in runs:
                logins, _, calls = results[name]
                k, e = calls.get(c, (0, 0))
                row += f"{k / logins:>10.2f}" + (f" ({e / logins:.2f} err)" if e else " " * 11)
            print(f"{c:<16}{row}")
        print(f"{'total':<16}" + "".join(
            f"{sum(k for k, _ in results[name][2].values()) / results[name][0]:>10.2f}" + " " * 11
            for name, _ in runs))
        for name, _ in runs:
            logins, errors, _ = results[name]
            print(f"{name}: {logins} logins, {errors} errors")
    finally:
        backend.cleanup()
        pki.cleanup()
        benchlib.remove_tree(d)


if __name__ == "__main__":
    main()
