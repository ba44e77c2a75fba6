"""Helpers to render the chart with helm and pick objects out of the result."""

import os
import re
import subprocess
import tomllib

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
CHART = os.path.join(REPO, "charts", "switchyard")
CI_VALUES = sorted(f for f in os.listdir(os.path.join(CHART, "ci")) if f.endswith(".yaml"))
# Every scenario the tests render: the defaults, each ci/ values file, and the
# values of the e2e suite (an absolute path).
SCENARIOS = [None] + CI_VALUES + [os.path.join(REPO, "e2e", "values.yaml")]

RELEASE = "mail"
NAMESPACE = "mail"


def helm(helm_bin, *args, check=True):
    p = subprocess.run([helm_bin, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
    if check and p.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({p.returncode}):\n{p.stderr}\n{p.stdout[-4000:]}")
    return p


def values_args(scenario, sets=()):
    args = []
    if scenario:
        args += ["-f", os.path.join(CHART, "ci", scenario)]
    for s in sets:
        args += ["--set", s]
    return args


def render(helm_bin, scenario=None, sets=(), release=RELEASE, namespace=NAMESPACE):
    out = helm(helm_bin, "template", release, CHART, "--namespace", namespace,
               *values_args(scenario, sets)).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def find(objs, kind, name=None):
    got = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    return got


def one(objs, kind, name=None):
    got = find(objs, kind, name)
    assert len(got) == 1, f"expected one {kind} {name or ''}, found {[o['metadata']['name'] for o in got]}"
    return got[0]


def config_map(objs):
    cms = [o for o in objs if o["kind"] == "ConfigMap" and "switchyard.toml" in o.get("data", {})]
    assert len(cms) == 1, cms
    return cms[0]


def toml_config(objs):
    return tomllib.loads(config_map(objs)["data"]["switchyard.toml"])


def container(objs):
    dep = one(objs, "Deployment")
    cs = dep["spec"]["template"]["spec"]["containers"]
    assert len(cs) == 1
    return cs[0]


_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_seconds(text):
    m = re.fullmatch(r"\s*(\d+)\s*(ms|s|m|h|d)\s*", text)
    assert m, text
    return int(m.group(1)) * _UNITS[m.group(2)]


def bind_port(addr):
    return int(addr.rsplit(":", 1)[1])
