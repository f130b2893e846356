//! What a backend must provide, and the one [`Store`] implementation built on it.
//!
//! A backend supplies its pools, its batch writers (the statements that truly differ:
//! PostgreSQL's `UNNEST` with preallocated ids, SQLite's `json_each`) and how a pack
//! transaction begins; every other port method is a shared statement from `queries`.
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

use super::dialect::Backend;

#[async_trait]
pub(crate) trait Adapter: Send + Sync + 'static {
    type Db: Backend;

    /// Where reads go.
    fn reader(&self) -> &Pool<Self::Db>;
    /// Where single-statement writes go.
    fn writer(&self) -> &Pool<Self::Db>;

    /// Stores a non-empty batch of events with their outbox rows, as `Store::create_events`.
    async fn write_events(&self, events: Vec<NewEvent>) -> Result<Vec<Event>, StoreError>;

    /// Stores a non-empty batch of enforcements with their outbox rows, as
    /// `Store::create_enforcements`.
    async fn write_enforcements(
        &self,
        enforcements: Vec<NewEnforcement>,
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

/// `impl Store for $store` from the adapter's [`Adapter`] implementation and the shared
/// statements. Invoke once, in the adapter's module.
macro_rules! impl_store {
    ($store:ty) => {
        // A block of its own, so that its imports and `Shared` stay out of the adapter.
        const _: () = {
            use ::attune_actors::domain::{
                Enforcement, Event, Id, NewEnforcement, NewEvent, OutboxMessage, PackDefinition,
                PackUpsertSummary, Rule, Sensor, Trigger,
            };
            use ::attune_actors::ports::{Store, StoreError};
            use ::serde_json::Value;
            use $crate::store::adapter::Adapter;

            type Shared = $crate::store::queries::Queries<<$store as Adapter>::Db>;

            #[::async_trait::async_trait]
            impl Store for $store {
                async fn ping(&self) -> Result<(), StoreError> {
                    Shared::ping(self.reader()).await
                }

                async fn enabled_sensors(&self) -> Result<Vec<Sensor>, StoreError> {
                    Shared::enabled_sensors(self.reader()).await
                }

                async fn sensor_by_ref(
                    &self,
                    sensor_ref: &str,
                ) -> Result<Option<Sensor>, StoreError> {
                    Shared::sensor_by_ref(self.reader(), sensor_ref).await
                }

                async fn trigger_by_ref(
                    &self,
                    trigger_ref: &str,
                ) -> Result<Option<Trigger>, StoreError> {
                    Shared::trigger_by_ref(self.reader(), trigger_ref).await
                }

                async fn enabled_rules_for_trigger(
                    &self,
                    trigger_ref: &str,
                ) -> Result<Vec<Rule>, StoreError> {
                    Shared::enabled_rules_for_trigger(self.reader(), trigger_ref).await
                }

                async fn rule_by_ref(&self, rule_ref: &str) -> Result<Option<Rule>, StoreError> {
                    Shared::rule_by_ref(self.reader(), rule_ref).await
                }

                async fn create_events(
                    &self,
                    events: Vec<NewEvent>,
                ) -> Result<Vec<Event>, StoreError> {
                    if events.is_empty() {
                        return Ok(Vec::new());
                    }
                    self.write_events(events).await
                }

                async fn create_enforcements(
                    &self,
                    enforcements: Vec<NewEnforcement>,
                ) -> Result<Vec<Enforcement>, StoreError> {
                    if enforcements.is_empty() {
                        return Ok(Vec::new());
                    }
                    self.write_enforcements(enforcements).await
                }

                async fn get_event(&self, id: Id) -> Result<Option<Event>, StoreError> {
                    Shared::get_event(self.reader(), id).await
                }

                async fn events_between(
                    &self,
                    after_id: Id,
                    up_to: Id,
                    limit: u32,
                ) -> Result<Vec<Event>, StoreError> {
                    Shared::events_between(self.reader(), after_id, up_to, limit).await
                }

                async fn last_event_id(&self) -> Result<Id, StoreError> {
                    Shared::last_event_id(self.reader()).await
                }

                async fn matched_through(&self) -> Result<Id, StoreError> {
                    Shared::matched_through(self.reader()).await
                }

                async fn set_matched_through(&self, event_id: Id) -> Result<(), StoreError> {
                    Shared::set_matched_through(self.writer(), event_id).await
                }

                async fn recent_events(
                    &self,
                    trigger_ref: Option<&str>,
                    limit: u32,
                ) -> Result<Vec<Event>, StoreError> {
                    Shared::recent_events(self.reader(), trigger_ref, limit).await
                }

                async fn recent_enforcements(
                    &self,
                    rule_ref: Option<&str>,
                    limit: u32,
                ) -> Result<Vec<Enforcement>, StoreError> {
                    Shared::recent_enforcements(self.reader(), rule_ref, limit).await
                }

                async fn pending_outbox(
                    &self,
                    limit: u32,
                ) -> Result<Vec<OutboxMessage>, StoreError> {
                    Shared::pending_outbox(self.reader(), limit).await
                }

                async fn mark_published(&self, ids: &[Id]) -> Result<(), StoreError> {
                    if ids.is_empty() {
                        return Ok(());
                    }
                    self.write_published(ids).await
                }

                async fn outbox_backlog(&self) -> Result<u64, StoreError> {
                    Shared::outbox_backlog(self.reader()).await
                }

                async fn sensor_state(
                    &self,
                    sensor_ref: &str,
                ) -> Result<Option<Value>, StoreError> {
                    Shared::sensor_state(self.reader(), sensor_ref).await
                }

                async fn save_sensor_state(
                    &self,
                    sensor_ref: &str,
                    state: &Value,
                ) -> Result<(), StoreError> {
                    Shared::save_sensor_state(self.writer(), sensor_ref, state).await
                }

                async fn upsert_pack(
                    &self,
                    pack: &PackDefinition,
                ) -> Result<PackUpsertSummary, StoreError> {
                    let mut tx =
                        $crate::store::pack_tx::SqlPackTx(self.begin_pack(&pack.r#ref).await?);
                    let summary = $crate::store::pack::upsert(&mut tx, pack).await?;
                    tx.0.commit().await.map_err($crate::store::store_error)?;
                    Ok(summary)
                }
            }
        };
    };
}

pub(crate) use impl_store;
