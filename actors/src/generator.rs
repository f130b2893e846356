//! `EventGeneratorActor`: turns detections into stored events.
//!
//! It writes events (with their outbox rows) in batches, acknowledges each submitter once
//! its row is committed, hands the stored events to the rule matcher and wakes the outbox
//! publisher. A failed write keeps the batch and retries it: an event is never dropped
//! because the database was briefly away. A batch the database refuses as invalid is
//! halved until the request it refuses is alone; only that one is answered with the
//! refusal, the others are stored.

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::sync::{Arc, Mutex};

use crate::batch::{Batcher, GroupCommit, flush_all, on_flush};
use crate::live_ref::LiveRef;
use crate::matcher::{MatchRequest, MatcherMsg};
use crate::outbox::OutboxMsg;
use crate::ports::{
    EventAck, EventRequest, IntakeError, PipelineMetrics, Store, StoreError, json_size,
};
use crate::sync::set_error;

/// What the event generator hears.
// Nearly every message is a `Generate`: boxing it would cost an allocation per event to
// shrink messages that are rare.
#[allow(clippy::large_enum_variant)]
pub enum GeneratorMsg {
    /// An event to store, from a sensor or the admin API.
    Generate(EventRequest),
    /// Group commit: write what is buffered (see `batch.rs`).
    Flush,
    /// Writes everything buffered (retrying until the deadline) and replies whether it
    /// all got written; used on shutdown.
    FlushAll(tokio::time::Instant, RpcReplyPort<bool>),
}

pub struct EventGeneratorActor;

pub struct GeneratorArgs {
    pub store: Arc<dyn Store>,
    /// Stored events go on to the matcher.
    pub matcher: LiveRef<MatcherMsg>,
    /// Woken after each commit, so new outbox rows go out at once.
    pub outbox: LiveRef<OutboxMsg>,
    pub max_batch: usize,
    /// Most payload and config bytes in one batch (`pipeline.max_batch_bytes`).
    pub max_batch_bytes: usize,
    pub last_error: Arc<Mutex<Option<String>>>,
    pub metrics: Arc<dyn PipelineMetrics>,
}

pub struct GeneratorState {
    args: GeneratorArgs,
    batcher: Batcher<EventRequest>,
    /// While a refused batch is being narrowed down: the size of the next batch.
    isolating: Option<usize>,
}

impl Actor for EventGeneratorActor {
    type Msg = GeneratorMsg;
    type State = GeneratorState;
    type Arguments = GeneratorArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: GeneratorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(GeneratorState {
            batcher: Batcher::with_bytes(args.max_batch, args.max_batch_bytes, |request| {
                json_size(&request.event.payload) + json_size(&request.event.config)
            }),
            args,
            isolating: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            GeneratorMsg::Generate(request) => {
                if state.batcher.push(request) {
                    myself.send_message(GeneratorMsg::Flush)?;
                }
            }
            GeneratorMsg::Flush => on_flush(state, &myself, || GeneratorMsg::Flush).await?,
            GeneratorMsg::FlushAll(deadline, reply) => {
                let _ = reply.send(flush_all(state, deadline).await);
            }
        }
        Ok(())
    }
}

impl GroupCommit for GeneratorState {
    type Item = EventRequest;

    fn batcher(&mut self) -> &mut Batcher<EventRequest> {
        &mut self.batcher
    }

    async fn flush_once(&mut self) -> Result<(), std::time::Duration> {
        let batch = match self.isolating {
            Some(limit) => self.batcher.take_at_most(limit),
            None => self.batcher.take_batch(),
        };
        if batch.is_empty() {
            return Ok(());
        }
        let new_events = batch.iter().map(|r| r.event.clone()).collect();
        let started = std::time::Instant::now();
        match self.args.store.create_events(new_events).await {
            Ok(writes) => {
                self.batcher.succeeded();
                let triggers: Vec<&str> = writes
                    .iter()
                    .filter(|w| !w.is_repeat())
                    .map(|w| w.event().trigger_ref.as_str())
                    .collect();
                let repeats = writes.len() - triggers.len();
                self.args
                    .metrics
                    .events_committed(&triggers, repeats, started.elapsed());
                let stored = writes.iter().filter(|w| !w.is_repeat()).count();
                if let (Some(first), Some(last)) = (writes.first(), writes.last()) {
                    tracing::debug!(count = stored, repeats = writes.len() - stored, first_id = first.event().id, last_id = last.event().id, trigger = %first.event().trigger_ref, "events stored");
                }
                set_error(&self.args.last_error, None);
                let mut to_match = Vec::with_capacity(writes.len());
                for (request, write) in batch.into_iter().zip(writes) {
                    let repeat = write.is_repeat();
                    let reply = match request.ack {
                        EventAck::None => None,
                        EventAck::Stored(reply) => {
                            let _ = reply.send(Ok(write.clone()));
                            None
                        }
                        EventAck::Matched(reply) => Some(reply),
                    };
                    // A repeat goes to the matcher too: when the first request's commit
                    // succeeded but its answer was lost, the retry is the one that finds
                    // the key, and the event was never matched. Matching an event again
                    // is a no-op for the enforcements it has.
                    to_match.push(MatchRequest {
                        event: write.into_event(),
                        reply,
                        repeat,
                    });
                }
                // A publisher that is down finds the rows when it is back.
                self.args.outbox.send(OutboxMsg::Wake);
                self.forward(to_match);
                self.isolating = None;
                Ok(())
            }
            Err(StoreError::Fenced { lease, generation }) => {
                // Only the fenced sensor's events are refused; the rest go again at once.
                let (fenced, rest): (Vec<_>, Vec<_>) =
                    batch.into_iter().partition(|request| {
                        request.event.lease.as_ref().is_some_and(|claim| {
                            claim.name == lease && claim.generation == generation
                        })
                    });
                tracing::warn!(%lease, generation, events = fenced.len(), "events refused: their sensor's lease has passed to another instance");
                for request in fenced {
                    request.ack.refuse(IntakeError::Fenced {
                        lease: lease.clone(),
                        generation,
                    });
                }
                if rest.is_empty() {
                    return Ok(());
                }
                self.batcher.put_back(rest);
                Err(std::time::Duration::ZERO)
            }
            Err(StoreError::Invalid(reason)) if batch.len() > 1 => {
                let half = batch.len() / 2;
                tracing::warn!(%reason, events = batch.len(), "the database refused a batch; writing it in halves to find the event it refuses");
                self.isolating = Some(half);
                self.batcher.put_back(batch);
                Err(std::time::Duration::ZERO)
            }
            Err(StoreError::Invalid(reason)) => {
                self.batcher.succeeded();
                self.isolating = None;
                for request in batch {
                    tracing::warn!(%reason, trigger = %request.event.trigger_ref, source = ?request.event.source_ref, "the database refused an event; it is answered with the refusal and dropped");
                    request.ack.refuse(IntakeError::InvalidPayload(format!(
                        "the database refused the event: {reason}"
                    )));
                }
                Ok(())
            }
            Err(error) => {
                tracing::warn!(%error, events = batch.len(), "storing events failed; will retry");
                set_error(&self.args.last_error, Some(error.to_string()));
                Err(self.batcher.requeue(batch))
            }
        }
    }
}

impl GeneratorState {
    fn forward(&self, requests: Vec<MatchRequest>) {
        if !self.args.matcher.send(MatcherMsg::Match(requests)) {
            tracing::error!("rule matcher is not running; stored events were not matched");
        }
    }
}
