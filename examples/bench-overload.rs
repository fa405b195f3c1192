//! The overload benchmark's generator (`scripts/bench-overload.sh`). Not part of the product.
//!
//! Everything is measured from outside, through the public API, the result announcements,
//! Redis keys, the topics' messages, the services' `/metrics` and the mock's `/_stats`, so it
//! reports the same figures whatever the product does inside. With the settings in force
//! (`PRICEFRONT_CONFIG`, `PRICEFRONT__…`):
//!
//! `bench-overload load RUN`: warms `BO_HOT` hot products `bo-RUN-hot-<i>` (each asked with
//! `Prefer: wait=10` until it answers 200), then for `BO_DURATION` seconds, open loop (request
//! k goes at k / rate, whatever became of the others): `BO_HOT_RATE` requests a second spread
//! round-robin over the hot products, and `BO_NEW_RATE` never-seen products `bo-RUN-new-<i>` a
//! second. A new product's client asks once; after a 202 it asks again every `BO_POLL_SECS`
//! until it gets 200 or `BO_GIVE_UP_SECS` have passed since its first ask (a 503 or anything
//! else at the first ask: it goes away). Each request comes from a client of its own
//! (`X-Forwarded-For`), so the per-client miss limit stays out of the way. The result
//! announcements of the run's products are timestamped on one PSUBSCRIBE. It then waits until
//! `cache.pending_ttl` has passed since the last first ask, reads the run's pending markers
//! left in Redis, the services' counters and the mock's calls, prints the report and writes
//! every new product's outcome to `BO_CSV`.
//!
//! `bench-overload count RUN`: run with the stack stopped (nothing publishes meanwhile).
//! Counts the messages on every topic whose name starts with `kafka.topic` (but the DLQ,
//! counted apart), or on the comma-separated `BO_TOPICS`, by reading them from the start up to
//! a marker written now to each partition (tansu's high watermarks are not trusted), by
//! product kind; and compares the new products' publishes with the accepted ones in `BO_CSV`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use pricefront::cache::Keys;
use pricefront::queue::PriceRequest;
use pricefront::settings::Settings;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

fn knob<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(v) => v.parse().map_err(|_| anyhow::anyhow!("{name}={v:?} is not valid")),
        Err(_) => Ok(default),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let settings = Settings::load()?;
    match args.as_slice() {
        [cmd, run] if cmd == "load" => load(&settings, run).await,
        [cmd, run] if cmd == "count" => count(&settings, run).await,
        _ => anyhow::bail!("usage: bench-overload load|count RUN"),
    }
}

/// One client per request or product: `10.a.b.c` from a 24-bit number.
fn client(n: u32) -> String {
    format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255)
}

/// What one GET got: its status (`None`: no answer) and whether it carried `Retry-After`.
#[derive(Clone, Copy)]
struct Answer {
    status: Option<u16>,
    retry_after: bool,
}

async fn get(http: &reqwest::Client, url: &str, from: &str, wait: Option<u32>) -> Answer {
    let mut request = http.get(url).header("X-Forwarded-For", from);
    if let Some(secs) = wait {
        request = request.header("Prefer", format!("wait={secs}"));
    }
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let retry_after = response.headers().contains_key(reqwest::header::RETRY_AFTER);
            // The body is read so the connection goes back to the pool.
            let _ = response.bytes().await;
            Answer { status: Some(status), retry_after }
        }
        Err(_) => Answer { status: None, retry_after: false },
    }
}

fn status_name(s: Option<u16>) -> String {
    s.map_or_else(|| "no answer".to_owned(), |s| s.to_string())
}

/// A hot request: sent (seconds since the load started), its status, its response time (s).
type HotAnswer = (f64, Option<u16>, f64);

/// A new product's story, as its client saw it (seconds since the load started).
#[derive(Clone, Default)]
struct NewOutcome {
    asked_s: f64,
    first: Option<u16>,
    first_retry_after: bool,
    /// Status counts of its later asks (polls).
    polls: BTreeMap<String, u64>,
    got_200_s: Option<f64>,
}

/// `name{labels} value` lines of a Prometheus text exposition.
async fn scrape(http: &reqwest::Client, url: &str) -> Vec<(String, String, f64)> {
    let Ok(response) = http.get(url).send().await else { return Vec::new() };
    let Ok(text) = response.text().await else { return Vec::new() };
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            Some((name.to_owned(), labels.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The value of `label` in a `k="v",…` label list.
fn label<'a>(labels: &'a str, label: &str) -> Option<&'a str> {
    labels.split(',').find_map(|kv| kv.strip_prefix(label)?.strip_prefix("=\"")?.strip_suffix('"'))
}

/// `after - before` of each series of the counter `name`, keyed by the chosen label's value,
/// keeping only series whose labels pass `keep`.
fn delta(
    before: &[(String, String, f64)],
    after: &[(String, String, f64)],
    name: &str,
    by: &str,
    keep: impl Fn(&str) -> bool,
) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (sign, series) in [(-1.0, before), (1.0, after)] {
        for (n, labels, v) in series {
            if n == name && keep(labels) {
                *out.entry(label(labels, by).unwrap_or("").to_owned()).or_insert(0.0) += sign * v;
            }
        }
    }
    out.retain(|_, v| *v != 0.0);
    out
}

fn show(m: &BTreeMap<String, f64>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter().map(|(k, v)| format!("{k} {v:.0}")).collect::<Vec<_>>().join(", ")
}

fn show_counts(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", ")
}

fn pct(part: u64, whole: u64) -> String {
    if whole == 0 { "-".into() } else { format!("{:.1}%", part as f64 * 100.0 / whole as f64) }
}

fn percentile(xs: &mut [f64], p: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(f64::total_cmp);
    xs[((xs.len() as f64 * p).ceil() as usize).clamp(1, xs.len()) - 1]
}

async fn load(settings: &Settings, run: &str) -> anyhow::Result<()> {
    let hot_n: u32 = knob("BO_HOT", 50)?;
    let hot_rate: f64 = knob("BO_HOT_RATE", 200.0)?;
    let new_rate: f64 = knob("BO_NEW_RATE", 100.0)?;
    let duration: f64 = knob("BO_DURATION", 90.0)?;
    let hot_skip: f64 = knob("BO_HOT_SKIP", 30.0)?;
    let poll: f64 = knob("BO_POLL_SECS", 5.0)?;
    let give_up: f64 = knob("BO_GIVE_UP_SECS", 60.0)?;
    let csv_path: String = knob("BO_CSV", String::new())?;
    anyhow::ensure!(
        hot_n > 0 && hot_rate > 0.0 && new_rate > 0.0 && duration > 0.0 && poll > 0.0,
        "rates must be positive"
    );

    let keys = Keys::new(settings.redis.key_prefix.clone());
    let pending_ttl = settings.cache.pending_ttl.as_secs_f64();
    let base = format!("http://{}/v1/prices", settings.producer.listen);
    let ops = format!("http://{}/metrics", settings.producer.ops_listen);
    let consumer_metrics = format!("http://{}/metrics", settings.consumer.metrics_listen);
    let mock_stats = format!("http://{}/_stats", settings.mock.listen);
    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build()?;
    let ids = format!("bo-{run}-");

    // The announcements of the run's products: first arrival and how many.
    let channel_prefix = keys.ready_channels();
    let redis = redis::Client::open(settings.redis.url.as_str())?;
    let mut pubsub = redis.get_async_pubsub().await?;
    pubsub.psubscribe(format!("{channel_prefix}{ids}*")).await?;
    let mut messages = pubsub.into_on_message();
    let announced: Arc<Mutex<HashMap<String, (Instant, u32)>>> = Arc::default();
    {
        let (announced, channel_prefix) = (announced.clone(), channel_prefix.clone());
        tokio::spawn(async move {
            while let Some(message) = messages.next().await {
                let at = Instant::now();
                if let Some(id) = message.get_channel_name().strip_prefix(&channel_prefix) {
                    announced.lock().unwrap().entry(id.to_owned()).or_insert((at, 0)).1 += 1;
                }
            }
        });
    }

    // Warm the hot products: each answers 200 before the load starts.
    let hot: Vec<String> = (0..hot_n).map(|i| format!("{ids}hot-{i}")).collect();
    let warm_started = Instant::now();
    let mut warming = tokio::task::JoinSet::new();
    for (i, id) in hot.iter().enumerate() {
        let (http, url, from) = (http.clone(), format!("{base}/{id}"), client(i as u32));
        warming.spawn(async move {
            for _ in 0..6 {
                if get(&http, &url, &from, Some(10)).await.status == Some(200) {
                    return Ok(());
                }
            }
            Err(anyhow::anyhow!("{url} never answered 200"))
        });
    }
    while let Some(done) = warming.join_next().await {
        done??;
    }
    println!("warm-up: {hot_n} hot products answered 200 in {:.1} s", warm_started.elapsed().as_secs_f64());

    let producer_before = scrape(&http, &ops).await;
    let consumer_before = scrape(&http, &consumer_metrics).await;
    let t0 = Instant::now();
    let since = move || t0.elapsed().as_secs_f64();

    // Open loop: request k goes at k / rate. `late` is the worst lag of the schedule itself.
    let hot_answers: Arc<Mutex<Vec<HotAnswer>>> = Arc::default();
    let hot_total = (hot_rate * duration).round() as u64;
    let hot_loop = {
        let (http, base, hot, hot_answers) = (http.clone(), base.clone(), hot.clone(), hot_answers.clone());
        tokio::spawn(async move {
            let mut tasks = tokio::task::JoinSet::new();
            let mut late = 0f64;
            for k in 0..hot_total {
                let due = t0 + Duration::from_secs_f64(k as f64 / hot_rate);
                late = late.max(Instant::now().saturating_duration_since(due).as_secs_f64());
                tokio::time::sleep_until(due.into()).await;
                let url = format!("{base}/{}", hot[(k % hot.len() as u64) as usize]);
                let (http, hot_answers) = (http.clone(), hot_answers.clone());
                let from = client((k % (1 << 22)) as u32);
                tasks.spawn(async move {
                    let sent = since();
                    let answer = get(&http, &url, &from, None).await;
                    hot_answers.lock().unwrap().push((sent, answer.status, since() - sent));
                });
                while tasks.try_join_next().is_some() {}
            }
            while tasks.join_next().await.is_some() {}
            late
        })
    };
    let new_total = (new_rate * duration).round() as u64;
    let outcomes: Arc<Mutex<Vec<NewOutcome>>> = Arc::new(Mutex::new(vec![NewOutcome::default(); new_total as usize]));
    let new_loop = {
        let (http, base, ids, outcomes) = (http.clone(), base.clone(), ids.clone(), outcomes.clone());
        tokio::spawn(async move {
            let mut tasks = tokio::task::JoinSet::new();
            let mut late = 0f64;
            for i in 0..new_total {
                let due = t0 + Duration::from_secs_f64(i as f64 / new_rate);
                late = late.max(Instant::now().saturating_duration_since(due).as_secs_f64());
                tokio::time::sleep_until(due.into()).await;
                let url = format!("{base}/{ids}new-{i}");
                let (http, outcomes) = (http.clone(), outcomes.clone());
                let from = client((1 << 22) + (i % (1 << 22)) as u32);
                tasks.spawn(async move {
                    let asked = since();
                    let first = get(&http, &url, &from, None).await;
                    let mut outcome = NewOutcome {
                        asked_s: asked,
                        first: first.status,
                        first_retry_after: first.retry_after,
                        ..Default::default()
                    };
                    if first.status == Some(200) {
                        outcome.got_200_s = Some(since());
                    }
                    if first.status == Some(202) {
                        // Each interval is POLL_SECS +-50 %, drawn from a generator seeded with the
                        // product's number: clients are not in step, and a poll never sits
                        // exactly on a claim's expiry (pending_ttl a multiple of POLL_SECS), where
                        // a microsecond would decide whether it publishes again. The same draws in
                        // every run.
                        let mut rng = fastrand::Rng::with_seed(i);
                        let mut interval = || poll * (0.5 + rng.f64());
                        let mut next = asked + interval();
                        while next <= asked + give_up {
                            tokio::time::sleep_until((t0 + Duration::from_secs_f64(next)).into()).await;
                            let answer = get(&http, &url, &from, None).await;
                            *outcome.polls.entry(status_name(answer.status)).or_default() += 1;
                            match answer.status {
                                Some(200) => {
                                    outcome.got_200_s = Some(since());
                                    break;
                                }
                                Some(404) => break,
                                _ => next += interval(),
                            }
                        }
                    }
                    outcomes.lock().unwrap()[i as usize] = outcome;
                });
                while tasks.try_join_next().is_some() {}
            }
            while tasks.join_next().await.is_some() {}
            late
        })
    };
    let hot_late = hot_loop.await?;
    let hot_done = since();
    let new_late = new_loop.await?;
    let new_done = since();
    // Every accepted product's pending_ttl window has closed (plus a second for the last
    // announcements to arrive).
    let last_first_ask = outcomes.lock().unwrap().iter().map(|o| o.asked_s).fold(0f64, f64::max);
    let until = last_first_ask + pending_ttl + 1.0;
    if since() < until {
        tokio::time::sleep(Duration::from_secs_f64(until - since())).await;
    }
    let measured_s = since();

    let producer_after = scrape(&http, &ops).await;
    let consumer_after = scrape(&http, &consumer_metrics).await;
    let stats: serde_json::Value = match http.get(&mock_stats).send().await {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(_) => serde_json::Value::Null,
    };
    let con = redis.get_multiplexed_async_connection().await?;
    let prefix = keys.prefix();
    let left = scan(&con, &format!("{prefix}:*:{{{ids}*")).await?;
    let left_of = |kind: &str, who: &str| {
        let start = format!("{prefix}:{kind}:{{{ids}{who}-");
        left.iter().filter(|k| k.starts_with(&start)).count()
    };
    let (pending_new, pending_hot, results_new) =
        (left_of("pending", "new"), left_of("pending", "hot"), left_of("result", "new"));
    let read_s = since();

    // ---- The report.
    // Seconds since t0 (negative: before it, as the warm-up's).
    let announced: HashMap<String, (f64, u32)> = announced
        .lock()
        .unwrap()
        .iter()
        .map(|(id, (at, n))| {
            let secs = at.saturating_duration_since(t0).as_secs_f64() - t0.saturating_duration_since(*at).as_secs_f64();
            (id.clone(), (secs, *n))
        })
        .collect();
    let outcomes = outcomes.lock().unwrap().clone();
    println!(
        "load: {duration:.0} s from t=0; hot requests ended at {hot_done:.1} s, the new products' polls at {new_done:.1} s, measured at {measured_s:.1} s (counters, /_stats and Redis read by {read_s:.1} s); \
         the schedule was at most {:.0} ms late (hot) and {:.0} ms (new)",
        hot_late * 1000.0,
        new_late * 1000.0
    );

    let hot_answers = hot_answers.lock().unwrap().clone();
    let mut hot_status: BTreeMap<String, u64> = BTreeMap::new();
    let mut hot_latency = Vec::new();
    let mut windows: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for &(sent, status, took) in &hot_answers {
        let w = windows.entry((sent / 10.0) as u64).or_default();
        w.0 += 1;
        w.1 += u64::from(status == Some(200));
        if sent >= hot_skip {
            *hot_status.entry(status_name(status)).or_default() += 1;
            hot_latency.push(took * 1000.0);
        }
    }
    let hot_measured: u64 = hot_status.values().sum();
    let hot_ok = hot_status.get("200").copied().unwrap_or(0);
    println!(
        "\nHOT ({hot_n} products, {hot_rate:.0} requests/s, {} sent): after the first {hot_skip:.0} s, {hot_ok} of {hot_measured} answered 200 = {}",
        hot_answers.len(),
        pct(hot_ok, hot_measured)
    );
    println!("  statuses after {hot_skip:.0} s: {}", show_counts(&hot_status));
    println!(
        "  response time after {hot_skip:.0} s (ms): p50 {:.1}, p99 {:.1}, max {:.1}",
        percentile(&mut hot_latency, 0.5),
        percentile(&mut hot_latency, 0.99),
        percentile(&mut hot_latency, 1.0)
    );
    println!(
        "  200 share by 10 s of the run: {}",
        windows
            .iter()
            .map(|(w, (n, ok))| format!("{}-{}s {}", w * 10, w * 10 + 10, pct(*ok, *n)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let hot_announcements: u32 =
        announced.iter().filter(|(id, _)| id.starts_with(&format!("{ids}hot-"))).map(|(_, (_, n))| n).sum();
    println!("  results announced for hot products (warm-up, refreshes and recomputations): {hot_announcements}");

    let mut first: BTreeMap<String, u64> = BTreeMap::new();
    let mut refused_with_retry_after = 0;
    let (mut accepted, mut within, mut later, mut never, mut client_within, mut client_ever) = (0u64, 0, 0, 0, 0, 0);
    let mut ttr = Vec::new();
    let mut polls: BTreeMap<String, u64> = BTreeMap::new();
    let mut csv =
        String::from("product,asked_s,first_status,first_retry_after,got_200_s,announced_s,announcements,polls\n");
    for (i, o) in outcomes.iter().enumerate() {
        let id = format!("{ids}new-{i}");
        *first.entry(status_name(o.first)).or_default() += 1;
        if o.first == Some(503) && o.first_retry_after {
            refused_with_retry_after += 1;
        }
        let ann = announced.get(&id).copied();
        if o.first == Some(202) {
            accepted += 1;
            match ann {
                Some((at, _)) if at - o.asked_s <= pending_ttl => {
                    within += 1;
                    ttr.push(at - o.asked_s);
                }
                Some(_) => later += 1,
                None => never += 1,
            }
            if let Some(at) = o.got_200_s {
                client_ever += 1;
                client_within += u64::from(at - o.asked_s <= pending_ttl);
            }
        }
        for (k, v) in &o.polls {
            *polls.entry(k.clone()).or_default() += v;
        }
        csv.push_str(&format!(
            "{id},{:.3},{},{},{},{},{},{}\n",
            o.asked_s,
            status_name(o.first),
            u8::from(o.first_retry_after),
            o.got_200_s.map_or(String::new(), |s| format!("{s:.3}")),
            ann.map_or(String::new(), |(s, _)| format!("{s:.3}")),
            ann.map_or(0, |(_, n)| n),
            o.polls.values().sum::<u64>()
        ));
    }
    if !csv_path.is_empty() {
        std::fs::write(&csv_path, csv)?;
    }
    let refused = first.get("503").copied().unwrap_or(0);
    println!(
        "\nNEW ({new_rate:.0} never-seen products/s for {duration:.0} s: {new_total} products, each asked once, then polled every {poll:.0} s +-50 % after a 202 until 200 or {give_up:.0} s)"
    );
    println!("  first answers: {}", show_counts(&first));
    println!("  accepted (202): {accepted} = {}", pct(accepted, new_total));
    println!(
        "  refused at once (503): {refused} = {}, {refused_with_retry_after} of them with Retry-After",
        pct(refused, new_total)
    );
    println!(
        "  of the accepted, result announced ({{prefix}}:ready:<id>) within pending_ttl ({pending_ttl:.0} s) of the first ask: {within} = {}; later (by {measured_s:.0} s): {later}; not by then: {never}",
        pct(within, accepted)
    );
    println!(
        "  ask -> announcement for those within (s): p50 {:.1}, p95 {:.1}, max {:.1}",
        percentile(&mut ttr, 0.5),
        percentile(&mut ttr, 0.95),
        percentile(&mut ttr, 1.0)
    );
    println!(
        "  of the accepted, the client got 200 within pending_ttl: {client_within} = {}; by giving up: {client_ever} = {}",
        pct(client_within, accepted),
        pct(client_ever, accepted)
    );
    println!("  polls: {} ({})", polls.values().sum::<u64>(), show_counts(&polls));
    println!(
        "  left in Redis at {measured_s:.0} s: {pending_new} pending markers and {results_new} results of new products, {pending_hot} pending markers of hot products"
    );

    let run_topic = settings.kafka.topic.clone();
    let dlq = settings.kafka.dlq_topic.clone();
    let ours = |labels: &str| label(labels, "topic").is_some_and(|t| t.starts_with(&run_topic) && t != dlq);
    println!("\nCOUNTERS over the load (t=0 to {measured_s:.0} s; the warm-up not included)");
    let publishes = "pricefront_publish_total";
    println!(
        "  producer {publishes} (topics {run_topic}*, but the DLQ) by outcome: {}",
        show(&delta(&producer_before, &producer_after, publishes, "outcome", ours))
    );
    println!(
        "  producer {publishes} by topic: {}",
        show(&delta(&producer_before, &producer_after, publishes, "topic", |_| true))
    );
    for (name, by) in [("pricefront_limited_total", "limit"), ("pricefront_refreshes_total", "stage")] {
        println!("  producer {name} by {by}: {}", show(&delta(&producer_before, &producer_after, name, by, |_| true)));
    }
    for (name, by) in [("pricefront_messages_total", "outcome"), ("pricefront_refreshes_total", "stage")] {
        println!("  consumer {name} by {by}: {}", show(&delta(&consumer_before, &consumer_after, name, by, |_| true)));
    }
    let published: f64 = delta(&producer_before, &producer_after, "pricefront_publish_total", "outcome", ours)
        .get("ok")
        .copied()
        .unwrap_or(0.0);
    let taken: f64 =
        delta(&consumer_before, &consumer_after, "pricefront_messages_total", "outcome", |_| true).values().sum();
    println!(
        "  still queued at {measured_s:.0} s: about {:.0} (published ok minus consumed during the load; {:.1} messages/s consumed)",
        published - taken,
        taken / measured_s
    );

    if let Some(providers) = stats.get("providers").and_then(|p| p.as_object()) {
        println!("\nSOURCES (the mock's /_stats at {measured_s:.0} s; the queue may still hold work then)");
        for (name, p) in providers {
            let (mut calls, mut products, mut twice, mut hot_calls) = (0u64, 0u64, 0u64, 0u64);
            let by_product = p.get("by_product").and_then(|b| b.as_object()).cloned().unwrap_or_default();
            for (product, n) in &by_product {
                let n = n.as_u64().unwrap_or(0);
                if product.starts_with(&format!("{ids}new-")) {
                    calls += n;
                    products += 1;
                    twice += u64::from(n > 1);
                } else if product.starts_with(&format!("{ids}hot-")) {
                    hot_calls += n;
                }
            }
            println!(
                "  {name}: {calls} calls for {products} new products ({:.2} a product; {twice} products called more than once), {hot_calls} calls for the {hot_n} hot ones; {} products listed",
                if products > 0 { calls as f64 / products as f64 } else { f64::NAN },
                by_product.len()
            );
            if by_product.len() as u64 >= pricefront::mock::STATS_MAX_PRODUCTS {
                println!(
                    "  (the mock keeps at most {} products: these counts are incomplete)",
                    pricefront::mock::STATS_MAX_PRODUCTS
                );
            }
        }
    } else {
        println!("\nSOURCES: the mock's /_stats did not answer");
    }
    // utime + stime of this process (clock ticks of 1/100 s on Linux), for the script's CPU line.
    let ticks = std::fs::read_to_string("/proc/self/stat").ok().and_then(|stat| {
        let fields: Vec<u64> =
            stat.rsplit_once(')')?.1.split_whitespace().skip(11).take(2).filter_map(|f| f.parse().ok()).collect();
        Some(fields.iter().sum::<u64>())
    });
    if let Some(ticks) = ticks {
        println!("generator CPU: {:.1} s", ticks as f64 / 100.0);
    }
    Ok(())
}

/// The keys that match `pattern` (SCAN).
async fn scan(con: &redis::aio::MultiplexedConnection, pattern: &str) -> redis::RedisResult<Vec<String>> {
    let (mut con, mut cursor, mut found) = (con.clone(), 0u64, Vec::new());
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(10_000)
            .query_async(&mut con)
            .await?;
        found.extend(keys);
        if next == 0 {
            return Ok(found);
        }
        cursor = next;
    }
}

async fn count(settings: &Settings, run: &str) -> anyhow::Result<()> {
    let ids = format!("bo-{run}-");
    let brokers = settings.kafka.brokers.clone();
    let listed: String = knob("BO_TOPICS", String::new())?;
    let csv_path: String = knob("BO_CSV", String::new())?;
    let (run_topic, dlq) = (settings.kafka.topic.clone(), settings.kafka.dlq_topic.clone());

    let reader = |group: String| -> anyhow::Result<BaseConsumer> {
        Ok(ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()?)
    };
    let metadata = reader(format!("bo-count-{run}"))?.fetch_metadata(None, Duration::from_secs(10))?;
    let mut topics: Vec<(String, i32)> = metadata
        .topics()
        .iter()
        .filter(|t| {
            if listed.is_empty() {
                t.name().starts_with(&run_topic)
            } else {
                listed.split(',').any(|l| l.trim() == t.name())
            }
        })
        .map(|t| (t.name().to_owned(), t.partitions().len() as i32))
        .collect();
    topics.sort();
    anyhow::ensure!(!topics.is_empty(), "no topic starts with {run_topic}");

    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", &brokers).create()?;
    let marker = format!("bo-marker-{run}-{}", uuid::Uuid::new_v4().simple());
    // key kind -> (requests, refreshes); and each new product's publishes on request topics.
    let mut per_new: HashMap<String, u64> = HashMap::new();
    println!("\nTOPICS (every message read from the start, up to a marker written to each partition after the run)");
    let mut request_total = (0u64, 0u64, 0u64, 0u64);
    for (topic, partitions) in &topics {
        for p in 0..*partitions {
            let record = FutureRecord::to(topic).key(&marker).payload("marker").partition(p);
            producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e)?;
        }
        let (topic_c, marker_c, consumer) = (topic.clone(), marker.clone(), reader(format!("bo-count-{run}-{topic}"))?);
        let partitions = *partitions;
        let keys: Vec<(String, Option<bool>)> = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let mut tpl = TopicPartitionList::new();
            for p in 0..partitions {
                tpl.add_partition_offset(&topic_c, p, Offset::Beginning)?;
            }
            consumer.assign(&tpl)?;
            let (started, mut markers, mut keys) = (Instant::now(), 0, Vec::new());
            while markers < partitions {
                anyhow::ensure!(
                    started.elapsed() < Duration::from_secs(120),
                    "reading {topic_c}: {markers} markers of {partitions} after 120 s"
                );
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                    let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
                    if key == marker_c {
                        markers += 1;
                    } else {
                        keys.push((key, PriceRequest::decode(m.payload()).ok().map(|r| r.refresh)));
                    }
                }
            }
            Ok(keys)
        })
        .await??;
        let (mut new, mut hot, mut hot_refresh, mut other, mut undecoded) = (0u64, 0u64, 0u64, 0u64, 0u64);
        let mut other_keys: BTreeMap<String, u64> = BTreeMap::new();
        for (key, refresh) in &keys {
            undecoded += u64::from(refresh.is_none());
            if key.starts_with(&format!("{ids}new-")) {
                new += 1;
                if *topic != dlq {
                    *per_new.entry(key.clone()).or_default() += 1;
                }
            } else if key.starts_with(&format!("{ids}hot-")) {
                hot += 1;
                hot_refresh += u64::from(*refresh == Some(true));
            } else {
                other += 1;
                *other_keys.entry(key.clone()).or_default() += 1;
            }
        }
        println!(
            "  {topic}{}: {} messages: {new} for new products, {hot} for hot products ({hot_refresh} marked refresh), {other} other{}; {undecoded} not a price request",
            if *topic == dlq { " (DLQ)" } else { "" },
            keys.len(),
            if other_keys.is_empty() {
                String::new()
            } else {
                format!(
                    " (keys: {})",
                    other_keys.iter().take(5).map(|(k, n)| format!("{k:?} x{n}")).collect::<Vec<_>>().join(", ")
                )
            }
        );
        if *topic != dlq {
            request_total.0 += new;
            request_total.1 += hot;
            request_total.2 += hot_refresh;
            request_total.3 += keys.len() as u64;
        }
    }

    let mut accepted: HashSet<String> = HashSet::new();
    if !csv_path.is_empty() {
        for line in std::fs::read_to_string(&csv_path)?.lines().skip(1) {
            let cols: Vec<&str> = line.split(',').collect();
            if cols.get(2) == Some(&"202") {
                accepted.insert(cols[0].to_owned());
            }
        }
    }
    let published_accepted: u64 = per_new.iter().filter(|(k, _)| accepted.contains(*k)).map(|(_, n)| n).sum();
    let twice = per_new.values().filter(|n| **n > 1).count();
    let most = per_new.values().copied().max().unwrap_or(0);
    println!(
        "\nDUPLICATE WORK (request topics, but the DLQ): {} requests for new products were published for {} distinct new products accepted (202) = {:.2} a product; \
         {} new products published more than once (at most {most} times); {} published but never accepted",
        request_total.0,
        accepted.len(),
        if accepted.is_empty() { f64::NAN } else { request_total.0 as f64 / accepted.len() as f64 },
        twice,
        per_new.keys().filter(|k| !accepted.contains(*k)).count(),
    );
    println!(
        "  of those publishes, {published_accepted} are of accepted products; hot products: {} requests ({} marked refresh; the warm-up's included); all messages on the request topics: {}",
        request_total.1, request_total.2, request_total.3
    );
    Ok(())
}
