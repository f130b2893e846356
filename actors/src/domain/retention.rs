//! What retention removes: the cut-offs it works to and the rows it counts.

use chrono::{DateTime, Utc};
use serde::Serialize;

/// What retention no longer keeps: rows older than these moments (`None`: kept forever).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneCutoffs {
    /// Outbox rows published before this.
    pub outbox_before: Option<DateTime<Utc>>,
    /// Events stored before this (and already matched), with their enforcements.
    pub events_before: Option<DateTime<Utc>>,
    /// Idempotency keys written before this (past `dedup.window`).
    pub keys_before: Option<DateTime<Utc>>,
}

/// Rows removed (or that would be), per table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PruneCount {
    pub outbox: u64,
    pub events: u64,
    pub enforcements: u64,
    pub idempotency_keys: u64,
}

impl PruneCount {
    pub fn total(&self) -> u64 {
        self.outbox + self.events + self.enforcements + self.idempotency_keys
    }

    pub fn add(&mut self, other: PruneCount) {
        self.outbox += other.outbox;
        self.events += other.events;
        self.enforcements += other.enforcements;
        self.idempotency_keys += other.idempotency_keys;
    }
}
