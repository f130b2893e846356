//! The HTTP side of the webhook listener: the router and the handler that turns a
//! request into an event, checking it in a fixed order (route, size, authentication,
//! rate limit, body) and answering each refusal with its own status code.

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;

use attune_actors::domain::{EventOrigin, EventWrite, IdempotencyKey};
use attune_actors::ports::IntakeError;

use super::payload::{parse_body, request_payload};
use super::{WebhookRegistry, WebhookRoute, authenticate};

/// The listener's router. Serve it with `into_make_service_with_connect_info::<SocketAddr>`
/// so payloads carry the source address.
pub fn router(registry: Arc<WebhookRegistry>) -> Router {
    Router::new()
        .route("/webhooks/{*path}", post(receive))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such webhook endpoint") })
        // Each sensor has its own limit, applied in `receive`.
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::map_response(crate::json_errors::as_json))
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
        // Not counted: requests to paths nobody serves have no sensor, and counting them
        // by path would let any client create series.
        return error(
            StatusCode::NOT_FOUND,
            format!("no webhook sensor serves '{path}'"),
        );
    };
    let response = answer(&registry, &route, request).await;
    registry
        .metrics
        .webhook_request(&route.sensor_ref, response.status().as_u16());
    response
}

async fn answer(registry: &WebhookRegistry, route: &WebhookRoute, request: Request) -> Response {
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
    let key = match delivery_key(route, &parts.headers) {
        Ok(key) => key,
        Err(reason) => return error(StatusCode::BAD_REQUEST, reason),
    };
    let payload = request_payload(&parts, body, source_ip, &route.drop_headers);
    let origin = EventOrigin {
        idempotency_key: key,
        traceparent: crate::trace::traceparent(&parts.headers),
    };
    let emitted =
        tokio::time::timeout(route.answer_timeout, route.sink.try_emit(payload, origin)).await;
    match &emitted {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => registry.metrics.event_refused(Some(error)),
        Err(_) => registry.metrics.event_refused(None),
    }
    match emitted {
        Ok(Ok(EventWrite::Stored(event))) => (
            StatusCode::ACCEPTED,
            axum::Json(json!({"event_id": event.id})),
        )
            .into_response(),
        Ok(Ok(EventWrite::Repeat(first))) => (
            StatusCode::OK,
            axum::Json(json!({"event_id": first.id, "repeat": true})),
        )
            .into_response(),
        Ok(Err(IntakeError::InvalidPayload(reason))) => {
            error(StatusCode::UNPROCESSABLE_ENTITY, reason)
        }
        Ok(Err(overloaded @ IntakeError::Overloaded { .. })) => {
            crate::json_errors::retry_later(overloaded.to_string())
        }
        Err(_) => {
            tracing::warn!(sensor = %route.sensor_ref, "webhook event not stored in time");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the event was not stored within {:.1} s (pipeline.answer_timeout; database unavailable?); it may still be stored later",
                    route.answer_timeout.as_secs_f64()
                ),
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

/// The idempotency key of a delivery: the value of the route's `dedup_header`, when it
/// has one and the request carries it.
fn delivery_key(
    route: &WebhookRoute,
    headers: &HeaderMap,
) -> Result<Option<IdempotencyKey>, String> {
    let Some(dedup) = &route.dedup else {
        return Ok(None);
    };
    let Some(value) = headers.get(dedup.header.as_str()) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| format!("header {} must be visible ASCII", dedup.header))?;
    let scope = format!("webhook:{}", route.sensor_ref);
    IdempotencyKey::new(&scope, value, dedup.window)
        .map(Some)
        .map_err(|reason| format!("header {} {reason}", dedup.header))
}
