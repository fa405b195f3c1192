#!/usr/bin/env python3
# config/docker.toml's [[providers]]: config/default.toml's sources at their in-network URLs.
# Run by scripts/check-deploy.sh (from the repository root) with its venv's python.
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
