// Event streams: every iteration opens GET /v1/prices/{id}/events (Server-Sent Events) for a
// product nobody has asked for before and checks what a browser's EventSource would see: one
// `quote` or `failure` event per source, then a `result` event carrying the comparison, then
// the end of the stream.
//
//   k6 run loadtest/stream.js                      # 10 new streams/s for 30 s
//   k6 run -e RATE=50 -e DURATION=60s loadtest/stream.js
//
// k6 has no EventSource: http.get reads the response until the server ends it, which the
// producer does right after the `result` event. So time_to_result (the whole response) is the
// real time from opening the stream to its result; when each quote arrived is not measurable
// here (the integration tests check that quotes come live, before the result exists).
//
// Knobs (env): BASE_URL, RATE (10 new streams per TIME_UNIT=1s; RATE= empty with VUS for
// constant-vus), PRE_VUS (2.5 x RATE), MAX_VUS, DURATION (30s), STREAM_TIMEOUT_S (40: more than
// producer.max_stream_secs, 30), RUN_ID (random), TTR_P95_MS (2500), TTR_P99_MS (4000),
// MAX_ERROR_RATE (0.01).

import http from 'k6/http';
import { check } from 'k6';
import exec from 'k6/execution';
import { Counter, Rate, Trend } from 'k6/metrics';
import {
  BASE_URL, RESULT_STATUSES, SUMMARY_TREND_STATS, checkId, clientHeaders, envInt, envNum, newRunId,
  requireReady, scenarioFromEnv,
} from './lib.js';

const ROUTE = 'GET /v1/prices/{id}/events';
const STREAM_TIMEOUT_S = envInt('STREAM_TIMEOUT_S', 40);

// From opening the stream to its end, just after the `result` event.
const timeToResult = new Trend('time_to_result', true);
// Share of streams that ended without a `result` event (max_stream_secs ran out, or cut off).
const noResult = new Rate('stream_without_result');
// quote + failure events per stream (one per configured source).
const sourceEvents = new Trend('source_events_per_stream');
const resultFailed = new Counter('result_status_failed');

const RATE = __ENV.RATE === '' ? null : envNum('RATE', 10);
const PRE_VUS_DEFAULT = RATE === null ? 10 : Math.max(10, Math.ceil(RATE * 2.5));

export const options = {
  scenarios: {
    streams: scenarioFromEnv({
      rate: RATE, vus: 10, duration: '30s', preVus: PRE_VUS_DEFAULT,
      maxVus: Math.max(200, PRE_VUS_DEFAULT * 4),
    }),
  },
  summaryTrendStats: SUMMARY_TREND_STATS,
  thresholds: {
    http_req_failed: [`rate<${envNum('MAX_ERROR_RATE', 0.01)}`],
    time_to_result: [`p(95)<${envNum('TTR_P95_MS', 2500)}`, `p(99)<${envNum('TTR_P99_MS', 4000)}`],
    stream_without_result: [`rate<${envNum('MAX_ERROR_RATE', 0.01)}`],
    checks: ['rate>0.99'],
  },
};

export function setup() {
  requireReady();
  const runId = newRunId();
  console.log(`run id ${runId}: products stream-${runId}-<vu>-<iteration>`);
  return { runId };
}

// The events of a text/event-stream body: [{ event, id, data }], comments skipped.
export function parseEvents(body) {
  const events = [];
  for (const block of (body || '').split('\n\n')) {
    let event = null;
    let id = null;
    const data = [];
    for (const line of block.split('\n')) {
      if (line === '' || line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'event') event = value;
      else if (field === 'id') id = value;
      else if (field === 'data') data.push(value);
    }
    if (event !== null || data.length > 0) events.push({ event: event || 'message', id, data: data.join('\n') });
  }
  return events;
}

function json(s) {
  try {
    return JSON.parse(s);
  } catch (_) {
    return null;
  }
}

export default function (data) {
  const id = checkId(`stream-${data.runId}-${exec.vu.idInTest}-${exec.vu.iterationInScenario}`);
  const start = Date.now();
  const res = http.get(`${BASE_URL}/v1/prices/${id}/events`, {
    tags: { name: ROUTE },
    headers: Object.assign({ Accept: 'text/event-stream' }, clientHeaders(exec.vu.idInTest)),
    timeout: `${STREAM_TIMEOUT_S}s`,
  });
  const events = res.status === 200 ? parseEvents(res.body) : [];
  const last = events.length > 0 ? events[events.length - 1] : null;
  const result = last !== null && last.event === 'result' ? json(last.data) : null;
  noResult.add(result === null);
  const sources = events.slice(0, -1);
  const providers = sources.map((e) => (json(e.data) || {}).provider);
  check(res, {
    'stream answers 200 text/event-stream': (r) =>
      r.status === 200 && /^text\/event-stream/.test(r.headers['Content-Type'] || ''),
    'a cold stream is a MISS': (r) => r.headers['X-Cache'] === 'MISS',
    'the last event is the result, for this product': () =>
      result !== null && result.product_id === id && RESULT_STATUSES.indexOf(result.status) >= 0,
    'before it, only quote and failure events, one per source': () =>
      sources.every((e) => e.event === 'quote' || e.event === 'failure') &&
      new Set(providers).size === providers.length && providers.every((p) => typeof p === 'string'),
    'one event per source of the result': () =>
      result !== null && sources.length === result.quotes.length + result.failures.length,
  });
  if (result === null) return;
  timeToResult.add(Date.now() - start);
  sourceEvents.add(sources.length);
  if (result.status === 'failed') resultFailed.add(1);
}
