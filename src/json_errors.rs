//! Every error answer of the HTTP listeners as JSON `{"error": …}`, also the ones the
//! framework writes itself (405 for a wrong method, 413 for a body over the limit, the
//! extractors' 400/415/422), which are plain text otherwise. Clients then always have one
//! shape to show.

use axum::body::{Body, to_bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Framework error bodies are one short line; anything longer is cut.
const MAX_TEXT: usize = 4096;

/// A `map_response` layer function: turns an error answer that is not JSON into one.
pub async fn as_json(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = match to_bytes(body, MAX_TEXT).await {
        Ok(bytes) if !bytes.is_empty() => String::from_utf8_lossy(&bytes).trim().to_owned(),
        _ => default_text(status),
    };
    let body = json!({ "error": text }).to_string();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body)).into_response()
}

/// 503 with `Retry-After: 1`, for a refusal that a retry in a moment can get past (the
/// pipeline is full).
pub fn retry_later(message: String) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "1")],
        axum::Json(json!({ "error": message })),
    )
        .into_response()
}

fn default_text(status: StatusCode) -> String {
    status
        .canonical_reason()
        .map(|reason| reason.to_ascii_lowercase())
        .unwrap_or_else(|| format!("HTTP {}", status.as_u16()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::extract::DefaultBodyLimit;
    use axum::routing::post;
    use tower::ServiceExt;

    async fn answer(app: Router, request: axum::http::Request<Body>) -> (StatusCode, String) {
        let response = app.oneshot(request).await.expect("answer");
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert_eq!(content_type, "application/json", "{status}");
        let bytes = to_bytes(response.into_body(), MAX_TEXT)
            .await
            .expect("body");
        let value: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
        (
            status,
            value["error"].as_str().expect("error text").to_owned(),
        )
    }

    fn app() -> Router {
        Router::new()
            .route("/echo", post(|body: String| async move { body }))
            .layer(DefaultBodyLimit::max(8))
            .layer(axum::middleware::map_response(as_json))
    }

    #[tokio::test]
    async fn framework_errors_become_json_and_success_is_left_alone() {
        let request = |method: &str, body: &str| {
            axum::http::Request::builder()
                .method(method)
                .uri("/echo")
                .body(Body::from(body.to_owned()))
                .expect("request")
        };
        let (status, text) = answer(app(), request("GET", "")).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(text, "method not allowed");
        let (status, text) = answer(app(), request("POST", "far more than eight bytes")).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(text.contains("length limit"), "{text}");

        let ok = app().oneshot(request("POST", "hi")).await.expect("answer");
        assert_eq!(ok.status(), StatusCode::OK);
        let bytes = to_bytes(ok.into_body(), MAX_TEXT).await.expect("body");
        assert_eq!(&bytes[..], b"hi");
    }
}
