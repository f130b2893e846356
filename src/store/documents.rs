//! A new row's JSON documents, serialized once: the same text is bound as the row's column
//! and embedded in the row's message (`messages::event_created_json`), instead of being
//! cloned into an envelope and serialized again. Both backends' batch writers use it.

use attune_actors::domain::{Enforcement, Event, Id, NewEnforcement, NewEvent};
use attune_actors::messages::{
    ENFORCEMENT_CREATED_KEY, EVENT_CREATED_KEY, MessageStamp, MessageType,
    enforcement_created_json, event_created_json,
};
use attune_actors::ports::StoreError;
use chrono::{DateTime, Utc};
use serde_json::Value;
use serde_json::value::{RawValue, to_raw_value};

use super::OutboxDraft;

/// An event's payload and config as JSON text.
pub(crate) struct EventDocuments {
    pub payload: Box<RawValue>,
    pub config: Box<RawValue>,
}

impl EventDocuments {
    pub(crate) fn of(event: &NewEvent) -> Result<Self, StoreError> {
        Ok(Self {
            payload: raw(&event.payload)?,
            config: raw(&event.config)?,
        })
    }

    /// The `EventCreated` message of `event` (stored, with its message id), sent at `sent`.
    pub(crate) fn message(&self, event: &Event, sent: DateTime<Utc>) -> OutboxDraft {
        let message_id = event.message_id.unwrap_or_else(uuid::Uuid::new_v4);
        let stamp = MessageStamp {
            message_id,
            timestamp: sent,
        };
        OutboxDraft {
            message_id,
            message_type: MessageType::EventCreated.as_str(),
            routing_key: EVENT_CREATED_KEY,
            body: event_created_json(event, &self.payload, &self.config, stamp),
        }
    }
}

/// An enforcement's payload, action parameters and throttle summary as JSON text.
pub(crate) struct EnforcementDocuments {
    pub payload: Box<RawValue>,
    pub action_params: Option<Box<RawValue>>,
    pub summary: Option<Box<RawValue>>,
}

impl EnforcementDocuments {
    pub(crate) fn of(enforcement: &NewEnforcement) -> Result<Self, StoreError> {
        Ok(Self {
            payload: raw(&enforcement.payload)?,
            action_params: enforcement.action_params.as_ref().map(raw).transpose()?,
            summary: enforcement.summary.as_ref().map(raw).transpose()?,
        })
    }

    /// The `EnforcementCreated` message of `enforcement` (stored), sent at `sent`.
    pub(crate) fn message(&self, enforcement: &Enforcement, sent: DateTime<Utc>) -> OutboxDraft {
        let stamp = MessageStamp::new_at(sent);
        OutboxDraft {
            message_id: stamp.message_id,
            message_type: MessageType::EnforcementCreated.as_str(),
            routing_key: ENFORCEMENT_CREATED_KEY,
            body: enforcement_created_json(
                enforcement,
                &self.payload,
                self.action_params.as_deref(),
                stamp,
            ),
        }
    }

    pub(crate) fn action_params_text(&self) -> Option<&str> {
        self.action_params.as_deref().map(RawValue::get)
    }

    pub(crate) fn summary_text(&self) -> Option<&str> {
        self.summary.as_deref().map(RawValue::get)
    }
}

/// The conditions of the last rule seen, as text: one enforcement after another of the same
/// rule reuses it (compared first: a rule edited meanwhile is written afresh).
#[derive(Default)]
pub(crate) struct RuleConditions {
    last: Option<(Id, Value, String)>,
}

impl RuleConditions {
    pub(crate) fn text(&mut self, rule: Id, conditions: &Value) -> &str {
        let known = self
            .last
            .as_ref()
            .is_some_and(|(id, value, _)| *id == rule && value == conditions);
        if !known {
            self.last = Some((rule, conditions.clone(), conditions.to_string()));
        }
        self.last.as_ref().map_or("", |(_, _, text)| text.as_str())
    }
}

fn raw<T: serde::Serialize + ?Sized>(value: &T) -> Result<Box<RawValue>, StoreError> {
    to_raw_value(value).map_err(|e| StoreError::Invalid(format!("cannot encode a row: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use attune_actors::messages::Envelope;
    use serde_json::json;

    #[test]
    fn a_rules_conditions_are_written_once_and_again_when_they_change() {
        let mut cache = RuleConditions::default();
        let any = json!({"any": [{"field": "payload.x", "operator": "equals", "value": 1}]});
        let all = json!({"all": []});
        assert_eq!(cache.text(1, &any), any.to_string());
        assert_eq!(cache.text(1, &any), any.to_string());
        assert_eq!(cache.text(1, &all), all.to_string(), "the rule was edited");
        assert_eq!(cache.text(2, &any), any.to_string());
    }

    #[test]
    fn an_events_message_is_its_envelope_under_its_own_message_id() {
        let new = NewEvent {
            trigger: Some(1),
            trigger_ref: "core.tick".into(),
            config: json!({"trigger": {"ref": "core.tick"}}),
            payload: json!({"n": 1}),
            source: None,
            source_ref: None,
            idempotency_key: None,
            dedup_key: None,
            traceparent: None,
            lease: None,
        };
        let documents = EventDocuments::of(&new).expect("documents");
        let event = new.stored(5, Utc::now());
        let draft = documents.message(&event, Utc::now());
        assert_eq!(Some(draft.message_id), event.message_id);
        let mut envelope = Envelope::event_created(&event);
        let sent: serde_json::Value = serde_json::from_str(&draft.body).expect("json");
        envelope.timestamp = serde_json::from_value(sent["timestamp"].clone()).expect("time");
        assert_eq!(draft.body, envelope.to_json());
    }
}
