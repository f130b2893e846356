//! The built-in date timer: `runtime: builtin`, `entrypoint: datetime_timer`, config
//! `{fire_at: <RFC 3339>, catch_up}`. Fires once, then the sensor completes; the fire is
//! remembered, so a restart does not fire it again.

use async_trait::async_trait;
use attune_actors::ports::DetectionSink;
use attune_actors::ports::{SensorDriver, SensorFailure};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::SensorConfigError;
use super::schedule::{CatchUp, Fire, Schedule, refuse_unknown_keys, run_timer, timestamp};

pub const ENTRYPOINT: &str = "datetime_timer";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateConfig {
    pub fire_at: DateTime<Utc>,
    pub catch_up: CatchUp,
}

impl DateConfig {
    pub fn parse(config: &Value) -> Result<Self, SensorConfigError> {
        refuse_unknown_keys(config, &["fire_at", "catch_up"], ENTRYPOINT)?;
        let fire_at = match config.get("fire_at") {
            Some(Value::String(text)) => DateTime::parse_from_rfc3339(text)
                .map_err(|e| {
                    SensorConfigError(format!(
                        "config.fire_at '{text}' is not an RFC 3339 date-time (e.g. 2030-01-31T09:00:00Z): {e}"
                    ))
                })?
                .to_utc(),
            Some(other) => {
                return Err(SensorConfigError(format!(
                    "config.fire_at must be an RFC 3339 string, got {other}"
                )));
            }
            None => return Err(SensorConfigError("config.fire_at is required".into())),
        };
        Ok(Self {
            fire_at,
            catch_up: CatchUp::parse(config)?,
        })
    }

    /// The pack-load check: a `fire_at` already past would never fire.
    pub fn refuse_past(&self, now: DateTime<Utc>) -> Result<(), SensorConfigError> {
        if self.fire_at <= now {
            return Err(SensorConfigError(format!(
                "config.fire_at {} is already past (now {}); a date timer fires once, at a future instant",
                timestamp(self.fire_at),
                timestamp(now)
            )));
        }
        Ok(())
    }
}

struct DateSchedule {
    fire_at: DateTime<Utc>,
}

impl Schedule for DateSchedule {
    fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        (self.fire_at > after).then_some(self.fire_at)
    }

    fn payload(&self, fire: &Fire, sensor_ref: &str) -> Value {
        json!({
            "type": "date",
            "fire_at": timestamp(self.fire_at),
            "fired_at": timestamp(fire.fired_at),
            "sensor_ref": sensor_ref,
        })
    }
}

pub struct DateTimer {
    config: DateConfig,
}

impl DateTimer {
    pub fn new(config: DateConfig) -> Self {
        Self { config }
    }
}

#[async_trait]
impl SensorDriver for DateTimer {
    async fn run(&mut self, sink: DetectionSink) -> Result<(), SensorFailure> {
        let mut schedule = DateSchedule {
            fire_at: self.config.fire_at,
        };
        // Without a saved fire, the instant missed while the service was down counts from
        // when the definition was stored: a fire that fell in the downtime is caught up.
        let origin = Some(sink.sensor().updated);
        run_timer(&sink, &mut schedule, self.config.catch_up, origin).await?;
        tracing::info!(sensor = %sink.sensor().r#ref, fire_at = %timestamp(self.config.fire_at), "date timer done");
        Ok(())
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
    fn parses_and_refuses_with_the_field() {
        let parsed = DateConfig::parse(&json!({"fire_at": "2030-01-31T10:00:00+01:00"})).unwrap();
        assert_eq!(timestamp(parsed.fire_at), "2030-01-31T09:00:00.000Z");
        let err = |v: Value| DateConfig::parse(&v).unwrap_err().0;
        assert!(err(json!({})).contains("config.fire_at is required"));
        assert!(err(json!({"fire_at": "tomorrow"})).contains("config.fire_at 'tomorrow'"));
        assert!(err(json!({"fire_at": 5})).contains("config.fire_at"));
        let past = DateConfig::parse(&json!({"fire_at": "2001-01-01T00:00:00Z"})).unwrap();
        assert!(
            past.refuse_past(Utc::now())
                .unwrap_err()
                .0
                .contains("already past")
        );
        assert!(parsed.refuse_past(Utc::now()).is_ok());
    }
}
