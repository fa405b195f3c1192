//! One-off administration:
//! - `admin create-topics`: creates the request topic and its DLQ with `kafka.partitions` partitions.
//! - `admin get KEY`: prints one effective setting (after file and env layering), or a table of
//!   them (`admin get cache`), for scripts; secrets `<redacted>`. A price source's by name,
//!   `providers.NAME.FIELD[.FIELD…]` (e.g. `providers.ebay.response.price`), defaults filled in.
//! - `admin dlq list [--limit N]`: each dead letter's partition and offset, age, reason, product
//!   id (if its payload decodes) and error, oldest first per partition (default limit 1000).
//! - `admin dlq replay [--since TIME] [--reason R]`: re-publishes the decodable dead letters to
//!   the request topic, once (the group `{kafka.group_id}.dlq-replay` remembers what it read);
//!   TIME is RFC 3339 or an age like `30m`, `2h`, `1d`.

use std::process::ExitCode;

use anyhow::{Context, bail};
use pricefront::queue::{admin, dlq};
use pricefront::{observability, settings::Settings, shutdown};

#[tokio::main]
async fn main() -> ExitCode {
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(e) => return shutdown::invalid_config(e),
    };
    shutdown::exit_code(run(settings).await)
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["create-topics"] => {
            observability::logs::init(&settings.log);
            admin::ensure_topics(&settings.kafka).await.context("creating topics")?;
            tracing::info!(topic = %settings.kafka.topic, dlq = %settings.kafka.dlq_topic, partitions = settings.kafka.partitions, "topics ready");
        }
        ["get", key] => println!("{}", get(&settings, key)?),
        // No logs: stdout is the listing, for scripts (errors still reach stderr).
        ["dlq", "list", rest @ ..] => {
            let limit = match rest {
                [] => 1000,
                ["--limit", n] => n.parse().with_context(|| format!("--limit {n:?} is not a count"))?,
                _ => bail!("usage: admin dlq list [--limit N]"),
            };
            dlq_list(&settings, limit).await?;
        }
        ["dlq", "replay", rest @ ..] => {
            dlq_replay(&settings, replay_filter(rest)?).await?;
        }
        _ => bail!(
            "usage: admin create-topics | admin get KEY | admin dlq list [--limit N] | admin dlq replay [--since TIME] [--reason R]"
        ),
    }
    Ok(())
}

async fn dlq_list(settings: &Settings, limit: usize) -> anyhow::Result<()> {
    let letters = dlq::list(&settings.kafka, limit, dlq::IDLE).await.context("reading the DLQ")?;
    let now = time::OffsetDateTime::now_utc();
    println!("PARTITION\tOFFSET\tAGE\tREASON\tPRODUCT\tERROR");
    for l in &letters {
        let age = l.failed_at().map_or_else(|| "?".to_owned(), |at| age((now - at).whole_seconds()));
        let product = l.request().map_or_else(|_| "-".to_owned(), |r| r.product_id.to_string());
        println!("{}\t{}\t{age}\t{}\t{product}\t{}", l.partition, l.offset, l.reason(), l.error());
    }
    eprintln!("{} dead letters in {}", letters.len(), settings.kafka.dlq_topic);
    Ok(())
}

async fn dlq_replay(settings: &Settings, filter: dlq::Filter) -> anyhow::Result<()> {
    let done = dlq::replay(&settings.kafka, &filter, dlq::IDLE).await.context("replaying the DLQ")?;
    for (l, to) in &done.published {
        let product = l.request().map(|r| r.product_id.to_string()).unwrap_or_default();
        println!(
            "replayed\t{}\t{}\t{product}\tto partition {} offset {}",
            l.partition, l.offset, to.partition, to.offset
        );
    }
    for l in &done.undecodable {
        println!("undecodable\t{}\t{}\t{}", l.partition, l.offset, l.reason());
    }
    for l in &done.filtered {
        println!("filtered\t{}\t{}\t{}", l.partition, l.offset, l.reason());
    }
    let ranges: Vec<String> = done.ranges.iter().map(|(p, (a, b))| format!("partition {p}: {a}..={b}")).collect();
    eprintln!(
        "replayed {}, undecodable {}, filtered {}; read {}",
        done.published.len(),
        done.undecodable.len(),
        done.filtered.len(),
        if ranges.is_empty() { "nothing new".to_owned() } else { ranges.join(", ") }
    );
    Ok(())
}

fn replay_filter(args: &[&str]) -> anyhow::Result<dlq::Filter> {
    let mut filter = dlq::Filter::default();
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let value = args.next().with_context(|| format!("{flag} needs a value"))?;
        match *flag {
            "--since" => filter.since = Some(since(value)?),
            "--reason" => filter.reason = Some(value.to_string()),
            _ => bail!("usage: admin dlq replay [--since TIME] [--reason R]"),
        }
    }
    Ok(filter)
}

/// RFC 3339, or an age: `90s`, `30m`, `2h`, `1d`.
fn since(text: &str) -> anyhow::Result<time::OffsetDateTime> {
    if let Ok(at) = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339) {
        return Ok(at);
    }
    let (n, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("--since {text:?}: an RFC 3339 time or an age like 30m, 2h, 1d"),
    };
    let n: i64 = n.parse().with_context(|| format!("--since {text:?}: an RFC 3339 time or an age like 30m"))?;
    Ok(time::OffsetDateTime::now_utc() - time::Duration::seconds(n.saturating_mul(secs)))
}

fn age(secs: i64) -> String {
    match secs.max(0) {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// Any setting, or a whole table of them (`admin get kafka`): strings print bare, anything
/// else as JSON; secrets `<redacted>`. A price source's keys, by name, with its defaults.
fn get(s: &Settings, key: &str) -> anyhow::Result<String> {
    if key.starts_with("providers.") {
        return provider_setting(s, key);
    }
    let shown = Settings::shown().context("reading the settings")?;
    let mut at = &shown;
    let mut rest = key;
    // A table's keys may hold dots themselves (`kafka.options."sasl.mechanism"`): the longest
    // that matches wins.
    while !rest.is_empty() {
        let parts: Vec<&str> = rest.split('.').collect();
        let found = (1..=parts.len()).rev().find_map(|n| {
            let name = parts[..n].join(".");
            let next = match at {
                serde_json::Value::Object(map) => map.get(&name),
                serde_json::Value::Array(items) => name.parse::<usize>().ok().and_then(|i| items.get(i)),
                _ => None,
            }?;
            Some((next, n))
        });
        let Some((next, n)) = found else { bail!("admin get: {key:?} is not a setting") };
        at = next;
        rest = rest.splitn(n + 1, '.').nth(n).unwrap_or_default();
    }
    Ok(match at {
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    })
}

/// `providers.NAME.FIELD…`: strings print bare, anything else as JSON.
fn provider_setting(s: &Settings, key: &str) -> anyhow::Result<String> {
    let mut parts = key.split('.').skip(1);
    let name = parts.next().unwrap_or_default();
    let Some(provider) = s.providers.iter().find(|p| p.name == name) else {
        bail!("admin get: no provider named {name:?}");
    };
    let mut value = serde_json::to_value(provider)?;
    value["response"] = serde_json::to_value(provider.response())?;
    // Header values are where credentials live.
    if let Some(headers) = value["headers"].as_object_mut() {
        headers.values_mut().for_each(|v| *v = "<redacted>".into());
    }
    let mut at = &value;
    for part in parts {
        at = at.get(part).ok_or_else(|| anyhow::anyhow!("admin get: {key:?} is not a setting"))?;
    }
    Ok(match at {
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    })
}
