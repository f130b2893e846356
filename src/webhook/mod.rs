//! The webhook listener: one HTTP server on `webhook.bind` (apart from the admin API)
//! serving `POST /webhooks/{path}` for every running `webhook` sensor.
//!
//! A webhook sensor registers its path in the shared [`WebhookRegistry`] while it runs
//! and unregisters when it stops (its [`Registration`] is dropped). A request looks its
//! path up, is size-checked, authenticated and rate-limited by that sensor's settings,
//! and becomes an event through the sensor's [`DetectionSink`]; the answer is 202 with
//! the event id only once the event is stored.
//!
//! One concern per file:
//!
//! - `listener.rs`: the [`router`] and the request handler, the order of the checks and
//!   the status code of each refusal;
//! - `registry.rs`: which sensor serves which path ([`WebhookRegistry`], [`WebhookRoute`],
//!   [`Registration`]);
//! - `auth.rs`: the HMAC body signature and the bearer token ([`authenticate`],
//!   [`WebhookAuth`], [`Secret`]);
//! - `rate_limit.rs`: the per-sensor [`TokenBucket`];
//! - `payload.rs`: the body as JSON, form or text ([`parse_body`]) and the event payload
//!   built from the request, without its credential headers.
//!
//! [`DetectionSink`]: attune_actors::ports::DetectionSink

mod auth;
mod listener;
mod payload;
mod rate_limit;
mod registry;

pub use auth::{Secret, WebhookAuth, authenticate};
pub use listener::router;
pub use payload::parse_body;
pub use rate_limit::TokenBucket;
pub use registry::{Dedup, PathTaken, Registration, WebhookRegistry, WebhookRoute};
