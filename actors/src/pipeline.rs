//! The event pipeline's wiring: the live refs that tie the generator, matcher and outbox
//! publisher together, the event intake that sensors submit to, and the entry point for
//! system events.
//!
//! The supervisor owns one [`PipelineRefs`] and updates a ref whenever it respawns an
//! actor, so sensors, the admin API and the actors themselves always reach the live one.

use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use tokio::sync::oneshot;

use crate::domain::{EventOrigin, NewEvent, Trigger, config_snapshot};
use crate::generator::GeneratorMsg;
use crate::grouping::DedupKey;
use crate::live_ref::LiveRef;
use crate::matcher::MatcherMsg;
use crate::outbox::OutboxMsg;
use crate::ports::{
    Admission, EventAck, EventIntake, EventRequest, IntakeError, MatchOutcome, PayloadSchemas,
    Store, StoreError, check_storable,
};
use crate::sync::{read, write};

/// The current refs of the pipeline actors.
pub struct PipelineRefs {
    pub generator: LiveRef<GeneratorMsg>,
    pub matcher: LiveRef<MatcherMsg>,
    pub outbox: LiveRef<OutboxMsg>,
    /// Triggers that starting sensors and system events named, with the system events'
    /// `dedup` compiled, so a burst of events or a start of 100,000 timers costs one
    /// lookup; cleared on every reconcile so edited triggers are picked up.
    triggers: RwLock<HashMap<String, Arc<KnownTrigger>>>,
    /// Bounds the events waiting to be stored (`pipeline.max_pending`).
    admission: Admission,
    /// Triggers' payload schemas, checked before an event takes room.
    schemas: Arc<dyn PayloadSchemas>,
}

impl PipelineRefs {
    pub fn new(max_pending: usize, schemas: Arc<dyn PayloadSchemas>) -> Self {
        Self {
            generator: LiveRef::default(),
            matcher: LiveRef::default(),
            outbox: LiveRef::default(),
            triggers: RwLock::default(),
            admission: Admission::new(max_pending),
            schemas,
        }
    }

    pub(crate) fn forget_triggers(&self) {
        write(&self.triggers).clear();
    }

    fn cached_trigger(&self, trigger_ref: &str) -> Option<Arc<KnownTrigger>> {
        read(&self.triggers).get(trigger_ref).cloned()
    }

    fn cache_trigger(&self, known: Arc<KnownTrigger>) {
        write(&self.triggers).insert(known.trigger.r#ref.clone(), known);
    }

    /// The trigger named `trigger_ref`, from the cache or the store (`None`: there is
    /// none). A failed lookup is not remembered.
    pub(crate) async fn known_trigger(
        &self,
        store: &dyn Store,
        trigger_ref: &str,
    ) -> Result<Option<Arc<KnownTrigger>>, StoreError> {
        if let Some(known) = self.cached_trigger(trigger_ref) {
            return Ok(Some(known));
        }
        let Some(trigger) = store.trigger_by_ref(trigger_ref).await? else {
            return Ok(None);
        };
        let known = Arc::new(KnownTrigger {
            dedup: DedupKey::of_source(&trigger, None),
            trigger: Arc::new(trigger),
        });
        self.cache_trigger(known.clone());
        Ok(Some(known))
    }

    /// Marks every pipeline actor down, after shutdown stopped them.
    pub(crate) fn clear(&self) {
        self.generator.set(None);
        self.matcher.set(None);
        self.outbox.set(None);
    }
}

impl EventIntake for PipelineRefs {
    fn submit(&self, request: EventRequest) -> Result<(), IntakeError> {
        match self.generator.send(GeneratorMsg::Generate(request)) {
            true => Ok(()),
            false => Err(IntakeError::NotRunning),
        }
    }

    fn admission(&self) -> &Admission {
        &self.admission
    }

    fn check_payload(&self, trigger: &Trigger, payload: &Value) -> Result<(), IntakeError> {
        self.schemas
            .check(trigger, payload)
            .map_err(IntakeError::InvalidPayload)
    }
}

/// A trigger looked up by ref, and its `dedup` for system events compiled once.
pub(crate) struct KnownTrigger {
    /// Shared by every sensor of the trigger.
    pub(crate) trigger: Arc<Trigger>,
    dedup: Option<DedupKey>,
}

/// Entry point for events that no sensor produced (the admin API's `POST /events`).
#[derive(Clone)]
pub struct SystemEvents {
    pub(crate) refs: Arc<PipelineRefs>,
    pub(crate) store: Arc<dyn Store>,
}

impl SystemEvents {
    /// How many events wait to be stored now (of `pipeline.max_pending`).
    pub fn pending(&self) -> usize {
        self.refs.admission.pending()
    }

    /// Stores a system event for `trigger_ref`, matches it against the trigger's rules and
    /// returns the event id with the enforcements it produced. Refused at once with
    /// [`IntakeError::Overloaded`] while `pipeline.max_pending` events wait to be stored.
    pub async fn emit(
        &self,
        trigger_ref: &str,
        payload: Value,
    ) -> Result<MatchOutcome, IntakeError> {
        self.emit_from(trigger_ref, payload, EventOrigin::default())
            .await
    }

    /// Like [`emit`](Self::emit), for a request: idempotent on its key (a repeat of a key
    /// stored within its window stores nothing and answers with the first event,
    /// `repeat: true`), and its `traceparent` passed on to the messages.
    pub async fn emit_from(
        &self,
        trigger_ref: &str,
        payload: Value,
        origin: EventOrigin,
    ) -> Result<MatchOutcome, IntakeError> {
        check_storable(&payload)?;
        let known = self
            .refs
            .known_trigger(self.store.as_ref(), trigger_ref)
            .await?
            .ok_or_else(|| IntakeError::UnknownTrigger(trigger_ref.to_owned()))?;
        let trigger = &known.trigger;
        self.refs.check_payload(trigger, &payload)?;
        let permit = self.refs.admission.try_admit()?;
        let dedup_key = known
            .dedup
            .as_ref()
            .and_then(|dedup| dedup.key_for(&payload, &trigger.r#ref, None));
        let (reply, outcome) = oneshot::channel();
        self.refs.submit(EventRequest {
            event: NewEvent {
                trigger: Some(trigger.id),
                trigger_ref: trigger.r#ref.clone(),
                config: config_snapshot(trigger, None),
                payload,
                source: None,
                source_ref: None,
                idempotency_key: origin.idempotency_key,
                dedup_key,
                traceparent: origin.traceparent,
                lease: None,
            },
            ack: EventAck::Matched(reply),
            permit,
        })?;
        outcome.await.map_err(|_| IntakeError::NotRunning)?
    }
}
