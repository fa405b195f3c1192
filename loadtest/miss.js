// Cold path: every iteration asks for a product nobody has asked for before (the id carries a
// run id, so reruns are cold too), then follows the Location of the 202 until the comparison
// is there (200), and records how long that took as time_to_result.
//
//   k6 run loadtest/miss.js                                  # 20 new products/s for 30 s
//   k6 run -e RATE=50 -e DURATION=60s -e POLL_MS=100 loadtest/miss.js
//   k6 run -e RATE= -e VUS=20 loadtest/miss.js               # closed model: 20 VUs, no RATE
//
// Polling honours Retry-After (1 s by default), like a well-behaved client; POLL_MS overrides
// it to measure time-to-result more finely than whole seconds.
//
// Knobs (env): BASE_URL, RATE (20 new products per TIME_UNIT=1s; RATE= empty with VUS for
// constant-vus), PRE_VUS (2.5 x RATE), MAX_VUS, DURATION (30s), POLL_MS (unset: Retry-After),
// DEADLINE_MS (10000: give up on a product after this), RUN_ID (random), TTR_P95_MS (2500),
// TTR_P99_MS (4000), MAX_TIMEOUT_RATE (0.01), MAX_ERROR_RATE (0.01), P95_MS (100: the 202
// answer itself).

import { check } from 'k6';
import exec from 'k6/execution';
import { Counter, Rate, Trend } from 'k6/metrics';
import {
  RESULT_STATUSES, SUMMARY_TREND_STATS, awaitResult, checkId, comparison, envInt, envNum,
  newRunId, requireReady, scenarioFromEnv,
} from './lib.js';

const POLL_MS = __ENV.POLL_MS ? envInt('POLL_MS', 1000) : null;
const DEADLINE_MS = envInt('DEADLINE_MS', 10000);

// Time from the first request for a cold product to the arrival of its comparison (200).
const timeToResult = new Trend('time_to_result', true);
// Share of cold products whose result did not arrive within DEADLINE_MS.
const resultTimeout = new Rate('result_timeout');
// Requests a client made for one product, first one included.
const requestsPerResult = new Trend('requests_per_result');
const resultFailed = new Counter('result_status_failed');

// An iteration holds its VU for about 1-2 s (Retry-After polling), so allocate enough VUs up
// front: allocating them during the run makes k6 drop iterations.
const RATE = __ENV.RATE === '' ? null : envNum('RATE', 20); // RATE= empty: constant-vus
const PRE_VUS_DEFAULT = RATE === null ? 10 : Math.max(10, Math.ceil(RATE * 2.5));

export const options = {
  scenarios: {
    misses: scenarioFromEnv({
      rate: RATE, vus: 10, duration: '30s', preVus: PRE_VUS_DEFAULT,
      maxVus: Math.max(500, PRE_VUS_DEFAULT * 4),
    }),
  },
  summaryTrendStats: SUMMARY_TREND_STATS,
  thresholds: {
    http_req_failed: [`rate<${envNum('MAX_ERROR_RATE', 0.01)}`],
    'http_req_duration{step:first}': [`p(95)<${envNum('P95_MS', 100)}`],
    time_to_result: [
      `p(95)<${envNum('TTR_P95_MS', 2500)}`,
      `p(99)<${envNum('TTR_P99_MS', 4000)}`,
    ],
    result_timeout: [`rate<${envNum('MAX_TIMEOUT_RATE', 0.01)}`],
    checks: ['rate>0.99'],
  },
};

export function setup() {
  requireReady();
  const runId = newRunId();
  console.log(`run id ${runId}: products miss-${runId}-<vu>-<iteration>`);
  return { runId };
}

export default function (data) {
  const id = checkId(`miss-${data.runId}-${exec.vu.idInTest}-${exec.vu.iterationInScenario}`);
  const out = awaitResult(id, { pollMs: POLL_MS, deadlineMs: DEADLINE_MS });
  check(out.first, {
    'cold product answers 202': (r) => r.status === 202,
    '202 has Location': (r) => r.status !== 202 || r.headers['Location'] === `/v1/prices/${id}`,
    '202 has Retry-After': (r) => r.status !== 202 || r.headers['Retry-After'] !== undefined,
  });
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
