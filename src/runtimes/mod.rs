//! Sensor runtimes: how a stored sensor definition becomes running code.

pub mod interval;
pub mod process;

use attune_actors::domain::{BUILTIN_RUNTIME, Sensor, SensorDefinition};
use attune_actors::ports::{SensorDriver, SensorDriverFactory, SensorFailure};
use std::sync::Arc;

use crate::config::Settings;

/// Why a sensor's config is unusable, found at pack load or at sensor start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SensorConfigError(pub String);

/// A sensor definition refused at pack load: the field at fault and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct DefinitionError {
    pub field: &'static str,
    pub message: String,
}

fn refuse(field: &'static str, message: impl Into<String>) -> DefinitionError {
    DefinitionError {
        field,
        message: message.into(),
    }
}

/// Checks that a sensor's runtime, entrypoint, mode and config are usable, without
/// starting anything. The pack loader calls this so bad sensors are refused before they
/// are stored.
pub fn validate(sensor: &SensorDefinition) -> Result<(), DefinitionError> {
    match sensor.runtime_ref.as_str() {
        BUILTIN_RUNTIME => {
            if let Some(mode) = &sensor.mode {
                return Err(refuse(
                    "mode",
                    format!("built-in sensors have no mode (got '{mode}')"),
                ));
            }
            match sensor.entrypoint.as_str() {
                interval::ENTRYPOINT => interval::IntervalConfig::parse(&sensor.config)
                    .map(|_| ())
                    .map_err(|e| refuse("config", e.0)),
                other => Err(refuse(
                    "entrypoint",
                    format!(
                        "unknown builtin entrypoint '{other}' (available: {})",
                        interval::ENTRYPOINT
                    ),
                )),
            }
        }
        runtime if process::is_process_runtime(runtime) => process::validate(sensor),
        other => Err(refuse(
            "runtime",
            format!(
                "runtime '{other}' is not supported (available: {BUILTIN_RUNTIME}, {})",
                process::RUNTIMES.join(", ")
            ),
        )),
    }
}

/// Builds the driver of each sensor by its runtime.
#[derive(Debug, Clone)]
pub struct RuntimeFactory {
    /// The service's settings: runtimes read their defaults and limits from here.
    settings: Arc<Settings>,
    /// Shared by all process sensors (their concurrency slots live here).
    process: process::ProcessSettings,
}

impl RuntimeFactory {
    pub fn new(settings: &Settings) -> Self {
        Self {
            settings: Arc::new(settings.clone()),
            process: process::ProcessSettings::from_settings(settings),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }
}

impl SensorDriverFactory for RuntimeFactory {
    fn create(&self, sensor: &Sensor) -> Result<Box<dyn SensorDriver>, SensorFailure> {
        let refused =
            |message: String| SensorFailure::new(format!("sensor '{}': {message}", sensor.r#ref));
        match (sensor.runtime_ref.as_str(), sensor.entrypoint.as_str()) {
            (BUILTIN_RUNTIME, interval::ENTRYPOINT) => {
                let config =
                    interval::IntervalConfig::parse(&sensor.config).map_err(|e| refused(e.0))?;
                Ok(Box::new(interval::IntervalTimer::new(config)))
            }
            (runtime, _) if process::is_process_runtime(runtime) => {
                let driver = process::ProcessSensor::new(sensor, &self.process).map_err(refused)?;
                Ok(Box::new(driver))
            }
            (runtime, entrypoint) => Err(refused(format!(
                "no driver for runtime '{runtime}' entrypoint '{entrypoint}'"
            ))),
        }
    }
}
