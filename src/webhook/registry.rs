//! Which running webhook sensor serves which path.

use attune_actors::ports::DetectionSink;
use attune_actors::sync::lock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{TokenBucket, WebhookAuth};

/// One webhook sensor's endpoint.
pub struct WebhookRoute {
    pub sensor_ref: String,
    pub auth: WebhookAuth,
    pub max_body_bytes: usize,
    /// Bodies that are not JSON are refused with 415.
    pub require_json: bool,
    pub limiter: Option<TokenBucket>,
    /// Headers (lower case) kept out of the payload besides the credential ones.
    pub drop_headers: Vec<String>,
    /// Deliveries named by a header are stored once.
    pub dedup: Option<Dedup>,
    /// How long a request waits for its event to be stored before it is answered 503.
    pub answer_timeout: std::time::Duration,
    pub sink: DetectionSink,
}

/// A webhook's `dedup_header` and how long its values are remembered.
#[derive(Debug, Clone)]
pub struct Dedup {
    /// Lower case.
    pub header: String,
    pub window: std::time::Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("webhook path '{path}' is already served by sensor '{owner}'")]
pub struct PathTaken {
    pub path: String,
    pub owner: String,
}

/// The paths of the running webhook sensors.
#[derive(Default)]
pub struct WebhookRegistry {
    /// Path to (registration id, route). Every change is a single insert or remove, so
    /// the map stays consistent even if a panic poisoned the lock.
    routes: Mutex<HashMap<String, (u64, Arc<WebhookRoute>)>>,
    next_id: AtomicU64,
    /// Counts requests by sensor and status code.
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl std::fmt::Debug for WebhookRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let paths: Vec<String> = lock(&self.routes).keys().cloned().collect();
        f.debug_struct("WebhookRegistry")
            .field("paths", &paths)
            .finish()
    }
}

impl WebhookRegistry {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A registry whose listener counts into `metrics`.
    pub fn with_metrics(metrics: Arc<crate::metrics::Metrics>) -> Arc<Self> {
        Arc::new(Self {
            metrics,
            ..Self::default()
        })
    }

    /// Serves `path` for this route until the returned registration is dropped. A path
    /// held by another sensor is refused; one held by the same sensor (an instance still
    /// being torn down during a restart) is taken over.
    pub fn register(
        self: &Arc<Self>,
        path: &str,
        route: WebhookRoute,
    ) -> Result<Registration, PathTaken> {
        let mut routes = lock(&self.routes);
        if let Some((_, existing)) = routes.get(path)
            && existing.sensor_ref != route.sensor_ref
        {
            return Err(PathTaken {
                path: path.to_owned(),
                owner: existing.sensor_ref.clone(),
            });
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        routes.insert(path.to_owned(), (id, Arc::new(route)));
        Ok(Registration {
            registry: Arc::clone(self),
            path: path.to_owned(),
            id,
        })
    }

    /// The route serving `path`, held by the request even if the sensor stops meanwhile.
    pub(super) fn route(&self, path: &str) -> Option<Arc<WebhookRoute>> {
        lock(&self.routes).get(path).map(|(_, r)| Arc::clone(r))
    }

    /// The registered paths, sorted.
    pub fn paths(&self) -> Vec<String> {
        let mut paths: Vec<String> = lock(&self.routes).keys().cloned().collect();
        paths.sort();
        paths
    }
}

/// A path served while this lives.
pub struct Registration {
    registry: Arc<WebhookRegistry>,
    path: String,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut routes = lock(&self.registry.routes);
        // A newer registration of the same sensor may have taken the path over.
        if routes.get(&self.path).is_some_and(|(id, _)| *id == self.id) {
            routes.remove(&self.path);
        }
    }
}
