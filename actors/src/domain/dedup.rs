//! Content dedup on a sensor or a trigger: `dedup: {key: [payload.alert_id], window: 10m}`
//! stores an event only when no event with the same key values was stored within the
//! window. The key values are hashed into an idempotency key (scope
//! `dedup:sensor:<ref>` or `dedup:trigger:<ref>`), so the store's idempotent write decides
//! it in the event's own transaction.

use serde::{Deserialize, Serialize};

/// A key that makes storing an event idempotent: `POST /events`' `Idempotency-Key`, or a
/// webhook's delivery id (its `dedup_header`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyKey {
    /// Whose keys these are: `api` for `POST /events`, `webhook:<sensor ref>` for a
    /// webhook, so two senders' keys never collide.
    pub scope: String,
    pub key: String,
    /// How long the key is remembered (`dedup.window`); an older one is forgotten.
    pub window: std::time::Duration,
}

/// The longest key accepted, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 255;

/// How the scope of a content key (a sensor's or trigger's `dedup`) begins; such keys
/// expire with their own window rather than `dedup.window`.
pub const CONTENT_KEY_SCOPE: &str = "dedup:";

impl IdempotencyKey {
    /// A content key (`dedup`), as opposed to a request's key.
    pub fn is_content_key(&self) -> bool {
        self.scope.starts_with(CONTENT_KEY_SCOPE)
    }

    /// A key of 1 to 255 visible ASCII characters, or why not.
    pub fn new(scope: &str, key: &str, window: std::time::Duration) -> Result<Self, String> {
        if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_BYTES {
            return Err(format!(
                "must be 1 to {MAX_IDEMPOTENCY_KEY_BYTES} characters, got {}",
                key.len()
            ));
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("must be visible ASCII characters (no spaces)".to_owned());
        }
        Ok(Self {
            scope: scope.to_owned(),
            key: key.to_owned(),
            window,
        })
    }
}

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
