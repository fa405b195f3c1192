//! `X-Request-Id`: every answer names the request it answers, so a shop's report ("this 202
//! never turned into a price") can be found in the logs.
//!
//! A valid incoming id ([`valid_request_id`]: 1 to 128 characters from `A-Z a-z 0-9 - _ . :
//! / + = @`) is kept; anything else is replaced by one made here, in the request's own
//! headers, so whatever reads the request's `x-request-id` sees the id its answer carries:
//! the spans that log
//! ([`super::request_span`]), and a miss, which hands it on to the consumer in the message's
//! `x-request-id` header.
//!
//! [`RequestIds`] wraps the whole router as one service, not each route: a layer on a route
//! costs the hit path axum's boxing (see `track`), and this costs a header copy.

use std::future::Future;
use std::pin::Pin;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use tower::{Layer, Service};

use crate::queue::envelope::valid_request_id;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request's id as it reached the handlers (valid: [`RequestIds`] saw to it).
pub fn of(headers: &HeaderMap) -> Option<&str> {
    headers.get(&X_REQUEST_ID).and_then(|v| v.to_str().ok())
}

/// 32 lowercase hex digits, unique within this process (a counter through a bijection) and
/// across processes (a random half drawn at start).
fn generate() -> HeaderValue {
    static SEED: LazyLock<(u64, u64)> = LazyLock::new(|| uuid::Uuid::new_v4().as_u64_pair());
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let (high, low) = *SEED;
    let id = (u128::from(high) << 64) | u128::from(mix(low.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed))));
    // By hand: `format!` costs the hit path several hundred instructions more.
    let mut hex = [0u8; 32];
    for (i, digit) in hex.iter_mut().enumerate() {
        *digit = b"0123456789abcdef"[(id >> (124 - 4 * i) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&hex).expect("hex is a valid header value")
}

/// splitmix64's finaliser: a bijection on u64, so distinct counters give distinct ids.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Gives every request a valid `x-request-id` and its response the same `X-Request-Id`.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestIdLayer;

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestIds<S>;

    fn layer(&self, inner: S) -> RequestIds<S> {
        RequestIds(inner)
    }
}

#[derive(Clone, Debug)]
pub struct RequestIds<S>(S);

impl<S, B, R> Service<Request<B>> for RequestIds<S>
where
    S: Service<Request<B>, Response = Response<R>>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Stamped<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let value = match request.headers().get(&X_REQUEST_ID) {
            Some(incoming) if incoming.to_str().is_ok_and(valid_request_id) => incoming.clone(),
            _ => {
                let made = generate();
                request.headers_mut().insert(X_REQUEST_ID.clone(), made.clone());
                made
            }
        };
        Stamped { inner: self.0.call(request), value: Some(value) }
    }
}

pin_project_lite::pin_project! {
    /// The inner service's future, whose response gets the id.
    pub struct Stamped<F> {
        #[pin]
        inner: F,
        value: Option<HeaderValue>,
    }
}

impl<F, R, E> Future for Stamped<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.inner.poll(cx))?;
        if let Some(value) = this.value.take() {
            response.headers_mut().insert(X_REQUEST_ID.clone(), value);
        }
        Poll::Ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::ServiceExt;

    use super::*;

    /// Answers with the id its request carried, as a handler reading `of` would see it.
    async fn seen(incoming: Option<&[u8]>) -> (String, String) {
        let echo = tower::service_fn(|request: Request<()>| async move {
            Ok::<_, Infallible>(Response::new(of(request.headers()).unwrap_or("none").to_owned()))
        });
        let mut request = Request::new(());
        if let Some(value) = incoming {
            request.headers_mut().insert(X_REQUEST_ID.clone(), HeaderValue::from_bytes(value).unwrap());
        }
        let response = RequestIdLayer.layer(echo).oneshot(request).await.unwrap();
        let answered = response.headers()[&X_REQUEST_ID].to_str().unwrap().to_owned();
        (answered, response.into_body())
    }

    fn made_here(id: &str) -> bool {
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    }

    #[tokio::test]
    async fn a_valid_incoming_id_is_kept_and_anything_else_replaced() {
        for kept in ["abc", "0f8fad5b-d9cb-469f-a165-70867728950e", "shop:eu/req=42+x@edge_1.a", &"a".repeat(128)] {
            assert_eq!(seen(Some(kept.as_bytes())).await, (kept.to_owned(), kept.to_owned()));
        }
        for replaced in [&b""[..], b"has space", b"quote\"", b"comma,", &[0xfc, b'n'], &[b'a'; 129]] {
            let (answered, handled) = seen(Some(replaced)).await;
            assert!(made_here(&answered), "{answered}");
            assert_eq!(handled, answered, "the handler sees the id the answer carries");
        }
        let (answered, handled) = seen(None).await;
        assert!(made_here(&answered) && handled == answered, "{answered} {handled}");
    }
}
