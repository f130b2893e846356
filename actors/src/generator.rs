//! `EventGeneratorActor`: turns detections into stored events.
//!
//! It writes events (with their outbox rows) in batches, acknowledges each submitter once
//! its row is committed, hands the stored events to the rule matcher and wakes the outbox
//! publisher. A failed write keeps the batch and retries it: an event is never dropped
//! because the database was briefly away.

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::sync::{Arc, Mutex};

use crate::batch::{Batcher, GroupCommit, flush_all, on_flush};
use crate::live_ref::LiveRef;
use crate::matcher::{MatchRequest, MatcherMsg};
use crate::outbox::OutboxMsg;
use crate::ports::{EventAck, EventRequest, Store};
use crate::sync::set_error;

/// What the event generator hears.
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
    pub last_error: Arc<Mutex<Option<String>>>,
}

pub struct GeneratorState {
    args: GeneratorArgs,
    batcher: Batcher<EventRequest>,
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
            batcher: Batcher::new(args.max_batch),
            args,
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
        let batch = self.batcher.take_batch();
        if batch.is_empty() {
            return Ok(());
        }
        let new_events = batch.iter().map(|r| r.event.clone()).collect();
        match self.args.store.create_events(new_events).await {
            Ok(events) => {
                self.batcher.succeeded();
                if let (Some(first), Some(last)) = (events.first(), events.last()) {
                    tracing::debug!(count = events.len(), first_id = first.id, last_id = last.id, trigger = %first.trigger_ref, "events stored");
                }
                set_error(&self.args.last_error, None);
                let mut to_match = Vec::with_capacity(events.len());
                for (request, event) in batch.into_iter().zip(events) {
                    let reply = match request.ack {
                        EventAck::None => None,
                        EventAck::Stored(reply) => {
                            let _ = reply.send(event.clone());
                            None
                        }
                        EventAck::Matched(reply) => Some(reply),
                    };
                    to_match.push(MatchRequest { event, reply });
                }
                // A publisher that is down finds the rows when it is back.
                self.args.outbox.send(OutboxMsg::Wake);
                self.forward(to_match);
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
