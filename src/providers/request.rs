//! How one source is asked: method, URL, headers and body, from its configured templates.
//!
//! `${NAME}` is read from the environment once, when the sources are built, so a missing
//! variable stops a consumer before it takes any work. The resolved values may be
//! credentials: they never reach `Debug` output, logs, failure details or metric labels
//! (header values are marked sensitive, and error details are built without the URL).
//! `{product_id}` is percent-encoded in the URL and JSON-escaped in the body; a variable's
//! value is inserted as it is (encode it yourself if it goes into a query string or JSON), and
//! never has `{product_id}` filled in.

use std::fmt;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::domain::ProductId;
use crate::settings::{HttpMethod, ProviderSettings, template};

/// Everything but RFC 3986's unreserved characters is escaped.
const NOT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// A source's configuration the process cannot run with. `provider` is its label,
/// `providers[1] (ebay)`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{provider}: {field} needs environment variable {variable}, which is not set")]
    Unset { provider: String, field: &'static str, variable: String },
    // The value is not shown: it may be a credential.
    #[error("{provider}: header {header} is not a valid header value once its variables are filled in")]
    HeaderValue { provider: String, header: String },
    /// A credential cannot be made from what is configured (an unreadable key file, a key
    /// that is not an RSA private key). The detail never holds the secret.
    #[error("{provider}: auth: {detail}")]
    Auth { provider: String, detail: String },
}

/// A source's request, with its variables resolved. URL and body are kept as the pieces
/// between their `{product_id}`s.
pub struct Request {
    method: reqwest::Method,
    url: Vec<String>,
    headers: HeaderMap,
    body: Option<Vec<String>>,
}

impl Request {
    /// Resolves the templates of `provider` (named `label` in errors) with `env` (the process
    /// environment in production).
    pub fn new(
        provider: &ProviderSettings,
        label: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let resolve = |field: &'static str, text: &str| resolve(label, field, text, env);
        let pieces = |field: &'static str, text: &str| -> Result<Vec<String>, ConfigError> {
            text.split("{product_id}").map(|piece| resolve(field, piece)).collect()
        };
        let mut headers = HeaderMap::new();
        for (name, value) in &provider.headers {
            let value = resolve("headers", value)?;
            let invalid = || ConfigError::HeaderValue { provider: label.to_owned(), header: name.clone() };
            let mut value = HeaderValue::from_str(&value).map_err(|_| invalid())?;
            value.set_sensitive(true);
            // Names were checked when the settings were loaded.
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid())?;
            headers.append(name, value);
        }
        Ok(Self {
            method: match provider.method {
                HttpMethod::Get => reqwest::Method::GET,
                HttpMethod::Post => reqwest::Method::POST,
            },
            url: pieces("url", &provider.url)?,
            headers,
            body: provider.body.as_deref().map(|b| pieces("body", b)).transpose()?,
        })
    }

    /// The request for `id`.
    pub fn build(&self, http: &reqwest::Client, id: &ProductId) -> reqwest::RequestBuilder {
        let url = self.url.join(&utf8_percent_encode(id.as_str(), NOT_UNRESERVED).to_string());
        let request = http.request(self.method.clone(), url).headers(self.headers.clone());
        match &self.body {
            Some(body) => {
                let escaped = serde_json::to_string(id.as_str()).expect("a string serializes");
                let request = request.body(body.join(&escaped[1..escaped.len() - 1]));
                if self.headers.contains_key(reqwest::header::CONTENT_TYPE) {
                    request
                } else {
                    request.header(reqwest::header::CONTENT_TYPE, "application/json")
                }
            }
            None => request,
        }
    }
}

/// `text` with its `${NAME}`s filled in from `env`; an unset one is a [`ConfigError::Unset`].
pub fn resolve(
    label: &str,
    field: &'static str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    template::expand(text, env).map_err(|unset| ConfigError::Unset {
        provider: label.to_owned(),
        field,
        variable: unset.0,
    })
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("url", &"<redacted>")
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("body", &self.body.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(url: &str) -> ProviderSettings {
        serde_json::from_value(serde_json::json!({"name": "p", "url": url})).unwrap()
    }

    fn env(name: &str) -> Option<String> {
        (name == "TOKEN").then(|| "s3cret".to_owned())
    }

    #[test]
    fn fills_in_variables_and_the_id_and_hides_secrets() {
        let mut p = provider("https://api.example.com/q?id={product_id}&key=${TOKEN}");
        p.method = HttpMethod::Post;
        p.body = Some(r#"{"ids": ["{product_id}"]}"#.into());
        p.headers.insert("Authorization".into(), "Bearer ${TOKEN}".into());
        let request = Request::new(&p, "providers[0] (p)", &env).unwrap();
        let built = request.build(&reqwest::Client::new(), &ProductId::parse("a.b_c-1").unwrap()).build().unwrap();
        assert_eq!(built.url().as_str(), "https://api.example.com/q?id=a.b_c-1&key=s3cret");
        assert_eq!(built.method(), reqwest::Method::POST);
        assert_eq!(built.headers()["authorization"], "Bearer s3cret");
        assert_eq!(built.body().unwrap().as_bytes().unwrap(), br#"{"ids": ["a.b_c-1"]}"#);
        let debug = format!("{request:?} {:?}", built.headers());
        assert!(!debug.contains("s3cret"), "{debug}");
    }

    #[test]
    fn a_variable_is_never_filled_with_the_id_and_a_configured_content_type_wins() {
        let mut p = provider("https://h/{product_id}?k=${TOKEN}");
        p.method = HttpMethod::Post;
        p.body = Some("{product_id}".into());
        p.headers.insert("Content-Type".into(), "text/plain".into());
        let odd = |_: &str| Some("x{product_id}y".to_owned());
        let built = Request::new(&p, "providers[0] (p)", &odd)
            .unwrap()
            .build(&reqwest::Client::new(), &id_of("p1"))
            .build()
            .unwrap();
        assert_eq!(built.url().as_str(), "https://h/p1?k=x{product_id}y");
        assert_eq!(built.headers().get_all("content-type").iter().collect::<Vec<_>>(), ["text/plain"]);
    }

    fn id_of(text: &str) -> ProductId {
        ProductId::parse(text).unwrap()
    }

    #[test]
    fn a_missing_variable_names_itself_and_the_provider() {
        let p = provider("https://api.example.com/{product_id}?key=${NOPE}");
        let err = Request::new(&p, "providers[0] (p)", &env).unwrap_err().to_string();
        assert_eq!(err, "providers[0] (p): url needs environment variable NOPE, which is not set");
    }
}
