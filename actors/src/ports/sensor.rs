//! The sensor-code port: what a running sensor is (a driver) and how one is built.

use async_trait::async_trait;

use crate::domain::Sensor;
use crate::ports::DetectionSink;

/// Why a sensor failed. The text ends up in the sensor's status as `last_error`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct SensorFailure(pub String);

impl SensorFailure {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// The code of one running sensor: a timer, a webhook listener, a supervised process.
#[async_trait]
pub trait SensorDriver: Send + 'static {
    /// Runs until the sensor fails (an `Err`) or has nothing more to do (`Ok`, e.g. a
    /// one-shot date timer). The future is dropped to stop the sensor, so a driver must
    /// release what it holds (processes, listeners) on drop.
    async fn run(&mut self, sink: DetectionSink) -> Result<(), SensorFailure>;

    /// True for drivers that watch [`DetectionSink::stopping`] and release what they hold
    /// (a process group, a listener) before returning. Those get the stop grace period;
    /// the others are dropped at once.
    fn stops_gracefully(&self) -> bool {
        false
    }
}

/// Builds the driver of a sensor from its stored definition.
pub trait SensorDriverFactory: Send + Sync + 'static {
    /// Refuses a sensor whose runtime or config is unusable; that refusal is a start
    /// failure under the restart policy.
    fn create(&self, sensor: &Sensor) -> Result<Box<dyn SensorDriver>, SensorFailure>;
}
