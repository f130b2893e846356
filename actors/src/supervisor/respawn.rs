//! The pipeline actors as supervised children: spawned at start, respawned whenever one
//! exits, whatever the reason (retried every second while spawning fails).

use ractor::{Actor, ActorCell, ActorRef, SpawnErr};
use std::time::Duration;

use super::SupervisorState;
use super::children::Child;
use super::messages::{PipelineKind, SupervisorMsg};
use crate::generator::{EventGeneratorActor, GeneratorArgs};
use crate::live_ref::LiveRef;
use crate::matcher::{MatcherArgs, RuleMatcherActor};
use crate::outbox::{OutboxArgs, OutboxPublisherActor};
use crate::sync::set_error;

/// Spawns one actor linked to the supervisor and makes it the live one.
async fn spawn_live<A: Actor>(
    actor: A,
    args: A::Arguments,
    live: &LiveRef<A::Msg>,
    supervisor: ActorCell,
) -> Result<ActorCell, SpawnErr> {
    let (actor_ref, _) = Actor::spawn_linked(None, actor, args, supervisor).await?;
    live.set(Some(actor_ref.clone()));
    Ok(actor_ref.get_cell())
}

impl SupervisorState {
    pub(super) async fn spawn_pipeline(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        kind: PipelineKind,
    ) -> Result<(), SpawnErr> {
        let supervisor = myself.get_cell();
        let last_error = self.pipeline.entry(kind).or_default().last_error.clone();
        let refs = &self.refs;
        let cell = match kind {
            PipelineKind::Generator => {
                let args = GeneratorArgs {
                    store: self.store.clone(),
                    matcher: refs.matcher.clone(),
                    outbox: refs.outbox.clone(),
                    max_batch: self.config.max_batch,
                    max_batch_bytes: self.config.max_batch_bytes,
                    last_error,
                    metrics: self.metrics.clone(),
                };
                spawn_live(EventGeneratorActor, args, &refs.generator, supervisor).await?
            }
            PipelineKind::Matcher => {
                let args = MatcherArgs {
                    store: self.store.clone(),
                    outbox: refs.outbox.clone(),
                    max_batch: self.config.max_batch,
                    last_error,
                    metrics: self.metrics.clone(),
                    throttled: self.throttled.clone(),
                    identity: self.config.matching.clone(),
                };
                spawn_live(RuleMatcherActor, args, &refs.matcher, supervisor).await?
            }
            PipelineKind::Outbox => {
                let args = OutboxArgs {
                    store: self.store.clone(),
                    publisher: self.publisher.clone(),
                    batch_size: self.config.outbox_batch,
                    poll_every: self.config.outbox_poll,
                    health: self.outbox_health.clone(),
                    max_attempts: self.config.outbox_max_attempts,
                    unroutable: self.config.unroutable,
                    metrics: self.metrics.clone(),
                    lease: self.config.publisher_lease.clone(),
                };
                spawn_live(OutboxPublisherActor, args, &refs.outbox, supervisor).await?
            }
        };
        self.children.insert(cell.get_id(), Child::Pipeline(kind));
        if let Some(entry) = self.pipeline.get_mut(&kind) {
            entry.cell = Some(cell);
        }
        Ok(())
    }

    /// Handles `RespawnPipeline`: spawns the actor unless it is already back.
    pub(super) async fn respawn_pipeline(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        kind: PipelineKind,
    ) {
        if self.pipeline.get(&kind).is_some_and(|p| p.cell.is_some()) {
            return;
        }
        if let Err(error) = self.spawn_pipeline(myself, kind).await {
            tracing::error!(actor = kind.name(), %error, "pipeline actor failed to restart; retrying");
            myself.send_after(Duration::from_secs(1), move || {
                SupervisorMsg::RespawnPipeline(kind)
            });
        }
    }

    /// A pipeline actor exited: record why and respawn it.
    pub(super) fn pipeline_down(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        kind: PipelineKind,
        error: String,
    ) {
        let Some(entry) = self.pipeline.get_mut(&kind) else {
            return;
        };
        entry.cell = None;
        entry.restart_count += 1;
        // Senders then see it down (and shutdown knows it holds nothing) until it is back.
        match kind {
            PipelineKind::Generator => self.refs.generator.set(None),
            PipelineKind::Matcher => self.refs.matcher.set(None),
            PipelineKind::Outbox => self.refs.outbox.set(None),
        }
        tracing::error!(actor = kind.name(), %error, "pipeline actor went down; restarting it");
        set_error(&entry.last_error, Some(error));
        let _ = myself.send_message(SupervisorMsg::RespawnPipeline(kind));
    }
}
