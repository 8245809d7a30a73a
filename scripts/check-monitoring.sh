#!/usr/bin/env bash
# Checks the shipped monitoring files with Prometheus' own tool:
#   - `promtool check rules` on packaging/prometheus/*.yml (the alert rules; the unit-test
#     file is not a rule file and is skipped),
#   - `promtool test rules` on packaging/prometheus/warden-alerts.test.yml (each alert fires
#     on synthetic series of a broken cluster, and none fires on healthy ones),
#   - that the Grafana dashboard is valid JSON and every PromQL query in it parses
#     (they are written into a throw-away rule file, `$scope` replaced, and checked by
#     `promtool check rules`).
# That every metric a rule or panel uses is exported by a running Warden is tested by
# crates/warden-agent/tests/e2e_monitoring.rs (part of ./test.sh).
# promtool comes with Debian's `prometheus` package: installed when missing and run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        echo "Installing prometheus (for promtool)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null
    else
        echo "promtool not found: install it with: sudo apt-get install -y prometheus" >&2
        exit 1
    fi
fi

work=$(mktemp -d /tmp/warden-check-monitoring.XXXXXX)
trap 'rm -rf "$work"' EXIT

rules=()
for f in packaging/prometheus/*.yml; do
    case "$f" in
    *.test.yml) ;;
    *) rules+=("$f") ;;
    esac
done
promtool check rules "${rules[@]}"
(cd packaging/prometheus && promtool test rules warden-alerts.test.yml)

dashboard=packaging/grafana/warden-dashboard.json
python3 - "$dashboard" "$work/dashboard-rules.yml" <<'EOF'
import json, sys

with open(sys.argv[1]) as f:
    dash = json.load(f)  # fails on invalid JSON
exprs = []

def walk(node):
    if isinstance(node, dict):
        if isinstance(node.get("expr"), str):
            exprs.append(node["expr"])
        for v in node.values():
            walk(v)
    elif isinstance(node, list):
        for v in node:
            walk(v)

walk(dash.get("panels", []))
if not exprs:
    sys.exit("no PromQL queries found in " + sys.argv[1])
with open(sys.argv[2], "w") as out:
    out.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, e in enumerate(exprs):
        # Grafana's variables are not PromQL: give them a value.
        e = e.replace("$scope", "demo").replace("${scope}", "demo")
        out.write(f"      - record: dashboard_query_{i}\n        expr: {json.dumps(e)}\n")
print(f"{sys.argv[1]}: valid JSON, {len(exprs)} queries")
EOF
promtool check rules "$work/dashboard-rules.yml"
echo "monitoring: OK"
