//! The root supervisor: owns the pipeline actors and one `SensorActor` per enabled sensor,
//! and applies the restart policy when supervision events report a failure.
//!
//! Policy: a sensor that fails (an error, a panic, or a refused start) is restarted after
//! a backoff that doubles from `backoff_initial` up to `backoff_max`. After more than
//! `max_restart_attempts` consecutive failures it is `failed` and stays down until an
//! operator restarts it. A sensor that has run for `healthy_after` starts counting afresh.
//! Nothing polls for health: failures arrive as supervision events.

use chrono::Utc;
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr,
    SupervisionEvent,
};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

use crate::domain::Sensor;
use crate::generator::{EventGeneratorActor, GeneratorArgs, GeneratorMsg};
use crate::matcher::{MatcherArgs, MatcherMsg, RuleMatcherActor};
use crate::outbox::{OutboxArgs, OutboxHealth, OutboxMsg, OutboxPublisherActor};
use crate::pipeline::{PipelineRefs, SystemEvents};
use crate::ports::{Publisher, SensorDriverFactory, Store};
use crate::sensor::{COMPLETED, SensorActor, SensorArgs, SensorMsg};
use crate::status::{
    PipelineActorStatus, PipelineState, SensorState, SensorStatus, SharedActivity, TreeStatus,
};
use crate::sync::{lock, set_error};

/// The supervisor's knobs; the service fills them from the `sensor` config section.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// When false, no sensor runs (system events still flow through the pipeline).
    pub sensors_enabled: bool,
    pub restart_on_error: bool,
    pub max_restart_attempts: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// After running this long without failing, a sensor's consecutive failures reset.
    pub healthy_after: Duration,
    /// How often to compare the database's sensors with the running ones; `None` only at
    /// start and on request.
    pub reconcile_interval: Option<Duration>,
    /// Most events (or enforcements) written in one transaction.
    pub max_batch: usize,
    pub outbox_batch: u32,
    pub outbox_poll: Duration,
    /// How long a stopping sensor may take to release what it holds (a process sensor's
    /// SIGTERM grace period and then some); then it is aborted.
    pub stop_grace: Duration,
    /// How long to wait for one sensor actor to stop, beyond which it is killed.
    pub stop_timeout: Duration,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        Self {
            sensors_enabled: true,
            restart_on_error: true,
            max_restart_attempts: 3,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            healthy_after: Duration::from_secs(60),
            reconcile_interval: Some(Duration::from_secs(10)),
            max_batch: 1000,
            outbox_batch: 500,
            outbox_poll: Duration::from_secs(1),
            stop_grace: Duration::from_secs(7),
            stop_timeout: Duration::from_secs(10),
        }
    }
}

impl SupervisorConfig {
    /// The delay before the restart that follows the `failures`-th consecutive failure.
    pub fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(16);
        self.backoff_initial
            .saturating_mul(factor)
            .min(self.backoff_max)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("unknown sensor '{0}'")]
    UnknownSensor(String),
    #[error("sensor '{0}' is disabled; enable it in its pack first")]
    Disabled(String),
    #[error("sensors are disabled in this service (sensor.enabled: false)")]
    SensorsDisabled,
    #[error("{0}")]
    Store(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReconcileReport {
    pub started: Vec<String>,
    pub stopped: Vec<String>,
    pub restarted: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShutdownReport {
    /// False when events or enforcements still waited for the database at the deadline.
    pub in_flight_written: bool,
    /// False when the outbox still held rows at the deadline; they are published on the
    /// next start.
    pub outbox_drained: bool,
}

pub type ControlReply = RpcReplyPort<Result<(), ControlError>>;

pub enum SupervisorMsg {
    Reconcile(Option<RpcReplyPort<Result<ReconcileReport, ControlError>>>),
    /// Restarts a sensor now and resets its consecutive failures.
    RestartSensor(String, ControlReply),
    StopSensor(String, ControlReply),
    StartSensor(String, ControlReply),
    GetStatus(RpcReplyPort<TreeStatus>),
    /// Stops sensors, writes what is in flight, drains the outbox until the deadline.
    Shutdown(Duration, RpcReplyPort<ShutdownReport>),
    RestartDue {
        sensor_ref: String,
        generation: u64,
    },
    MarkHealthy {
        sensor_ref: String,
        generation: u64,
    },
    RespawnPipeline(PipelineKind),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PipelineKind {
    Generator,
    Matcher,
    Outbox,
}

impl PipelineKind {
    const ALL: [Self; 3] = [Self::Outbox, Self::Matcher, Self::Generator];

    fn name(self) -> &'static str {
        match self {
            Self::Generator => "event_generator",
            Self::Matcher => "rule_matcher",
            Self::Outbox => "outbox_publisher",
        }
    }
}

pub struct SupervisorArgs {
    pub config: SupervisorConfig,
    pub store: Arc<dyn Store>,
    pub publisher: Arc<dyn Publisher>,
    pub factory: Arc<dyn SensorDriverFactory>,
}

/// Handles to a running tree.
#[derive(Clone)]
pub struct Tree {
    pub supervisor: ActorRef<SupervisorMsg>,
    pub system_events: SystemEvents,
    pub outbox_health: Arc<OutboxHealth>,
}

impl Tree {
    /// Spawns the supervisor, which spawns the pipeline and reconciles sensors.
    pub async fn start(
        args: SupervisorArgs,
    ) -> Result<(Tree, tokio::task::JoinHandle<()>), SpawnErr> {
        let refs = Arc::new(PipelineRefs::default());
        let outbox_health = Arc::new(OutboxHealth::default());
        let system_events = SystemEvents {
            refs: refs.clone(),
            store: args.store.clone(),
        };
        let (supervisor, handle) =
            Actor::spawn(None, Supervisor, (args, refs, outbox_health.clone())).await?;
        Ok((
            Tree {
                supervisor,
                system_events,
                outbox_health,
            },
            handle,
        ))
    }
}

struct SensorEntry {
    sensor: Sensor,
    actor: Option<ActorRef<SensorMsg>>,
    state: SensorState,
    failure_count: u32,
    restart_count: u32,
    last_error: Option<String>,
    next_restart_at: Option<chrono::DateTime<Utc>>,
    activity: SharedActivity,
    /// Bumped whenever a pending timer must no longer act.
    generation: u64,
}

impl SensorEntry {
    fn new(sensor: Sensor) -> Self {
        Self {
            sensor,
            actor: None,
            state: SensorState::Stopped,
            failure_count: 0,
            restart_count: 0,
            last_error: None,
            next_restart_at: None,
            activity: SharedActivity::default(),
            generation: 0,
        }
    }
}

struct PipelineEntry {
    cell: Option<ActorCell>,
    restart_count: u32,
    last_error: Arc<Mutex<Option<String>>>,
}

enum Child {
    Sensor(String),
    Pipeline(PipelineKind),
}

pub struct Supervisor;

pub struct SupervisorState {
    config: SupervisorConfig,
    store: Arc<dyn Store>,
    publisher: Arc<dyn Publisher>,
    factory: Arc<dyn SensorDriverFactory>,
    refs: Arc<PipelineRefs>,
    outbox_health: Arc<OutboxHealth>,
    sensors: BTreeMap<String, SensorEntry>,
    children: HashMap<ActorId, Child>,
    pipeline: HashMap<PipelineKind, PipelineEntry>,
    shutting_down: bool,
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = (SupervisorArgs, Arc<PipelineRefs>, Arc<OutboxHealth>);

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        (args, refs, outbox_health): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut state = SupervisorState {
            config: args.config,
            store: args.store,
            publisher: args.publisher,
            factory: args.factory,
            refs,
            outbox_health,
            sensors: BTreeMap::new(),
            children: HashMap::new(),
            pipeline: HashMap::new(),
            shutting_down: false,
        };
        for kind in PipelineKind::ALL {
            state.pipeline.insert(
                kind,
                PipelineEntry {
                    cell: None,
                    restart_count: 0,
                    last_error: Arc::new(Mutex::new(None)),
                },
            );
            state.spawn_pipeline(&myself, kind).await?;
        }
        Ok(state)
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        myself.send_message(SupervisorMsg::Reconcile(None))?;
        if let Some(every) = state.config.reconcile_interval {
            myself.send_interval(every, || SupervisorMsg::Reconcile(None));
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
                    let _ = reply.send(result);
                }
            }
            SupervisorMsg::RestartSensor(sensor_ref, reply) => {
                let result = state.operator_restart(&myself, &sensor_ref).await;
                let _ = reply.send(result);
            }
            SupervisorMsg::StopSensor(sensor_ref, reply) => {
                let result = match state.sensors.contains_key(&sensor_ref) {
                    true => {
                        state.stop_sensor(&sensor_ref).await;
                        Ok(())
                    }
                    false => Err(ControlError::UnknownSensor(sensor_ref)),
                };
                let _ = reply.send(result);
            }
            SupervisorMsg::StartSensor(sensor_ref, reply) => {
                let result = state.operator_start(&myself, &sensor_ref).await;
                let _ = reply.send(result);
            }
            SupervisorMsg::GetStatus(reply) => {
                let _ = reply.send(state.status());
            }
            SupervisorMsg::Shutdown(timeout, reply) => {
                let report = state.shutdown(timeout).await;
                let _ = reply.send(report);
                myself.stop(Some("shutdown".to_owned()));
            }
            SupervisorMsg::RestartDue {
                sensor_ref,
                generation,
            } => {
                let due = state.sensors.get_mut(&sensor_ref).is_some_and(|entry| {
                    entry.generation == generation && entry.state == SensorState::Backoff
                });
                if due {
                    if let Some(entry) = state.sensors.get_mut(&sensor_ref) {
                        entry.restart_count += 1;
                    }
                    state.spawn_sensor(&myself, &sensor_ref).await;
                }
            }
            SupervisorMsg::MarkHealthy {
                sensor_ref,
                generation,
            } => {
                if let Some(entry) = state.sensors.get_mut(&sensor_ref)
                    && entry.generation == generation
                    && entry.state == SensorState::Running
                {
                    entry.failure_count = 0;
                }
            }
            SupervisorMsg::RespawnPipeline(kind) => {
                if state.pipeline.get(&kind).is_some_and(|p| p.cell.is_none())
                    && let Err(error) = state.spawn_pipeline(&myself, kind).await
                {
                    tracing::error!(actor = kind.name(), %error, "pipeline actor failed to restart; retrying");
                    myself.send_after(Duration::from_secs(1), move || {
                        SupervisorMsg::RespawnPipeline(kind)
                    });
                }
            }
        }
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
            _ => {}
        }
        Ok(())
    }
}

impl SupervisorState {
    async fn spawn_pipeline(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        kind: PipelineKind,
    ) -> Result<(), SpawnErr> {
        let supervisor = myself.get_cell();
        let last_error = self
            .pipeline
            .get(&kind)
            .map(|p| p.last_error.clone())
            .unwrap_or_default();
        let cell = match kind {
            PipelineKind::Generator => {
                let args = GeneratorArgs {
                    store: self.store.clone(),
                    refs: self.refs.clone(),
                    max_batch: self.config.max_batch,
                    last_error,
                };
                let (actor, _) =
                    Actor::spawn_linked(None, EventGeneratorActor, args, supervisor).await?;
                self.refs.set_generator(Some(actor.clone()));
                actor.get_cell()
            }
            PipelineKind::Matcher => {
                let args = MatcherArgs {
                    store: self.store.clone(),
                    refs: self.refs.clone(),
                    max_batch: self.config.max_batch,
                    last_error,
                };
                let (actor, _) =
                    Actor::spawn_linked(None, RuleMatcherActor, args, supervisor).await?;
                self.refs.set_matcher(Some(actor.clone()));
                actor.get_cell()
            }
            PipelineKind::Outbox => {
                let args = OutboxArgs {
                    store: self.store.clone(),
                    publisher: self.publisher.clone(),
                    batch_size: self.config.outbox_batch,
                    poll_every: self.config.outbox_poll,
                    health: self.outbox_health.clone(),
                };
                let (actor, _) =
                    Actor::spawn_linked(None, OutboxPublisherActor, args, supervisor).await?;
                self.refs.set_outbox(Some(actor.clone()));
                actor.get_cell()
            }
        };
        self.children.insert(cell.get_id(), Child::Pipeline(kind));
        if let Some(entry) = self.pipeline.get_mut(&kind) {
            entry.cell = Some(cell);
        }
        Ok(())
    }

    fn child_down(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        id: ActorId,
        outcome: Result<Option<String>, String>,
    ) {
        // Children the supervisor stopped on purpose were forgotten before they stopped.
        let Some(child) = self.children.remove(&id) else {
            return;
        };
        match child {
            Child::Sensor(sensor_ref) => match outcome {
                Err(error) => self.sensor_failed(myself, &sensor_ref, error),
                Ok(reason) => {
                    if let Some(entry) = self.sensors.get_mut(&sensor_ref) {
                        entry.actor = None;
                        entry.state = SensorState::Stopped;
                        if reason.as_deref() == Some(COMPLETED) {
                            tracing::info!(sensor = %sensor_ref, "sensor completed");
                        }
                    }
                }
            },
            Child::Pipeline(kind) => {
                let Some(entry) = self.pipeline.get_mut(&kind) else {
                    return;
                };
                entry.cell = None;
                entry.restart_count += 1;
                let error = outcome
                    .err()
                    .unwrap_or_else(|| "stopped unexpectedly".to_owned());
                tracing::error!(actor = kind.name(), %error, "pipeline actor went down; restarting it");
                set_error(&entry.last_error, Some(error));
                let _ = myself.send_message(SupervisorMsg::RespawnPipeline(kind));
            }
        }
    }

    fn sensor_failed(&mut self, myself: &ActorRef<SupervisorMsg>, sensor_ref: &str, error: String) {
        let config = &self.config;
        let Some(entry) = self.sensors.get_mut(sensor_ref) else {
            return;
        };
        entry.actor = None;
        entry.failure_count += 1;
        entry.generation += 1;
        entry.last_error = Some(error.clone());
        entry.next_restart_at = None;
        if !config.restart_on_error {
            entry.state = SensorState::Failed;
            tracing::error!(sensor = %sensor_ref, %error, "sensor failed; automatic restart is off");
        } else if entry.failure_count > config.max_restart_attempts {
            entry.state = SensorState::Failed;
            tracing::error!(
                sensor = %sensor_ref,
                %error,
                failures = entry.failure_count,
                "sensor failed too many times in a row; it stays down until an operator restarts it"
            );
        } else {
            let delay = config.backoff(entry.failure_count);
            entry.state = SensorState::Backoff;
            entry.next_restart_at = chrono::Duration::from_std(delay)
                .ok()
                .map(|d| Utc::now() + d);
            tracing::warn!(
                sensor = %sensor_ref,
                %error,
                failures = entry.failure_count,
                delay_ms = delay.as_millis() as u64,
                "sensor failed; restarting after backoff"
            );
            let sensor_ref = sensor_ref.to_owned();
            let generation = entry.generation;
            myself.send_after(delay, move || SupervisorMsg::RestartDue {
                sensor_ref,
                generation,
            });
        }
    }

    async fn spawn_sensor(&mut self, myself: &ActorRef<SupervisorMsg>, sensor_ref: &str) {
        let Some(entry) = self.sensors.get_mut(sensor_ref) else {
            return;
        };
        entry.state = SensorState::Starting;
        entry.next_restart_at = None;
        entry.generation += 1;
        let args = SensorArgs {
            sensor: entry.sensor.clone(),
            store: self.store.clone(),
            factory: self.factory.clone(),
            refs: self.refs.clone(),
            activity: entry.activity.clone(),
            stop_grace: self.config.stop_grace,
        };
        match Actor::spawn_linked(None, SensorActor, args, myself.get_cell()).await {
            Ok((actor, _)) => {
                entry.state = SensorState::Running;
                self.children
                    .insert(actor.get_id(), Child::Sensor(sensor_ref.to_owned()));
                entry.actor = Some(actor);
                let sensor_ref = sensor_ref.to_owned();
                let generation = entry.generation;
                myself.send_after(self.config.healthy_after, move || {
                    SupervisorMsg::MarkHealthy {
                        sensor_ref,
                        generation,
                    }
                });
            }
            Err(error) => {
                let message = match error {
                    SpawnErr::StartupFailed(inner) => format!("start failed: {inner}"),
                    other => format!("start failed: {other}"),
                };
                self.sensor_failed(myself, sensor_ref, message);
            }
        }
    }

    /// Stops several sensors at once (one slow sensor must not eat the others' time) and
    /// waits for them, each at most `stop_timeout` (and not past `deadline`).
    async fn stop_sensors(&mut self, refs: Vec<String>, deadline: Option<Instant>) {
        let mut stopping = tokio::task::JoinSet::new();
        for sensor_ref in refs {
            let Some(entry) = self.sensors.get_mut(&sensor_ref) else {
                continue;
            };
            entry.generation += 1;
            entry.state = SensorState::Stopped;
            entry.next_restart_at = None;
            let Some(actor) = entry.actor.take() else {
                continue;
            };
            self.children.remove(&actor.get_id());
            let wait = match deadline {
                Some(deadline) => self
                    .config
                    .stop_timeout
                    .min(deadline.saturating_duration_since(Instant::now())),
                None => self.config.stop_timeout,
            };
            stopping.spawn(async move {
                if actor
                    .stop_and_wait(Some("stopped".to_owned()), Some(wait))
                    .await
                    .is_err()
                {
                    tracing::warn!(sensor = %sensor_ref, "sensor did not stop in time; killing it");
                    actor.kill();
                }
            });
        }
        while stopping.join_next().await.is_some() {}
    }

    /// Stops a sensor's actor (if any) and waits for it; pending restarts are cancelled.
    async fn stop_sensor(&mut self, sensor_ref: &str) {
        self.stop_sensors(vec![sensor_ref.to_owned()], None).await;
    }

    async fn operator_restart(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        sensor_ref: &str,
    ) -> Result<(), ControlError> {
        self.ensure_known(sensor_ref).await?;
        self.stop_sensor(sensor_ref).await;
        if let Some(entry) = self.sensors.get_mut(sensor_ref) {
            entry.failure_count = 0;
            entry.restart_count += 1;
        }
        self.spawn_sensor(myself, sensor_ref).await;
        Ok(())
    }

    async fn operator_start(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        sensor_ref: &str,
    ) -> Result<(), ControlError> {
        self.ensure_known(sensor_ref).await?;
        let Some(entry) = self.sensors.get_mut(sensor_ref) else {
            return Err(ControlError::UnknownSensor(sensor_ref.to_owned()));
        };
        if matches!(entry.state, SensorState::Running | SensorState::Starting) {
            return Ok(());
        }
        entry.failure_count = 0;
        self.spawn_sensor(myself, sensor_ref).await;
        Ok(())
    }

    /// Makes sure the supervisor tracks `sensor_ref`, loading it when it is enabled in the
    /// database but not yet reconciled.
    async fn ensure_known(&mut self, sensor_ref: &str) -> Result<(), ControlError> {
        if !self.config.sensors_enabled {
            // A reconcile would stop it again at once.
            return Err(ControlError::SensorsDisabled);
        }
        if self.sensors.contains_key(sensor_ref) {
            return Ok(());
        }
        let sensor = self
            .store
            .sensor_by_ref(sensor_ref)
            .await
            .map_err(|e| ControlError::Store(e.to_string()))?
            .ok_or_else(|| ControlError::UnknownSensor(sensor_ref.to_owned()))?;
        if !sensor.enabled {
            return Err(ControlError::Disabled(sensor_ref.to_owned()));
        }
        self.sensors
            .insert(sensor_ref.to_owned(), SensorEntry::new(sensor));
        Ok(())
    }

    async fn reconcile(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
    ) -> Result<ReconcileReport, ControlError> {
        let enabled = self
            .store
            .enabled_sensors()
            .await
            .map_err(|e| ControlError::Store(e.to_string()))?;
        let desired: BTreeMap<String, Sensor> = if self.config.sensors_enabled {
            enabled.into_iter().map(|s| (s.r#ref.clone(), s)).collect()
        } else {
            BTreeMap::new()
        };
        let mut report = ReconcileReport::default();

        let removed: Vec<String> = self
            .sensors
            .keys()
            .filter(|r| !desired.contains_key(*r))
            .cloned()
            .collect();
        let changed: Vec<String> = desired
            .iter()
            .filter(|(r, s)| {
                self.sensors
                    .get(*r)
                    .is_some_and(|entry| entry.sensor != **s)
            })
            .map(|(r, _)| r.clone())
            .collect();
        // Stopped together: each may take its stop grace, and the supervisor answers
        // nobody meanwhile.
        self.stop_sensors(removed.iter().chain(&changed).cloned().collect(), None)
            .await;
        for sensor_ref in removed {
            self.sensors.remove(&sensor_ref);
            report.stopped.push(sensor_ref);
        }

        for (sensor_ref, sensor) in desired {
            match self.sensors.get_mut(&sensor_ref) {
                None => {
                    self.sensors
                        .insert(sensor_ref.clone(), SensorEntry::new(sensor));
                    self.spawn_sensor(myself, &sensor_ref).await;
                    report.started.push(sensor_ref);
                }
                Some(entry) if entry.sensor != sensor => {
                    entry.sensor = sensor;
                    entry.failure_count = 0;
                    self.spawn_sensor(myself, &sensor_ref).await;
                    report.restarted.push(sensor_ref);
                }
                Some(_) => {}
            }
        }

        if let Some(matcher) = self.refs.matcher() {
            let _ = matcher.send_message(MatcherMsg::RefreshRules);
        }
        self.refs.forget_triggers();
        if report != ReconcileReport::default() {
            tracing::info!(?report, "reconciled sensors");
        }
        Ok(report)
    }

    fn status(&self) -> TreeStatus {
        let sensors = self
            .sensors
            .values()
            .map(|entry| SensorStatus {
                sensor_ref: entry.sensor.r#ref.clone(),
                trigger_ref: entry.sensor.trigger_ref.clone(),
                runtime_ref: entry.sensor.runtime_ref.clone(),
                state: entry.state,
                failure_count: entry.failure_count,
                restart_count: entry.restart_count,
                last_error: entry.last_error.clone(),
                next_restart_at: entry.next_restart_at,
                activity: entry.activity.snapshot(),
            })
            .collect();
        let pipeline = PipelineKind::ALL
            .iter()
            .filter_map(|kind| {
                self.pipeline.get(kind).map(|entry| PipelineActorStatus {
                    name: kind.name(),
                    state: if entry.cell.is_some() {
                        PipelineState::Running
                    } else {
                        PipelineState::Restarting
                    },
                    restart_count: entry.restart_count,
                    last_error: lock(&entry.last_error).clone(),
                })
            })
            .collect();
        TreeStatus { sensors, pipeline }
    }

    async fn shutdown(&mut self, timeout: Duration) -> ShutdownReport {
        let deadline = Instant::now() + timeout;
        let remaining = || deadline.saturating_duration_since(Instant::now());
        let all: Vec<String> = self.sensors.keys().cloned().collect();
        self.stop_sensors(all, Some(deadline)).await;
        self.shutting_down = true;
        // From here on, pipeline actors going down is expected.
        self.children.clear();
        let mut written = true;
        if let Some(generator) = self.refs.generator() {
            written &= matches!(
                generator
                    .call(
                        |reply| GeneratorMsg::FlushAll(deadline, reply),
                        Some(remaining() + Duration::from_secs(1)),
                    )
                    .await,
                Ok(ractor::rpc::CallResult::Success(true))
            );
        }
        if let Some(matcher) = self.refs.matcher() {
            written &= matches!(
                matcher
                    .call(
                        |reply| MatcherMsg::FlushAll(deadline, reply),
                        Some(remaining() + Duration::from_secs(1)),
                    )
                    .await,
                Ok(ractor::rpc::CallResult::Success(true))
            );
        }
        if !written {
            tracing::error!(
                "the database did not take every in-flight event before the shutdown deadline"
            );
        }
        let mut outbox_drained = false;
        if let Some(outbox) = self.refs.outbox() {
            let until = deadline;
            if let Ok(ractor::rpc::CallResult::Success(drained)) = outbox
                .call(
                    |reply| OutboxMsg::DrainAll(until, reply),
                    Some(remaining() + Duration::from_secs(1)),
                )
                .await
            {
                outbox_drained = drained;
            }
        }
        for kind in [
            PipelineKind::Generator,
            PipelineKind::Matcher,
            PipelineKind::Outbox,
        ] {
            if let Some(cell) = self.pipeline.get_mut(&kind).and_then(|p| p.cell.take()) {
                let _ = cell.stop_and_wait(None, Some(Duration::from_secs(5))).await;
            }
        }
        self.refs.set_generator(None);
        self.refs.set_matcher(None);
        self.refs.set_outbox(None);
        self.publisher.close().await;
        ShutdownReport {
            in_flight_written: written,
            outbox_drained,
        }
    }
}
