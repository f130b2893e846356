//! Operator commands between instances, written once for both backends: a command for a
//! sensor another instance holds waits in `sensor_command` until its holder takes it, and
//! `POST /reload` bumps `cluster_reload.generation`, which every instance watches.

use attune_actors::domain::{SENSOR_LEASE_PREFIX, SensorAction, SensorCommand};
use attune_actors::ports::StoreError;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{Encode, Executor, IntoArguments, Type};

use super::dialect::{Backend, Stamp, Table};
use super::queries::{Bind, Queries};
use super::rows::StoredRow;

fn command(row: &impl StoredRow) -> Result<(i64, SensorCommand), sqlx::Error> {
    let action = row.text("action")?;
    let action = SensorAction::parse(&action)
        .ok_or_else(|| sqlx::Error::Decode(format!("unknown sensor action '{action}'").into()))?;
    let command = SensorCommand {
        sensor_ref: row.text("sensor_ref")?,
        action,
        sent_by: row.text("sent_by")?,
        created: row.time("created")?,
    };
    Ok((row.int("id")?, command))
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
    pub(crate) async fn send_sensor_command<'c, E>(
        db: E,
        command: &SensorCommand,
    ) -> Result<(), StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let sql = format!(
            "INSERT INTO {} (sensor_ref, action, sent_by, created) VALUES ($1, $2, $3, $4)",
            DB::DIALECT.table(Table::SensorCommand)
        );
        let statement = sqlx::query(&sql)
            .bind(command.sensor_ref.as_str())
            .bind(command.action.as_str())
            .bind(command.sent_by.as_str())
            .bind(Stamp(command.created));
        Self::run(db, statement).await
    }

    /// One statement: the commands of the sensors whose unexpired lease `holder` holds
    /// leave the queue as they are read, so two instances never both take one.
    pub(crate) async fn take_sensor_commands<'c, E>(
        db: E,
        holder: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<SensorCommand>, StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let sql = format!(
            "DELETE FROM {commands} WHERE ($1 || sensor_ref) IN \
                 (SELECT name FROM {leases} WHERE holder = $2 AND expires > $3) \
             RETURNING id, sensor_ref, action, sent_by, created",
            commands = DB::DIALECT.table(Table::SensorCommand),
            leases = DB::DIALECT.table(Table::Lease),
        );
        let statement = sqlx::query(&sql)
            .bind(SENSOR_LEASE_PREFIX)
            .bind(holder)
            .bind(Stamp(now));
        let mut taken = Self::all(db, statement, command).await?;
        taken.sort_by_key(|(id, _)| *id);
        Ok(taken.into_iter().map(|(_, command)| command).collect())
    }

    /// Drops the commands queued before `before`; returns how many.
    pub(crate) async fn drop_stale_commands<'c, E>(
        db: E,
        before: DateTime<Utc>,
    ) -> Result<u64, StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let sql = format!(
            "DELETE FROM {} WHERE created < $1",
            DB::DIALECT.table(Table::SensorCommand)
        );
        Self::changed(db, sqlx::query(&sql).bind(Stamp(before))).await
    }

    pub(crate) async fn request_reload<'c, E>(db: E) -> Result<i64, StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let sql = format!(
            "UPDATE {} SET generation = generation + 1 WHERE id = 1 RETURNING generation AS n",
            DB::DIALECT.table(Table::ClusterReload)
        );
        Self::int(db, sqlx::query(&sql), "n").await
    }

    pub(crate) async fn reload_generation<'c, E>(db: E) -> Result<i64, StoreError>
    where
        E: Executor<'c, Database = DB>,
    {
        let sql = format!(
            "SELECT generation AS n FROM {} WHERE id = 1",
            DB::DIALECT.table(Table::ClusterReload)
        );
        Self::int(db, sqlx::query(&sql), "n").await
    }
}
