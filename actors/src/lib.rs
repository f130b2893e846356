//! The supervised runtime core of attune-sensor.
//!
//! This crate holds the actor tree (supervisor, sensor actors, event generator, rule
//! matcher, outbox publisher), the domain model, the condition engine and the ports
//! (traits) through which the actors reach storage, the message bus and sensor code. It
//! depends on no database, broker or HTTP crate: the binary crate plugs adapters in.

mod batch;
pub mod conditions;
pub mod domain;
pub mod generator;
pub mod matcher;
pub mod messages;
pub mod outbox;
pub mod pipeline;
pub mod ports;
pub mod sensor;
pub mod status;
pub mod supervisor;
pub mod sync;

pub use supervisor::{SupervisorArgs, SupervisorConfig, SupervisorMsg, Tree};
