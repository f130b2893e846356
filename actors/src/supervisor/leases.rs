//! Sensor leases (several instances on one database): on every placement tick the
//! supervisor renews the leases it holds, reads the live instances and the leases, and
//! applies [`placement::plan`]: it takes free sensors up to its share and gives back a few
//! when it holds more. A leased sensor runs here only while its lease is held here.
//!
//! Safety does not rest on these ticks being on time. Every event of a leased sensor
//! carries the generation it runs under, and the store refuses it once that generation is
//! not current ([`crate::ports::StoreError::Fenced`]). The ticks keep the sensor from
//! running needlessly: one whose lease cannot be renewed is stopped while a third of the
//! ttl is left, and a lease found lost stops its sensor at once.

use chrono::{DateTime, Utc};
use ractor::ActorRef;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;
use tokio::time::Instant;

use super::SupervisorState;
use super::messages::{ReconcileReport, SupervisorMsg};
use super::placement::{self, LeasedSensor, LiveInstance};
use crate::domain::{LeaseClaim, SENSOR_LEASE_PREFIX, Sensor, capped_after, sensor_lease};
use crate::status::SensorLeaseStatus;

/// How sensors are placed when several instances share the database.
#[derive(Debug, Clone)]
pub struct SensorLeases {
    /// This instance's id: the holder of its leases.
    pub holder: String,
    /// This instance's labels, matched against sensors' `placement.labels`.
    pub labels: BTreeMap<String, String>,
    /// How long a lease lasts unrenewed; an instance whose heartbeat is older is dead.
    pub ttl: Duration,
}

impl SensorLeases {
    /// How often placement looks for free sensors: a released lease is taken within it.
    pub fn tick(&self) -> Duration {
        (self.ttl / 3).min(Duration::from_secs(1))
    }

    fn renew_every(&self) -> Duration {
        self.ttl / 3
    }

    fn ttl_span(&self) -> chrono::Duration {
        crate::domain::chrono_span(self.ttl)
    }

    fn until(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        capped_after(now, self.ttl_span())
    }
}

/// One lease this instance holds.
#[derive(Debug, Clone, Copy)]
struct Held {
    generation: i64,
    until: DateTime<Utc>,
}

/// The leases this instance holds, and the enabled sensors as the last reconcile read them.
pub(super) struct LeaseBook {
    config: SensorLeases,
    held: HashMap<String, Held>,
    enabled: Vec<Sensor>,
    renewed_at: Option<Instant>,
}

impl LeaseBook {
    pub fn new(config: SensorLeases) -> Self {
        Self {
            config,
            held: HashMap::new(),
            enabled: Vec::new(),
            renewed_at: None,
        }
    }

    /// This instance's id, the holder of its leases.
    pub fn holder(&self) -> &str {
        &self.config.holder
    }

    /// What an event of `sensor_ref` carries: `None` for a sensor that is not leased.
    pub fn claim(&self, sensor_ref: &str) -> Option<LeaseClaim> {
        self.held.get(sensor_ref).map(|held| LeaseClaim {
            name: sensor_lease(sensor_ref),
            generation: held.generation,
        })
    }

    pub fn status(&self, sensor_ref: &str) -> Option<SensorLeaseStatus> {
        self.held.get(sensor_ref).map(|held| SensorLeaseStatus {
            holder: self.config.holder.clone(),
            generation: held.generation,
        })
    }

    /// Keeps the enabled sensors as a reconcile read them. A lease held for a sensor that
    /// is gone (or no longer leased) is let go by the next placement, like a surplus one.
    pub fn set_enabled(&mut self, enabled: Vec<Sensor>) {
        self.enabled = enabled;
    }

    /// What should run here: every sensor placed on all instances, and the leased ones
    /// whose lease this instance holds.
    fn runnable(&self) -> Vec<Sensor> {
        self.enabled
            .iter()
            .filter(|s| !s.placement.is_leased() || self.held.contains_key(&s.r#ref))
            .cloned()
            .collect()
    }

    /// Whether a leased sensor this instance does not hold is known: an operator command
    /// for it belongs to its holder.
    pub fn held_elsewhere(&self, sensor: &Sensor) -> bool {
        sensor.placement.is_leased() && !self.held.contains_key(&sensor.r#ref)
    }
}

impl SupervisorState {
    /// One placement tick; schedules the next.
    pub(super) async fn place(&mut self, myself: &ActorRef<SupervisorMsg>) {
        let Some(book) = self.leases.as_ref() else {
            return;
        };
        let tick = book.config.tick();
        if self.config.sensors_enabled {
            let report = self.place_now(myself).await;
            if report != ReconcileReport::default() {
                tracing::info!(?report, "placed sensors");
            }
            self.run_forwarded_commands(myself).await;
        }
        self.follow_reloads(myself).await;
        myself.send_after(tick, || SupervisorMsg::Place);
    }

    /// Renews, takes and gives back leases, then starts and stops sensors to match.
    pub(super) async fn place_now(&mut self, myself: &ActorRef<SupervisorMsg>) -> ReconcileReport {
        let Some(book) = self.leases.as_mut() else {
            return ReconcileReport::default();
        };
        let store = self.store.clone();
        let released = book.step(store.as_ref()).await;
        let desired = book.runnable();
        let holder = book.config.holder.clone();
        let report = self.apply(myself, desired).await;
        // Only once their sensors have stopped, so no sensor ever runs twice.
        for sensor_ref in released {
            let name = sensor_lease(&sensor_ref);
            if let Err(error) = store.release_lease(&name, &holder).await {
                tracing::warn!(lease = %name, %error, "could not release a lease; it expires on its own");
            }
        }
        report
    }

    /// At shutdown, once the sensors are stopped: their leases go at once, so other
    /// instances take them within a tick instead of a ttl.
    pub(super) async fn release_sensor_leases(&mut self) {
        let Some(book) = self.leases.as_mut() else {
            return;
        };
        book.held.clear();
        let release = self
            .store
            .release_leases(&book.config.holder, SENSOR_LEASE_PREFIX);
        match tokio::time::timeout(Duration::from_secs(1), release).await {
            Ok(Ok(())) => tracing::info!("released the sensor leases"),
            Ok(Err(error)) => {
                tracing::warn!(%error, "could not release the sensor leases; they expire on their own")
            }
            Err(_) => {
                tracing::warn!("releasing the sensor leases timed out; they expire on their own")
            }
        }
    }
}

impl LeaseBook {
    /// Renews (when due), plans and acquires; returns the sensors it gives up, whose
    /// leases are released once they are stopped.
    async fn step(&mut self, store: &dyn crate::ports::Store) -> Vec<String> {
        let wait = self.config.tick().max(Duration::from_millis(500));
        let now = Utc::now();
        let due = self
            .renewed_at
            .is_none_or(|at| at.elapsed() + self.config.tick() / 2 >= self.config.renew_every());
        if due && !self.held.is_empty() {
            let renewal = store.renew_leases(
                &self.config.holder,
                SENSOR_LEASE_PREFIX,
                now,
                self.config.until(now),
            );
            match tokio::time::timeout(wait, renewal).await {
                Ok(Ok(records)) => {
                    self.renewed_at = Some(Instant::now());
                    let until = self.config.until(now);
                    let renewed: HashMap<&str, i64> = records
                        .iter()
                        .filter_map(|r| {
                            Some((r.name.strip_prefix(SENSOR_LEASE_PREFIX)?, r.generation))
                        })
                        .collect();
                    self.held.retain(|sensor_ref, held| {
                        match renewed.get(sensor_ref.as_str()) {
                            Some(generation) if *generation == held.generation => {
                                held.until = until;
                                true
                            }
                            _ => {
                                tracing::warn!(sensor = %sensor_ref, generation = held.generation, "sensor lease lost; stopping the sensor here");
                                false
                            }
                        }
                    });
                }
                failed => {
                    let error = match failed {
                        Ok(Err(error)) => error.to_string(),
                        _ => "timed out".to_owned(),
                    };
                    let margin = self.config.ttl_span() / 3;
                    self.held.retain(|sensor_ref, held| {
                        let keep = held.until - now > margin;
                        if !keep {
                            tracing::error!(sensor = %sensor_ref, %error, "cannot renew the sensor lease; stopping the sensor before it expires");
                        }
                        keep
                    });
                    return Vec::new();
                }
            }
        } else if due {
            self.renewed_at = Some(Instant::now());
        }

        // Leases of sensors that are gone (disabled, removed, no longer leased) go back.
        let leased: HashSet<&str> = self
            .enabled
            .iter()
            .filter(|s| s.placement.is_leased())
            .map(|s| s.r#ref.as_str())
            .collect();
        let mut released: Vec<String> = self
            .held
            .keys()
            .filter(|sensor_ref| !leased.contains(sensor_ref.as_str()))
            .cloned()
            .collect();
        drop(leased);
        for sensor_ref in &released {
            self.held.remove(sensor_ref);
        }

        let read = async {
            Ok::<_, crate::ports::StoreError>((store.instances().await?, store.leases().await?))
        };
        let (instances, leases) = match tokio::time::timeout(wait, read).await {
            Ok(Ok(read)) => read,
            Ok(Err(error)) => {
                tracing::debug!(%error, "cannot read the cluster; placement waits");
                return released;
            }
            Err(_) => return released,
        };
        let ttl = self.config.ttl_span();
        let mut live: Vec<LiveInstance<'_>> = instances
            .iter()
            .filter(|i| now - i.heartbeat < ttl)
            .map(|i| LiveInstance {
                id: &i.id,
                labels: &i.labels,
            })
            .collect();
        // This instance is live whether or not its first heartbeat is in yet: it just read
        // the database, and it takes nothing it cannot write a lease for.
        if !live.iter().any(|i| i.id == self.config.holder) {
            live.push(LiveInstance {
                id: &self.config.holder,
                labels: &self.config.labels,
            });
        }
        let holders: HashMap<&str, &str> = leases
            .iter()
            .filter(|l| l.expires > now)
            .filter_map(|l| Some((l.name.strip_prefix(SENSOR_LEASE_PREFIX)?, l.holder.as_str())))
            .collect();
        let sensors: Vec<LeasedSensor<'_>> = self
            .enabled
            .iter()
            .filter(|s| s.placement.is_leased())
            .map(|s| LeasedSensor {
                sensor_ref: &s.r#ref,
                placement: &s.placement,
                holder: holders.get(s.r#ref.as_str()).copied(),
            })
            .collect();
        let plan = placement::plan(
            &self.config.holder,
            &live,
            &sensors,
            placement::max_moves(sensors.len(), live.len()),
        );
        for sensor_ref in &plan.release {
            self.held.remove(sensor_ref);
        }
        released.extend(plan.release);
        for sensor_ref in plan.acquire {
            let name = sensor_lease(&sensor_ref);
            let until = self.config.until(now);
            match store
                .acquire_lease(&name, &self.config.holder, now, until)
                .await
            {
                Ok(Some(generation)) => {
                    tracing::info!(sensor = %sensor_ref, generation, "sensor lease taken");
                    self.held.insert(sensor_ref, Held { generation, until });
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::debug!(%error, "cannot take a sensor lease; placement waits");
                    break;
                }
            }
        }
        released
    }
}
