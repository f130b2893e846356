//! The event intake protocol: how a detection asks to become a stored event, and how its
//! submitter hears back.
//!
//! Sensors and the admin API submit an [`EventRequest`] to an [`EventIntake`] (the live
//! event generator, in the running tree) and wait on its [`EventAck`]. The protocol lives
//! here, below the actors, so that a sensor knows only where events go, not which actor
//! takes them.

use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::domain::{EventWrite, Id, NewEvent, Trigger};
use crate::ports::StoreError;

/// Checks payloads against their trigger's `payload_schema` (the adapter compiles the
/// schemas; the core only asks).
pub trait PayloadSchemas: Send + Sync + 'static {
    /// `Err` says where the payload fails the schema (a JSON pointer) and why.
    fn check(&self, trigger: &Trigger, payload: &Value) -> Result<(), String>;
}

/// Accepts every payload.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoSchemas;

impl PayloadSchemas for NoSchemas {
    fn check(&self, _trigger: &Trigger, _payload: &Value) -> Result<(), String> {
        Ok(())
    }
}

/// Where events are submitted: in the running tree, the current event generator.
pub trait EventIntake: Send + Sync + 'static {
    /// Hands an event over; fails at once when nothing takes events (the generator is
    /// down or the service is stopping), so the caller can answer instead of waiting.
    fn submit(&self, request: EventRequest) -> Result<(), IntakeError>;

    /// Room for the events waiting to be stored (`pipeline.max_pending`).
    fn admission(&self) -> &Admission;

    /// Refuses a payload its trigger's schema does not accept, before it takes any room.
    fn check_payload(&self, _trigger: &Trigger, _payload: &Value) -> Result<(), IntakeError> {
        Ok(())
    }
}

/// Bounds the events that wait in memory to be stored: each carries a permit from here
/// until its row is committed (or it is given up on). A caller that can answer "later"
/// (an HTTP client) is refused at once when none is left; a sensor waits for one, which
/// slows it down instead of buffering what it detects.
#[derive(Debug, Clone)]
pub struct Admission {
    permits: Arc<Semaphore>,
    max_pending: usize,
}

impl Admission {
    pub fn new(max_pending: usize) -> Self {
        let max_pending = max_pending.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            permits: Arc::new(Semaphore::new(max_pending)),
            max_pending,
        }
    }

    /// A permit now, or [`IntakeError::Overloaded`].
    pub fn try_admit(&self) -> Result<Permit, IntakeError> {
        self.permits
            .clone()
            .try_acquire_owned()
            .map(Permit)
            .map_err(|_| IntakeError::Overloaded {
                max_pending: self.max_pending,
            })
    }

    /// A permit once one is free (back-pressure).
    pub async fn admit(&self) -> Result<Permit, IntakeError> {
        self.permits
            .clone()
            .acquire_owned()
            .await
            .map(Permit)
            .map_err(|_| IntakeError::NotRunning)
    }

    /// How many events wait to be stored now.
    pub fn pending(&self) -> usize {
        self.max_pending - self.permits.available_permits()
    }

    pub fn max_pending(&self) -> usize {
        self.max_pending
    }
}

/// One event's room in [`Admission`], given back when it is dropped (with its request).
#[derive(Debug)]
pub struct Permit(#[allow(dead_code)] OwnedSemaphorePermit);

#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("unknown trigger '{0}'")]
    UnknownTrigger(String),
    #[error("the event pipeline is not running")]
    NotRunning,
    /// The payload can never be stored, so it is refused before it can hold up others.
    #[error("payload refused: {0}")]
    InvalidPayload(String),
    /// `pipeline.max_pending` events already wait to be stored; try again shortly.
    #[error("{max_pending} events already wait to be stored (pipeline.max_pending); retry later")]
    Overloaded { max_pending: usize },
    /// The sensor lost its lease to another instance; its event was not stored.
    #[error("not stored: this instance no longer holds lease '{lease}' (generation {generation})")]
    Fenced { lease: String, generation: i64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Refuses a payload the databases cannot store: PostgreSQL's `jsonb` has no room for the
/// NUL character (`\u0000`) in a string or a key. Checked where events enter, so one bad
/// payload is refused alone instead of failing, and retrying, a whole batch.
pub fn check_storable(payload: &Value) -> Result<(), IntakeError> {
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
    walk(payload, &mut String::new()).map_err(IntakeError::InvalidPayload)
}

/// About how many bytes `value` takes as JSON, a little more rather than less (numbers
/// count 8), without serializing it: what bounds a batch in `pipeline.max_batch_bytes`.
pub fn json_size(value: &Value) -> usize {
    match value {
        Value::Null => 4,
        Value::Bool(_) => 5,
        Value::Number(_) => 8,
        Value::String(text) => text.len() + 2,
        Value::Array(items) => items.iter().map(|item| json_size(item) + 1).sum::<usize>() + 2,
        Value::Object(map) => {
            map.iter()
                .map(|(key, item)| key.len() + 4 + json_size(item))
                .sum::<usize>()
                + 2
        }
    }
}

/// What became of a submitted event once rules were matched.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MatchOutcome {
    pub event_id: Id,
    pub enforcement_ids: Vec<Id>,
    /// True when the event's idempotency key was a repeat: nothing new was stored, and
    /// `event_id` is the first request's event (`enforcement_ids` is then empty).
    pub repeat: bool,
}

/// How the submitter of an event wants to hear back.
#[derive(Debug)]
pub enum EventAck {
    None,
    /// As soon as the event row is committed (or the database refused it for good).
    Stored(oneshot::Sender<Result<EventWrite, IntakeError>>),
    /// Once its enforcements are committed too (or the event was refused).
    Matched(oneshot::Sender<Result<MatchOutcome, IntakeError>>),
}

impl EventAck {
    /// Tells the submitter its event will not be stored, whichever answer it waits for.
    pub fn refuse(self, error: IntakeError) {
        match self {
            EventAck::None => {}
            EventAck::Stored(reply) => {
                let _ = reply.send(Err(error));
            }
            EventAck::Matched(reply) => {
                let _ = reply.send(Err(error));
            }
        }
    }
}

/// An event on its way into the database.
#[derive(Debug)]
pub struct EventRequest {
    pub event: NewEvent,
    pub ack: EventAck,
    /// Its room among the events waiting to be stored, held until it is written.
    pub permit: Permit,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_size_is_close_to_the_serialized_length() {
        let value = json!({"name": "build-01", "tags": ["a", "bc"], "n": 12, "ok": true});
        let exact = value.to_string().len();
        let estimate = json_size(&value);
        assert!(
            exact <= estimate && estimate <= exact * 3 / 2,
            "{estimate} vs {exact}"
        );
    }

    #[test]
    fn nul_characters_are_refused_with_where_they_are() {
        assert!(check_storable(&json!({"a": [1, "fine", {"b": null}]})).is_ok());
        let refused = |v: Value| match check_storable(&v) {
            Err(IntakeError::InvalidPayload(reason)) => reason,
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert!(refused(json!({"a": [1, "x\u{0}"]})).contains("'/a/1'"));
        assert!(refused(json!("\u{0}")).contains("'/'"));
        assert!(refused(json!({"k": {"bad\u{0}key": 1}})).contains("under '/k'"));
    }
}
