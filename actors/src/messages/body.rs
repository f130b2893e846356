//! The JSON of an `EventCreated` or `EnforcementCreated` message, written straight from a
//! stored row and its JSON documents already serialized for the row.
//!
//! [`Envelope::event_created`](super::Envelope::event_created) clones the payload and the
//! config into a new envelope just to serialize them once more; a store writing thousands
//! of rows a second spent more on that than SQLite spent inserting them. These write the
//! same bytes (the tests compare them with [`Envelope::to_json`](super::Envelope::to_json))
//! from borrowed parts: the envelope's fields in its order, the headers in the order of
//! its `BTreeMap`, and the documents as [`RawValue`]s.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::value::RawValue;
use uuid::Uuid;

use super::{ENVELOPE_VERSION, MessageType};
use crate::domain::{Enforcement, Event, Id, ThrottleSummary};

/// When and under which id a message is sent.
#[derive(Debug, Clone, Copy)]
pub struct MessageStamp {
    pub message_id: Uuid,
    pub timestamp: DateTime<Utc>,
}

impl MessageStamp {
    /// A new message id, sent at `timestamp`.
    pub fn new_at(timestamp: DateTime<Utc>) -> Self {
        Self {
            message_id: Uuid::new_v4(),
            timestamp,
        }
    }
}

/// [`Envelope`](super::Envelope)'s fields, in its order, borrowed.
#[derive(Serialize)]
struct EnvelopeRef<'a, P> {
    message_id: Uuid,
    correlation_id: Option<Uuid>,
    message_type: MessageType,
    version: &'static str,
    timestamp: DateTime<Utc>,
    headers: Headers<'a>,
    payload: P,
}

/// The headers the two messages carry, in the key order of the envelope's `BTreeMap`.
#[derive(Serialize)]
struct Headers<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    event_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    traceparent: Option<&'a str>,
}

#[derive(Serialize)]
struct EventCreatedRef<'a> {
    event_id: Id,
    trigger_id: Option<Id>,
    trigger_ref: &'a str,
    sensor_id: Option<Id>,
    sensor_ref: Option<&'a str>,
    payload: &'a RawValue,
    config: &'a RawValue,
}

#[derive(Serialize)]
struct EnforcementCreatedRef<'a> {
    enforcement_id: Id,
    rule_id: Id,
    rule_ref: &'a str,
    event_id: Id,
    trigger_ref: &'a str,
    payload: &'a RawValue,
    action_ref: &'a str,
    action_params: &'a RawValue,
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    throttle: Option<&'a ThrottleSummary>,
}

/// The JSON of `Envelope::event_created(event)` sent as `stamp` (the event's own message
/// id, as that constructor takes it), from its payload and config serialized already.
pub fn event_created_json(
    event: &Event,
    payload: &RawValue,
    config: &RawValue,
    stamp: MessageStamp,
) -> String {
    to_json(&EnvelopeRef {
        message_id: stamp.message_id,
        correlation_id: None,
        message_type: MessageType::EventCreated,
        version: ENVELOPE_VERSION,
        timestamp: stamp.timestamp,
        headers: Headers {
            event_id: None,
            traceparent: event.traceparent.as_deref(),
        },
        payload: EventCreatedRef {
            event_id: event.id,
            trigger_id: event.trigger,
            trigger_ref: &event.trigger_ref,
            sensor_id: event.source,
            sensor_ref: event.source_ref.as_deref(),
            payload,
            config,
        },
    })
}

/// The JSON of `Envelope::enforcement_created(enforcement)` sent as `stamp`, from its
/// payload and action parameters serialized already (`None`: it has none, sent as `{}`).
pub fn enforcement_created_json(
    enforcement: &Enforcement,
    payload: &RawValue,
    action_params: Option<&RawValue>,
    stamp: MessageStamp,
) -> String {
    let event_id = enforcement.event.to_string();
    let no_params = empty_object();
    to_json(&EnvelopeRef {
        message_id: stamp.message_id,
        correlation_id: enforcement.correlation_id,
        message_type: MessageType::EnforcementCreated,
        version: ENVELOPE_VERSION,
        timestamp: stamp.timestamp,
        headers: Headers {
            event_id: Some(&event_id),
            traceparent: enforcement.traceparent.as_deref(),
        },
        payload: EnforcementCreatedRef {
            enforcement_id: enforcement.id,
            rule_id: enforcement.rule,
            rule_ref: &enforcement.rule_ref,
            event_id: enforcement.event,
            trigger_ref: &enforcement.trigger_ref,
            payload,
            action_ref: &enforcement.action_ref,
            action_params: action_params.unwrap_or(no_params),
            status: &enforcement.status,
            error: enforcement.error.as_deref(),
            throttle: enforcement.throttle.as_ref(),
        },
    })
}

fn empty_object() -> &'static RawValue {
    static EMPTY: std::sync::OnceLock<Box<RawValue>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(|| RawValue::from_string("{}".to_owned()).unwrap_or_default())
}

fn to_json(envelope: &impl Serialize) -> String {
    // Plain data with string keys and valid raw documents: serializing cannot fail.
    serde_json::to_string(envelope).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::super::Envelope;
    use super::*;
    use serde_json::json;
    use serde_json::value::to_raw_value;

    fn raw(value: &serde_json::Value) -> Box<RawValue> {
        to_raw_value(value).expect("raw")
    }

    fn event(traceparent: Option<&str>, source: bool) -> Event {
        Event {
            id: 41,
            trigger: Some(3),
            trigger_ref: "core.\"tick\"".into(),
            config: json!({"trigger": {"ref": "core.tick", "b": [1, 2.5, null]}, "a": "é\n"}),
            payload: json!({"z": 1, "a": {"nested": true}, "text": "quote \" and \\"}),
            source: source.then_some(9),
            source_ref: source.then(|| "core.timer".to_owned()),
            created: Utc::now(),
            message_id: Some(Uuid::new_v4()),
            traceparent: traceparent.map(str::to_owned),
        }
    }

    #[test]
    fn event_created_is_byte_for_byte_the_envelope() {
        let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        for (traceparent, source) in [(None, false), (Some(traceparent), true)] {
            let event = event(traceparent, source);
            let envelope = Envelope::event_created(&event);
            let stamp = MessageStamp {
                message_id: envelope.message_id,
                timestamp: envelope.timestamp,
            };
            let body = event_created_json(&event, &raw(&event.payload), &raw(&event.config), stamp);
            assert_eq!(body, envelope.to_json());
        }
    }

    #[test]
    fn enforcement_created_is_byte_for_byte_the_envelope() {
        let base = Enforcement {
            id: 7,
            rule: 2,
            rule_ref: "pack.rule".into(),
            trigger_ref: "core.tick".into(),
            event: 41,
            status: "created".into(),
            payload: json!({"b": [true], "a": "x"}),
            condition: "all".into(),
            conditions: json!([]),
            created: Utc::now(),
            correlation_id: None,
            traceparent: None,
            action_ref: "core.echo".into(),
            action_params: None,
            error: None,
            throttle: None,
        };
        let full = Enforcement {
            status: "failed".into(),
            correlation_id: Some(Uuid::new_v4()),
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            action_params: Some(json!({"message": "hi", "n": 1})),
            error: Some("template \"x\" failed".into()),
            throttle: Some(ThrottleSummary {
                mode: crate::domain::ThrottleMode::OnceAfter,
                group: json!({"host": "a"}),
                matched: 3,
                first_event: 40,
                last_event: 42,
                window_start: Utc::now(),
                window_end: Utc::now(),
            }),
            ..base.clone()
        };
        for enforcement in [base, full] {
            let envelope = Envelope::enforcement_created(&enforcement);
            let stamp = MessageStamp {
                message_id: envelope.message_id,
                timestamp: envelope.timestamp,
            };
            let params = enforcement.action_params.as_ref().map(raw);
            let body = enforcement_created_json(
                &enforcement,
                &raw(&enforcement.payload),
                params.as_deref(),
                stamp,
            );
            assert_eq!(body, envelope.to_json());
        }
    }
}
