//! The outbox publisher: moves committed outbox rows to the message bus.
//!
//! Rows are published in id order through one window of confirms, read ahead and marked
//! published behind it as the broker confirms them (see [`drain`]). When the broker is
//! away the rows simply wait (the service keeps running, not ready) and are published once
//! it is back: at-least-once delivery, nothing lost.
//!
//! A row the broker refuses while the link is fine (a nack, or returned because no queue
//! takes it) does not hold up the rows behind it: it is retried with backoff and, after
//! `max_attempts` refusals, parked with its last error until an operator retries it (see
//! [`disposition`]).
//!
//! Instances sharing a database take turns: only the holder of the outbox lease
//! ([`PublisherLease`]) publishes, renewing it as it drains; the others stand by and take
//! it over once it expires or is released (on shutdown), so steady-state operation sends
//! each message once.

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

use self::drain::DrainEnd;
use crate::batch::retry_delay;
use crate::domain::{OUTBOX_LEASE, capped_after};
use crate::ports::{PipelineMetrics, Publisher, RefusalKind, Store};
use crate::sync::{lock, set_error};

mod drain;

/// How long one drain may run before the actor handles its other messages (shutdown,
/// the lease's renewal): short against the lease's ttl, long against a batch.
const DRAIN_BUDGET: Duration = Duration::from_secs(1);

/// What the outbox publisher hears.
pub enum OutboxMsg {
    /// New rows were committed (or the poll tick came): drain unless a drain is already
    /// on its way.
    Wake,
    /// Publishes for a while, then schedules the next step (more rows, or a retry).
    Drain,
    /// Publishes until the outbox is empty or the deadline passes; replies whether it
    /// emptied. Used on shutdown.
    DrainAll(Instant, RpcReplyPort<bool>),
}

/// How the publisher is doing, for readiness and status.
#[derive(Debug, Default)]
pub struct OutboxHealth {
    pub last_error: Mutex<Option<String>>,
    /// Another instance holds the outbox lease: this one publishes nothing.
    pub standby: std::sync::atomic::AtomicBool,
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
    /// Refusals after which a row is parked (`outbox.max_attempts`, at least 1).
    pub max_attempts: u32,
    /// What becomes of a message no queue takes (`mq.unroutable`).
    pub unroutable: UnroutablePolicy,
    pub metrics: Arc<dyn PipelineMetrics>,
    /// Publish only while holding the outbox lease (`None`: always publish).
    pub lease: Option<PublisherLease>,
}

/// The outbox lease this instance asks for: one publisher among the instances sharing a
/// database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublisherLease {
    /// This instance's id.
    pub holder: String,
    /// How long a grant lasts; it is renewed once a third of it has passed.
    pub ttl: Duration,
}

/// Whether the lease is held: until when (by this process's clock), in which generation.
#[derive(Debug)]
struct LeaseState {
    config: PublisherLease,
    held: Option<Held>,
    /// Standing by has been logged since the lease was last held.
    told_standby: bool,
}

#[derive(Debug, Clone, Copy)]
struct Held {
    until: Instant,
    generation: i64,
}

impl LeaseState {
    /// The lease must be asked for now: not held, or a third of its time has passed.
    fn due(&self, now: Instant) -> bool {
        self.held.is_none_or(|held| {
            held.until.saturating_duration_since(now) < self.config.ttl.mul_f64(2.0 / 3.0)
        })
    }
}

/// What to do with a message the broker returns because no queue is bound for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnroutablePolicy {
    /// Park it at once, for an operator to retry once a queue exists.
    #[default]
    Park,
    /// Count it as a refusal: retried with backoff, parked after `max_attempts`.
    Retry,
    /// Count it as published (what a topic exchange does without `mandatory`), with a
    /// warning in the log.
    Drop,
}

/// What becomes of one refused outbox row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Stays in the publish order and is tried again after a pause.
    Retry,
    /// Leaves the publish order, with its last error, until `outbox retry`.
    Park,
    /// Is marked published although no queue took it.
    Drop,
}

/// Decides the fate of a row refused `attempts_before` times already, now refused again.
pub fn disposition(
    kind: RefusalKind,
    attempts_before: u32,
    max_attempts: u32,
    unroutable: UnroutablePolicy,
) -> Disposition {
    match (kind, unroutable) {
        (RefusalKind::Unroutable, UnroutablePolicy::Park) => Disposition::Park,
        (RefusalKind::Unroutable, UnroutablePolicy::Drop) => Disposition::Drop,
        (RefusalKind::Unroutable, UnroutablePolicy::Retry) | (RefusalKind::Nacked, _) => {
            if attempts_before.saturating_add(1) >= max_attempts.max(1) {
                Disposition::Park
            } else {
                Disposition::Retry
            }
        }
    }
}

pub struct OutboxState {
    args: OutboxArgs,
    drain_scheduled: bool,
    failures: u32,
    lease: Option<LeaseState>,
}

enum Drained {
    /// The outbox is empty (as far as this batch could tell).
    Empty,
    More,
    Failed,
    /// Another instance holds the outbox lease.
    Standby,
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
        let lease = args.lease.clone().map(|config| LeaseState {
            config,
            held: None,
            told_standby: false,
        });
        Ok(OutboxState {
            args,
            drain_scheduled: true,
            failures: 0,
            lease,
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
            OutboxMsg::Drain => match state.drain_batch(None).await {
                // The poll tick looks again (and asks for the lease again).
                Drained::Empty | Drained::Standby => state.drain_scheduled = false,
                Drained::More => myself.send_message(OutboxMsg::Drain)?,
                Drained::Failed => {
                    myself.send_after(retry_delay(state.failures), || OutboxMsg::Drain);
                }
            },
            OutboxMsg::DrainAll(deadline, reply) => {
                let emptied = loop {
                    match state.drain_batch(Some(deadline)).await {
                        // The instance holding the lease publishes these rows.
                        Drained::Empty | Drained::Standby => break true,
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
                state.release_lease().await;
                let _ = reply.send(emptied);
            }
        }
        Ok(())
    }
}

impl OutboxState {
    /// Publishes for up to [`DRAIN_BUDGET`] (less when `deadline` comes first), if this
    /// instance holds the lease.
    async fn drain_batch(&mut self, deadline: Option<Instant>) -> Drained {
        match self.holds_lease().await {
            Ok(true) => {}
            Ok(false) => return Drained::Standby,
            Err(error) => return self.failed(error),
        }
        let budget = deadline.map_or(DRAIN_BUDGET, |deadline| {
            deadline
                .saturating_duration_since(Instant::now())
                .min(DRAIN_BUDGET)
        });
        let end = drain::drain(&self.args, budget).await;
        if let DrainEnd::Failed(error) = end {
            return self.failed(error);
        }
        self.failures = 0;
        if self.args.publisher.is_connected() {
            set_error(&self.args.health.last_error, None);
        }
        match end {
            DrainEnd::More => Drained::More,
            _ => Drained::Empty,
        }
    }

    /// Whether this instance may publish now, asking for (or renewing) the lease when due.
    async fn holds_lease(&mut self) -> Result<bool, String> {
        let Some(lease) = &mut self.lease else {
            return Ok(true);
        };
        let now = Instant::now();
        if !lease.due(now) {
            return Ok(true);
        }
        let wall = chrono::Utc::now();
        let ttl = crate::domain::chrono_span(lease.config.ttl);
        let asked = self
            .args
            .store
            .acquire_lease(
                OUTBOX_LEASE,
                &lease.config.holder,
                wall,
                capped_after(wall, ttl),
            )
            .await;
        let standby = &self.args.health.standby;
        match asked {
            Ok(Some(generation)) => {
                if lease.held.is_none_or(|held| held.generation != generation) {
                    tracing::info!(instance = %lease.config.holder, generation, "this instance publishes the outbox");
                }
                lease.held = Some(Held {
                    until: now + lease.config.ttl,
                    generation,
                });
                lease.told_standby = false;
                standby.store(false, std::sync::atomic::Ordering::Relaxed);
                Ok(true)
            }
            Ok(None) => {
                if !lease.told_standby {
                    tracing::info!(instance = %lease.config.holder, "another instance publishes the outbox; standing by");
                    lease.told_standby = true;
                }
                lease.held = None;
                standby.store(true, std::sync::atomic::Ordering::Relaxed);
                Ok(false)
            }
            // A grant that has not run out yet still holds.
            Err(_) if lease.held.is_some_and(|held| held.until > now) => Ok(true),
            Err(error) => Err(format!("asking for the outbox lease failed: {error}")),
        }
    }

    /// Lets the lease go (shutdown), so another instance publishes at once.
    async fn release_lease(&mut self) {
        let Some(lease) = &mut self.lease else {
            return;
        };
        if lease.held.take().is_some()
            && let Err(error) = self
                .args
                .store
                .release_lease(OUTBOX_LEASE, &lease.config.holder)
                .await
        {
            tracing::warn!(%error, "could not release the outbox lease; it expires by itself");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_retry_until_the_last_attempt_then_park() {
        use Disposition::*;
        let nack =
            |before, max| disposition(RefusalKind::Nacked, before, max, UnroutablePolicy::Park);
        assert_eq!(nack(0, 10), Retry);
        assert_eq!(nack(8, 10), Retry);
        assert_eq!(nack(9, 10), Park);
        assert_eq!(nack(40, 10), Park);
        assert_eq!(nack(0, 1), Park);
        assert_eq!(
            nack(0, 0),
            Park,
            "0 attempts means park at the first refusal"
        );
    }

    #[test]
    fn unroutable_messages_follow_the_policy() {
        use Disposition::*;
        let unroutable = |before, policy| disposition(RefusalKind::Unroutable, before, 10, policy);
        assert_eq!(unroutable(0, UnroutablePolicy::Park), Park);
        assert_eq!(unroutable(0, UnroutablePolicy::Drop), Drop);
        assert_eq!(unroutable(0, UnroutablePolicy::Retry), Retry);
        assert_eq!(unroutable(9, UnroutablePolicy::Retry), Park);
    }
}
