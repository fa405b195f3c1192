//! One contract for the fleet's quotas, run against both keepers: Redis (the Lua scripts, on
//! Redis's clock) and this process (`LocalQuotas`, the standalone demo's), so the two cannot
//! drift apart. Turns are reserved, refused ones take nothing, and a pause holds every turn.

use std::collections::HashMap;
use std::time::Duration;

use pricefront::cache::RedisStore;
use pricefront::providers::{LocalQuotas, Quotas, Turn};
use pricefront::settings::{QuotaSettings, Settings};

fn redis_quotas() -> impl Quotas {
    let env: HashMap<String, String> = [
        ("PRICEFRONT__REDIS__URL".to_owned(), crate::helpers::redis_url()),
        ("PRICEFRONT__REDIS__KEY_PREFIX".to_owned(), format!("it-quotas-{}", uuid::Uuid::new_v4().simple())),
    ]
    .into();
    let settings = Settings::load_from(None, Some(env)).unwrap();
    RedisStore::connect_lazy(&settings.redis).unwrap().quotas()
}

/// `turn` is a `Go` after between `low` and `high` ms (the clock moves while the test runs).
fn go_within(turn: Turn, low: u64, high: u64) {
    match turn {
        Turn::Go(wait) => assert!(
            wait >= Duration::from_millis(low) && wait <= Duration::from_millis(high),
            "go after {wait:?}, not within {low}..={high} ms"
        ),
        other => panic!("{other:?}, not a go within {low}..={high} ms"),
    }
}

fn refused_within(turn: Turn, low: u64, high: u64) {
    match turn {
        Turn::Refused(next) => assert!(
            next >= Duration::from_millis(low) && next <= Duration::from_millis(high),
            "refused for {next:?}, not {low}..={high} ms"
        ),
        other => panic!("{other:?}, not a refusal of {low}..={high} ms"),
    }
}

async fn contract(quotas: &dyn Quotas) {
    let once_a_second = QuotaSettings { per_second: 1.0, burst: 3 };
    // The burst goes at once.
    for _ in 0..3 {
        go_within(quotas.take("burst", &once_a_second, Duration::ZERO).await.unwrap(), 0, 0);
    }
    // Then one a second: a call that cannot wait is refused and takes nothing...
    refused_within(quotas.take("burst", &once_a_second, Duration::ZERO).await.unwrap(), 500, 1000);
    refused_within(quotas.take("burst", &once_a_second, Duration::ZERO).await.unwrap(), 500, 1000);
    // ...one that can takes its turn, and the next queues behind it.
    go_within(quotas.take("burst", &once_a_second, Duration::from_secs(5)).await.unwrap(), 500, 1000);
    go_within(quotas.take("burst", &once_a_second, Duration::from_secs(5)).await.unwrap(), 1500, 2000);
    // Another source is another limiter.
    go_within(quotas.take("other", &once_a_second, Duration::ZERO).await.unwrap(), 0, 0);

    // A pause holds every turn, with a quota or without, and is there for all to see.
    assert_eq!(quotas.paused("paused").await.unwrap(), None);
    quotas.pause("paused", None, Duration::from_secs(2)).await.unwrap();
    let left = quotas.paused("paused").await.unwrap().expect("paused");
    assert!(left > Duration::from_millis(1500) && left <= Duration::from_secs(2), "{left:?}");
    quotas.pause("paused", None, Duration::from_secs(1)).await.unwrap();
    let still = quotas.paused("paused").await.unwrap().expect("paused");
    assert!(still > Duration::from_millis(1500), "a shorter pause does not shorten a longer one: {still:?}");
    let fast = QuotaSettings { per_second: 100.0, burst: 5 };
    refused_within(quotas.take("paused", &fast, Duration::from_millis(100)).await.unwrap(), 1500, 2000);
    go_within(quotas.take("paused", &fast, Duration::from_secs(3)).await.unwrap(), 1500, 2000);

    // With its quota, calls after the pause resume at its pace, not in a burst.
    quotas.pause("quota", Some(&once_a_second), Duration::from_millis(500)).await.unwrap();
    go_within(quotas.take("quota", &once_a_second, Duration::from_secs(5)).await.unwrap(), 300, 500);
    go_within(quotas.take("quota", &once_a_second, Duration::from_secs(5)).await.unwrap(), 1300, 1500);
}

#[tokio::test]
async fn redis_keeps_the_quota_contract() {
    contract(&redis_quotas()).await;
}

#[tokio::test]
async fn this_process_keeps_the_quota_contract() {
    contract(&LocalQuotas::default()).await;
}
