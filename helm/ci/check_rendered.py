#!/usr/bin/env python3
"""Checks on manifests rendered by `helm template` (used by scripts/check-helm.sh).

Subcommands (each prints one summary line, exits non-zero on failure):
  split RENDERED OUT_CORE            write the non-CRD documents to OUT_CORE
                                     (for kubernetes-validate, which skips CRDs)
  crds RENDERED SCHEMA_DIR           validate ServiceMonitor, PrometheusRule and
                                     ScaledObject documents against SCHEMA_DIR
  rules RENDERED ALERTS_FILE         PrometheusRule spec.groups == groups of the
                                     Prometheus rule file
  dashboard RENDERED DASHBOARD_FILE  dashboard ConfigMap holds the file verbatim
  config RENDERED OUT_TOML OUT_ENV [DEFAULT_TOML]
                                     extract the worker's config.toml (and the
                                     DEVICE_LOGS__* env of the Deployment, secrets
                                     as placeholders) for `device-logs check-config`;
                                     with DEFAULT_TOML, the parsed config must equal it
  invariants RENDERED DOCKERFILE     restricted Pod Security Standard, probes,
                                     checksum annotation, grace period, Service /
                                     ServiceMonitor wiring, image user == pod user
"""
import json
import os
import re
import sys

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

import jsonschema
import yaml

CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.schema.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule.schema.json",
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject.schema.json",
}
CORE_GROUPS = {"v1", "apps/v1", "batch/v1", "policy/v1", "autoscaling/v2"}
PLACEHOLDER = "check-config-placeholder"


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def fail(msg):
    print(f"FAIL {msg}")
    sys.exit(1)


def ok(msg):
    print(f"ok   {msg}")


def name(doc):
    return f"{doc['kind']}/{doc['metadata']['name']}"


def component(doc):
    return doc["metadata"].get("labels", {}).get("app.kubernetes.io/component")


def one(docs, kind, comp="worker"):
    found = [d for d in docs if d["kind"] == kind and component(d) == comp]
    if len(found) != 1:
        fail(f"expected one {kind} of component {comp}, found {len(found)}")
    return found[0]


def worker_config_map(docs):
    found = [d for d in docs if d["kind"] == "ConfigMap" and component(d) == "worker"
             and "config.toml" in d.get("data", {})]
    if len(found) != 1:
        fail(f"expected one worker ConfigMap with config.toml, found {len(found)}")
    return found[0]


def cmd_split(rendered, out):
    docs = load(rendered)
    core, unknown = [], []
    for d in docs:
        key = (d["apiVersion"], d["kind"])
        if key in CRD_SCHEMAS:
            continue
        if d["apiVersion"] not in CORE_GROUPS:
            unknown.append(name(d))
        core.append(d)
    if unknown:
        fail(f"no schema for {', '.join(unknown)}: add it to CRD_SCHEMAS or CORE_GROUPS")
    with open(out, "w") as f:
        yaml.safe_dump_all(core, f, sort_keys=False)
    ok(f"{len(core)} core documents of {len(docs)}")


def cmd_crds(rendered, schema_dir):
    docs = load(rendered)
    checked = []
    for d in docs:
        key = (d["apiVersion"], d["kind"])
        if key not in CRD_SCHEMAS:
            continue
        with open(os.path.join(schema_dir, CRD_SCHEMAS[key])) as f:
            schema = json.load(f)
        errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(d), key=lambda e: list(e.path))
        if errors:
            for e in errors:
                print(f"     {name(d)} at /{'/'.join(map(str, e.path))}: {e.message}")
            fail(f"{name(d)} does not match {CRD_SCHEMAS[key]}")
        checked.append(name(d))
    ok("CRD documents valid: " + (", ".join(checked) if checked else "none rendered"))


def cmd_rules(rendered, alerts):
    rule = one(load(rendered), "PrometheusRule")
    with open(alerts) as f:
        expected = yaml.safe_load(f)["groups"]
    if rule["spec"]["groups"] != expected:
        fail(f"{name(rule)} spec.groups differ from {alerts}")
    n = sum(len(g["rules"]) for g in expected)
    ok(f"{name(rule)} embeds exactly the {len(expected)} group(s), {n} rule(s) of {alerts}")


def cmd_dashboard(rendered, dashboard):
    cms = [d for d in load(rendered) if d["kind"] == "ConfigMap" and "device-logs.json" in d.get("data", {})]
    if len(cms) != 1:
        fail(f"expected one dashboard ConfigMap, found {len(cms)}")
    cm = cms[0]
    with open(dashboard) as f:
        expected = f.read()
    got = cm["data"]["device-logs.json"]
    if got.rstrip("\n") != expected.rstrip("\n"):
        fail(f"{name(cm)} data differs from {dashboard}")
    json.loads(got)
    if cm["metadata"]["labels"].get("grafana_dashboard") != "1":
        fail(f"{name(cm)} lacks the Grafana sidecar label grafana_dashboard: \"1\"")
    ok(f"{name(cm)} holds {dashboard} verbatim ({len(expected)} bytes, valid JSON)")


def cmd_config(rendered, out_toml, out_env, default_toml=None):
    docs = load(rendered)
    cm = worker_config_map(docs)
    text = cm["data"]["config.toml"]
    parsed = tomllib.loads(text)
    # The create-topics hook gets a copy: it must be the same file.
    for d in docs:
        if d["kind"] == "ConfigMap" and component(d) == "create-topics":
            if d["data"]["config.toml"] != text:
                fail(f"{name(d)} config.toml differs from {name(cm)}")
    with open(out_toml, "w") as f:
        f.write(text)
    container = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    env = {}
    for e in container.get("env", []):
        if not e["name"].startswith("DEVICE_LOGS__"):
            continue
        env[e["name"]] = e.get("value", PLACEHOLDER if "valueFrom" in e else "")
    with open(out_env, "w") as f:
        for k, v in env.items():
            f.write(f"{k}={v}\n")
    extra = ""
    if default_toml:
        with open(default_toml, "rb") as f:
            default = tomllib.load(f)
        if parsed != default:
            diff = [k for k in sorted(set(parsed) | set(default)) if parsed.get(k) != default.get(k)]
            fail(f"config rendered from the default values differs from {default_toml} in [{', '.join(diff)}]")
        extra = f", equal to {default_toml}"
    ok(f"config.toml parses as TOML ({len(parsed)} sections){extra}; env: {', '.join(env) or 'none'}")


DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(duration):
    return sum(int(n) * DURATION_UNITS[u] for n, u in re.findall(r"([0-9]+)(ms|s|m|h|d)", duration))


def pod_specs(docs):
    for d in docs:
        if d["kind"] == "Pod":
            yield d, d["spec"]
        elif d["kind"] in ("Deployment", "Job"):
            yield d, d["spec"]["template"]["spec"]


def cmd_invariants(rendered, dockerfile):
    docs = load(rendered)
    problems = []
    with open(dockerfile) as f:
        users = re.findall(r"^USER\s+(\d+)(?::(\d+))?\s*$", f.read(), re.M)
    if not users:
        fail(f"{dockerfile} has no numeric USER")
    image_uid = int(users[-1][0])
    # Pod Security Standard "restricted" (v1.29+ rules that a manifest can show).
    for d, spec in pod_specs(docs):
        psc = spec.get("securityContext", {})
        for v in spec.get("volumes", []):
            allowed = {"name", "configMap", "secret", "emptyDir", "projected", "downwardAPI",
                       "persistentVolumeClaim", "ephemeral", "csi"}
            if set(v) - allowed:
                problems.append(f"{name(d)}: volume {v['name']} type not allowed by restricted")
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(key):
                problems.append(f"{name(d)}: {key}")
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = c.get("securityContext", {})
            where = f"{name(d)} container {c['name']}"
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation must be false")
            if sc.get("privileged"):
                problems.append(f"{where}: privileged")
            if sc.get("capabilities", {}).get("drop") != ["ALL"]:
                problems.append(f"{where}: capabilities must drop ALL")
            if set(sc.get("capabilities", {}).get("add", [])) - {"NET_BIND_SERVICE"}:
                problems.append(f"{where}: adds capabilities")
            if not (sc.get("runAsNonRoot", psc.get("runAsNonRoot"))):
                problems.append(f"{where}: runAsNonRoot must be true")
            if sc.get("runAsUser", psc.get("runAsUser")) == 0:
                problems.append(f"{where}: runAsUser 0")
            seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
            if seccomp not in ("RuntimeDefault", "Localhost"):
                problems.append(f"{where}: seccompProfile must be RuntimeDefault")
            if not sc.get("readOnlyRootFilesystem"):
                problems.append(f"{where}: readOnlyRootFilesystem must be true")
            for p in c.get("ports", []):
                if p.get("hostPort"):
                    problems.append(f"{where}: hostPort")
            if not c.get("resources", {}).get("requests"):
                problems.append(f"{where}: no resource requests")
            if d["kind"] != "Pod" and sc.get("runAsUser", psc.get("runAsUser")) != image_uid:
                problems.append(f"{where}: runs as {sc.get('runAsUser', psc.get('runAsUser'))}, the image user is {image_uid}")
            mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
            if d["kind"] != "Pod" and "/tmp" not in mounts:
                problems.append(f"{where}: no writable /tmp")
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{name(d)}: automountServiceAccountToken must be false")

    deploy = one(docs, "Deployment")
    tpl = deploy["spec"]["template"]
    container = tpl["spec"]["containers"][0]
    config = tomllib.loads(worker_config_map(docs)["data"]["config.toml"])
    if "checksum/config" not in tpl["metadata"].get("annotations", {}):
        problems.append("Deployment pod template lacks checksum/config")
    grace = tpl["spec"].get("terminationGracePeriodSeconds", 30)
    if grace <= seconds(config["shutdown"]["timeout"]):
        problems.append(f"terminationGracePeriodSeconds {grace} <= shutdown.timeout {config['shutdown']['timeout']}")
    port = int(config["http"]["listen"].rsplit(":", 1)[1])
    if [p["containerPort"] for p in container["ports"] if p["name"] == "metrics"] != [port]:
        problems.append(f"container port metrics != http.listen port {port}")
    for probe, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
        if container.get(probe, {}).get("httpGet", {}).get("path") != path:
            problems.append(f"{probe} is not on {path}")
    if "--config" not in container["args"] or container["args"][0] != "run":
        problems.append("the worker does not run `device-logs run --config ...`")
    env = {e["name"]: e for e in container.get("env", [])}
    for secret_env in ("DEVICE_LOGS__REDIS__PASSWORD", "DEVICE_LOGS__KAFKA__SASL__PASSWORD",
                       "DEVICE_LOGS__KAFKA__SASL__USERNAME"):
        if secret_env in env and "secretKeyRef" not in env[secret_env].get("valueFrom", {}):
            problems.append(f"{secret_env} is not taken from a Secret")
    if config["redis"]["password"] or config["kafka"]["sasl"]["password"]:
        problems.append("a password is inlined in the ConfigMap")
    if any(d["kind"] == "Secret" for d in docs):
        problems.append("the chart renders a Secret (credentials must come from existing Secrets)")
    hpa = any(d["kind"] == "HorizontalPodAutoscaler" for d in docs)
    keda = any(d["kind"] == "ScaledObject" for d in docs)
    if hpa and keda:
        problems.append("both an HPA and a ScaledObject")
    if (hpa or keda) == ("replicas" in deploy["spec"]):
        problems.append("Deployment replicas must be set exactly when no autoscaler is")
    svc = one(docs, "Service")
    selector = svc["spec"]["selector"]
    if any(tpl["metadata"]["labels"].get(k) != v for k, v in selector.items()):
        problems.append("Service selector does not select the worker pods")
    container_ports = {p["name"] for p in container["ports"]} | {p["containerPort"] for p in container["ports"]}
    for p in svc["spec"]["ports"]:
        if p.get("targetPort", p["port"]) not in container_ports:
            problems.append(f"{name(svc)} port {p['name']} targets {p.get('targetPort')}, not a container port")
    for d in docs:
        if d["kind"] in ("Pod", "Job") and all(
                d["spec"].get("template", {}).get("metadata", d["metadata"])["labels"].get(k) == v
                for k, v in selector.items()):
            problems.append(f"{name(d)} would be selected by the Service")
    for sm in (d for d in docs if d["kind"] == "ServiceMonitor"):
        want = sm["spec"]["selector"]["matchLabels"]
        if any(svc["metadata"]["labels"].get(k) != v for k, v in want.items()):
            problems.append(f"{name(sm)} does not select {name(svc)}")
        ports = {p["name"] for p in svc["spec"]["ports"]}
        for ep in sm["spec"]["endpoints"]:
            if ep["port"] not in ports or ep.get("path") != "/metrics":
                problems.append(f"{name(sm)} endpoint {ep['port']} is not the Service's metrics port")
        if svc["metadata"]["namespace"] not in sm["spec"]["namespaceSelector"].get("matchNames", []):
            problems.append(f"{name(sm)} does not look in the release namespace")
    for so in (d for d in docs if d["kind"] == "ScaledObject"):
        topics = {config["kafka"]["topics"]["requests"], config["kafka"]["topics"]["uploads"]}
        got = {t["metadata"].get("topic") for t in so["spec"]["triggers"]}
        groups = {t["metadata"]["consumerGroup"] for t in so["spec"]["triggers"]}
        if got != topics or groups != {config["kafka"]["group_id"]}:
            problems.append(f"{name(so)} triggers are not the lag of {config['kafka']['group_id']} on {sorted(topics)}")
        if so["spec"]["scaleTargetRef"]["name"] != deploy["metadata"]["name"]:
            problems.append(f"{name(so)} does not target the Deployment")
    if problems:
        for p in problems:
            print(f"     {p}")
        fail(f"{len(problems)} invariant(s) broken")
    ok(f"restricted PSS, probes, checksum, grace {grace}s > {config['shutdown']['timeout']}, wiring, uid {image_uid}")


def main():
    cmds = {"split": cmd_split, "crds": cmd_crds, "rules": cmd_rules, "dashboard": cmd_dashboard,
            "config": cmd_config, "invariants": cmd_invariants}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        print(__doc__)
        sys.exit(2)
    cmds[sys.argv[1]](*sys.argv[2:])


if __name__ == "__main__":
    main()
