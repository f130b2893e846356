//! The outbox publisher: moves committed outbox rows to the message bus.
//!
//! Rows are published in id order, a batch at a time with all of the batch in flight, and
//! marked published as the broker confirms them. When the broker is away the rows simply
//! wait (the service keeps running, not ready) and are published once it is back:
//! at-least-once delivery, nothing lost.

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

use crate::batch::retry_delay;
use crate::ports::{Publisher, Store};
use crate::sync::{lock, set_error};

/// What the outbox publisher hears.
pub enum OutboxMsg {
    /// New rows were committed (or the poll tick came): drain unless a drain is already
    /// on its way.
    Wake,
    /// Publishes one batch, then schedules the next step (more rows, or a retry).
    Drain,
    /// Publishes until the outbox is empty or the deadline passes; replies whether it
    /// emptied. Used on shutdown.
    DrainAll(Instant, RpcReplyPort<bool>),
}

/// How the publisher is doing, for readiness and status.
#[derive(Debug, Default)]
pub struct OutboxHealth {
    pub last_error: Mutex<Option<String>>,
}

impl OutboxHealth {
    /// Why the last attempt to publish failed, if it did.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.last_error).clone()
    }
}

pub struct OutboxPublisherActor;

pub struct OutboxArgs {
    pub store: Arc<dyn Store>,
    pub publisher: Arc<dyn Publisher>,
    pub batch_size: u32,
    /// How often to look for rows nobody woke us for (left from a previous run, or
    /// waiting for the broker).
    pub poll_every: Duration,
    pub health: Arc<OutboxHealth>,
}

pub struct OutboxState {
    args: OutboxArgs,
    drain_scheduled: bool,
    failures: u32,
}

enum Drained {
    /// The outbox is empty (as far as this batch could tell).
    Empty,
    More,
    Failed,
}

impl Actor for OutboxPublisherActor {
    type Msg = OutboxMsg;
    type State = OutboxState;
    type Arguments = OutboxArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: OutboxArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_interval(args.poll_every, || OutboxMsg::Wake);
        myself.send_message(OutboxMsg::Drain)?;
        Ok(OutboxState {
            args,
            drain_scheduled: true,
            failures: 0,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            OutboxMsg::Wake => {
                if !state.drain_scheduled {
                    if !state.args.publisher.is_connected()
                        && let Err(error) = state.args.publisher.connect().await
                    {
                        set_error(&state.args.health.last_error, Some(error.to_string()));
                    }
                    state.drain_scheduled = true;
                    myself.send_message(OutboxMsg::Drain)?;
                }
            }
            OutboxMsg::Drain => match state.drain_batch().await {
                Drained::Empty => state.drain_scheduled = false,
                Drained::More => myself.send_message(OutboxMsg::Drain)?,
                Drained::Failed => {
                    myself.send_after(retry_delay(state.failures), || OutboxMsg::Drain);
                }
            },
            OutboxMsg::DrainAll(deadline, reply) => {
                let emptied = loop {
                    match state.drain_batch().await {
                        Drained::Empty => break true,
                        Drained::More => {}
                        Drained::Failed => {
                            let pause = retry_delay(state.failures);
                            if Instant::now() + pause >= deadline {
                                break false;
                            }
                            tokio::time::sleep(pause).await;
                        }
                    }
                    if Instant::now() >= deadline {
                        break false;
                    }
                };
                let _ = reply.send(emptied);
            }
        }
        Ok(())
    }
}

impl OutboxState {
    async fn drain_batch(&mut self) -> Drained {
        let rows = match self.args.store.pending_outbox(self.args.batch_size).await {
            Ok(rows) => rows,
            Err(error) => return self.failed(format!("reading the outbox failed: {error}")),
        };
        if rows.is_empty() {
            if self.args.publisher.is_connected() {
                set_error(&self.args.health.last_error, None);
            }
            return Drained::Empty;
        }
        let report = self.args.publisher.publish(&rows).await;
        let confirmed: Vec<_> = rows[..report.confirmed.min(rows.len())]
            .iter()
            .map(|row| row.id)
            .collect();
        if !confirmed.is_empty()
            && let Err(error) = self.args.store.mark_published(&confirmed).await
        {
            // The rows will be published again: duplicates, never losses.
            return self.failed(format!("marking outbox rows published failed: {error}"));
        }
        if let Some(error) = report.error {
            return self.failed(format!("publishing failed: {error}"));
        }
        self.failures = 0;
        set_error(&self.args.health.last_error, None);
        if rows.len() < self.args.batch_size as usize {
            Drained::Empty
        } else {
            Drained::More
        }
    }

    fn failed(&mut self, error: String) -> Drained {
        self.failures = self.failures.saturating_add(1);
        if self.failures == 1 || self.failures.is_power_of_two() {
            tracing::warn!(%error, attempts = self.failures, "outbox rows wait for the next attempt");
        }
        set_error(&self.args.health.last_error, Some(error));
        Drained::Failed
    }
}
