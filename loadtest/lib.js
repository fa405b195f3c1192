// Shared helpers for the pricefront k6 scripts (hit.js, miss.js, stream.js, catalogue.js,
// mixed.js).
//
// Everything a script can be tuned with comes from __ENV (k6 -e KEY=VALUE or the process
// environment); see loadtest/README.md for the knobs of each script.

import http from 'k6/http';
import { sleep } from 'k6';
import exec from 'k6/execution';

// ---------------------------------------------------------------- environment knobs

export const BASE_URL = (__ENV.BASE_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');

export function envStr(name, dflt) {
  const v = __ENV[name];
  return v === undefined || v === '' ? dflt : v;
}

export function envNum(name, dflt) {
  const v = __ENV[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new Error(`env ${name}=${JSON.stringify(v)} is not a number`);
  return n;
}

export function envInt(name, dflt) {
  return Math.trunc(envNum(name, dflt));
}

export function envBool(name, dflt) {
  const v = __ENV[name];
  if (v === undefined || v === '') return dflt;
  return !/^(0|false|no|off)$/i.test(v);
}

// "1h2m3s", "10m", "30s", "500ms", or a bare number of seconds -> seconds.
export function durationSecs(s) {
  if (/^\d+(\.\d+)?$/.test(s)) return Number(s);
  const re = /(\d+(?:\.\d+)?)(ms|h|m|s)/g;
  let total = 0;
  let seen = '';
  let m;
  while ((m = re.exec(s)) !== null) {
    const n = Number(m[1]);
    total += m[2] === 'h' ? n * 3600 : m[2] === 'm' ? n * 60 : m[2] === 's' ? n : n / 1000;
    seen += m[0];
  }
  if (seen !== s) throw new Error(`cannot parse duration ${JSON.stringify(s)}`);
  return total;
}

// Trend columns shown in the end-of-test summary (p99 is not in k6's default set).
export const SUMMARY_TREND_STATS = ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'];

// ---------------------------------------------------------------- Zipf popularity

// Ranks 1..n (1 = the most popular) with P(k) = k^-s / H(n, s). The cumulative weights are
// computed once, so call it in init code; each rank() is a binary search for a uniform draw in
// them, and share(k) is the probability of a rank <= k.
export function zipfSampler(n, s) {
  const cdf = new Float64Array(n);
  let acc = 0;
  for (let k = 1; k <= n; k++) {
    acc += 1 / Math.pow(k, s);
    cdf[k - 1] = acc;
  }
  return {
    rank() {
      const u = Math.random() * acc;
      let lo = 0;
      let hi = n - 1;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (cdf[mid] < u) lo = mid + 1;
        else hi = mid;
      }
      return lo + 1;
    },
    share(k) {
      return k > 0 ? cdf[Math.min(k, n) - 1] / acc : 0;
    },
  };
}

// ---------------------------------------------------------------- product ids and URLs

// Product ids must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$.
const ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export function checkId(id) {
  if (!ID_RE.test(id)) throw new Error(`invalid product id ${JSON.stringify(id)}`);
  return id;
}

// A short id for this run so that "cold" products are cold on every rerun. Call it in
// setup() (which runs once) and hand it to the VUs through setup's return value; init code
// runs once per VU, so a value made there would differ between VUs.
export function newRunId() {
  const given = __ENV.RUN_ID;
  if (given) return checkId(given);
  const t = Date.now().toString(36);
  const r = Math.floor(Math.random() * 36 ** 4).toString(36).padStart(4, '0');
  return `${t}${r}`;
}

export function priceUrl(id) {
  return `${BASE_URL}/v1/prices/${id}`;
}

const ORIGIN = (BASE_URL.match(/^[a-z][a-z0-9+.-]*:\/\/[^/]+/i) || [BASE_URL])[0];

// The Location of a 202 is relative (/v1/prices/{id}); resolve it against BASE_URL.
export function resolveLocation(loc, fallbackId) {
  if (!loc) return priceUrl(fallbackId);
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(loc)) return loc;
  if (loc.startsWith('/')) return ORIGIN + loc;
  return `${BASE_URL}/${loc}`;
}

// Every request is named by its route, not its URL, so unique product ids do not make one
// time series per URL.
export const ROUTE = 'GET /v1/prices/{id}';

// Every VU is a client of its own: X-Forwarded-For carries a synthetic address per VU, as a
// load balancer in front of the producer would (pricefront limits misses per client, and
// scripts/run.sh trusts X-Forwarded-For from this host). CLIENT_HEADER=false sends none, so
// every request counts as one client (the load generator's address).
const CLIENT_HEADER = envBool('CLIENT_HEADER', true);

export function clientHeaders(n) {
  if (!CLIENT_HEADER) return {};
  return { 'X-Forwarded-For': `10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}` };
}

function vuClient() {
  try {
    return exec.vu.idInTest;
  } catch (_) {
    return 0; // setup() and teardown() run outside any VU
  }
}

export function getPrice(url, tags) {
  return http.get(url, { tags: Object.assign({ name: ROUTE }, tags || {}), headers: clientHeaders(vuClient()) });
}

// Seconds from a Retry-After header (delta-seconds form), or null.
export function retryAfterSecs(res) {
  const v = res.headers['Retry-After'];
  if (v === undefined) return null;
  const n = Number(v);
  return Number.isFinite(n) && n >= 0 ? n : null;
}

// Parses a 200 body; null when it is not the comparison JSON.
export function comparison(res) {
  try {
    const b = res.json();
    return b && typeof b === 'object' && typeof b.status === 'string' ? b : null;
  } catch (_) {
    return null;
  }
}

export const RESULT_STATUSES = ['complete', 'partial', 'failed'];

// ---------------------------------------------------------------- waiting for a result

// One VU waits for one product's result: request it, then follow the Location of the 202,
// waiting as told by Retry-After (or pollMs when given, to measure time-to-result more finely
// than whole seconds), until a 200 or until deadlineMs has passed since the first request.
// Returns { ok, ms, polls, first, last } where ms is the time from just before the first
// request to the arrival of the 200 (or to giving up), and first/last are those responses.
// The first request is tagged step=first, the others step=poll (plus the given tags).
export function awaitResult(id, { pollMs = null, deadlineMs = 10000, tags = {} } = {}) {
  const start = Date.now();
  const first = getPrice(priceUrl(id), Object.assign({}, tags, { step: 'first' }));
  let res = first;
  let polls = 0;
  while (res.status !== 200) {
    const elapsed = Date.now() - start;
    if (elapsed >= deadlineMs) return { ok: false, ms: elapsed, polls, first, last: res };
    let waitMs;
    if (pollMs !== null) {
      waitMs = pollMs;
    } else {
      const ra = retryAfterSecs(res);
      waitMs = ra === null ? 1000 : ra * 1000;
    }
    waitMs = Math.max(0, Math.min(waitMs, deadlineMs - elapsed));
    if (waitMs > 0) sleep(waitMs / 1000);
    const url = res.status === 202 ? resolveLocation(res.headers['Location'], id) : priceUrl(id);
    res = getPrice(url, Object.assign({}, tags, { step: 'poll' }));
    polls += 1;
  }
  return { ok: true, ms: Date.now() - start, polls, first, last: res };
}

// Warms many products at once (for setup()): asks for all of them in parallel batches, then
// re-asks the ones still pending every pollMs until each answers 200 or deadlineMs passes.
// Returns { warmed, missing: [ids], ms }. Throws if fewer than minShare of them warmed.
export function warmProducts(ids, { batch = 100, pollMs = 250, deadlineMs = 120000, minShare = 1 } = {}) {
  const start = Date.now();
  const tags = { name: ROUTE, step: 'warm' };
  let pending = ids.slice();
  let round = 0;
  while (pending.length > 0) {
    if (round > 0) {
      if (Date.now() - start >= deadlineMs) break;
      sleep(pollMs / 1000);
    }
    const still = [];
    for (let i = 0; i < pending.length; i += batch) {
      const chunk = pending.slice(i, i + batch);
      // One client per product: warming is many shoppers, not one.
      const responses = http.batch(
        chunk.map((id, j) => ['GET', priceUrl(id), null, { tags, headers: clientHeaders(100000 + i + j) }]),
      );
      responses.forEach((r, j) => {
        if (r.status !== 200) still.push(chunk[j]);
      });
    }
    pending = still;
    round += 1;
  }
  const ms = Date.now() - start;
  const warmed = ids.length - pending.length;
  console.log(`warmed ${warmed}/${ids.length} products in ${(ms / 1000).toFixed(1)} s`);
  if (warmed < ids.length * minShare) {
    throw new Error(
      `only ${warmed} of ${ids.length} products warmed within ${deadlineMs} ms ` +
        `(still pending e.g. ${pending.slice(0, 3).join(', ')}); is the stack at ${BASE_URL} healthy?`,
    );
  }
  return { warmed, missing: pending, ms };
}

// Fails setup() early with a clear message when nothing answers at BASE_URL.
export function requireReady() {
  const res = http.get(`${BASE_URL}/readyz`, { tags: { name: 'GET /readyz' }, timeout: '5s' });
  // 404: a front end without /readyz; let the test itself find out.
  if (res.status !== 200 && res.status !== 404) {
    throw new Error(`${BASE_URL}/readyz answered ${res.status || res.error}; start the stack first`);
  }
}

// ---------------------------------------------------------------- scenario from env

// The executor of a script's main scenario, from env:
//   RATE set (iterations per TIME_UNIT): constant-arrival-rate with PRE_VUS / MAX_VUS;
//   else VUS looping for DURATION (constant-vus).
export function scenarioFromEnv({
  rate = null, timeUnit = '1s', vus = 10, duration = '30s', preVus = null, maxVus = null, extra = {},
} = {}) {
  const r = envNum('RATE', rate);
  const dur = envStr('DURATION', duration);
  let sc;
  if (r !== null) {
    const pre = envInt('PRE_VUS', preVus !== null ? preVus : Math.max(5, Math.ceil(r / 10)));
    sc = {
      executor: 'constant-arrival-rate',
      rate: r,
      timeUnit: envStr('TIME_UNIT', timeUnit),
      duration: dur,
      preAllocatedVUs: pre,
      maxVUs: Math.max(pre, envInt('MAX_VUS', maxVus !== null ? maxVus : pre * 4)),
    };
  } else {
    sc = { executor: 'constant-vus', vus: envInt('VUS', vus), duration: dur };
  }
  return Object.assign(sc, { gracefulStop: envStr('GRACEFUL_STOP', '30s') }, extra);
}
