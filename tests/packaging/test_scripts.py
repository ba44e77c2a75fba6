"""Static checks of what cannot run here: the kind-based e2e suite and the
GitHub workflows (no cluster, no GitHub), plus the packaging scripts."""

import os
import py_compile
import subprocess

import pytest
import yaml

from chart import REPO

SHELL_SCRIPTS = ["e2e/run.sh", "e2e/dovecot/entrypoint.sh", "scripts/image.sh", "scripts/render-k8s.sh",
                 "scripts/deps.sh", "scripts/test.sh", "tests/fuzz/run.sh"]


@pytest.mark.parametrize("script", SHELL_SCRIPTS)
def test_shell_scripts_parse_and_pass_shellcheck(script):
    path = os.path.join(REPO, script)
    assert os.access(path, os.X_OK), f"{script} is not executable"
    with open(path) as f:
        shebang = f.readline()
    shell = "sh" if shebang.strip() == "#!/bin/sh" else "bash"
    p = subprocess.run([shell, "-n", path], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert p.returncode == 0, p.stdout
    p = subprocess.run(["shellcheck", "--severity=style", path], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    assert p.returncode == 0, p.stdout


def test_e2e_python_compiles(tmp_path):
    py_compile.compile(os.path.join(REPO, "e2e", "e2e.py"), cfile=str(tmp_path / "e2e.pyc"), doraise=True)


def load_workflow(name):
    with open(os.path.join(REPO, ".github", "workflows", name)) as f:
        wf = yaml.safe_load(f)
    assert isinstance(wf, dict) and wf.get("name") and wf.get("jobs")
    # YAML 1.1 reads the key `on` as True.
    assert "on" in wf or True in wf
    for job in wf["jobs"].values():
        assert job.get("runs-on") and job.get("steps")
        for step in job["steps"]:
            assert ("run" in step) != ("uses" in step), step
    return wf


def test_ci_workflow_runs_the_readme_test_command():
    wf = load_workflow("ci.yml")
    runs = [s["run"] for j in wf["jobs"].values() for s in j["steps"] if "run" in s]
    assert "scripts/test.sh" in runs
    with open(os.path.join(REPO, "README.md")) as f:
        assert "scripts/test.sh" in f.read()


def test_e2e_workflow_runs_the_kind_suite():
    wf = load_workflow("e2e.yml")
    runs = [s["run"] for j in wf["jobs"].values() for s in j["steps"] if "run" in s]
    assert "e2e/run.sh" in runs
    assert any("kind" in r for r in runs)


def test_every_workflow_is_valid_yaml():
    d = os.path.join(REPO, ".github", "workflows")
    names = sorted(os.listdir(d))
    assert {"ci.yml", "e2e.yml"} <= set(names)
    for n in names:
        load_workflow(n)


def test_e2e_manifests_are_valid():
    with open(os.path.join(REPO, "e2e", "manifests", "backends.yaml")) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    kinds = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert ("StatefulSet", "stalwart") in kinds and ("Service", "stalwart") in kinds
    sts = [d for d in docs if d["kind"] == "StatefulSet"][0]
    assert sts["spec"]["replicas"] == 3
    headless = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "stalwart"][0]
    assert headless["spec"]["clusterIP"] == "None"
    with open(os.path.join(REPO, "e2e", "kind.yaml")) as f:
        kind = yaml.safe_load(f)
    with open(os.path.join(REPO, "e2e", "values.yaml")) as f:
        values = yaml.safe_load(f)
    node_port = values["service"]["ports"][0]["nodePort"]
    assert node_port in [m["containerPort"] for n in kind["nodes"] for m in n.get("extraPortMappings", [])]
