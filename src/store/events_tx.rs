//! The transaction of `Store::create_events`, written once for every [`Adapter`]: the
//! fence of leased sensors' events, the idempotency and dedup keys (see `idempotency.rs`),
//! the events with their outbox rows, and the repeats' first events.

use std::collections::{BTreeMap, HashMap};
use std::marker::PhantomData;

use attune_actors::domain::{EventWrite, LeaseClaim, NewEvent};
use attune_actors::ports::StoreError;
use serde_json::Value;
use sqlx::{Database, Encode, Executor, IntoArguments, Type};

use super::adapter::Adapter;
use super::dialect::Stamp;
use super::idempotency::{self, Fate, Planner};
use super::queries::{Bind, Queries};
use super::rows::StoredRow;

pub(crate) struct EventsTx<A>(PhantomData<A>);

impl<A> EventsTx<A>
where
    A: Adapter,
    <A::Db as Database>::Row: StoredRow,
    for<'c> &'c mut <A::Db as Database>::Connection: Executor<'c, Database = A::Db>,
    for<'q> <A::Db as Database>::Arguments<'q>: IntoArguments<'q, A::Db>,
    for<'q> &'q str: Encode<'q, A::Db>,
    str: Type<A::Db>,
    i64: Bind<A::Db>,
    Value: Bind<A::Db>,
    Option<Value>: Bind<A::Db>,
    Stamp: Bind<A::Db>,
    Option<Stamp>: Bind<A::Db>,
{
    /// `Store::create_events` for any adapter.
    pub(crate) async fn create_events(
        adapter: &A,
        events: Vec<NewEvent>,
    ) -> Result<Vec<EventWrite>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let created = super::now();
        let mut tx = adapter.begin_write().await?;
        // Each lease once, in name order (two batches lock lease rows in the same order).
        let claims: BTreeMap<&str, &LeaseClaim> = events
            .iter()
            .filter_map(|e| e.lease.as_ref())
            .map(|claim| (claim.name.as_str(), claim))
            .collect();
        for claim in claims.values() {
            Queries::<A::Db>::check_lease(&mut *tx, claim, created).await?;
        }
        let mut planner = Planner::default();
        for event in &events {
            let keys = planner.next(event);
            if keys.is_empty() {
                continue;
            }
            let mut stored = None;
            for key in &keys {
                let since = idempotency::since(created, key);
                stored = Queries::<A::Db>::key_event(&mut *tx, &key.scope, &key.key, since).await?;
                if stored.is_some() {
                    break;
                }
            }
            planner.found(&keys, stored);
        }
        let fates = planner.fates();
        let (fresh, keys) = idempotency::fresh(events, &fates);
        let stored = if fresh.is_empty() {
            Vec::new()
        } else {
            adapter.insert_events(&mut tx, fresh, created).await?
        };
        if let Some(first) = stored.first() {
            Queries::<A::Db>::ensure_watermark(&mut *tx, adapter.instance(), first.id).await?;
        }
        for (keys, event) in keys.iter().zip(&stored) {
            for key in keys {
                let expired = idempotency::since(created, key);
                let kept = Queries::<A::Db>::remember_key(
                    &mut *tx,
                    &key.scope,
                    &key.key,
                    event.id,
                    created,
                    expired,
                    idempotency::expires(created, key),
                )
                .await?;
                if !kept {
                    return Err(idempotency::raced(key));
                }
            }
        }
        let mut repeated = HashMap::new();
        for fate in &fates {
            if let Fate::RepeatOf(id) = fate
                && let Some(event) = Queries::<A::Db>::get_event(&mut *tx, *id).await?
            {
                repeated.insert(*id, event);
            }
        }
        let writes = idempotency::assemble(&fates, stored, &repeated)?;
        tx.commit().await.map_err(super::store_error)?;
        Ok(writes)
    }
}
