//! The built-in cron timer: `runtime: builtin`, `entrypoint: cron_timer`, config
//! `{expression, timezone, catch_up}`.
//!
//! Expressions have 5 fields (minute precision) or 6 (a leading seconds field). They are
//! matched against the wall clock of `timezone` (an IANA name, UTC by default). Across
//! daylight-saving changes a wall time that does not exist (the spring-forward gap) does
//! not fire, and a wall time that happens twice (the fall-back hour) fires once, at its
//! first occurrence. `croner` parses and matches the fields; the mapping of wall times to
//! instants is done here because croner's own DST rules differ (it moves gap times to the
//! end of the gap and fires wildcard jobs in both passes of a repeated hour).

use async_trait::async_trait;
use attune_actors::ports::DetectionSink;
use attune_actors::ports::{SensorDriver, SensorFailure};
use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde_json::{Value, json};

use super::SensorConfigError;
use super::schedule::{CatchUp, Fire, Schedule, refuse_unknown_keys, run_timer, timestamp};

pub const ENTRYPOINT: &str = "cron_timer";

/// Wall times looked at for one `next_after` before giving up: a repeated hour of an
/// every-second expression is 3 600 candidates that already happened.
const SEARCH_LIMIT: usize = 20_000;

#[derive(Debug, Clone)]
pub struct CronConfig {
    pub expression: String,
    pub timezone: Tz,
    pub catch_up: CatchUp,
    cron: Cron,
}

impl CronConfig {
    pub fn parse(config: &Value) -> Result<Self, SensorConfigError> {
        refuse_unknown_keys(config, &["expression", "timezone", "catch_up"], ENTRYPOINT)?;
        let expression = match config.get("expression") {
            Some(Value::String(e)) => e.trim().to_owned(),
            Some(other) => {
                return Err(SensorConfigError(format!(
                    "config.expression must be a string, got {other}"
                )));
            }
            None => return Err(SensorConfigError("config.expression is required".into())),
        };
        let fields = expression.split_whitespace().count();
        if fields != 5 && fields != 6 {
            return Err(SensorConfigError(format!(
                "config.expression '{expression}' has {fields} fields; expected 5 (minute hour day month weekday) or 6 (with leading seconds)"
            )));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(&expression)
            .map_err(|e| {
                SensorConfigError(format!(
                    "config.expression '{expression}' is not a valid cron expression: {e}"
                ))
            })?;
        let timezone = match config.get("timezone") {
            None => Tz::UTC,
            Some(Value::String(name)) => name.parse::<Tz>().map_err(|_| {
                SensorConfigError(format!(
                    "config.timezone '{name}' is not a known IANA time zone (e.g. UTC, Europe/Paris, America/New_York)"
                ))
            })?,
            Some(other) => {
                return Err(SensorConfigError(format!(
                    "config.timezone must be a string, got {other}"
                )));
            }
        };
        let schedule = CronSchedule {
            cron: cron.clone(),
            expression: expression.clone(),
            timezone,
        };
        // An expression that names an impossible date (31 February) never fires; refuse it
        // rather than run a timer that sleeps forever.
        if schedule.next_after(Utc::now()).is_none() {
            return Err(SensorConfigError(format!(
                "config.expression '{expression}' never matches a time"
            )));
        }
        Ok(Self {
            expression,
            timezone,
            catch_up: CatchUp::parse(config)?,
            cron,
        })
    }

    pub fn schedule(&self) -> CronSchedule {
        CronSchedule {
            cron: self.cron.clone(),
            expression: self.expression.clone(),
            timezone: self.timezone,
        }
    }
}

/// A parsed expression in a time zone: computes fire instants.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    cron: Cron,
    /// As written, for the payload (croner keeps an upper-cased form).
    expression: String,
    timezone: Tz,
}

impl CronSchedule {
    /// The instant a matching wall time stands for: `None` in a spring-forward gap, the
    /// first occurrence in a fall-back repeat.
    fn instant(&self, wall: &NaiveDateTime) -> Option<DateTime<Utc>> {
        match self.timezone.from_local_datetime(wall) {
            LocalResult::Single(at) => Some(at.with_timezone(&Utc)),
            LocalResult::Ambiguous(first, second) => Some(first.min(second).with_timezone(&Utc)),
            LocalResult::None => None,
        }
    }
}

impl Schedule for CronSchedule {
    /// Walks matching wall times after the wall time of `after`. Mapped to their instants
    /// (gaps dropped, repeats at their first occurrence) they are in order, and none at or
    /// before that wall time can be after `after`; so the first that is, is the answer.
    fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut wall = after.with_timezone(&self.timezone).naive_local();
        for _ in 0..SEARCH_LIMIT {
            wall = self.cron.find_next_occurrence(&wall, false).ok()?;
            if let Some(at) = self.instant(&wall)
                && at > after
            {
                return Some(at);
            }
        }
        None
    }

    fn payload(&self, fire: &Fire, sensor_ref: &str) -> Value {
        json!({
            "type": "cron",
            "expression": self.expression,
            "timezone": self.timezone.name(),
            "scheduled_at": timestamp(fire.scheduled_at),
            "fired_at": timestamp(fire.fired_at),
            "next_fire_at": fire.next_fire_at.map(timestamp),
            "execution_count": fire.execution_count,
            "sensor_ref": sensor_ref,
        })
    }
}

pub struct CronTimer {
    config: CronConfig,
}

impl CronTimer {
    pub fn new(config: CronConfig) -> Self {
        Self { config }
    }
}

#[async_trait]
impl SensorDriver for CronTimer {
    async fn run(&mut self, sink: DetectionSink) -> Result<(), SensorFailure> {
        let mut schedule = self.config.schedule();
        run_timer(&sink, &mut schedule, self.config.catch_up, None).await
    }

    /// A timer finishes the fire in progress (its event and its saved last fire) before it
    /// stops, so a restart never repeats an instant.
    fn stops_gracefully(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(expression: &str, timezone: &str) -> CronSchedule {
        CronConfig::parse(&json!({"expression": expression, "timezone": timezone}))
            .unwrap()
            .schedule()
    }

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    fn next_n(s: &CronSchedule, from: &str, n: usize) -> Vec<String> {
        let mut at = utc(from);
        (0..n)
            .map(|_| {
                at = s.next_after(at).unwrap();
                timestamp(at)
            })
            .collect()
    }

    #[test]
    fn five_fields_are_minutes_and_six_have_leading_seconds() {
        assert_eq!(
            next_n(&schedule("*/15 * * * *", "UTC"), "2024-05-01T10:07:30Z", 2),
            ["2024-05-01T10:15:00.000Z", "2024-05-01T10:30:00.000Z"]
        );
        assert_eq!(
            next_n(
                &schedule("*/20 * * * * *", "UTC"),
                "2024-05-01T10:07:30.5Z",
                3
            ),
            [
                "2024-05-01T10:07:40.000Z",
                "2024-05-01T10:08:00.000Z",
                "2024-05-01T10:08:20.000Z"
            ]
        );
        // Strictly after: an instant on the schedule is not its own successor.
        assert_eq!(
            next_n(&schedule("* * * * * *", "UTC"), "2024-05-01T10:00:00Z", 1),
            ["2024-05-01T10:00:01.000Z"]
        );
    }

    #[test]
    fn time_zones_shift_the_wall_clock() {
        // 09:00 in Paris in summer is 07:00 UTC; in winter 08:00 UTC.
        let s = schedule("0 9 * * *", "Europe/Paris");
        assert_eq!(
            next_n(&s, "2024-07-01T00:00:00Z", 1),
            ["2024-07-01T07:00:00.000Z"]
        );
        assert_eq!(
            next_n(&s, "2024-12-01T00:00:00Z", 1),
            ["2024-12-01T08:00:00.000Z"]
        );
        let tokyo = schedule("30 0 0 1 * *", "Asia/Tokyo");
        assert_eq!(
            next_n(&tokyo, "2024-01-15T00:00:00Z", 1),
            ["2024-01-31T15:00:30.000Z"]
        );
    }

    #[test]
    fn a_skipped_local_time_does_not_fire() {
        // New York skipped 02:00-03:00 on 2024-03-10: 02:30 that day does not exist.
        let s = schedule("30 2 * * *", "America/New_York");
        assert_eq!(
            next_n(&s, "2024-03-09T00:00:00Z", 2),
            // 02:30 EST on the 9th, then nothing on the 10th, then 02:30 EDT on the 11th.
            ["2024-03-09T07:30:00.000Z", "2024-03-11T06:30:00.000Z"]
        );
        // An every-minute expression simply has no minutes in the gap.
        let every = schedule("* * * * *", "America/New_York");
        assert_eq!(
            next_n(&every, "2024-03-10T06:58:30Z", 3),
            // 01:59 EST, then 03:00 EDT: 02:xx never existed.
            [
                "2024-03-10T06:59:00.000Z",
                "2024-03-10T07:00:00.000Z",
                "2024-03-10T07:01:00.000Z"
            ]
        );
    }

    #[test]
    fn a_repeated_local_time_fires_once() {
        // New York repeated 01:00-02:00 on 2024-11-03 (EDT, then EST).
        let s = schedule("30 1 * * *", "America/New_York");
        assert_eq!(
            next_n(&s, "2024-11-03T00:00:00Z", 2),
            // 01:30 EDT once (05:30Z), not again at 01:30 EST (06:30Z); next day 01:30 EST.
            ["2024-11-03T05:30:00.000Z", "2024-11-04T06:30:00.000Z"]
        );
        let half_hourly = schedule("0,30 * * * *", "America/New_York");
        assert_eq!(
            next_n(&half_hourly, "2024-11-03T05:15:00Z", 4),
            // 01:30 EDT, then the repeated pass (01:00/01:30 EST) is skipped, 02:00 EST.
            [
                "2024-11-03T05:30:00.000Z",
                "2024-11-03T07:00:00.000Z",
                "2024-11-03T07:30:00.000Z",
                "2024-11-03T08:00:00.000Z"
            ]
        );
        // Starting inside the second pass does not go back to the first.
        assert_eq!(
            next_n(&half_hourly, "2024-11-03T06:10:00Z", 1),
            ["2024-11-03T07:00:00.000Z"]
        );
    }

    #[test]
    fn bad_configs_name_the_field() {
        let err = |v: Value| CronConfig::parse(&v).unwrap_err().0;
        assert!(err(json!({})).contains("config.expression is required"));
        assert!(err(json!({"expression": "* * *"})).contains("3 fields"));
        assert!(err(json!({"expression": "61 * * * *"})).contains("config.expression '61"));
        assert!(err(json!({"expression": "0 0 31 2 *"})).contains("never matches"));
        assert!(
            err(json!({"expression": "* * * * *", "timezone": "Mars/Olympus"}))
                .contains("config.timezone 'Mars/Olympus'")
        );
        assert!(
            err(json!({"expression": "* * * * *", "catch_up": "always"}))
                .contains("config.catch_up")
        );
        assert!(err(json!({"expression": "* * * * *", "tz": "UTC"})).contains("config.tz"));
    }
}
