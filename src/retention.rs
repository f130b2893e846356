//! Retention: published outbox rows, old events (with their enforcements) and expired
//! idempotency keys are deleted in small batches, with a pause between batches, so that a
//! service left running for months does not fill its disk and the pipeline's own writes
//! are never held up for long. Nothing unpublished and no event the matcher has not
//! matched yet is ever removed (the store's `prune` guarantees it).
//!
//! Runs in the background every `retention.interval`, and once on demand with
//! `attune-sensor prune [--dry-run]`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use attune_actors::domain::{PruneCount, PruneCutoffs};
use attune_actors::ports::{Store, StoreError};
use attune_actors::sync::lock;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::Settings;
use crate::metrics::Metrics;

/// What is kept, and how the pruner paces itself.
#[derive(Debug, Clone, PartialEq)]
pub struct RetentionPolicy {
    /// Published outbox rows older than this go; `None` keeps them.
    pub outbox: Option<Duration>,
    /// Events (and their enforcements) older than this go; `None` keeps them.
    pub events: Option<Duration>,
    /// Idempotency keys older than `dedup.window` are of no use.
    pub keys: Duration,
    /// Rows of each kind per batch.
    pub batch: u32,
    /// Between two prunes.
    pub interval: Duration,
    /// Between two batches of one prune.
    pub pause: Duration,
}

impl RetentionPolicy {
    pub fn from_settings(settings: &Settings) -> Self {
        let r = &settings.retention;
        let kept = |d: Duration| (!d.is_zero()).then_some(d);
        Self {
            outbox: kept(r.outbox.0),
            events: kept(r.events.0),
            keys: settings.dedup.window.0,
            batch: r.batch,
            interval: r.interval.0,
            pause: r.pause.0,
        }
    }

    /// The cut-offs of a prune that starts at `now`.
    pub fn cutoffs(&self, now: DateTime<Utc>) -> PruneCutoffs {
        let before = |age: Duration| {
            chrono::Duration::from_std(age)
                .ok()
                .and_then(|age| now.checked_sub_signed(age))
        };
        PruneCutoffs {
            outbox_before: self.outbox.and_then(before),
            events_before: self.events.and_then(before),
            keys_before: before(self.keys),
        }
    }
}

/// What the pruner did, for `/status` and `/metrics`.
#[derive(Debug, Default)]
pub struct PruneStats(Mutex<PruneState>);

#[derive(Debug, Default, Clone, Serialize)]
pub struct PruneState {
    /// Rows removed since the service started.
    pub removed: PruneCount,
    pub last_prune_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

impl PruneStats {
    pub fn snapshot(&self) -> PruneState {
        lock(&self.0).clone()
    }
}

/// Prunes until nothing past the cut-offs is left: batch after batch, pausing between
/// them. Returns what it removed.
pub async fn prune_all(
    store: &dyn Store,
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
) -> Result<PruneCount, StoreError> {
    let cutoffs = policy.cutoffs(now);
    let mut removed = PruneCount::default();
    loop {
        let batch = store.prune(cutoffs, policy.batch).await?;
        removed.add(batch);
        let full = u64::from(policy.batch);
        let more = batch.outbox >= full || batch.events >= full || batch.idempotency_keys >= full;
        if !more {
            return Ok(removed);
        }
        tokio::time::sleep(policy.pause).await;
    }
}

/// Runs a prune every `policy.interval` until the task is aborted (on shutdown), the
/// first one shortly after start.
pub fn spawn(
    store: Arc<dyn Store>,
    policy: RetentionPolicy,
    stats: Arc<PruneStats>,
    metrics: Arc<Metrics>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        tokio::time::sleep(policy.interval.min(Duration::from_secs(10))).await;
        loop {
            let started = Utc::now();
            let outcome = prune_all(store.as_ref(), &policy, started).await;
            {
                let mut state = lock(&stats.0);
                state.last_prune_at = Some(started);
                match &outcome {
                    Ok(removed) => {
                        state.removed.add(*removed);
                        state.last_error = None;
                        metrics.pruned(removed, started);
                        if removed.total() > 0 {
                            tracing::info!(?removed, "pruned old rows");
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "pruning old rows failed; will try again");
                        state.last_error = Some(error.to_string());
                    }
                }
            }
            tokio::time::sleep(policy.interval).await;
        }
    })
}

/// The `prune` command's report: one line per table.
pub fn render(count: &PruneCount, dry_run: bool) -> String {
    let verb = if dry_run { "would remove" } else { "removed" };
    let mut out = String::new();
    for (table, n) in [
        ("outbox", count.outbox),
        ("event", count.events),
        ("enforcement", count.enforcements),
        ("idempotency_key", count.idempotency_keys),
    ] {
        if dry_run && table == "idempotency_key" {
            continue;
        }
        out.push_str(&format!("{table}: {verb} {n} rows\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_keeps_forever_and_cutoffs_are_ages_before_now() {
        let settings = Settings::from_yaml("retention: {outbox: 0, events: 2d}\n").unwrap();
        let policy = RetentionPolicy::from_settings(&settings);
        assert_eq!(policy.outbox, None);
        let now = Utc::now();
        let cutoffs = policy.cutoffs(now);
        assert_eq!(cutoffs.outbox_before, None);
        assert_eq!(cutoffs.events_before, Some(now - chrono::Duration::days(2)));
        assert_eq!(cutoffs.keys_before, Some(now - chrono::Duration::hours(24)));
        let defaults = RetentionPolicy::from_settings(&Settings::from_yaml("{}").unwrap());
        assert_eq!(defaults.outbox, Some(Duration::from_secs(3600)));
        assert_eq!(defaults.events, Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(defaults.batch, 1000);
    }
}
