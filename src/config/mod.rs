//! Service configuration: `config/default.yaml` (compiled in), then an optional file given
//! with `--config`, then environment variables `ATTUNE__SECTION__KEY`.
//!
//! Unknown keys and invalid values are refused with the key's name, so a typo never
//! silently falls back to a default.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use attune_actors::SupervisorConfig;
use attune_actors::outbox::UnroutablePolicy;

mod cluster;
mod duration;

pub use cluster::{ClusterSettings, host_name};
pub use duration::{Seconds, parse_duration};

/// The environment variable listing pack directories to load at start.
const AUTOLOAD_VAR: &str = "ATTUNE__PACKS__AUTOLOAD";

/// The embedded default configuration.
pub const DEFAULT_YAML: &str = include_str!("../../config/default.yaml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration: invalid value for `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error("configuration: cannot read `{key}` from {path}: {reason}")]
    SecretFile {
        key: &'static str,
        path: String,
        reason: String,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub mq: MqSettings,
    pub admin: AdminSettings,
    pub webhook: WebhookSettings,
    pub packs: PackSettings,
    pub log: LogSettings,
    pub sensor: SensorSettings,
    pub runtimes: RuntimeSettings,
    pub pipeline: PipelineSettings,
    pub outbox: OutboxSettings,
    pub dedup: DedupSettings,
    pub retention: RetentionSettings,
    pub shutdown: ShutdownSettings,
    #[serde(default)]
    pub cluster: ClusterSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    /// Published outbox rows written longer ago than this are deleted (`0`: kept forever).
    pub outbox: duration::Seconds,
    /// Events and their enforcements older than this are deleted (`0`: kept forever).
    pub events: duration::Seconds,
    /// Rows of each kind deleted per batch.
    pub batch: u32,
    /// Between two prunes.
    pub interval: duration::Seconds,
    /// Between two batches of one prune.
    pub pause: duration::Seconds,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSettings {
    /// Most events waiting to be stored at once (see `ports::Admission`).
    pub max_pending: usize,
    /// Most payload and config bytes written in one batch of events.
    pub max_batch_bytes: usize,
    /// How long `POST /events` and a webhook wait for their event before answering 503.
    pub answer_timeout: duration::Seconds,
}

/// The largest `pipeline.max_batch_bytes`: far below what one PostgreSQL message or
/// SQLite statement can carry.
pub const MAX_BATCH_BYTES_CEILING: usize = 256 << 20;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxSettings {
    /// Refusals by the broker after which a row is parked.
    pub max_attempts: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupSettings {
    /// How long an `Idempotency-Key` (or a webhook's delivery id) is remembered: a number
    /// of seconds or a duration such as `24h`, `10m`, `30s`.
    pub window: duration::Seconds,
}

/// Interpreters of process sensors: a program and its arguments, split on whitespace
/// (`python3 -u`); the sensor's entrypoint file is appended.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSettings {
    pub python: String,
    pub node: String,
    pub shell: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: String,
    /// A file holding the URL (a mounted secret); when set it replaces `url`.
    pub url_file: String,
    /// Seconds one database call may take (see `store::StoreOptions`).
    pub statement_timeout: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqSettings {
    /// Empty for the in-process bus.
    pub url: String,
    /// A file holding the URL (a mounted secret); when set it replaces `url`.
    pub url_file: String,
    pub exchange: String,
    pub tls: MqTlsSettings,
    /// What becomes of a message no queue takes: `park`, `retry` or `drop`.
    pub unroutable: Unroutable,
    /// Message types published to another exchange (and routing key) than `exchange`.
    pub routes: std::collections::BTreeMap<String, RouteSetting>,
}

/// `EnforcementCreated: attune.executions`, or with a routing key of its own:
/// `EnforcementCreated: {exchange: attune.executions, routing_key: execution.request}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum RouteSetting {
    Exchange(String),
    Full {
        exchange: String,
        #[serde(default)]
        routing_key: Option<String>,
    },
}

impl RouteSetting {
    /// The exchange, and the routing key when the route has its own.
    fn parts(&self) -> (&str, Option<&str>) {
        match self {
            RouteSetting::Exchange(exchange) => (exchange, None),
            RouteSetting::Full {
                exchange,
                routing_key,
            } => (exchange, routing_key.as_deref()),
        }
    }
}

/// The message types `mq.routes` may name: those the service publishes.
const ROUTABLE_TYPES: [&str; 2] = ["EventCreated", "EnforcementCreated"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unroutable {
    Park,
    Retry,
    Drop,
}

impl From<Unroutable> for UnroutablePolicy {
    fn from(value: Unroutable) -> Self {
        match value {
            Unroutable::Park => UnroutablePolicy::Park,
            Unroutable::Retry => UnroutablePolicy::Retry,
            Unroutable::Drop => UnroutablePolicy::Drop,
        }
    }
}

/// TLS to RabbitMQ, for `amqps://` URLs. Empty paths mean: the system's CA certificates,
/// no client certificate.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqTlsSettings {
    /// PEM file of the CA certificate(s) that signed the broker's certificate.
    pub ca_file: String,
    /// PEM file of the client certificate, for brokers that ask for one (with `key_file`).
    pub cert_file: String,
    /// PEM file of the client certificate's PKCS#8 key.
    pub key_file: String,
}

impl MqTlsSettings {
    fn is_set(&self) -> bool {
        !(self.ca_file.is_empty() && self.cert_file.is_empty() && self.key_file.is_empty())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    pub bind: String,
    pub token: String,
    /// A file holding the token (a mounted secret); when set it replaces `token`.
    pub token_file: String,
    /// Lets the admin API listen beyond loopback without a token: anyone who reaches the
    /// address can then stop sensors and inject events.
    pub allow_unauthenticated: bool,
    /// Serves `GET /metrics` without the token, for a Prometheus scraper.
    pub metrics_public: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// Where the webhook listener (`POST /webhooks/{path}`) binds.
    pub bind: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackSettings {
    pub autoload: Vec<PathBuf>,
    /// Reload an autoloaded pack shortly after its files change.
    #[serde(default)]
    pub watch: bool,
    /// How long a pack's files must be quiet before it is reloaded.
    #[serde(default = "default_watch_debounce")]
    pub watch_debounce: Seconds,
}

fn default_watch_debounce() -> Seconds {
    Seconds(std::time::Duration::from_secs(1))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensorSettings {
    pub enabled: bool,
    pub poll_interval: u64,
    pub max_concurrent_sensors: u32,
    pub sensor_timeout: u64,
    pub restart_on_error: bool,
    pub max_restart_attempts: u32,
    pub restart_backoff_initial: f64,
    pub restart_backoff_max: f64,
    pub healthy_period: f64,
    pub reconcile_interval: f64,
    /// Seconds a stopping sensor process gets between SIGTERM and SIGKILL.
    pub stop_grace: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownSettings {
    pub timeout: f64,
}

impl Settings {
    /// Defaults, then `file`, then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// Like [`Settings::load`], with the environment given as `(name, value)` pairs.
    ///
    /// Values are kept as the strings they are (a token `0123` stays `0123`) and converted
    /// only where a key wants a number or a boolean. `ATTUNE__PACKS__AUTOLOAD` is a
    /// comma-separated list of directories.
    pub fn load_with_env(
        file: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder().add_source(config::File::from_str(
            DEFAULT_YAML,
            config::FileFormat::Yaml,
        ));
        if let Some(file) = file {
            builder = builder.add_source(
                config::File::from(file)
                    .format(config::FileFormat::Yaml)
                    .required(true),
            );
        }
        let mut env = config::Map::new();
        for (name, value) in vars {
            if name == AUTOLOAD_VAR {
                let dirs: Vec<String> = value
                    .split(',')
                    .map(str::trim)
                    .filter(|d| !d.is_empty())
                    .map(str::to_owned)
                    .collect();
                builder = builder.set_override("packs.autoload", dirs)?;
            } else if name.starts_with("ATTUNE__") {
                env.insert(name, value);
            }
        }
        builder = builder.add_source(
            config::Environment::with_prefix("ATTUNE")
                .prefix_separator("__")
                .separator("__")
                .source(Some(env)),
        );
        let mut settings: Settings = builder.build()?.try_deserialize()?;
        settings.read_secret_files()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Defaults with YAML overrides on top, ignoring the environment: for tests and tools
    /// that must not pick up the operator's variables.
    pub fn from_yaml(overrides: &str) -> Result<Self, ConfigError> {
        let mut settings: Settings = config::Config::builder()
            .add_source(config::File::from_str(
                DEFAULT_YAML,
                config::FileFormat::Yaml,
            ))
            .add_source(config::File::from_str(overrides, config::FileFormat::Yaml))
            .build()?
            .try_deserialize()?;
        settings.read_secret_files()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Replaces each secret that is given as a file (`*_file`) with the file's content.
    fn read_secret_files(&mut self) -> Result<(), ConfigError> {
        for (key, path, value) in [
            (
                "database.url_file",
                &self.database.url_file,
                &mut self.database.url,
            ),
            ("mq.url_file", &self.mq.url_file, &mut self.mq.url),
            (
                "admin.token_file",
                &self.admin.token_file,
                &mut self.admin.token,
            ),
        ] {
            if path.is_empty() {
                continue;
            }
            *value = crate::secrets::read_secret_file(Path::new(path)).map_err(|reason| {
                ConfigError::SecretFile {
                    key,
                    path: path.clone(),
                    reason,
                }
            })?;
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_owned(),
            })
        };
        if let Err(reason) = self.cluster.check() {
            return Err(ConfigError::Invalid {
                key: "cluster",
                reason,
            });
        }
        let url = self.database.url.as_str();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return invalid(
                "database.url",
                "expected sqlite:PATH, postgres:// or postgresql://",
            );
        }
        if !(self.mq.url.is_empty()
            || self.mq.url.starts_with("amqp://")
            || self.mq.url.starts_with("amqps://"))
        {
            return invalid(
                "mq.url",
                "expected empty (in-process bus), amqp:// or amqps://",
            );
        }
        if self.mq.tls.is_set() && !self.mq.url.starts_with("amqps://") {
            return invalid(
                "mq.tls",
                "set only with an amqps:// mq.url (the connection is not encrypted otherwise)",
            );
        }
        if self.mq.tls.cert_file.is_empty() != self.mq.tls.key_file.is_empty() {
            return invalid(
                "mq.tls.cert_file",
                "a client certificate needs both mq.tls.cert_file and mq.tls.key_file",
            );
        }
        if self.mq.exchange.trim().is_empty() {
            return invalid("mq.exchange", "must not be empty");
        }
        for (message_type, route) in &self.mq.routes {
            if !ROUTABLE_TYPES.contains(&message_type.as_str()) {
                return invalid(
                    "mq.routes",
                    &format!(
                        "unknown message type '{message_type}' (the service publishes {})",
                        ROUTABLE_TYPES.join(" and ")
                    ),
                );
            }
            let (exchange, key) = route.parts();
            if exchange.trim().is_empty() || exchange.len() > 255 {
                return invalid(
                    "mq.routes",
                    &format!("the exchange of {message_type} must be 1 to 255 characters"),
                );
            }
            if key.is_some_and(|k| k.is_empty() || k.len() > 255) {
                return invalid(
                    "mq.routes",
                    &format!("the routing key of {message_type} must be 1 to 255 characters"),
                );
            }
        }
        if self.admin.bind.parse::<SocketAddr>().is_err() {
            return invalid(
                "admin.bind",
                "expected HOST:PORT with an IP address, e.g. 127.0.0.1:9180",
            );
        }
        if let Ok(addr) = self.admin.bind.parse::<SocketAddr>()
            && !addr.ip().is_loopback()
            && self.admin.token.is_empty()
            && !self.admin.allow_unauthenticated
        {
            return Err(ConfigError::Invalid {
                key: "admin.token",
                reason: format!(
                    "must be set (or admin.token_file) when admin.bind ({addr}) is not a \
                     loopback address; set admin.allow_unauthenticated: true to serve it \
                     without one"
                ),
            });
        }
        if self.webhook.bind.parse::<SocketAddr>().is_err() {
            return invalid(
                "webhook.bind",
                "expected HOST:PORT with an IP address, e.g. 127.0.0.1:9181",
            );
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return invalid(
                "log.level",
                "expected a level (error, warn, info, debug, trace) or a filter directive",
            );
        }
        if self.pipeline.max_pending == 0 || self.pipeline.max_pending > 1_000_000 {
            return invalid("pipeline.max_pending", "must be between 1 and 1000000");
        }
        if !(1024..=MAX_BATCH_BYTES_CEILING).contains(&self.pipeline.max_batch_bytes) {
            return invalid(
                "pipeline.max_batch_bytes",
                &format!("must be between 1024 and {MAX_BATCH_BYTES_CEILING}"),
            );
        }
        if !(1..=1000).contains(&self.outbox.max_attempts) {
            return invalid("outbox.max_attempts", "must be between 1 and 1000");
        }
        if self.dedup.window.0 <= Duration::ZERO {
            return invalid("dedup.window", "must be longer than 0 s");
        }
        let events_kept = self.retention.events.0;
        if !events_kept.is_zero() && events_kept < self.dedup.window.0 {
            return invalid(
                "retention.events",
                "must not be shorter than dedup.window (an idempotency key goes with its event)",
            );
        }
        if !(1..=100_000).contains(&self.retention.batch) {
            return invalid("retention.batch", "must be between 1 and 100000");
        }
        if self.retention.interval.0 < Duration::from_secs(1) {
            return invalid("retention.interval", "must be at least 1 s");
        }
        let answer = self.pipeline.answer_timeout.0;
        if answer < Duration::from_millis(100) || answer > Duration::from_secs(600) {
            return invalid("pipeline.answer_timeout", "must be between 0.1 s and 600 s");
        }
        if self.sensor.poll_interval == 0 {
            return invalid("sensor.poll_interval", "must be at least 1 second");
        }
        if self.sensor.max_concurrent_sensors == 0 {
            return invalid("sensor.max_concurrent_sensors", "must be at least 1");
        }
        if self.sensor.sensor_timeout == 0 {
            return invalid("sensor.sensor_timeout", "must be at least 1 second");
        }
        for (key, value) in [
            (
                "sensor.restart_backoff_initial",
                self.sensor.restart_backoff_initial,
            ),
            (
                "sensor.restart_backoff_max",
                self.sensor.restart_backoff_max,
            ),
            ("sensor.healthy_period", self.sensor.healthy_period),
            ("sensor.reconcile_interval", self.sensor.reconcile_interval),
            ("sensor.stop_grace", self.sensor.stop_grace),
            ("shutdown.timeout", self.shutdown.timeout),
            (
                "database.statement_timeout",
                self.database.statement_timeout,
            ),
        ] {
            if !(value.is_finite() && value > 0.0 && value < 1e9) {
                return invalid(key, "must be a positive number of seconds");
            }
        }
        if self.sensor.restart_backoff_max < self.sensor.restart_backoff_initial {
            return invalid(
                "sensor.restart_backoff_max",
                "must not be less than sensor.restart_backoff_initial",
            );
        }
        for (key, command) in [
            ("runtimes.python", &self.runtimes.python),
            ("runtimes.node", &self.runtimes.node),
            ("runtimes.shell", &self.runtimes.shell),
        ] {
            if command.split_whitespace().next().is_none() {
                return invalid(key, "must name a program, e.g. python3 -u");
            }
        }
        Ok(())
    }

    /// SIGTERM-to-SIGKILL grace period of sensor processes.
    pub fn sensor_stop_grace(&self) -> Duration {
        Duration::from_secs_f64(self.sensor.stop_grace)
    }

    pub fn admin_addr(&self) -> SocketAddr {
        // Checked by `validate`.
        self.admin
            .bind
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 9180)))
    }

    pub fn webhook_addr(&self) -> SocketAddr {
        // Checked by `validate`.
        self.webhook
            .bind
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 9181)))
    }

    pub fn admin_token(&self) -> Option<&str> {
        Some(self.admin.token.as_str()).filter(|t| !t.is_empty())
    }

    /// `mq.routes` as the publisher takes them.
    pub fn bus_routes(&self) -> Vec<crate::bus::Route> {
        self.mq
            .routes
            .iter()
            .map(|(message_type, route)| {
                let (exchange, routing_key) = route.parts();
                crate::bus::Route {
                    message_type: message_type.clone(),
                    exchange: exchange.to_owned(),
                    routing_key: routing_key.map(str::to_owned),
                }
            })
            .collect()
    }

    pub fn store_options(&self) -> crate::store::StoreOptions {
        crate::store::StoreOptions {
            statement_timeout: Duration::from_secs_f64(self.database.statement_timeout),
            ..Default::default()
        }
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.shutdown.timeout)
    }

    pub fn supervisor(&self) -> SupervisorConfig {
        let s = &self.sensor;
        SupervisorConfig {
            sensors_enabled: s.enabled,
            restart_on_error: s.restart_on_error,
            max_restart_attempts: s.max_restart_attempts,
            backoff_initial: Duration::from_secs_f64(s.restart_backoff_initial),
            backoff_max: Duration::from_secs_f64(s.restart_backoff_max),
            healthy_after: Duration::from_secs_f64(s.healthy_period),
            reconcile_interval: Some(Duration::from_secs_f64(s.reconcile_interval)),
            // A process sensor needs its SIGTERM grace plus time to kill and reap the
            // group; the actor stop wait must cover that in turn.
            stop_grace: self.sensor_stop_grace() + Duration::from_secs(2),
            stop_timeout: self.sensor_stop_grace() + Duration::from_secs(5),
            max_pending: self.pipeline.max_pending,
            max_batch_bytes: self.pipeline.max_batch_bytes,
            outbox_max_attempts: self.outbox.max_attempts,
            unroutable: self.mq.unroutable.into(),
            ..SupervisorConfig::default()
        }
    }
}

#[cfg(test)]
mod tests;
