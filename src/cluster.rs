//! This instance among those sharing a database: its identity, its row in the `instance`
//! table kept fresh by a heartbeat every `cluster.lease_ttl / 3`, and the cluster as
//! `GET /cluster` and `attune-sensor status` show it.
//!
//! An instance whose heartbeat is older than `lease_ttl` is dead. Coordination itself
//! goes through leases (today the outbox publisher's, see `actors/src/outbox.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use attune_actors::domain::{InstanceRecord, LeaseRecord};
use attune_actors::ports::{Store, StoreError};
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::task::JoinHandle;

use crate::config::{Settings, host_name};

/// Who this process is.
#[derive(Debug, Clone, Serialize)]
pub struct Identity {
    pub id: String,
    pub labels: BTreeMap<String, String>,
    pub host: String,
    pub pid: u32,
    pub version: &'static str,
    pub started: DateTime<Utc>,
    /// `cluster.lease_ttl`.
    #[serde(skip)]
    pub lease_ttl: Duration,
}

impl Identity {
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            id: settings.cluster.instance_id(),
            labels: settings.cluster.labels.clone(),
            host: host_name(),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION"),
            started: Utc::now(),
            lease_ttl: settings.cluster.lease_ttl.0,
        }
    }

    fn record(&self, heartbeat: DateTime<Utc>) -> InstanceRecord {
        InstanceRecord {
            id: self.id.clone(),
            labels: self.labels.clone(),
            host: self.host.clone(),
            pid: self.pid,
            version: self.version.to_owned(),
            started: self.started,
            heartbeat,
        }
    }
}

/// Registers the instance and heartbeats until aborted. A database that is away delays
/// the heartbeat (logged once per outage), nothing else.
pub fn spawn_heartbeat(store: Arc<dyn Store>, identity: Arc<Identity>) -> JoinHandle<()> {
    let every = identity.lease_ttl / 3;
    tokio::spawn(async move {
        let mut registered = false;
        let mut failing = false;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = Utc::now();
            let beat = if registered {
                store.heartbeat_instance(&identity.id, now).await
            } else {
                store.register_instance(&identity.record(now)).await
            };
            match beat {
                Ok(()) => {
                    if !registered {
                        tracing::info!(instance = %identity.id, "instance registered");
                    }
                    registered = true;
                    failing = false;
                }
                Err(error) if !failing => {
                    tracing::warn!(instance = %identity.id, %error, "heartbeat failed; retrying");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    })
}

/// Removes the instance's row at shutdown (best effort: a row left behind just ages out).
pub async fn deregister(store: &dyn Store, identity: &Identity) {
    match tokio::time::timeout(Duration::from_secs(1), store.remove_instance(&identity.id)).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "could not remove this instance's row"),
        Err(_) => tracing::warn!("removing this instance's row timed out"),
    }
}

/// One instance as `GET /cluster` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceView {
    /// Its row: id, labels, host, pid, version, started, heartbeat.
    #[serde(flatten)]
    pub instance: InstanceRecord,
    pub heartbeat_age_secs: f64,
    /// Its heartbeat is younger than `cluster.lease_ttl`.
    pub alive: bool,
    /// This is the instance answering.
    pub this: bool,
    /// The leases it holds now (unexpired), by name.
    pub leases: Vec<String>,
}

/// `GET /cluster`: every registered instance with its heartbeat age, and the leases.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterView {
    pub instance: String,
    pub lease_ttl_secs: f64,
    pub instances: Vec<InstanceView>,
    pub leases: Vec<LeaseRecord>,
}

/// What `GET /cluster` answers, as of `now`. Pure, so it is tested without a database.
pub fn view(
    identity: &Identity,
    instances: Vec<InstanceRecord>,
    leases: Vec<LeaseRecord>,
    now: DateTime<Utc>,
) -> ClusterView {
    let ttl = identity.lease_ttl.as_secs_f64();
    let instances = instances
        .into_iter()
        .map(|instance| {
            let age = (now - instance.heartbeat).num_milliseconds().max(0) as f64 / 1000.0;
            let held = leases
                .iter()
                .filter(|l| l.holder == instance.id && l.expires > now)
                .map(|l| l.name.clone())
                .collect();
            InstanceView {
                this: instance.id == identity.id,
                alive: age < ttl,
                heartbeat_age_secs: age,
                leases: held,
                instance,
            }
        })
        .collect();
    ClusterView {
        instance: identity.id.clone(),
        lease_ttl_secs: ttl,
        instances,
        leases,
    }
}

/// Reads the instances and leases and renders [`view`].
pub async fn current(store: &dyn Store, identity: &Identity) -> Result<ClusterView, StoreError> {
    let instances = store.instances().await?;
    let leases = store.leases().await?;
    Ok(view(identity, instances, leases, Utc::now()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity {
            id: "a".into(),
            labels: BTreeMap::new(),
            host: "h".into(),
            pid: 1,
            version: "0",
            started: DateTime::<Utc>::UNIX_EPOCH,
            lease_ttl: Duration::from_secs(15),
        }
    }

    fn instance(id: &str, heartbeat: DateTime<Utc>) -> InstanceRecord {
        InstanceRecord {
            id: id.into(),
            labels: BTreeMap::from([("zone".to_owned(), "z1".to_owned())]),
            host: "h".into(),
            pid: 2,
            version: "0".into(),
            started: DateTime::<Utc>::UNIX_EPOCH,
            heartbeat,
        }
    }

    #[test]
    fn heartbeats_older_than_the_ttl_are_dead_and_leases_go_to_their_holders() {
        let now = DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::seconds(100);
        let leases = vec![
            LeaseRecord {
                name: "outbox".into(),
                holder: "b".into(),
                generation: 3,
                expires: now + chrono::Duration::seconds(5),
            },
            LeaseRecord {
                name: "old".into(),
                holder: "a".into(),
                generation: 1,
                expires: now - chrono::Duration::seconds(1),
            },
        ];
        let view = view(
            &identity(),
            vec![
                instance("a", now - chrono::Duration::seconds(2)),
                instance("b", now - chrono::Duration::seconds(16)),
            ],
            leases,
            now,
        );
        let a = &view.instances[0];
        let b = &view.instances[1];
        assert!(a.this && a.alive && a.leases.is_empty(), "{a:?}");
        assert!(!b.this && !b.alive, "{b:?}");
        assert_eq!(b.leases, ["outbox"], "an unexpired lease counts");
        assert_eq!(a.heartbeat_age_secs, 2.0);
    }
}
