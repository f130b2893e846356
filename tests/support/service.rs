#![allow(dead_code)]
//! A real [`Service`] on a fresh SQLite file, for tests of the admin API and the wiring.
//!
//! ```ignore
//! mod support { pub mod service; }
//! use support::service::{TestService, fixture};
//! let svc = TestService::builder().autoload(fixture("timer")).start().await;
//! let app = svc.router(); // the admin router, for `tower::ServiceExt::oneshot`
//! // ...
//! svc.shutdown().await;
//! ```
//!
//! The admin API listens on `127.0.0.1:0` (a free port, see [`Service::admin_addr`]), the
//! bus is the in-process one, no pack is loaded unless asked, automatic reconciliation is
//! effectively off (only at start and on `POST /reload`), and restart backoffs and the
//! shutdown timeout are short so tests stay fast.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use attune_sensor::admin::{self, AdminState};
use attune_sensor::bus::redact_url;
use attune_sensor::config::Settings;
use attune_sensor::service::Service;

/// The directory of a fixture pack under `tests/fixtures/packs`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/packs")
        .join(name)
}

/// The example pack shipped in `config/packs/example`.
pub fn example_pack() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/packs/example")
}

/// A fresh SQLite database in its own temporary directory, removed on drop.
pub struct TempDatabase {
    pub dir: tempfile::TempDir,
    /// A `sqlite://` URL of a file that does not exist yet.
    pub url: String,
}

impl TempDatabase {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let url = format!("sqlite://{}", dir.path().join("attune.db").display());
        Self { dir, url }
    }
}

impl Default for TempDatabase {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Default)]
pub struct Builder {
    autoload: Vec<PathBuf>,
    token: Option<String>,
    metrics_public: bool,
    yaml: Vec<String>,
}

impl Builder {
    /// Loads this pack directory at start.
    pub fn autoload(mut self, dir: PathBuf) -> Self {
        self.autoload.push(dir);
        self
    }

    /// Requires `Authorization: Bearer <token>` on the admin API.
    pub fn token(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self
    }

    /// Serves `GET /metrics` without the token.
    pub fn metrics_public(mut self) -> Self {
        self.metrics_public = true;
        self
    }

    /// More YAML overrides, applied after the test defaults.
    pub fn yaml(mut self, yaml: &str) -> Self {
        self.yaml.push(yaml.to_owned());
        self
    }

    pub async fn start(self) -> TestService {
        let database = TempDatabase::new();
        let autoload: Vec<String> = self
            .autoload
            .iter()
            .map(|p| serde_json::to_string(&p.display().to_string()).expect("path as JSON"))
            .collect();
        // YAML is a superset of JSON, so JSON strings quote paths safely.
        let mut yaml = format!(
            "database: {{url: {url}}}\n\
             admin: {{bind: \"127.0.0.1:0\", token: {token}, metrics_public: {public}}}\n\
             webhook: {{bind: \"127.0.0.1:0\"}}\n\
             packs: {{autoload: [{autoload}]}}\n\
             log: {{level: warn}}\n\
             sensor: {{restart_backoff_initial: 0.1, restart_backoff_max: 0.5, \
             reconcile_interval: 3600}}\n\
             shutdown: {{timeout: 2}}\n",
            url = serde_json::to_string(&database.url).expect("url as JSON"),
            token = serde_json::to_string(self.token.as_deref().unwrap_or("")).expect("json"),
            autoload = autoload.join(", "),
            public = self.metrics_public,
        );
        for extra in &self.yaml {
            // Later sources override earlier ones key by key.
            yaml.push_str(extra);
        }
        let settings = Settings::from_yaml(&yaml)
            .unwrap_or_else(|e| panic!("test settings refused: {e}\n{yaml}"));
        let service = Service::start(&settings)
            .await
            .unwrap_or_else(|e| panic!("service did not start: {e}"));
        TestService {
            service: Some(service),
            settings,
            database,
        }
    }
}

/// A started service; call [`TestService::shutdown`] at the end of the test.
pub struct TestService {
    service: Option<Service>,
    pub settings: Settings,
    pub database: TempDatabase,
}

impl TestService {
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A service with no pack.
    pub async fn start() -> Self {
        Builder::default().start().await
    }

    pub fn service(&self) -> &Service {
        self.service.as_ref().expect("service is running")
    }

    /// The admin router over this service's tree, store and bus, as `Service::start`
    /// builds it, for in-process requests.
    pub fn router(&self) -> axum::Router {
        let service = self.service();
        admin::router(AdminState {
            tree: service.tree.clone(),
            store: service.store.clone(),
            publisher: service.publisher.clone(),
            token: self.settings.admin_token().map(Arc::from),
            database_url: redact_url(&self.settings.database.url),
            mq_url: redact_url(&self.settings.mq.url),
            last_backlog: Default::default(),
            answer_timeout: self.settings.pipeline.answer_timeout.0,
            dedup_window: self.settings.dedup.window.0,
            metrics: Default::default(),
            metrics_public: self.settings.admin.metrics_public,
            retention: Default::default(),
            pack_watch: Default::default(),
            identity: service.identity.clone(),
        })
    }

    /// `http://127.0.0.1:<port>` of the listening admin API.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.service().admin_addr)
    }

    pub async fn shutdown(mut self) {
        if let Some(service) = self.service.take() {
            tokio::time::timeout(Duration::from_secs(20), service.shutdown())
                .await
                .expect("service shut down within 20 s");
        }
    }
}

/// Polls `check` until it returns `Some`, failing the test with `what` after `within`.
pub async fn wait_for<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
