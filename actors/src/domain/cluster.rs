//! Several instances on one database: the rows they coordinate through. An instance
//! registers itself and heartbeats; a lease is held by one instance at a time until it
//! expires, and its generation grows at every change of holder, so whatever a holder does
//! can be tied to the generation it held.

use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;

/// One instance of the service, as registered in the `instance` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceRecord {
    pub id: String,
    pub labels: BTreeMap<String, String>,
    pub host: String,
    pub pid: u32,
    pub version: String,
    pub started: DateTime<Utc>,
    pub heartbeat: DateTime<Utc>,
}

/// A lease: who holds it, in which generation, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseRecord {
    pub name: String,
    pub holder: String,
    pub generation: i64,
    pub expires: DateTime<Utc>,
}

/// The lease of the outbox publisher: one instance publishes at a time, so steady-state
/// operation sends each message once.
pub const OUTBOX_LEASE: &str = "outbox";
