//! The one request taken before axum's router: `GET /v1/prices/{product_id}`, the product's
//! most common. Routing it costs a hit about 3,000 instructions (a sixth of its cost:
//! matching, percent-decoding the id into the request's extensions, recording the matched
//! path, setting a content length hyper sets anyway) and the handler uses none of it: it reads
//! the id from the raw path, and answers a wrong method or an empty id through the router.
//! When this route's requests must pass a layer (CORS is configured, or spans are exported),
//! every request goes through the router.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::response::Response;
use axum::routing::future::RouteFuture;
use futures::future::Either;
use tower::Service;

use super::{AppState, prices};

/// The router, and the state for the price route's own way past it when it may take one.
#[derive(Clone)]
pub struct Dispatch {
    pub(super) direct: Option<AppState>,
    pub(super) router: Router,
}

type Direct = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl Service<Request> for Dispatch {
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Direct, RouteFuture<Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        match &self.direct {
            Some(state) if request.method() == Method::GET && prices::is_route(request.uri().path()) => {
                let state = state.clone();
                Either::Left(Box::pin(async move { Ok(prices::get_price(State(state), request).await) }))
            }
            _ => Either::Right(self.router.call(request)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_one_product_s_path_is_the_price_route() {
        for path in ["/v1/prices/sku-1", "/v1/prices/%41", "/v1/prices/a.b"] {
            assert!(prices::is_route(path), "{path}");
        }
        for path in ["/v1/prices/", "/v1/prices", "/v1/prices/sku-1/events", "/v1/prices/a/", "/v1/pricesx/a", "/"] {
            assert!(!prices::is_route(path), "{path}");
        }
    }
}
