"""The e2e suite's Dovecot backend image (e2e/dovecot/), built and run with
podman: the users exist and each INBOX names the server, which is what
e2e/e2e.py relies on to tell backends apart. Its port is published on
127.0.0.1 only."""

import imaplib
import os
import subprocess
import uuid

import pytest

from harness.util import Backoff, free_port

IMAGE = "localhost/switchyard-e2e/dovecot:e2e"


def podman(env, *args, check=True, timeout=600):
    p = subprocess.run(["podman", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: {p.stdout[-4000:]}")
    return p


@pytest.fixture
def backend(podman_env, image, repo):
    # `image` first: it makes the debian:bookworm-slim base this FROM needs.
    podman(podman_env, "build", "--quiet", "--pull=never", "-t", IMAGE, os.path.join(repo, "e2e", "dovecot"))
    name = f"switchyard-e2e-dovecot-{uuid.uuid4().hex[:8]}"
    port = free_port()
    podman(podman_env, "run", "-d", "--name", name, "-e", "BACKEND_NAME=stalwart-7",
           "-p", f"127.0.0.1:{port}:143", IMAGE)
    try:
        yield port
    finally:
        podman(podman_env, "rm", "-f", "-t", "0", name, check=False)


def test_e2e_backend_image_serves_its_users(backend):
    b = Backoff(30)
    while True:
        try:
            m = imaplib.IMAP4("127.0.0.1", backend, timeout=5)
            break
        except OSError:
            if not b.pause():
                raise
    try:
        assert m.login("user42@example.com", "pw-user42")[0] == "OK"
        m.select("INBOX", readonly=True)
        _, data = m.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        subjects = [p[1].decode().strip() for p in data if isinstance(p, tuple)]
        assert subjects == ["Subject: Welcome to the stalwart-7 server"]
        m.send(b"t1 IDLE\r\n")
        assert m.readline().startswith(b"+ idling")
        m.send(b"DONE\r\n")
        assert m.readline().startswith(b"t1 OK")
    finally:
        m.logout()
    m = imaplib.IMAP4("127.0.0.1", backend, timeout=5)
    try:
        with pytest.raises(imaplib.IMAP4.error):
            m.login("user42@example.com", "wrong")
    finally:
        m.shutdown()
