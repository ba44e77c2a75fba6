"""The README's demo: two Dovecot backends behind Switchyard with a file
mapping; an account moved through the management API lands on the new
backend at its next login. Runs `scripts/demo.py --once`."""

import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_demo_runs_and_moves_an_account():
    env = dict(os.environ)
    r = subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "scripts", "demo.py"), "--once"],
                       env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "bob@example.com      sees: ['Subject: Welcome to the new server']" in r.stdout
    assert "demo check: ok" in r.stdout
