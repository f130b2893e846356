//! The statements both backends run the same way, written once over sqlx's `Database`:
//! every read of the [`Store`](attune_actors::ports::Store) port and its single-statement
//! writes. Only the table names come from the backend's [`Dialect`](super::dialect::Dialect).
//!
//! Each statement takes any executor of the backend (a pool for the port's reads, an open
//! transaction for the pack writer), so the same text serves both.

use std::marker::PhantomData;

use attune_actors::domain::{Enforcement, Event, Id, Rule, Sensor, Trigger};
use attune_actors::ports::StoreError;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::query::Query;
use sqlx::{Database, Encode, Executor, IntoArguments, Type};

use super::dialect::{Backend, Stamp, Table};
use super::rows::{
    self, ENFORCEMENT_COLUMNS, EVENT_COLUMNS, RULE_COLUMNS, SENSOR_COLUMNS, StoredRow,
    TRIGGER_COLUMNS,
};
use super::{now, store_error};

/// A type the shared statements bind for `DB`.
pub(crate) trait Bind<DB: Database>: for<'q> Encode<'q, DB> + Type<DB> {}

impl<DB: Database, T: for<'q> Encode<'q, DB> + Type<DB>> Bind<DB> for T {}

/// A statement with its arguments bound.
pub(crate) type Statement<'q, DB> = Query<'q, DB, <DB as Database>::Arguments<'q>>;

/// Maps a decoded row onto a domain value.
pub(crate) type Mapper<DB, T> = fn(&<DB as Database>::Row) -> Result<T, sqlx::Error>;

/// The shared statements of backend `DB` (`Queries::<Postgres>::...`).
pub(crate) struct Queries<DB>(PhantomData<DB>);

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
    /// `SELECT ... FROM <table> <rest>` with the backend's name for the table.
    pub(super) fn select(columns: &str, table: Table, rest: &str) -> String {
        format!("SELECT {columns} FROM {} {rest}", DB::DIALECT.table(table))
    }

    /// Runs `statement` and maps the row it finds, if any.
    pub(crate) async fn optional<'c, E, T>(
        db: E,
        statement: Statement<'_, DB>,
        map: Mapper<DB, T>,
    ) -> Result<Option<T>, StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let found = statement.fetch_optional(db).await.map_err(store_error)?;
        found.as_ref().map(map).transpose().map_err(store_error)
    }

    /// Runs `statement` and maps every row, in order.
    pub(crate) async fn all<'c, E, T>(
        db: E,
        statement: Statement<'_, DB>,
        map: Mapper<DB, T>,
    ) -> Result<Vec<T>, StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let found = statement.fetch_all(db).await.map_err(store_error)?;
        found.iter().map(|r| map(r).map_err(store_error)).collect()
    }

    /// Runs `statement` for its effect.
    pub(crate) async fn run<'c, E>(db: E, statement: Statement<'_, DB>) -> Result<(), StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        statement.execute(db).await.map_err(store_error)?;
        Ok(())
    }

    /// Runs `statement` for its effect and returns how many rows it changed.
    pub(crate) async fn changed<'c, E>(
        db: E,
        statement: Statement<'_, DB>,
    ) -> Result<u64, StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let done = statement.execute(db).await.map_err(store_error)?;
        Ok(DB::rows_affected(&done))
    }

    /// Runs `statement`, which yields one row, and reads its integer `column`.
    pub(crate) async fn int<'c, E>(
        db: E,
        statement: Statement<'_, DB>,
        column: &str,
    ) -> Result<i64, StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let row = statement.fetch_one(db).await.map_err(store_error)?;
        row.int(column).map_err(store_error)
    }

    pub(crate) async fn ping<'c, E>(db: E) -> Result<(), StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        Self::run(db, sqlx::query("SELECT 1")).await
    }

    pub(crate) async fn enabled_sensors<'c, E>(db: E) -> Result<Vec<Sensor>, StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let sql = Self::select(
            SENSOR_COLUMNS,
            Table::Sensor,
            "WHERE enabled ORDER BY created, id",
        );
        Self::all(db, sqlx::query(&sql), rows::sensor).await
    }

    pub(crate) async fn sensor_by_ref<'c, E>(
        db: E,
        sensor_ref: &str,
    ) -> Result<Option<Sensor>, StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let sql = Self::select(SENSOR_COLUMNS, Table::Sensor, "WHERE ref = $1");
        Self::optional(db, sqlx::query(&sql).bind(sensor_ref), rows::sensor).await
    }

    pub(crate) async fn trigger_by_ref<'c, E>(
        db: E,
        trigger_ref: &str,
    ) -> Result<Option<Trigger>, StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let sql = Self::select(TRIGGER_COLUMNS, Table::Trigger, "WHERE ref = $1");
        Self::optional(db, sqlx::query(&sql).bind(trigger_ref), rows::trigger).await
    }

    pub(crate) async fn enabled_rules_for_trigger<'c, E>(
        db: E,
        trigger_ref: &str,
    ) -> Result<Vec<Rule>, StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let sql = Self::select(
            RULE_COLUMNS,
            Table::Rule,
            "WHERE trigger_ref = $1 AND enabled ORDER BY created, id",
        );
        Self::all(db, sqlx::query(&sql).bind(trigger_ref), rows::rule).await
    }

    /// The sensors whose ref is one of `refs`, in no particular order, in one statement.
    pub(crate) async fn sensors_by_refs<'c, E>(
        db: E,
        refs: &[&str],
    ) -> Result<Vec<Sensor>, StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        Self::by_refs(db, Table::Sensor, SENSOR_COLUMNS, refs, rows::sensor).await
    }

    /// The rules whose ref is one of `refs`, in no particular order, in one statement.
    pub(crate) async fn rules_by_refs<'c, E>(db: E, refs: &[&str]) -> Result<Vec<Rule>, StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        Self::by_refs(db, Table::Rule, RULE_COLUMNS, refs, rows::rule).await
    }

    async fn by_refs<'c, E, T>(
        db: E,
        table: Table,
        columns: &str,
        refs: &[&str],
        map: Mapper<DB, T>,
    ) -> Result<Vec<T>, StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let sql = Self::select(
            columns,
            table,
            &format!("WHERE ref IN ({})", DB::DIALECT.json_texts()),
        );
        Self::all(db, sqlx::query(&sql).bind(Value::from(refs)), map).await
    }

    pub(crate) async fn rule_by_ref<'c, E>(
        db: E,
        rule_ref: &str,
    ) -> Result<Option<Rule>, StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let sql = Self::select(RULE_COLUMNS, Table::Rule, "WHERE ref = $1");
        Self::optional(db, sqlx::query(&sql).bind(rule_ref), rows::rule).await
    }

    pub(crate) async fn get_event<'c, E>(db: E, id: Id) -> Result<Option<Event>, StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let sql = Self::select(EVENT_COLUMNS, Table::Event, "WHERE id = $1");
        Self::optional(db, sqlx::query(&sql).bind(id), rows::event).await
    }

    pub(crate) async fn last_event_id<'c, E>(db: E) -> Result<Id, StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let sql = Self::select("COALESCE(max(id), 0) AS n", Table::Event, "");
        Self::int(db, sqlx::query(&sql), "n").await
    }

    /// Newest first; all triggers when `trigger_ref` is `None`.
    pub(crate) async fn recent_events<'c, E>(
        db: E,
        trigger_ref: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        // Two statements rather than `$1 IS NULL OR ...` so each gets its own index plan.
        let filtered = Self::select(
            EVENT_COLUMNS,
            Table::Event,
            "WHERE trigger_ref = $1 ORDER BY id DESC LIMIT $2",
        );
        let every = Self::select(EVENT_COLUMNS, Table::Event, "ORDER BY id DESC LIMIT $1");
        let statement = match trigger_ref {
            Some(trigger_ref) => sqlx::query(&filtered).bind(trigger_ref),
            None => sqlx::query(&every),
        };
        Self::all(db, statement.bind(i64::from(limit)), rows::event).await
    }

    /// Newest first; all rules when `rule_ref` is `None`.
    pub(crate) async fn recent_enforcements<'c, E>(
        db: E,
        rule_ref: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Enforcement>, StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let filtered = Self::select(
            ENFORCEMENT_COLUMNS,
            Table::Enforcement,
            "WHERE rule_ref = $1 ORDER BY id DESC LIMIT $2",
        );
        let every = Self::select(
            ENFORCEMENT_COLUMNS,
            Table::Enforcement,
            "ORDER BY id DESC LIMIT $1",
        );
        let statement = match rule_ref {
            Some(rule_ref) => sqlx::query(&filtered).bind(rule_ref),
            None => sqlx::query(&every),
        };
        Self::all(db, statement.bind(i64::from(limit)), rows::enforcement).await
    }

    /// The events retention may remove: stored before `$1`, already matched (at or below
    /// the watermark of the instance that stored it; an instance without one has matched
    /// all it stored), and older than the oldest outbox row not yet published (parked ones
    /// included), so no message outlives the rows it announces.
    fn prunable_events_where() -> String {
        format!(
            "WHERE created < $1 \
             AND NOT EXISTS (SELECT 1 FROM {watermarks} w \
                 WHERE w.instance = {events}.stored_by AND w.matched_through < {events}.id) \
             AND created < COALESCE({unpublished}, $1)",
            watermarks = DB::DIALECT.table(Table::MatcherWatermark),
            events = DB::DIALECT.table(Table::Event),
            unpublished = Self::oldest_unpublished_or_parked(),
        )
    }

    /// Deletes the rows of `table` whose `column` names one of the oldest `limit`
    /// prunable events (see `prunable_events_where`): their enforcements (`event`), then
    /// the events themselves (`id`; their idempotency keys go with them). Oldest stored
    /// first, by the index on `created`, which finds them as it orders them; `id` breaks
    /// ties, so both statements pick the same events.
    pub(crate) async fn prune_of_events<'c, E>(
        db: E,
        table: Table,
        column: &str,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let sql = format!(
            "DELETE FROM {} WHERE {column} IN (SELECT id FROM {} {} ORDER BY created, id LIMIT $2)",
            DB::DIALECT.table(table),
            DB::DIALECT.table(Table::Event),
            Self::prunable_events_where()
        );
        let statement = sqlx::query(&sql).bind(Stamp(before)).bind(i64::from(limit));
        Self::changed(db, statement).await
    }

    /// Deletes up to `limit` idempotency keys: request keys written before `before`,
    /// content keys past their own window.
    pub(crate) async fn prune_keys<'c, E>(
        db: E,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let keys = DB::DIALECT.table(Table::IdempotencyKey);
        let sql = format!(
            "DELETE FROM {keys} WHERE (scope, key_value) IN (SELECT scope, key_value FROM {keys} \
             WHERE (expires IS NULL AND created < $1) OR expires < $3 ORDER BY created LIMIT $2)"
        );
        let statement = sqlx::query(&sql)
            .bind(Stamp(before))
            .bind(i64::from(limit))
            .bind(Stamp(now()));
        Self::changed(db, statement).await
    }

    /// How many rows a prune with these cut-offs would remove, per table:
    /// `(outbox, events, enforcements)` (no batch limit).
    pub(crate) async fn count_prunable<'c, E>(
        db: E,
        outbox_before: DateTime<Utc>,
        events_before: DateTime<Utc>,
    ) -> Result<(u64, u64, u64), StoreError>
    where
        E: Executor<'c, Database = DB> + Copy,
    {
        let outbox = Self::select("count(*) AS n", Table::Outbox, &Self::published_before());
        let events_where = Self::prunable_events_where();
        let events = Self::select("count(*) AS n", Table::Event, &events_where);
        let enforcements = Self::select(
            "count(*) AS n",
            Table::Enforcement,
            &format!(
                "WHERE event IN (SELECT id FROM {} {events_where})",
                DB::DIALECT.table(Table::Event)
            ),
        );
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        let o = Self::int(db, sqlx::query(&outbox).bind(Stamp(outbox_before)), "n").await?;
        let e = Self::int(db, sqlx::query(&events).bind(Stamp(events_before)), "n").await?;
        let f = Self::int(
            db,
            sqlx::query(&enforcements).bind(Stamp(events_before)),
            "n",
        )
        .await?;
        Ok((count(o), count(e), count(f)))
    }

    pub(crate) async fn sensor_state<'c, E>(
        db: E,
        sensor_ref: &str,
    ) -> Result<Option<Value>, StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let sql = Self::select("state", Table::SensorState, "WHERE sensor_ref = $1");
        Self::optional(db, sqlx::query(&sql).bind(sensor_ref), |row| {
            row.json("state")
        })
        .await
    }

    pub(crate) async fn save_sensor_state<'c, E>(
        db: E,
        sensor_ref: &str,
        state: &Value,
    ) -> Result<(), StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let sql = format!(
            "INSERT INTO {} (sensor_ref, state, updated) VALUES ($1, $2, $3) \
             ON CONFLICT (sensor_ref) DO UPDATE \
             SET state = excluded.state, updated = excluded.updated",
            DB::DIALECT.table(Table::SensorState)
        );
        let statement = sqlx::query(&sql)
            .bind(sensor_ref)
            .bind(state)
            .bind(Stamp(now()));
        Self::run(db, statement).await
    }

    /// The event an idempotency key names, if it was stored after `since`.
    pub(crate) async fn key_event<'c, E>(
        db: E,
        scope: &str,
        key: &str,
        since: DateTime<Utc>,
    ) -> Result<Option<Id>, StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let sql = Self::select(
            "event",
            Table::IdempotencyKey,
            "WHERE scope = $1 AND key_value = $2 AND created > $3",
        );
        let statement = sqlx::query(&sql).bind(scope).bind(key).bind(Stamp(since));
        Self::optional(db, statement, |row| row.int("event")).await
    }

    /// Stores an idempotency key for `event`, replacing one older than `expired_before`.
    /// False when a current one exists: another writer stored the same key meanwhile.
    /// A content key (`expires` set) is pruned when it expires, a request key when it is
    /// older than `dedup.window`.
    pub(crate) async fn remember_key<'c, E>(
        db: E,
        scope: &str,
        key: &str,
        event: Id,
        now: DateTime<Utc>,
        expired_before: DateTime<Utc>,
        expires: Option<DateTime<Utc>>,
    ) -> Result<bool, StoreError>
    where
        E: Executor<'c, Database = DB>,
        Option<Stamp>: Bind<DB>,
    {
        let sql = format!(
            "INSERT INTO {} AS k (scope, key_value, event, created, expires) \
             VALUES ($1, $2, $3, $4, $6) \
             ON CONFLICT (scope, key_value) DO UPDATE \
             SET event = excluded.event, created = excluded.created, expires = excluded.expires \
             WHERE k.created <= $5",
            DB::DIALECT.table(Table::IdempotencyKey)
        );
        let statement = sqlx::query(&sql)
            .bind(scope)
            .bind(key)
            .bind(event)
            .bind(Stamp(now))
            .bind(Stamp(expired_before))
            .bind(expires.map(Stamp));
        Ok(Self::changed(db, statement).await? > 0)
    }

    /// `(id, ref)` of the enabled sensors or rules of a pack, for the pack writer.
    pub(crate) async fn enabled_of_pack<'c, E>(
        db: E,
        table: Table,
        pack: Id,
    ) -> Result<Vec<(Id, String)>, StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let sql = Self::select("id, ref", table, "WHERE pack = $1 AND enabled ORDER BY id");
        Self::all(db, sqlx::query(&sql).bind(pack), rows::id_and_ref).await
    }

    /// Disables a sensor or rule the pack writer no longer finds in its pack.
    pub(crate) async fn disable<'c, E>(
        db: E,
        table: Table,
        id: Id,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let sql = format!(
            "UPDATE {} SET enabled = FALSE, updated = $2 WHERE id = $1",
            DB::DIALECT.table(table)
        );
        Self::run(db, sqlx::query(&sql).bind(id).bind(Stamp(now))).await
    }
}
