//! HTTP as a client sees it: a GET's status, headers and JSON, and requests in bulk.

use serde_json::Value;

/// The `max-age` directive of a response's `Cache-Control`.
pub fn max_age(headers: &reqwest::header::HeaderMap) -> u64 {
    let value = headers["cache-control"].to_str().unwrap();
    value
        .split(',')
        .find_map(|d| d.trim().strip_prefix("max-age="))
        .unwrap_or_else(|| panic!("no max-age in {value}"))
        .parse()
        .unwrap()
}

/// GET with the status, headers and JSON body.
pub async fn get(http: &reqwest::Client, url: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    let res = http.get(url).send().await.unwrap();
    let (status, headers) = (res.status().as_u16(), res.headers().clone());
    let body = res.bytes().await.unwrap();
    (status, headers, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// Requests every product once through the producer, `concurrency` at a time; returns the
/// products that were accepted (202) or already served (200).
pub async fn request_all(http: &reqwest::Client, base: &str, products: &[String], concurrency: usize) -> Vec<String> {
    use futures::StreamExt;
    futures::stream::iter(products.iter().cloned())
        .map(|p| async move {
            let status = http.get(format!("{base}/v1/prices/{p}")).send().await.map(|r| r.status().as_u16());
            (p, status)
        })
        .buffer_unordered(concurrency)
        .filter_map(|(p, status)| async move { matches!(status, Ok(200 | 202)).then_some(p) })
        .collect()
        .await
}
