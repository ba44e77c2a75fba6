"""The Helm chart, rendered with `helm template` over the defaults and every
values file in charts/switchyard/ci/: lint, the proxy's own validation of
every rendered configuration, and the invariants the deployment relies on.
No cluster is involved (none can run here); tests/../e2e covers a real one."""

import base64
import json
import os
import re
import shutil
import subprocess
import tempfile

import pytest

from chart import (CHART, NAMESPACE, SCENARIOS, bind_port, config_map, container, duration_seconds, find, helm,
                   one, render, toml_config, values_args)

CONFIG_DIR = "/etc/switchyard"
SECRETS_DIR = "/run/secrets/switchyard"


@pytest.fixture(scope="module")
def placeholder_tls():
    d = tempfile.mkdtemp(prefix="sy-chart-tls-")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", os.path.join(d, "tls.key"), "-out", os.path.join(d, "tls.crt"),
                    "-days", "2", "-subj", "/CN=mail.example.com",
                    "-addext", "subjectAltName=DNS:mail.example.com"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    yield d
    shutil.rmtree(d)


def materialize(objs, root, tls_dir):
    """Lay the rendered pod's files out under `root` as the kubelet would
    mount them (ConfigMap at /etc/switchyard, the Secrets under
    /run/secrets/switchyard), and return the config path with the absolute
    mount paths pointed into `root`."""
    cm = config_map(objs)
    cfg_dir = root + CONFIG_DIR
    os.makedirs(cfg_dir)
    for name, text in cm["data"].items():
        with open(os.path.join(cfg_dir, name), "w") as f:
            f.write(text)
    c = container(objs)
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in one(objs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    for name, path in mounts.items():
        v = vols[name]
        if "secret" in v:
            os.makedirs(root + path)
            if name == "tls":
                for f in ("tls.crt", "tls.key"):
                    shutil.copy(os.path.join(tls_dir, f), root + path)
            elif name == "ticket-keys":
                for item in v["secret"]["items"]:
                    with open(os.path.join(root + path, item["path"]), "w") as f:
                        f.write(base64.b64encode(os.urandom(80)).decode() + "\n")
            else:
                for item in v["secret"]["items"]:
                    with open(os.path.join(root + path, item["path"]), "w") as f:
                        f.write("placeholder-admin-token-0123456789abcdef0123456789\n")
    text = cm["data"]["switchyard.toml"].replace(f'"{SECRETS_DIR}/', f'"{root}{SECRETS_DIR}/')
    text = text.replace(f'"{CONFIG_DIR}/', f'"{root}{CONFIG_DIR}/')
    path = os.path.join(cfg_dir, "switchyard.toml")
    with open(path, "w") as f:
        f.write(text)
    return path


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_lint_strict(helm_bin, scenario):
    p = helm(helm_bin, "lint", "--strict", CHART, *values_args(scenario), check=False)
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rendered_config_passes_check_config(helm_bin, switchyard_bin, placeholder_tls, scenario, tmp_path):
    objs = render(helm_bin, scenario)
    path = materialize(objs, str(tmp_path), placeholder_tls)
    p = subprocess.run([switchyard_bin, "--check-config", path], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=30)
    assert p.returncode == 0 and "configuration ok" in p.stdout, p.stdout
    # Every absolute path the config names is one of the pod's mounts.
    path_keys = (r"(?:cert|key|path|bearer_token_file|token_file|ca_file|tls_ca_file|kubeconfig|tls_client_cert"
                 r"|tls_client_key|ticket_key_file)")
    for m in re.finditer(r'(?m)^\s*' + path_keys + r'\s*=\s*"(/[^"]+)"', config_map(objs)["data"]["switchyard.toml"]):
        assert m.group(1).startswith((CONFIG_DIR + "/", SECRETS_DIR + "/")), m.group(1)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_restricted_security_context(helm_bin, scenario):
    objs = render(helm_bin, scenario)
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    c = container(objs)
    psc, sc = pod["securityContext"], c["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 65532 and psc["runAsGroup"] == 65532
    assert psc["seccompProfile"]["type"] == "RuntimeDefault"
    assert sc["runAsNonRoot"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["privileged"] is False
    assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add")
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    assert pod["enableServiceLinks"] is False
    for v in pod["volumes"]:
        assert "hostPath" not in v
    # Only unprivileged container ports (no NET_BIND_SERVICE), no host ports.
    assert all(p["containerPort"] >= 1024 and "hostPort" not in p for p in c["ports"])
    assert [x["name"] for x in pod["containers"]] == ["switchyard"] and not pod.get("initContainers")
    # Requests and limits.
    assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
    assert c["resources"]["limits"]["memory"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_probes_on_admin_port(helm_bin, scenario):
    objs = render(helm_bin, scenario)
    cfg = toml_config(objs)
    c = container(objs)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    admin_bind = cfg["admin"]["bind"]
    assert admin_bind.startswith("0.0.0.0:"), "kubelet probes come from outside the pod's loopback"
    scheme = "HTTP" if cfg["admin"].get("tls", "implicit") == "plain" else "HTTPS"
    want = {"startupProbe": "/readyz", "livenessProbe": "/livez", "readinessProbe": "/readyz"}
    for probe, path in want.items():
        g = c[probe]["httpGet"]
        assert g["path"] == path, probe
        assert ports[g["port"]] == bind_port(admin_bind), probe
        assert g["scheme"] == scheme, probe
    admin_svc = one(objs, "Service", f"{one(objs, 'Deployment')['metadata']['name']}-admin")
    assert admin_svc["spec"]["type"] == "ClusterIP"
    assert [p["targetPort"] for p in admin_svc["spec"]["ports"]] == ["admin"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_config_is_a_directory_mount(helm_bin, scenario):
    objs = render(helm_bin, scenario)
    c = container(objs)
    for m in c["volumeMounts"]:
        assert "subPath" not in m and "subPathExpr" not in m, m
    cfg_mount = [m for m in c["volumeMounts"] if m["mountPath"] == CONFIG_DIR]
    assert len(cfg_mount) == 1
    vols = {v["name"]: v for v in one(objs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    vol = vols[cfg_mount[0]["name"]]
    assert vol["configMap"]["name"] == config_map(objs)["metadata"]["name"]
    assert "items" not in vol["configMap"], "items would hide files the config names"
    assert c["args"] == [CONFIG_DIR + "/switchyard.toml"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rbac_exactly_when_discovery(helm_bin, scenario):
    objs = render(helm_bin, scenario)
    cfg = toml_config(objs)
    discovery = any("kubernetes" in cl for cl in cfg.get("cluster", {}).values())
    roles, bindings = find(objs, "Role"), find(objs, "RoleBinding")
    assert not find(objs, "ClusterRole") and not find(objs, "ClusterRoleBinding")
    sa = one(objs, "ServiceAccount")
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    assert sa["automountServiceAccountToken"] is discovery
    assert pod["automountServiceAccountToken"] is discovery
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    if not discovery:
        assert roles == [] and bindings == []
        return
    namespaces = {cl["kubernetes"].get("namespace", NAMESPACE) for cl in cfg["cluster"].values() if "kubernetes" in cl}
    assert {r["metadata"]["namespace"] for r in roles} == namespaces
    for r in roles:
        assert r["rules"] == [{"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                               "verbs": ["get", "list", "watch"]}]
    assert len(bindings) == len(roles)
    for b in bindings:
        assert b["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": roles[0]["metadata"]["name"]}
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NAMESPACE}]


def test_discovery_flag_must_match_config(helm_bin):
    p = helm(helm_bin, "template", "x", CHART, "-f", os.path.join(CHART, "ci", "discovery-values.yaml"),
             "--set", "discovery.enabled=false", check=False)
    assert p.returncode != 0 and "discovery.enabled=true" in p.stderr, p.stderr
    p = helm(helm_bin, "template", "x", CHART, "--set", "discovery.enabled=true", check=False)
    assert p.returncode != 0 and "no [cluster.<id>.kubernetes]" in p.stderr, p.stderr


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_grace_exceeds_pause_plus_drain(helm_bin, scenario):
    objs = render(helm_bin, scenario)
    cfg = toml_config(objs)
    drain = duration_seconds(cfg.get("server", {}).get("shutdown_grace", "30s"))
    c = container(objs)
    cmd = c["lifecycle"]["preStop"]["exec"]["command"]
    assert cmd[0] == "/bin/sleep"
    pause = int(cmd[1])
    assert pause > 0
    grace = one(objs, "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > pause + drain, (grace, pause, drain)


def test_grace_too_short_is_refused(helm_bin):
    p = helm(helm_bin, "template", "x", CHART, "--set", "terminationGracePeriodSeconds=40", check=False)
    assert p.returncode != 0 and "terminationGracePeriodSeconds (40)" in p.stderr, p.stderr
    # The drain time is read from the configuration: 2m there.
    objs = render(helm_bin, "existing-secrets-values.yaml", sets=["terminationGracePeriodSeconds=null"])
    assert one(objs, "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 10 + 120 + 10


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_availability(helm_bin, scenario):
    objs = render(helm_bin, scenario)
    dep = one(objs, "Deployment")
    spec = dep["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"]["type"] == "RollingUpdate"
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    sel = spec["selector"]["matchLabels"]
    assert all(spec["template"]["metadata"]["labels"][k] == v for k, v in sel.items())
    pdb = one(objs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == sel
    assert ("minAvailable" in pdb["spec"]) != ("maxUnavailable" in pdb["spec"])
    tsc = spec["template"]["spec"]["topologySpreadConstraints"]
    assert "kubernetes.io/hostname" in [t["topologyKey"] for t in tsc]
    assert all(t["labelSelector"]["matchLabels"] == sel for t in tsc)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_services_target_listeners(helm_bin, scenario):
    objs = render(helm_bin, scenario)
    cfg = toml_config(objs)
    listener_ports = {bind_port(b) for l in cfg["listener"].values()
                      for b in (l["bind"] if isinstance(l["bind"], list) else [l["bind"]])}
    for l in cfg["listener"].values():
        for b in (l["bind"] if isinstance(l["bind"], list) else [l["bind"]]):
            assert b.startswith(("0.0.0.0:", "[::]:")), f"{b}: not reachable through the Service"
    c = container(objs)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    dep_name = one(objs, "Deployment")["metadata"]["name"]
    mail = one(objs, "Service", dep_name)
    targets = set()
    for p in mail["spec"]["ports"]:
        targets.add(ports[p["targetPort"]])
    assert targets == listener_ports, (targets, listener_ports)


def test_mail_service_options(helm_bin):
    svc = lambda objs: [o for o in find(objs, "Service") if not o["metadata"]["name"].endswith("-admin")][0]
    d = svc(render(helm_bin))
    assert d["spec"]["type"] == "ClusterIP" and "externalTrafficPolicy" not in d["spec"]
    assert {p["port"] for p in d["spec"]["ports"]} == {143, 993, 110, 995, 587, 465, 4190, 443}
    lb = svc(render(helm_bin, "loadbalancer-local-values.yaml"))
    assert lb["spec"]["type"] == "LoadBalancer" and lb["spec"]["externalTrafficPolicy"] == "Local"
    pp = render(helm_bin, "loadbalancer-proxy-protocol-values.yaml")
    assert svc(pp)["metadata"]["annotations"]["service.beta.kubernetes.io/aws-load-balancer-proxy-protocol"] == "*"
    for l in toml_config(pp)["listener"].values():
        assert l["proxy_protocol"] == "required" and l["proxy_trusted"]


@pytest.mark.parametrize("bad,msg", [
    (["replicaCont=3"], "replicaCont"),
    (["service.typ=LoadBalancer"], "typ"),
    (["admin.tls=https"], r"admin[./]tls"),
    (["metrics.serviceMonitor.enable=true"], "enable"),
    (["service.type=Loadbalancer"], r"service[./]type"),
])
def test_schema_rejects_typos(helm_bin, bad, msg):
    p = helm(helm_bin, "template", "x", CHART, *[a for s in bad for a in ("--set", s)], check=False)
    assert p.returncode != 0, p.stdout[:2000]
    assert "schema" in p.stderr and re.search(msg, p.stderr), p.stderr


def test_schema_rejects_wrong_types(helm_bin):
    for s in ("replicaCount=two", "preStopSeconds=soon", "rollOnConfigChange=yes"):
        p = helm(helm_bin, "template", "x", CHART, "--set-string", s, check=False)
        assert p.returncode != 0 and "schema" in p.stderr, (s, p.stderr)


def test_admin_token_secret(helm_bin):
    objs = render(helm_bin)
    sec = one(objs, "Secret")
    token = base64.b64decode(sec["data"]["token"]).decode()
    assert len(token) >= 32 and re.fullmatch(r"[A-Za-z0-9]+", token)
    again = base64.b64decode(one(render(helm_bin), "Secret")["data"]["token"]).decode()
    assert token != again, "a fresh render must generate a new random token (kept only via lookup)"
    with open(os.path.join(CHART, "templates", "secret-admin-token.yaml")) as f:
        assert 'lookup "v1" "Secret" .Release.Namespace $name' in f.read()
    # Mounted as a file the config names (not an env var, so rotation reloads).
    cfg = toml_config(objs)
    c = container(objs)
    mount = [m for m in c["volumeMounts"] if m["name"] == "admin-token"][0]
    assert cfg["admin"]["bearer_token_file"] == mount["mountPath"] + "/token"
    assert not any(e.get("name") == "PROXY_ADMIN_TOKEN" for e in c.get("env", []))
    # An existing Secret: none is made, the pod uses that one.
    objs = render(helm_bin, "existing-secrets-values.yaml")
    assert find(objs, "Secret") == []
    vols = {v["name"]: v for v in one(objs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert vols["admin-token"]["secret"]["secretName"] == "switchyard-admin"
    assert vols["tls"]["secret"]["secretName"] == "switchyard-tls"
    assert toml_config(objs)["admin"]["bearer_token_file"].endswith("/admin-token")


def test_tls_sources(helm_bin):
    objs = render(helm_bin)
    assert "tls" not in toml_config(objs)
    assert find(objs, "Certificate") == []
    objs = render(helm_bin, "cert-manager-values.yaml")
    cert = one(objs, "Certificate")
    assert cert["apiVersion"] == "cert-manager.io/v1"
    assert cert["spec"]["dnsNames"] == ["mail.example.com", "imap.example.com"]
    vols = {v["name"]: v for v in one(objs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert vols["tls"]["secret"]["secretName"] == cert["spec"]["secretName"]
    tc = toml_config(objs)["tls"]["certificate"]["default"]
    assert tc["cert"].endswith("/tls.crt") and tc["key"].endswith("/tls.key") and tc["default"] is True
    p = helm(helm_bin, "template", "x", CHART, "--set", "tls.certManager.enabled=true", check=False)
    assert p.returncode != 0 and "issuerRef.name" in p.stderr


def test_roll_on_config_change(helm_bin):
    ann = lambda objs: one(objs, "Deployment")["spec"]["template"]["metadata"].get("annotations") or {}
    assert "checksum/config" not in ann(render(helm_bin))
    a = ann(render(helm_bin, sets=["rollOnConfigChange=true"]))["checksum/config"]
    b = ann(render(helm_bin, sets=["rollOnConfigChange=true", "mappings=alice@example.com legacy"]))["checksum/config"]
    assert re.fullmatch(r"[0-9a-f]{64}", a) and a != b


def test_optional_objects_off_by_default(helm_bin):
    kinds = {o["kind"] for o in render(helm_bin)}
    assert kinds == {"ConfigMap", "Secret", "Deployment", "PodDisruptionBudget", "Service", "ServiceAccount"}
    objs = render(helm_bin, "monitoring-values.yaml")
    kinds = {o["kind"] for o in objs}
    assert {"ServiceMonitor", "PrometheusRule", "NetworkPolicy"} <= kinds
    sm = one(objs, "ServiceMonitor")
    admin = [o for o in find(objs, "Service") if o["metadata"]["name"].endswith("-admin")][0]
    assert all(admin["metadata"]["labels"].get(k) == v for k, v in sm["spec"]["selector"]["matchLabels"].items())
    assert sm["spec"]["endpoints"][0]["port"] == "admin" and sm["spec"]["endpoints"][0]["scheme"] == "https"
    dash = [o for o in find(objs, "ConfigMap") if "switchyard.json" in o.get("data", {})]
    assert len(dash) == 1 and dash[0]["metadata"]["labels"]["grafana_dashboard"] == "1"
    json.loads(dash[0]["data"]["switchyard.json"])
    np_ = one(objs, "NetworkPolicy")
    admin_rule = [r for r in np_["spec"]["ingress"] if r["ports"] == [{"port": 9443, "protocol": "TCP"}]]
    assert admin_rule and admin_rule[0]["from"][0]["namespaceSelector"]
    alerts = {r["alert"] for g in one(objs, "PrometheusRule")["spec"]["groups"] for r in g["rules"]}
    assert {"SwitchyardDestinationDown", "SwitchyardStoreErrors", "SwitchyardConfigReloadFailed",
            "SwitchyardReadinessLost"} <= alerts
    assert "SwitchyardClusterNoServingNode" not in alerts  # no discovery in this scenario
    objs = render(helm_bin, "discovery-values.yaml", sets=["metrics.prometheusRule.enabled=true"])
    alerts = {r["alert"] for g in one(objs, "PrometheusRule")["spec"]["groups"] for r in g["rules"]}
    assert "SwitchyardClusterNoServingNode" in alerts


def test_config_changes_with_the_mapping_file(helm_bin):
    """The proxy watches only switchyard.toml: the chart puts the mapping
    file's checksum in it, so a mappings-only upgrade still triggers a reload
    (which re-reads the mapping file)."""
    a = config_map(render(helm_bin))["data"]
    b = config_map(render(helm_bin, sets=["mappings=alice@example.com legacy"]))["data"]
    assert a["mappings.tsv"] != b["mappings.tsv"]
    assert a["switchyard.toml"] != b["switchyard.toml"]
    strip = lambda t: re.sub(r"(?m)^# mappings\.tsv sha256:[0-9a-f]{64}$", "", t)
    assert strip(a["switchyard.toml"]) == strip(b["switchyard.toml"])


def test_ticket_key_secret(helm_bin, tmp_path):
    """tls.ticketKeySecret mounts the Secret's key file and names it in [tls]
    (the switchyard.tlsCertificate helper); unset, neither appears, so each
    pod keeps its own ticket keys."""
    objs = render(helm_bin)
    assert "ticket_key_file" not in config_map(objs)["data"]["switchyard.toml"]
    assert "tickets" not in json.dumps(one(objs, "Deployment")["spec"]["template"]["spec"]["volumes"])

    objs = render(helm_bin, sets=["tls.ticketKeySecret.name=tix", "tls.ticketKeySecret.key=k1"])
    cfg = toml_config(objs)
    assert cfg["tls"]["ticket_key_file"] == SECRETS_DIR + "/tickets/k1"
    vols = {v["name"]: v for v in one(objs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert vols["ticket-keys"]["secret"] == {"secretName": "tix", "items": [{"key": "k1", "path": "k1"}]}
    mounts = {m["name"]: m for m in container(objs)["volumeMounts"]}
    assert mounts["ticket-keys"]["mountPath"] == SECRETS_DIR + "/tickets"
    assert mounts["ticket-keys"]["readOnly"] is True

    # A config that does not use the helper is refused rather than silently
    # running without the shared keys.
    own = tmp_path / "own-config.yaml"
    own.write_text('config: |\n  [server]\n  log_format = "json"\n\n  {{ include "switchyard.adminTable" . }}\n')
    p = helm(helm_bin, "template", "mail", CHART, "-f", str(own), "--set", "tls.ticketKeySecret.name=tix",
             check=False)
    assert p.returncode != 0 and "tls.ticketKeySecret.name is set but config has no ticket_key_file" in p.stderr, \
        p.stderr


def test_every_value_is_documented():
    """docs/KUBERNETES.md's values reference names every key of values.yaml
    (as the full path, or as `.key` after its parent in the same row)."""
    import yaml
    with open(os.path.join(CHART, "values.yaml")) as f:
        values = yaml.safe_load(f)
    with open(os.path.join(CHART, "..", "..", "docs", "KUBERNETES.md")) as f:
        doc = f.read()
    ref = doc[doc.index("## Values reference"):doc.index("### Monitoring")]
    rows = [l for l in ref.splitlines() if l.startswith("| `")]

    def leaves(d, prefix=""):
        for k, v in d.items():
            path = f"{prefix}{k}"
            # Free-form maps and lists are documented as one key.
            if isinstance(v, dict) and v and k not in ("resources", "podSecurityContext", "securityContext",
                                                     "labels", "annotations"):
                yield from leaves(v, path + ".")
            else:
                yield path

    missing = []
    for path in leaves(values):
        parent, _, last = path.rpartition(".")
        ok = any(f"`{path}`" in r                                          # the full path
                 or (parent and f"`{parent}." in r and f"`.{last}`" in r)      # `a.b`, `.c` in one row
                 or (parent and f"`{parent}`" in r and f"`{last}`" in r)       # a group and its fields
                 for r in rows)
        if not ok:
            missing.append(path)
    assert not missing, f"undocumented values: {missing}"


@pytest.mark.parametrize("scenario", [None, "existing-secrets-values.yaml", "admin-plain-values.yaml"])
def test_notes_tell_how_to_reach_the_api(helm4_bin, scenario):
    """NOTES.txt (shown by helm install; rendered here with a client-side dry
    run) names the real admin Service, port, scheme and token Secret."""
    p = helm(helm4_bin, "install", "mail", CHART, "--namespace", NAMESPACE, "--dry-run=client",
             *values_args(scenario))
    notes = p.stdout[p.stdout.index("NOTES:"):]
    objs = render(helm4_bin, scenario)
    admin_svc = [o for o in find(objs, "Service") if o["metadata"]["name"].endswith("-admin")][0]
    port = admin_svc["spec"]["ports"][0]["port"]
    assert f"port-forward svc/{admin_svc['metadata']['name']} {port}:{port}" in notes
    vols = {v["name"]: v for v in one(objs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    secret = vols["admin-token"]["secret"]
    assert f"get secret {secret['secretName']} -o jsonpath='{{.data.{secret['items'][0]['key']}}}'" in notes
    scheme = "http" if toml_config(objs)["admin"].get("tls") == "plain" else "https"
    assert f"A={scheme}://127.0.0.1:{port}" in notes
    assert "/mappings?identifier=" in notes and "/connections/kick?identifier=" in notes
