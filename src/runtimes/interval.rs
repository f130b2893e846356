//! The built-in interval timer: `runtime: builtin`, `entrypoint: interval_timer`,
//! config `{interval: N, unit: seconds|minutes|hours|days}`.

use async_trait::async_trait;
use attune_actors::ports::{SensorDriver, SensorFailure};
use attune_actors::sensor::DetectionSink;
use chrono::Utc;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::time::{Instant, MissedTickBehavior};

use super::SensorConfigError;

pub const ENTRYPOINT: &str = "interval_timer";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntervalConfig {
    pub period: Duration,
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
        if let Some(key) = config
            .as_object()
            .and_then(|map| map.keys().find(|k| *k != "interval" && *k != "unit"))
        {
            return Err(SensorConfigError(format!(
                "config.{key} is not a setting of interval_timer"
            )));
        }
        let seconds = interval
            .checked_mul(seconds_per_unit)
            .ok_or_else(|| SensorConfigError("config.interval is too large".into()))?;
        Ok(Self {
            period: Duration::from_secs(seconds),
        })
    }
}

pub struct IntervalTimer {
    config: IntervalConfig,
    execution_count: u64,
}

impl IntervalTimer {
    pub fn new(config: IntervalConfig) -> Self {
        Self {
            config,
            execution_count: 0,
        }
    }
}

#[async_trait]
impl SensorDriver for IntervalTimer {
    async fn run(&mut self, sink: DetectionSink) -> Result<(), SensorFailure> {
        let period = self.config.period;
        let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
        // After a stall (a slow database), fire once and keep the rhythm instead of
        // bursting out the missed ticks.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.execution_count += 1;
            sink.record_poll();
            let payload = json!({
                "type": "interval",
                "interval_seconds": period.as_secs(),
                "fired_at": Utc::now().to_rfc3339(),
                "execution_count": self.execution_count,
                "sensor_ref": sink.sensor().r#ref,
            });
            sink.emit(payload)
                .await
                .map_err(|e| SensorFailure::new(format!("interval timer could not emit: {e}")))?;
        }
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
