//! Sensor runtimes: how a stored sensor definition becomes running code.

pub mod interval;

use attune_actors::domain::{BUILTIN_RUNTIME, Sensor};
use attune_actors::ports::{SensorDriver, SensorDriverFactory, SensorFailure};
use serde_json::Value;

/// Why a sensor definition cannot run, found at pack load or at sensor start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SensorConfigError(pub String);

/// Checks that a sensor's runtime and config are usable, without starting anything. The
/// pack loader calls this so bad sensors are refused before they are stored.
pub fn validate(
    runtime_ref: &str,
    entrypoint: &str,
    config: &Value,
) -> Result<(), SensorConfigError> {
    match (runtime_ref, entrypoint) {
        (BUILTIN_RUNTIME, interval::ENTRYPOINT) => {
            interval::IntervalConfig::parse(config).map(|_| ())
        }
        (BUILTIN_RUNTIME, other) => Err(SensorConfigError(format!(
            "unknown builtin entrypoint '{other}' (available: {})",
            interval::ENTRYPOINT
        ))),
        (other, _) => Err(SensorConfigError(format!(
            "runtime '{other}' is not supported yet (available: {BUILTIN_RUNTIME})"
        ))),
    }
}

/// Builds the driver of each sensor by its runtime.
#[derive(Debug, Clone, Default)]
pub struct RuntimeFactory;

impl SensorDriverFactory for RuntimeFactory {
    fn create(&self, sensor: &Sensor) -> Result<Box<dyn SensorDriver>, SensorFailure> {
        validate(&sensor.runtime_ref, &sensor.entrypoint, &sensor.config)
            .map_err(|e| SensorFailure::new(format!("sensor '{}': {e}", sensor.r#ref)))?;
        match (sensor.runtime_ref.as_str(), sensor.entrypoint.as_str()) {
            (BUILTIN_RUNTIME, interval::ENTRYPOINT) => {
                let config = interval::IntervalConfig::parse(&sensor.config)
                    .map_err(|e| SensorFailure::new(e.0))?;
                Ok(Box::new(interval::IntervalTimer::new(config)))
            }
            (runtime, entrypoint) => Err(SensorFailure::new(format!(
                "sensor '{}': no driver for runtime '{runtime}' entrypoint '{entrypoint}'",
                sensor.r#ref
            ))),
        }
    }
}
