//! The supervised runtime core of attune-sensor.
//!
//! This crate holds the actor tree (supervisor, sensor actors, event generator, rule
//! matcher, outbox publisher), the domain model, the condition engine and the ports
//! (traits) through which the actors reach storage, the message bus and sensor code. It
//! depends on no database, broker or HTTP crate: the binary crate plugs adapters in.
//!
//! Modules form layers and every import points down (`docs/architecture.md` draws them):
//!
//! 1. data: `domain`, `messages`, `status`, `conditions`, and the helpers `sync`,
//!    `live_ref`, `batch`;
//! 2. `ports`: the traits, the sensor's context and the event intake protocol;
//! 3. the actors, each knowing only what it sends to: `outbox` ← `matcher` ←
//!    `generator`; `sensor` → the intake port;
//! 4. `pipeline`: the live refs that tie the actors together;
//! 5. `supervisor`: owns the tree.

mod batch;
pub mod conditions;
pub mod domain;
pub mod generator;
pub mod grouping;
pub mod live_ref;
pub mod matcher;
pub mod messages;
pub mod outbox;
pub mod params;
pub mod pipeline;
pub mod ports;
pub mod sensor;
pub mod status;
pub mod supervisor;
pub mod sync;

pub use supervisor::{SupervisorArgs, SupervisorConfig, SupervisorMsg, Tree};
