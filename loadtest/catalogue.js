// Catalogue pages: each iteration asks for one page of PAGE distinct products in one request,
// GET /v1/prices?ids=a,b,…, drawn from a catalogue of CATALOGUE products whose popularity
// follows a Zipf law (rank k is drawn in proportion to 1/k^ZIPF_S), as a shop's category or
// search pages are. Every answer is a 200 with one entry per id: the comparison, or
// {"status": "pending" | "not_found" | "unavailable"}. It checks the page's shape and cache
// headers, and counts how many entries were final (a comparison or not_found).
//
//   k6 run loadtest/catalogue.js                                   # 10 VUs, as fast as they go, 30 s
//   k6 run -e RATE=200 -e DURATION=60s loadtest/catalogue.js       # open model: 200 pages/s
//   k6 run -e WAIT_SECS=5 -e WARM=0 loadtest/catalogue.js          # cold pages, each held until final
//
// Knobs (env): BASE_URL, CATALOGUE (2000), PAGE (48, at most producer.max_batch_ids), ZIPF_S
// (1.0), PREFIX (cat-page), RUN_ID (random; part of the ids unless WARM > 0 reuses them:
// then unset, so runs share a warm catalogue), WAIT_SECS (0: no Prefer header; N: Prefer:
// wait=N), WARM (top-ranked products warmed in setup: 0 = none), VUS (10) or RATE (+TIME_UNIT=1s,
// PRE_VUS, MAX_VUS), DURATION (30s), P95_MS (250), P99_MS (1000), MIN_FINAL_RATE (0: no
// threshold), MAX_ERROR_RATE (0.01).

import { check } from 'k6';
import http from 'k6/http';
import { Counter, Rate, Trend } from 'k6/metrics';
import {
  BASE_URL, SUMMARY_TREND_STATS, checkId, envInt, envNum, envStr, newRunId, requireReady,
  scenarioFromEnv, warmProducts,
} from './lib.js';

const CATALOGUE = envInt('CATALOGUE', 2000);
const PAGE = envInt('PAGE', 48);
const ZIPF_S = envNum('ZIPF_S', 1.0);
const WARM = Math.min(CATALOGUE, envInt('WARM', 0));
const WAIT_SECS = envInt('WAIT_SECS', 0);
if (CATALOGUE < 1) throw new Error('CATALOGUE must be at least 1');
if (PAGE < 1 || PAGE > CATALOGUE) throw new Error('PAGE must be within [1, CATALOGUE]');
const PREFIX = envStr('PREFIX', 'cat-page');

// The ids of ranks 1..CATALOGUE (1 = most popular), `run` in them: warm runs reuse the same ids
// (a warm catalogue), cold ones get fresh ids per run (made once, in setup, for every VU).
const catalogue = (run) => Array.from({ length: CATALOGUE }, (_, i) => checkId(`${PREFIX}-${run}${i + 1}`));
let ids = null;

// Zipf sampling: cumulative weights of ranks 1..N, then a binary search for a uniform draw.
const cdf = new Float64Array(CATALOGUE);
{
  let acc = 0;
  for (let k = 1; k <= CATALOGUE; k++) {
    acc += 1 / Math.pow(k, ZIPF_S);
    cdf[k - 1] = acc;
  }
}
const cdfTotal = cdf[CATALOGUE - 1];

function zipfIndex() {
  const u = Math.random() * cdfTotal;
  let lo = 0;
  let hi = CATALOGUE - 1;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (cdf[mid] < u) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

// PAGE distinct products of `ids`, each drawn by popularity.
function drawPage() {
  const page = new Set();
  while (page.size < PAGE) page.add(ids[zipfIndex()]);
  return [...page];
}

const pageDuration = new Trend('page_duration', true);
const entryFinal = new Rate('entry_final'); // entries answered with a comparison or not_found
const entriesPending = new Counter('entries_pending');
const entriesUnavailable = new Counter('entries_unavailable');

const thresholds = {
  http_req_failed: [`rate<${envNum('MAX_ERROR_RATE', 0.01)}`],
  page_duration: [`p(95)<${envNum('P95_MS', 250)}`, `p(99)<${envNum('P99_MS', 1000)}`],
  checks: ['rate>0.99'],
};
const MIN_FINAL_RATE = envNum('MIN_FINAL_RATE', 0);
if (MIN_FINAL_RATE > 0) thresholds.entry_final = [`rate>=${MIN_FINAL_RATE}`];

export const options = {
  scenarios: { pages: scenarioFromEnv({ vus: 10, duration: '30s' }) },
  setupTimeout: envStr('SETUP_TIMEOUT', '5m'),
  summaryTrendStats: SUMMARY_TREND_STATS,
  thresholds,
};

export function setup() {
  requireReady();
  const run = WARM > 0 ? '' : `${newRunId()}-`;
  if (WARM > 0) warmProducts(catalogue(run).slice(0, WARM));
  return { run };
}

const FINAL = ['complete', 'partial', 'failed', 'not_found'];

export default function (data) {
  if (ids === null) ids = catalogue(data.run);
  const page = drawPage();
  const params = { tags: { name: 'GET /v1/prices?ids=' }, timeout: `${WAIT_SECS + 10}s` };
  if (WAIT_SECS > 0) params.headers = { Prefer: `wait=${WAIT_SECS}` };
  const res = http.get(`${BASE_URL}/v1/prices?ids=${page.join(',')}`, params);
  pageDuration.add(res.timings.duration);
  let results = null;
  try {
    results = res.json('results');
  } catch (_) {
    // Counted by the checks below.
  }
  const entries = results ? page.map((id) => results[id]) : [];
  let open = 0;
  for (const entry of entries) {
    const status = entry && entry.status;
    entryFinal.add(FINAL.includes(status));
    if (status === 'pending') entriesPending.add(1);
    if (status === 'unavailable') entriesUnavailable.add(1);
    if (!FINAL.includes(status)) open += 1;
  }
  const cacheControl = res.headers['Cache-Control'] || '';
  check(res, {
    'page is 200': (r) => r.status === 200,
    'an entry for every id': () => results !== null && entries.every((e) => e && e.status) &&
      Object.keys(results).length === page.length,
    'no-store exactly when an entry is not final': () =>
      (open > 0) === (cacheControl === 'no-store') && (open > 0 || /max-age=\d+/.test(cacheControl)),
  });
}
