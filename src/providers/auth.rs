//! Credentials that renew themselves: a bearer token per source (`[providers.auth]`), from an
//! OAuth 2.0 token endpoint by the client credentials grant (RFC 6749 §4.4, eBay's
//! application tokens) or by a service account's signed JWT (RFC 7523, Google's).
//!
//! - **One token per source per consumer,** shared by every call to that source.
//! - **Renewed ahead:** once three quarters of its life (`expires_in`) have passed, the next
//!   call starts a renewal in the background and goes on with the token it has. A token is
//!   used until shortly before it expires (a tenth of its life, at most 30 s, before).
//! - **One request at a time:** calls that need a token while none is valid all wait for the
//!   same renewal (one request to the token endpoint, in a task of its own, so a caller that
//!   gives up does not abort it). A renewal that failed is remembered for
//!   [`FAILURE_HOLD`]: an endpoint that is down costs at most one request per second.
//! - **A 401 from the source** drops the token it refused ([`Auth::refused`]), once for all
//!   the calls that used it; the call is retried once with a fresh one (`providers`).
//! - **Secrets stay secret:** the client secret, the signing key and tokens are held in
//!   `secrecy` types; a failure's detail names the token endpoint's status (and its OAuth
//!   `error` code), never a credential or the endpoint's body.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::request::{ConfigError, resolve};
use crate::settings::{AuthSettings, ClientAuth};

/// How long a failed renewal is the answer for every call, before another request is made.
pub const FAILURE_HOLD: Duration = Duration::from_secs(1);
/// The life assumed for a token whose endpoint gives no `expires_in`.
const DEFAULT_LIFE: Duration = Duration::from_secs(3600);
/// The longest life taken from `expires_in`: a token is renewed at least daily.
const MAX_LIFE: Duration = Duration::from_secs(86_400);
/// The longest a token is used before its stated expiry.
const MAX_EARLY: Duration = Duration::from_secs(30);
/// The largest token endpoint answer read.
const MAX_ANSWER: usize = 64 * 1024;
/// How long a signed assertion is valid (RFC 7523 asks for a short life; Google takes 1 h at most).
const ASSERTION_LIFE: Duration = Duration::from_secs(3600);
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Why no token could be had; the `auth_failed` failure's detail. Never holds a secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AuthError(pub String);

/// A bearer token and when to stop using it.
pub struct Token {
    value: SecretString,
    renew_at: Instant,
    expires: Instant,
}

impl Token {
    fn new(value: String, life: Duration, now: Instant) -> Self {
        let early = (life / 10).min(MAX_EARLY);
        Self { value: SecretString::from(value), renew_at: now + life * 3 / 4, expires: now + life - early }
    }

    /// The `Authorization` header value.
    pub fn header(&self) -> reqwest::header::HeaderValue {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", self.value.expose_secret()))
            .unwrap_or_else(|_| reqwest::header::HeaderValue::from_static("Bearer invalid"));
        value.set_sensitive(true);
        value
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token").field("value", &"<redacted>").field("expires", &self.expires).finish()
    }
}

type Renewal = Shared<BoxFuture<'static, Result<Arc<Token>, AuthError>>>;

#[derive(Default)]
struct State {
    token: Option<Arc<Token>>,
    renewal: Option<Renewal>,
    failed: Option<(Instant, AuthError)>,
}

/// How a token is asked for.
enum Grant {
    ClientCredentials {
        token_url: String,
        client_id: String,
        client_secret: SecretString,
        scope: Option<String>,
        client_auth: ClientAuth,
    },
    JwtBearer {
        token_url: String,
        client_email: String,
        key_id: Option<String>,
        key: Box<jsonwebtoken::EncodingKey>,
        scope: String,
    },
}

/// One source's credentials; see the module doc.
pub struct Auth {
    provider: String,
    grant: Grant,
    http: reqwest::Client,
    /// Bound on one request to the token endpoint.
    timeout: Duration,
    state: Mutex<State>,
}

/// A service account's JSON key, as Google issues them.
#[derive(Deserialize)]
struct ServiceAccount {
    client_email: String,
    private_key: SecretString,
    token_uri: String,
    #[serde(default)]
    private_key_id: Option<String>,
}

/// The token endpoint's answer (RFC 6749 §5.1); `expires_in` as a number or a string.
#[derive(Deserialize)]
struct Answer {
    access_token: SecretString,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

impl Auth {
    /// The credentials `settings` describe for `provider` (`label` in errors), with `${NAME}`
    /// from `env`; a service account's key file is read now.
    pub fn new(
        provider: &str,
        label: &str,
        settings: &AuthSettings,
        http: reqwest::Client,
        timeout: Duration,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Arc<Self>, ConfigError> {
        let invalid = |detail: String| ConfigError::Auth { provider: label.to_owned(), detail };
        let grant = match settings {
            AuthSettings::Oauth2ClientCredentials { token_url, client_id, client_secret, scope, client_auth } => {
                Grant::ClientCredentials {
                    token_url: resolve(label, "auth.token_url", token_url, env)?,
                    client_id: resolve(label, "auth.client_id", client_id, env)?,
                    client_secret: SecretString::from(resolve(
                        label,
                        "auth.client_secret",
                        client_secret.expose(),
                        env,
                    )?),
                    scope: scope.as_deref().map(|s| resolve(label, "auth.scope", s, env)).transpose()?,
                    client_auth: *client_auth,
                }
            }
            AuthSettings::JwtBearer { key_file, scope } => {
                let path = resolve(label, "auth.key_file", key_file, env)?;
                let text = std::fs::read(&path).map_err(|e| invalid(format!("cannot read key_file {path:?}: {e}")))?;
                let key: ServiceAccount = serde_json::from_slice(&text).map_err(|_| {
                    invalid(format!(
                        "key_file {path:?} is not a service account key (JSON with client_email, private_key, token_uri)"
                    ))
                })?;
                let signing = jsonwebtoken::EncodingKey::from_rsa_pem(key.private_key.expose_secret().as_bytes())
                    .map_err(|_| invalid(format!("the private_key in {path:?} is not an RSA private key in PEM")))?;
                let token_url = key.token_uri.clone();
                if !matches!(
                    reqwest::Url::parse(&token_url).map(|u| u.scheme().to_owned()).as_deref(),
                    Ok("http" | "https")
                ) {
                    return Err(invalid(format!("the token_uri in {path:?} is not an http or https URL")));
                }
                Grant::JwtBearer {
                    token_url,
                    client_email: key.client_email,
                    key_id: key.private_key_id,
                    key: Box::new(signing),
                    scope: scope.clone(),
                }
            }
        };
        Ok(Arc::new(Self { provider: provider.to_owned(), grant, http, timeout, state: Mutex::default() }))
    }

    /// A token to call with, waiting until `deadline` at most for a renewal when there is none.
    pub async fn token(self: &Arc<Self>, deadline: tokio::time::Instant) -> Result<Arc<Token>, AuthError> {
        let renewal = {
            let now = Instant::now();
            let mut state = self.state.lock().expect("auth lock");
            let failed_lately =
                state.failed.as_ref().filter(|(at, _)| now < *at + FAILURE_HOLD).map(|(_, e)| e.clone());
            if let Some(token) = state.token.clone().filter(|t| now < t.expires) {
                if now >= token.renew_at && state.renewal.is_none() && failed_lately.is_none() {
                    // Renewed ahead, in the background: this call goes on with the one it has.
                    drop(self.renewal(&mut state));
                }
                return Ok(token);
            }
            if let Some(error) = failed_lately {
                return Err(error);
            }
            self.renewal(&mut state)
        };
        match tokio::time::timeout_at(deadline, renewal).await {
            Ok(outcome) => outcome,
            Err(_) => Err(AuthError("no token from the token endpoint within the call's budget".into())),
        }
    }

    /// The source refused `token` (401): it is not used again (unless renewed meanwhile, when
    /// the next call gets the new one).
    pub fn refused(&self, token: &Arc<Token>) {
        let mut state = self.state.lock().expect("auth lock");
        if state.token.as_ref().is_some_and(|t| Arc::ptr_eq(t, token)) {
            state.token = None;
        }
    }

    /// The renewal in flight, or a new one.
    fn renewal(self: &Arc<Self>, state: &mut State) -> Renewal {
        if let Some(renewal) = &state.renewal {
            return renewal.clone();
        }
        let this = self.clone();
        let task = tokio::spawn(async move {
            let outcome = this.fetch().await;
            let mut state = this.state.lock().expect("auth lock");
            state.renewal = None;
            match &outcome {
                Ok(token) => {
                    state.token = Some(token.clone());
                    state.failed = None;
                }
                Err(error) => state.failed = Some((Instant::now(), error.clone())),
            }
            outcome
        });
        let renewal = task
            .map(|joined| joined.unwrap_or_else(|e| Err(AuthError(format!("the token renewal stopped: {e}")))))
            .boxed()
            .shared();
        state.renewal = Some(renewal.clone());
        renewal
    }

    /// One request to the token endpoint.
    async fn fetch(&self) -> Result<Arc<Token>, AuthError> {
        let started = Instant::now();
        let outcome = tokio::time::timeout(self.timeout, self.ask()).await.unwrap_or_else(|_| {
            Err(AuthError(format!("the token endpoint did not answer within {} ms", self.timeout.as_millis())))
        });
        let label = if outcome.is_ok() { "ok" } else { "failed" };
        metrics::counter!("pricefront_provider_token_renewals_total", "provider" => self.provider.clone(), "outcome" => label)
            .increment(1);
        match &outcome {
            Ok(token) => tracing::info!(
                provider = %self.provider,
                took_ms = started.elapsed().as_millis() as u64,
                valid_for_s = token.expires.saturating_duration_since(Instant::now()).as_secs(),
                "token renewed"
            ),
            Err(e) => tracing::warn!(provider = %self.provider, error = %e, "cannot renew the token"),
        }
        outcome
    }

    async fn ask(&self) -> Result<Arc<Token>, AuthError> {
        // Its life runs from when it was asked for: the answer's way back is part of it.
        let asked = Instant::now();
        let request = match &self.grant {
            Grant::ClientCredentials { token_url, client_id, client_secret, scope, client_auth } => {
                let mut form = vec![("grant_type", "client_credentials")];
                if let Some(scope) = scope {
                    form.push(("scope", scope));
                }
                let request = self.http.post(token_url);
                match client_auth {
                    ClientAuth::Basic => request.basic_auth(client_id, Some(client_secret.expose_secret())).form(&form),
                    ClientAuth::Post => {
                        form.push(("client_id", client_id));
                        form.push(("client_secret", client_secret.expose_secret()));
                        request.form(&form)
                    }
                }
            }
            Grant::JwtBearer { token_url, client_email, key_id, key, scope } => {
                let assertion = sign(client_email, key_id.clone(), key, scope, token_url)?;
                self.http.post(token_url).form(&[("grant_type", JWT_BEARER), ("assertion", assertion.expose_secret())])
            }
        };
        let mut response = request.send().await.map_err(|e| {
            let e = e.without_url();
            if e.is_timeout() {
                AuthError("the token endpoint did not answer in time".into())
            } else {
                AuthError(format!("cannot reach the token endpoint: {}", super::chain(&e)))
            }
        })?;
        let status = response.status();
        let mut body = Vec::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            if body.len() + chunk.len() > MAX_ANSWER {
                return Err(AuthError(format!("the token endpoint's answer is larger than {MAX_ANSWER} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            // RFC 6749 §5.2's `error` code says what is wrong without a secret; the rest of the
            // body is the endpoint's and is not repeated.
            let code = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error")?.as_str().map(str::to_owned))
                .filter(|c| c.len() <= 64 && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
            return Err(AuthError(match code {
                Some(code) => format!("the token endpoint answered {status} ({code})"),
                None => format!("the token endpoint answered {status}"),
            }));
        }
        let answer: Answer = serde_json::from_slice(&body)
            .map_err(|_| AuthError("the token endpoint's answer has no access_token".into()))?;
        let life = match answer.expires_in {
            Some(serde_json::Value::Number(n)) => n.as_u64(),
            Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        }
        .map_or(DEFAULT_LIFE, |secs| Duration::from_secs(secs).min(MAX_LIFE));
        if life.is_zero() {
            return Err(AuthError("the token endpoint gave a token that expires at once".into()));
        }
        Ok(Arc::new(Token::new(answer.access_token.expose_secret().to_owned(), life, asked)))
    }
}

/// An RS256 assertion for the JWT bearer grant (RFC 7523 §3).
fn sign(
    client_email: &str,
    key_id: Option<String>,
    key: &jsonwebtoken::EncodingKey,
    scope: &str,
    audience: &str,
) -> Result<SecretString, AuthError> {
    #[derive(serde::Serialize)]
    struct Claims<'a> {
        iss: &'a str,
        scope: &'a str,
        aud: &'a str,
        iat: u64,
        exp: u64,
    }
    let iat = jsonwebtoken::get_current_timestamp();
    let claims = Claims { iss: client_email, scope, aud: audience, iat, exp: iat + ASSERTION_LIFE.as_secs() };
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = key_id;
    jsonwebtoken::encode(&header, &claims, key)
        .map(SecretString::from)
        .map_err(|e| AuthError(format!("cannot sign the assertion: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_renewed_ahead_and_dropped_before_it_expires() {
        let now = Instant::now();
        let t = Token::new("x".into(), Duration::from_secs(7200), now);
        assert_eq!((t.renew_at - now, t.expires - now), (Duration::from_secs(5400), Duration::from_secs(7170)));
        let short = Token::new("x".into(), Duration::from_secs(2), now);
        assert_eq!(
            (short.renew_at - now, short.expires - now),
            (Duration::from_millis(1500), Duration::from_millis(1800))
        );
        let secret = Token::new("s3cret".into(), Duration::from_secs(60), now);
        assert!(!format!("{secret:?}").contains("s3cret"), "{secret:?}");
        assert!(secret.header().is_sensitive());
    }
}
