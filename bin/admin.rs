//! One-off administration (`admin --help`, arguments by clap):
//! - `admin create-topics`: creates the request topic, the refresh topic and the DLQ with
//!   `kafka.partitions` partitions each.
//! - `admin get KEY`: prints one effective setting (after file and env layering), or a table of
//!   them (`admin get cache`), for scripts; secrets `<redacted>`. A price source's by name,
//!   `providers.NAME.FIELD[.FIELD…]` (e.g. `providers.ebay.response.price`), defaults filled in.
//! - `admin dlq list [--limit N]`: each dead letter's partition and offset, age, reason, product
//!   id (if its payload decodes) and error, oldest first per partition (default limit 1000).
//! - `admin dlq replay [--since TIME] [--reason R]`: re-publishes the decodable dead letters to
//!   the request topic, once (the group `{kafka.group_id}.dlq-replay` remembers what it read);
//!   TIME is RFC 3339 or an age like `30m`, `2h`, `1d` (humantime).

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use pricefront::queue::{admin, dlq};
use pricefront::{observability, settings::Settings, shutdown};

/// pricefront's one-off administration, with the settings in force (`config/default.toml`,
/// then `PRICEFRONT_CONFIG`, then `PRICEFRONT__SECTION__KEY`).
#[derive(Parser)]
#[command(name = "admin", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Creates the request topic, the refresh topic and the DLQ with `kafka.partitions` partitions each.
    CreateTopics,
    /// Prints one effective setting (`cache.l1_ttl_ms`), or a table of them (`cache`), for
    /// scripts; secrets `<redacted>`. A price source's by name, defaults filled in:
    /// `providers.NAME.FIELD[.FIELD…]` (e.g. `providers.ebay.response.price`).
    Get { key: String },
    /// The dead-letter topic.
    Dlq {
        #[command(subcommand)]
        command: Dlq,
    },
}

#[derive(Subcommand)]
enum Dlq {
    /// Each dead letter's partition and offset, age, reason, product id (if its payload
    /// decodes) and error, oldest first per partition.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Re-publishes the decodable dead letters to the request topic, once (the group
    /// `{kafka.group_id}.dlq-replay` remembers what it read).
    Replay {
        /// Only those that failed since TIME: RFC 3339, or an age like `90s`, `30m`, `2h`, `1d`.
        #[arg(long, value_name = "TIME", value_parser = since)]
        since: Option<time::OffsetDateTime>,
        /// Only those dead-lettered for this reason (`invalid_json`, `processing_failed`, …).
        #[arg(long)]
        reason: Option<String>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    // Before the settings: `--help` and a wrong argument need no valid configuration.
    let cli = Cli::parse();
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(e) => return shutdown::invalid_config(e),
    };
    shutdown::exit_code(run(settings, cli.command).await)
}

async fn run(settings: Settings, command: Command) -> anyhow::Result<()> {
    match command {
        Command::CreateTopics => {
            observability::logs::init(&settings.log);
            admin::ensure_topics(&settings.kafka).await.context("creating topics")?;
            tracing::info!(topic = %settings.kafka.topic, dlq = %settings.kafka.dlq_topic, partitions = settings.kafka.partitions, "topics ready");
        }
        Command::Get { key } => println!("{}", get(&settings, &key)?),
        // No logs: stdout is the listing, for scripts (errors still reach stderr).
        Command::Dlq { command: Dlq::List { limit } } => dlq_list(&settings, limit).await?,
        Command::Dlq { command: Dlq::Replay { since, reason } } => {
            dlq_replay(&settings, dlq::Filter { since, reason }).await?;
        }
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

/// RFC 3339, or an age (`90s`, `30m`, `2h`, `1d`, `1h 30m`: humantime's durations) before now.
fn since(text: &str) -> Result<time::OffsetDateTime, String> {
    if let Ok(at) = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339) {
        return Ok(at);
    }
    let age =
        humantime::parse_duration(text).map_err(|e| format!("an RFC 3339 time or an age like 30m, 2h, 1d ({e})"))?;
    let age = time::Duration::try_from(age).map_err(|e| e.to_string())?;
    Ok(time::OffsetDateTime::now_utc() - age)
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
