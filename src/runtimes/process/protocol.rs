//! The line protocol between the service and a sensor process (docs/sensor-protocol.md).
//!
//! The service writes one JSON line to the process's stdin ([`start_message`]); the
//! process answers with one JSON object per stdout line ([`parse_line`]). Anything else on
//! stdout is a [`BadLine`]: counted and dropped, never fatal.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use attune_actors::domain::{Sensor, Trigger};

/// The longest stdout line accepted, without its newline. Longer lines are bad output.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// One valid stdout line.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputLine {
    /// An event of the sensor's trigger. `occurred_at`, when the line had one, is already
    /// copied into the payload.
    Payload(Value),
    /// The sensor's new state, saved once every event printed before it is stored.
    State(Value),
    Log {
        level: LogLevel,
        message: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

/// Why a stdout line was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadLine {
    #[error("line is longer than {MAX_LINE_BYTES} bytes ({0} bytes)")]
    TooLong(usize),
    #[error("line is not UTF-8")]
    NotUtf8,
    #[error("line is not JSON: {0}")]
    NotJson(String),
    #[error("{0}")]
    WrongShape(String),
}

/// What a line must look like, for error messages.
const SHAPES: &str =
    r#"expected {"payload": {...}}, {"state": {...}} or {"log": "...", "level": "info"}"#;

fn wrong_shape(detail: impl std::fmt::Display) -> BadLine {
    BadLine::WrongShape(format!("{detail}; {SHAPES}"))
}

/// Parses one stdout line (without its newline). Blank lines are `Ok(None)`: a stray
/// `print()` is not worth a warning.
pub fn parse_line(bytes: &[u8]) -> Result<Option<OutputLine>, BadLine> {
    if bytes.len() > MAX_LINE_BYTES {
        return Err(BadLine::TooLong(bytes.len()));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| BadLine::NotUtf8)?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    let value: Value = serde_json::from_str(text).map_err(|e| BadLine::NotJson(e.to_string()))?;
    let Value::Object(mut object) = value else {
        return Err(wrong_shape("line is not a JSON object"));
    };
    let line = if let Some(payload) = object.remove("payload") {
        let Value::Object(mut payload) = payload else {
            return Err(wrong_shape("\"payload\" must be an object"));
        };
        if let Some(occurred_at) = object.remove("occurred_at") {
            payload.insert("occurred_at".to_owned(), normalize_time(&occurred_at)?);
        }
        OutputLine::Payload(Value::Object(payload))
    } else if let Some(state) = object.remove("state") {
        if !state.is_object() {
            return Err(wrong_shape("\"state\" must be an object"));
        }
        OutputLine::State(state)
    } else if let Some(message) = object.remove("log") {
        let Value::String(message) = message else {
            return Err(wrong_shape("\"log\" must be a string"));
        };
        let level = match object.remove("level") {
            None => LogLevel::Info,
            Some(Value::String(level)) => match level.as_str() {
                "debug" => LogLevel::Debug,
                "info" => LogLevel::Info,
                "warn" | "warning" => LogLevel::Warn,
                "error" => LogLevel::Error,
                other => {
                    return Err(wrong_shape(format!(
                        "unknown log level '{other}' (debug, info, warn, error)"
                    )));
                }
            },
            Some(other) => {
                return Err(wrong_shape(format!(
                    "\"level\" must be a string, got {other}"
                )));
            }
        };
        OutputLine::Log { level, message }
    } else {
        return Err(wrong_shape("no \"payload\", \"state\" or \"log\" key"));
    };
    // A key the protocol does not know is most likely a typo that would silently lose data.
    if let Some(key) = object.keys().next() {
        return Err(wrong_shape(format!("unexpected key \"{key}\"")));
    }
    Ok(Some(line))
}

fn normalize_time(value: &Value) -> Result<Value, BadLine> {
    value
        .as_str()
        .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
        .map(|time| {
            Value::String(
                time.with_timezone(&Utc)
                    .to_rfc3339_opts(SecondsFormat::AutoSi, true),
            )
        })
        .ok_or_else(|| {
            wrong_shape(format!(
                "\"occurred_at\" must be an RFC 3339 time like 2025-01-01T12:00:00Z, got {value}"
            ))
        })
}

/// The line written to the process's stdin when it starts.
pub fn start_message(
    sensor: &Sensor,
    trigger: &Trigger,
    mode: &str,
    poll_interval_secs: u64,
    state: Option<Value>,
) -> Value {
    json!({
        "sensor": {
            "ref": sensor.r#ref,
            "label": sensor.label,
            "pack": sensor.pack_ref,
            "mode": mode,
            "poll_interval": poll_interval_secs,
        },
        "trigger": {
            "ref": trigger.r#ref,
            "label": trigger.label,
        },
        "config": sensor.config,
        "state": state.unwrap_or(Value::Null),
    })
}

#[cfg(test)]
fn object(value: Value) -> serde_json::Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Option<OutputLine>, BadLine> {
        parse_line(text.as_bytes())
    }

    #[test]
    fn the_three_shapes_parse() {
        assert_eq!(
            parse(r#"{"payload": {"a": 1}}"#),
            Ok(Some(OutputLine::Payload(json!({"a": 1}))))
        );
        assert_eq!(
            parse(r#"{"state": {"seen": [1]}}"#),
            Ok(Some(OutputLine::State(json!({"seen": [1]}))))
        );
        assert_eq!(
            parse(r#"{"log": "hi", "level": "warning"}"#),
            Ok(Some(OutputLine::Log {
                level: LogLevel::Warn,
                message: "hi".into()
            }))
        );
        assert_eq!(
            parse(r#"{"log": "hi"}"#),
            Ok(Some(OutputLine::Log {
                level: LogLevel::Info,
                message: "hi".into()
            }))
        );
        assert_eq!(parse("   "), Ok(None));
    }

    #[test]
    fn occurred_at_is_normalized_into_the_payload() {
        let Ok(Some(OutputLine::Payload(payload))) =
            parse(r#"{"payload": {"a": 1}, "occurred_at": "2025-01-01T13:00:00+01:00"}"#)
        else {
            panic!("payload line");
        };
        assert_eq!(
            object(payload).get("occurred_at"),
            Some(&json!("2025-01-01T12:00:00Z"))
        );
        assert!(matches!(
            parse(r#"{"payload": {}, "occurred_at": "yesterday"}"#),
            Err(BadLine::WrongShape(m)) if m.contains("occurred_at")
        ));
    }

    #[test]
    fn bad_lines_say_why() {
        assert!(matches!(parse("hello"), Err(BadLine::NotJson(_))));
        assert!(matches!(parse("[1]"), Err(BadLine::WrongShape(_))));
        assert!(
            matches!(parse(r#"{"payload": 3}"#), Err(BadLine::WrongShape(m)) if m.contains("payload"))
        );
        assert!(
            matches!(parse(r#"{"state": "x"}"#), Err(BadLine::WrongShape(m)) if m.contains("state"))
        );
        assert!(matches!(
            parse(r#"{"event": {}}"#),
            Err(BadLine::WrongShape(_))
        ));
        assert!(matches!(
            parse(r#"{"payload": {}, "paylod": {}}"#),
            Err(BadLine::WrongShape(m)) if m.contains("paylod")
        ));
        assert!(matches!(
            parse(r#"{"log": "x", "level": "loud"}"#),
            Err(BadLine::WrongShape(m)) if m.contains("loud")
        ));
        assert_eq!(parse_line(&[0xff, 0xfe]), Err(BadLine::NotUtf8));
        let long = vec![b' '; MAX_LINE_BYTES + 1];
        assert_eq!(parse_line(&long), Err(BadLine::TooLong(MAX_LINE_BYTES + 1)));
    }
}
