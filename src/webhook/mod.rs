//! The webhook listener: one HTTP server on `webhook.bind` (apart from the admin API)
//! serving `POST /webhooks/{path}` for every running `webhook` sensor.
//!
//! A webhook sensor registers its path in the shared [`WebhookRegistry`] while it runs
//! and unregisters when it stops (its [`Registration`] is dropped). A request looks its
//! path up, is rate-limited, size-checked and authenticated by that sensor's settings,
//! and becomes an event through the sensor's [`DetectionSink`]; the answer is 202 with
//! the event id only once the event is stored.

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::Utc;
use hmac::{KeyInit, Mac};
use serde_json::{Map, Value, json};
use sha2::Sha256;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use subtle::ConstantTimeEq;

use attune_actors::pipeline::PipelineError;
use attune_actors::sensor::DetectionSink;

/// Headers that carry credentials: checked, never copied into the payload.
const SIGNATURE_HEADERS: [&str; 3] = [
    "x-hub-signature-256",
    "x-webhook-signature",
    "x-hub-signature",
];

/// Other credential headers a sender or a proxy may add; kept out of the payload (which
/// is stored and published) like `authorization`.
const CREDENTIAL_HEADERS: [&str; 4] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-gitlab-token",
];

/// How long a request waits for its event to be stored before answering 503.
const STORE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A secret read from the environment. Its `Debug` does not show it.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(value: impl Into<Vec<u8>>) -> Self {
        Self(value.into())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// What a request must prove; both checks apply when both are configured.
#[derive(Debug, Clone, Default)]
pub struct WebhookAuth {
    /// HMAC-SHA256 key of the `X-Hub-Signature-256: sha256=<hex>` body signature.
    pub hmac_secret: Option<Secret>,
    /// The expected `Authorization: Bearer <token>`.
    pub bearer_token: Option<Secret>,
}

/// One webhook sensor's endpoint.
pub struct WebhookRoute {
    pub sensor_ref: String,
    pub auth: WebhookAuth,
    pub max_body_bytes: usize,
    /// Bodies that are not JSON are refused with 415.
    pub require_json: bool,
    pub limiter: Option<TokenBucket>,
    pub sink: DetectionSink,
}

/// A token bucket: `rate` tokens a second, holding at most `capacity`.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    capacity: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// Allows bursts of up to one second's worth of requests (at least one).
    pub fn per_second(rate: f64) -> Self {
        let capacity = rate.max(1.0);
        Self {
            rate,
            capacity,
            state: Mutex::new((capacity, Instant::now())),
        }
    }

    /// Takes a token if there is one.
    pub fn try_take(&self) -> bool {
        let mut state = lock(&self.state);
        let (tokens, last) = *state;
        let now = Instant::now();
        let tokens =
            (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.capacity);
        if tokens >= 1.0 {
            *state = (tokens - 1.0, now);
            true
        } else {
            *state = (tokens, now);
            false
        }
    }
}

/// A lock that shrugs off poisoning: the guarded data stays consistent at every step.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("webhook path '{path}' is already served by sensor '{owner}'")]
pub struct PathTaken {
    pub path: String,
    pub owner: String,
}

/// The paths of the running webhook sensors.
#[derive(Default)]
pub struct WebhookRegistry {
    routes: Mutex<HashMap<String, (u64, Arc<WebhookRoute>)>>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for WebhookRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let paths: Vec<String> = lock(&self.routes).keys().cloned().collect();
        f.debug_struct("WebhookRegistry")
            .field("paths", &paths)
            .finish()
    }
}

impl WebhookRegistry {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Serves `path` for this route until the returned registration is dropped. A path
    /// held by another sensor is refused; one held by the same sensor (an instance still
    /// being torn down during a restart) is taken over.
    pub fn register(
        self: &Arc<Self>,
        path: &str,
        route: WebhookRoute,
    ) -> Result<Registration, PathTaken> {
        let mut routes = lock(&self.routes);
        if let Some((_, existing)) = routes.get(path)
            && existing.sensor_ref != route.sensor_ref
        {
            return Err(PathTaken {
                path: path.to_owned(),
                owner: existing.sensor_ref.clone(),
            });
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        routes.insert(path.to_owned(), (id, Arc::new(route)));
        Ok(Registration {
            registry: Arc::clone(self),
            path: path.to_owned(),
            id,
        })
    }

    fn route(&self, path: &str) -> Option<Arc<WebhookRoute>> {
        lock(&self.routes).get(path).map(|(_, r)| Arc::clone(r))
    }

    /// The registered paths, sorted.
    pub fn paths(&self) -> Vec<String> {
        let mut paths: Vec<String> = lock(&self.routes).keys().cloned().collect();
        paths.sort();
        paths
    }
}

/// A path served while this lives.
pub struct Registration {
    registry: Arc<WebhookRegistry>,
    path: String,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut routes = lock(&self.registry.routes);
        // A newer registration of the same sensor may have taken the path over.
        if routes.get(&self.path).is_some_and(|(id, _)| *id == self.id) {
            routes.remove(&self.path);
        }
    }
}

/// The listener's router. Serve it with `into_make_service_with_connect_info::<SocketAddr>`
/// so payloads carry the source address.
pub fn router(registry: Arc<WebhookRegistry>) -> Router {
    Router::new()
        .route("/webhooks/{*path}", post(receive))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such webhook endpoint") })
        // Each sensor has its own limit, applied in `receive`.
        .layer(DefaultBodyLimit::disable())
        .with_state(registry)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({"error": message.into()}))).into_response()
}

async fn receive(
    State(registry): State<Arc<WebhookRegistry>>,
    Path(path): Path<String>,
    request: Request,
) -> Response {
    let path = path.trim_matches('/');
    let Some(route) = registry.route(path) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no webhook sensor serves '{path}'"),
        );
    };
    let source_ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_string());
    let (parts, body) = request.into_parts();
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body exceeds {} bytes", route.max_body_bytes),
        )
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > route.max_body_bytes as u64) {
        return too_large();
    }
    let Ok(bytes) = axum::body::to_bytes(Body::new(body), route.max_body_bytes).await else {
        return too_large();
    };
    if let Err(reason) = authenticate(&route.auth, &parts.headers, &bytes) {
        // Debug, not info: anyone who can reach the port could otherwise flood the log.
        tracing::debug!(sensor = %route.sensor_ref, reason, "webhook request refused");
        return error(StatusCode::UNAUTHORIZED, reason);
    }
    // Counted after authentication, so unsigned junk cannot use up a sensor's allowance.
    if let Some(limiter) = &route.limiter
        && !limiter.try_take()
    {
        return error(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded");
    }
    let body = match parse_body(&parts.headers, &bytes, route.require_json) {
        Ok(body) => body,
        Err(reason) => return error(StatusCode::UNSUPPORTED_MEDIA_TYPE, reason),
    };
    let payload = json!({
        "body": body,
        "headers": visible_headers(&parts.headers),
        "query": parts.uri.query().map(form_map).unwrap_or_default(),
        "method": parts.method.as_str(),
        "source_ip": source_ip,
        "received_at": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    });
    match tokio::time::timeout(STORE_TIMEOUT, route.sink.emit(payload)).await {
        Ok(Ok(event)) => (
            StatusCode::ACCEPTED,
            axum::Json(json!({"event_id": event.id})),
        )
            .into_response(),
        Ok(Err(PipelineError::InvalidPayload(reason))) => {
            error(StatusCode::UNPROCESSABLE_ENTITY, reason)
        }
        Err(_) => {
            tracing::warn!(sensor = %route.sensor_ref, "webhook event not stored in time");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the event was not stored within 30 s (database unavailable?); it may still be stored later".to_owned(),
            )
        }
        Ok(Err(e)) => {
            tracing::warn!(sensor = %route.sensor_ref, error = %e, "webhook event not stored");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("event not stored: {e}"),
            )
        }
    }
}

/// Checks the configured signature and token. The reason names what was wrong, never a
/// secret.
pub fn authenticate(
    auth: &WebhookAuth,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), &'static str> {
    if let Some(secret) = &auth.hmac_secret {
        let signature = headers
            .get("x-hub-signature-256")
            .or_else(|| headers.get("x-webhook-signature"))
            .ok_or("missing signature (X-Hub-Signature-256: sha256=<hex>)")?;
        let hex_digest = signature
            .to_str()
            .ok()
            .and_then(|s| s.trim().strip_prefix("sha256="))
            .ok_or("malformed signature (expected sha256=<hex>)")?;
        let expected =
            hex::decode(hex_digest).map_err(|_| "malformed signature (expected sha256=<hex>)")?;
        let mut mac = hmac::Hmac::<Sha256>::new_from_slice(&secret.0)
            .map_err(|_| "signature secret unusable")?;
        mac.update(body);
        // `verify_slice` compares in constant time.
        mac.verify_slice(&expected)
            .map_err(|_| "signature does not match the body")?;
    }
    if let Some(token) = &auth.bearer_token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or("missing bearer token (Authorization: Bearer <token>)")?;
        if !bool::from(given.trim().as_bytes().ct_eq(&token.0)) {
            return Err("bearer token does not match");
        }
    }
    Ok(())
}

fn is_json_type(headers: &HeaderMap) -> bool {
    content_type(headers).is_some_and(|t| t == "application/json" || t.ends_with("+json"))
}

fn content_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
}

/// The body as JSON, else as a form (for a form content type), else as text; `null`
/// when empty. With `require_json`, anything but a JSON document is refused.
pub fn parse_body(headers: &HeaderMap, bytes: &[u8], require_json: bool) -> Result<Value, String> {
    if let Ok(value) = serde_json::from_slice::<Value>(bytes) {
        return Ok(value);
    }
    if require_json {
        return Err(if is_json_type(headers) {
            "the body is not valid JSON".to_owned()
        } else {
            "this webhook requires a JSON body".to_owned()
        });
    }
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    if content_type(headers).as_deref() == Some("application/x-www-form-urlencoded")
        && let Ok(text) = std::str::from_utf8(bytes)
    {
        return Ok(Value::Object(form_map(text)));
    }
    Ok(Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// `a=1&b=2` as `{a: "1", b: "2"}`; a repeated key keeps its last value.
fn form_map(text: &str) -> Map<String, Value> {
    url::form_urlencoded::parse(text.as_bytes())
        .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
        .collect()
}

/// Lower-cased headers (as `http` keeps them) without credentials; repeated headers are
/// joined with `, `.
fn visible_headers(headers: &HeaderMap) -> Map<String, Value> {
    let mut visible: Map<String, Value> = Map::new();
    for (name, value) in headers {
        let name = name.as_str();
        if CREDENTIAL_HEADERS.contains(&name) || SIGNATURE_HEADERS.contains(&name) {
            continue;
        }
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match visible.get_mut(name) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(&value);
            }
            _ => {
                visible.insert(name.to_owned(), Value::String(value));
            }
        }
    }
    visible
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn sign(secret: &[u8], body: &[u8]) -> String {
        let mut mac = hmac::Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn signatures_and_tokens() {
        let auth = WebhookAuth {
            hmac_secret: Some(Secret::new("s3cret")),
            bearer_token: None,
        };
        let body = br#"{"a":1}"#;
        let mut headers = HeaderMap::new();
        assert!(authenticate(&auth, &headers, body).is_err());
        headers.insert(
            "x-hub-signature-256",
            HeaderValue::from_str(&sign(b"s3cret", body)).unwrap(),
        );
        assert_eq!(authenticate(&auth, &headers, body), Ok(()));
        assert!(authenticate(&auth, &headers, b"{}").is_err());
        let mut alt = HeaderMap::new();
        alt.insert(
            "x-webhook-signature",
            HeaderValue::from_str(&sign(b"s3cret", body)).unwrap(),
        );
        assert_eq!(authenticate(&auth, &alt, body), Ok(()));
        alt.insert("x-webhook-signature", HeaderValue::from_static("sha256=zz"));
        assert!(authenticate(&auth, &alt, body).is_err());

        let auth = WebhookAuth {
            hmac_secret: None,
            bearer_token: Some(Secret::new("tok-value-9")),
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer tok-value-9"),
        );
        assert_eq!(authenticate(&auth, &headers, b""), Ok(()));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer tok-value-8"),
        );
        assert!(authenticate(&auth, &headers, b"").is_err());
        assert!(format!("{auth:?}").contains("***") && !format!("{auth:?}").contains("tok-value"));
    }

    #[test]
    fn bodies_parse_as_json_form_or_text() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            parse_body(&headers, br#"{"a":1}"#, false),
            Ok(json!({"a": 1}))
        );
        assert_eq!(
            parse_body(&headers, b"a=1&b=2", false),
            Ok(json!("a=1&b=2"))
        );
        assert_eq!(parse_body(&headers, b"", false), Ok(Value::Null));
        assert!(parse_body(&headers, b"hello", true).is_err());
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        assert_eq!(
            parse_body(&headers, b"a=1&b=x+y", false),
            Ok(json!({"a": "1", "b": "x y"}))
        );
    }

    #[test]
    fn token_bucket_refuses_past_its_burst() {
        let bucket = TokenBucket::per_second(2.0);
        assert!(bucket.try_take() && bucket.try_take());
        assert!(!bucket.try_take());
    }
}
