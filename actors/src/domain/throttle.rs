//! Rule throttling as data: what a rule asks for, the window the database keeps for each
//! group of events, and the one decision that moves a window on: [`decide`].
//!
//! `once_within` creates the enforcement of the first match of a group and suppresses the
//! group's later matches until its window ends. `once_after` creates nothing at first: the
//! first match opens the group's window, later ones are counted, and when the window
//! closes one enforcement goes out carrying how many events matched and the first and
//! last of them. Time is an argument, so the decision is tested with any clock.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Id;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThrottleMode {
    /// One enforcement, for the first match of a window.
    OnceWithin,
    /// One enforcement when the window ends, summing up its matches.
    OnceAfter,
}

impl ThrottleMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ThrottleMode::OnceWithin => "once_within",
            ThrottleMode::OnceAfter => "once_after",
        }
    }
}

/// A rule's `throttle`, as stored with the rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Throttle {
    pub mode: ThrottleMode,
    /// The window, in whole seconds (at least one).
    pub window_secs: u64,
    /// Field paths whose values split matches into groups, each with its own window; none
    /// means one group for the whole rule.
    #[serde(default)]
    pub group_by: Vec<String>,
}

impl Throttle {
    pub fn window(&self) -> chrono::Duration {
        window_of(self.window_secs)
    }
}

/// A window of `seconds`, saturating where chrono's durations end.
fn window_of(seconds: u64) -> chrono::Duration {
    i64::try_from(seconds)
        .ok()
        .and_then(chrono::Duration::try_seconds)
        .unwrap_or(chrono::Duration::MAX)
}

/// The throttle a new enforcement is subject to: its rule's, with its event's group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThrottleClaim {
    pub mode: ThrottleMode,
    pub window_secs: u64,
    /// The `group_by` values of the event, as a JSON array (`["web-1"]`).
    pub group: String,
}

impl ThrottleClaim {
    pub fn window(&self) -> chrono::Duration {
        window_of(self.window_secs)
    }
}

/// One group's window, as the database keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleWindow {
    pub opened: DateTime<Utc>,
    pub closes: DateTime<Utc>,
    /// Matches counted in the window, the first included.
    pub matched: u64,
    pub first_event: Id,
    pub last_event: Id,
}

impl ThrottleWindow {
    fn open(event: Id, now: DateTime<Utc>, window: chrono::Duration) -> Self {
        Self {
            opened: now,
            closes: super::capped_after(now, window),
            matched: 1,
            first_event: event,
            last_event: event,
        }
    }

    fn counting(self, event: Id) -> Self {
        Self {
            matched: self.matched + 1,
            last_event: event,
            ..self
        }
    }

    pub fn is_open(&self, now: DateTime<Utc>) -> bool {
        now < self.closes
    }
}

/// What a throttled enforcement carries: the window it sums up (`once_after`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThrottleSummary {
    pub mode: ThrottleMode,
    /// The group's `group_by` values.
    pub group: Value,
    pub matched: u64,
    pub first_event: Id,
    pub last_event: Id,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
}

impl ThrottleSummary {
    pub fn of(mode: ThrottleMode, group: &str, window: &ThrottleWindow) -> Self {
        Self {
            mode,
            group: serde_json::from_str(group).unwrap_or(Value::Null),
            matched: window.matched,
            first_event: window.first_event,
            last_event: window.last_event,
            window_start: window.opened,
            window_end: window.closes,
        }
    }
}

/// What one match of a throttled rule does to its group's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThrottleStep {
    /// `once_within`, first match of a window: the enforcement is created now and the
    /// window is kept.
    EnforceNow(ThrottleWindow),
    /// The match falls in the open window: counted, no enforcement.
    Suppress(ThrottleWindow),
    /// `once_after`, first match: it opens the window; its enforcement waits for the end.
    Hold(ThrottleWindow),
    /// `once_after`: the group's last window ended but has not gone out yet; it goes out
    /// now, and the match opens the next one.
    CloseThenHold {
        closed: ThrottleWindow,
        open: ThrottleWindow,
    },
    /// The event is in the window already (matched again after a restart): no change.
    AlreadyCounted,
}

/// The decision for a match of `event` at `now`, given the group's stored window.
pub fn decide(
    mode: ThrottleMode,
    window: chrono::Duration,
    stored: Option<&ThrottleWindow>,
    event: Id,
    now: DateTime<Utc>,
) -> ThrottleStep {
    let Some(stored) = stored else {
        let open = ThrottleWindow::open(event, now, window);
        return match mode {
            ThrottleMode::OnceWithin => ThrottleStep::EnforceNow(open),
            ThrottleMode::OnceAfter => ThrottleStep::Hold(open),
        };
    };
    if event <= stored.last_event && event >= stored.first_event {
        return ThrottleStep::AlreadyCounted;
    }
    if stored.is_open(now) {
        return ThrottleStep::Suppress(stored.counting(event));
    }
    let open = ThrottleWindow::open(event, now, window);
    match mode {
        ThrottleMode::OnceWithin => ThrottleStep::EnforceNow(open),
        ThrottleMode::OnceAfter => ThrottleStep::CloseThenHold {
            closed: *stored,
            open,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ThrottleMode::{OnceAfter, OnceWithin};

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::seconds(seconds)
    }

    /// What a step does, in short: (enforced now, held, suppressed, closed a window).
    fn effect(step: ThrottleStep) -> &'static str {
        match step {
            ThrottleStep::EnforceNow(_) => "enforce",
            ThrottleStep::Suppress(_) => "suppress",
            ThrottleStep::Hold(_) => "hold",
            ThrottleStep::CloseThenHold { .. } => "close+hold",
            ThrottleStep::AlreadyCounted => "counted",
        }
    }

    /// Replays matches `(event, second)` of one group through `decide` as a store would,
    /// keeping the window each step leaves; returns each step's effect and the window.
    fn replay(
        mode: ThrottleMode,
        window: i64,
        matches: &[(Id, i64)],
    ) -> (Vec<&'static str>, Option<ThrottleWindow>) {
        let mut stored: Option<ThrottleWindow> = None;
        let mut effects = Vec::new();
        for (event, second) in matches {
            let step = decide(
                mode,
                chrono::Duration::seconds(window),
                stored.as_ref(),
                *event,
                at(*second),
            );
            effects.push(effect(step));
            stored = match step {
                ThrottleStep::EnforceNow(w) | ThrottleStep::Suppress(w) | ThrottleStep::Hold(w) => {
                    Some(w)
                }
                ThrottleStep::CloseThenHold { open, .. } => Some(open),
                ThrottleStep::AlreadyCounted => stored,
            };
        }
        (effects, stored)
    }

    /// Mode, window in seconds, matches `(event, second)`, the effect of each.
    type Case = (
        ThrottleMode,
        i64,
        &'static [(Id, i64)],
        &'static [&'static str],
    );

    #[test]
    fn windows_by_table() {
        let cases: &[Case] = &[
            // once_within: the first match of each window, the rest suppressed.
            (OnceWithin, 300, &[(1, 0)], &["enforce"]),
            (
                OnceWithin,
                300,
                &[(1, 0), (2, 10), (3, 299)],
                &["enforce", "suppress", "suppress"],
            ),
            (
                OnceWithin,
                300,
                &[(1, 0), (2, 300)],
                &["enforce", "enforce"],
            ),
            (
                OnceWithin,
                300,
                &[(1, 0), (2, 10), (3, 400), (4, 500)],
                &["enforce", "suppress", "enforce", "suppress"],
            ),
            // once_after: held, counted, and the ended window goes out before a new one.
            (
                OnceAfter,
                60,
                &[(1, 0), (2, 30), (3, 59)],
                &["hold", "suppress", "suppress"],
            ),
            (OnceAfter, 60, &[(1, 0), (2, 61)], &["hold", "close+hold"]),
            // A re-match of an event already in the window changes nothing.
            (
                OnceWithin,
                300,
                &[(1, 0), (2, 5), (2, 6), (1, 7)],
                &["enforce", "suppress", "counted", "counted"],
            ),
            (
                OnceAfter,
                60,
                &[(5, 0), (6, 1), (5, 2)],
                &["hold", "suppress", "counted"],
            ),
        ];
        for (mode, window, matches, expected) in cases {
            let (effects, _) = replay(*mode, *window, matches);
            assert_eq!(
                &effects, expected,
                "{mode:?} window {window}s, matches {matches:?}"
            );
        }
    }

    #[test]
    fn a_window_counts_its_matches_and_remembers_first_and_last() {
        let (_, window) = replay(OnceAfter, 60, &[(10, 0), (11, 5), (14, 20)]);
        let window = window.expect("a window");
        assert_eq!(
            (window.matched, window.first_event, window.last_event),
            (3, 10, 14)
        );
        assert_eq!((window.opened, window.closes), (at(0), at(60)));
    }

    #[test]
    fn closing_hands_over_the_ended_window() {
        let ended = ThrottleWindow {
            opened: at(0),
            closes: at(60),
            matched: 4,
            first_event: 1,
            last_event: 4,
        };
        match decide(
            OnceAfter,
            chrono::Duration::seconds(60),
            Some(&ended),
            9,
            at(100),
        ) {
            ThrottleStep::CloseThenHold { closed, open } => {
                assert_eq!(closed, ended);
                assert_eq!(
                    (open.first_event, open.matched, open.opened),
                    (9, 1, at(100))
                );
            }
            other => panic!("expected close+hold, got {other:?}"),
        }
        let summary = ThrottleSummary::of(OnceAfter, r#"["web-1"]"#, &ended);
        assert_eq!(summary.group, serde_json::json!(["web-1"]));
        assert_eq!(
            (summary.matched, summary.first_event, summary.last_event),
            (4, 1, 4)
        );
    }

    #[test]
    fn a_huge_window_saturates_instead_of_overflowing() {
        let throttle = Throttle {
            mode: OnceWithin,
            window_secs: u64::MAX,
            group_by: vec![],
        };
        match decide(OnceWithin, throttle.window(), None, 1, at(0)) {
            ThrottleStep::EnforceNow(window) => assert!(window.closes > at(10_000_000)),
            other => panic!("expected enforce, got {other:?}"),
        }
    }
}
