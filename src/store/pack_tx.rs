//! The row reads and writes of [`pack::upsert`](super::pack::upsert), written once for
//! both backends: the [`PackTx`] of an open transaction of any [`Backend`].
//!
//! What each backend does before it (PostgreSQL takes an advisory lock on the pack ref,
//! SQLite begins with `BEGIN IMMEDIATE`) is its own; see `Adapter::begin_pack`.

use async_trait::async_trait;
use attune_actors::domain::{Id, Rule, Sensor, Trigger};
use attune_actors::ports::StoreError;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{Encode, Executor, IntoArguments, Transaction, Type};

use super::dialect::{Backend, Stamp, Table};
use super::pack::{PackRow, PackTx};
use super::queries::{Bind, Queries, Statement};
use super::rows::{self, PACK_COLUMNS, StoredRow};

/// A transaction seen by the shared pack writer. Dropping it uncommitted rolls it back.
pub(crate) struct SqlPackTx<DB: Backend>(pub Transaction<'static, DB>);

impl<DB: Backend> SqlPackTx<DB> {
    fn table(table: Table) -> String {
        DB::DIALECT.table(table)
    }
}

/// The sensor columns an insert and an update both write, in this order: `pack`,
/// `pack_ref`, `label`, `description`, `entrypoint`, `runtime`, `runtime_ref`, `trigger`,
/// `trigger_ref`, `enabled`, `poll_interval`, `param_schema`, `config`, `updated`,
/// `pack_path`, `mode`, `pass_env`, `code_digest`, `dedup`, `placement`.
fn bind_sensor<'a, DB>(statement: Statement<'a, DB>, s: &'a Sensor) -> Statement<'a, DB>
where
    DB: Backend,
    Option<i64>: Bind<DB>,
    i64: Bind<DB>,
    String: Bind<DB>,
    Option<String>: Bind<DB>,
    bool: Bind<DB>,
    Value: Bind<DB>,
    Option<Value>: Bind<DB>,
    Stamp: Bind<DB>,
{
    statement
        .bind(s.pack)
        .bind(&s.pack_ref)
        .bind(&s.label)
        .bind(&s.description)
        .bind(&s.entrypoint)
        .bind(s.runtime)
        .bind(&s.runtime_ref)
        .bind(s.trigger)
        .bind(&s.trigger_ref)
        .bind(s.enabled)
        .bind(s.poll_interval)
        .bind(&s.param_schema)
        .bind(&s.config)
        .bind(Stamp(s.updated))
        .bind(&s.pack_path)
        .bind(&s.mode)
        .bind(serde_json::json!(s.pass_env))
        .bind(&s.code_digest)
        .bind(as_json(&s.dedup))
        .bind(as_json(&Some(&s.placement)))
}

#[async_trait]
impl<DB> PackTx for SqlPackTx<DB>
where
    DB: Backend + sqlx::database::HasStatementCache,
    DB::Row: StoredRow,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB>,
    str: Type<DB>,
    i64: Bind<DB>,
    Option<i64>: Bind<DB>,
    String: Bind<DB>,
    Option<String>: Bind<DB>,
    bool: Bind<DB>,
    Value: Bind<DB>,
    Option<Value>: Bind<DB>,
    Stamp: Bind<DB>,
{
    async fn pack_by_ref(&mut self, pack_ref: &str) -> Result<Option<PackRow>, StoreError> {
        let sql = format!(
            "SELECT {PACK_COLUMNS} FROM {} WHERE ref = $1{}",
            Self::table(Table::Pack),
            DB::DIALECT.lock_read_rows()
        );
        Queries::<DB>::optional(&mut *self.0, sqlx::query(&sql).bind(pack_ref), rows::pack).await
    }

    async fn insert_pack(&mut self, pack: &PackRow) -> Result<Id, StoreError> {
        let sql = format!(
            "INSERT INTO {} (ref, label, description, version, created, updated) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            Self::table(Table::Pack)
        );
        let statement = sqlx::query(&sql)
            .bind(&pack.r#ref)
            .bind(&pack.label)
            .bind(&pack.description)
            .bind(&pack.version)
            .bind(Stamp(pack.created))
            .bind(Stamp(pack.updated));
        Queries::<DB>::int(&mut *self.0, statement, "id").await
    }

    async fn update_pack(&mut self, pack: &PackRow) -> Result<(), StoreError> {
        let sql = format!(
            "UPDATE {} SET label = $2, description = $3, version = $4, updated = $5 \
             WHERE id = $1",
            Self::table(Table::Pack)
        );
        let statement = sqlx::query(&sql)
            .bind(pack.id)
            .bind(&pack.label)
            .bind(&pack.description)
            .bind(&pack.version)
            .bind(Stamp(pack.updated));
        Queries::<DB>::run(&mut *self.0, statement).await
    }

    async fn ensure_runtime(
        &mut self,
        runtime_ref: &str,
        now: DateTime<Utc>,
    ) -> Result<Id, StoreError> {
        // The no-op update makes RETURNING yield the id whether the row is new or not.
        let sql = format!(
            "INSERT INTO {} (ref, label, created, updated) VALUES ($1, $1, $2, $2) \
             ON CONFLICT (ref) DO UPDATE SET ref = excluded.ref RETURNING id",
            Self::table(Table::Runtime)
        );
        let statement = sqlx::query(&sql).bind(runtime_ref).bind(Stamp(now));
        Queries::<DB>::int(&mut *self.0, statement, "id").await
    }

    async fn action_id(&mut self, action_ref: &str) -> Result<Option<Id>, StoreError> {
        let sql = format!(
            "SELECT id FROM {} WHERE ref = $1",
            Self::table(Table::Action)
        );
        Queries::<DB>::optional(&mut *self.0, sqlx::query(&sql).bind(action_ref), |row| {
            row.int("id")
        })
        .await
    }

    async fn trigger_by_ref(&mut self, trigger_ref: &str) -> Result<Option<Trigger>, StoreError> {
        Queries::<DB>::trigger_by_ref(&mut *self.0, trigger_ref).await
    }

    async fn insert_trigger(&mut self, t: &Trigger) -> Result<Id, StoreError> {
        let sql = format!(
            "INSERT INTO {} (ref, pack, pack_ref, label, description, enabled, param_schema, \
                 payload_schema, created, updated, validate_payloads, dedup) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id",
            Self::table(Table::Trigger)
        );
        let statement = sqlx::query(&sql)
            .bind(&t.r#ref)
            .bind(t.pack)
            .bind(&t.pack_ref)
            .bind(&t.label)
            .bind(&t.description)
            .bind(t.enabled)
            .bind(&t.param_schema)
            .bind(&t.payload_schema)
            .bind(Stamp(t.created))
            .bind(Stamp(t.updated))
            .bind(t.validate_payloads)
            .bind(as_json(&t.dedup));
        Queries::<DB>::int(&mut *self.0, statement, "id").await
    }

    async fn update_trigger(&mut self, t: &Trigger) -> Result<(), StoreError> {
        let sql = format!(
            "UPDATE {} SET pack = $2, pack_ref = $3, label = $4, description = $5, \
                 enabled = $6, param_schema = $7, payload_schema = $8, updated = $9, \
                 validate_payloads = $10, dedup = $11 \
             WHERE id = $1",
            Self::table(Table::Trigger)
        );
        let statement = sqlx::query(&sql)
            .bind(t.id)
            .bind(t.pack)
            .bind(&t.pack_ref)
            .bind(&t.label)
            .bind(&t.description)
            .bind(t.enabled)
            .bind(&t.param_schema)
            .bind(&t.payload_schema)
            .bind(Stamp(t.updated))
            .bind(t.validate_payloads)
            .bind(as_json(&t.dedup));
        Queries::<DB>::run(&mut *self.0, statement).await
    }

    async fn sensors_by_refs(&mut self, refs: &[&str]) -> Result<Vec<Sensor>, StoreError> {
        Queries::<DB>::sensors_by_refs(&mut *self.0, refs).await
    }

    async fn insert_sensors(&mut self, sensors: &[Sensor]) -> Result<(), StoreError> {
        if sensors.is_empty() {
            return Ok(());
        }
        const COLUMNS: usize = 22;
        let rows: Vec<String> = (0..sensors.len())
            .map(|row| {
                let params: Vec<String> = (1..=COLUMNS)
                    .map(|column| format!("${}", row * COLUMNS + column))
                    .collect();
                format!("({})", params.join(", "))
            })
            .collect();
        let sql = format!(
            r#"INSERT INTO {} (ref, created, pack, pack_ref, label, description, entrypoint,
                   runtime, runtime_ref, "trigger", trigger_ref, enabled, poll_interval,
                   param_schema, config, updated, pack_path, mode, pass_env, code_digest,
                   dedup, placement)
               VALUES {}"#,
            Self::table(Table::Sensor),
            rows.join(", ")
        );
        // Not kept prepared: the last chunk of each pack has its own length.
        let mut statement = sqlx::query(&sql).persistent(false);
        for s in sensors {
            statement = bind_sensor(statement.bind(&s.r#ref).bind(Stamp(s.created)), s);
        }
        Queries::<DB>::run(&mut *self.0, statement).await
    }

    async fn update_sensor(&mut self, s: &Sensor) -> Result<(), StoreError> {
        let sql = format!(
            r#"UPDATE {} SET pack = $2, pack_ref = $3, label = $4, description = $5,
                   entrypoint = $6, runtime = $7, runtime_ref = $8, "trigger" = $9,
                   trigger_ref = $10, enabled = $11, poll_interval = $12, param_schema = $13,
                   config = $14, updated = $15, pack_path = $16, mode = $17, pass_env = $18,
                   code_digest = $19, dedup = $20, placement = $21
               WHERE id = $1"#,
            Self::table(Table::Sensor)
        );
        let statement = bind_sensor(sqlx::query(&sql).bind(s.id), s);
        Queries::<DB>::run(&mut *self.0, statement).await
    }

    async fn rules_by_refs(&mut self, refs: &[&str]) -> Result<Vec<Rule>, StoreError> {
        Queries::<DB>::rules_by_refs(&mut *self.0, refs).await
    }

    async fn insert_rule(&mut self, r: &Rule) -> Result<Id, StoreError> {
        let sql = format!(
            r#"INSERT INTO {} (ref, pack, pack_ref, label, description, "action", action_ref,
                   "trigger", trigger_ref, conditions, enabled, created, updated, action_params,
                   throttle)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
               RETURNING id"#,
            Self::table(Table::Rule)
        );
        let statement = sqlx::query(&sql)
            .bind(&r.r#ref)
            .bind(r.pack)
            .bind(&r.pack_ref)
            .bind(&r.label)
            .bind(&r.description)
            .bind(r.action)
            .bind(&r.action_ref)
            .bind(r.trigger)
            .bind(&r.trigger_ref)
            .bind(&r.conditions)
            .bind(r.enabled)
            .bind(Stamp(r.created))
            .bind(Stamp(r.updated))
            .bind(&r.action_params)
            .bind(as_json(&r.throttle));
        Queries::<DB>::int(&mut *self.0, statement, "id").await
    }

    async fn update_rule(&mut self, r: &Rule) -> Result<(), StoreError> {
        let sql = format!(
            r#"UPDATE {} SET pack = $2, pack_ref = $3, label = $4, description = $5,
                   "action" = $6, action_ref = $7, "trigger" = $8, trigger_ref = $9,
                   conditions = $10, enabled = $11, updated = $12, action_params = $13,
                   throttle = $14
               WHERE id = $1"#,
            Self::table(Table::Rule)
        );
        let statement = sqlx::query(&sql)
            .bind(r.id)
            .bind(r.pack)
            .bind(&r.pack_ref)
            .bind(&r.label)
            .bind(&r.description)
            .bind(r.action)
            .bind(&r.action_ref)
            .bind(r.trigger)
            .bind(&r.trigger_ref)
            .bind(&r.conditions)
            .bind(r.enabled)
            .bind(Stamp(r.updated))
            .bind(&r.action_params)
            .bind(as_json(&r.throttle));
        Queries::<DB>::run(&mut *self.0, statement).await
    }

    async fn enabled_pack_sensors(&mut self, pack: Id) -> Result<Vec<(Id, String)>, StoreError> {
        Queries::<DB>::enabled_of_pack(&mut *self.0, Table::Sensor, pack).await
    }

    async fn enabled_pack_rules(&mut self, pack: Id) -> Result<Vec<(Id, String)>, StoreError> {
        Queries::<DB>::enabled_of_pack(&mut *self.0, Table::Rule, pack).await
    }

    async fn disable_sensor(&mut self, id: Id, now: DateTime<Utc>) -> Result<(), StoreError> {
        Queries::<DB>::disable(&mut *self.0, Table::Sensor, id, now).await
    }

    async fn disable_rule(&mut self, id: Id, now: DateTime<Utc>) -> Result<(), StoreError> {
        Queries::<DB>::disable(&mut *self.0, Table::Rule, id, now).await
    }
}

/// A domain value for a JSON column (`dedup`, `throttle`).
fn as_json<T: serde::Serialize>(value: &Option<T>) -> Option<Value> {
    value.as_ref().and_then(|v| serde_json::to_value(v).ok())
}
