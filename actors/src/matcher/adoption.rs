//! Matching what a dead instance stored but never matched.
//!
//! Each instance matches the events it stores and keeps its own watermark (see
//! `Store::matched_through`). When an instance dies between committing events and
//! committing their enforcements, its watermark stays behind: a live instance notices
//! (no heartbeat for `live_for`), takes the lease `matcher:<instance>` so that only one
//! live instance does the work, matches the events above that watermark a chunk at a
//! time (advancing the dead one's watermark as it goes), then forgets the watermark. An
//! enforcement the dead instance did commit is found, not stored twice.

use std::time::Duration;

use super::recovery::RECOVERY_BATCH;
use super::{MatchRequest, MatcherState};
use crate::domain::{Id, adoption_lease};
use crate::outbox::OutboxMsg;
use crate::ports::StoreError;

/// Whose events this matcher matches, and when another instance counts as gone.
#[derive(Debug, Clone)]
pub struct MatcherIdentity {
    /// The instance whose watermark this matcher keeps (the store's `stored_by`).
    pub instance: String,
    /// An instance without a heartbeat for this long is dead and its unmatched events
    /// are adopted. Zero when no other instance can be alive (SQLite's single instance):
    /// every other watermark is then adopted at once.
    pub live_for: Duration,
}

impl Default for MatcherIdentity {
    fn default() -> Self {
        Self {
            instance: "local".to_owned(),
            live_for: Duration::ZERO,
        }
    }
}

/// How often the matcher looks for dead instances' watermarks.
pub const ADOPT_CHECK: Duration = Duration::from_secs(2);

/// A dead instance's events being matched: those above `after`, up to `up_to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Adoption {
    instance: String,
    /// Its watermark when the adoption began.
    start: Id,
    after: Id,
    up_to: Id,
}

impl MatcherState {
    /// One step of adoption; returns how long to wait before the next.
    pub(super) async fn adopt_step(&mut self) -> Duration {
        let step = match self.adopting.take() {
            None => self.find_orphan().await,
            Some(adoption) => self.adopt_chunk(adoption).await,
        };
        match step {
            Ok(Some(wait)) => wait,
            Ok(None) => ADOPT_CHECK,
            Err(error) => {
                tracing::warn!(%error, "cannot match a stopped instance's events yet; will retry");
                crate::batch::retry_delay(4)
            }
        }
    }

    /// Picks the first dead instance's watermark this instance may adopt; `None` when
    /// there is none.
    async fn find_orphan(&mut self) -> Result<Option<Duration>, StoreError> {
        let identity = &self.args.identity;
        let now = chrono::Utc::now();
        let live_since = crate::domain::capped_before(now, identity.live_for);
        let orphans = self
            .args
            .store
            .orphaned_watermarks(&identity.instance, live_since)
            .await?;
        for orphan in orphans {
            if !self.hold_adoption_lease(&orphan.instance).await? {
                continue;
            }
            let up_to = self.args.store.last_event_id().await?;
            self.adopting = Some(Adoption {
                instance: orphan.instance,
                start: orphan.matched_through,
                after: orphan.matched_through,
                up_to,
            });
            return Ok(Some(Duration::ZERO));
        }
        Ok(None)
    }

    /// Matches one chunk of the adopted events, or finishes the adoption.
    async fn adopt_chunk(&mut self, adoption: Adoption) -> Result<Option<Duration>, StoreError> {
        let store = self.args.store.clone();
        // Keeps the lease while the work lasts; losing it (another instance took over
        // after this one stalled) only means both match, which stores nothing twice.
        self.hold_adoption_lease(&adoption.instance).await?;
        let events = store
            .events_between(
                &adoption.instance,
                adoption.after,
                adoption.up_to,
                RECOVERY_BATCH,
            )
            .await;
        let events = match events {
            Ok(events) => events,
            Err(error) => {
                self.adopting = Some(adoption);
                return Err(error);
            }
        };
        let Some(last) = events.last().map(|e| e.id) else {
            // Forgotten only when nothing it stored is above its watermark: an event that
            // committed late (or an instance that came back) keeps it for the next look,
            // which waits, so an instance only taken for dead is not chased in a loop.
            if store.forget_watermark(&adoption.instance).await? {
                tracing::info!(instance = %adoption.instance, "a stopped instance's watermark is forgotten: all it stored is matched");
                return Ok(Some(Duration::ZERO));
            }
            self.release_adoption_lease(&adoption.instance).await;
            return Ok(None);
        };
        if events.first().is_some_and(|e| e.id > adoption.after) && adoption.after == adoption.start
        {
            tracing::info!(
                instance = %adoption.instance,
                after = adoption.after,
                "matching the events a stopped instance left unmatched"
            );
        }
        let requests: Vec<MatchRequest> = events.into_iter().map(MatchRequest::recovered).collect();
        if let Err(error) = self.write_enforcements(&requests, &adoption.instance).await {
            self.adopting = Some(adoption);
            return Err(error);
        }
        self.args.outbox.send(OutboxMsg::Wake);
        self.adopting = Some(Adoption {
            after: last,
            ..adoption
        });
        Ok(Some(Duration::ZERO))
    }

    /// Takes or renews the adoption lease of `instance`; true when this instance holds it.
    /// Without a liveness bound there is no other instance, so no lease either.
    async fn hold_adoption_lease(&self, instance: &str) -> Result<bool, StoreError> {
        let identity = &self.args.identity;
        if identity.live_for.is_zero() {
            return Ok(true);
        }
        let now = chrono::Utc::now();
        let held = self
            .args
            .store
            .acquire_lease(
                &adoption_lease(instance),
                &identity.instance,
                now,
                crate::domain::capped_after(now, crate::domain::chrono_span(identity.live_for)),
            )
            .await?;
        Ok(held.is_some())
    }

    async fn release_adoption_lease(&self, instance: &str) {
        let identity = &self.args.identity;
        if identity.live_for.is_zero() {
            return;
        }
        let name = adoption_lease(instance);
        if let Err(error) = self
            .args
            .store
            .release_lease(&name, &identity.instance)
            .await
        {
            tracing::debug!(%error, lease = %name, "adoption lease not released; it expires");
        }
    }
}
