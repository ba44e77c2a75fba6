"""k8s/ is the chart's defaults rendered by scripts/render-k8s.sh: rendering
again must give exactly the committed files, and the base must build with
kustomize (kubectl kustomize, no cluster needed)."""

import filecmp
import os
import shutil
import subprocess

import pytest
import yaml

from chart import REPO

CACHE = os.environ.get("SWITCHYARD_CACHE", "/var/cache/switchyard")


def test_k8s_equals_rendered_defaults(helm_bin, tmp_path):
    out = tmp_path / "k8s"
    env = dict(os.environ, HELM=helm_bin)
    subprocess.run([os.path.join(REPO, "scripts", "render-k8s.sh"), str(out)], env=env, check=True, timeout=120)
    committed = os.path.join(REPO, "k8s")
    want = sorted(f for f in os.listdir(out))
    have = sorted(f for f in os.listdir(committed) if f.endswith(".yaml"))
    assert have == want, "k8s/ has other files than a fresh render: run scripts/render-k8s.sh"
    _, mismatch, errors = filecmp.cmpfiles(committed, out, want, shallow=False)
    assert not mismatch and not errors, f"k8s/ differs from the chart's defaults in {mismatch + errors}: " \
                                        "run scripts/render-k8s.sh"


def test_k8s_base_builds_with_kustomize(helm_bin):
    kubectl = os.environ.get("KUBECTL") or os.path.join(CACHE, "bin", "kubectl")
    if not os.access(kubectl, os.X_OK):
        kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl not found: run scripts/deps.sh"
    p = subprocess.run([kubectl, "kustomize", os.path.join(REPO, "k8s")], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    objs = [d for d in yaml.safe_load_all(p.stdout) if d]
    kinds = sorted(o["kind"] for o in objs)
    assert kinds == ["ConfigMap", "Deployment", "PodDisruptionBudget", "Service", "Service", "ServiceAccount"]
    for o in objs:
        assert "namespace" not in o["metadata"]
        assert "helm.sh/chart" not in o["metadata"].get("labels", {})
    dep = [o for o in objs if o["kind"] == "Deployment"][0]
    vols = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    # Deterministic: the token comes from a Secret the user creates.
    assert vols["admin-token"]["secret"]["secretName"] == "switchyard-admin-token"
    assert not [o for o in objs if o["kind"] == "Secret"]


def test_documented_overlay_replaces_config_and_image(tmp_path):
    """The overlay docs/KUBERNETES.md shows (namespace, image, config from
    files, same ConfigMap name so the proxy reloads in place) builds."""
    kubectl = os.environ.get("KUBECTL") or os.path.join(CACHE, "bin", "kubectl")
    base = tmp_path / "k8s"
    shutil.copytree(os.path.join(REPO, "k8s"), base)
    ov = tmp_path / "overlays" / "prod"
    ov.mkdir(parents=True)
    with open(os.path.join(REPO, "docs", "KUBERNETES.md")) as f:
        doc = f.read()
    start = doc.index("# overlays/prod/kustomization.yaml\n")
    text = doc[start:doc.index("```", start)]
    (ov / "kustomization.yaml").write_text(text)
    (ov / "switchyard.toml").write_text("# the operator's configuration\n")
    (ov / "mappings.tsv").write_text("alice@example.com new\n")
    p = subprocess.run([kubectl, "kustomize", str(ov)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    objs = [d for d in yaml.safe_load_all(p.stdout) if d]
    assert all(o["metadata"]["namespace"] == "mail-proxy" for o in objs)
    cms = [o for o in objs if o["kind"] == "ConfigMap"]
    assert len(cms) == 1 and cms[0]["metadata"]["name"] == "switchyard-config"
    assert cms[0]["data"] == {"switchyard.toml": "# the operator's configuration\n",
                              "mappings.tsv": "alice@example.com new\n"}
    dep = [o for o in objs if o["kind"] == "Deployment"][0]
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example.com/mail/switchyard:0.1.0"
    vol = [v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "config"][0]
    assert vol["configMap"]["name"] == "switchyard-config"
