//! Sensor runtimes: how a stored sensor definition becomes running code.

pub mod cron;
pub mod date;
pub mod file_watch;
pub mod interval;
pub mod process;
pub mod schedule;
pub mod webhook;

use attune_actors::domain::{BUILTIN_RUNTIME, Sensor, SensorDefinition};
use attune_actors::ports::{SensorDriver, SensorDriverFactory, SensorFailure};
use std::sync::Arc;

use crate::config::Settings;
use crate::metrics::Metrics;
use crate::webhook::WebhookRegistry;

/// The built-in entrypoints, for error messages.
const BUILTIN_ENTRYPOINTS: [&str; 5] = [
    interval::ENTRYPOINT,
    cron::ENTRYPOINT,
    date::ENTRYPOINT,
    webhook::ENTRYPOINT,
    file_watch::ENTRYPOINT,
];

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
            let config = &sensor.config;
            let checked = match sensor.entrypoint.as_str() {
                interval::ENTRYPOINT => interval::IntervalConfig::parse(config).map(|_| ()),
                cron::ENTRYPOINT => cron::CronConfig::parse(config).map(|_| ()),
                date::ENTRYPOINT => date::DateConfig::parse(config).map(|_| ()),
                webhook::ENTRYPOINT => webhook::WebhookConfig::parse(config).map(|_| ()),
                file_watch::ENTRYPOINT => file_watch::FileWatchConfig::parse(config).map(|_| ()),
                other => {
                    return Err(refuse(
                        "entrypoint",
                        format!(
                            "unknown builtin entrypoint '{other}' (available: {})",
                            BUILTIN_ENTRYPOINTS.join(", ")
                        ),
                    ));
                }
            };
            checked.map_err(|e| refuse("config", e.0))
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

/// The checks of a sensor that depend on the moment and on what is already stored, made
/// when a pack is loaded: a date timer's `fire_at` must be in the future, unless the
/// stored sensor already has that same `fire_at` (reloading an unchanged pack after the
/// timer fired is not an error; the timer remembers it fired).
pub fn validate_at_load(
    sensor: &SensorDefinition,
    stored: Option<&Sensor>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), DefinitionError> {
    if sensor.runtime_ref != BUILTIN_RUNTIME || sensor.entrypoint != date::ENTRYPOINT {
        return Ok(());
    }
    let config = date::DateConfig::parse(&sensor.config).map_err(|e| refuse("config", e.0))?;
    let unchanged = stored.is_some_and(|s| {
        s.entrypoint == date::ENTRYPOINT
            && s.config.get("fire_at").is_some()
            && s.config.get("fire_at") == sensor.config.get("fire_at")
    });
    if unchanged {
        return Ok(());
    }
    config.refuse_past(now).map_err(|e| refuse("config", e.0))
}

/// Builds the driver of each sensor by its runtime.
#[derive(Debug, Clone)]
pub struct RuntimeFactory {
    /// The service's settings: runtimes read their defaults and limits from here.
    settings: Arc<Settings>,
    /// Shared by all process sensors (their concurrency slots live here).
    process: process::ProcessSettings,
    /// Where webhook sensors register their paths; the webhook listener serves them.
    webhooks: Arc<WebhookRegistry>,
    metrics: Arc<Metrics>,
}

impl RuntimeFactory {
    /// Runtimes that count into `metrics`.
    pub fn new(settings: &Settings, metrics: Arc<Metrics>) -> Self {
        Self {
            settings: Arc::new(settings.clone()),
            process: process::ProcessSettings::from_settings(settings, metrics.clone()),
            webhooks: WebhookRegistry::with_metrics(metrics.clone()),
            metrics,
        }
    }

    /// The registry the webhook listener must serve.
    pub fn webhooks(&self) -> Arc<WebhookRegistry> {
        Arc::clone(&self.webhooks)
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
            (BUILTIN_RUNTIME, cron::ENTRYPOINT) => {
                let config = cron::CronConfig::parse(&sensor.config).map_err(|e| refused(e.0))?;
                Ok(Box::new(cron::CronTimer::new(config)))
            }
            (BUILTIN_RUNTIME, date::ENTRYPOINT) => {
                let config = date::DateConfig::parse(&sensor.config).map_err(|e| refused(e.0))?;
                Ok(Box::new(date::DateTimer::new(config)))
            }
            (BUILTIN_RUNTIME, webhook::ENTRYPOINT) => {
                let config =
                    webhook::WebhookConfig::parse(&sensor.config).map_err(|e| refused(e.0))?;
                Ok(Box::new(webhook::WebhookSensor::new(
                    config,
                    self.webhooks(),
                    self.settings.dedup.window.0,
                    self.settings.pipeline.answer_timeout.0,
                )))
            }
            (BUILTIN_RUNTIME, file_watch::ENTRYPOINT) => {
                let config =
                    file_watch::FileWatchConfig::parse(&sensor.config).map_err(|e| refused(e.0))?;
                Ok(Box::new(file_watch::FileWatcher::new(
                    config,
                    self.metrics.clone(),
                )))
            }
            (runtime, entrypoint) => Err(refused(format!(
                "no driver for runtime '{runtime}' entrypoint '{entrypoint}'"
            ))),
        }
    }
}
