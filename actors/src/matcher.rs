//! `RuleMatcherActor`: matches stored events against the enabled rules of their trigger
//! and writes one enforcement per matching rule.
//!
//! Rules are compiled once per trigger and cached until the supervisor's `Reconcile`
//! refreshes them. A rule whose conditions do not compile is skipped with an error naming
//! it; it never stops other rules from matching.

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

use crate::batch::{Batcher, GroupCommit, flush_all, on_flush};
use crate::conditions::evaluation_context;
use crate::domain::{Event, NewEnforcement, Watermark};
use crate::live_ref::LiveRef;
use crate::outbox::OutboxMsg;
use crate::ports::{IntakeError, MatchOutcome, PipelineMetrics, Store, StoreError};
use crate::status::ThrottleCounts;
use crate::sync::set_error;

/// A stored event to match, and who waits for its enforcements (the admin API's
/// `POST /events`), if anyone.
pub struct MatchRequest {
    pub event: Event,
    pub reply: Option<oneshot::Sender<Result<MatchOutcome, IntakeError>>>,
    /// The event is the first of a repeated idempotency key: matched again (a no-op when
    /// its enforcements exist, the recovery when an uncertain commit kept it from the
    /// matcher), and answered as a repeat.
    pub repeat: bool,
}

impl MatchRequest {
    /// An event read back from the store to be matched again (recovery, adoption): nobody
    /// waits for it.
    fn recovered(event: Event) -> Self {
        Self {
            event,
            reply: None,
            repeat: false,
        }
    }
}

/// What the rule matcher hears.
pub enum MatcherMsg {
    /// Stored events from the generator, in id order.
    Match(Vec<MatchRequest>),
    /// Group commit: write the enforcements of what is buffered (see `batch.rs`).
    Flush,
    /// Forget cached rules; they are reloaded on the next event of each trigger.
    RefreshRules,
    /// Writes everything buffered (retrying until the deadline) and replies whether it
    /// all got written; used on shutdown.
    FlushAll(tokio::time::Instant, RpcReplyPort<bool>),
    /// One step of recovery: matching the events stored above the watermark that a
    /// previous run (or matcher) never matched.
    Recover,
    /// One step of matching what dead instances stored and never matched (see
    /// `adoption.rs`), then waits for the next.
    Adopt,
    /// Emits the enforcements of `once_after` windows that have ended, then waits for the
    /// next one to end (checking at least every [`CLOSE_CHECK_MAX`]: another instance may
    /// have opened one).
    CloseWindows,
}

/// The longest the matcher waits between looks for ended throttle windows.
pub const CLOSE_CHECK_MAX: std::time::Duration = std::time::Duration::from_secs(2);

/// Most windows closed in one transaction.
const CLOSE_BATCH: u32 = 500;

pub struct RuleMatcherActor;

pub struct MatcherArgs {
    pub store: Arc<dyn Store>,
    /// Woken after each commit, so new outbox rows go out at once.
    pub outbox: LiveRef<OutboxMsg>,
    pub max_batch: usize,
    pub last_error: Arc<Mutex<Option<String>>>,
    pub metrics: Arc<dyn PipelineMetrics>,
    /// Matches each throttled rule suppressed or held, for the status.
    pub throttled: Arc<ThrottleCounts>,
    pub identity: MatcherIdentity,
}

mod adoption;
mod recovery;
mod rules;

use adoption::Adoption;
pub use adoption::{ADOPT_CHECK, MatcherIdentity};
use recovery::Recovery;
use rules::CompiledRule;

pub struct MatcherState {
    args: MatcherArgs,
    batcher: Batcher<MatchRequest>,
    rules: HashMap<String, Arc<Vec<CompiledRule>>>,
    recovery: Recovery,
    /// New events that arrive while recovery runs; they follow the recovered ones so the
    /// watermark only ever passes events that are matched.
    held: Vec<MatchRequest>,
    /// Set when held events had to be written before recovery finished (shutdown): the
    /// watermark then stays where it is and the next start recovers the rest.
    watermark_frozen: bool,
    /// A dead instance whose events are being matched, if any.
    adopting: Option<Adoption>,
}

impl Actor for RuleMatcherActor {
    type Msg = MatcherMsg;
    type State = MatcherState;
    type Arguments = MatcherArgs;

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        myself.send_message(MatcherMsg::Recover)?;
        myself.send_message(MatcherMsg::Adopt)?;
        // Windows that ended while the service was down go out now.
        myself.send_message(MatcherMsg::CloseWindows)?;
        Ok(())
    }

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: MatcherArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(MatcherState {
            batcher: Batcher::new(args.max_batch),
            args,
            rules: HashMap::new(),
            recovery: Recovery::Pending,
            held: Vec::new(),
            watermark_frozen: false,
            adopting: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            MatcherMsg::Match(requests) => {
                if state.recovery == Recovery::Done {
                    state.enqueue(&myself, requests)?;
                } else {
                    state.held.extend(requests);
                }
            }
            MatcherMsg::Flush => on_flush(state, &myself, || MatcherMsg::Flush).await?,
            MatcherMsg::RefreshRules => state.rules.clear(),
            MatcherMsg::Recover => state.recover_step(&myself).await?,
            MatcherMsg::Adopt => {
                let wait = state.adopt_step().await;
                myself.send_after(wait, || MatcherMsg::Adopt);
            }
            MatcherMsg::CloseWindows => {
                let wait = state.close_windows().await;
                myself.send_after(wait, || MatcherMsg::CloseWindows);
            }
            MatcherMsg::FlushAll(deadline, reply) => {
                if state.recovery != Recovery::Done && !state.held.is_empty() {
                    state.watermark_frozen = true;
                    let held = std::mem::take(&mut state.held);
                    for request in held {
                        state.batcher.push(request);
                    }
                }
                let _ = reply.send(flush_all(state, deadline).await);
            }
        }
        Ok(())
    }
}

impl MatcherState {
    /// Buffers requests for the next group commit.
    fn enqueue(
        &mut self,
        myself: &ActorRef<MatcherMsg>,
        requests: Vec<MatchRequest>,
    ) -> Result<(), ractor::MessagingErr<MatcherMsg>> {
        let mut schedule = false;
        for request in requests {
            schedule |= self.batcher.push(request);
        }
        if schedule {
            myself.send_message(MatcherMsg::Flush)?;
        }
        Ok(())
    }

    async fn rules_for(&mut self, trigger_ref: &str) -> Result<Arc<Vec<CompiledRule>>, StoreError> {
        if let Some(rules) = self.rules.get(trigger_ref) {
            return Ok(rules.clone());
        }
        let rules = self
            .args
            .store
            .enabled_rules_for_trigger(trigger_ref)
            .await?;
        let compiled: Vec<CompiledRule> = rules
            .into_iter()
            .filter_map(CompiledRule::compile)
            .collect();
        let compiled = Arc::new(compiled);
        self.rules.insert(trigger_ref.to_owned(), compiled.clone());
        Ok(compiled)
    }

    /// The watermark to advance `instance` (this one's, or a dead one's being adopted) to,
    /// unless this instance's is frozen.
    fn watermark(&self, instance: &str, matched_through: i64) -> Option<Watermark> {
        let frozen = self.watermark_frozen && instance == self.args.identity.instance;
        (!frozen).then(|| Watermark {
            instance: instance.to_owned(),
            matched_through,
        })
    }

    /// Advances the watermark of `instance` (this one's, or a dead one's being adopted).
    async fn advance_watermark(
        &self,
        instance: &str,
        matched_through: i64,
    ) -> Result<(), StoreError> {
        match self.watermark(instance, matched_through) {
            Some(matched) => {
                self.args
                    .store
                    .set_matched_through(&matched.instance, matched.matched_through)
                    .await
            }
            None => Ok(()),
        }
    }

    /// Evaluates every event of the batch (stored by `instance`) and stores all
    /// enforcements in one write, then advances that instance's watermark. Returns the
    /// enforcement ids of each event, in batch order.
    async fn write_enforcements(
        &mut self,
        batch: &[MatchRequest],
        instance: &str,
    ) -> Result<Vec<Vec<i64>>, StoreError> {
        let matching = std::time::Instant::now();
        let mut new = Vec::new();
        let mut owners = Vec::new();
        for (index, request) in batch.iter().enumerate() {
            let event = &request.event;
            let rules = self.rules_for(&event.trigger_ref).await?;
            if rules.is_empty() {
                continue;
            }
            let context = evaluation_context(event);
            for compiled in rules.iter().filter(|r| r.conditions.matches(&context)) {
                let (action_params, error) = compiled.render(&context);
                if let Some(error) = &error {
                    tracing::warn!(rule = %compiled.rule.r#ref, event = event.id, %error, "enforcement stored as failed: its action parameters could not be rendered");
                }
                new.push(NewEnforcement {
                    rule: compiled.rule.id,
                    rule_ref: compiled.rule.r#ref.clone(),
                    trigger_ref: event.trigger_ref.clone(),
                    event: event.id,
                    payload: event.payload.clone(),
                    condition: compiled.conditions.top_level().to_owned(),
                    conditions: compiled.rule.conditions.clone(),
                    correlation_id: event.message_id,
                    traceparent: event.traceparent.clone(),
                    action_ref: compiled.rule.action_ref.clone(),
                    action_params,
                    error,
                    throttle: compiled.claim(&context),
                    summary: None,
                });
                owners.push(index);
            }
        }
        self.args
            .metrics
            .events_matched(batch.len(), matching.elapsed());
        let mut per_event = vec![Vec::new(); batch.len()];
        let matched_through = batch.iter().map(|r| r.event.id).max().unwrap_or(0);
        if new.is_empty() {
            self.advance_watermark(instance, matched_through).await?;
            return Ok(per_event);
        }
        // The enforcements and the watermark commit together (a store without transactions
        // writes the enforcements first: a crash between the two re-matches the events on
        // the next start, and storing an enforcement again is a no-op).
        let writing = std::time::Instant::now();
        // Only a throttled match can come back without an enforcement.
        let throttled_rules: Vec<Option<String>> = new
            .iter()
            .map(|e| e.throttle.as_ref().map(|_| e.rule_ref.clone()))
            .collect();
        let stored = match self.watermark(instance, matched_through) {
            Some(matched) => {
                self.args
                    .store
                    .create_enforcements_through(new, &matched)
                    .await?
            }
            None => self.args.store.create_enforcements(new).await?,
        };
        let rules: Vec<&str> = stored
            .iter()
            .flatten()
            .map(|e| e.rule_ref.as_str())
            .collect();
        self.args
            .metrics
            .enforcements_committed(&rules, writing.elapsed());
        let throttled: Vec<&str> = throttled_rules
            .iter()
            .zip(&stored)
            .filter_map(|(rule, stored)| rule.as_deref().filter(|_| stored.is_none()))
            .collect();
        if !throttled.is_empty() {
            self.args.metrics.enforcements_throttled(&throttled);
            for rule in &throttled {
                self.args.throttled.add(rule);
            }
        }
        tracing::debug!(
            count = stored.len(),
            events = batch.len(),
            "enforcements stored"
        );
        for (owner, enforcement) in owners.into_iter().zip(stored) {
            if let Some(enforcement) = enforcement {
                per_event[owner].push(enforcement.id);
            }
        }
        Ok(per_event)
    }

    /// Emits the enforcements of the `once_after` windows that ended; returns how long
    /// to wait before looking again.
    async fn close_windows(&mut self) -> std::time::Duration {
        let now = chrono::Utc::now();
        let writing = std::time::Instant::now();
        match self
            .args
            .store
            .close_throttle_windows(now, CLOSE_BATCH)
            .await
        {
            Ok(closed) => {
                if !closed.enforcements.is_empty() {
                    let rules: Vec<&str> = closed
                        .enforcements
                        .iter()
                        .map(|e| e.rule_ref.as_str())
                        .collect();
                    self.args
                        .metrics
                        .enforcements_committed(&rules, writing.elapsed());
                    tracing::debug!(count = closed.enforcements.len(), "throttle windows closed");
                    self.args.outbox.send(OutboxMsg::Wake);
                    if closed.enforcements.len() >= CLOSE_BATCH as usize {
                        return std::time::Duration::ZERO;
                    }
                }
                closed.next_close.map_or(CLOSE_CHECK_MAX, |at| {
                    (at - chrono::Utc::now())
                        .to_std()
                        .unwrap_or_default()
                        .clamp(std::time::Duration::from_millis(20), CLOSE_CHECK_MAX)
                })
            }
            Err(error) => {
                tracing::warn!(%error, "cannot close ended throttle windows yet; will retry");
                CLOSE_CHECK_MAX
            }
        }
    }
}

impl GroupCommit for MatcherState {
    type Item = MatchRequest;

    fn batcher(&mut self) -> &mut Batcher<MatchRequest> {
        &mut self.batcher
    }

    async fn flush_once(&mut self) -> Result<(), std::time::Duration> {
        let batch = self.batcher.take_batch();
        if batch.is_empty() {
            return Ok(());
        }
        let instance = self.args.identity.instance.clone();
        match self.write_enforcements(&batch, &instance).await {
            Ok(per_event) => {
                self.batcher.succeeded();
                set_error(&self.args.last_error, None);
                for (request, enforcement_ids) in batch.into_iter().zip(per_event) {
                    if let Some(reply) = request.reply {
                        let _ = reply.send(Ok(MatchOutcome {
                            event_id: request.event.id,
                            enforcement_ids,
                            repeat: request.repeat,
                        }));
                    }
                }
                // A publisher that is down finds the rows when it is back.
                self.args.outbox.send(OutboxMsg::Wake);
                Ok(())
            }
            Err(error) => {
                tracing::warn!(%error, events = batch.len(), "writing enforcements failed; will retry");
                set_error(&self.args.last_error, Some(error.to_string()));
                Err(self.batcher.requeue(batch))
            }
        }
    }
}
