//! Throttled enforcements in the store: inside the transaction that writes a batch of
//! enforcements, each throttled one is decided against its group's window (read with a
//! row lock, so instances sharing a database take turns), and the windows are written
//! with it. [`Pass`] holds the decisions, without a database; the statements and the
//! transactions are in `throttle_tx.rs`.
//!
//! A held (`once_after`) enforcement is kept in its window's `pending` column and goes out
//! when the window ends, from `close_throttle_windows`, with a summary of the window.

use std::collections::HashMap;

use attune_actors::domain::{
    NewEnforcement, ThrottleClaim, ThrottleMode, ThrottleStep, ThrottleSummary, ThrottleWindow,
    decide,
};
use attune_actors::ports::{StoreError, StoredWindow};
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::rows::StoredRow;

/// A group's window as read in the transaction: the window, its held enforcement
/// (`once_after`), and whether the row exists (to update) or is new (to insert).
#[derive(Debug, Clone)]
pub(crate) struct GroupWindow {
    pub window: ThrottleWindow,
    pub pending: Option<Value>,
    pub stored: bool,
}

/// A window to write when the batch commits.
#[derive(Debug, Clone)]
pub(crate) struct WindowWrite {
    pub rule_ref: String,
    pub group: String,
    pub window: ThrottleWindow,
    pub pending: Option<Value>,
    /// The row exists: update it; else insert it (and a concurrent insert is a race).
    pub update: bool,
}

type GroupKey = (String, String);

/// The decisions for one batch of enforcements, in input order.
#[derive(Debug)]
pub(crate) struct Pass {
    now: DateTime<Utc>,
    windows: HashMap<GroupKey, Option<GroupWindow>>,
    /// What to insert now, in order.
    insert: Vec<NewEnforcement>,
    /// For each input, the index in `insert` of what it became, or `None` (throttled).
    slots: Vec<Option<usize>>,
}

fn group_key(enforcement: &NewEnforcement) -> Option<(GroupKey, &ThrottleClaim)> {
    let claim = enforcement.throttle.as_ref()?;
    Some(((enforcement.rule_ref.clone(), claim.group.clone()), claim))
}

impl Pass {
    pub(crate) fn new(now: DateTime<Utc>) -> Self {
        Self {
            now,
            windows: HashMap::new(),
            insert: Vec::new(),
            slots: Vec::new(),
        }
    }

    /// The `(rule_ref, group)` whose stored window must be read before `enforcement` is
    /// [`add`](Self::add)ed; `None` when it is not throttled or its window is known.
    pub(crate) fn to_read(&self, enforcement: &NewEnforcement) -> Option<GroupKey> {
        let (key, _) = group_key(enforcement)?;
        (!self.windows.contains_key(&key)).then_some(key)
    }

    /// Records the stored window of `key` (as read by the caller).
    pub(crate) fn read(&mut self, key: GroupKey, stored: Option<(ThrottleWindow, Option<Value>)>) {
        let window = stored.map(|(window, pending)| GroupWindow {
            window,
            pending,
            stored: true,
        });
        self.windows.insert(key, window);
    }

    fn push(&mut self, enforcement: NewEnforcement) -> Option<usize> {
        self.insert.push(enforcement);
        Some(self.insert.len() - 1)
    }

    /// Decides one enforcement (its window read already, if it is throttled).
    pub(crate) fn add(&mut self, mut enforcement: NewEnforcement) -> Result<(), StoreError> {
        let Some((key, claim)) = group_key(&enforcement) else {
            let slot = self.push(enforcement);
            self.slots.push(slot);
            return Ok(());
        };
        let claim = claim.clone();
        let known = self.windows.get(&key).cloned().flatten();
        let step = decide(
            claim.mode,
            claim.window(),
            known.as_ref().map(|k| &k.window),
            enforcement.event,
            self.now,
        );
        let stored = known.as_ref().is_some_and(|k| k.stored);
        let keep = |window: ThrottleWindow, pending: Option<Value>| GroupWindow {
            window,
            pending,
            stored,
        };
        enforcement.throttle = None;
        let (slot, next) = match step {
            ThrottleStep::EnforceNow(window) => (self.push(enforcement), keep(window, None)),
            ThrottleStep::Suppress(window) => (None, keep(window, known.and_then(|k| k.pending))),
            ThrottleStep::Hold(window) => (None, keep(window, Some(pending_json(&enforcement)?))),
            ThrottleStep::CloseThenHold { closed, open } => {
                if let Some(pending) = known.and_then(|k| k.pending) {
                    let held = released(pending, claim.mode, &claim.group, &closed)?;
                    self.push(held);
                }
                (None, keep(open, Some(pending_json(&enforcement)?)))
            }
            ThrottleStep::AlreadyCounted => {
                // The first match of a `once_within` window has its enforcement: a
                // re-match answers with it (storing is idempotent on rule and event).
                let first = known
                    .as_ref()
                    .is_some_and(|k| k.window.first_event == enforcement.event);
                let slot = (claim.mode == ThrottleMode::OnceWithin && first)
                    .then(|| self.push(enforcement))
                    .flatten();
                self.slots.push(slot);
                return Ok(());
            }
        };
        self.windows.insert(key, Some(next));
        self.slots.push(slot);
        Ok(())
    }

    /// What to insert, each input's place in it, and the windows to write.
    pub(crate) fn finish(self) -> (Vec<NewEnforcement>, Vec<Option<usize>>, Vec<WindowWrite>) {
        let writes = self
            .windows
            .into_iter()
            .filter_map(|((rule_ref, group), window)| {
                let window = window?;
                Some(WindowWrite {
                    rule_ref,
                    group,
                    window: window.window,
                    pending: window.pending,
                    update: window.stored,
                })
            })
            .collect();
        (self.insert, self.slots, writes)
    }
}

fn pending_json(enforcement: &NewEnforcement) -> Result<Value, StoreError> {
    serde_json::to_value(enforcement)
        .map_err(|e| StoreError::Other(format!("cannot keep a held enforcement: {e}")))
}

/// The held enforcement of an ended window, with the window's summary.
pub(crate) fn released(
    pending: Value,
    mode: ThrottleMode,
    group: &str,
    window: &ThrottleWindow,
) -> Result<NewEnforcement, StoreError> {
    let mut held: NewEnforcement = serde_json::from_value(pending)
        .map_err(|e| StoreError::Other(format!("a held enforcement does not decode: {e}")))?;
    held.throttle = None;
    held.summary = Some(ThrottleSummary::of(mode, group, window));
    Ok(held)
}

/// A window another writer opened between our read and our insert: the batch fails as
/// retryable, and the retry reads it.
pub(crate) fn raced(write: &WindowWrite) -> StoreError {
    StoreError::Unavailable(format!(
        "the throttle window of rule {} for group {} was opened by another writer at the same moment; retrying",
        write.rule_ref, write.group
    ))
}

/// A window row: `(rule_ref, group, window, pending)`.
pub(crate) type WindowRow = (String, String, ThrottleWindow, Option<Value>);

pub(crate) fn window_row(row: &impl StoredRow) -> Result<WindowRow, sqlx::Error> {
    let count = |column: &str| row.int(column).map(|n| u64::try_from(n).unwrap_or(0));
    Ok((
        row.text("rule_ref")?,
        row.text("group_key")?,
        ThrottleWindow {
            opened: row.time("opened")?,
            closes: row.time("closes")?,
            matched: count("matched")?,
            first_event: row.int("first_event")?,
            last_event: row.int("last_event")?,
        },
        row.opt_json("pending")?,
    ))
}

/// What `GET /throttles` lists of a window row.
pub(crate) fn listed((rule_ref, group, window, pending): WindowRow) -> StoredWindow {
    StoredWindow {
        rule_ref,
        group,
        mode: if pending.is_some() {
            ThrottleMode::OnceAfter
        } else {
            ThrottleMode::OnceWithin
        }
        .as_str(),
        opened: window.opened,
        closes: window.closes,
        matched: window.matched,
        first_event: window.first_event,
        last_event: window.last_event,
    }
}

/// The enforcement an ended window releases, if it held one (`once_after`).
pub(crate) fn release_ended(row: &WindowRow) -> Result<Option<NewEnforcement>, StoreError> {
    let (_, group, window, pending) = row;
    pending
        .clone()
        .map(|pending| released(pending, ThrottleMode::OnceAfter, group, window))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use attune_actors::domain::{Id, ThrottleClaim};
    use serde_json::json;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::seconds(seconds)
    }

    fn enforcement(event: Id, group: &str, mode: ThrottleMode) -> NewEnforcement {
        NewEnforcement {
            rule: 1,
            rule_ref: "p.r".into(),
            trigger_ref: "p.t".into(),
            event,
            payload: json!({"n": event}),
            condition: "all".into(),
            conditions: json!([]),
            correlation_id: None,
            traceparent: None,
            action_ref: "core.noop".into(),
            action_params: None,
            error: None,
            throttle: Some(ThrottleClaim {
                mode,
                window_secs: 60,
                group: group.into(),
            }),
            summary: None,
        }
    }

    /// Runs a batch through a pass with nothing stored yet.
    fn pass(
        batch: Vec<NewEnforcement>,
        now: i64,
    ) -> (Vec<NewEnforcement>, Vec<Option<usize>>, Vec<WindowWrite>) {
        let mut pass = Pass::new(at(now));
        for e in batch {
            if let Some(key) = pass.to_read(&e) {
                pass.read(key, None);
            }
            pass.add(e).expect("decided");
        }
        pass.finish()
    }

    #[test]
    fn one_batch_enforces_once_per_group_and_writes_each_window_once() {
        let batch = vec![
            enforcement(1, r#"["a"]"#, ThrottleMode::OnceWithin),
            enforcement(2, r#"["b"]"#, ThrottleMode::OnceWithin),
            enforcement(3, r#"["a"]"#, ThrottleMode::OnceWithin),
        ];
        let (insert, slots, writes) = pass(batch, 0);
        assert_eq!(insert.iter().map(|e| e.event).collect::<Vec<_>>(), [1, 2]);
        assert!(insert.iter().all(|e| e.throttle.is_none()));
        assert_eq!(slots, [Some(0), Some(1), None]);
        let mut counts: Vec<(String, u64)> = writes
            .iter()
            .map(|w| (w.group.clone(), w.window.matched))
            .collect();
        counts.sort();
        assert_eq!(
            counts,
            [(r#"["a"]"#.to_owned(), 2), (r#"["b"]"#.to_owned(), 1)]
        );
        assert!(writes.iter().all(|w| !w.update && w.pending.is_none()));
    }

    #[test]
    fn once_after_holds_the_first_and_releases_it_with_a_summary() {
        let (insert, slots, writes) = pass(
            vec![
                enforcement(5, "[]", ThrottleMode::OnceAfter),
                enforcement(6, "[]", ThrottleMode::OnceAfter),
            ],
            0,
        );
        assert!(insert.is_empty());
        assert_eq!(slots, [None, None]);
        let write = &writes[0];
        assert_eq!(
            (
                write.window.matched,
                write.window.first_event,
                write.window.last_event
            ),
            (2, 5, 6)
        );
        let row = (
            "p.r".to_owned(),
            "[]".to_owned(),
            write.window,
            write.pending.clone(),
        );
        let held = release_ended(&row).expect("decodes").expect("held");
        assert_eq!(held.event, 5);
        let summary = held.summary.expect("summary");
        assert_eq!(
            (summary.matched, summary.first_event, summary.last_event),
            (2, 5, 6)
        );
        assert!(held.throttle.is_none());
    }

    #[test]
    fn an_ended_window_goes_out_before_the_next_opens() {
        let stored = ThrottleWindow {
            opened: at(0),
            closes: at(60),
            matched: 3,
            first_event: 1,
            last_event: 3,
        };
        let first = enforcement(1, "[]", ThrottleMode::OnceAfter);
        let mut pass = Pass::new(at(90));
        let next = enforcement(9, "[]", ThrottleMode::OnceAfter);
        let key = pass.to_read(&next).expect("unknown window");
        pass.read(
            key,
            Some((stored, Some(pending_json(&first).expect("json")))),
        );
        pass.add(next).expect("decided");
        let (insert, slots, writes) = pass.finish();
        assert_eq!(slots, [None]);
        assert_eq!(insert.len(), 1, "the ended window's enforcement");
        assert_eq!(insert[0].event, 1);
        assert_eq!(insert[0].summary.as_ref().map(|s| s.matched), Some(3));
        assert!(writes[0].update);
        assert_eq!(
            (writes[0].window.first_event, writes[0].window.opened),
            (9, at(90))
        );
    }
}
