//! The admin HTTP API: liveness, readiness, the actor tree's status, sensor control,
//! system events and recent events/enforcements.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

use attune_actors::domain::{
    EventOrigin, IdempotencyKey, SensorAction, SensorCommand, sensor_lease,
};
use attune_actors::ports::{IntakeError, Publisher, Store, StoreError};

use crate::metrics::Metrics;
use attune_actors::supervisor::{ControlError, ControlReply};
use attune_actors::sync::lock;
use attune_actors::{SupervisorMsg, Tree};
use ractor::rpc::CallResult;

/// How long a request waits for the supervisor or the database before answering 503.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Below a second, so `/ready` answers within one while the database hangs.
const PROBE_TIMEOUT: Duration = Duration::from_millis(800);
const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 1000;

#[derive(Clone)]
pub struct AdminState {
    pub tree: Tree,
    pub store: Arc<dyn Store>,
    pub publisher: Arc<dyn Publisher>,
    pub token: Option<Arc<str>>,
    /// Connection URLs with passwords masked, shown in `/status`.
    pub database_url: String,
    pub mq_url: String,
    /// The outbox backlog as last counted, for a `/status` that must not wait on the
    /// database.
    pub last_backlog: Arc<LastBacklog>,
    /// How long `POST /events` waits for its event to be stored and matched
    /// (`pipeline.answer_timeout`).
    pub answer_timeout: Duration,
    /// How long an `Idempotency-Key` is remembered (`dedup.window`).
    pub dedup_window: Duration,
    pub metrics: Arc<Metrics>,
    /// `GET /metrics` without the token (`admin.metrics_public`), for a scraper.
    pub metrics_public: bool,
    /// What retention removed, for `/status`.
    pub retention: Arc<crate::retention::PruneStats>,
    /// What `packs.watch` reloaded or refused, for `/status`.
    pub pack_watch: Arc<crate::pack_watch::WatchStats>,
    /// This instance, for `/status` and `GET /cluster`.
    pub identity: Arc<crate::cluster::Identity>,
}

/// The header that makes `POST /events` idempotent.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The last outbox backlog and parked rows `/status` managed to count (`None` before the
/// first count).
#[derive(Debug, Default)]
pub struct LastBacklog(std::sync::Mutex<Option<(u64, u64)>>);

/// How long `/status` waits for the database to count the outbox backlog before it shows
/// the last count instead: the status must answer while the database hangs.
const BACKLOG_BUDGET: Duration = Duration::from_millis(50);

pub fn router(state: AdminState) -> Router {
    let protected = Router::new()
        .route("/ready", get(ready))
        .route("/status", get(status))
        .route("/sensors/{sensor_ref}/{action}", post(control_sensor))
        .route("/reload", post(reload))
        .route("/events", post(emit_event).get(recent_events))
        .route("/enforcements", get(recent_enforcements))
        .route("/throttles", get(throttle_windows))
        .route("/cluster", get(cluster));
    let (protected, public) = if state.metrics_public {
        (protected, Router::new().route("/metrics", get(metrics)))
    } else {
        (protected.route("/metrics", get(metrics)), Router::new())
    };
    let protected =
        protected.route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/", get(page))
        .route("/health", get(health))
        .merge(public)
        .merge(protected)
        // Every answer is JSON, so clients can always show the error text.
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such endpoint".into()) })
        .layer(middleware::map_response(crate::json_errors::as_json))
        .with_state(state)
}

/// An error response with a JSON body `{"error": ...}`.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

async fn require_token(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    if let Some(token) = &state.token {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !presented.is_some_and(|p| constant_time_eq(p.as_bytes(), token.as_bytes())) {
            return ApiError(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token".into(),
            )
            .into_response();
        }
    }
    next.run(request).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let body = state
        .metrics
        .render(
            &state.tree.status(),
            state.store.as_ref(),
            state.publisher.as_ref(),
        )
        .await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// The live status page: one file, embedded, with no build step and no CDN. It holds no
/// data itself; what it shows it fetches from the protected endpoints, with the token it
/// asks for.
const PAGE: &str = include_str!("admin_page.html");

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
            ),
        ],
        PAGE,
    )
        .into_response()
}

/// `GET /cluster`: the instances sharing the database and the leases.
async fn cluster(State(state): State<AdminState>) -> ApiResult {
    let view = crate::cluster::current(state.store.as_ref(), &state.identity)
        .await
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    Ok(Json(view).into_response())
}

async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn ready(State(state): State<AdminState>) -> Response {
    let database = match tokio::time::timeout(PROBE_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("no answer within 0.8 s".to_owned()),
    };
    let broker = if state.publisher.is_connected() {
        Ok(())
    } else {
        Err(state
            .tree
            .outbox_health
            .last_error()
            .unwrap_or_else(|| "not connected".to_owned()))
    };
    let describe = |r: &Result<(), String>| match r {
        Ok(()) => json!("ok"),
        Err(e) => json!(format!("down: {e}")),
    };
    let body = json!({
        "ready": database.is_ok() && broker.is_ok(),
        "database": describe(&database),
        "broker": describe(&broker),
    });
    let code = if database.is_ok() && broker.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

async fn status(State(state): State<AdminState>) -> ApiResult {
    let tree = state.tree.status();
    let count = async {
        let backlog = state.store.outbox_backlog().await?;
        let parked = state.store.parked_count().await?;
        Ok::<_, StoreError>((backlog, parked))
    };
    let counted = tokio::time::timeout(BACKLOG_BUDGET, count).await;
    let (last, backlog_current) = {
        let mut last = lock(&state.last_backlog.0);
        if let Ok(Ok(counts)) = counted {
            *last = Some(counts);
        }
        (*last, matches!(counted, Ok(Ok(_))))
    };
    let (backlog, parked) = (last.map(|c| c.0), last.map(|c| c.1));
    let rest = json!({
        "outbox": {
            "backlog": backlog,
            "backlog_current": backlog_current,
            "parked": parked,
            "bus": state.publisher.kind(),
            "connected": state.publisher.is_connected(),
            "publishing": !state
                .tree
                .outbox_health
                .standby
                .load(std::sync::atomic::Ordering::Relaxed),
            "last_error": state.tree.outbox_health.last_error(),
        },
        "retention": state.retention.snapshot(),
        "packs": state.pack_watch.snapshot(),
        "database": {"url": state.database_url},
        "mq": {"url": state.mq_url},
    });
    let identity = state.identity.clone();
    // Written straight to bytes, not through a `Value` per sensor (with 100,000 sensors
    // that tree was most of the answer's time), and off the async workers.
    let written = tokio::task::spawn_blocking(move || {
        serde_json::to_vec(&StatusBody {
            instance: &identity,
            sensors: &tree.sensors,
            pipeline: &tree.pipeline,
            throttled: &tree.throttled,
            rest,
        })
    })
    .await;
    let body = written
        .map_err(|error| error.to_string())
        .and_then(|serialized| serialized.map_err(|error| error.to_string()))
        .map_err(|error| {
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("status could not be written: {error}"),
            )
        })?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// The body of `GET /status`.
#[derive(serde::Serialize)]
struct StatusBody<'a> {
    instance: &'a crate::cluster::Identity,
    sensors: &'a [attune_actors::status::SensorStatus],
    pipeline: &'a [attune_actors::status::PipelineActorStatus],
    throttled: &'a std::collections::BTreeMap<String, u64>,
    /// The small parts: outbox, retention, packs, database, mq.
    #[serde(flatten)]
    rest: Value,
}

fn unavailable() -> ApiError {
    ApiError(
        StatusCode::SERVICE_UNAVAILABLE,
        "the supervisor did not answer".into(),
    )
}

async fn control_sensor(
    State(state): State<AdminState>,
    Path((sensor_ref, action)): Path<(String, String)>,
) -> ApiResult {
    let Some(action) = SensorAction::parse(&action) else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("unknown sensor action '{action}' (restart, stop, start)"),
        ));
    };
    let make: fn(String, ControlReply) -> SupervisorMsg = match action {
        SensorAction::Restart => SupervisorMsg::RestartSensor,
        SensorAction::Stop => SupervisorMsg::StopSensor,
        SensorAction::Start => SupervisorMsg::StartSensor,
    };
    let target = sensor_ref.clone();
    match state
        .tree
        .supervisor
        .call(move |reply| make(target, reply), Some(CALL_TIMEOUT))
        .await
    {
        Ok(CallResult::Success(Ok(()))) => Ok(Json(
            json!({"sensor_ref": sensor_ref, "action": action.as_str(), "ok": true}),
        )
        .into_response()),
        Ok(CallResult::Success(Err(ControlError::HeldElsewhere(_)))) => {
            forward(&state, sensor_ref, action).await
        }
        Ok(CallResult::Success(Err(error))) => Err(control_error(error)),
        _ => Err(unavailable()),
    }
}

/// Queues the command for the sensor's holder, which runs it at its next placement tick:
/// `202` naming the holder; `409` when no other live instance holds it now.
async fn forward(state: &AdminState, sensor_ref: String, action: SensorAction) -> ApiResult {
    let store_error =
        |error: StoreError| ApiError(StatusCode::SERVICE_UNAVAILABLE, error.to_string());
    let lease = sensor_lease(&sensor_ref);
    let now = chrono::Utc::now();
    let holder = state
        .store
        .leases()
        .await
        .map_err(store_error)?
        .into_iter()
        .find(|l| l.name == lease && l.expires > now && l.holder != state.identity.id)
        .map(|l| l.holder)
        .ok_or_else(|| {
            ApiError(
                StatusCode::CONFLICT,
                format!(
                    "sensor '{sensor_ref}' runs on no instance now: none holds its lease \
                     (between holders, or its placement labels match no live instance); \
                     retry once it is placed"
                ),
            )
        })?;
    let command = SensorCommand {
        sensor_ref: sensor_ref.clone(),
        action,
        sent_by: state.identity.id.clone(),
        created: now,
    };
    state
        .store
        .send_sensor_command(&command)
        .await
        .map_err(store_error)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "sensor_ref": sensor_ref,
            "action": action.as_str(),
            "ok": true,
            "forwarded_to": holder,
        })),
    )
        .into_response())
}

fn control_error(error: ControlError) -> ApiError {
    let code = match error {
        ControlError::UnknownSensor(_) => StatusCode::NOT_FOUND,
        ControlError::Disabled(_)
        | ControlError::SensorsDisabled
        | ControlError::HeldElsewhere(_) => StatusCode::CONFLICT,
        ControlError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    ApiError(code, error.to_string())
}

async fn reload(State(state): State<AdminState>) -> ApiResult {
    // The other instances reconcile at their next placement tick; this one at once.
    match state.store.request_reload().await {
        Ok(generation) => {
            let _ = state
                .tree
                .supervisor
                .send_message(SupervisorMsg::SawReload(generation));
        }
        Err(error) => {
            tracing::warn!(%error, "reloading here only: could not ask the other instances to");
        }
    }
    match state
        .tree
        .supervisor
        .call(
            |reply| SupervisorMsg::Reconcile(Some(reply)),
            Some(CALL_TIMEOUT),
        )
        .await
    {
        Ok(CallResult::Success(Ok(report))) => Ok(Json(report).into_response()),
        Ok(CallResult::Success(Err(error))) => Err(control_error(error)),
        _ => Err(unavailable()),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmitRequest {
    trigger_ref: String,
    #[serde(default)]
    payload: Value,
}

async fn emit_event(
    State(state): State<AdminState>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult {
    let bad_request = |reason: String| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!(
                "expected {{\"trigger_ref\": \"pack.trigger\", \"payload\": {{...}}}}: {reason}"
            ),
        )
    };
    // Parsed in two steps because serde would also accept a struct written as an array
    // (`["pack.trigger"]`), which is not the documented body.
    let body: Value = serde_json::from_slice(&body).map_err(|e| bad_request(e.to_string()))?;
    if !body.is_object() {
        return Err(bad_request("the body is not a JSON object".into()));
    }
    let request: EmitRequest =
        serde_json::from_value(body).map_err(|e| bad_request(e.to_string()))?;
    let payload = match request.payload {
        Value::Null => json!({}),
        other => other,
    };
    let origin = EventOrigin {
        idempotency_key: idempotency_key(&headers, state.dedup_window)?,
        traceparent: crate::trace::traceparent(&headers),
    };
    let emitted = tokio::time::timeout(
        state.answer_timeout,
        state
            .tree
            .system_events
            .emit_from(&request.trigger_ref, payload, origin),
    )
    .await;
    match &emitted {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => state.metrics.event_refused(Some(error)),
        Err(_) => state.metrics.event_refused(None),
    }
    match emitted {
        Ok(Ok(outcome)) if outcome.repeat => Ok((StatusCode::OK, Json(outcome)).into_response()),
        Ok(Ok(outcome)) => Ok((StatusCode::CREATED, Json(outcome)).into_response()),
        Ok(Err(IntakeError::UnknownTrigger(t))) => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("unknown trigger '{t}'"),
        )),
        Ok(Err(IntakeError::InvalidPayload(reason))) => {
            Err(ApiError(StatusCode::UNPROCESSABLE_ENTITY, reason))
        }
        Ok(Err(error @ IntakeError::Overloaded { .. })) => {
            Ok(crate::json_errors::retry_later(error.to_string()))
        }
        Ok(Err(error)) => Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, error.to_string())),
        Err(_) => Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the event was not stored and matched within {:.1} s (pipeline.answer_timeout; \
                 database unavailable?); it may still be stored later: retry with the same \
                 Idempotency-Key to store it once",
                state.answer_timeout.as_secs_f64()
            ),
        )),
    }
}

/// The request's `Idempotency-Key`, if it sent one, or why it is not usable.
fn idempotency_key(
    headers: &axum::http::HeaderMap,
    window: Duration,
) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let refused = |reason: String| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("header Idempotency-Key {reason}"),
        )
    };
    let value = value
        .to_str()
        .map_err(|_| refused("must be visible ASCII".to_owned()))?;
    IdempotencyKey::new("api", value, window)
        .map(Some)
        .map_err(refused)
}

#[derive(Debug, Deserialize)]
struct RecentQuery {
    trigger_ref: Option<String>,
    rule_ref: Option<String>,
    limit: Option<u32>,
}

impl RecentQuery {
    /// Unwraps the query string, answering a malformed one (`limit=many`) with a JSON
    /// error like every other refusal instead of axum's plain-text rejection.
    fn parse(query: Result<Query<Self>, QueryRejection>) -> Result<Self, ApiError> {
        query
            .map(|Query(query)| query)
            .map_err(|rejection| ApiError(StatusCode::BAD_REQUEST, rejection.body_text()))
    }

    fn limit(&self) -> Result<u32, ApiError> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            Some(n) => Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("limit must be between 1 and {MAX_LIMIT}, got {n}"),
            )),
        }
    }
}

async fn recent_events(
    State(state): State<AdminState>,
    query: Result<Query<RecentQuery>, QueryRejection>,
) -> ApiResult {
    let query = RecentQuery::parse(query)?;
    let limit = query.limit()?;
    let events = state
        .store
        .recent_events(query.trigger_ref.as_deref(), limit)
        .await
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    Ok(Json(events).into_response())
}

async fn recent_enforcements(
    State(state): State<AdminState>,
    query: Result<Query<RecentQuery>, QueryRejection>,
) -> ApiResult {
    let query = RecentQuery::parse(query)?;
    let limit = query.limit()?;
    let enforcements = state
        .store
        .recent_enforcements(query.rule_ref.as_deref(), limit)
        .await
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    Ok(Json(enforcements).into_response())
}

/// Most windows `GET /throttles` lists.
const THROTTLE_LIST_LIMIT: u32 = 1000;

/// The throttled rules' open windows, soonest to close first: per group, how many matches
/// it counted (the first included) and when it ends.
async fn throttle_windows(State(state): State<AdminState>) -> ApiResult {
    let windows = state
        .store
        .throttle_windows(THROTTLE_LIST_LIMIT)
        .await
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    Ok(Json(windows).into_response())
}
