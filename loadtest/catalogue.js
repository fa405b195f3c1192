// Catalogue pages: each iteration asks for one page of a shop's category listing in a single
// request, GET /v1/prices?ids=a,b,…: PAGE distinct products drawn from a catalogue of
// CATALOGUE products whose popularity follows a Zipf law (rank k is drawn in proportion to
// 1/k^ZIPF_S). The answer is always 200 with one entry per id: the comparison, or
// {"status": "pending" | "not_found" | "unavailable"}. It records the page's latency
// (page_duration), the share of entries that were final (entry_final: a comparison or
// not_found) and the number of pending and unavailable entries; it checks the status, that
// every id has an entry, and that Cache-Control is no-store exactly when an entry is pending
// or unavailable (else public, max-age=N).
//
//   k6 run loadtest/catalogue.js                                   # 10 VUs, as fast as they go, 30 s
//   k6 run -e WARM=2000 -e RATE=200 loadtest/catalogue.js          # warm catalogue, 200 pages/s
//   k6 run -e PREFIX=cold1 -e WAIT_SECS=5 -e P95_MS=3000 loadtest/catalogue.js  # cold pages, held until final
//
// Knobs (env): BASE_URL, CATALOGUE (2000), PAGE (48; at most CATALOGUE and
// producer.max_batch_ids, 100), ZIPF_S (1.0), PREFIX (cat: ids cat-1 … cat-2000, rank 1 the
// most popular), WAIT_SECS (0: no Prefer header; N: Prefer: wait=N on every page, granted up to
// producer.max_wait_secs, 10), WARM (0: top-ranked products warmed in setup), WARM_DEADLINE_MS
// (120000), VUS (10) or RATE (+TIME_UNIT=1s, PRE_VUS, MAX_VUS), DURATION (30s), P95_MS (250),
// P99_MS (1000), MIN_FINAL_RATE (0: no threshold), MAX_ERROR_RATE (0.01).
//
// The ids are the same on every run (and the same as mixed.js's catalogue by default), so a
// product stays cached for the cache TTL (300 s) after a run computed it; pick a new PREFIX for
// cold pages. Every VU is a client of its own (see clientHeaders in lib.js), and each product
// a page starts costs its client one miss (producer.miss_rate_per_client: 20/s, bursts of 100):
// cold pages at a high rate get unavailable entries (reason miss_limit, counted by reason).

import { check, sleep } from 'k6';
import http from 'k6/http';
import exec from 'k6/execution';
import { Counter, Rate, Trend } from 'k6/metrics';
import {
  BASE_URL, RESULT_STATUSES, SUMMARY_TREND_STATS, checkId, clientHeaders, envInt, envNum, envStr,
  requireReady, scenarioFromEnv, zipfSampler,
} from './lib.js';

const CATALOGUE = envInt('CATALOGUE', 2000);
const PAGE = envInt('PAGE', 48);
const ZIPF_S = envNum('ZIPF_S', 1.0);
const PREFIX = envStr('PREFIX', 'cat');
const WAIT_SECS = envInt('WAIT_SECS', 0);
const WARM = Math.min(CATALOGUE, envInt('WARM', 0));
if (CATALOGUE < 1) throw new Error('CATALOGUE must be at least 1');
if (PAGE < 1 || PAGE > CATALOGUE) throw new Error('PAGE must be within [1, CATALOGUE]');
if (WAIT_SECS < 0) throw new Error('WAIT_SECS must not be negative');

// The product of rank k (1 = the most popular) is ids[k - 1].
const ids = Array.from({ length: CATALOGUE }, (_, i) => checkId(`${PREFIX}-${i + 1}`));
const zipf = zipfSampler(CATALOGUE, ZIPF_S);

// PAGE distinct products, each drawn by popularity (a draw already on the page is drawn again).
function drawPage() {
  const page = new Set();
  while (page.size < PAGE) page.add(ids[zipf.rank() - 1]);
  return [...page];
}

// Every page is named by its route, not its URL, so pages do not make one time series each.
const ROUTE = 'GET /v1/prices?ids=';

const pageUrl = (page) => `${BASE_URL}/v1/prices?ids=${page.join(',')}`;

function pageParams(client, waitSecs, step) {
  const headers = clientHeaders(client);
  if (waitSecs > 0) headers.Prefer = `wait=${waitSecs}`;
  return { headers, tags: { name: ROUTE, step } };
}

// The answer's `results` object, or null when the body is not a page.
function pageResults(res) {
  try {
    const results = res.json().results;
    return results && typeof results === 'object' ? results : null;
  } catch (_) {
    return null;
  }
}

// What an entry is: 'comparison' (of that id), 'not_found', 'pending', 'unavailable', or null
// when it is missing or none of these.
function entryKind(id, entry) {
  if (!entry || typeof entry !== 'object') return null;
  if (['not_found', 'pending', 'unavailable'].includes(entry.status)) return entry.status;
  return RESULT_STATUSES.includes(entry.status) && entry.product_id === id ? 'comparison' : null;
}

const isFinal = (kind) => kind === 'comparison' || kind === 'not_found';
const isOpen = (kind) => kind === 'pending' || kind === 'unavailable';

const pageDuration = new Trend('page_duration', true);
const entryFinal = new Rate('entry_final');
const entriesPending = new Counter('entries_pending');
const entriesUnavailable = new Counter('entries_unavailable'); // tagged with the reason

const thresholds = {
  'http_req_failed{step:page}': [`rate<${envNum('MAX_ERROR_RATE', 0.01)}`],
  page_duration: [`p(95)<${envNum('P95_MS', 250)}`, `p(99)<${envNum('P99_MS', 1000)}`],
  checks: ['rate>0.99'],
};
const MIN_FINAL_RATE = envNum('MIN_FINAL_RATE', 0);
if (MIN_FINAL_RATE > 0) thresholds.entry_final = [`rate>=${MIN_FINAL_RATE}`];

export const options = {
  scenarios: { pages: scenarioFromEnv({ vus: 10, duration: '30s' }) },
  setupTimeout: envStr('SETUP_TIMEOUT', '5m'),
  batch: 100,
  batchPerHost: 100,
  summaryTrendStats: SUMMARY_TREND_STATS,
  thresholds,
};

// Warms the top WARM products: asks for them as pages of PAGE ids, all at once, each page as a
// client of its own and with Prefer: wait=10, then asks again (a second later) for the entries
// not final yet, until every one is final or WARM_DEADLINE_MS has passed. Fails the test when
// fewer than 99% of them are final by then.
function warmCatalogue() {
  const deadlineMs = envInt('WARM_DEADLINE_MS', 120000);
  const start = Date.now();
  let left = ids.slice(0, WARM);
  for (let round = 0; left.length > 0; round++) {
    if (round > 0) {
      if (Date.now() - start >= deadlineMs) break;
      sleep(1);
    }
    const pages = [];
    for (let i = 0; i < left.length; i += PAGE) pages.push(left.slice(i, i + PAGE));
    const responses = http.batch(pages.map((page, i) => ['GET', pageUrl(page), null, pageParams(100000 + i, 10, 'warm')]));
    left = [];
    responses.forEach((res, i) => {
      const results = pageResults(res) || {};
      for (const id of pages[i]) if (!isFinal(entryKind(id, results[id]))) left.push(id);
    });
  }
  const warmed = WARM - left.length;
  console.log(`warmed ${warmed}/${WARM} products in ${((Date.now() - start) / 1000).toFixed(1)} s`);
  if (warmed < WARM * 0.99) {
    throw new Error(
      `only ${warmed} of ${WARM} products final within ${deadlineMs} ms ` +
        `(not yet e.g. ${left.slice(0, 3).join(', ')}); is the stack at ${BASE_URL} healthy?`,
    );
  }
}

export function setup() {
  requireReady();
  if (WARM > 0) warmCatalogue();
}

export default function () {
  const page = drawPage();
  const res = http.get(pageUrl(page), pageParams(exec.vu.idInTest, WAIT_SECS, 'page'));
  pageDuration.add(res.timings.duration);
  const results = pageResults(res);
  const kinds = results === null ? [] : page.map((id) => entryKind(id, results[id]));
  kinds.forEach((kind, i) => {
    entryFinal.add(isFinal(kind));
    if (kind === 'pending') entriesPending.add(1);
    if (kind === 'unavailable') entriesUnavailable.add(1, { reason: String(results[page[i]].reason) });
  });
  const cacheControl = res.headers['Cache-Control'] || '';
  check(res, {
    'status is 200': (r) => r.status === 200,
    'an entry for every id': () =>
      results !== null && Object.keys(results).length === page.length && page.every((id) => id in results),
    'every entry a comparison of its id or a known status': () =>
      results !== null && kinds.every((kind) => kind !== null),
    'no-store exactly when an entry is pending or unavailable': () =>
      results !== null &&
      (kinds.some(isOpen) ? cacheControl === 'no-store' : /^public, max-age=\d+$/.test(cacheControl)),
  });
}
