//! Prometheus metrics: the pipeline's counters and histograms (fed by the actors through
//! the [`PipelineMetrics`] port and by the listeners), and the gauges read at scrape
//! time from the status snapshot, the store and the publisher (see [`Metrics::render`]).
//!
//! Built on the `prometheus` crate (registry, label vectors, the text encoder) rather than
//! hand-formatted text, so names, escaping and the exposition format are its problem.
//! Every name starts with `attune_sensor_`; label values are refs and fixed words, never
//! payload values, so the number of series stays bounded by the definitions.

use std::time::Duration;

use attune_actors::ports::{IntakeError, PipelineMetrics, Publisher, Store};
use attune_actors::status::TreeStatus;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Seconds: from half a millisecond (a fast commit) to ten seconds (a stalled database).
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0];

/// How long a scrape waits for the database's counts before it leaves them out.
const SCRAPE_BUDGET: Duration = Duration::from_millis(500);

/// Every metric the service exports.
pub struct Metrics {
    registry: Registry,
    events_stored: IntCounterVec,
    event_repeats: IntCounter,
    events_refused: IntCounterVec,
    enforcements_created: IntCounterVec,
    enforcements_throttled: IntCounterVec,
    event_commit: Histogram,
    event_batch: Histogram,
    match_seconds: Histogram,
    enforcement_commit: Histogram,
    enforcement_batch: Histogram,
    publish_confirm: Histogram,
    published: IntCounter,
    publish_failures: IntCounter,
    parked_total: IntCounter,
    webhook_requests: IntCounterVec,
    process_timeouts: IntCounterVec,
    file_notifications: IntCounterVec,
    // Read at scrape time.
    outbox_backlog: IntGauge,
    outbox_oldest: prometheus::Gauge,
    outbox_parked: IntGauge,
    sensors: IntGaugeVec,
    sensor_restarts: IntGaugeVec,
    sensor_failures: IntGaugeVec,
    sensor_events: IntGaugeVec,
    process_bad_lines: IntGaugeVec,
    database_up: IntGauge,
    broker_up: IntGauge,
    pool_in_use: IntGauge,
    pruned: IntCounterVec,
    last_prune: IntGauge,
    memory_trims: IntCounter,
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("registered once");
    metric
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let metric = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("registered once");
    metric
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let metric = IntCounter::new(name, help).expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("registered once");
    metric
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let metric = IntGauge::new(name, help).expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("registered once");
    metric
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: &[f64]) -> Histogram {
    let metric = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
        .expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("registered once");
    metric
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry =
            Registry::new_custom(Some("attune_sensor".to_owned()), None).expect("valid prefix");
        let r = &registry;
        let build_info = gauge_vec(
            r,
            "build_info",
            "Always 1; the labels say which build runs.",
            &["version"],
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let outbox_oldest = prometheus::Gauge::new(
            "outbox_oldest_unpublished_age_seconds",
            "Age of the oldest outbox row waiting to be published (0 when none waits).",
        )
        .expect("valid metric");
        registry
            .register(Box::new(outbox_oldest.clone()))
            .expect("registered once");
        Self {
            events_stored: counter_vec(
                r,
                "events_stored_total",
                "Events stored, by trigger.",
                &["trigger"],
            ),
            event_repeats: counter(
                r,
                "event_repeats_total",
                "Events not stored because they repeated an idempotency key within dedup.window, or the content key of an event stored within its dedup window: answered with the first event.",
            ),
            events_refused: counter_vec(
                r,
                "events_refused_total",
                "Requests to POST /events and webhooks whose event was not stored, by reason (overloaded, invalid, unknown_trigger, not_running, database, timeout).",
                &["reason"],
            ),
            enforcements_created: counter_vec(
                r,
                "enforcements_created_total",
                "Enforcements stored, by rule.",
                &["rule"],
            ),
            enforcements_throttled: counter_vec(
                r,
                "enforcements_throttled_total",
                "Matches of throttled rules that created no enforcement when they matched (suppressed within a window, or held for a once_after window), by rule.",
                &["rule"],
            ),
            event_commit: histogram(
                r,
                "event_commit_seconds",
                "Time to commit one batch of events with their outbox rows.",
                LATENCY_BUCKETS,
            ),
            event_batch: histogram(
                r,
                "event_batch_size",
                "Events per committed batch.",
                BATCH_BUCKETS,
            ),
            match_seconds: histogram(
                r,
                "match_seconds_per_event",
                "Time to match one event against its trigger's rules (batch time / events).",
                LATENCY_BUCKETS,
            ),
            enforcement_commit: histogram(
                r,
                "enforcement_commit_seconds",
                "Time to commit one batch of enforcements with their outbox rows.",
                LATENCY_BUCKETS,
            ),
            enforcement_batch: histogram(
                r,
                "enforcement_batch_size",
                "Enforcements per committed batch.",
                BATCH_BUCKETS,
            ),
            publish_confirm: histogram(
                r,
                "publish_confirm_seconds",
                "Time from publishing an outbox batch to the broker's last confirm.",
                LATENCY_BUCKETS,
            ),
            published: counter(
                r,
                "outbox_published_total",
                "Outbox messages the broker confirmed.",
            ),
            publish_failures: counter(
                r,
                "outbox_publish_failures_total",
                "Outbox messages whose publish failed (broker away, nack, unroutable under retry).",
            ),
            parked_total: counter(
                r,
                "outbox_parked_total",
                "Outbox rows parked by this process.",
            ),
            webhook_requests: counter_vec(
                r,
                "webhook_requests_total",
                "Webhook requests, by sensor and HTTP status code.",
                &["sensor", "code"],
            ),
            process_timeouts: counter_vec(
                r,
                "process_sensor_timeouts_total",
                "Poll processes killed at sensor.sensor_timeout, by sensor.",
                &["sensor"],
            ),
            file_notifications: counter_vec(
                r,
                "file_watch_notifications_total",
                "File-system notifications received, by sensor.",
                &["sensor"],
            ),
            outbox_backlog: gauge(
                r,
                "outbox_backlog",
                "Outbox rows waiting to be published (parked rows not counted).",
            ),
            outbox_oldest,
            outbox_parked: gauge(
                r,
                "outbox_parked",
                "Outbox rows parked, waiting for `attune-sensor outbox retry`.",
            ),
            sensors: gauge_vec(r, "sensors", "Sensors by state.", &["state"]),
            sensor_restarts: gauge_vec(
                r,
                "sensor_restarts",
                "Restarts of each sensor since the service started.",
                &["sensor"],
            ),
            sensor_failures: gauge_vec(
                r,
                "sensor_consecutive_failures",
                "Failures of each sensor since it last ran healthy.",
                &["sensor"],
            ),
            sensor_events: gauge_vec(
                r,
                "sensor_events_emitted",
                "Events each sensor emitted since the service started.",
                &["sensor"],
            ),
            process_bad_lines: gauge_vec(
                r,
                "process_sensor_bad_lines",
                "Output lines of each process sensor that were not valid, since the service started.",
                &["sensor"],
            ),
            database_up: gauge(
                r,
                "database_up",
                "1 when the database answered the last scrape's ping, else 0.",
            ),
            broker_up: gauge(
                r,
                "broker_up",
                "1 when the message bus is connected, else 0.",
            ),
            pool_in_use: gauge(
                r,
                "database_pool_connections_in_use",
                "Database pool connections in use.",
            ),
            pruned: counter_vec(
                r,
                "pruned_rows_total",
                "Rows deleted by retention, by table.",
                &["table"],
            ),
            last_prune: gauge(
                r,
                "last_prune_timestamp_seconds",
                "When the last prune started (Unix time; 0 before the first).",
            ),
            memory_trims: counter(
                r,
                "memory_trims_total",
                "Times freed memory was returned to the operating system after the actor tree settled.",
            ),
            registry,
        }
    }

    /// A request (`POST /events`, a webhook) whose event was not stored: `None` when it
    /// was answered before it was (`pipeline.answer_timeout`).
    pub fn event_refused(&self, error: Option<&IntakeError>) {
        let reason = match error {
            None => "timeout",
            Some(IntakeError::UnknownTrigger(_)) => "unknown_trigger",
            Some(IntakeError::InvalidPayload(_)) => "invalid",
            Some(IntakeError::Overloaded { .. }) => "overloaded",
            Some(IntakeError::NotRunning) => "not_running",
            Some(IntakeError::Store(_)) => "database",
            Some(IntakeError::Fenced { .. }) => "fenced",
        };
        self.events_refused.with_label_values(&[reason]).inc();
    }

    /// A prune that started at `at` removed `count`.
    pub fn pruned(
        &self,
        count: &attune_actors::domain::PruneCount,
        at: chrono::DateTime<chrono::Utc>,
    ) {
        for (table, n) in [
            ("outbox", count.outbox),
            ("event", count.events),
            ("enforcement", count.enforcements),
            ("idempotency_key", count.idempotency_keys),
        ] {
            self.pruned.with_label_values(&[table]).inc_by(n);
        }
        self.last_prune.set(at.timestamp());
    }

    /// Freed memory was returned to the operating system (`memory_trim`).
    pub fn memory_trimmed(&self) {
        self.memory_trims.inc();
    }

    /// How many times freed memory was returned since the service started.
    pub fn memory_trims(&self) -> u64 {
        self.memory_trims.get()
    }

    pub fn webhook_request(&self, sensor_ref: &str, code: u16) {
        self.webhook_requests
            .with_label_values(&[sensor_ref, &code.to_string()])
            .inc();
    }

    pub fn process_timeout(&self, sensor_ref: &str) {
        self.process_timeouts.with_label_values(&[sensor_ref]).inc();
    }

    pub fn file_notification(&self, sensor_ref: &str) {
        self.file_notifications
            .with_label_values(&[sensor_ref])
            .inc();
    }

    /// Reads the gauges (status snapshot, store, publisher) and renders every metric in
    /// the Prometheus text format.
    pub async fn render(
        &self,
        status: &TreeStatus,
        store: &dyn Store,
        publisher: &dyn Publisher,
    ) -> String {
        self.read_status(status);
        self.broker_up.set(i64::from(publisher.is_connected()));
        let counts = async {
            store.ping().await?;
            let backlog = store.outbox_backlog().await?;
            let parked = store.parked_count().await?;
            let oldest = store.oldest_unpublished().await?;
            Ok::<_, attune_actors::ports::StoreError>((backlog, parked, oldest))
        };
        match tokio::time::timeout(SCRAPE_BUDGET, counts).await {
            Ok(Ok((backlog, parked, oldest))) => {
                self.database_up.set(1);
                self.outbox_backlog
                    .set(i64::try_from(backlog).unwrap_or(i64::MAX));
                self.outbox_parked
                    .set(i64::try_from(parked).unwrap_or(i64::MAX));
                let age = oldest.map_or(0.0, |at| {
                    (chrono::Utc::now() - at).num_milliseconds().max(0) as f64 / 1000.0
                });
                self.outbox_oldest.set(age);
            }
            _ => self.database_up.set(0),
        }
        if let Some((size, idle)) = store.pool_usage() {
            self.pool_in_use.set(i64::from(size.saturating_sub(idle)));
        }
        let mut out = Vec::new();
        // Encoding gathered families into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    fn read_status(&self, status: &TreeStatus) {
        self.sensors.reset();
        self.sensor_restarts.reset();
        self.sensor_failures.reset();
        self.sensor_events.reset();
        self.process_bad_lines.reset();
        for state in ["running", "starting", "backoff", "stopped", "failed"] {
            self.sensors.with_label_values(&[state]).set(0);
        }
        for sensor in &status.sensors {
            let name = sensor.sensor_ref.as_str();
            self.sensors
                .with_label_values(&[sensor.state.as_str()])
                .inc();
            self.sensor_restarts
                .with_label_values(&[name])
                .set(i64::from(sensor.restart_count));
            self.sensor_failures
                .with_label_values(&[name])
                .set(i64::from(sensor.failure_count));
            self.sensor_events
                .with_label_values(&[name])
                .set(i64::try_from(sensor.activity.events_emitted).unwrap_or(i64::MAX));
            self.process_bad_lines
                .with_label_values(&[name])
                .set(i64::try_from(sensor.activity.bad_output_count).unwrap_or(i64::MAX));
        }
    }
}

impl PipelineMetrics for Metrics {
    fn events_committed(&self, stored_triggers: &[&str], repeats: usize, took: Duration) {
        for trigger in stored_triggers {
            self.events_stored.with_label_values(&[trigger]).inc();
        }
        self.event_repeats.inc_by(repeats as u64);
        self.event_commit.observe(took.as_secs_f64());
        self.event_batch
            .observe((stored_triggers.len() + repeats) as f64);
    }

    fn events_matched(&self, events: usize, took: Duration) {
        if events > 0 {
            self.match_seconds
                .observe(took.as_secs_f64() / events as f64);
        }
    }

    fn enforcements_committed(&self, rules: &[&str], took: Duration) {
        for rule in rules {
            self.enforcements_created.with_label_values(&[rule]).inc();
        }
        self.enforcement_commit.observe(took.as_secs_f64());
        self.enforcement_batch.observe(rules.len() as f64);
    }

    fn enforcements_throttled(&self, rules: &[&str]) {
        for rule in rules {
            self.enforcements_throttled.with_label_values(&[rule]).inc();
        }
    }

    fn messages_published(&self, count: usize, took: Duration) {
        if count > 0 {
            self.published.inc_by(count as u64);
            self.publish_confirm.observe(took.as_secs_f64());
        }
    }

    fn publish_failed(&self, count: usize) {
        self.publish_failures.inc_by(count as u64);
    }

    fn rows_parked(&self, count: usize) {
        self.parked_total.inc_by(count as u64);
    }
}
