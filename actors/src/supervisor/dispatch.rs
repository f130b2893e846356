//! The supervisor as an actor: starting the pipeline, routing each message and
//! supervision event to the part that handles it, and publishing the status after each.

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio::sync::watch;

use super::messages::{PipelineKind, SupervisorMsg};
use super::{LeaseBook, Supervisor, SupervisorArgs, SupervisorState};
use crate::outbox::OutboxHealth;
use crate::pipeline::PipelineRefs;
use crate::status::TreeSnapshot;

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = (
        SupervisorArgs,
        Arc<PipelineRefs>,
        Arc<OutboxHealth>,
        watch::Sender<Arc<TreeSnapshot>>,
    );

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        (args, refs, outbox_health, status): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let leases = args.config.sensor_leases.clone().map(LeaseBook::new);
        let mut state = SupervisorState {
            config: args.config,
            store: args.store,
            publisher: args.publisher,
            factory: args.factory,
            metrics: args.metrics,
            refs,
            outbox_health,
            sensors: BTreeMap::new(),
            children: HashMap::new(),
            pipeline: HashMap::new(),
            shutting_down: false,
            throttled: Arc::default(),
            leases,
            reload_seen: None,
            status,
        };
        for kind in PipelineKind::ALL {
            state.spawn_pipeline(&myself, kind).await?;
        }
        state.publish_status();
        Ok(state)
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // The first reconcile is sent by `Tree::start`, which waits for it.
        if let Some(every) = state.config.reconcile_interval {
            myself.send_interval(every, || SupervisorMsg::Reconcile(None));
        }
        if state.leases.is_some() {
            // Each tick schedules the next, so a slow one never queues up others.
            myself.send_message(SupervisorMsg::Place)?;
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if state.shutting_down {
            return Ok(());
        }
        match message {
            SupervisorMsg::Reconcile(reply) => {
                let result = state.reconcile(&myself).await;
                if let Err(error) = &result {
                    tracing::warn!(%error, "reconcile failed; running sensors left as they are");
                }
                if let Some(reply) = reply {
                    // Whoever hears back reads the status next; it must show the change.
                    state.publish_status();
                    let _ = reply.send(result);
                }
            }
            SupervisorMsg::RestartSensor(sensor_ref, reply) => {
                let result = state.operator_restart(&myself, &sensor_ref).await;
                state.publish_status();
                let _ = reply.send(result);
            }
            SupervisorMsg::StopSensor(sensor_ref, reply) => {
                let result = state.operator_stop(&sensor_ref).await;
                state.publish_status();
                let _ = reply.send(result);
            }
            SupervisorMsg::StartSensor(sensor_ref, reply) => {
                let result = state.operator_start(&myself, &sensor_ref).await;
                state.publish_status();
                let _ = reply.send(result);
            }
            SupervisorMsg::Shutdown(deadline, reply) => {
                let report = state.shutdown(deadline).await;
                let _ = reply.send(report);
                myself.stop(Some("shutdown".to_owned()));
                return Ok(());
            }
            SupervisorMsg::RestartDue {
                sensor_ref,
                generation,
            } => state.restart_due(&myself, &sensor_ref, generation).await,
            SupervisorMsg::MarkHealthy {
                sensor_ref,
                generation,
            } => {
                if !state.mark_healthy(&sensor_ref, generation) {
                    return Ok(());
                }
            }
            SupervisorMsg::RespawnPipeline(kind) => state.respawn_pipeline(&myself, kind).await,
            SupervisorMsg::Place => state.place(&myself).await,
            SupervisorMsg::SawReload(generation) => state.saw_reload(generation),
        }
        state.publish_status();
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                state.child_down(&myself, cell.get_id(), Err(error.to_string()));
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                state.child_down(&myself, cell.get_id(), Ok(reason));
            }
            _ => return Ok(()),
        }
        state.publish_status();
        Ok(())
    }
}
