//! Results in Redis: read, checked against their price guarantee, and waited for.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use pricefront::cache::{Keys, StoredResult};
use serde_json::Value;

use super::{TestEnv, product_id, wait_for};

impl TestEnv {
    /// The comparison stored at `product`'s result key (its JSON, after the `#pf1 …` header,
    /// which must agree with it), or `None`.
    pub async fn stored_result(&self, product: &str) -> Option<Value> {
        Some(result_json(&self.redis_get(&self.result_key(product)).await?))
    }

    pub async fn redis_get(&self, key: &str) -> Option<String> {
        redis::cmd("GET").arg(key).query_async(&mut self.redis.clone()).await.unwrap()
    }

    /// Checks the price guarantee of a stored result, `PTTL <= expires_at - now` (with `now`
    /// taken before the read), and returns the result; `None` if nothing is stored.
    pub async fn assert_stored_within_guarantee(&self, product: &str) -> Option<Value> {
        let key = self.result_key(product);
        let now = time::OffsetDateTime::now_utc();
        let (body, pttl): (Option<String>, i64) =
            redis::pipe().get(&key).pttl(&key).query_async(&mut self.redis.clone()).await.unwrap();
        let body = result_json(&body?);
        let left = guarantee_left_ms(&body, now);
        // PTTL is whole milliseconds; expires_at has sub-millisecond precision.
        assert!(i128::from(pttl) <= left + 1, "{key}: Redis keeps it {pttl} ms, the guarantee has {left} ms left");
        Some(body)
    }

    pub async fn redis_del(&self, key: &str) {
        redis::cmd("DEL").arg(key).query_async::<i64>(&mut self.redis.clone()).await.unwrap();
    }

    /// Waits until the result for `product` is in Redis and returns it.
    pub async fn wait_result(&self, product: &str, deadline: Duration) -> Value {
        let key = self.result_key(product);
        wait_for(&format!("result for {product}"), deadline, || async {
            match self.redis_get(&key).await {
                Some(body) => Ok(result_json(&body)),
                None => Err("no result key".into()),
            }
        })
        .await
    }
}

/// The comparison in a stored result value, read by the library's own [`StoredResult::decode`]
/// (the `#pf1 …` header, then the JSON), checking that the header says what the JSON does.
pub fn result_json(value: &str) -> Value {
    let stored = StoredResult::decode(Bytes::copy_from_slice(value.as_bytes()), SystemTime::now())
        .unwrap_or_else(|e| panic!("{e}: {value}"));
    // `decode` also reads a bare JSON value (written before the header existed); ours have one.
    assert!(stored.body.len() < value.len(), "no header line: {value}");
    let comparison = stored.comparison().unwrap_or_else(|e| panic!("{e}: {value}"));
    let ms = |t: time::OffsetDateTime| (t.unix_timestamp_nanos() / 1_000_000) as i64;
    assert_eq!(
        (stored.computed_at_ms, stored.expires_at_ms, stored.status),
        (ms(comparison.computed_at), ms(comparison.expires_at), comparison.status),
        "{value}"
    );
    serde_json::from_slice(&stored.body).unwrap()
}

/// Products among `products` with no result yet in the Redis behind `conn` (one server or a
/// cluster: one `GET` per key, as the keys' slots differ).
pub async fn missing_results<C>(conn: &C, key_prefix: &str, products: &[String]) -> Vec<String>
where
    C: redis::aio::ConnectionLike + Clone + Send,
{
    let keys = Keys::new(key_prefix);
    let mut missing = Vec::new();
    for chunk in products.chunks(200) {
        let values = futures::future::join_all(chunk.iter().map(|p| {
            let mut conn = conn.clone();
            let key = keys.result(&product_id(p));
            async move { redis::cmd("EXISTS").arg(key).query_async::<bool>(&mut conn).await.unwrap() }
        }))
        .await;
        missing.extend(chunk.iter().zip(values).filter(|(_, exists)| !exists).map(|(p, _)| p.clone()));
    }
    missing
}

/// Waits until every product has a result in the Redis behind `conn`.
pub async fn wait_all_results_in<C>(conn: &C, key_prefix: &str, products: &[String], deadline: Duration)
where
    C: redis::aio::ConnectionLike + Clone + Send + Sync,
{
    wait_for(&format!("results for {} products", products.len()), deadline, || async {
        let missing = missing_results(conn, key_prefix, products).await;
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("{} missing, e.g. {:?}", missing.len(), &missing[..missing.len().min(3)]))
        }
    })
    .await
}

/// Waits until every product has a result in the test's Redis.
pub async fn wait_all_results(env: &TestEnv, products: &[String], deadline: Duration) {
    wait_all_results_in(&env.redis, &env.settings.redis.key_prefix, products, deadline).await
}

/// Milliseconds from `now` until the comparison's `expires_at` (negative once passed).
pub fn guarantee_left_ms(comparison: &Value, now: time::OffsetDateTime) -> i128 {
    let expires_at = comparison["expires_at"].as_str().unwrap();
    let expires_at = time::OffsetDateTime::parse(expires_at, &time::format_description::well_known::Rfc3339).unwrap();
    (expires_at - now).whole_milliseconds()
}

/// `expires_at - computed_at` in seconds.
pub fn guarantee_window(comparison: &serde_json::Value) -> i64 {
    let at = |field: &str| {
        let text = comparison[field].as_str().unwrap();
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).unwrap()
    };
    (at("expires_at") - at("computed_at")).whole_seconds()
}
