// Cold path: every iteration asks for a product nobody has asked for before (the id carries a
// run id, so reruns are cold too) and records how long its comparison took to arrive
// (time_to_result).
//
//   k6 run loadtest/miss.js                                  # 20 new products/s for 30 s, waiting
//   k6 run -e MODE=poll -e POLL_MS=100 loadtest/miss.js      # poll the Location instead
//   k6 run -e RATE= -e VUS=20 loadtest/miss.js               # closed model: 20 VUs, no RATE
//
// MODE=wait (the default) asks with `Prefer: wait=WAIT_SECS` (RFC 7240): the producer holds
// the request until the result is written and answers 200 with it, so time_to_result is the
// real time to the result, to the millisecond. A wait that runs out answers 202 (with
// Preference-Applied); the client then waits again on the Location until DEADLINE_MS. Against
// a server that ignores the preference (202 without Preference-Applied) it waits Retry-After
// before asking again, as a poller does.
//
// MODE=poll asks once, gets 202, and follows the Location until 200, waiting as Retry-After
// says (1 s), like a polite client, so time_to_result is quantised to whole seconds; POLL_MS
// overrides the interval to measure more finely.
//
// Knobs (env): BASE_URL, MODE (wait | poll), WAIT_SECS (10; the producer grants at most
// producer.max_wait_secs), RATE (20 new products per TIME_UNIT=1s; RATE= empty with VUS for
// constant-vus), PRE_VUS (2.5 x RATE), MAX_VUS, DURATION (30s), POLL_MS (poll mode; unset:
// Retry-After), DEADLINE_MS (10000: give up on a product after this), RUN_ID (random),
// TTR_P95_MS (2500), TTR_P99_MS (4000), MAX_TIMEOUT_RATE (0.01), MAX_ERROR_RATE (0.01),
// P95_MS (100: poll mode only, the 202 answer itself; in wait mode the first answer is the
// result, held by TTR_*).

import http from 'k6/http';
import { check, sleep } from 'k6';
import exec from 'k6/execution';
import { Counter, Rate, Trend } from 'k6/metrics';
import {
  ROUTE, RESULT_STATUSES, SUMMARY_TREND_STATS, awaitResult, checkId, clientHeaders, comparison,
  envInt, envNum, envStr, newRunId, priceUrl, requireReady, resolveLocation, retryAfterSecs,
  scenarioFromEnv,
} from './lib.js';

const MODE = envStr('MODE', 'wait');
if (MODE !== 'wait' && MODE !== 'poll') throw new Error(`MODE must be wait or poll, not ${JSON.stringify(MODE)}`);
const WAIT_SECS = envInt('WAIT_SECS', 10);
if (!(WAIT_SECS >= 1)) throw new Error('WAIT_SECS must be at least 1');
const POLL_MS = __ENV.POLL_MS ? envInt('POLL_MS', 1000) : null;
const DEADLINE_MS = envInt('DEADLINE_MS', 10000);

// Time from the first request for a cold product to the arrival of its comparison (200).
const timeToResult = new Trend('time_to_result', true);
// Share of cold products whose result did not arrive within DEADLINE_MS.
const resultTimeout = new Rate('result_timeout');
// Requests a client made for one product, first one included.
const requestsPerResult = new Trend('requests_per_result');
const resultFailed = new Counter('result_status_failed');
// Wait mode: share of waited requests that ran out (202 after the granted wait).
const waitExpired = new Rate('wait_expired');

// An iteration holds its VU until the result is there (wait: about the slowest source, under
// a second with the mock; poll: 1-2 s), so allocate enough VUs up front: allocating them
// during the run makes k6 drop iterations.
const RATE = __ENV.RATE === '' ? null : envNum('RATE', 20); // RATE= empty: constant-vus
const PRE_VUS_DEFAULT = RATE === null ? 10 : Math.max(10, Math.ceil(RATE * 2.5));

const thresholds = {
  http_req_failed: [`rate<${envNum('MAX_ERROR_RATE', 0.01)}`],
  time_to_result: [
    `p(95)<${envNum('TTR_P95_MS', 2500)}`,
    `p(99)<${envNum('TTR_P99_MS', 4000)}`,
  ],
  result_timeout: [`rate<${envNum('MAX_TIMEOUT_RATE', 0.01)}`],
  checks: ['rate>0.99'],
};
// The 202 answer itself exists only when polling: a waited first answer is the result.
if (MODE === 'poll') thresholds['http_req_duration{step:first}'] = [`p(95)<${envNum('P95_MS', 100)}`];

export const options = {
  scenarios: {
    misses: scenarioFromEnv({
      rate: RATE, vus: 10, duration: '30s', preVus: PRE_VUS_DEFAULT,
      maxVus: Math.max(500, PRE_VUS_DEFAULT * 4),
    }),
  },
  summaryTrendStats: SUMMARY_TREND_STATS,
  thresholds,
};

export function setup() {
  requireReady();
  const runId = newRunId();
  console.log(`run id ${runId}: products miss-${runId}-<vu>-<iteration>; mode ${MODE}` +
    (MODE === 'wait' ? ` (Prefer: wait=${WAIT_SECS})` : ''));
  return { runId };
}

// One waited request; tagged step=wait (the first) or step=rewait (after a wait ran out).
function askWaiting(url, waitSecs, step) {
  return http.get(url, {
    tags: { name: ROUTE, step },
    headers: Object.assign({ Prefer: `wait=${waitSecs}` }, clientHeaders(exec.vu.idInTest)),
    timeout: `${waitSecs + 10}s`,
  });
}

// Wait mode's counterpart of lib.js awaitResult: the same { ok, ms, polls, first, last }.
function awaitByWaiting(id) {
  const start = Date.now();
  let url = priceUrl(id);
  let first = null;
  let res = null;
  let requests = 0;
  for (;;) {
    const left = DEADLINE_MS - (Date.now() - start);
    if (requests > 0 && left <= 0) break;
    const waitSecs = Math.max(1, Math.min(WAIT_SECS, Math.ceil(left / 1000)));
    res = askWaiting(url, waitSecs, requests === 0 ? 'wait' : 'rewait');
    requests += 1;
    if (first === null) first = res;
    const applied = res.headers['Preference-Applied'] !== undefined;
    if (res.status === 200) {
      if (applied) waitExpired.add(false);
      return { ok: true, ms: Date.now() - start, polls: requests - 1, first, last: res };
    }
    if (res.status === 202) {
      waitExpired.add(applied);
      url = resolveLocation(res.headers['Location'], id);
    }
    // Not waited on (an error, or a server ignoring the preference): do not ask again at once.
    if (res.status !== 202 || !applied) {
      const ra = retryAfterSecs(res);
      const pause = Math.min(ra === null ? 1000 : ra * 1000, DEADLINE_MS - (Date.now() - start));
      if (pause > 0) sleep(pause / 1000);
    }
  }
  return { ok: false, ms: Date.now() - start, polls: requests - 1, first, last: res };
}

function checkFirstPolled(r, id) {
  check(r, {
    'cold product answers 202': (r) => r.status === 202,
    '202 has Location': (r) => r.status !== 202 || r.headers['Location'] === `/v1/prices/${id}`,
    '202 has Retry-After': (r) => r.status !== 202 || r.headers['Retry-After'] !== undefined,
  });
}

function checkFirstWaited(r, id) {
  const applied = r.headers['Preference-Applied'];
  const granted = /^wait=(\d+)$/.exec(applied || '');
  check(r, {
    'waited cold product answers 200 (or 202 when the wait ran out)': (r) =>
      r.status === 200 || (r.status === 202 && applied !== undefined),
    'Preference-Applied grants a wait of at most WAIT_SECS': () =>
      granted !== null && Number(granted[1]) >= 1 && Number(granted[1]) <= WAIT_SECS,
    'answer varies by Prefer': (r) => /(^|,)\s*prefer\s*(,|$)/i.test(r.headers['Vary'] || ''),
    '202 has Location': (r) => r.status !== 202 || r.headers['Location'] === `/v1/prices/${id}`,
  });
}

export default function (data) {
  const id = checkId(`miss-${data.runId}-${exec.vu.idInTest}-${exec.vu.iterationInScenario}`);
  let out;
  if (MODE === 'wait') {
    out = awaitByWaiting(id);
    checkFirstWaited(out.first, id);
  } else {
    out = awaitResult(id, { pollMs: POLL_MS, deadlineMs: DEADLINE_MS });
    checkFirstPolled(out.first, id);
  }
  resultTimeout.add(!out.ok);
  requestsPerResult.add(out.polls + 1);
  if (!out.ok) return;
  timeToResult.add(out.ms);
  const body = comparison(out.last);
  if (body && body.status === 'failed') resultFailed.add(1);
  check(out.last, {
    'result is the comparison': () =>
      body !== null && body.product_id === id && RESULT_STATUSES.indexOf(body.status) >= 0,
  });
}
