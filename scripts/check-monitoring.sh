#!/usr/bin/env bash
# Checks the monitoring assets of device-logs, offline (no Prometheus, Grafana
# or cluster needed):
#   helm/device-logs/files/alerts.yaml     Prometheus alerting rules
#   helm/device-logs/files/dashboard.json  Grafana dashboard
#   monitoring/tests/alerts.test.yaml      promtool unit tests of the alerts
#   docs/metrics.md, docs/runbooks.md      metric reference, alert runbooks
#
# Usage: bash scripts/check-monitoring.sh
# Prints one line per check ("ok" or "FAIL", with the failing output after it)
# and exits non-zero if any check failed. Installs promtool (Debian package
# `prometheus`) and PyYAML (`python3-yaml`) with apt-get only when missing.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

ALERTS=helm/device-logs/files/alerts.yaml
DASHBOARD=helm/device-logs/files/dashboard.json
TESTS=monitoring/tests/alerts.test.yaml
METRICS_DOC=docs/metrics.md
RUNBOOKS=docs/runbooks.md

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y --no-install-recommends "$@" >/dev/null 2>&1; then
    apt-get update >/dev/null
    apt-get install -y --no-install-recommends "$@" >/dev/null
  fi
}

if ! command -v promtool >/dev/null 2>&1; then
  echo "promtool missing: apt-get install prometheus" >&2
  apt_install prometheus
fi
if ! python3 -c 'import yaml' >/dev/null 2>&1; then
  echo "PyYAML missing: apt-get install python3-yaml" >&2
  apt_install python3-yaml
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

failures=0
# run_check NAME COMMAND...: runs the command, prints one line, and the
# command's output (indented) only when it fails.
run_check() {
  local name=$1
  shift
  if "$@" >"$WORK/out" 2>&1; then
    echo "ok    $name"
  else
    echo "FAIL  $name"
    sed 's/^/      /' "$WORK/out"
    failures=$((failures + 1))
  fi
}

# The Python helpers: one program, several subcommands, so the metric list and
# the PromQL scanning live in one place.
cat >"$WORK/monitoring.py" <<'PY'
"""Helpers of scripts/check-monitoring.sh (see there)."""
import json
import re
import sys

import yaml

# Every metric the worker exposes, with its labels and, where bounded and
# fixed, their values (None = configured or open-ended, e.g. topic names).
# Keep in sync with docs/metrics.md and src/metrics.rs.
HIST = "histogram"
METRICS = {
    "device_logs_inputs_total": ("counter", {
        "topic": None,
        "outcome": {"applied", "duplicate", "stale", "dead_letter", "retried"}}),
    "device_logs_transitions_total": ("counter", {
        "from": {"none", "pending", "received", "expired"},
        "to": {"pending", "received", "expired"}}),
    "device_logs_dead_letters_total": ("counter", {
        "reason": {"malformed", "invalid", "no_pending_request"}}),
    "device_logs_events_published_total": ("counter", {
        "topic": None, "outcome": {"ok", "error"}}),
    "device_logs_processing_duration_seconds": (HIST, {}),
    "device_logs_event_lag_seconds": (HIST, {}),
    "device_logs_expiry_delay_seconds": (HIST, {}),
    "device_logs_pending_requests": ("gauge", {}),
    "device_logs_outbox_depth": ("gauge", {}),
    "device_logs_consumer_lag": ("gauge", {"topic": None, "partition": None}),
    "device_logs_rebalances_total": ("counter", {
        "kind": {"assign", "revoke", "error"}}),
    "device_logs_assigned_partitions": ("gauge", {}),
    "device_logs_redis_duration_seconds": (HIST, {
        "operation": {"load", "apply", "sweep", "outbox_claim", "outbox_ack", "sample", "ping"}}),
    "device_logs_redis_errors_total": ("counter", {
        "kind": {"connection", "timeout", "response"}}),
    "device_logs_kafka_errors_total": ("counter", {
        "kind": {"consume", "produce", "commit", "store", "admin"}}),
    "device_logs_build_info": ("gauge", {"version": None, "revision": None}),
    # Process collector of the prometheus crate (Linux).
    "process_cpu_seconds_total": ("counter", {}),
    "process_open_fds": ("gauge", {}),
    "process_max_fds": ("gauge", {}),
    "process_virtual_memory_bytes": ("gauge", {}),
    "process_virtual_memory_max_bytes": ("gauge", {}),
    "process_resident_memory_bytes": ("gauge", {}),
    "process_start_time_seconds": ("gauge", {}),
    "process_threads": ("gauge", {}),
}
# Labels added at scrape time (Prometheus operator ServiceMonitor/PodMonitor).
TARGET_LABELS = {"job", "namespace", "pod", "instance", "service", "endpoint", "container"}


def series_names():
    """Every series name a query may use: histograms as _bucket/_sum/_count."""
    names = {}
    for name, (kind, labels) in METRICS.items():
        if kind == HIST:
            names[name + "_bucket"] = dict(labels, le=None)
            names[name + "_sum"] = labels
            names[name + "_count"] = labels
        else:
            names[name] = labels
    return names


SERIES = series_names()
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on",
            "ignoring", "group_left", "group_right", "inf", "nan", "atan2"}
IDENT = re.compile(r"(?<![A-Za-z0-9_:.$])[A-Za-z_:][A-Za-z0-9_:]*")
SELECTOR = re.compile(r"(?<![A-Za-z0-9_:])([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^}]*)\}")
MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*,?')
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


def metric_names(expr):
    """Series names an expression reads (functions and keywords excluded)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = GROUPING.sub(" ", e)
    names = set()
    for m in IDENT.finditer(e):
        tok = m.group(0)
        if tok.lower() in KEYWORDS or e[m.end():].lstrip().startswith("("):
            continue
        names.add(tok)
    return names


def check_expr(where, expr, errors):
    """Metric names known; matcher labels and fixed label values known;
    by/without/on labels belong to a metric of the expression."""
    names = metric_names(expr)
    if not names and "absent" not in expr:
        errors.append(f"{where}: no metric found in {expr!r}")
    used_labels = set(TARGET_LABELS)
    for name in names:
        if name not in SERIES:
            errors.append(f"{where}: unknown metric {name!r}")
        else:
            used_labels |= set(SERIES[name])
    for sel in SELECTOR.finditer(expr):
        name, body = sel.group(1), sel.group(2)
        if name in ("by", "without", "on", "ignoring") or name not in SERIES:
            continue
        labels = SERIES[name]
        rest = body
        for m in MATCHER.finditer(body):
            label, op, value = m.groups()
            rest = rest.replace(m.group(0), "", 1)
            if label not in labels and label not in TARGET_LABELS:
                errors.append(f"{where}: {name} has no label {label!r}")
                continue
            allowed = labels.get(label)
            if allowed and op in ("=", "!=") and "$" not in value and value not in allowed:
                errors.append(f"{where}: {name}{{{label}{op}\"{value}\"}}: "
                              f"{value!r} is not one of {sorted(allowed)}")
        if rest.strip():
            errors.append(f"{where}: cannot read matchers {body!r}")
    for g in GROUPING.finditer(expr):
        for label in filter(None, (x.strip() for x in g.group(2).split(","))):
            if label not in used_labels:
                errors.append(f"{where}: {g.group(1)} ({label}): no metric of the "
                              f"expression has label {label!r}")


GRAFANA_VARS = [
    (r"\$__rate_interval|\$\{__rate_interval\}", "5m"),
    (r"\$__interval_ms|\$\{__interval_ms\}", "60000"),
    (r"\$__interval|\$\{__interval\}", "1m"),
    (r"\$__range_s|\$\{__range_s\}", "3600"),
    (r"\$__range_ms|\$\{__range_ms\}", "3600000"),
    (r"\$__range|\$\{__range\}", "1h"),
]


def substitute(expr):
    """Grafana built-ins get concrete durations; any other variable ($job,
    ${pod:regex}, [[namespace]]) becomes the regex .*, which is only valid
    inside a label matcher's string, where variables belong."""
    for pattern, value in GRAFANA_VARS:
        expr = re.sub(pattern, value, expr)
    expr = re.sub(r"\$\{[A-Za-z0-9_]+(?::[A-Za-z0-9_]+)?\}|\$[A-Za-z0-9_]+|\[\[[A-Za-z0-9_]+\]\]", ".*", expr)
    return expr


def walk_panels(panels):
    for p in panels:
        yield p
        yield from walk_panels(p.get("panels", []))


def dashboard_queries(dash):
    """(where, rule name, expr) of every panel target and query variable."""
    out = []
    for p in walk_panels(dash.get("panels", [])):
        for t in p.get("targets", []):
            out.append((f"panel {p.get('id')} {p.get('title')!r} target {t.get('refId')}",
                        f"dashboard:panel_{p.get('id')}_{t.get('refId')}", t.get("expr", "")))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query", "") if isinstance(q, dict) else (q or "")
        m = re.fullmatch(r"\s*label_values\(\s*(.+?)\s*,\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*", q)
        if not m:
            m = re.fullmatch(r"\s*query_result\((.*)\)\s*", q)
        out.append((f"variable ${v.get('name')}", f"dashboard:variable_{v.get('name')}",
                    m.group(1) if m else q))
    return out


def cmd_extract(dashboard, out):
    """Dashboard queries as recording rules, for `promtool check rules`."""
    dash = json.load(open(dashboard))
    rules = []
    for where, name, expr in dashboard_queries(dash):
        if not expr.strip():
            print(f"{where}: empty expr")
            return 1
        rules.append({"record": re.sub(r"[^A-Za-z0-9_:]", "_", name), "expr": substitute(expr),
                      "labels": {"source": where}})
    yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]},
                   open(out, "w"), sort_keys=False, width=1000)
    print(f"{len(rules)} queries extracted")
    return 0


DS = {"type": "prometheus", "uid": "${datasource}"}
BUILTIN_ANNOTATION_DS = {"type": "grafana", "uid": "-- Grafana --"}


def cmd_datasources(dashboard):
    """No hard-coded datasource anywhere: every panel, target and query
    variable uses the ${datasource} variable, which is of type datasource."""
    errors = []
    dash = json.load(open(dashboard))
    text = open(dashboard).read()
    if "__inputs" in dash or "${DS_" in text:
        errors.append("export-for-sharing leftovers (__inputs / ${DS_...})")
    ds_vars = [v for v in dash.get("templating", {}).get("list", [])
               if v.get("name") == "datasource"]
    if len(ds_vars) != 1 or ds_vars[0].get("type") != "datasource" \
            or ds_vars[0].get("query") != "prometheus":
        errors.append('templating needs one variable "datasource" of type datasource, query prometheus')

    def walk(node, path):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "datasource":
                    builtin = path.startswith("dashboard.annotations") and node.get("builtIn") == 1
                    if v != DS and not (builtin and v == BUILTIN_ANNOTATION_DS):
                        errors.append(f"{path}.datasource = {json.dumps(v)}, want {json.dumps(DS)}")
                walk(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")

    walk(dash, "dashboard")
    ids = set()
    for p in walk_panels(dash.get("panels", [])):
        where = f"panel {p.get('id')} {p.get('title')!r}"
        if p.get("id") in ids:
            errors.append(f"{where}: duplicate id")
        ids.add(p.get("id"))
        g = p.get("gridPos", {})
        if not all(k in g for k in "hwxy") or g["x"] + g["w"] > 24:
            errors.append(f"{where}: bad gridPos {g}")
        if p.get("type") == "row":
            continue
        if p.get("datasource") != DS:
            errors.append(f"{where}: panel datasource missing")
        if not p.get("targets"):
            errors.append(f"{where}: no targets")
        for t in p.get("targets", []):
            if t.get("datasource") != DS:
                errors.append(f"{where} target {t.get('refId')}: datasource missing")
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "query" and v.get("datasource") != DS:
            errors.append(f"variable ${v.get('name')}: datasource is not ${{datasource}}")
    for e in errors:
        print(e)
    if not errors:
        print(f"{len(ids)} panels use ${{datasource}}")
    return 1 if errors else 0


def alert_rules(alerts):
    doc = yaml.safe_load(open(alerts))
    return [r for g in doc["groups"] for r in g["rules"]]


def cmd_metric_names(dashboard, alerts, tests):
    """Every metric the dashboard, the alerts and the alert tests read is one
    the worker exposes, with its real labels and label values."""
    errors = []
    dash = json.load(open(dashboard))
    queries = dashboard_queries(dash)
    for where, _, expr in queries:
        check_expr(f"dashboard {where}", expr, errors)
    rules = alert_rules(alerts)
    for r in rules:
        check_expr(f"alert {r.get('alert') or r.get('record')}", r["expr"], errors)
    doc = yaml.safe_load(open(tests))
    for t in doc["tests"]:
        for s in t.get("input_series", []):
            name = s["series"].split("{", 1)[0].strip()
            if name not in SERIES:
                errors.append(f"test {t.get('name')!r}: unknown metric {name!r}")
    for e in errors:
        print(e)
    if not errors:
        print(f"{len(queries)} dashboard queries and {len(rules)} rules use known metrics")
    return 1 if errors else 0


def anchors(markdown):
    """GitHub heading anchors of a Markdown file."""
    out = set()
    for line in open(markdown):
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            a = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            out.add(a)
    return out


def cmd_alert_metadata(alerts, runbooks, tests):
    """Each alert: severity label, summary/description/runbook_url, a runbook
    section at the URL's anchor, a test where it fires and one where it does not."""
    errors = []
    have = anchors(runbooks)
    doc = yaml.safe_load(open(tests))
    fires, quiet = set(), set()
    for t in doc["tests"]:
        for a in t.get("alert_rule_test", []):
            (fires if a.get("exp_alerts") else quiet).add(a["alertname"])
    rules = [r for r in alert_rules(alerts) if "alert" in r]
    for r in rules:
        name = r["alert"]
        if r.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
            errors.append(f"{name}: severity label must be critical, warning or info")
        ann = r.get("annotations", {})
        for k in ("summary", "description", "runbook_url"):
            if not ann.get(k):
                errors.append(f"{name}: annotation {k} missing")
        url = ann.get("runbook_url", "")
        anchor = url.split("#", 1)[1] if "#" in url else ""
        if not url.split("#", 1)[0].endswith("docs/runbooks.md") or anchor != name.lower():
            errors.append(f"{name}: runbook_url should end with docs/runbooks.md#{name.lower()}")
        if anchor not in have:
            errors.append(f"{name}: {runbooks} has no section #{anchor}")
        if name not in fires:
            errors.append(f"{name}: no test case where it fires")
        if name not in quiet:
            errors.append(f"{name}: no test case where it stays quiet")
    for e in errors:
        print(e)
    if not errors:
        print(f"{len(rules)} alerts complete")
    return 1 if errors else 0


def cmd_metrics_doc(metrics_doc):
    """docs/metrics.md has a section for every metric of the list above."""
    text = open(metrics_doc).read()
    missing = [m for m in METRICS
               if m.startswith("device_logs_") and not re.search(rf"^#+\s+`?{m}`?\s*$", text, re.M)]
    missing += [m for m in METRICS if not m.startswith("device_logs_") and m not in text]
    for m in missing:
        print(f"{metrics_doc}: no section for {m}")
    return 1 if missing else 0


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    sys.exit(globals()["cmd_" + cmd.replace("-", "_")](*args))
PY

py() { python3 "$WORK/monitoring.py" "$@"; }

run_check "promtool check rules $ALERTS" promtool check rules "$ALERTS"
run_check "dashboard queries parse (promtool check rules on every panel expr)" \
  bash -c "python3 '$WORK/monitoring.py' extract '$DASHBOARD' '$WORK/dashboard-rules.yaml' && promtool check rules '$WORK/dashboard-rules.yaml'"
run_check "promtool test rules $TESTS" promtool test rules "$TESTS"
run_check "dashboard uses \${datasource} everywhere, no hard-coded uid" py datasources "$DASHBOARD"
run_check "dashboard, alerts and tests use only exposed metrics, labels and values" \
  py metric-names "$DASHBOARD" "$ALERTS" "$TESTS"
run_check "every alert has severity, annotations, a runbook section, firing and quiet tests" \
  py alert-metadata "$ALERTS" "$RUNBOOKS" "$TESTS"
run_check "$METRICS_DOC documents every metric" py metrics-doc "$METRICS_DOC"

if [ "$failures" -ne 0 ]; then
  echo "$failures check(s) failed"
  exit 1
fi
echo "all monitoring checks passed"
