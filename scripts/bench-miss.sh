#!/usr/bin/env bash
# Miss-path benchmark (issue 10): how much longer than its slowest price source a cold product
# takes, on the release stack (scripts/run.sh: producer, one consumer per partition, mock
# price APIs; Redis and the broker started if absent).
#
# Every mock source answers after exactly SLOWEST_MS (no jitter), so the slowest source is a
# known constant. An open-loop generator (Python, stdlib only) asks for RATE never-seen
# products per second for DURATION seconds and, on one PSUBSCRIBE {prefix}:ready:bm-<run>-*
# connection, timestamps the announcement (PUBLISH) of each result. It prints, as count, p50,
# p95, p99, max and min in milliseconds:
#
#   overhead = (announcement arrives) - (202 arrives) - SLOWEST_MS
#
# the issue's definition: the consumer's fetch, its fan-out bookkeeping, the Redis write and
# the PUBLISH. WAIT_SHARE percent of the products (spread evenly through the same run, so both
# kinds see the same broker) are asked with `Prefer: wait=WAIT_SECS` instead: for them it
# prints what a waiting client sees, its response time minus SLOWEST_MS (which also holds the
# claim and the broker-acknowledged publish, and the producer's wake-up after the
# announcement). The overhead is also shown per 10 s of the run: on tansu it grows with the
# topic's length (see "Drift" below). The librdkafka settings in force (fetch.wait.max.ms,
# fetch.min.bytes, linger.ms) are read back from the clients' own logged configuration, and
# the CPU each process used is shown, idle for 5 s before the load and during it (the broker's
# idle figure is the cost of the consumers' fetches alone: one per fetch.wait.max.ms each).
#
#   scripts/bench-miss.sh
#   FETCH_WAIT_MS=5 LINGER_MS=0 scripts/bench-miss.sh   # try other client settings
#   RATE=400 DURATION=60 WAIT_SHARE=0 scripts/bench-miss.sh
#
# Knobs (env): RATE (200 cold products/s), DURATION (30 s measured), WARMUP (5 s at RATE
# before it, not counted), WAIT_SHARE (50 %), WAIT_SECS (10), SOURCES (8), SLOWEST_MS (50: the
# latency of every source), FETCH_WAIT_MS and LINGER_MS (empty: the code's defaults; else
# set as [kafka.consumer_options] "fetch.wait.max.ms" and [kafka.producer_options]
# "linger.ms"), BUDGET_MS (20), BROKER (127.0.0.1:19092: nothing answers there, so run.sh
# starts a tansu of its own for this run and stops it after; 127.0.0.1:9092 for the shared
# one). Each run has a topic and consumer group of its own (bench-miss-<run>: a new group on a
# new topic is assigned its partitions at once, while tansu takes 30 s or more to settle a
# group whose earlier members left) and its own Redis key prefix, so a shared broker or Redis
# keeps other users' data apart. It needs the ports of config/default.toml free (producer,
# mock, consumer metrics).
#
# Drift: tansu's in-memory storage lists every stored batch of a partition to answer a fetch
# that returns data, so its cost per fetch grows with the topic (about one batch per product
# at these rates), and with it the overhead: a longer DURATION measures more of tansu.
#
# Exits non-zero if the stack fails, or a product gets no result or an unexpected answer; the
# budget is only reported. Logs: .run/logs/, .run/bench-miss-stack.log; every product's
# timings (perf_counter seconds) in .run/bench-miss-<run>.csv.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

RATE=${RATE:-200}
DURATION=${DURATION:-30}
WARMUP=${WARMUP:-5}
WAIT_SHARE=${WAIT_SHARE:-50}
WAIT_SECS=${WAIT_SECS:-10}
SOURCES=${SOURCES:-8}
SLOWEST_MS=${SLOWEST_MS:-50}
FETCH_WAIT_MS=${FETCH_WAIT_MS:-}
LINGER_MS=${LINGER_MS:-}
BUDGET_MS=${BUDGET_MS:-20}
BROKER=${BROKER:-127.0.0.1:19092}
for knob in RATE DURATION WARMUP WAIT_SHARE WAIT_SECS SOURCES SLOWEST_MS BUDGET_MS; do
  [[ ${!knob} =~ ^[0-9]+$ ]] || { log "$knob must be a whole number (got ${!knob:-nothing})"; exit 2; }
done
for knob in FETCH_WAIT_MS LINGER_MS; do
  [[ -z ${!knob} || ${!knob} =~ ^[0-9]+$ ]] || { log "$knob must be empty or a whole number"; exit 2; }
done
((RATE > 0 && DURATION > 0 && SOURCES > 0 && WAIT_SHARE <= 100)) ||
  { log "RATE, DURATION and SOURCES must be positive, WAIT_SHARE at most 100"; exit 2; }

log "building (release)"
cargo build --release --quiet --bins
bin=$TARGET_DIR/release

# The bench's own settings, on top of config/default.toml (an array replaces the default's).
run_id=$(date +%s)$$
prefix=pricefront-bench-miss
config=$RUN_DIR/bench-miss.toml
mock_listen=$("$bin/admin" get mock.listen)
{
  echo "# Written by scripts/bench-miss.sh for run $run_id; rewritten on each run."
  echo "[redis]"
  echo "key_prefix = \"$prefix\""
  echo "[kafka]"
  echo "brokers = \"$BROKER\""
  echo "topic = \"bench-miss-$run_id\""
  echo "dlq_topic = \"bench-miss-$run_id.dlq\""
  echo "group_id = \"bench-miss-$run_id\""
  if [[ -n $LINGER_MS ]]; then
    echo "[kafka.producer_options]"
    echo "\"linger.ms\" = \"$LINGER_MS\""
  fi
  if [[ -n $FETCH_WAIT_MS ]]; then
    echo "[kafka.consumer_options]"
    echo "\"fetch.wait.max.ms\" = \"$FETCH_WAIT_MS\""
  fi
  fixed_sources "$SOURCES" "$SLOWEST_MS" "$mock_listen"
} >"$config"
export PRICEFRONT_CONFIG=$config
# The clients log their effective librdkafka configuration at debug level: read back below.
# (Not through RUST_LOG, which a tansu started by run.sh would obey too, logging every request.)
unset RUST_LOG
export PRICEFRONT__LOG__FILTER=info,pricefront::queue::config=debug

listen=$("$bin/admin" get producer.listen)
redis_url=$("$bin/admin" get redis.url)
brokers=$("$bin/admin" get kafka.brokers)
base="http://$listen"
[[ $redis_url == redis://* && $redis_url != *@* ]] ||
  { log "the bench subscribes over plain redis:// without a password (got $redis_url)"; exit 2; }

mapfile -t ports < <(stack_ports "$bin")
require_free "${ports[@]}"

gen_pid=
cleanup() {
  trap '' INT TERM
  if [[ -n $gen_pid ]]; then
    kill -TERM "$gen_pid" 2>/dev/null && wait "$gen_pid" 2>/dev/null || true
  fi
  stop_release_stack
  stop_started
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if tcp_open "$(host_of "$brokers")" "$(port_of "$brokers" 9092)"; then
  broker_note="the broker already running at $brokers"
else
  broker_note="a tansu started for this run at $brokers"
fi
log "starting the stack (scripts/run.sh with $config, $broker_note; log in $RUN_DIR/bench-miss-stack.log)"
start_release_stack "$bin" "$RUN_DIR/bench-miss-stack.log"

# The effective value of a librdkafka property, from a client's logged configuration, or
# librdkafka's own default (given) when we set none.
effective() {
  local v
  v=$(sed 's/\x1b\[[0-9;]*m//g' "$RUN_DIR/logs/$1.log" | grep 'kafka client configuration' |
    grep -E "client=\"?$2\"? " | head -n1 | grep -oE "[ =]$3=[0-9]+" | grep -oE '[0-9]+$' || true)
  echo "${v:-$4 (librdkafka default)}"
}
settings="consumer fetch.wait.max.ms=$(effective consumer-1 consumer fetch.wait.max.ms 500)"
settings+=", fetch.min.bytes=$(effective consumer-1 consumer fetch.min.bytes 1)"
settings+="; producer linger.ms=$(effective producer producer linger.ms 5)"

# CPU time of each process of the stack (run.sh's children) and of the broker and Redis (the
# processes listening on their ports, ours or shared), sampled around the generator's run.
pid_on_port() { ss -ltnpH "sport = :$1" 2>/dev/null | grep -oE 'pid=[0-9]+' | head -n1 | cut -d= -f2; }
cpu_names=()
cpu_pids=()
for pid in $(pgrep -P "$STACK_PID"); do
  cpu_names+=("$(cat "/proc/$pid/comm" 2>/dev/null || echo "?")")
  cpu_pids+=("$pid")
done
for np in "broker=$(pid_on_port "$(port_of "$brokers" 9092)")" "redis=$(pid_on_port "$(port_of "$redis_url" 6379)")"; do
  pid=${np#*=}
  [[ -n $pid ]] || continue
  for i in "${!cpu_pids[@]}"; do [[ ${cpu_pids[i]} != "$pid" ]] || unset 'cpu_pids[i]' 'cpu_names[i]'; done
  cpu_names+=("${np%%=*}")
  cpu_pids+=("$pid")
done
cpu_names=("${cpu_names[@]}")
cpu_pids=("${cpu_pids[@]}")
cpu_ticks() {
  local pid
  awk '/^cpu / { printf "%d ", $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat   # the whole machine, busy
  for pid in "${cpu_pids[@]}"; do awk '{ printf "%d ", $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || printf '0 '; done
}

# cpu_report LABEL SECONDS BEFORE AFTER GENERATOR_CORES: cores busy per process; "anything
# else" is the machine's busy time less these and the generator: other work on the machine,
# which makes the figures noisy.
cpu_report() {
  awk -v names="$(IFS=,; echo "${cpu_names[*]}")" -v label="$1" -v secs="$2" -v before="$3" -v after="$4" \
    -v gen="$5" -v hz="$(getconf CLK_TCK)" '
    BEGIN {
      n = split(names, name, ","); split(before, b, " "); split(after, a, " ")
      if (secs <= 0) exit
      line = sprintf("CPU %s (cores):", label); ours = 0
      for (i = 1; i <= n; i++) { c = (a[i + 1] - b[i + 1]) / hz / secs; ours += c; line = line sprintf(" %s %.2f,", name[i], c) }
      whole = (a[1] - b[1]) / hz / secs; other = whole - ours - gen
      printf "%s%s whole machine %.2f, anything else %.2f\n", line, (gen > 0 ? sprintf(" generator %.2f;", gen) : ""), whole, (other > 0 ? other : 0)
      if (other > 0.25) printf "WARNING: other work took %.2f cores: the figures are noisy; rerun on a quiet machine\n", other
    }'
}

# What the stack costs with nothing to do: the consumers' fetches alone (one per
# fetch.wait.max.ms per consumer, as tansu holds each that long).
read -ra idle_before <<<"$(cpu_ticks)"
idle_started=$EPOCHREALTIME
sleep 5
read -ra idle_after <<<"$(cpu_ticks)"
idle_secs=$(awk -v a="$idle_started" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }')

log "run $run_id: $SOURCES sources at $SLOWEST_MS ms (jitter 0); $RATE cold products/s, ${WARMUP}s warm-up then ${DURATION}s measured, $WAIT_SHARE% with Prefer: wait=$WAIT_SECS"

IFS= read -r -d '' GENERATOR <<'PY' || true
import asyncio, os, sys, time

env = os.environ
HOST, PORT = env["BM_LISTEN"].rsplit(":", 1)
RHOST, RPORT = env["BM_REDIS"].rsplit(":", 1)
PREFIX, RUN = env["BM_PREFIX"], env["BM_RUN"]
RATE, DURATION, WARMUP = (float(env[k]) for k in ("BM_RATE", "BM_DURATION", "BM_WARMUP"))
WAIT_SHARE, WAIT_SECS = int(env["BM_WAIT_SHARE"]), int(env["BM_WAIT_SECS"])
SLOWEST, BUDGET = float(env["BM_SLOWEST_MS"]), float(env["BM_BUDGET_MS"])
GRACE = 10.0   # seconds after the last request for the last announcements
WINDOW = 10.0  # seconds per row of the drift table
CHANNEL = f"{PREFIX}:ready:"
now = time.perf_counter

announced = {}   # product id -> arrival of its announcement
subscribed = asyncio.Event()

async def read_resp(r):
    line = await r.readline()
    if not line:
        raise ConnectionError("Redis closed the subscription")
    kind, rest = line[:1], line[1:-2]
    if kind == b"*":
        return [await read_resp(r) for _ in range(int(rest))]
    if kind == b"$":
        n = int(rest)
        return None if n < 0 else (await r.readexactly(n + 2))[:-2]
    if kind == b"-":
        raise RuntimeError(rest.decode())
    return rest

async def subscriber():
    r, w = await asyncio.open_connection(RHOST, int(RPORT))
    pattern = f"{CHANNEL}bm-{RUN}-*".encode()
    w.write(b"*2\r\n$10\r\nPSUBSCRIBE\r\n$%d\r\n%s\r\n" % (len(pattern), pattern))
    while True:
        msg = await read_resp(r)
        t = now()
        if msg[0] == b"psubscribe":
            subscribed.set()
        elif msg[0] == b"pmessage":
            announced.setdefault(msg[2].decode()[len(CHANNEL):], t)

idle = []   # keep-alive connections to the producer

async def http_get(path, headers):
    """-> (written, head arrived, status, headers), clocks in perf_counter seconds."""
    req = (f"GET {path} HTTP/1.1\r\nHost: {HOST}:{PORT}\r\n"
           + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode()
    for attempt in (0, 1):
        reused = False
        while idle and attempt == 0 and not reused:
            r, w = idle.pop()
            reused = not w.is_closing()
        if not reused:
            r, w = await asyncio.open_connection(HOST, int(PORT))
        sent = now()
        w.write(req)
        try:
            status_line = await r.readline()
            if not status_line:
                raise ConnectionError("closed")
            hdrs = {}
            while (line := await r.readline()) not in (b"\r\n", b""):
                k, _, v = line.decode().partition(":")
                hdrs[k.strip().lower()] = v.strip()
            head = now()
            await r.readexactly(int(hdrs.get("content-length", 0)))
        except (ConnectionError, asyncio.IncompleteReadError):
            w.close()
            if reused:
                continue   # the server closed an idle connection: once more, on a new one
            raise
        if hdrs.get("connection", "").lower() == "close":
            w.close()
        else:
            idle.append((r, w))
        return sent, head, int(status_line.split()[1]), hdrs
    raise AssertionError("unreachable")

def waited(i):
    """WAIT_SHARE percent of the products, spread evenly."""
    return (i + 1) * WAIT_SHARE // 100 != i * WAIT_SHARE // 100

async def drive(phase, secs):
    """Open loop: product i is asked for at start + i / RATE, whatever became of the others."""
    results, tasks, late = {}, [], 0.0

    async def one(i):
        pid = f"bm-{RUN}-{phase}-{i}"
        # One client per product, so the per-client miss limit stays out of the way.
        c = 1 + i + (0 if phase == "warm" else 1 << 22)
        h = {"X-Forwarded-For": f"10.{(c >> 16) & 255}.{(c >> 8) & 255}.{c & 255}"}
        if waited(i):
            h["Prefer"] = f"wait={WAIT_SECS}"
        try:
            results[pid] = (waited(i),) + await http_get(f"/v1/prices/{pid}", h)
        except Exception as e:  # counted and shown as an unexpected answer
            results[pid] = (waited(i), None, None, repr(e), {})

    start = now() + 0.01
    for i in range(int(secs * RATE)):
        delay = start + i / RATE - now()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            late = max(late, -delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return results, late, start

def pct(xs, p):
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, -(-p * len(s) // 100) - 1))]   # nearest rank

def row(name, xs):
    if not xs:
        return f"  {name:<58} {0:6d}"
    return (f"  {name:<58} {len(xs):6d} {pct(xs, 50):7.1f} {pct(xs, 95):7.1f} {pct(xs, 99):7.1f}"
            f" {max(xs):7.1f} {min(xs):7.1f}")

async def main():
    began = now()
    sub = asyncio.create_task(subscriber())
    await asyncio.wait_for(subscribed.wait(), 5)
    await drive("warm", WARMUP)
    res, late, start = await drive("run", DURATION)
    elapsed = now() - start
    grace = now() + GRACE
    while not res.keys() <= announced.keys() and now() < grace and not sub.done():
        await asyncio.sleep(0.1)
    if sub.done() and sub.exception():
        print(f"the subscription failed: {sub.exception()!r}")

    errors, overhead, first, to_ann, wait_total, wake, drift = {}, [], [], [], [], [], {}
    applied = 0
    for pid, (w, sent, head, status, hdrs) in res.items():
        if status != (200 if w else 202):
            errors[f"{'wait' if w else 'plain'} {status}"] = errors.get(f"{'wait' if w else 'plain'} {status}", 0) + 1
            continue
        ann = announced.get(pid)
        if w:
            applied += hdrs.get("preference-applied") == f"wait={WAIT_SECS}"
            wait_total.append((head - sent) * 1000 - SLOWEST)
            if ann is not None:
                wake.append((head - ann) * 1000)
        else:
            first.append((head - sent) * 1000)
            if ann is not None:
                o = (ann - head) * 1000 - SLOWEST
                overhead.append(o)
                to_ann.append((ann - sent) * 1000 - SLOWEST)
                drift.setdefault(int((sent - start) // WINDOW), []).append(o)
    lost = sorted(pid for pid in res if pid not in announced)
    with open(env["BM_CSV"], "w") as out:   # every product, for a closer look
        out.write("product,prefer_wait,sent_s,answered_s,status,announced_s\n")
        for pid, (w, sent, head, status, _) in res.items():
            ann = announced.get(pid)
            out.write(f"{pid},{int(w)},{sent or ''},{head or ''},{status},{'' if ann is None else ann}\n")

    n_wait = sum(1 for v in res.values() if v[0])
    print(f"{len(res)} cold products in {elapsed:.1f} s ({len(res) / elapsed:.1f}/s, the generator at most "
          f"{late * 1000:.1f} ms late); {len(res) - n_wait} plain, {n_wait} with Prefer: wait={WAIT_SECS}\n")
    print(f"  {'(ms)':<58} {'count':>6} {'p50':>7} {'p95':>7} {'p99':>7} {'max':>7} {'min':>7}")
    print(row(f"OVERHEAD = 202 -> announcement - {SLOWEST:g} ms (plain requests)", overhead))
    for k in sorted(drift):
        print(row(f"  of which requests sent in seconds {k * WINDOW:g}-{(k + 1) * WINDOW:g}", drift[k]))
    print(row("request -> 202 (lookup and claim, acknowledged publish)", first))
    print(row(f"request -> announcement - {SLOWEST:g} ms", to_ann))
    if n_wait:
        print(row(f"Prefer: wait: request -> 200 - {SLOWEST:g} ms", wait_total))
        print(row("Prefer: wait: announcement -> 200 (waking the waiter)", wake))
        print(f"  Preference-Applied: wait={WAIT_SECS} on {applied} of {len(wait_total)} waited 200s")
    if overhead:
        p99 = pct(overhead, 99)
        ok = p99 <= BUDGET
        print(f"\nverdict: overhead p99 {p99:.1f} ms {'<=' if ok else '>'} the {BUDGET:g} ms budget"
              f" ({'within' if ok else 'OVER'} budget)")
    if errors:
        print(f"unexpected answers (expected 202 plain, 200 waited): {errors}")
    if lost:
        print(f"{len(lost)} products were never announced within {GRACE:g} s of the end, e.g. {lost[:3]}")
    print(f"generator CPU: {time.process_time() / (now() - began):.2f} cores")
    return 1 if lost or errors or not overhead else 0

sys.exit(asyncio.run(main()))
PY

redis_hp=$(hostport_of "$redis_url")
[[ $redis_hp == *:* ]] || redis_hp+=":6379"
out=$RUN_DIR/bench-miss-$run_id.out
BM_LISTEN=$listen BM_REDIS=$redis_hp BM_PREFIX=$prefix BM_RUN=$run_id BM_RATE=$RATE \
  BM_DURATION=$DURATION BM_WARMUP=$WARMUP BM_WAIT_SHARE=$WAIT_SHARE BM_WAIT_SECS=$WAIT_SECS \
  BM_SLOWEST_MS=$SLOWEST_MS BM_BUDGET_MS=$BUDGET_MS BM_CSV="$RUN_DIR/bench-miss-$run_id.csv" \
  python3 -c "$GENERATOR" >"$out" 2>&1 &
gen_pid=$!
read -ra ticks_before <<<"$(cpu_ticks)"
cpu_started=$EPOCHREALTIME
# A stack that stops during the run fails it at once.
while kill -0 "$gen_pid" 2>/dev/null && stack_alive; do sleep 0.2; done
stack_alive || stack_failed "it stopped during the run"
rc=0
wait "$gen_pid" || rc=$?
gen_pid=
read -ra ticks_after <<<"$(cpu_ticks)"
cpu_secs=$(awk -v a="$cpu_started" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
stack_alive || stack_failed "it stopped during the run"

printf '\nbench-miss run %s (%s cores): %d sources, every one answering in %d ms (jitter 0)\n' \
  "$run_id" "$(nproc)" "$SOURCES" "$SLOWEST_MS"
printf 'broker: %s\nsettings in force: %s\n' "$broker_note" "$settings"
grep -v "^generator CPU" "$out" || true
cpu_report "idle, over 5 s before the load" "$idle_secs" "${idle_before[*]}" "${idle_after[*]}" 0
cpu_report "over the generator's $cpu_secs s" "$cpu_secs" "${ticks_before[*]}" "${ticks_after[*]}" \
  "$(grep -oE 'generator CPU: [0-9.]+' "$out" | grep -oE '[0-9.]+$' || echo 0)"
((rc == 0)) || { log "the generator exited $rc (see above)"; exit "$rc"; }
