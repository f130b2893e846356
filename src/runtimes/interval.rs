//! The built-in interval timer: `runtime: builtin`, `entrypoint: interval_timer`,
//! config `{interval: N, unit: seconds|minutes|hours|days, catch_up: skip|fire_once}`.

use async_trait::async_trait;
use attune_actors::ports::DetectionSink;
use attune_actors::ports::{SensorDriver, SensorFailure};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::time::Duration;

use super::SensorConfigError;
use super::schedule::{CatchUp, Fire, Schedule, refuse_unknown_keys, run_timer, timestamp};

pub const ENTRYPOINT: &str = "interval_timer";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntervalConfig {
    pub period: Duration,
    pub catch_up: CatchUp,
}

impl IntervalConfig {
    pub fn parse(config: &Value) -> Result<Self, SensorConfigError> {
        let interval = config
            .get("interval")
            .ok_or_else(|| SensorConfigError("config.interval is required".into()))?;
        let interval = interval.as_u64().filter(|n| *n > 0).ok_or_else(|| {
            SensorConfigError(format!(
                "config.interval must be a positive whole number, got {interval}"
            ))
        })?;
        let unit = match config.get("unit") {
            None => "seconds",
            Some(Value::String(unit)) => unit.as_str(),
            Some(other) => {
                return Err(SensorConfigError(format!(
                    "config.unit must be seconds, minutes, hours or days, got {other}"
                )));
            }
        };
        let seconds_per_unit = match unit {
            "seconds" => 1,
            "minutes" => 60,
            "hours" => 3_600,
            "days" => 86_400,
            other => {
                return Err(SensorConfigError(format!(
                    "config.unit must be seconds, minutes, hours or days, got '{other}'"
                )));
            }
        };
        refuse_unknown_keys(config, &["interval", "unit", "catch_up"], ENTRYPOINT)?;
        let seconds = interval
            .checked_mul(seconds_per_unit)
            .ok_or_else(|| SensorConfigError("config.interval is too large".into()))?;
        Ok(Self {
            period: Duration::from_secs(seconds),
            catch_up: CatchUp::parse(config)?,
        })
    }
}

pub struct IntervalTimer {
    config: IntervalConfig,
}

impl IntervalTimer {
    pub fn new(config: IntervalConfig) -> Self {
        Self { config }
    }
}

/// Instants `anchor + k * period`, anchored on the saved last fire (or the start), so the
/// rhythm survives a restart.
struct IntervalSchedule {
    period: chrono::Duration,
    anchor: DateTime<Utc>,
}

impl Schedule for IntervalSchedule {
    fn anchor(&mut self, at: DateTime<Utc>) {
        self.anchor = at;
    }

    fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let period = self.period.num_milliseconds().max(1);
        let elapsed = (after - self.anchor).num_milliseconds();
        let periods = elapsed.div_euclid(period) + 1;
        self.anchor
            .checked_add_signed(chrono::Duration::milliseconds(periods.checked_mul(period)?))
    }

    fn payload(&self, fire: &Fire, sensor_ref: &str) -> Value {
        json!({
            "type": "interval",
            "interval_seconds": self.period.num_seconds(),
            "scheduled_at": timestamp(fire.scheduled_at),
            "fired_at": timestamp(fire.fired_at),
            "execution_count": fire.execution_count,
            "sensor_ref": sensor_ref,
        })
    }
}

#[async_trait]
impl SensorDriver for IntervalTimer {
    async fn run(&mut self, sink: DetectionSink) -> Result<(), SensorFailure> {
        let period = chrono::Duration::from_std(self.config.period)
            .map_err(|_| SensorFailure::new("config.interval is too large"))?;
        let mut schedule = IntervalSchedule {
            period,
            anchor: Utc::now(),
        };
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

    #[test]
    fn units_convert_and_bad_configs_name_the_field() {
        let parse = |v: Value| IntervalConfig::parse(&v);
        assert_eq!(
            parse(json!({"interval": 2, "unit": "minutes"})).map(|c| c.period),
            Ok(Duration::from_secs(120))
        );
        assert_eq!(
            parse(json!({"interval": 5})).map(|c| c.period),
            Ok(Duration::from_secs(5))
        );
        assert!(parse(json!({})).unwrap_err().0.contains("config.interval"));
        assert!(
            parse(json!({"interval": 0}))
                .unwrap_err()
                .0
                .contains("config.interval")
        );
        assert!(
            parse(json!({"interval": "5"}))
                .unwrap_err()
                .0
                .contains("config.interval")
        );
        assert!(
            parse(json!({"interval": 1, "unit": "weeks"}))
                .unwrap_err()
                .0
                .contains("config.unit")
        );
        assert!(
            parse(json!({"interval": 1, "every": 2}))
                .unwrap_err()
                .0
                .contains("config.every")
        );
    }
}
