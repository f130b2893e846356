//! The throttle statements and the two transactions that use them, written once for
//! every [`Adapter`]: writing a batch of enforcements (each throttled one decided by
//! [`Pass`] against its group's window, read with a row lock) and closing ended windows.
//! PostgreSQL skips windows another instance is closing; SQLite holds the write lock.

use std::marker::PhantomData;

use attune_actors::domain::{Enforcement, NewEnforcement, ThrottleWindow, Watermark};
use attune_actors::ports::{ClosedWindows, StoreError};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{Database, Encode, Executor, IntoArguments, Type};

use super::adapter::Adapter;
use super::dialect::{Backend, Stamp, Table};
use super::queries::{Bind, Queries};
use super::rows::StoredRow;
use super::throttle::{self, Pass, WindowRow, WindowWrite, window_row};

const WINDOW_COLUMNS: &str =
    "rule_ref, group_key, opened, closes, matched, first_event, last_event, pending";

impl<DB> Queries<DB>
where
    DB: Backend,
    DB::Row: StoredRow,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB>,
    str: Type<DB>,
    i64: Bind<DB>,
    Value: Bind<DB>,
    Option<Value>: Bind<DB>,
    Stamp: Bind<DB>,
{
    /// A group's window, locked for the transaction where the backend locks rows.
    pub(crate) async fn throttle_window<'c, E>(
        db: E,
        rule_ref: &str,
        group: &str,
    ) -> Result<Option<(ThrottleWindow, Option<Value>)>, StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let sql = format!(
            "SELECT {WINDOW_COLUMNS} FROM {} WHERE rule_ref = $1 AND group_key = $2{}",
            DB::DIALECT.table(Table::RuleThrottle),
            DB::DIALECT.lock_read_rows()
        );
        let found =
            Self::optional(db, sqlx::query(&sql).bind(rule_ref).bind(group), window_row).await?;
        Ok(found.map(|(_, _, window, pending)| (window, pending)))
    }

    /// Writes a window as [`Pass`] decided; false when a window to insert exists already
    /// (another writer opened it meanwhile).
    pub(crate) async fn write_window<'c, E>(db: E, write: &WindowWrite) -> Result<bool, StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let table = DB::DIALECT.table(Table::RuleThrottle);
        let sql = if write.update {
            format!(
                "UPDATE {table} SET opened = $3, closes = $4, matched = $5, first_event = $6, \
                 last_event = $7, pending = $8 WHERE rule_ref = $1 AND group_key = $2"
            )
        } else {
            format!(
                "INSERT INTO {table} ({WINDOW_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (rule_ref, group_key) DO NOTHING"
            )
        };
        let statement = sqlx::query(&sql)
            .bind(write.rule_ref.as_str())
            .bind(write.group.as_str())
            .bind(Stamp(write.window.opened))
            .bind(Stamp(write.window.closes))
            .bind(i64::try_from(write.window.matched).unwrap_or(i64::MAX))
            .bind(write.window.first_event)
            .bind(write.window.last_event)
            .bind(write.pending.clone());
        Ok(Self::changed(db, statement).await? > 0)
    }

    /// Up to `limit` windows that ended by `now`, earliest first, locked (and skipped
    /// when another instance holds them) where the backend locks rows.
    pub(crate) async fn ended_windows<'c, E>(
        db: E,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<WindowRow>, StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let lock = DB::DIALECT.lock_read_rows();
        let skip = if lock.is_empty() { "" } else { " SKIP LOCKED" };
        let sql = format!(
            "SELECT {WINDOW_COLUMNS} FROM {} WHERE closes <= $1 ORDER BY closes LIMIT $2{lock}{skip}",
            DB::DIALECT.table(Table::RuleThrottle),
        );
        let statement = sqlx::query(&sql).bind(Stamp(now)).bind(i64::from(limit));
        Self::all(db, statement, window_row).await
    }

    pub(crate) async fn delete_window<'c, E>(
        db: E,
        rule_ref: &str,
        group: &str,
    ) -> Result<(), StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let sql = format!(
            "DELETE FROM {} WHERE rule_ref = $1 AND group_key = $2",
            DB::DIALECT.table(Table::RuleThrottle)
        );
        Self::run(db, sqlx::query(&sql).bind(rule_ref).bind(group)).await
    }

    /// Every window, soonest to close first (`limit` at most).
    pub(crate) async fn all_windows<'c, E>(db: E, limit: u32) -> Result<Vec<WindowRow>, StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let sql = format!(
            "SELECT {WINDOW_COLUMNS} FROM {} ORDER BY closes, rule_ref, group_key LIMIT $1",
            DB::DIALECT.table(Table::RuleThrottle)
        );
        Self::all(db, sqlx::query(&sql).bind(i64::from(limit)), window_row).await
    }

    /// When the next window ends.
    pub(crate) async fn next_close<'c, E>(db: E) -> Result<Option<DateTime<Utc>>, StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let sql = format!(
            "SELECT closes FROM {} ORDER BY closes LIMIT 1",
            DB::DIALECT.table(Table::RuleThrottle)
        );
        Self::optional(db, sqlx::query(&sql), |row| row.time("closes")).await
    }
}

/// The two transactions of adapter `A` that throttles take part in.
pub(crate) struct ThrottleTx<A>(PhantomData<A>);

impl<A> ThrottleTx<A>
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
{
    /// `Store::create_enforcements` for any adapter; with `matched`, also
    /// `set_matched_through` in the same transaction (`create_enforcements_through`).
    pub(crate) async fn create_enforcements(
        adapter: &A,
        enforcements: Vec<NewEnforcement>,
        matched: Option<Watermark>,
    ) -> Result<Vec<Option<Enforcement>>, StoreError> {
        if enforcements.is_empty() {
            if let Some(matched) = matched {
                Queries::<A::Db>::set_matched_through(
                    adapter.writer(),
                    &matched.instance,
                    matched.matched_through,
                )
                .await?;
            }
            return Ok(Vec::new());
        }
        let created = super::now();
        let mut tx = adapter.begin_write().await?;
        let mut pass = Pass::new(created);
        for enforcement in enforcements {
            if let Some((rule_ref, group)) = pass.to_read(&enforcement) {
                let stored = Queries::<A::Db>::throttle_window(&mut *tx, &rule_ref, &group).await?;
                pass.read((rule_ref, group), stored);
            }
            pass.add(enforcement)?;
        }
        let (insert, slots, windows) = pass.finish();
        let stored = if insert.is_empty() {
            Vec::new()
        } else {
            adapter
                .insert_enforcements(&mut tx, insert, created)
                .await?
        };
        for window in &windows {
            if !Queries::<A::Db>::write_window(&mut *tx, window).await? {
                return Err(throttle::raced(window));
            }
        }
        if let Some(matched) = matched {
            Queries::<A::Db>::set_matched_through(
                &mut *tx,
                &matched.instance,
                matched.matched_through,
            )
            .await?;
        }
        tx.commit().await.map_err(super::store_error)?;
        // Each stored enforcement has one slot: moved there, not copied.
        let mut stored: Vec<Option<Enforcement>> = stored.into_iter().map(Some).collect();
        Ok(slots
            .into_iter()
            .map(|slot| slot.and_then(|index| stored.get_mut(index)?.take()))
            .collect())
    }

    /// `Store::close_throttle_windows` for any adapter.
    pub(crate) async fn close_windows(
        adapter: &A,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<ClosedWindows, StoreError> {
        let mut tx = adapter.begin_write().await?;
        let ended = Queries::<A::Db>::ended_windows(&mut *tx, now, limit).await?;
        let mut released = Vec::new();
        for row in &ended {
            if let Some(held) = throttle::release_ended(row)? {
                released.push(held);
            }
            Queries::<A::Db>::delete_window(&mut *tx, &row.0, &row.1).await?;
        }
        let enforcements = if released.is_empty() {
            Vec::new()
        } else {
            adapter
                .insert_enforcements(&mut tx, released, super::now())
                .await?
        };
        let next_close = Queries::<A::Db>::next_close(&mut *tx).await?;
        tx.commit().await.map_err(super::store_error)?;
        Ok(ClosedWindows {
            enforcements,
            next_close,
        })
    }
}
