#!/usr/bin/env python3
# The dashboard's queries, parsed by a real PromQL parser. Modes:
#   static DASHBOARD DATASOURCES_DIR         JSON, datasource, PromQL, names, required panels
#   scrape DASHBOARD DATASOURCES_DIR URL...  every selector and grouping label in the scrapes
# Run by scripts/check-deploy.sh (from the repository root) with its venv's python.
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
    # Overload (issue 25): lag, outstanding claims, shed misses, refresh latency, oldest request.
    ("admission", "pricefront_admission_open", {}, None),
    ("shed misses", "pricefront_limited_total", {"limit": "backlog"}, None),
    ("outstanding requests", "pricefront_backlog_requests", {}, None),
    ("oldest queued request", "pricefront_backlog_oldest_seconds", {}, None),
    ("refresh latency", "pricefront_refresh_seconds_bucket", {}, "le"),
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
