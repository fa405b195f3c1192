#!/usr/bin/env python3
# consumer.metrics_listen from the files, docker.toml over default.toml (admin get has none yet).
# Run by scripts/check-deploy.sh (from the repository root) with its venv's python.
import tomllib
for f in ("config/docker.toml", "config/default.toml"):
    listen = tomllib.load(open(f, "rb")).get("consumer", {}).get("metrics_listen")
    if listen:
        print(listen)
        break
