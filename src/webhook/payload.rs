//! What a webhook request becomes: its body as JSON, form or text, and the event payload
//! around it (headers, query, method, source address, arrival time).
//!
//! The payload is stored and published, so the headers that carry credentials never
//! enter it.

use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use chrono::Utc;
use serde_json::{Map, Value, json};

/// Headers that carry credentials: checked, never copied into the payload.
const SIGNATURE_HEADERS: [&str; 3] = [
    "x-hub-signature-256",
    "x-webhook-signature",
    "x-hub-signature",
];

/// Other credential headers a sender or a proxy may add; kept out of the payload (which
/// is stored and published) like `authorization`. A sensor's `drop_headers` adds to them.
pub const CREDENTIAL_HEADERS: [&str; 6] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
    "x-auth-token",
    "x-gitlab-token",
];

/// The event payload of a request whose body parsed as `body`; `drop_headers` (lower
/// case) are left out besides the credential and signature headers.
pub(super) fn request_payload(
    parts: &Parts,
    body: Value,
    source_ip: Option<String>,
    drop_headers: &[String],
) -> Value {
    json!({
        "body": body,
        "headers": visible_headers(&parts.headers, drop_headers),
        "query": parts.uri.query().map(form_map).unwrap_or_default(),
        "method": parts.method.as_str(),
        "source_ip": source_ip,
        "received_at": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    })
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
fn visible_headers(headers: &HeaderMap, drop_headers: &[String]) -> Map<String, Value> {
    let mut visible: Map<String, Value> = Map::new();
    for (name, value) in headers {
        let name = name.as_str();
        if CREDENTIAL_HEADERS.contains(&name)
            || SIGNATURE_HEADERS.contains(&name)
            || drop_headers.iter().any(|d| d == name)
        {
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
    use axum::http::{HeaderValue, Request};

    fn parts_of(request: axum::http::request::Builder) -> Parts {
        request.body(()).unwrap().into_parts().0
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
    fn credential_headers_stay_out_of_the_payload() {
        let parts = parts_of(
            Request::post("/webhooks/x")
                .header("Authorization", "Bearer t")
                .header("Proxy-Authorization", "Basic x")
                .header("Cookie", "session=1")
                .header("X-Gitlab-Token", "t")
                .header("X-Api-Key", "k")
                .header("X-Auth-Token", "t")
                .header("X-Internal-Secret", "s")
                .header("X-Hub-Signature-256", "sha256=00")
                .header("X-Webhook-Signature", "sha256=00")
                .header("X-Hub-Signature", "sha1=00")
                .header("X-GitHub-Event", "push")
                .header("accept", "a")
                .header("Accept", "b")
                .header("x-raw", HeaderValue::from_bytes(b"caf\xe9").unwrap()),
        );
        assert_eq!(
            Value::Object(visible_headers(
                &parts.headers,
                &["x-internal-secret".to_owned()]
            )),
            json!({"x-github-event": "push", "accept": "a, b", "x-raw": "caf\u{fffd}"})
        );
    }

    #[test]
    fn payload_carries_the_request_around_the_body() {
        let parts = parts_of(
            Request::put("/webhooks/x?a=1&b=x+y&a=2")
                .header("content-type", "application/json")
                .header("cookie", "c=1"),
        );
        let payload = request_payload(&parts, json!({"k": 1}), Some("10.0.0.7".to_owned()), &[]);
        let received_at = payload["received_at"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            chrono::DateTime::parse_from_rfc3339(&received_at).is_ok()
                && received_at.ends_with('Z')
                && received_at.len() == "2025-01-01T00:00:00.000Z".len(),
            "{received_at}"
        );
        assert_eq!(
            payload,
            json!({
                "body": {"k": 1},
                "headers": {"content-type": "application/json"},
                "query": {"a": "2", "b": "x y"},
                "method": "PUT",
                "source_ip": "10.0.0.7",
                "received_at": received_at,
            })
        );
        let bare = request_payload(
            &parts_of(Request::post("/webhooks/x")),
            Value::Null,
            None,
            &[],
        );
        assert_eq!(
            (&bare["query"], &bare["headers"], &bare["source_ip"]),
            (&json!({}), &json!({}), &Value::Null)
        );
    }
}
