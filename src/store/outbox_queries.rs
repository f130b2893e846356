//! The outbox's statements, shared by both backends (see `queries`).
//!
//! An outbox row is written once and never updated. It waits to be published while
//! `outbox_pending` holds its id (with the broker's refusals so far), is parked while
//! `outbox_parked` does, and is published once neither does: marking a batch published
//! deletes narrow rows instead of rewriting wide ones.

use attune_actors::domain::{Id, OutboxMessage, ParkedMessage};
use attune_actors::ports::StoreError;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::database::HasStatementCache;
use sqlx::{Encode, Executor, IntoArguments, Type};

use super::dialect::{Backend, Stamp, Table};
use super::queries::{Bind, Queries};
use super::rows::{self, OUTBOX_COLUMNS, PARKED_COLUMNS, StoredRow};

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
    /// The first `LIMIT $n` rows of `table` with ids above `$1` (all when `after` is
    /// false), as `p`, joined to their outbox rows as `o`, for `rows::OUTBOX_COLUMNS` or
    /// `rows::PARKED_COLUMNS`. Limited before the join, and each outbox row looked up by
    /// its id: joined first, PostgreSQL merged the two primary keys and walked every
    /// published outbox row before the first waiting one (28 ms for 200,000); joined after
    /// the limit, it can hash the whole outbox for each read, the join sized for the limit
    /// rather than for the few rows waiting (seen with 3,000 outbox rows).
    ///
    /// On PostgreSQL the statements that look up the outbox run unprepared, planned for
    /// the tables as they are each time: a prepared one keeps the generic plan PostgreSQL
    /// settled on after five runs, chosen while the tables were small, a sequential scan
    /// of the whole outbox on every read as it grew (1,000 events/s: p99 27 to 49 ms
    /// against 14 to 17).
    fn first_with_outbox(columns: &str, table: Table, after: bool, n: u8) -> String {
        let after = if after { "WHERE id > $1" } else { "" };
        format!(
            "SELECT {columns} FROM (SELECT * FROM {} {after} ORDER BY id LIMIT ${n}) AS p \
             {} ORDER BY p.id",
            DB::DIALECT.table(table),
            DB::DIALECT.lookup_by_id(Table::Outbox, "p", "o")
        )
    }

    /// `created` of the outbox row with the lowest id in `table` (NULL when it is empty),
    /// by one primary key lookup each.
    fn first_created(tables: &[Table]) -> String {
        let firsts: Vec<String> = tables
            .iter()
            .map(|table| format!("(SELECT min(id) FROM {})", DB::DIALECT.table(*table)))
            .collect();
        format!(
            "SELECT min(created) AS created FROM {} WHERE id IN ({})",
            DB::DIALECT.table(Table::Outbox),
            firsts.join(", ")
        )
    }

    /// Unpublished, unparked outbox rows after `after`, in publish (id) order.
    pub(crate) async fn pending_outbox<'c, E>(
        db: E,
        after: Id,
        limit: u32,
    ) -> Result<Vec<OutboxMessage>, StoreError>
    where
        DB: HasStatementCache,
        E: Executor<'c, Database = DB>,
    {
        let sql = Self::first_with_outbox(OUTBOX_COLUMNS, Table::OutboxPending, true, 2);
        let query = sqlx::query(&sql)
            .bind(after)
            .bind(i64::from(limit))
            .persistent(DB::DIALECT.prepare_growing_reads());
        Self::all(db, query, rows::outbox).await
    }

    pub(crate) async fn outbox_backlog<'c, E>(db: E) -> Result<u64, StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        Self::count_rows(db, Table::OutboxPending).await
    }

    async fn count_rows<'c, E>(db: E, table: Table) -> Result<u64, StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let sql = Self::select("count(*) AS n", table, "");
        let rows = Self::int(db, sqlx::query(&sql), "n").await?;
        Ok(u64::try_from(rows).unwrap_or(0))
    }

    /// One more refusal of a waiting outbox row, with its error.
    pub(crate) async fn record_outbox_refusal<'c, E>(
        db: E,
        id: Id,
        error: &str,
    ) -> Result<(), StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let sql = format!(
            "UPDATE {} SET attempts = attempts + 1, last_error = $2 WHERE id = $1",
            DB::DIALECT.table(Table::OutboxPending)
        );
        Self::run(db, sqlx::query(&sql).bind(id).bind(error)).await
    }

    /// Copies a waiting row, its refusals and its error into the parked rows; the caller
    /// then removes it from the waiting ones ([`Self::stop_waiting`]) in the same
    /// transaction.
    pub(crate) async fn park_outbox<'c, E>(
        db: E,
        id: Id,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let sql = format!(
            "INSERT INTO {} (id, attempts, last_error, parked_at) \
             SELECT id, attempts, last_error, $2 FROM {} WHERE id = $1",
            DB::DIALECT.table(Table::OutboxParked),
            DB::DIALECT.table(Table::OutboxPending)
        );
        Self::run(db, sqlx::query(&sql).bind(id).bind(Stamp(at))).await
    }

    pub(crate) async fn stop_waiting<'c, E>(db: E, id: Id) -> Result<(), StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let sql = format!(
            "DELETE FROM {} WHERE id = $1",
            DB::DIALECT.table(Table::OutboxPending)
        );
        Self::run(db, sqlx::query(&sql).bind(id)).await
    }

    /// Takes one parked row (`Some(id)`) or all of them out of the parked ones; returns
    /// their ids, for [`Self::wait_again`] in the same transaction. Deleting first and
    /// returning what went makes the set exact while the publisher parks more.
    pub(crate) async fn unpark<'c, E>(db: E, id: Option<Id>) -> Result<Vec<Id>, StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let sql = format!(
            "DELETE FROM {} WHERE $1 = 1 OR id = $2 RETURNING id",
            DB::DIALECT.table(Table::OutboxParked)
        );
        let statement = sqlx::query(&sql)
            .bind(i64::from(id.is_none()))
            .bind(id.unwrap_or(0));
        Self::all(db, statement, |row| row.int("id")).await
    }

    /// Puts a row back into the publish order, its attempts reset.
    pub(crate) async fn wait_again<'c, E>(db: E, id: Id) -> Result<(), StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let sql = format!(
            "INSERT INTO {} (id) VALUES ($1)",
            DB::DIALECT.table(Table::OutboxPending)
        );
        Self::run(db, sqlx::query(&sql).bind(id)).await
    }

    pub(crate) async fn parked_outbox<'c, E>(
        db: E,
        limit: u32,
    ) -> Result<Vec<ParkedMessage>, StoreError>
    where
        DB: HasStatementCache,
        E: Executor<'c, Database = DB>,
    {
        let sql = Self::first_with_outbox(PARKED_COLUMNS, Table::OutboxParked, false, 1);
        let query = sqlx::query(&sql)
            .bind(i64::from(limit))
            .persistent(DB::DIALECT.prepare_growing_reads());
        Self::all(db, query, rows::parked).await
    }

    pub(crate) async fn parked_count<'c, E>(db: E) -> Result<u64, StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        Self::count_rows(db, Table::OutboxParked).await
    }

    /// When the first waiting row was written (parked rows not counted).
    pub(crate) async fn oldest_unpublished<'c, E>(
        db: E,
    ) -> Result<Option<DateTime<Utc>>, StoreError>
    where
        DB: HasStatementCache,
        E: Executor<'c, Database = DB>,
    {
        let sql = Self::first_created(&[Table::OutboxPending]);
        Self::optional(
            db,
            sqlx::query(&sql).persistent(DB::DIALECT.prepare_growing_reads()),
            |row| row.opt_time("created"),
        )
        .await
        .map(Option::flatten)
    }

    /// A subquery: when the first unpublished row, waiting or parked, was written (NULL
    /// when there is none).
    pub(crate) fn oldest_unpublished_or_parked() -> String {
        format!(
            "({})",
            Self::first_created(&[Table::OutboxPending, Table::OutboxParked])
        )
    }

    /// `WHERE` the outbox rows retention may remove: written before `$1`, published.
    pub(crate) fn published_before() -> String {
        let outbox = DB::DIALECT.table(Table::Outbox);
        let not_in = |table| {
            format!(
                "NOT EXISTS (SELECT 1 FROM {} p WHERE p.id = {outbox}.id)",
                DB::DIALECT.table(table)
            )
        };
        format!(
            "WHERE created < $1 AND {} AND {}",
            not_in(Table::OutboxPending),
            not_in(Table::OutboxParked)
        )
    }

    /// Deletes up to `limit` published outbox rows written before `before`, oldest first;
    /// returns how many. Ordered by `created`, so its index both finds and orders them:
    /// ordered by `id`, a table without statistics was walked by its primary key from the
    /// first row, filtering every row (652 ms at 120,000 rows with none old enough).
    pub(crate) async fn prune_outbox<'c, E>(
        db: E,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let outbox = DB::DIALECT.table(Table::Outbox);
        let sql = format!(
            "DELETE FROM {outbox} WHERE id IN (SELECT id FROM {outbox} {} \
             ORDER BY created LIMIT $2)",
            Self::published_before()
        );
        let statement = sqlx::query(&sql).bind(Stamp(before)).bind(i64::from(limit));
        Self::changed(db, statement).await
    }
}
