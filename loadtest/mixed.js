// A realistic mix at a fixed arrival rate (constant-arrival-rate): shoppers look at products
// of a catalogue of CATALOGUE products whose popularity follows a Zipf law (rank k is asked
// for in proportion to 1/k^ZIPF_S), so most requests are cache hits; and a share NEW_SHARE of
// the requests is for brand-new products, which miss, and whose client then follows the
// Location until the result is there (time_to_result), as miss.js does.
//
// Defaults are the reference design's target: 100,000 requests per minute for 10 minutes.
//
//   k6 run loadtest/mixed.js
//   k6 run -e RATE=1000 -e TIME_UNIT=1s -e DURATION=2m loadtest/mixed.js
//
// Knobs (env): BASE_URL, RATE (100000) per TIME_UNIT (1m), DURATION (10m), PRE_VUS (max(100,
// RATE per second / 10)), MAX_VUS (1000), CATALOGUE (10000), ZIPF_S (1.0), WARM (top-ranked
// products warmed in setup: all of them; 0 = none), CATALOGUE_PREFIX (cat), NEW_SHARE (0.02),
// NEW_POLL (true: follow new products to their result; false: one request each), POLL_MS
// (unset: honour Retry-After), DEADLINE_MS (10000), RUN_ID (random), P95_MS (100), P99_MS (250),
// MIN_HIT_RATE (0.9), TTR_P95_MS (2500), MAX_TIMEOUT_RATE (0.01), MAX_ERROR_RATE (0.01),
// MAX_DROPPED (1% of the planned iterations).
//
// Warming the whole catalogue makes runs comparable (nothing depends on what an earlier run
// left in the cache); catalogue misses then come from results expiring (cache TTL, 300 s)
// during the run. With WARM below CATALOGUE the cold tail misses at its first request as well.
//
// The arrival rate counts iterations: with NEW_POLL each new product adds its polls (about
// one per second of waiting) on top, so requests/s is a little above RATE.

import { check } from 'k6';
import exec from 'k6/execution';
import { Counter, Rate, Trend } from 'k6/metrics';
import {
  RESULT_STATUSES, SUMMARY_TREND_STATS, awaitResult, checkId, comparison, durationSecs,
  envBool, envInt, envNum, envStr, getPrice, newRunId, priceUrl, requireReady, scenarioFromEnv,
  warmProducts, zipfSampler,
} from './lib.js';

const CATALOGUE = envInt('CATALOGUE', 10000);
const ZIPF_S = envNum('ZIPF_S', 1.0);
const WARM = Math.min(CATALOGUE, envInt('WARM', CATALOGUE));
const PREFIX = envStr('CATALOGUE_PREFIX', 'cat');
const NEW_SHARE = envNum('NEW_SHARE', 0.02);
const NEW_POLL = envBool('NEW_POLL', true);
const POLL_MS = __ENV.POLL_MS ? envInt('POLL_MS', 1000) : null;
const DEADLINE_MS = envInt('DEADLINE_MS', 10000);
if (CATALOGUE < 1) throw new Error('CATALOGUE must be at least 1');
if (!(NEW_SHARE >= 0 && NEW_SHARE <= 1)) throw new Error('NEW_SHARE must be within [0, 1]');

// Product of popularity rank k (1 = most popular).
const catalogueId = (rank) => checkId(`${PREFIX}-${rank}`);
const catalogueUrls = Array.from({ length: CATALOGUE }, (_, i) => priceUrl(catalogueId(i + 1)));

const zipf = zipfSampler(CATALOGUE, ZIPF_S);

const cacheHit = new Rate('cache_hit'); // catalogue requests answered from cache
const timeToResult = new Trend('time_to_result', true); // new product: first request -> 200
const resultTimeout = new Rate('result_timeout'); // new products with no result in DEADLINE_MS
const newProducts = new Counter('new_products');

const RATE = envNum('RATE', 100000);
const TIME_UNIT = envStr('TIME_UNIT', '1m');
const DURATION = envStr('DURATION', '10m');
const planned = (RATE / durationSecs(TIME_UNIT)) * durationSecs(DURATION);
const MAX_DROPPED = envInt('MAX_DROPPED', Math.ceil(planned * 0.01));

const thresholds = {
  http_req_failed: [`rate<${envNum('MAX_ERROR_RATE', 0.01)}`],
  'http_req_duration{kind:catalog}': [
    `p(95)<${envNum('P95_MS', 100)}`,
    `p(99)<${envNum('P99_MS', 250)}`,
  ],
  cache_hit: [`rate>${envNum('MIN_HIT_RATE', 0.9)}`],
  dropped_iterations: [`count<=${MAX_DROPPED}`],
  checks: ['rate>0.99'],
};
if (NEW_SHARE > 0 && NEW_POLL) {
  thresholds.time_to_result = [`p(95)<${envNum('TTR_P95_MS', 2500)}`];
  thresholds.result_timeout = [`rate<${envNum('MAX_TIMEOUT_RATE', 0.01)}`];
}

export const options = {
  scenarios: {
    // VUs allocated during the run come too late and cost dropped iterations: allocate about
    // one per 10 iterations/s up front (a new product holds its VU for 1-2 s).
    mixed: scenarioFromEnv({
      rate: 100000, timeUnit: '1m', duration: '10m',
      preVus: Math.max(100, Math.ceil(RATE / durationSecs(TIME_UNIT) / 10)), maxVus: 1000,
    }),
  },
  setupTimeout: envStr('SETUP_TIMEOUT', '5m'),
  batch: 100,
  batchPerHost: 100,
  summaryTrendStats: SUMMARY_TREND_STATS,
  thresholds,
};

export function setup() {
  requireReady();
  const runId = newRunId();
  const warmShare = zipf.share(WARM);
  console.log(
    `run id ${runId}; ${RATE}/${TIME_UNIT} for ${DURATION} (~${Math.round(planned)} iterations); ` +
      `catalogue ${CATALOGUE} (zipf s=${ZIPF_S}), top ${WARM} warmed = ` +
      `${(warmShare * 100).toFixed(1)}% of catalogue requests; new products ${NEW_SHARE * 100}%`,
  );
  if (WARM > 0) {
    const ids = Array.from({ length: WARM }, (_, i) => catalogueId(i + 1));
    warmProducts(ids, { deadlineMs: envInt('WARM_DEADLINE_MS', 180000), minShare: 0.99 });
  }
  return { runId };
}

export default function (data) {
  if (NEW_SHARE > 0 && Math.random() < NEW_SHARE) {
    const id = checkId(`new-${data.runId}-${exec.vu.idInTest}-${exec.vu.iterationInScenario}`);
    newProducts.add(1);
    if (!NEW_POLL) {
      const r = getPrice(priceUrl(id), { kind: 'new', step: 'first' });
      check(r, { 'new product answers 202': (x) => x.status === 202 });
      return;
    }
    const out = awaitResult(id, { pollMs: POLL_MS, deadlineMs: DEADLINE_MS, tags: { kind: 'new' } });
    check(out.first, { 'new product answers 202': (r) => r.status === 202 });
    resultTimeout.add(!out.ok);
    if (!out.ok) return;
    timeToResult.add(out.ms);
    const body = comparison(out.last);
    check(out.last, {
      'result is the comparison': () =>
        body !== null && body.product_id === id && RESULT_STATUSES.indexOf(body.status) >= 0,
    });
    return;
  }
  const res = getPrice(catalogueUrls[zipf.rank() - 1], { kind: 'catalog' });
  cacheHit.add(res.status === 200);
  check(res, { 'catalogue product answers 200 or 202': (r) => r.status === 200 || r.status === 202 });
}
