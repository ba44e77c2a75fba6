"""The PrometheusRule and the Grafana dashboard query metrics the proxy
really exposes: every `switchyard_*` name they use must be a sample name in a
scrape of a running proxy's /metrics (the built binary, on loopback)."""

import json
import os
import re
import sys
import urllib.request

import pytest

from chart import CHART, REPO, find, one, render
from harness import Switchyard
from harness.util import free_port

TOKEN = "monitoring-test-token-0123456789abcdefghij"
NAME_RE = re.compile(r"\bswitchyard_[a-z0-9_]+\b")


@pytest.fixture(scope="module")
def scrape(switchyard_bin):
    os.environ.setdefault("SWITCHYARD_BIN", switchyard_bin)
    imap, admin = free_port(), free_port()
    cfg = f"""
[listener.imap]
protocol = "imap"
tls = "plain"
bind = ["127.0.0.1:{imap}"]
[destination.legacy]
host = "127.0.0.1"
allow_plaintext_auth = true
[destination.legacy.protocol.imap]
port = 9
tls = "plain"
[cluster.pool]
template = "legacy"
nodes = ["legacy"]
[routing]
default_destination = "legacy"
[mapping]
source = "file"
[mapping.file]
path = "mappings.tsv"
[admin]
bind = "127.0.0.1:{admin}"
tls = "plain"
allow_plaintext = true
bearer_token = "{TOKEN}"
"""
    sy = Switchyard(cfg, files={"mappings.tsv": "alice@example.com pool\n"}, name="switchyard-metrics")
    try:
        sy.start()
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
            assert r.headers["Content-Type"].startswith("text/plain")
            text = r.read().decode()
        sy.stop()
    finally:
        sy.cleanup()
    return text


@pytest.fixture(scope="module")
def exposed(scrape):
    names = set()
    for line in scrape.splitlines():
        if line.startswith("# TYPE "):
            # A declared family is exposed even before it has a series
            # (the discovery families, without discovered clusters).
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0))
    assert "switchyard_build_info" in names
    return names


def test_e2e_metric_reader_reads_a_real_scrape(scrape):
    """e2e/e2e.py reads the reload counters from /metrics text."""
    sys.path.insert(0, os.path.join(REPO, "e2e"))
    try:
        import e2e
    finally:
        sys.path.pop(0)
    assert 'switchyard_config_reloads_total{result="success"} 0' in scrape
    assert e2e.metric(scrape, "switchyard_config_reloads_total", 'result="success"') == 0
    bumped = scrape.replace('switchyard_config_reloads_total{result="success"} 0',
                            'switchyard_config_reloads_total{result="success"} 3')
    assert e2e.metric(bumped, "switchyard_config_reloads_total", 'result="success"') == 3
    assert e2e.metric(bumped, "switchyard_config_reloads_total", 'result="error"') == 0
    assert e2e.metric(scrape, "switchyard_workers") >= 1


def rule_exprs(helm_bin):
    objs = render(helm_bin, "discovery-values.yaml",
                  sets=["metrics.prometheusRule.enabled=true", "metrics.serviceMonitor.enabled=true"])
    return [r["expr"] for g in one(objs, "PrometheusRule")["spec"]["groups"] for r in g["rules"]]


def dashboard_exprs():
    with open(os.path.join(CHART, "dashboards", "switchyard.json")) as f:
        d = json.load(f)
    out = [t["expr"] for p in d["panels"] for t in p.get("targets", [])]
    out += [v["query"]["query"] for v in d["templating"]["list"] if isinstance(v.get("query"), dict)]
    return out


def test_alert_rules_use_exposed_metrics(helm_bin, exposed):
    used = {n for e in rule_exprs(helm_bin) for n in NAME_RE.findall(e)}
    assert len(used) >= 5
    assert used <= exposed, f"not exposed: {sorted(used - exposed)}"


def test_dashboard_uses_exposed_metrics(exposed):
    exprs = dashboard_exprs()
    used = {n for e in exprs for n in NAME_RE.findall(e)}
    # What the issue asks the dashboard to show.
    for want in ("switchyard_logins_total", "switchyard_connections_active", "switchyard_backend_connect_seconds_bucket",
                 "switchyard_mapping_cache_hits_total", "switchyard_mapping_cache_misses_total",
                 "switchyard_destination_up"):
        assert want in used, want
    assert used <= exposed, f"not exposed: {sorted(used - exposed)}"


def test_dashboard_is_shipped_in_the_configmap(helm_bin):
    # The dashboard's panels group by labels the metrics carry.
    with open(os.path.join(CHART, "dashboards", "switchyard.json")) as f:
        d = json.load(f)
    assert d["uid"] == "switchyard" and d["panels"]
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    objs = render(helm_bin, "monitoring-values.yaml")
    cm = [o for o in find(objs, "ConfigMap") if "switchyard.json" in o.get("data", {})][0]
    assert json.loads(cm["data"]["switchyard.json"]) == d
