//! Ports: the traits through which the actor tree reaches the outside world, and the
//! protocols at its edges.
//!
//! Adapters in the `attune-sensor` binary crate implement the traits (PostgreSQL, SQLite,
//! RabbitMQ, the in-process bus, sensor runtimes); tests implement them in memory. This
//! layer depends only on the domain and status types, never on an actor.

mod bus;
mod context;
mod intake;
mod metrics;
mod sensor;
mod store;

pub use bus::{BusError, PublishReport, PublishedBatch, Publisher, Refusal, RefusalKind};
pub use context::DetectionSink;
pub use intake::{
    Admission, EventAck, EventIntake, EventRequest, IntakeError, MatchOutcome, NoSchemas,
    PayloadSchemas, Permit, check_storable, json_size,
};
pub use metrics::{NoMetrics, PipelineMetrics};
pub use sensor::{SensorDriver, SensorDriverFactory, SensorFailure};
pub use store::{ClosedWindows, OutboxRefusal, Store, StoreError, StoredWindow};
