//! The producer's face for people: the comparison widget a shop embeds, the demo page, and the
//! CORS rules that let a page on another origin use the API.
//!
//! - `GET /static/{file}`: a file compiled into the binary (from `web/`): the widget
//!   `price-compare.js`, the demo page's `demo.js` and `demo.css`, `favicon.svg`. Cached five
//!   minutes and revalidated by its entity tag, so a shop embedding the plain URL gets a new
//!   version within minutes.
//! - `GET /static/{version}/{file}`: the same, versioned by a hash of its content: cached for a
//!   year, `immutable`. Another version's URL (a page from before a deploy) gets the current
//!   file, cached as the plain URL is, never a year-long copy under the wrong name.
//! - `GET /`: the demo page (`producer.demo_page`), under a strict Content-Security-Policy:
//!   nothing but this origin's own scripts, styles and connections, no inline code.
//!
//! Static files may be read from any origin (`Access-Control-Allow-Origin: *`, no credentials:
//! they are public code). The API and its event streams may be read from the origins in
//! `producer.cors_allow_origins` only ([`cors`]).

use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::ApiError;

/// The demo page's policy: this origin's own files and API only, no inline script or style,
/// no framing.
pub const DEMO_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// How long a plain (unversioned) static URL is cached.
const PLAIN_MAX_AGE: &str = "public, max-age=300";
/// How long a versioned one is: it never changes.
const VERSIONED_MAX_AGE: &str = "public, max-age=31536000, immutable";

/// A file served from the binary.
pub struct Asset {
    pub name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
    /// A hash of the bytes: the version in its URL and its entity tag.
    hash: u64,
}

const fn asset(name: &'static str, content_type: &'static str, bytes: &'static [u8]) -> Asset {
    Asset { name, content_type, bytes, hash: xxhash_rust::const_xxh3::xxh3_64(bytes) }
}

/// Every static file.
pub static ASSETS: [Asset; 4] = [
    asset("price-compare.js", "text/javascript; charset=utf-8", include_bytes!("../../web/price-compare.js")),
    asset("demo.js", "text/javascript; charset=utf-8", include_bytes!("../../web/demo.js")),
    asset("demo.css", "text/css; charset=utf-8", include_bytes!("../../web/demo.css")),
    asset("favicon.svg", "image/svg+xml", include_bytes!("../../web/favicon.svg")),
];

impl Asset {
    /// The version in its URL.
    pub fn version(&self) -> String {
        format!("{:016x}", self.hash)
    }

    /// Its URL path, versioned.
    pub fn versioned_path(&self) -> String {
        format!("/static/{}/{}", self.version(), self.name)
    }

    fn find(name: &str) -> Option<&'static Asset> {
        ASSETS.iter().find(|a| a.name == name)
    }

    fn serve(&self, headers: &HeaderMap, cache_control: &'static str) -> Response {
        let etag = HeaderValue::from_str(&format!("\"{}\"", self.version())).expect("hex digits");
        let mut out = HeaderMap::with_capacity(8);
        out.insert(header::ETAG, etag.clone());
        out.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache_control));
        out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        // A shop whose pages require it (COEP) may still load the widget.
        out.insert(HeaderName::from_static("cross-origin-resource-policy"), HeaderValue::from_static("cross-origin"));
        out.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        let not_modified = headers
            .get(header::IF_NONE_MATCH)
            .is_some_and(|tags| crate::cache::etag_listed(tags.as_bytes(), etag.as_bytes()));
        if not_modified {
            return (StatusCode::NOT_MODIFIED, out).into_response();
        }
        out.insert(header::CONTENT_TYPE, HeaderValue::from_static(self.content_type));
        (out, self.bytes).into_response()
    }
}

/// `GET /static/{file}`.
pub async fn plain(Path(name): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    let asset = Asset::find(&name).ok_or(ApiError::NotFound)?;
    Ok(asset.serve(&headers, PLAIN_MAX_AGE))
}

/// `GET /static/{version}/{file}`.
pub async fn versioned(
    Path((version, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let asset = Asset::find(&name).ok_or(ApiError::NotFound)?;
    let cache_control = if version == asset.version() { VERSIONED_MAX_AGE } else { PLAIN_MAX_AGE };
    Ok(asset.serve(&headers, cache_control))
}

/// The demo page, its files' URLs versioned.
static DEMO_PAGE: LazyLock<String> = LazyLock::new(|| {
    ASSETS.iter().fold(include_str!("../../web/demo.html").to_owned(), |page, asset| {
        page.replace(&format!("/static/{{{{version:{}}}}}/{}", asset.name, asset.name), &asset.versioned_path())
    })
});

/// `GET /`: the demo page.
pub async fn demo_page() -> Response {
    let headers = [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CONTENT_SECURITY_POLICY, DEMO_CSP),
        // Small, and it names the current versions: always revalidated.
        (header::CACHE_CONTROL, "no-cache"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
    ];
    (headers, DEMO_PAGE.as_str()).into_response()
}

/// Where the demo page's live panel reads its figures.
pub const DEMO_METRICS: &str = "/demo/metrics";
/// The metric families the panel shows, and nothing else: the rest are the ops port's.
const DEMO_FAMILIES: [&str; 3] =
    ["pricefront_http_requests_total", "pricefront_cache_lookups_total", "pricefront_open_streams"];

/// How long one rendering of `/demo/metrics` is served: rendering every family costs far more
/// than a hit, and the page is public.
const DEMO_METRICS_FOR: Duration = Duration::from_secs(1);

/// `GET /demo/metrics` (only with the demo page): the few figures its live panel shows, in the
/// Prometheus text format, from this producer's metrics, rendered at most once a second.
pub async fn demo_metrics() -> Response {
    static RENDERED: Mutex<Option<(Instant, Bytes)>> = Mutex::new(None);
    let shown = {
        let mut rendered = RENDERED.lock().expect("demo metrics lock");
        match &*rendered {
            Some((at, text)) if at.elapsed() < DEMO_METRICS_FOR => text.clone(),
            _ => {
                let text = Bytes::from(demo_families(&crate::observability::metrics::render()));
                *rendered = Some((Instant::now(), text.clone()));
                text
            }
        }
    };
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4"), (header::CACHE_CONTROL, "no-store")], shown).into_response()
}

/// The lines of `all` (a Prometheus text rendering) that belong to the demo's families.
fn demo_families(all: &str) -> String {
    all.lines()
        .filter(|line| {
            let name = line.trim_start_matches("# HELP ").trim_start_matches("# TYPE ");
            DEMO_FAMILIES.iter().any(|family| name.starts_with(family))
        })
        .flat_map(|line| [line, "\n"])
        .collect()
}

/// The CORS layer for the API's routes, or `None` when no origin is allowed (the default:
/// then no header is added and a browser on another origin cannot read an answer).
///
/// Simple GETs need no preflight; `Prefer` (the widget's fallback), `If-None-Match` and
/// `Last-Event-ID` (a reconnecting `EventSource`) do, and are allowed. The headers a page may
/// read are the ones the API documents. No credentials: the API has none.
pub fn cors(origins: &[String]) -> Option<CorsLayer> {
    let allow = match origins {
        [] => return None,
        [any] if any == "*" => AllowOrigin::any(),
        list => AllowOrigin::list(list.iter().map(|o| HeaderValue::from_str(o).expect("validated at load"))),
    };
    let header = HeaderName::from_static;
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::HEAD])
            .allow_headers([
                header("prefer"),
                header::IF_NONE_MATCH,
                header("last-event-id"),
                header("traceparent"),
                header("x-request-id"),
            ])
            .expose_headers([
                header("x-cache"),
                header("x-request-id"),
                header::RETRY_AFTER,
                header::ETAG,
                header::AGE,
                header::LOCATION,
                header("preference-applied"),
            ])
            .max_age(Duration::from_secs(600)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_page_names_every_file_by_its_version() {
        assert!(!DEMO_PAGE.contains("{{"), "every placeholder filled");
        for asset in ["price-compare.js", "demo.js", "demo.css", "favicon.svg"] {
            let asset = Asset::find(asset).unwrap();
            assert!(DEMO_PAGE.contains(&format!("\"{}\"", asset.versioned_path())), "{}", asset.name);
        }
    }

    #[test]
    fn versions_follow_the_bytes() {
        let versions: std::collections::HashSet<String> = ASSETS.iter().map(Asset::version).collect();
        assert_eq!(versions.len(), ASSETS.len());
        assert_eq!(ASSETS[0].version(), format!("{:016x}", xxhash_rust::xxh3::xxh3_64(ASSETS[0].bytes)));
    }
}
