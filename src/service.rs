//! Wiring: opens the store and the bus, loads packs, starts the actor tree and the admin
//! API; shuts them down in order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use attune_actors::matcher::MatcherIdentity;
use attune_actors::outbox::PublisherLease;
use attune_actors::ports::{Publisher, Store, StoreError};
use attune_actors::supervisor::{SensorLeases, ShutdownReport};
use attune_actors::{SupervisorArgs, SupervisorMsg, Tree};
use ractor::rpc::CallResult;

use crate::admin::{self, AdminState};
use crate::bus::{self, InProcessBus, redact_url};
use crate::config::Settings;
use crate::metrics::Metrics;
use crate::packs;
use crate::retention::{self, PruneStats, RetentionPolicy};
use crate::runtimes::RuntimeFactory;
use crate::schemas::SchemaCache;
use crate::store;
use crate::webhook;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("cannot open the database {url}: {source}")]
    Database {
        url: String,
        #[source]
        source: StoreError,
    },
    #[error(transparent)]
    Bus(#[from] bus::OpenError),
    #[error(transparent)]
    InstanceLock(#[from] crate::instance_lock::LockError),
    #[error("cannot start the actor tree: {0}")]
    Tree(String),
    #[error("cannot listen on admin.bind {addr}: {source}")]
    AdminBind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on webhook.bind {addr}: {source}")]
    WebhookBind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A running service.
pub struct Service {
    pub tree: Tree,
    pub store: Arc<dyn Store>,
    pub publisher: Arc<dyn Publisher>,
    /// The embedded bus, when no broker URL is configured; subscribe to see messages.
    pub in_process_bus: Option<Arc<InProcessBus>>,
    /// Where the admin API listens (the real port when `admin.bind` asked for port 0).
    pub admin_addr: SocketAddr,
    /// Where the webhook listener listens (the real port when `webhook.bind` asked for 0).
    pub webhook_addr: SocketAddr,
    /// What `GET /metrics` renders.
    pub metrics: Arc<Metrics>,
    webhook_stop: oneshot::Sender<()>,
    webhook_task: JoinHandle<()>,
    admin_stop: oneshot::Sender<()>,
    admin_task: JoinHandle<()>,
    supervisor_task: JoinHandle<()>,
    pruner: JoinHandle<()>,
    /// `packs.watch`: reloads packs whose files change.
    pack_watch: Option<JoinHandle<()>>,
    /// Keeps this instance's row in the `instance` table fresh.
    heartbeat: JoinHandle<()>,
    /// Returns freed memory to the OS once the tree settles after a change.
    memory_trim: JoinHandle<()>,
    pub identity: Arc<crate::cluster::Identity>,
    /// SQLite only: held while the service runs, so no second one opens the file.
    _instance_lock: Option<crate::instance_lock::InstanceLock>,
    shutdown_timeout: Duration,
}

impl Service {
    pub async fn start(settings: &Settings) -> Result<Self, ServiceError> {
        // Before anything touches the file: a second service on it stops here.
        let instance_lock = crate::instance_lock::sqlite_file(&settings.database.url)
            .map(|file| crate::instance_lock::acquire(&file))
            .transpose()?;
        let identity = Arc::new(crate::cluster::Identity::from_settings(settings));
        let database_url = redact_url(&settings.database.url);
        let store_options = store::StoreOptions {
            instance: identity.id.clone(),
            ..settings.store_options()
        };
        let store = store::open_with(&settings.database.url, store_options)
            .await
            .map_err(|source| ServiceError::Database {
                url: database_url.clone(),
                source,
            })?;
        tracing::info!(database = %database_url, "database ready");

        for dir in &settings.packs.autoload {
            match packs::install_pack(store.as_ref(), dir).await {
                Ok(summary) => tracing::info!(pack = %dir.display(), ?summary, "pack loaded"),
                // A bad pack must not keep the service (and every other pack) down.
                Err(error) => tracing::error!(pack = %dir.display(), %error, "pack refused"),
            }
        }

        let tls = bus::TlsFiles {
            ca_file: &settings.mq.tls.ca_file,
            cert_file: &settings.mq.tls.cert_file,
            key_file: &settings.mq.tls.key_file,
        };
        let (publisher, in_process_bus) = bus::open(
            &settings.mq.url,
            &settings.mq.exchange,
            tls,
            &settings.bus_routes(),
        )?;
        tracing::info!(bus = publisher.kind(), mq = %redact_url(&settings.mq.url), "message bus configured");

        // Bound before the actor tree starts, so a taken port leaves nothing running.
        let addr = settings.admin_addr();
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServiceError::AdminBind { addr, source })?;
        let admin_addr = listener
            .local_addr()
            .map_err(|source| ServiceError::AdminBind { addr, source })?;
        let addr = settings.webhook_addr();
        let webhook_listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServiceError::WebhookBind { addr, source })?;
        let webhook_addr = webhook_listener
            .local_addr()
            .map_err(|source| ServiceError::WebhookBind { addr, source })?;
        let metrics = Arc::new(Metrics::new());
        let factory = RuntimeFactory::new(settings, metrics.clone());
        let webhooks = factory.webhooks();
        let mut supervisor_config = settings.supervisor();
        // SQLite runs one instance (the lock above), which needs no turn to publish: a
        // restart after a crash publishes at once instead of waiting out a dead lease.
        supervisor_config.publisher_lease = instance_lock.is_none().then(|| PublisherLease {
            holder: identity.id.clone(),
            ttl: identity.lease_ttl,
        });
        // Likewise its sensors run without leases, fenced by the lock alone.
        supervisor_config.sensor_leases = instance_lock.is_none().then(|| SensorLeases {
            holder: identity.id.clone(),
            labels: identity.labels.clone(),
            ttl: identity.lease_ttl,
        });
        // Under the lock no other instance can be alive: a previous run's unmatched events
        // are taken over at once rather than after a heartbeat's worth of waiting.
        supervisor_config.matching = MatcherIdentity {
            instance: identity.id.clone(),
            live_for: if instance_lock.is_some() {
                Duration::ZERO
            } else {
                identity.lease_ttl
            },
        };
        // Registered before the sensors are placed, so other instances count this one.
        let heartbeat = crate::cluster::spawn_heartbeat(store.clone(), identity.clone());
        let started = Tree::start(SupervisorArgs {
            config: supervisor_config,
            store: store.clone(),
            publisher: publisher.clone(),
            factory: Arc::new(factory),
            metrics: metrics.clone(),
            schemas: Arc::new(SchemaCache::default()),
        })
        .await;
        let (tree, supervisor_task) = match started {
            Ok(started) => started,
            Err(error) => {
                heartbeat.abort();
                return Err(ServiceError::Tree(error.to_string()));
            }
        };
        tracing::info!(instance = %identity.id, "instance started");
        let memory_trim = crate::memory_trim::spawn(tree.status_feed(), metrics.clone());
        let pack_watch_stats = Arc::new(crate::pack_watch::WatchStats::default());
        let pack_watch = settings
            .packs
            .watch
            .then(|| {
                crate::pack_watch::spawn(
                    store.clone(),
                    tree.supervisor.clone(),
                    &settings.packs.autoload,
                    settings.packs.watch_debounce.0,
                    pack_watch_stats.clone(),
                )
            })
            .flatten();
        let retention_stats = Arc::new(PruneStats::default());
        let pruner = retention::spawn(
            store.clone(),
            RetentionPolicy::from_settings(settings),
            retention_stats.clone(),
            metrics.clone(),
        );
        let app = admin::router(AdminState {
            tree: tree.clone(),
            store: store.clone(),
            publisher: publisher.clone(),
            token: settings.admin_token().map(Arc::from),
            database_url,
            mq_url: redact_url(&settings.mq.url),
            last_backlog: Default::default(),
            answer_timeout: settings.pipeline.answer_timeout.0,
            dedup_window: settings.dedup.window.0,
            metrics: metrics.clone(),
            metrics_public: settings.admin.metrics_public,
            retention: retention_stats.clone(),
            pack_watch: pack_watch_stats,
            identity: identity.clone(),
        });
        let (admin_stop, stopped) = oneshot::channel::<()>();
        let admin_task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "admin API stopped");
            }
        });
        tracing::info!(%admin_addr, "admin API listening");

        let (webhook_stop, stopped) = oneshot::channel::<()>();
        let webhook_app =
            webhook::router(webhooks).into_make_service_with_connect_info::<SocketAddr>();
        let webhook_task = tokio::spawn(async move {
            let served = axum::serve(webhook_listener, webhook_app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "webhook listener stopped");
            }
        });
        tracing::info!(%webhook_addr, "webhook listener listening");

        Ok(Self {
            tree,
            store,
            publisher,
            in_process_bus,
            admin_addr,
            webhook_addr,
            metrics,
            webhook_stop,
            webhook_task,
            admin_stop,
            admin_task,
            supervisor_task,
            pruner,
            pack_watch,
            heartbeat,
            memory_trim,
            identity,
            _instance_lock: instance_lock,
            shutdown_timeout: settings.shutdown_timeout(),
        })
    }

    /// Stops sensors, finishes in-flight events, drains the outbox and closes the webhook
    /// listener and the admin API, all within the shutdown timeout from now.
    pub async fn shutdown(self) -> ShutdownReport {
        let deadline = Instant::now() + self.shutdown_timeout;
        self.shutdown_by(deadline).await
    }

    /// Shuts down against one deadline, handed to every phase: each phase ends by it, and
    /// what follows the deadline (closing the actors, the broker connection and the admin
    /// API) takes at most [`SUPERVISOR_TAIL`] + 2 × [`ADMIN_TAIL`]; with the runtime's own
    /// stop in `main.rs`, all of it stays under 2 s.
    pub async fn shutdown_by(self, deadline: Instant) -> ShutdownReport {
        // Webhooks first: requests in progress get their events stored (the pipeline is
        // still up) and new ones are refused at the socket rather than with a 404. A third
        // of the time at most: a client that stalls mid-request must not take it all.
        let _ = self.webhook_stop.send(());
        // A prune in progress is one batch in a transaction: stopping it rolls that back.
        self.pruner.abort();
        if let Some(watch) = &self.pack_watch {
            watch.abort();
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let mut webhook_task = self.webhook_task;
        if tokio::time::timeout(left / 3, &mut webhook_task)
            .await
            .is_err()
        {
            tracing::warn!("webhook requests still in progress at shutdown were dropped");
            webhook_task.abort();
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let report = match self
            .tree
            .supervisor
            .call(
                |reply| SupervisorMsg::Shutdown(deadline, reply),
                Some(left + SUPERVISOR_TAIL),
            )
            .await
        {
            Ok(CallResult::Success(report)) => report,
            _ => {
                // Busy elsewhere (a reconcile waiting on the database): stop it anyway;
                // its sensors' processes die with their tasks when the runtime stops.
                tracing::warn!("supervisor did not confirm shutdown in time; stopping it");
                self.tree.supervisor.kill();
                ShutdownReport {
                    in_flight_written: false,
                    outbox_drained: false,
                }
            }
        };
        let _ = self.admin_stop.send(());
        let mut admin_task = self.admin_task;
        if tokio::time::timeout(ADMIN_TAIL, &mut admin_task)
            .await
            .is_err()
        {
            admin_task.abort();
        }
        let _ = tokio::time::timeout(ADMIN_TAIL, self.supervisor_task).await;
        self.heartbeat.abort();
        self.memory_trim.abort();
        crate::cluster::deregister(self.store.as_ref(), &self.identity).await;
        if report.outbox_drained {
            tracing::info!("shut down cleanly");
        } else {
            tracing::warn!("shut down with outbox rows left; they are published on the next start");
        }
        report
    }
}

/// How far past the deadline the supervisor may answer: what its shutdown takes past the
/// deadline, and a margin for the answer itself.
const SUPERVISOR_TAIL: Duration =
    attune_actors::supervisor::PAST_DEADLINE.saturating_add(Duration::from_millis(150));

/// How long the admin API (and then the supervisor's task) get to finish after the
/// supervisor is done.
const ADMIN_TAIL: Duration = Duration::from_millis(200);
