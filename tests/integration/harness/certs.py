"""Test PKI generated with the openssl CLI: a CA, leaf certificates for the
names the tests use, a client certificate for mutual TLS and an unrelated
self-signed certificate.

Leaf certificates carry only their own names in subjectAltName (except the
"localhost" one, which carries DNS:localhost and IP:127.0.0.1) so that SNI
selection tests can tell them apart by name and by fingerprint.
"""

import hashlib
import os
import ssl
import subprocess
from dataclasses import dataclass

from .util import make_tempdir, remove_tree, run, track, untrack

KEY_ALG = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]


@dataclass
class Cert:
    name: str
    cert: str  # PEM path (leaf, then the CA for CA-issued certs: a full chain)
    key: str  # PEM path
    leaf: str  # PEM path of the leaf alone
    sans: tuple
    ca_signed: bool

    @property
    def der(self):
        with open(self.leaf) as f:
            return ssl.PEM_cert_to_DER_cert(f.read())

    @property
    def sha256(self):
        """Lower-case hex, colon-separated (the form tls_pinned_cert_sha256 accepts)."""
        return fingerprint_der(self.der)

    @property
    def sha256_hex(self):
        return hashlib.sha256(self.der).hexdigest()


def fingerprint_der(der):
    """SHA-256 of a DER certificate as colon-separated lower-case hex."""
    return ":".join(f"{b:02x}" for b in hashlib.sha256(der).digest())


def fingerprint_pem_file(path):
    with open(path) as f:
        return fingerprint_der(ssl.PEM_cert_to_DER_cert(f.read()))


def describe_der(der):
    """(subject, issuer) of a DER certificate as openssl one-line strings."""
    p = subprocess.run(
        ["openssl", "x509", "-inform", "DER", "-noout", "-subject", "-issuer", "-nameopt", "RFC2253"],
        input=der,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        check=True,
    )
    lines = p.stdout.decode().splitlines()
    subject = next(l.split("=", 1)[1].strip() for l in lines if l.startswith("subject"))
    issuer = next(l.split("=", 1)[1].strip() for l in lines if l.startswith("issuer"))
    return subject, issuer


class TestPKI:
    """Everything lives in one temp dir (mode 0755, files 0644 so that Dovecot's
    unprivileged processes could read them if they ever needed to)."""

    __test__ = False  # not a pytest test class

    def __init__(self):
        self.dir = make_tempdir("pki")
        track(self)
        self.ca_cert = os.path.join(self.dir, "ca.pem")
        self.ca_key = os.path.join(self.dir, "ca.key")
        run(
            ["openssl", "req", "-x509", *KEY_ALG, "-nodes", "-keyout", self.ca_key, "-out", self.ca_cert,
             "-days", "3650", "-subj", "/CN=Switchyard Test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign"]
        )
        self.localhost = self._leaf("localhost", ["DNS:localhost", "IP:127.0.0.1"])
        self.mail = self._leaf("mail.example.com", ["DNS:mail.example.com"])
        self.other = self._leaf("other.example.org", ["DNS:other.example.org"])
        self.wildcard = self._leaf("*.example.net", ["DNS:*.example.net"], file_name="wildcard.example.net")
        self.client = self._leaf("switchyard-client", [], usage="clientAuth", file_name="client")
        self.selfsigned = self._selfsigned("unrelated.example", ["DNS:unrelated.example"])
        for name in os.listdir(self.dir):
            os.chmod(os.path.join(self.dir, name), 0o644)

    def _leaf(self, cn, sans, usage="serverAuth", file_name=None):
        base = os.path.join(self.dir, file_name or cn)
        key, csr, leaf, chain, ext = (base + s for s in (".key", ".csr", ".leaf.pem", ".pem", ".ext"))
        run(["openssl", "req", *KEY_ALG, "-nodes", "-keyout", key, "-out", csr, "-subj", f"/CN={cn}"])
        with open(ext, "w") as f:
            f.write("basicConstraints=critical,CA:FALSE\n")
            f.write("keyUsage=critical,digitalSignature,keyEncipherment\n")
            f.write(f"extendedKeyUsage={usage}\n")
            if sans:
                f.write("subjectAltName=" + ",".join(sans) + "\n")
        run(["openssl", "x509", "-req", "-in", csr, "-CA", self.ca_cert, "-CAkey", self.ca_key,
             "-CAcreateserial", "-days", "825", "-sha256", "-extfile", ext, "-out", leaf])
        with open(chain, "w") as out, open(leaf) as a, open(self.ca_cert) as b:
            out.write(a.read() + b.read())
        return Cert(cn, chain, key, leaf, tuple(sans), True)

    def _selfsigned(self, cn, sans):
        base = os.path.join(self.dir, "selfsigned")
        key, leaf = base + ".key", base + ".pem"
        run(["openssl", "req", "-x509", *KEY_ALG, "-nodes", "-keyout", key, "-out", leaf, "-days", "825",
             "-subj", f"/CN={cn}", "-addext", "subjectAltName=" + ",".join(sans)])
        return Cert(cn, leaf, key, leaf, tuple(sans), False)

    # --- client-side contexts ------------------------------------------------

    def client_context(self, verify=True, **kw):
        """An ssl client context trusting the test CA (or verifying nothing).
        Keyword arguments set attributes (e.g. maximum_version=...)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if verify:
            ctx.load_verify_locations(self.ca_cert)
        else:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        for k, v in kw.items():
            setattr(ctx, k, v)
        return ctx

    def cleanup(self):
        untrack(self)
        remove_tree(self.dir)
