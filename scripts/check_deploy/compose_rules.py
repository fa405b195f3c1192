#!/usr/bin/env python3
# pricefront's own rules on docker-compose.yml (YAML merge keys resolved). argv: COMPOSE_FILE
# Run by scripts/check-deploy.sh (from the repository root) with its venv's python.
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
