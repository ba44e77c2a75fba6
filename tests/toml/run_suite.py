#!/usr/bin/python3
"""Runs a toml-test decoder against the toml-test suite for TOML 1.0.0.

Usage: run_suite.py <decoder-binary> [<toml-test-dir>]

The directory defaults to $TOML_TEST_DIR. Every valid/*.toml listed in
<dir>/files-toml-1.0.0 must decode to JSON that matches the .json file beside
it; every invalid/*.toml must be rejected with a non-zero exit status. A
decoder killed by a signal or reporting a sanitizer error always fails.
Comparison follows upstream toml-test: same structure and type tags, integers
compared as integers, floats numerically (nan equals nan), date/times as
points in time (so "Z" equals "+00:00" and ".6" equals ".600").
"""

import concurrent.futures
import json
import math
import os
import re
import subprocess
import sys

LIST_FILE = "files-toml-1.0.0"
TIMEOUT = 30

# Sanitizers exit with status 1 by default, which would look like a correct
# rejection of invalid input, so their reports are detected on stderr instead.
SANITIZER_RE = re.compile(
    r"(AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|"
    r"MemorySanitizer|ThreadSanitizer|runtime error:)"
)

DATETIME_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?"
    r"([Zz]|[+-]\d{2}:\d{2})?$"
)
DATE_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
TIME_RE = re.compile(r"^(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?$")


def days_from_civil(y, m, d):
    """Days since 1970-01-01 in the proleptic Gregorian calendar."""
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def frac_key(frac):
    # Like upstream (Go's time package), keep nanosecond precision, and treat
    # trailing zeros as insignificant.
    return (frac or "")[:9].rstrip("0")


def normalize_datetime(kind, text):
    """Returns a comparable key for a date/time, or None if unparsable."""
    if kind == "datetime":
        m = DATETIME_RE.match(text)
        if not m or m.group(8) is None:
            return None
        y, mo, d, h, mi, s = (int(g) for g in m.groups()[:6])
        off = m.group(8)
        off_secs = 0
        if off not in ("Z", "z"):
            off_secs = (int(off[1:3]) * 60 + int(off[4:6])) * 60
            if off[0] == "-":
                off_secs = -off_secs
        secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s - off_secs
        return (secs, frac_key(m.group(7)))
    if kind == "datetime-local":
        m = DATETIME_RE.match(text)
        if not m or m.group(8) is not None:
            return None
        return tuple(int(g) for g in m.groups()[:6]) + (frac_key(m.group(7)),)
    if kind == "date-local":
        m = DATE_RE.match(text)
        return tuple(int(g) for g in m.groups()) if m else None
    if kind == "time-local":
        m = TIME_RE.match(text)
        if not m:
            return None
        return tuple(int(g) for g in m.groups()[:3]) + (frac_key(m.group(4)),)
    return None


def parse_float(text):
    t = text.strip().lower()
    if t in ("nan", "+nan", "-nan"):
        return math.nan
    if t in ("inf", "+inf"):
        return math.inf
    if t == "-inf":
        return -math.inf
    return float(t.replace("_", ""))


def is_tagged(v):
    return (
        isinstance(v, dict)
        and set(v) == {"type", "value"}
        and isinstance(v["type"], str)
        and isinstance(v["value"], str)
    )


def compare_scalar(want, have, path):
    wt, ht = want["type"], have["type"]
    wv, hv = want["value"], have["value"]
    if wt != ht:
        return ["%s: type %s, want %s" % (path, ht, wt)]
    try:
        if wt == "integer":
            same = int(wv) == int(hv)
        elif wt == "float":
            wf, hf = parse_float(wv), parse_float(hv)
            if math.isnan(wf) or math.isnan(hf):
                same = math.isnan(wf) and math.isnan(hf)
            else:
                same = wf == hf and math.copysign(1, wf) == math.copysign(1, hf)
        elif wt in ("datetime", "datetime-local", "date-local", "time-local"):
            wk, hk = normalize_datetime(wt, wv), normalize_datetime(wt, hv)
            same = wk == hk if wk is not None and hk is not None else wv == hv
        else:
            same = wv == hv
    except ValueError:
        same = False
    if same:
        return []
    return ["%s: %s value %r, want %r" % (path, wt, hv, wv)]


def compare(want, have, path="root"):
    """Returns a list of differences between expected and actual JSON."""
    if is_tagged(want):
        if not is_tagged(have):
            return ["%s: got %s, want a %s value" % (path, describe(have), want["type"])]
        return compare_scalar(want, have, path)
    if isinstance(want, list):
        if not isinstance(have, list):
            return ["%s: got %s, want an array" % (path, describe(have))]
        if len(want) != len(have):
            return ["%s: array has %d items, want %d" % (path, len(have), len(want))]
        errs = []
        for i, (w, h) in enumerate(zip(want, have)):
            errs += compare(w, h, "%s[%d]" % (path, i))
        return errs
    if isinstance(want, dict):
        if not isinstance(have, dict) or is_tagged(have):
            return ["%s: got %s, want a table" % (path, describe(have))]
        errs = []
        for k in sorted(set(want) - set(have)):
            errs.append("%s: missing key %r" % (path, k))
        for k in sorted(set(have) - set(want)):
            errs.append("%s: unexpected key %r" % (path, k))
        for k in sorted(set(want) & set(have)):
            errs += compare(want[k], have[k], "%s.%s" % (path, json.dumps(k)))
        return errs
    return ["%s: unexpected JSON %r in expected output" % (path, want)]


def describe(v):
    if is_tagged(v):
        return "a %s value" % v["type"]
    if isinstance(v, list):
        return "an array"
    if isinstance(v, dict):
        return "a table"
    return repr(v)


def first_line(text):
    text = text.decode("utf-8", "replace").strip()
    return text.splitlines()[0] if text else "(no message)"


def run_one(decoder, testdir, name):
    """Returns None on success, or a description of the failure."""
    path = os.path.join(testdir, name)
    with open(path, "rb") as f:
        data = f.read()
    try:
        proc = subprocess.run(
            [decoder], input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=TIMEOUT
        )
    except subprocess.TimeoutExpired:
        return "timed out after %ds" % TIMEOUT
    stderr = proc.stderr.decode("utf-8", "replace")
    if proc.returncode < 0:
        return "killed by signal %d" % -proc.returncode
    m = SANITIZER_RE.search(stderr)
    if m:
        lines = [l for l in stderr.splitlines() if m.group(1) in l]
        return "sanitizer report: %s" % (lines[0].strip() if lines else m.group(1))

    if name.startswith("invalid/"):
        if proc.returncode == 0:
            return "invalid input was accepted"
        return None

    if proc.returncode != 0:
        return "rejected valid input (exit %d): %s" % (proc.returncode, first_line(proc.stderr))
    try:
        with open(os.path.splitext(path)[0] + ".json", "rb") as f:
            want = json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError) as e:
        return "cannot read expected JSON: %s" % e
    try:
        have = json.loads(proc.stdout.decode("utf-8"))
    except ValueError as e:
        return "decoder output is not valid JSON: %s" % e
    errs = compare(want, have)
    if errs:
        return "; ".join(errs[:5]) + (" (and %d more)" % (len(errs) - 5) if len(errs) > 5 else "")
    return None


def main(argv):
    if len(argv) not in (2, 3):
        sys.stderr.write("usage: %s <decoder-binary> [<toml-test-dir>]\n" % argv[0])
        return 2
    decoder = os.path.abspath(argv[1])
    testdir = argv[2] if len(argv) == 3 else os.environ.get("TOML_TEST_DIR")
    if not testdir:
        sys.stderr.write("%s: no toml-test directory given and TOML_TEST_DIR is unset\n" % argv[0])
        return 2
    try:
        with open(os.path.join(testdir, LIST_FILE), encoding="utf-8") as f:
            names = [l.strip() for l in f if l.strip() and not l.startswith("#")]
    except OSError as e:
        sys.stderr.write("%s: %s\n" % (argv[0], e))
        return 2
    tests = [n for n in names if n.endswith(".toml") and n.startswith(("valid/", "invalid/"))]

    workers = min(32, (os.cpu_count() or 1) * 2)
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda n: run_one(decoder, testdir, n), tests))

    failed = 0
    for name, err in zip(tests, results):
        if err is not None:
            failed += 1
            print("FAIL %s: %s" % (name, err))
    print("toml-test: %d passed, %d failed" % (len(tests) - failed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
