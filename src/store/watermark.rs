//! The statements of the matcher's watermarks, one per instance, written once for both
//! backends.
//!
//! Every event row names the instance that stored it (`event.stored_by`), and that
//! instance's watermark says how far its own matcher got: every event it stored with an
//! id up to `matched_through` has its enforcements. An instance's ids only grow (its
//! generator commits one batch after another), so one number per instance is enough.
//! Each query over an instance's events reads the range above its watermark through the
//! index on `(stored_by, id)`, however long ago the instance stored.

use attune_actors::domain::{Event, Id, Watermark};
use attune_actors::ports::StoreError;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{Encode, Executor, IntoArguments, Type};

use super::dialect::{Backend, Stamp, Table};
use super::queries::{Bind, Queries};
use super::rows::{self, EVENT_COLUMNS, StoredRow};

fn watermark(row: &impl StoredRow) -> Result<Watermark, sqlx::Error> {
    Ok(Watermark {
        instance: row.text("instance")?,
        matched_through: row.int("matched_through")?,
    })
}

impl<DB> Queries<DB>
where
    DB: Backend,
    DB::Row: StoredRow,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB>,
    str: Type<DB>,
    i64: Bind<DB>,
    Value: Bind<DB>,
    Stamp: Bind<DB>,
{
    /// Events `instance` stored with an id in `(after_id, up_to]`, lowest id first.
    pub(crate) async fn events_between<'c, E>(
        db: E,
        instance: &str,
        after_id: Id,
        up_to: Id,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM {} \
             WHERE id > $1 AND id <= $2 AND stored_by = $3 ORDER BY id LIMIT $4",
            DB::DIALECT.table(Table::Event)
        );
        let statement = sqlx::query(&sql)
            .bind(after_id)
            .bind(up_to)
            .bind(instance)
            .bind(i64::from(limit));
        Self::all(db, statement, rows::event).await
    }

    /// `instance`'s watermark, if it has one.
    pub(crate) async fn matched_through<'c, E>(
        db: E,
        instance: &str,
    ) -> Result<Option<Id>, StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let sql = format!(
            "SELECT matched_through FROM {} WHERE instance = $1",
            DB::DIALECT.table(Table::MatcherWatermark)
        );
        let statement = sqlx::query(&sql).bind(instance);
        Self::optional(db, statement, |row| row.int("matched_through")).await
    }

    /// Advances `instance`'s watermark (creating it); a lower `event_id` leaves it alone,
    /// so it never moves back.
    pub(crate) async fn set_matched_through<'c, E>(
        db: E,
        instance: &str,
        event_id: Id,
    ) -> Result<(), StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let sql = format!(
            "INSERT INTO {} AS w (instance, matched_through) VALUES ($1, $2) \
             ON CONFLICT (instance) DO UPDATE SET matched_through = excluded.matched_through \
             WHERE w.matched_through < excluded.matched_through",
            DB::DIALECT.table(Table::MatcherWatermark)
        );
        Self::run(db, sqlx::query(&sql).bind(instance).bind(event_id)).await
    }

    /// Gives `instance` a watermark just below `first_id` unless it has one: run in the
    /// transaction that stores its events, so no event is ever stored by an instance
    /// without a watermark that another instance could adopt (the first batch of a new
    /// instance, or of one whose row was forgotten while it was paused). The no-op update
    /// locks the row until the events commit, so a concurrent
    /// [`forget_watermark`](Self::forget_watermark) waits for them and sees them.
    pub(crate) async fn ensure_watermark<'c, E>(
        db: E,
        instance: &str,
        first_id: Id,
    ) -> Result<(), StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let sql = format!(
            "INSERT INTO {} AS w (instance, matched_through) VALUES ($1, $2) \
             ON CONFLICT (instance) DO UPDATE SET matched_through = w.matched_through",
            DB::DIALECT.table(Table::MatcherWatermark)
        );
        let below = first_id.saturating_sub(1);
        Self::run(db, sqlx::query(&sql).bind(instance).bind(below)).await
    }

    /// The watermarks of instances other than `me` that are not live: no instance row, or
    /// none heartbeating since `live_since`.
    pub(crate) async fn orphaned_watermarks<'c, E>(
        db: E,
        me: &str,
        live_since: DateTime<Utc>,
    ) -> Result<Vec<Watermark>, StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let sql = format!(
            "SELECT w.instance, w.matched_through FROM {watermarks} w \
             WHERE w.instance <> $1 AND NOT EXISTS \
                 (SELECT 1 FROM {instances} i WHERE i.id = w.instance AND i.heartbeat >= $2) \
             ORDER BY w.instance",
            watermarks = DB::DIALECT.table(Table::MatcherWatermark),
            instances = DB::DIALECT.table(Table::Instance),
        );
        let statement = sqlx::query(&sql).bind(me).bind(Stamp(live_since));
        Self::all(db, statement, watermark).await
    }

    /// Locks `instance`'s watermark row (PostgreSQL; SQLite's write transaction holds
    /// the database), waiting for a transaction storing its events to commit.
    pub(crate) async fn lock_watermark<'c, E>(db: E, instance: &str) -> Result<(), StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let sql = format!(
            "SELECT matched_through AS n FROM {} WHERE instance = $1{}",
            DB::DIALECT.table(Table::MatcherWatermark),
            DB::DIALECT.lock_read_rows()
        );
        Self::optional(db, sqlx::query(&sql).bind(instance), |row| row.int("n"))
            .await
            .map(drop)
    }

    /// Removes `instance`'s watermark if every event it stored is at or below it; returns
    /// whether it did. Run after [`lock_watermark`](Self::lock_watermark), as a statement
    /// of its own, so it sees every event committed before the lock was granted. An
    /// instance that comes back later gets a new watermark with its next batch.
    pub(crate) async fn forget_watermark<'c, E>(db: E, instance: &str) -> Result<bool, StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let sql = format!(
            "DELETE FROM {watermarks} WHERE instance = $1 AND NOT EXISTS \
                 (SELECT 1 FROM {events} e WHERE e.stored_by = $1 \
                  AND e.id > {watermarks}.matched_through)",
            watermarks = DB::DIALECT.table(Table::MatcherWatermark),
            events = DB::DIALECT.table(Table::Event),
        );
        Ok(Self::changed(db, sqlx::query(&sql).bind(instance)).await? > 0)
    }

    /// Deletes the lease named `name` (a finished adoption's: nobody needs its
    /// generations, and instances with random ids would leave one behind each).
    pub(crate) async fn drop_lease<'c, E>(db: E, name: &str) -> Result<(), StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let sql = format!(
            "DELETE FROM {} WHERE name = $1",
            DB::DIALECT.table(Table::Lease)
        );
        Self::run(db, sqlx::query(&sql).bind(name)).await
    }
}
