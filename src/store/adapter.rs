//! What a backend must provide, and the one [`Store`] implementation built on it.
//!
//! A backend supplies its pools, its batch writers (the statements that truly differ:
//! PostgreSQL's `UNNEST` with preallocated ids, SQLite's bound inserts on the connection's
//! handle), how a pack transaction begins and, optionally, a thread for its writes; every
//! other port method is a shared statement from `queries`.
//!
//! [`Store`] belongs to another crate, so it cannot be implemented once for every
//! [`Adapter`]; [`impl_store!`] writes that implementation for one adapter type instead,
//! from this single text.
//!
//! [`Store`]: attune_actors::ports::Store

use async_trait::async_trait;
use attune_actors::domain::{Enforcement, Event, Id, NewEnforcement, NewEvent};
use attune_actors::ports::StoreError;
use sqlx::{Pool, Transaction};
use std::time::Duration;

use super::dialect::Backend;
use super::write_thread::WriteThread;

#[async_trait]
pub(crate) trait Adapter: Send + Sync + 'static {
    type Db: Backend;

    /// Where reads go.
    fn reader(&self) -> &Pool<Self::Db>;
    /// Where single-statement writes go.
    fn writer(&self) -> &Pool<Self::Db>;

    /// How long one port call may take, waiting for a connection included.
    fn deadline(&self) -> Duration;

    /// The instance this store stores events for (`event.stored_by`).
    fn instance(&self) -> &str;

    /// The thread the pipeline's writes run on, if the backend has one (SQLite: see
    /// `write_thread`); without one they run on the caller's task.
    fn write_thread(&self) -> Option<&WriteThread> {
        None
    }

    /// Opens a write transaction (on SQLite, holding the write lock from the start).
    async fn begin_write(&self) -> Result<Transaction<'static, Self::Db>, StoreError>;

    /// Inserts a non-empty batch of events with their outbox rows in `tx`, in order.
    async fn insert_events(
        &self,
        tx: &mut Transaction<'static, Self::Db>,
        events: Vec<NewEvent>,
        created: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<Event>, StoreError>;

    /// Inserts a non-empty batch of enforcements with their outbox rows in `tx`, in
    /// order; a `(rule, event)` pair that exists comes back as stored, without a message.
    async fn insert_enforcements(
        &self,
        tx: &mut Transaction<'static, Self::Db>,
        enforcements: Vec<NewEnforcement>,
        created: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<Enforcement>, StoreError>;

    /// Stamps a non-empty list of outbox rows as published (if they are not yet).
    async fn write_published(&self, ids: &[Id]) -> Result<(), StoreError>;

    /// Opens the transaction that writes the pack `pack_ref`, holding whatever lock keeps
    /// two writers of the same pack apart.
    async fn begin_pack(
        &self,
        pack_ref: &str,
    ) -> Result<Transaction<'static, Self::Db>, StoreError>;
}

/// Runs one port call against the deadline. An expired call is an ordinary
/// [`StoreError::Unavailable`], retried like a lost connection; dropping the call's future
/// rolls back its transaction and retires its connection, as for any cancelled query.
pub(crate) async fn within<T>(
    deadline: Duration,
    call: &'static str,
    work: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(deadline, work).await {
        Ok(result) => result,
        Err(_) => Err(StoreError::Unavailable(format!(
            "the database did not answer {call} within {:.1} s (database.statement_timeout)",
            deadline.as_secs_f64()
        ))),
    }
}

/// Runs the write call `call` makes of the adapter on the adapter's write thread, or on the
/// caller's task when it has none.
pub(crate) async fn on_write_path<A, T, F>(
    adapter: &A,
    call: impl FnOnce(A) -> F,
) -> Result<T, StoreError>
where
    A: Adapter + Clone,
    T: Send + 'static,
    F: Future<Output = Result<T, StoreError>> + Send + 'static,
{
    match adapter.write_thread() {
        Some(thread) => thread.run(call(adapter.clone())).await,
        None => call(adapter.clone()).await,
    }
}

/// The bound of a call that commits a transaction: a multiple of the deadline, so the
/// server's own `statement_timeout` (one deadline) ends a slow statement first and the
/// caller sees a clean rollback. Only a connection that does not answer at all reaches
/// this bound, and then the commit's fate is unknown: retrying may store the batch twice
/// (see "Uncertain commits" in the README).
pub(crate) fn commit_deadline(deadline: Duration) -> Duration {
    deadline.saturating_mul(3)
}

/// `impl Store for $store` from the adapter's [`Adapter`] implementation and the shared
/// statements. Invoke once, in the adapter's module.
macro_rules! impl_store {
    ($store:ty) => {
        // A block of its own, so that its imports and `Shared` stay out of the adapter.
        const _: () = {
            use ::attune_actors::domain::{
                Enforcement, Event, EventWrite, Id, NewEnforcement, NewEvent, OutboxMessage,
                PackDefinition, PackUpsertSummary, ParkedMessage, Rule, Sensor, Trigger,
            };
            use ::attune_actors::ports::{Store, StoreError};
            use ::serde_json::Value;
            use $crate::store::adapter::Adapter;
            use $crate::store::dialect::Table;

            type Shared = $crate::store::queries::Queries<<$store as Adapter>::Db>;

            /// Both enforcement writes: with `matched`, the watermark in the same transaction.
            async fn write_enforcements(
                store: &$store,
                enforcements: Vec<NewEnforcement>,
                matched: Option<::attune_actors::domain::Watermark>,
                call: &'static str,
            ) -> Result<Vec<Option<Enforcement>>, StoreError> {
                $crate::store::adapter::on_write_path(store, |store: $store| async move {
                    $crate::store::adapter::within(
                        $crate::store::adapter::commit_deadline(store.deadline()),
                        call,
                        $crate::store::throttle_tx::ThrottleTx::<$store>::create_enforcements(
                            &store,
                            enforcements,
                            matched,
                        ),
                    )
                    .await
                })
                .await
            }

            #[::async_trait::async_trait]
            impl Store for $store {
                async fn ping(&self) -> Result<(), StoreError> {
                    $crate::store::adapter::within(self.deadline(), "ping", async {
                        Shared::ping(self.reader()).await
                    })
                    .await
                }

                async fn enabled_sensors(&self) -> Result<Vec<Sensor>, StoreError> {
                    $crate::store::adapter::within(self.deadline(), "enabled_sensors", async {
                        Shared::enabled_sensors(self.reader()).await
                    })
                    .await
                }

                async fn sensor_by_ref(
                    &self,
                    sensor_ref: &str,
                ) -> Result<Option<Sensor>, StoreError> {
                    $crate::store::adapter::within(self.deadline(), "sensor_by_ref", async {
                        Shared::sensor_by_ref(self.reader(), sensor_ref).await
                    })
                    .await
                }

                async fn trigger_by_ref(
                    &self,
                    trigger_ref: &str,
                ) -> Result<Option<Trigger>, StoreError> {
                    $crate::store::adapter::within(self.deadline(), "trigger_by_ref", async {
                        Shared::trigger_by_ref(self.reader(), trigger_ref).await
                    })
                    .await
                }

                async fn enabled_rules_for_trigger(
                    &self,
                    trigger_ref: &str,
                ) -> Result<Vec<Rule>, StoreError> {
                    $crate::store::adapter::within(
                        self.deadline(),
                        "enabled_rules_for_trigger",
                        async {
                            Shared::enabled_rules_for_trigger(self.reader(), trigger_ref).await
                        },
                    )
                    .await
                }

                async fn rule_by_ref(&self, rule_ref: &str) -> Result<Option<Rule>, StoreError> {
                    $crate::store::adapter::within(self.deadline(), "rule_by_ref", async {
                        Shared::rule_by_ref(self.reader(), rule_ref).await
                    })
                    .await
                }

                async fn create_events(
                    &self,
                    events: Vec<NewEvent>,
                ) -> Result<Vec<EventWrite>, StoreError> {
                    $crate::store::adapter::on_write_path(self, |store: $store| async move {
                        $crate::store::adapter::within(
                            $crate::store::adapter::commit_deadline(store.deadline()),
                            "create_events",
                            $crate::store::events_tx::EventsTx::<$store>::create_events(
                                &store, events,
                            ),
                        )
                        .await
                    })
                    .await
                }

                async fn create_enforcements(
                    &self,
                    enforcements: Vec<NewEnforcement>,
                ) -> Result<Vec<Option<Enforcement>>, StoreError> {
                    write_enforcements(self, enforcements, None, "create_enforcements").await
                }

                async fn create_enforcements_through(
                    &self,
                    enforcements: Vec<NewEnforcement>,
                    matched: &::attune_actors::domain::Watermark,
                ) -> Result<Vec<Option<Enforcement>>, StoreError> {
                    let matched = Some(matched.clone());
                    write_enforcements(self, enforcements, matched, "create_enforcements_through")
                        .await
                }

                async fn close_throttle_windows(
                    &self,
                    now: ::chrono::DateTime<::chrono::Utc>,
                    limit: u32,
                ) -> Result<::attune_actors::ports::ClosedWindows, StoreError> {
                    $crate::store::adapter::on_write_path(self, move |store: $store| async move {
                        $crate::store::adapter::within(
                            $crate::store::adapter::commit_deadline(store.deadline()),
                            "close_throttle_windows",
                            $crate::store::throttle_tx::ThrottleTx::<$store>::close_windows(
                                &store, now, limit,
                            ),
                        )
                        .await
                    })
                    .await
                }

                async fn register_instance(
                    &self,
                    instance: &::attune_actors::domain::InstanceRecord,
                ) -> Result<(), StoreError> {
                    $crate::store::adapter::within(self.deadline(), "register_instance", async {
                        Shared::register_instance(self.writer(), instance).await
                    })
                    .await
                }

                async fn heartbeat_instance(
                    &self,
                    id: &str,
                    at: ::chrono::DateTime<::chrono::Utc>,
                ) -> Result<(), StoreError> {
                    $crate::store::adapter::within(self.deadline(), "heartbeat_instance", async {
                        Shared::heartbeat_instance(self.writer(), id, at).await
                    })
                    .await
                }

                async fn remove_instance(&self, id: &str) -> Result<(), StoreError> {
                    $crate::store::adapter::within(self.deadline(), "remove_instance", async {
                        Shared::remove_instance(self.writer(), id).await
                    })
                    .await
                }

                async fn instances(
                    &self,
                ) -> Result<Vec<::attune_actors::domain::InstanceRecord>, StoreError> {
                    $crate::store::adapter::within(self.deadline(), "instances", async {
                        Shared::instances(self.reader()).await
                    })
                    .await
                }

                async fn acquire_lease(
                    &self,
                    name: &str,
                    holder: &str,
                    now: ::chrono::DateTime<::chrono::Utc>,
                    expires: ::chrono::DateTime<::chrono::Utc>,
                ) -> Result<Option<i64>, StoreError> {
                    let deadline = $crate::store::adapter::commit_deadline(self.deadline());
                    $crate::store::adapter::within(deadline, "acquire_lease", async {
                        let mut tx = self.begin_write().await?;
                        if Shared::lease_locked(&mut *tx, name).await? {
                            return Ok(None);
                        }
                        let granted =
                            Shared::acquire_lease(&mut *tx, name, holder, now, expires).await?;
                        tx.commit().await.map_err($crate::store::store_error)?;
                        Ok(granted)
                    })
                    .await
                }

                async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
                    $crate::store::adapter::within(self.deadline(), "release_lease", async {
                        Shared::release_lease(self.writer(), name, holder).await
                    })
                    .await
                }

                async fn leases(
                    &self,
                ) -> Result<Vec<::attune_actors::domain::LeaseRecord>, StoreError> {
                    $crate::store::adapter::within(self.deadline(), "leases", async {
                        Shared::leases(self.reader()).await
                    })
                    .await
                }

                async fn renew_leases(
                    &self,
                    holder: &str,
                    prefix: &str,
                    now: ::chrono::DateTime<::chrono::Utc>,
                    expires: ::chrono::DateTime<::chrono::Utc>,
                ) -> Result<Vec<::attune_actors::domain::LeaseRecord>, StoreError> {
                    $crate::store::adapter::within(self.deadline(), "renew_leases", async {
                        Shared::renew_leases(self.writer(), holder, prefix, now, expires).await
                    })
                    .await
                }

                async fn release_leases(
                    &self,
                    holder: &str,
                    prefix: &str,
                ) -> Result<(), StoreError> {
                    $crate::store::adapter::within(self.deadline(), "release_leases", async {
                        Shared::release_leases(self.writer(), holder, prefix).await
                    })
                    .await
                }

                async fn throttle_window(
                    &self,
                    rule_ref: &str,
                    group: &str,
                ) -> Result<Option<::attune_actors::domain::ThrottleWindow>, StoreError> {
                    $crate::store::adapter::within(self.deadline(), "throttle_window", async {
                        Ok(Shared::throttle_window(self.reader(), rule_ref, group)
                            .await?
                            .map(|(window, _)| window))
                    })
                    .await
                }

                async fn throttle_windows(
                    &self,
                    limit: u32,
                ) -> Result<Vec<::attune_actors::ports::StoredWindow>, StoreError> {
                    $crate::store::adapter::within(self.deadline(), "throttle_windows", async {
                        Ok(Shared::all_windows(self.reader(), limit)
                            .await?
                            .into_iter()
                            .map($crate::store::throttle::listed)
                            .collect())
                    })
                    .await
                }

                async fn send_sensor_command(
                    &self,
                    command: &::attune_actors::domain::SensorCommand,
                ) -> Result<(), StoreError> {
                    $crate::store::adapter::within(self.deadline(), "send_sensor_command", async {
                        Shared::send_sensor_command(self.writer(), command).await
                    })
                    .await
                }

                async fn take_sensor_commands(
                    &self,
                    holder: &str,
                    now: ::chrono::DateTime<::chrono::Utc>,
                    stale_before: ::chrono::DateTime<::chrono::Utc>,
                ) -> Result<Vec<::attune_actors::domain::SensorCommand>, StoreError> {
                    $crate::store::adapter::within(self.deadline(), "take_sensor_commands", async {
                        // Stale ones first: a failure after taking would lose what was taken.
                        match Shared::drop_stale_commands(self.writer(), stale_before).await {
                            Ok(0) => {}
                            Ok(dropped) => ::tracing::warn!(
                                dropped,
                                "operator commands dropped: no instance held their sensors"
                            ),
                            Err(error) => {
                                ::tracing::debug!(%error, "stale operator commands not dropped yet")
                            }
                        }
                        Shared::take_sensor_commands(self.writer(), holder, now).await
                    })
                    .await
                }

                async fn request_reload(&self) -> Result<i64, StoreError> {
                    $crate::store::adapter::within(self.deadline(), "request_reload", async {
                        Shared::request_reload(self.writer()).await
                    })
                    .await
                }

                async fn reload_generation(&self) -> Result<i64, StoreError> {
                    $crate::store::adapter::within(self.deadline(), "reload_generation", async {
                        Shared::reload_generation(self.reader()).await
                    })
                    .await
                }

                async fn get_event(&self, id: Id) -> Result<Option<Event>, StoreError> {
                    $crate::store::adapter::within(self.deadline(), "get_event", async {
                        Shared::get_event(self.reader(), id).await
                    })
                    .await
                }

                async fn events_between(
                    &self,
                    instance: &str,
                    after_id: Id,
                    up_to: Id,
                    limit: u32,
                ) -> Result<Vec<Event>, StoreError> {
                    $crate::store::adapter::within(self.deadline(), "events_between", async {
                        Shared::events_between(self.reader(), instance, after_id, up_to, limit)
                            .await
                    })
                    .await
                }

                async fn last_event_id(&self) -> Result<Id, StoreError> {
                    $crate::store::adapter::within(self.deadline(), "last_event_id", async {
                        Shared::last_event_id(self.reader()).await
                    })
                    .await
                }

                async fn matched_through(&self, instance: &str) -> Result<Option<Id>, StoreError> {
                    $crate::store::adapter::within(self.deadline(), "matched_through", async {
                        Shared::matched_through(self.reader(), instance).await
                    })
                    .await
                }

                async fn set_matched_through(
                    &self,
                    instance: &str,
                    event_id: Id,
                ) -> Result<(), StoreError> {
                    let instance = instance.to_owned();
                    $crate::store::adapter::on_write_path(self, move |store: $store| async move {
                        $crate::store::adapter::within(
                            store.deadline(),
                            "set_matched_through",
                            async {
                                Shared::set_matched_through(store.writer(), &instance, event_id)
                                    .await
                            },
                        )
                        .await
                    })
                    .await
                }

                async fn orphaned_watermarks(
                    &self,
                    me: &str,
                    live_since: ::chrono::DateTime<::chrono::Utc>,
                ) -> Result<Vec<::attune_actors::domain::Watermark>, StoreError> {
                    $crate::store::adapter::within(self.deadline(), "orphaned_watermarks", async {
                        Shared::orphaned_watermarks(self.reader(), me, live_since).await
                    })
                    .await
                }

                async fn forget_watermark(&self, instance: &str) -> Result<bool, StoreError> {
                    let deadline = $crate::store::adapter::commit_deadline(self.deadline());
                    $crate::store::adapter::within(deadline, "forget_watermark", async {
                        let mut tx = self.begin_write().await?;
                        Shared::lock_watermark(&mut *tx, instance).await?;
                        let forgot = Shared::forget_watermark(&mut *tx, instance).await?;
                        if forgot {
                            let lease = ::attune_actors::domain::adoption_lease(instance);
                            Shared::drop_lease(&mut *tx, &lease).await?;
                        }
                        tx.commit().await.map_err($crate::store::store_error)?;
                        Ok(forgot)
                    })
                    .await
                }

                async fn recent_events(
                    &self,
                    trigger_ref: Option<&str>,
                    limit: u32,
                ) -> Result<Vec<Event>, StoreError> {
                    $crate::store::adapter::within(self.deadline(), "recent_events", async {
                        Shared::recent_events(self.reader(), trigger_ref, limit).await
                    })
                    .await
                }

                async fn recent_enforcements(
                    &self,
                    rule_ref: Option<&str>,
                    limit: u32,
                ) -> Result<Vec<Enforcement>, StoreError> {
                    $crate::store::adapter::within(self.deadline(), "recent_enforcements", async {
                        Shared::recent_enforcements(self.reader(), rule_ref, limit).await
                    })
                    .await
                }

                async fn pending_outbox(
                    &self,
                    after: Id,
                    limit: u32,
                ) -> Result<Vec<OutboxMessage>, StoreError> {
                    $crate::store::adapter::within(self.deadline(), "pending_outbox", async {
                        Shared::pending_outbox(self.reader(), after, limit).await
                    })
                    .await
                }

                async fn mark_published(&self, ids: &[Id]) -> Result<(), StoreError> {
                    if ids.is_empty() {
                        return Ok(());
                    }
                    let ids = ids.to_vec();
                    $crate::store::adapter::on_write_path(self, move |store: $store| async move {
                        $crate::store::adapter::within(
                            $crate::store::adapter::commit_deadline(store.deadline()),
                            "mark_published",
                            store.write_published(&ids),
                        )
                        .await
                    })
                    .await
                }

                async fn outbox_backlog(&self) -> Result<u64, StoreError> {
                    $crate::store::adapter::within(self.deadline(), "outbox_backlog", async {
                        Shared::outbox_backlog(self.reader()).await
                    })
                    .await
                }

                async fn record_outbox_refusals(
                    &self,
                    refusals: &[attune_actors::ports::OutboxRefusal],
                ) -> Result<(), StoreError> {
                    if refusals.is_empty() {
                        return Ok(());
                    }
                    let deadline = $crate::store::adapter::commit_deadline(self.deadline());
                    $crate::store::adapter::within(deadline, "record_outbox_refusals", async {
                        // One commit for the lot: a batch nobody routes would otherwise
                        // cost a commit per row and stall the publisher behind it.
                        let mut tx = self.begin_write().await?;
                        let now = $crate::store::now();
                        for refusal in refusals {
                            Shared::record_outbox_refusal(&mut *tx, refusal.id, &refusal.error)
                                .await?;
                            if refusal.park {
                                Shared::park_outbox(&mut *tx, refusal.id, now).await?;
                                Shared::stop_waiting(&mut *tx, refusal.id).await?;
                            }
                        }
                        tx.commit().await.map_err($crate::store::store_error)
                    })
                    .await
                }

                async fn parked_outbox(
                    &self,
                    limit: u32,
                ) -> Result<Vec<ParkedMessage>, StoreError> {
                    $crate::store::adapter::within(self.deadline(), "parked_outbox", async {
                        Shared::parked_outbox(self.reader(), limit).await
                    })
                    .await
                }

                async fn parked_count(&self) -> Result<u64, StoreError> {
                    $crate::store::adapter::within(self.deadline(), "parked_count", async {
                        Shared::parked_count(self.reader()).await
                    })
                    .await
                }

                async fn oldest_unpublished(
                    &self,
                ) -> Result<Option<::chrono::DateTime<::chrono::Utc>>, StoreError> {
                    $crate::store::adapter::within(self.deadline(), "oldest_unpublished", async {
                        Shared::oldest_unpublished(self.reader()).await
                    })
                    .await
                }

                async fn prune(
                    &self,
                    cutoffs: ::attune_actors::domain::PruneCutoffs,
                    limit: u32,
                ) -> Result<::attune_actors::domain::PruneCount, StoreError> {
                    let mut count = ::attune_actors::domain::PruneCount::default();
                    if let Some(before) = cutoffs.outbox_before {
                        count.outbox = $crate::store::adapter::within(
                            self.deadline(),
                            "prune outbox",
                            async { Shared::prune_outbox(self.writer(), before, limit).await },
                        )
                        .await?;
                    }
                    if let Some(before) = cutoffs.keys_before {
                        count.idempotency_keys =
                            $crate::store::adapter::within(self.deadline(), "prune keys", async {
                                Shared::prune_keys(self.writer(), before, limit).await
                            })
                            .await?;
                    }
                    if let Some(before) = cutoffs.events_before {
                        let (enforcements, events) = $crate::store::adapter::within(
                            $crate::store::adapter::commit_deadline(self.deadline()),
                            "prune events",
                            async {
                                let mut tx = self.begin_write().await?;
                                let enforcements = Shared::prune_of_events(
                                    &mut *tx,
                                    Table::Enforcement,
                                    "event",
                                    before,
                                    limit,
                                )
                                .await?;
                                let events = Shared::prune_of_events(
                                    &mut *tx,
                                    Table::Event,
                                    "id",
                                    before,
                                    limit,
                                )
                                .await?;
                                tx.commit().await.map_err($crate::store::store_error)?;
                                Ok((enforcements, events))
                            },
                        )
                        .await?;
                        count.enforcements = enforcements;
                        count.events = events;
                    }
                    Ok(count)
                }

                async fn count_prunable(
                    &self,
                    cutoffs: ::attune_actors::domain::PruneCutoffs,
                ) -> Result<::attune_actors::domain::PruneCount, StoreError> {
                    // A cut-off of "never" counts nothing: the beginning of time is before
                    // every row.
                    let never = ::chrono::DateTime::<::chrono::Utc>::UNIX_EPOCH;
                    let (outbox, events, enforcements) =
                        $crate::store::adapter::within(self.deadline(), "count_prunable", async {
                            Shared::count_prunable(
                                self.reader(),
                                cutoffs.outbox_before.unwrap_or(never),
                                cutoffs.events_before.unwrap_or(never),
                            )
                            .await
                        })
                        .await?;
                    Ok(::attune_actors::domain::PruneCount {
                        outbox,
                        events,
                        enforcements,
                        idempotency_keys: 0,
                    })
                }

                fn pool_usage(&self) -> Option<(u32, u32)> {
                    let pool = self.writer();
                    let idle = u32::try_from(pool.num_idle()).unwrap_or(u32::MAX);
                    Some((pool.size(), idle))
                }

                async fn retry_parked(&self, ids: Option<&[Id]>) -> Result<u64, StoreError> {
                    $crate::store::adapter::within(self.deadline(), "retry_parked", async {
                        let mut tx = self.begin_write().await?;
                        let mut unparked = Vec::new();
                        match ids {
                            None => unparked = Shared::unpark(&mut *tx, None).await?,
                            Some(ids) => {
                                for id in ids {
                                    unparked.extend(Shared::unpark(&mut *tx, Some(*id)).await?);
                                }
                            }
                        }
                        for id in &unparked {
                            Shared::wait_again(&mut *tx, *id).await?;
                        }
                        tx.commit().await.map_err($crate::store::store_error)?;
                        Ok(unparked.len() as u64)
                    })
                    .await
                }

                async fn sensor_state(
                    &self,
                    sensor_ref: &str,
                ) -> Result<Option<Value>, StoreError> {
                    $crate::store::adapter::within(self.deadline(), "sensor_state", async {
                        Shared::sensor_state(self.reader(), sensor_ref).await
                    })
                    .await
                }

                async fn save_sensor_state(
                    &self,
                    sensor_ref: &str,
                    state: &Value,
                ) -> Result<(), StoreError> {
                    $crate::store::adapter::within(self.deadline(), "save_sensor_state", async {
                        Shared::save_sensor_state(self.writer(), sensor_ref, state).await
                    })
                    .await
                }

                async fn upsert_pack(
                    &self,
                    pack: &PackDefinition,
                ) -> Result<PackUpsertSummary, StoreError> {
                    $crate::store::adapter::within(
                        $crate::store::adapter::commit_deadline(self.deadline()),
                        "upsert_pack",
                        async {
                            let mut tx = $crate::store::pack_tx::SqlPackTx(
                                self.begin_pack(&pack.r#ref).await?,
                            );
                            let summary = $crate::store::pack::upsert(&mut tx, pack).await?;
                            tx.0.commit().await.map_err($crate::store::store_error)?;
                            Ok(summary)
                        },
                    )
                    .await
                }
            }
        };
    };
}

pub(crate) use impl_store;
