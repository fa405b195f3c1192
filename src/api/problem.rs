//! API errors as RFC 9457 `application/problem+json`.
//!
//! Policy: 4xx answers say exactly what was wrong and are not logged as errors; 5xx answers
//! stay generic while the cause chain is logged once, here, inside the request's span.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::domain::{InvalidProductId, ProductId};

/// An RFC 9457 problem details body (`application/problem+json`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI reference naming the problem type; `about:blank` when the status says it all.
    #[serde(rename = "type")]
    pub problem_type: &'static str,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    /// `/problems/invalid-product-ids` only: each id of the request that is not valid, as sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalid_ids: Option<Vec<String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    InvalidProductId(#[from] InvalidProductId),
    #[error("malformed path: {0}")]
    BadPath(String),
    /// A multi-get's query is missing `ids` or cannot be read.
    #[error("{0}")]
    BadQuery(&'static str),
    /// Ids of a multi-get that are not valid (as sent, each with why).
    #[error("invalid product ids: {}", describe_invalid(.0))]
    InvalidProductIds(Vec<(String, InvalidProductId)>),
    /// A multi-get asks for more distinct ids than `producer.max_batch_ids`.
    #[error("{count} distinct product ids asked for; at most {max} per request")]
    TooManyIds { count: usize, max: usize },
    #[error("no such resource")]
    NotFound,
    #[error("method not allowed; use GET")]
    MethodNotAllowed,
    /// A cached answer: no price source sells the product.
    #[error("no price source sells product {0}")]
    ProductNotFound(ProductId),
    /// This client asked for too many uncached products lately.
    #[error("too many requests for uncached products from this client; retry in {retry_after_secs} s")]
    TooManyMisses { retry_after_secs: u64 },
    /// This producer publishes as many new requests as it may.
    #[error("too many new products are being requested; retry in {retry_after_secs} s")]
    Overloaded { retry_after_secs: u64 },
    /// This producer has `producer.max_streams` event streams open.
    #[error("too many event streams are open on this server; retry in {retry_after_secs} s")]
    TooManyStreams { retry_after_secs: u64 },
    /// This client has `producer.max_streams_per_client` event streams open.
    #[error("this client has too many event streams open; close one, or retry in {retry_after_secs} s")]
    TooManyClientStreams { retry_after_secs: u64 },
    /// A dependency (Redis, the broker) failed or was too slow; try again shortly.
    #[error("{what} unavailable")]
    Unavailable {
        what: &'static str,
        retry_after_secs: u64,
        #[source]
        cause: anyhow::Error,
    },
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidProductId(_)
            | ApiError::BadPath(_)
            | ApiError::BadQuery(_)
            | ApiError::InvalidProductIds(_)
            | ApiError::TooManyIds { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotFound | ApiError::ProductNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::TooManyMisses { .. } | ApiError::TooManyClientStreams { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable { .. } | ApiError::Overloaded { .. } | ApiError::TooManyStreams { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    fn problem_type(&self) -> &'static str {
        match self {
            ApiError::InvalidProductId(_) => "/problems/invalid-product-id",
            ApiError::BadPath(_) => "/problems/bad-path",
            ApiError::BadQuery(_) => "/problems/bad-query",
            ApiError::InvalidProductIds(_) => "/problems/invalid-product-ids",
            ApiError::TooManyIds { .. } => "/problems/too-many-ids",
            ApiError::NotFound | ApiError::MethodNotAllowed => "about:blank",
            ApiError::ProductNotFound(_) => "/problems/product-not-found",
            ApiError::TooManyMisses { .. } => "/problems/too-many-misses",
            ApiError::Overloaded { .. } => "/problems/overloaded",
            ApiError::TooManyStreams { .. } => "/problems/too-many-streams",
            ApiError::TooManyClientStreams { .. } => "/problems/too-many-client-streams",
            ApiError::Unavailable { .. } => "/problems/dependency-unavailable",
        }
    }
}

/// `"a b" (why), …`, the first few.
fn describe_invalid(invalid: &[(String, InvalidProductId)]) -> String {
    const SHOWN: usize = 10;
    let mut shown: Vec<String> = invalid.iter().take(SHOWN).map(|(id, why)| format!("{id:?} ({why})")).collect();
    if invalid.len() > SHOWN {
        shown.push(format!("and {} more", invalid.len() - SHOWN));
    }
    shown.join(", ")
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let detail = match &self {
            ApiError::Unavailable { what, cause, .. } => {
                tracing::error!(error = format!("{cause:#}"), dependency = what, "request failed");
                format!("{what} is unavailable; retry shortly")
            }
            other => other.to_string(),
        };
        let body = Problem {
            problem_type: self.problem_type(),
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail,
            invalid_ids: match &self {
                ApiError::InvalidProductIds(invalid) => Some(invalid.iter().map(|(id, _)| id.clone()).collect()),
                _ => None,
            },
        };
        let body = serde_json::to_string(&body).expect("a problem always serializes");
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if matches!(self, ApiError::MethodNotAllowed) {
            headers.insert(header::ALLOW, HeaderValue::from_static("GET,HEAD"));
        }
        if let ApiError::Unavailable { retry_after_secs, .. }
        | ApiError::TooManyMisses { retry_after_secs }
        | ApiError::Overloaded { retry_after_secs }
        | ApiError::TooManyStreams { retry_after_secs }
        | ApiError::TooManyClientStreams { retry_after_secs } = self
        {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        response
    }
}
