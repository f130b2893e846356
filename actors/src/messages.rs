//! Messages the service publishes, wrapped in the platform's common envelope.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use uuid::Uuid;

use crate::domain::{Enforcement, Event, Id, ThrottleSummary};

mod body;
pub use body::{MessageStamp, enforcement_created_json, event_created_json};

/// Routing key of [`EventCreated`].
pub const EVENT_CREATED_KEY: &str = "event.created";
/// Routing key of [`EnforcementCreated`].
pub const ENFORCEMENT_CREATED_KEY: &str = "enforcement.created";
/// The header (of a request, and of the messages it causes) that carries a W3C trace
/// context.
pub const TRACEPARENT: &str = "traceparent";

/// Whether `value` has the shape of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`);
/// anything else is not passed on.
pub fn is_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    parts.len() >= 4
        && hex(parts[0], 2)
        && parts[0] != "ff"
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
        && value.len() <= 256
}

/// Version of the envelope format.
pub const ENVELOPE_VERSION: &str = "1.0";

/// The wrapper around every message on the bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<P = MessagePayload> {
    pub message_id: Uuid,
    pub correlation_id: Option<Uuid>,
    pub message_type: MessageType,
    pub version: String,
    pub timestamp: DateTime<Utc>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub payload: P,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageType {
    EventCreated,
    EnforcementCreated,
    ExecutionRequested,
    ExecutionStatusChanged,
    ExecutionCompleted,
    InquiryCreated,
    InquiryResponded,
    NotificationCreated,
}

impl MessageType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EventCreated => "EventCreated",
            Self::EnforcementCreated => "EnforcementCreated",
            Self::ExecutionRequested => "ExecutionRequested",
            Self::ExecutionStatusChanged => "ExecutionStatusChanged",
            Self::ExecutionCompleted => "ExecutionCompleted",
            Self::InquiryCreated => "InquiryCreated",
            Self::InquiryResponded => "InquiryResponded",
            Self::NotificationCreated => "NotificationCreated",
        }
    }
}

/// Every payload the platform defines. Serialized untagged: the envelope's
/// `message_type` says which one it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MessagePayload {
    EventCreated(EventCreated),
    EnforcementCreated(EnforcementCreated),
    ExecutionRequested(ExecutionRequested),
    ExecutionStatusChanged(ExecutionStatusChanged),
    ExecutionCompleted(ExecutionCompleted),
    InquiryCreated(InquiryCreated),
    InquiryResponded(InquiryResponded),
    NotificationCreated(NotificationCreated),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventCreated {
    pub event_id: Id,
    pub trigger_id: Option<Id>,
    pub trigger_ref: String,
    pub sensor_id: Option<Id>,
    pub sensor_ref: Option<String>,
    pub payload: Value,
    pub config: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnforcementCreated {
    pub enforcement_id: Id,
    pub rule_id: Id,
    pub rule_ref: String,
    pub event_id: Id,
    pub trigger_ref: String,
    pub payload: Value,
    /// The action to run, and its parameters rendered for this event.
    #[serde(default)]
    pub action_ref: String,
    #[serde(default)]
    pub action_params: Value,
    /// `created`, or `failed` when the parameters could not be rendered (see `error`).
    #[serde(default)]
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For a `once_after` rule: how many events matched in the window, the first and
    /// last of them, and the window (`event_id` is the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle: Option<ThrottleSummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionRequested {
    pub execution_id: Id,
    pub enforcement_id: Option<Id>,
    pub action_ref: String,
    pub parameters: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionStatusChanged {
    pub execution_id: Id,
    pub old_status: String,
    pub new_status: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionCompleted {
    pub execution_id: Id,
    pub status: String,
    pub result: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InquiryCreated {
    pub inquiry_id: Id,
    pub execution_id: Id,
    pub prompt: String,
    pub response_schema: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InquiryResponded {
    pub inquiry_id: Id,
    pub execution_id: Id,
    pub response: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotificationCreated {
    pub notification_id: Id,
    pub channel: String,
    pub entity_type: String,
    pub entity: String,
    pub activity: String,
    pub content: Value,
}

impl Envelope {
    pub fn new(message_type: MessageType, payload: MessagePayload) -> Self {
        Self {
            message_id: Uuid::new_v4(),
            correlation_id: None,
            message_type,
            version: ENVELOPE_VERSION.to_owned(),
            timestamp: Utc::now(),
            headers: BTreeMap::new(),
            payload,
        }
    }

    /// The `EventCreated` message announcing a stored event, under the event's own
    /// message id.
    pub fn event_created(event: &Event) -> Self {
        let mut envelope = Self::new(
            MessageType::EventCreated,
            MessagePayload::EventCreated(EventCreated {
                event_id: event.id,
                trigger_id: event.trigger,
                trigger_ref: event.trigger_ref.clone(),
                sensor_id: event.source,
                sensor_ref: event.source_ref.clone(),
                payload: event.payload.clone(),
                config: event.config.clone(),
            }),
        );
        if let Some(message_id) = event.message_id {
            envelope.message_id = message_id;
        }
        envelope.trace(&event.traceparent);
        envelope
    }

    /// Passes a W3C `traceparent` on, as the header of that name.
    fn trace(&mut self, traceparent: &Option<String>) {
        if let Some(traceparent) = traceparent {
            self.headers
                .insert(TRACEPARENT.to_owned(), traceparent.clone());
        }
    }

    /// The `EnforcementCreated` message announcing a stored enforcement. Its `event_id`
    /// header (and payload field) ties it to the event that caused it.
    pub fn enforcement_created(enforcement: &Enforcement) -> Self {
        let mut envelope = Self::new(
            MessageType::EnforcementCreated,
            MessagePayload::EnforcementCreated(EnforcementCreated {
                enforcement_id: enforcement.id,
                rule_id: enforcement.rule,
                rule_ref: enforcement.rule_ref.clone(),
                event_id: enforcement.event,
                trigger_ref: enforcement.trigger_ref.clone(),
                payload: enforcement.payload.clone(),
                action_ref: enforcement.action_ref.clone(),
                action_params: enforcement
                    .action_params
                    .clone()
                    .unwrap_or_else(|| Value::Object(Default::default())),
                status: enforcement.status.clone(),
                error: enforcement.error.clone(),
                throttle: enforcement.throttle.clone(),
            }),
        );
        envelope
            .headers
            .insert("event_id".to_owned(), enforcement.event.to_string());
        envelope.correlation_id = enforcement.correlation_id;
        envelope.trace(&enforcement.traceparent);
        envelope
    }

    pub fn routing_key(&self) -> &'static str {
        match self.message_type {
            MessageType::EventCreated => EVENT_CREATED_KEY,
            MessageType::EnforcementCreated => ENFORCEMENT_CREATED_KEY,
            MessageType::ExecutionRequested => "execution.requested",
            MessageType::ExecutionStatusChanged => "execution.status_changed",
            MessageType::ExecutionCompleted => "execution.completed",
            MessageType::InquiryCreated => "inquiry.created",
            MessageType::InquiryResponded => "inquiry.responded",
            MessageType::NotificationCreated => "notification.created",
        }
    }

    pub fn to_json(&self) -> String {
        // Serializing plain data with string keys cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_created_round_trips_with_its_fields() {
        let event = Event {
            id: 7,
            trigger: Some(3),
            trigger_ref: "core.tick".into(),
            config: serde_json::json!({"trigger": {"ref": "core.tick"}}),
            payload: serde_json::json!({"n": 1}),
            source: None,
            source_ref: None,
            created: Utc::now(),
            message_id: Some(Uuid::new_v4()),
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        };
        let envelope = Envelope::event_created(&event);
        assert_eq!(Some(envelope.message_id), event.message_id);
        assert_eq!(
            envelope.headers.get(TRACEPARENT),
            event.traceparent.as_ref()
        );
        assert!(is_traceparent(event.traceparent.as_deref().unwrap()));
        assert!(!is_traceparent("00-abc-def-01"));
        let json: Value = serde_json::from_str(&envelope.to_json()).expect("valid json");
        assert_eq!(json["message_type"], "EventCreated");
        assert_eq!(json["payload"]["event_id"], 7);
        assert_eq!(json["payload"]["sensor_ref"], Value::Null);
        assert_eq!(envelope.routing_key(), EVENT_CREATED_KEY);
    }
}
