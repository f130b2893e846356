//! The statements of the `instance` and `lease` tables, written once for both backends.
//!
//! A lease is taken with one upsert that only succeeds when the lease is free, expired or
//! already ours: two instances racing for it both run the same statement, and the
//! database lets exactly one of them change the row.

use std::collections::BTreeMap;

use attune_actors::domain::{InstanceRecord, LeaseClaim, LeaseRecord};
use attune_actors::ports::StoreError;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{Encode, Executor, IntoArguments, Type};

use super::dialect::{Backend, Stamp, Table};
use super::queries::{Bind, Queries};
use super::rows::StoredRow;

const INSTANCE_COLUMNS: &str = "id, labels, host, pid, version, started, heartbeat";
const LEASE_COLUMNS: &str = "name, holder, generation, expires";

fn instance(row: &impl StoredRow) -> Result<InstanceRecord, sqlx::Error> {
    let labels: BTreeMap<String, String> =
        serde_json::from_value(row.json("labels")?).unwrap_or_default();
    Ok(InstanceRecord {
        id: row.text("id")?,
        labels,
        host: row.text("host")?,
        pid: u32::try_from(row.int("pid")?).unwrap_or(0),
        version: row.text("version")?,
        started: row.time("started")?,
        heartbeat: row.time("heartbeat")?,
    })
}

fn lease(row: &impl StoredRow) -> Result<LeaseRecord, sqlx::Error> {
    Ok(LeaseRecord {
        name: row.text("name")?,
        holder: row.text("holder")?,
        generation: row.int("generation")?,
        expires: row.time("expires")?,
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
    pub(crate) async fn register_instance<'c, E>(
        db: E,
        instance: &InstanceRecord,
    ) -> Result<(), StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let sql = format!(
            "INSERT INTO {} ({INSTANCE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (id) DO UPDATE SET labels = excluded.labels, host = excluded.host, \
             pid = excluded.pid, version = excluded.version, started = excluded.started, \
             heartbeat = excluded.heartbeat",
            DB::DIALECT.table(Table::Instance)
        );
        let statement = sqlx::query(&sql)
            .bind(instance.id.as_str())
            .bind(serde_json::json!(instance.labels))
            .bind(instance.host.as_str())
            .bind(i64::from(instance.pid))
            .bind(instance.version.as_str())
            .bind(Stamp(instance.started))
            .bind(Stamp(instance.heartbeat));
        Self::run(db, statement).await
    }

    pub(crate) async fn heartbeat_instance<'c, E>(
        db: E,
        id: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let sql = format!(
            "UPDATE {} SET heartbeat = $2 WHERE id = $1",
            DB::DIALECT.table(Table::Instance)
        );
        Self::run(db, sqlx::query(&sql).bind(id).bind(Stamp(at))).await
    }

    pub(crate) async fn remove_instance<'c, E>(db: E, id: &str) -> Result<(), StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let sql = format!(
            "DELETE FROM {} WHERE id = $1",
            DB::DIALECT.table(Table::Instance)
        );
        Self::run(db, sqlx::query(&sql).bind(id)).await
    }

    pub(crate) async fn instances<'c, E>(db: E) -> Result<Vec<InstanceRecord>, StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let sql = format!(
            "SELECT {INSTANCE_COLUMNS} FROM {} ORDER BY id",
            DB::DIALECT.table(Table::Instance)
        );
        Self::all(db, sqlx::query(&sql), instance).await
    }

    pub(crate) async fn acquire_lease<'c, E>(
        db: E,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        expires: DateTime<Utc>,
    ) -> Result<Option<i64>, StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let sql = format!(
            "INSERT INTO {} AS l ({LEASE_COLUMNS}) VALUES ($1, $2, 1, $3) \
             ON CONFLICT (name) DO UPDATE SET \
                 generation = CASE WHEN l.holder = excluded.holder THEN l.generation \
                                   ELSE l.generation + 1 END, \
                 holder = excluded.holder, expires = excluded.expires \
             WHERE l.holder = excluded.holder OR l.expires <= $4 \
             RETURNING generation",
            DB::DIALECT.table(Table::Lease)
        );
        let statement = sqlx::query(&sql)
            .bind(name)
            .bind(holder)
            .bind(Stamp(expires))
            .bind(Stamp(now));
        Self::optional(db, statement, |row| row.int("generation")).await
    }

    /// Whether another transaction holds lease `name`'s row locked (PostgreSQL: an
    /// instance storing a leased sensor's events, whose fence check locks it; SQLite has
    /// one writer). Taking the lease then waits for the next tick instead of for that
    /// transaction, which a paused instance keeps open until the server ends it.
    pub(crate) async fn lease_locked<'c, E>(db: E, name: &str) -> Result<bool, StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let lock = DB::DIALECT.lock_read_rows();
        if lock.is_empty() {
            return Ok(false);
        }
        let sql = format!(
            "WITH free AS (SELECT name FROM {table} WHERE name = $1{lock} SKIP LOCKED) \
             SELECT (SELECT count(*) FROM {table} WHERE name = $1) \
                  - (SELECT count(*) FROM free) AS n",
            table = DB::DIALECT.table(Table::Lease)
        );
        Ok(Self::int(db, sqlx::query(&sql).bind(name), "n").await? > 0)
    }

    pub(crate) async fn release_lease<'c, E>(
        db: E,
        name: &str,
        holder: &str,
    ) -> Result<(), StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        // Expired rather than deleted: the next holder continues the generations.
        let sql = format!(
            "UPDATE {} SET expires = $3 WHERE name = $1 AND holder = $2",
            DB::DIALECT.table(Table::Lease)
        );
        let statement = sqlx::query(&sql)
            .bind(name)
            .bind(holder)
            .bind(Stamp(DateTime::<Utc>::UNIX_EPOCH));
        Self::run(db, statement).await
    }

    pub(crate) async fn leases<'c, E>(db: E) -> Result<Vec<LeaseRecord>, StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let sql = format!(
            "SELECT {LEASE_COLUMNS} FROM {} ORDER BY name",
            DB::DIALECT.table(Table::Lease)
        );
        Self::all(db, sqlx::query(&sql), lease).await
    }

    /// Extends, in one statement, every unexpired lease of `holder` whose name starts with
    /// `prefix`, and returns those: a lease missing from the answer is lost.
    pub(crate) async fn renew_leases<'c, E>(
        db: E,
        holder: &str,
        prefix: &str,
        now: DateTime<Utc>,
        expires: DateTime<Utc>,
    ) -> Result<Vec<LeaseRecord>, StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let sql = format!(
            "UPDATE {} SET expires = $4 \
             WHERE holder = $1 AND substr(name, 1, length($2)) = $2 AND expires > $3 \
             RETURNING {LEASE_COLUMNS}",
            DB::DIALECT.table(Table::Lease)
        );
        let statement = sqlx::query(&sql)
            .bind(holder)
            .bind(prefix)
            .bind(Stamp(now))
            .bind(Stamp(expires));
        Self::all(db, statement, lease).await
    }

    /// Lets every lease of `holder` whose name starts with `prefix` go at once.
    pub(crate) async fn release_leases<'c, E>(
        db: E,
        holder: &str,
        prefix: &str,
    ) -> Result<(), StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let sql = format!(
            "UPDATE {} SET expires = $3 WHERE holder = $1 AND substr(name, 1, length($2)) = $2",
            DB::DIALECT.table(Table::Lease)
        );
        let statement = sqlx::query(&sql)
            .bind(holder)
            .bind(prefix)
            .bind(Stamp(DateTime::<Utc>::UNIX_EPOCH));
        Self::run(db, statement).await
    }

    /// The fence of [`Store::create_events`]: fails unless `claim` is still the current,
    /// unexpired generation of its lease. On PostgreSQL the lease row stays locked until
    /// the events' transaction ends, so no other instance takes the lease in between.
    ///
    /// [`Store::create_events`]: attune_actors::ports::Store::create_events
    pub(crate) async fn check_lease<'c, E>(
        db: E,
        claim: &LeaseClaim,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let sql = format!(
            "SELECT {LEASE_COLUMNS} FROM {} WHERE name = $1{}",
            DB::DIALECT.table(Table::Lease),
            DB::DIALECT.lock_read_rows()
        );
        let current =
            Self::optional(db, sqlx::query(&sql).bind(claim.name.as_str()), lease).await?;
        match current {
            Some(held) if held.generation == claim.generation && held.expires > now => Ok(()),
            _ => Err(StoreError::Fenced {
                lease: claim.name.clone(),
                generation: claim.generation,
            }),
        }
    }
}
