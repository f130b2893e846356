//! Content dedup on a sensor or a trigger: `dedup: {key: [payload.alert_id], window: 10m}`
//! stores an event only when no event with the same key values was stored within the
//! window. The key values are hashed into an idempotency key (scope
//! `dedup:sensor:<ref>` or `dedup:trigger:<ref>`), so the store's idempotent write decides
//! it in the event's own transaction.

use serde::{Deserialize, Serialize};

/// A sensor's or trigger's `dedup`, as stored with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentDedup {
    /// Field paths (`payload.alert_id`) whose values make the key.
    pub key: Vec<String>,
    /// How long a stored event's key holds back its duplicates, in whole seconds.
    pub window_secs: u64,
}

impl ContentDedup {
    pub fn window(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.window_secs)
    }
}
