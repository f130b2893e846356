//! What the interval, cron and date timers share: the fire loop, the last fire they
//! remember in the sensor state, and what happens to instants missed while the service
//! was down (`catch_up`).
//!
//! A timer's state is `{last_fire: <scheduled instant, RFC 3339>, execution_count: N}`,
//! saved only after the event of that instant is stored. On start the timer resumes from
//! the saved instant, so a restart or a reconcile neither fires an instant twice nor
//! invents one; instants that fell in the downtime are skipped or fired once, as
//! `catch_up` says.

use attune_actors::domain::{EventOrigin, IdempotencyKey};
use attune_actors::ports::DetectionSink;
use attune_actors::ports::IntakeError;
use attune_actors::ports::SensorFailure;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use std::time::Duration;

use super::SensorConfigError;

/// Counting missed instants stops here (an every-second cron down for more than a day);
/// the catch-up event then says `missed_count_capped: true`.
pub const MISSED_COUNT_CAP: u64 = 100_000;

/// Longest single sleep: the timer re-reads the wall clock at least this often, so a
/// clock change does not leave it sleeping towards the wrong instant.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// What a timer does with the instants it missed while the service was down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CatchUp {
    /// Forget them; fire at the next instant after the start.
    #[default]
    Skip,
    /// Fire one event for the latest missed instant, with `missed_count`.
    FireOnce,
}

impl CatchUp {
    /// Reads `config.catch_up` (`skip` when absent).
    pub fn parse(config: &Value) -> Result<Self, SensorConfigError> {
        match config.get("catch_up") {
            None => Ok(Self::Skip),
            Some(Value::String(s)) if s == "skip" => Ok(Self::Skip),
            Some(Value::String(s)) if s == "fire_once" => Ok(Self::FireOnce),
            Some(other) => Err(SensorConfigError(format!(
                "config.catch_up must be skip or fire_once, got {other}"
            ))),
        }
    }
}

/// Refuses config keys a timer does not know, naming the first one.
pub fn refuse_unknown_keys(
    config: &Value,
    known: &[&str],
    entrypoint: &str,
) -> Result<(), SensorConfigError> {
    match config {
        Value::Object(map) => match map.keys().find(|k| !known.contains(&k.as_str())) {
            Some(key) => Err(SensorConfigError(format!(
                "config.{key} is not a setting of {entrypoint} (known: {})",
                known.join(", ")
            ))),
            None => Ok(()),
        },
        Value::Null => Ok(()),
        other => Err(SensorConfigError(format!(
            "config must be a mapping, got {other}"
        ))),
    }
}

/// One firing, as the schedule turns it into a payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Fire {
    pub scheduled_at: DateTime<Utc>,
    pub fired_at: DateTime<Utc>,
    pub next_fire_at: Option<DateTime<Utc>>,
    pub execution_count: u64,
    /// For a catch-up event: how many instants were missed (this one included).
    pub missed: Option<Missed>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Missed {
    pub count: u64,
    pub capped: bool,
}

/// A timer's instants in real time.
pub trait Schedule: Send + Sync {
    /// Called once before the first `next_after`, with the saved last fire or, without
    /// one, the instant the timer starts counting from. Interval timers anchor their
    /// rhythm on it.
    fn anchor(&mut self, _at: DateTime<Utc>) {}

    /// The first scheduled instant strictly after `after`; `None` when there is none.
    fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>>;

    /// The event payload of a firing (without the catch-up marks, added by the loop).
    fn payload(&self, fire: &Fire, sensor_ref: &str) -> Value;
}

/// RFC 3339 in UTC with milliseconds, the form every timer payload uses.
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The saved state of a timer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TimerState {
    pub last_fire: Option<DateTime<Utc>>,
    pub execution_count: u64,
}

impl TimerState {
    /// Reads a saved state; anything unreadable counts as none (the timer starts afresh
    /// rather than failing forever on a state it cannot use).
    pub fn from_value(value: Option<&Value>) -> Self {
        let Some(value) = value else {
            return Self::default();
        };
        Self {
            last_fire: value
                .get("last_fire")
                .and_then(Value::as_str)
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map(|t| t.with_timezone(&Utc)),
            execution_count: value
                .get("execution_count")
                .and_then(Value::as_u64)
                .unwrap_or(0),
        }
    }

    pub fn to_value(&self) -> Value {
        json!({
            "last_fire": self.last_fire.map(|t| t.to_rfc3339_opts(SecondsFormat::Nanos, true)),
            "execution_count": self.execution_count,
        })
    }
}

/// The instants in `(after, until]`: how many (up to the cap) and the latest counted.
pub fn missed_between(
    schedule: &dyn Schedule,
    after: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Option<(Missed, DateTime<Utc>)> {
    let mut count = 0;
    let mut latest = None;
    let mut cursor = after;
    while let Some(next) = schedule.next_after(cursor) {
        if next > until {
            break;
        }
        count += 1;
        latest = Some(next);
        cursor = next;
        if count >= MISSED_COUNT_CAP {
            return latest.map(|l| {
                (
                    Missed {
                        count,
                        capped: true,
                    },
                    l,
                )
            });
        }
    }
    latest.map(|l| {
        (
            Missed {
                count,
                capped: false,
            },
            l,
        )
    })
}

async fn sleep_until(at: DateTime<Utc>) {
    while let Ok(left) = (at - Utc::now()).to_std() {
        if left.is_zero() {
            break;
        }
        tokio::time::sleep(left.min(MAX_SLEEP)).await;
    }
}

/// Runs a timer until its schedule has no more instants (a date timer after its fire):
/// resumes from the saved last fire, applies `catch_up`, then fires each instant, saving
/// it once its event is stored.
///
/// `origin` is where a timer with no saved state starts counting missed instants (a date
/// timer counts from when its definition was stored, so a fire that fell while the
/// service was down is caught up); `None` starts from now.
pub async fn run_timer(
    sink: &DetectionSink,
    schedule: &mut dyn Schedule,
    catch_up: CatchUp,
    origin: Option<DateTime<Utc>>,
) -> Result<(), SensorFailure> {
    let sensor_ref = sink.sensor().r#ref.clone();
    // The waits below are what every idle timer holds for as long as it runs: the
    // one-off steps are boxed so their futures do not widen it (a host may run 100,000).
    let saved = Box::pin(sink.load_state())
        .await
        .map_err(|e| SensorFailure::new(format!("cannot read the timer's last fire: {e}")))?;
    let mut state = TimerState::from_value(saved.as_ref());
    let now = Utc::now();
    let start = state.last_fire.or(origin.filter(|o| *o < now));
    schedule.anchor(start.unwrap_or(now));
    let mut cursor = start.unwrap_or(now);

    if start.is_some()
        && let Some((missed, latest)) = missed_between(schedule, cursor, now)
    {
        match catch_up {
            CatchUp::Skip => {
                tracing::info!(sensor = %sensor_ref, missed = missed.count, "timer skips the instants missed while stopped (catch_up: skip)");
                state.last_fire = Some(latest);
                Box::pin(save(sink, &state)).await?;
            }
            CatchUp::FireOnce => {
                tracing::info!(sensor = %sensor_ref, missed = missed.count, "timer fires once for the instants missed while stopped (catch_up: fire_once)");
                Box::pin(fire(sink, schedule, &mut state, latest, Some(missed))).await?;
            }
        }
        cursor = latest;
    }

    loop {
        let Some(next) = schedule.next_after(cursor) else {
            return Ok(());
        };
        if next < Utc::now() - chrono::Duration::seconds(1) {
            // A stall (a slow database) made us late: keep the rhythm from now instead of
            // bursting out the overdue instants.
            cursor = Utc::now();
            continue;
        }
        // A stop ends the wait, never a fire: an instant whose event is stored is always
        // saved as the last fire, so a restart neither repeats nor skips it.
        tokio::select! {
            () = sleep_until(next) => {}
            () = sink.stopping() => return Ok(()),
        }
        Box::pin(fire(sink, schedule, &mut state, next, None)).await?;
        cursor = next;
    }
}

async fn fire(
    sink: &DetectionSink,
    schedule: &dyn Schedule,
    state: &mut TimerState,
    scheduled_at: DateTime<Utc>,
    missed: Option<Missed>,
) -> Result<(), SensorFailure> {
    sink.record_poll();
    let fired_at = Utc::now();
    let fire = Fire {
        scheduled_at,
        fired_at,
        next_fire_at: schedule.next_after(scheduled_at.max(fired_at)),
        execution_count: state.execution_count + 1,
        missed,
    };
    let mut payload = schedule.payload(&fire, &sink.sensor().r#ref);
    if let (Some(missed), Some(map)) = (missed, payload.as_object_mut()) {
        map.insert("catch_up".into(), Value::Bool(true));
        map.insert("missed_count".into(), missed.count.into());
        if missed.capped {
            map.insert("missed_count_capped".into(), Value::Bool(true));
        }
    }
    match sink
        .emit_with(payload, instant_key(sink, scheduled_at))
        .await
    {
        Ok(_) => {}
        // The trigger's schema refuses what this timer sends: retrying cannot help, so
        // the fire is logged and counted as done.
        Err(IntakeError::InvalidPayload(reason)) => {
            tracing::error!(sensor = %sink.sensor().r#ref, %reason, "timer event refused; not stored");
        }
        Err(e) => return Err(SensorFailure::new(format!("timer could not emit: {e}"))),
    }
    state.last_fire = Some(scheduled_at);
    state.execution_count += 1;
    save(sink, state).await
}

/// How long a timer's instant keys are remembered: far longer than any move between
/// instances takes, far shorter than the keys' pruning.
const INSTANT_KEY_WINDOW: Duration = Duration::from_secs(3600);

/// The idempotency key of one scheduled instant of one timer. The last fire is saved only
/// after its event is stored, so an instance that dies in between leaves the next holder
/// to fire the same instant again; the key makes that second event a repeat.
fn instant_key(sink: &DetectionSink, scheduled_at: DateTime<Utc>) -> EventOrigin {
    EventOrigin {
        idempotency_key: IdempotencyKey::new(
            &format!("timer:{}", sink.sensor().r#ref),
            &timestamp(scheduled_at),
            INSTANT_KEY_WINDOW,
        )
        .ok(),
        traceparent: None,
    }
}

async fn save(sink: &DetectionSink, state: &TimerState) -> Result<(), SensorFailure> {
    sink.save_state(&state.to_value())
        .await
        .map_err(|e| SensorFailure::new(format!("cannot save the timer's last fire: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Every(chrono::Duration);

    impl Schedule for Every {
        fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
            let step = self.0.num_seconds();
            let secs = after.timestamp().div_euclid(step) * step + step;
            DateTime::from_timestamp(secs, 0)
        }
        fn payload(&self, _: &Fire, _: &str) -> Value {
            Value::Null
        }
    }

    #[test]
    fn missed_counts_instants_in_the_half_open_window() {
        let at = |s| DateTime::from_timestamp(s, 0).unwrap();
        let every = Every(chrono::Duration::seconds(10));
        assert_eq!(
            missed_between(&every, at(100), at(135)),
            Some((
                Missed {
                    count: 3,
                    capped: false
                },
                at(130)
            ))
        );
        assert_eq!(missed_between(&every, at(100), at(109)), None);
        let tiny = Every(chrono::Duration::seconds(1));
        let (missed, _) = missed_between(&tiny, at(0), at(1_000_000)).unwrap();
        assert!(missed.capped && missed.count == MISSED_COUNT_CAP);
    }

    #[test]
    fn state_round_trips_and_garbage_starts_afresh() {
        let state = TimerState {
            last_fire: DateTime::from_timestamp(1_700_000_000, 5),
            execution_count: 7,
        };
        assert_eq!(TimerState::from_value(Some(&state.to_value())), state);
        assert_eq!(
            TimerState::from_value(Some(&json!({"last_fire": "yesterday"}))),
            TimerState::default()
        );
    }

    #[test]
    fn catch_up_values() {
        assert_eq!(CatchUp::parse(&json!({})), Ok(CatchUp::Skip));
        assert_eq!(
            CatchUp::parse(&json!({"catch_up": "fire_once"})),
            Ok(CatchUp::FireOnce)
        );
        assert!(
            CatchUp::parse(&json!({"catch_up": "all"}))
                .unwrap_err()
                .0
                .contains("config.catch_up")
        );
    }
}
