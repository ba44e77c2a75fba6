"""Fixtures for the packaging tests: the container image (built with podman
by scripts/image.sh), the Helm binary (installed by scripts/deps.sh), the
built proxy binary, and the integration harness (Dovecot, test PKI) reused
from tests/integration/harness."""

import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
sys.path.insert(0, HERE)

from harness import TestPKI  # noqa: E402

CACHE = os.environ.get("SWITCHYARD_CACHE", "/var/cache/switchyard")


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # item.rep_call: fixtures print the logs of what they started on failure.
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture(scope="session")
def repo():
    return REPO


@pytest.fixture(scope="session")
def switchyard_bin():
    path = os.environ.get("SWITCHYARD_BIN") or os.path.join(REPO, "build", "switchyard")
    if not os.access(path, os.X_OK):
        pytest.fail(f"switchyard binary not found: {path} (build it, or set SWITCHYARD_BIN)")
    return path


# The chart supports Helm 3 and 4: the chart tests run with both (installed
# by scripts/deps.sh into $CACHE/bin), or with the one binary $HELM names.
HELMS = {"helm4": os.path.join(CACHE, "bin", "helm"), "helm3": os.path.join(CACHE, "bin", "helm3")}


def _helm(name):
    path = os.environ.get("HELM") or HELMS[name]
    if not os.access(path, os.X_OK):
        pytest.fail(f"helm not found at {path}: run scripts/deps.sh (or set HELM)")
    return path


@pytest.fixture(scope="session", params=["helm4"] if os.environ.get("HELM") else ["helm4", "helm3"])
def helm_bin(request):
    return _helm(request.param)


@pytest.fixture(scope="session")
def helm4_bin():
    return _helm("helm4")


@pytest.fixture(scope="session")
def certs():
    pki = TestPKI()
    yield pki
    pki.cleanup()


@pytest.fixture(scope="session")
def podman_env():
    """The environment podman runs with: CONTAINERS_CONF from scripts/image.sh."""
    env = dict(os.environ)
    conf = subprocess.run([os.path.join(REPO, "scripts", "image.sh"), "conf"], env=env, check=True,
                          stdout=subprocess.PIPE, text=True).stdout.strip()
    env["CONTAINERS_CONF"] = conf
    return env


@pytest.fixture(scope="session")
def image(podman_env):
    """The image built from the working tree (a rebuild reuses podman's layer
    cache, so it is quick when only the chart or the docs changed)."""
    p = subprocess.run([os.path.join(REPO, "scripts", "image.sh"), "build"], env=podman_env, cwd=REPO,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1800)
    if p.returncode != 0:
        pytest.fail(f"image build failed:\n{p.stdout[-8000:]}", pytrace=False)
    return p.stdout.strip().splitlines()[-1]
