//! The event pipeline's shared wiring: how sensors, the admin API and the pipeline actors
//! find each other even after one of them was restarted by the supervisor.

use ractor::ActorRef;
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use tokio::sync::oneshot;

use crate::domain::{Event, Id, NewEvent, Trigger, config_snapshot};
use crate::generator::GeneratorMsg;
use crate::matcher::MatcherMsg;
use crate::outbox::OutboxMsg;
use crate::ports::{Store, StoreError};
use crate::sync::{read, write};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("unknown trigger '{0}'")]
    UnknownTrigger(String),
    #[error("the event pipeline is not running")]
    NotRunning,
    /// The payload can never be stored, so it is refused before it can hold up others.
    #[error("payload refused: {0}")]
    InvalidPayload(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Refuses a payload the databases cannot store: PostgreSQL's `jsonb` has no room for the
/// NUL character (`\u0000`) in a string or a key. Checked where events enter, so one bad
/// payload is refused alone instead of failing, and retrying, a whole batch.
pub fn check_storable(payload: &Value) -> Result<(), PipelineError> {
    fn at(path: &str) -> &str {
        if path.is_empty() { "/" } else { path }
    }
    fn walk(value: &Value, path: &mut String) -> Result<(), String> {
        match value {
            Value::String(text) if text.contains('\0') => Err(format!(
                "the string at '{}' contains a NUL character (\\u0000)",
                at(path)
            )),
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("/{i}"));
                    walk(item, path)?;
                    path.truncate(len);
                }
                Ok(())
            }
            Value::Object(map) => {
                for (key, item) in map {
                    if key.contains('\0') {
                        return Err(format!(
                            "a key under '{}' contains a NUL character (\\u0000)",
                            at(path)
                        ));
                    }
                    let len = path.len();
                    path.push('/');
                    path.push_str(key);
                    walk(item, path)?;
                    path.truncate(len);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
    walk(payload, &mut String::new()).map_err(PipelineError::InvalidPayload)
}

/// What became of a submitted event once rules were matched.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MatchOutcome {
    pub event_id: Id,
    pub enforcement_ids: Vec<Id>,
}

/// How the submitter of an event wants to hear back.
#[derive(Debug)]
pub enum EventAck {
    None,
    /// As soon as the event row is committed.
    Stored(oneshot::Sender<Event>),
    /// Once its enforcements are committed too.
    Matched(oneshot::Sender<MatchOutcome>),
}

/// An event on its way into the database.
#[derive(Debug)]
pub struct EventRequest {
    pub event: NewEvent,
    pub ack: EventAck,
}

/// The current refs of the pipeline actors. The supervisor replaces a ref when it
/// restarts the actor, so holders never talk to a dead actor for long.
#[derive(Default)]
pub struct PipelineRefs {
    generator: RwLock<Option<ActorRef<GeneratorMsg>>>,
    matcher: RwLock<Option<ActorRef<MatcherMsg>>>,
    outbox: RwLock<Option<ActorRef<OutboxMsg>>>,
    /// Triggers that system events named, so a burst of them costs one lookup; cleared
    /// on every reconcile so edited triggers are picked up.
    triggers: RwLock<HashMap<String, Arc<Trigger>>>,
}

impl PipelineRefs {
    pub fn generator(&self) -> Option<ActorRef<GeneratorMsg>> {
        read(&self.generator).clone()
    }
    pub fn matcher(&self) -> Option<ActorRef<MatcherMsg>> {
        read(&self.matcher).clone()
    }
    pub fn outbox(&self) -> Option<ActorRef<OutboxMsg>> {
        read(&self.outbox).clone()
    }
    pub(crate) fn set_generator(&self, actor: Option<ActorRef<GeneratorMsg>>) {
        *write(&self.generator) = actor;
    }
    pub(crate) fn set_matcher(&self, actor: Option<ActorRef<MatcherMsg>>) {
        *write(&self.matcher) = actor;
    }
    pub(crate) fn set_outbox(&self, actor: Option<ActorRef<OutboxMsg>>) {
        *write(&self.outbox) = actor;
    }

    pub(crate) fn forget_triggers(&self) {
        write(&self.triggers).clear();
    }

    fn cached_trigger(&self, trigger_ref: &str) -> Option<Arc<Trigger>> {
        read(&self.triggers).get(trigger_ref).cloned()
    }

    fn cache_trigger(&self, trigger: Arc<Trigger>) {
        write(&self.triggers).insert(trigger.r#ref.clone(), trigger);
    }

    /// Hands an event to the generator.
    pub fn submit(&self, request: EventRequest) -> Result<(), PipelineError> {
        let generator = self.generator().ok_or(PipelineError::NotRunning)?;
        generator
            .send_message(GeneratorMsg::Generate(request))
            .map_err(|_| PipelineError::NotRunning)
    }

    /// Tells the outbox publisher that new rows are waiting.
    pub fn wake_outbox(&self) {
        if let Some(outbox) = self.outbox() {
            // A stopped publisher will find the rows on its next start.
            let _ = outbox.send_message(OutboxMsg::Wake);
        }
    }
}

/// Entry point for events that no sensor produced (the admin API's `POST /events`).
#[derive(Clone)]
pub struct SystemEvents {
    pub(crate) refs: Arc<PipelineRefs>,
    pub(crate) store: Arc<dyn Store>,
}

impl SystemEvents {
    /// Stores a system event for `trigger_ref`, matches it against the trigger's rules and
    /// returns the event id with the enforcements it produced.
    pub async fn emit(
        &self,
        trigger_ref: &str,
        payload: Value,
    ) -> Result<MatchOutcome, PipelineError> {
        check_storable(&payload)?;
        let trigger = match self.refs.cached_trigger(trigger_ref) {
            Some(trigger) => trigger,
            None => {
                let trigger = self
                    .store
                    .trigger_by_ref(trigger_ref)
                    .await?
                    .ok_or_else(|| PipelineError::UnknownTrigger(trigger_ref.to_owned()))?;
                let trigger = Arc::new(trigger);
                self.refs.cache_trigger(trigger.clone());
                trigger
            }
        };
        let (reply, outcome) = oneshot::channel();
        self.refs.submit(EventRequest {
            event: NewEvent {
                trigger: Some(trigger.id),
                trigger_ref: trigger.r#ref.clone(),
                config: config_snapshot(&trigger, None),
                payload,
                source: None,
                source_ref: None,
            },
            ack: EventAck::Matched(reply),
        })?;
        outcome.await.map_err(|_| PipelineError::NotRunning)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nul_characters_are_refused_with_where_they_are() {
        assert!(check_storable(&json!({"a": [1, "fine", {"b": null}]})).is_ok());
        let refused = |v: Value| match check_storable(&v) {
            Err(PipelineError::InvalidPayload(reason)) => reason,
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert!(refused(json!({"a": [1, "x\u{0}"]})).contains("'/a/1'"));
        assert!(refused(json!("\u{0}")).contains("'/'"));
        assert!(refused(json!({"k": {"bad\u{0}key": 1}})).contains("under '/k'"));
    }
}
