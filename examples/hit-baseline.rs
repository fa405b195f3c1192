//! The hit benchmark's baselines (`scripts/bench-hit.sh`): what pricefront's hit path is
//! measured against, on the same machine and framework. Not part of the product.
//!
//! - `hit-baseline bytes ADDR FILE`: a bare axum handler answering every
//!   `GET /v1/prices/{id}` with FILE's bytes (a real comparison) as `application/json`.
//! - `hit-baseline bytes-headers ADDR FILE`: the same, with the headers a pricefront hit
//!   carries (`X-Cache`, `ETag`, `Cache-Control`, `Age`, `Vary`), fixed.
//! - `hit-baseline redis ADDR REDIS_URL PREFIX`: an axum handler doing one plain `GET
//!   {PREFIX}:result:{<id>}` per request on one multiplexed connection and answering its bytes
//!   (404 when there are none).

use std::net::SocketAddr;

/// The product's allocator (see `src/lib.rs`), so the ratios measure our code, not the allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use bytes::Bytes;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: hit-baseline bytes|bytes-headers ADDR FILE | hit-baseline redis ADDR REDIS_URL PREFIX";
    let (mode, addr) = match args.as_slice() {
        [mode, addr, ..] => (mode.as_str(), addr.parse::<SocketAddr>().expect(usage)),
        _ => panic!("{usage}"),
    };
    let app = match (mode, &args[2..]) {
        ("bytes", [file]) => {
            let body = Bytes::from(std::fs::read(file).expect("read FILE"));
            Router::new().route(
                "/v1/prices/{id}",
                get(move || {
                    let body = body.clone();
                    async move { ([(header::CONTENT_TYPE, "application/json")], body) }
                }),
            )
        }
        // The same bytes with the headers a pricefront hit carries, fixed: what those headers
        // cost the framework and the kernel.
        ("bytes-headers", [file]) => {
            let body = Bytes::from(std::fs::read(file).expect("read FILE"));
            Router::new().route(
                "/v1/prices/{id}",
                get(move || {
                    let body = body.clone();
                    async move {
                        (
                            [
                                (header::CONTENT_TYPE, "application/json"),
                                (header::HeaderName::from_static("x-cache"), "HIT"),
                                (header::ETAG, "\"19ad0b2c1f3-9e3c2b7a5d1f0c44\""),
                                (header::CACHE_CONTROL, "public, max-age=287, stale-while-revalidate=60"),
                                (header::AGE, "12"),
                                (header::VARY, "Prefer"),
                            ],
                            body,
                        )
                    }
                }),
            )
        }
        ("redis", [url, prefix]) => {
            let client = redis::Client::open(url.as_str()).expect("REDIS_URL");
            let conn = client.get_multiplexed_async_connection().await.expect("connect to Redis");
            Router::new().route("/v1/prices/{id}", get(from_redis)).with_state((conn, prefix.clone()))
        }
        _ => panic!("{usage}"),
    };
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind ADDR");
    axum::serve(listener, app).await.expect("serve");
}

async fn from_redis(
    State((mut conn, prefix)): State<(redis::aio::MultiplexedConnection, String)>,
    Path(id): Path<String>,
) -> axum::response::Response {
    let value: Option<Vec<u8>> =
        redis::cmd("GET").arg(format!("{prefix}:result:{{{id}}}")).query_async(&mut conn).await.unwrap_or(None);
    match value {
        Some(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
