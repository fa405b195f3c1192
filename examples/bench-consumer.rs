//! The consumer benchmark's generator (`scripts/bench-consumer.sh`). Not part of the product.
//!
//! `bench-consumer RUN N`: with the settings in force (`PRICEFRONT_CONFIG`, `PRICEFRONT__…`),
//! subscribes to the result announcements of products `bc-RUN-0 … bc-RUN-(N-1)`, publishes a
//! request for each to `kafka.topic` in one burst (no HTTP, no producer: only the consumers'
//! work is timed), and waits until every one is announced (or `BC_TIMEOUT_SECS`, 120, pass).
//! It prints one line of `key=value` pairs: the products, how many were announced, the
//! seconds from the first publish to the last announcement, the rate over that span, and the
//! rate between the 10th and the 90th percentile of announcements (the steady rate, without
//! the start-up and the tail).
//!
//! `bench-consumer RUN N RATE`: the same, but paced: one request every 1/RATE s (open loop),
//! for the rolling-restart benchmark (`scripts/bench-restart.sh`). With `BC_CSV` set, every
//! product's publish and announcement (seconds since the first publish) are written there.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use pricefront::cache::Keys;
use pricefront::domain::ProductId;
use pricefront::queue::{Caller, PriceRequest, Publisher, RequestQueue};
use pricefront::settings::Settings;

/// Requests handed to librdkafka at once: it batches them per partition (`linger.ms`).
const BATCH: usize = 1000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (run, n, rate) = match args.as_slice() {
        [run, n] => (run, n.parse::<usize>()?, None),
        [run, n, rate] => (run, n.parse()?, Some(rate.parse::<f64>()?)),
        _ => anyhow::bail!("usage: bench-consumer RUN N [RATE]"),
    };
    let timeout =
        Duration::from_secs(std::env::var("BC_TIMEOUT_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(120));
    let settings = Settings::load()?;
    let keys = Keys::new(settings.redis.key_prefix.clone());
    let ids: Vec<ProductId> = (0..n).map(|i| ProductId::parse(&format!("bc-{run}-{i}")).expect("a valid id")).collect();
    let channel_prefix = format!("{}bc-{run}-", keys.ready_channels());
    let pattern = format!("{channel_prefix}*");

    let client = redis::Client::open(settings.redis.url.as_str())?;
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.psubscribe(&pattern).await?;
    let mut announcements = pubsub.into_on_message();

    let publisher = Arc::new(Publisher::new(&settings.kafka)?);
    let started = Instant::now();
    let mut sent = HashMap::with_capacity(n);
    let mut seen = HashMap::with_capacity(n);
    let mut arrivals = Vec::with_capacity(n);
    let record = |message: redis::Msg, seen: &mut HashMap<String, f64>, arrivals: &mut Vec<f64>| {
        let channel = message.get_channel_name();
        if let Some(id) = channel.strip_prefix(&channel_prefix)
            && !seen.contains_key(id)
        {
            let at = started.elapsed().as_secs_f64();
            seen.insert(id.to_owned(), at);
            arrivals.push(at);
        }
    };
    let mut published = 0;
    match rate {
        None => {
            for chunk in ids.chunks(BATCH) {
                let requests: Vec<PriceRequest> = chunk.iter().cloned().map(PriceRequest::new).collect();
                for outcome in publisher.publish_many(&requests, Caller::default()).await {
                    outcome?;
                    published += 1;
                }
            }
        }
        Some(rate) => {
            // Open loop: product i goes at i / rate, whatever became of the others; the
            // announcements are read meanwhile.
            let mut publishes = tokio::task::JoinSet::new();
            for (i, id) in ids.iter().enumerate() {
                let due = started + Duration::from_secs_f64(i as f64 / rate);
                while let Ok(Some(message)) = tokio::time::timeout_at(due.into(), announcements.next()).await {
                    record(message, &mut seen, &mut arrivals);
                }
                sent.insert(id.to_string(), started.elapsed().as_secs_f64());
                let (publisher, request) = (publisher.clone(), PriceRequest::new(id.clone()));
                publishes.spawn(async move { publisher.publish(&request, Caller::default()).await.map(drop) });
            }
            while let Some(outcome) = publishes.join_next().await {
                outcome??;
                published += 1;
            }
        }
    }
    let publish_secs = started.elapsed().as_secs_f64();

    let deadline = tokio::time::Instant::now() + timeout;
    while seen.len() < n {
        let Ok(Some(message)) = tokio::time::timeout_at(deadline, announcements.next()).await else { break };
        record(message, &mut seen, &mut arrivals);
    }
    if let Ok(path) = std::env::var("BC_CSV") {
        let mut csv = String::from("product,published_s,announced_s\n");
        for id in &ids {
            let (id, published) = (id.as_str(), sent.get(id.as_str()).copied().unwrap_or(f64::NAN));
            // Announcements are known by what follows `bc-RUN-` in their channel.
            let suffix = id.strip_prefix(&format!("bc-{run}-")).expect("our own id");
            let announced = seen.get(suffix).copied().unwrap_or(f64::NAN);
            csv.push_str(&format!("{id},{published:.6},{announced:.6}\n"));
        }
        std::fs::write(path, csv)?;
    }
    arrivals.sort_by(f64::total_cmp);
    let announced = arrivals.len();
    let last = arrivals.last().copied().unwrap_or(f64::NAN);
    let at = |share: f64| arrivals[((announced as f64 * share) as usize).min(announced.saturating_sub(1))];
    let steady = if announced >= 10 {
        let (p10, p90) = (at(0.1), at(0.9));
        (announced as f64 * 0.8) / (p90 - p10)
    } else {
        f64::NAN
    };
    println!(
        "products={n} published={published} publish_s={publish_secs:.3} announced={announced} first_s={:.3} last_s={last:.3} rate={:.0} steady_rate={steady:.0}",
        arrivals.first().copied().unwrap_or(f64::NAN),
        announced as f64 / last,
    );
    if announced < n {
        anyhow::bail!("{} of {n} products were not announced within {timeout:?}", n - announced);
    }
    Ok(())
}
