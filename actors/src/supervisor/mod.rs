//! The root supervisor: owns the pipeline actors and one `SensorActor` per enabled
//! sensor, applies the restart policy when supervision events report a failure, and
//! publishes the tree's status after every change.
//!
//! Nothing polls for health: failures arrive as supervision events. The decisions are
//! pure functions, testable without actors: [`policy`] (what follows a failure) and
//! [`reconcile`] (what to start, stop and restart). The rest is split by concern:
//! `dispatch` (the `Actor` impl), `children` (bookkeeping and status snapshots),
//! `sensors` (sensor lifecycle), `respawn` (pipeline actors), `control` (operator commands
//! and reconciles), `leases` (placement ticks under sensor leases, deciding with the pure
//! [`placement`] plan), `forwarded` (operator commands and reloads that reached another
//! instance) and `shutdown`.

mod children;
mod config;
mod control;
mod dispatch;
mod forwarded;
mod leases;
mod messages;
pub mod placement;
pub mod policy;
pub mod reconcile;
mod respawn;
mod sensors;
mod shutdown;

use ractor::{Actor, ActorId, ActorRef, SpawnErr};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub use config::SupervisorConfig;
pub use leases::SensorLeases;
pub use messages::{
    ControlError, ControlReply, PipelineKind, ReconcileReport, ShutdownReport, SupervisorMsg,
};
pub use shutdown::PAST_DEADLINE;

use crate::outbox::OutboxHealth;
use crate::pipeline::{PipelineRefs, SystemEvents};
use crate::ports::{PayloadSchemas, PipelineMetrics, Publisher, SensorDriverFactory, Store};
use crate::status::{StatusFeed, ThrottleCounts, TreeSnapshot, TreeStatus};
use children::{Child, PipelineEntry, SensorEntry};
use leases::LeaseBook;

pub struct SupervisorArgs {
    pub config: SupervisorConfig,
    pub store: Arc<dyn Store>,
    pub publisher: Arc<dyn Publisher>,
    pub factory: Arc<dyn SensorDriverFactory>,
    /// Where the pipeline actors report what they measure ([`crate::ports::NoMetrics`]
    /// keeps nothing).
    pub metrics: Arc<dyn PipelineMetrics>,
    /// Checks payloads against their trigger's schema ([`crate::ports::NoSchemas`]
    /// accepts all).
    pub schemas: Arc<dyn PayloadSchemas>,
}

/// Handles to a running tree.
#[derive(Clone)]
pub struct Tree {
    pub supervisor: ActorRef<SupervisorMsg>,
    pub system_events: SystemEvents,
    pub outbox_health: Arc<OutboxHealth>,
    status: StatusFeed,
}

impl Tree {
    /// Spawns the supervisor, which spawns the pipeline, and waits (at most
    /// [`FIRST_RECONCILE_WAIT`]) for its first reconcile, so the status lists the sensors
    /// once this returns. A database that is down delays nothing: that reconcile fails at
    /// once and the periodic one tries again.
    pub async fn start(
        args: SupervisorArgs,
    ) -> Result<(Tree, tokio::task::JoinHandle<()>), SpawnErr> {
        let refs = Arc::new(PipelineRefs::new(
            args.config.max_pending,
            args.schemas.clone(),
        ));
        let outbox_health = Arc::new(OutboxHealth::default());
        let system_events = SystemEvents {
            refs: refs.clone(),
            store: args.store.clone(),
        };
        let (status, feed) = watch::channel(Arc::new(TreeSnapshot::default()));
        let (supervisor, handle) = Actor::spawn(
            None,
            Supervisor,
            (args, refs, outbox_health.clone(), status),
        )
        .await?;
        let first = supervisor
            .call(
                |reply| SupervisorMsg::Reconcile(Some(reply)),
                Some(FIRST_RECONCILE_WAIT),
            )
            .await;
        if !matches!(first, Ok(ractor::rpc::CallResult::Success(_))) {
            tracing::warn!("the first reconcile did not finish in time; it goes on meanwhile");
        }
        Ok((
            Tree {
                supervisor,
                system_events,
                outbox_health,
                status: StatusFeed::new(feed),
            },
            handle,
        ))
    }

    /// The tree's status as the supervisor last published it, with live counters. It
    /// never waits for the supervisor, whatever the supervisor is busy with.
    pub fn status(&self) -> TreeStatus {
        self.status.current()
    }

    /// A reader of the supervisor's status snapshots, to wait for the next one.
    pub fn status_feed(&self) -> StatusFeed {
        self.status.clone()
    }
}

/// How long `Tree::start` waits for the first reconcile.
pub const FIRST_RECONCILE_WAIT: Duration = Duration::from_secs(10);

pub struct Supervisor;

pub struct SupervisorState {
    config: SupervisorConfig,
    store: Arc<dyn Store>,
    publisher: Arc<dyn Publisher>,
    factory: Arc<dyn SensorDriverFactory>,
    metrics: Arc<dyn PipelineMetrics>,
    refs: Arc<PipelineRefs>,
    outbox_health: Arc<OutboxHealth>,
    sensors: BTreeMap<String, SensorEntry>,
    children: HashMap<ActorId, Child>,
    pipeline: HashMap<PipelineKind, PipelineEntry>,
    shutting_down: bool,
    status: watch::Sender<Arc<TreeSnapshot>>,
    throttled: Arc<ThrottleCounts>,
    /// The sensor leases this instance holds, when several instances share the database.
    leases: Option<LeaseBook>,
    /// The reload generation seen at the last placement tick (`forwarded.rs`).
    reload_seen: Option<i64>,
}
