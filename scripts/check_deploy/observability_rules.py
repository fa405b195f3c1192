#!/usr/bin/env python3
# pricefront's rules over compose, prometheus.yml and Grafana's provisioning.
# argv: COMPOSE_FILE OBS_DIR PRODUCER_OPS_PORT CONSUMER_METRICS_PORT
# Run by scripts/check-deploy.sh (from the repository root) with its venv's python.
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
