//! The W3C trace context a request may carry (`traceparent`), kept with the event it
//! causes and passed on to that event's messages, so a downstream service can follow one
//! detection through the platform.

use attune_actors::messages::{TRACEPARENT, is_traceparent};
use axum::http::HeaderMap;

/// The request's `traceparent`, when it sent a well-formed one (anything else is dropped
/// rather than passed on).
pub fn traceparent(headers: &HeaderMap) -> Option<String> {
    headers
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_traceparent(v))
        .map(str::to_owned)
}
