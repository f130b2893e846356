//! The [`Store`] port on SQLite, for single-node deployments and development.
//!
//! SQLite allows one writer at a time. Rather than let several pooled connections race
//! for the write lock (and fail with `SQLITE_BUSY` when a read transaction tries to
//! upgrade), every write goes through a pool of exactly one connection, so writes queue
//! in-process; reads use a separate pool and, thanks to WAL, never wait for the writer.
//! Batches are one transaction of prepared (cached) statements: SQLite has no network
//! round-trips, so per-row statements are cheap and keep the id mapping exact.
//!
//! JSON is stored as text and timestamps as fixed-width UTC text (see the migration), so
//! rows sort by time with plain text comparison.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use attune_actors::domain::{
    Enforcement, Event, Id, NewEnforcement, NewEvent, OutboxMessage, PackDefinition,
    PackUpsertSummary, Rule, Sensor, Trigger,
};
use attune_actors::messages::Envelope;
use attune_actors::ports::{Store, StoreError};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
};
use sqlx::{Row, Sqlite, Transaction};

use super::pack::{self, PackRow, PackTx};
use super::{ENFORCEMENT_CREATED, OutboxDraft, Redactor, dedup_enforcements, now, store_error};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

const TRIGGER_COLUMNS: &str = r#"id, ref, pack, pack_ref, label, description, enabled,
    param_schema, payload_schema, created, updated"#;
const SENSOR_COLUMNS: &str = r#"id, ref, pack, pack_ref, label, description, entrypoint, runtime,
    runtime_ref, "trigger", trigger_ref, enabled, poll_interval, param_schema, config, pack_path,
    mode, pass_env, created,
    updated"#;
const RULE_COLUMNS: &str = r#"id, ref, pack, pack_ref, label, description, "action", action_ref,
    "trigger", trigger_ref, conditions, enabled, created, updated"#;
const EVENT_COLUMNS: &str =
    r#"id, "trigger", trigger_ref, config, payload, source, source_ref, created"#;
const ENFORCEMENT_COLUMNS: &str = r#"id, rule, rule_ref, trigger_ref, event, status, payload,
    condition, conditions, created"#;

/// SQLite adapter. Cheap to clone (two connection pools).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl SqliteStore {
    /// Opens `url` (`sqlite:path/to/file.db`, `sqlite://path`, or `sqlite::memory:`),
    /// creating the file and its directory when missing, and runs the migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let redactor = Redactor::for_url(url);
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| {
                StoreError::Invalid(redactor.clean(format!("bad SQLite URL: {}", store_error(e))))
            })?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let in_memory = is_in_memory(url);
        if !in_memory {
            create_parent_dir(options.get_filename()).map_err(|e| {
                StoreError::Unavailable(redactor.clean(format!(
                    "cannot create the directory of the SQLite database: {e}"
                )))
            })?;
        }
        let unavailable = |e: sqlx::Error| {
            let message = match redactor.error(e) {
                StoreError::Unavailable(m) | StoreError::Invalid(m) | StoreError::Other(m) => m,
            };
            StoreError::Unavailable(format!("cannot open SQLite database: {message}"))
        };
        // An in-memory database lives as long as one of its connections, so that single
        // connection is kept forever and serves reads too.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(if in_memory { 1 } else { 0 })
            .idle_timeout(if in_memory {
                None
            } else {
                Some(Duration::from_secs(600))
            })
            .max_lifetime(if in_memory {
                None
            } else {
                Some(Duration::from_secs(1800))
            })
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await
            .map_err(unavailable)?;
        let reader = if in_memory {
            writer.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(4)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(options)
                .await
                .map_err(unavailable)?
        };
        MIGRATOR.run(&writer).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(inner) => store_error(inner),
            other => StoreError::Other(format!("migration failed: {other}")),
        })?;
        Ok(Self { writer, reader })
    }

    /// Closes both pools; waits for connections in use to be returned.
    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }

    /// Write transactions take the write lock up front (`BEGIN IMMEDIATE`): a deferred
    /// transaction that reads first and then writes can fail outright with `SQLITE_BUSY`
    /// when another process wrote in between, whereas waiting for the lock at `BEGIN`
    /// honours the busy timeout and then reads the latest data.
    async fn begin(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        self.writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(store_error)
    }

    /// Inserts outbox rows in one statement, in the order given (so their ids ascend in
    /// that order).
    async fn insert_outbox(
        tx: &mut Transaction<'static, Sqlite>,
        drafts: &[OutboxDraft],
        created: &str,
    ) -> Result<(), StoreError> {
        if drafts.is_empty() {
            return Ok(());
        }
        let rows: Vec<OutboxJson<'_>> = drafts
            .iter()
            .map(|d| OutboxJson {
                m: d.message_id,
                y: d.message_type,
                k: d.routing_key,
                b: &d.body,
            })
            .collect();
        sqlx::query(
            "INSERT INTO outbox (message_id, message_type, routing_key, body, created) \
             SELECT value ->> 'm', value ->> 'y', value ->> 'k', value ->> 'b', ?2 \
             FROM json_each(?1) ORDER BY key",
        )
        .bind(batch_json(&rows)?)
        .bind(created)
        .execute(&mut **tx)
        .await
        .map_err(store_error)?;
        Ok(())
    }
}

/// A batch travels to SQLite as one JSON array bound to a single parameter and is
/// unpacked with `json_each`: one statement per batch instead of one per row, whatever
/// the batch size, and the statement text (hence the prepared statement) never changes.
/// JSON documents inside a row are carried as strings so SQLite stores serde's exact text.
fn batch_json<T: serde::Serialize>(rows: &[T]) -> Result<String, StoreError> {
    serde_json::to_string(rows)
        .map_err(|e| StoreError::Invalid(format!("cannot encode batch: {e}")))
}

#[derive(serde::Serialize)]
struct OutboxJson<'a> {
    m: uuid::Uuid,
    y: &'a str,
    k: &'a str,
    b: &'a str,
}

#[derive(serde::Serialize)]
struct EventJson<'a> {
    t: Option<Id>,
    r: &'a str,
    c: String,
    p: String,
    s: Option<Id>,
    sr: Option<&'a str>,
}

#[derive(serde::Serialize)]
struct EnforcementJson<'a> {
    rule: Id,
    rr: &'a str,
    tr: &'a str,
    ev: Id,
    p: String,
    c: &'a str,
    cs: String,
}

/// Ids of `n` rows just inserted by one `INSERT ... SELECT` into an AUTOINCREMENT table,
/// in insertion order. SQLite numbers such rows consecutively (nothing else can write
/// while the statement runs) and reports the last one.
fn inserted_ids(
    outcome: &sqlx::sqlite::SqliteQueryResult,
    n: usize,
) -> Result<Vec<Id>, StoreError> {
    let inserted = usize::try_from(outcome.rows_affected()).unwrap_or(usize::MAX);
    if inserted != n {
        return Err(StoreError::Other(format!(
            "inserted {inserted} rows of a batch of {n}"
        )));
    }
    let last = outcome.last_insert_rowid();
    let first = last - i64::try_from(n).unwrap_or(i64::MAX) + 1;
    Ok((first..=last).collect())
}

fn is_in_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

fn create_parent_dir(file: &std::path::Path) -> std::io::Result<()> {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::create_dir_all(dir),
        _ => Ok(()),
    }
}

/// Fixed-width UTC text: lexical order is time order.
fn ts(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn decode_error(column: &str, error: impl std::fmt::Display) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: error.to_string().into(),
    }
}

fn get_ts(row: &SqliteRow, column: &str) -> Result<DateTime<Utc>, sqlx::Error> {
    let text: String = row.try_get(column)?;
    DateTime::parse_from_rfc3339(&text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| decode_error(column, e))
}

fn json(value: &Value) -> String {
    value.to_string()
}

fn opt_json(value: Option<&Value>) -> Option<String> {
    value.map(Value::to_string)
}

fn get_json(row: &SqliteRow, column: &str) -> Result<Value, sqlx::Error> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text).map_err(|e| decode_error(column, e))
}

fn get_opt_json(row: &SqliteRow, column: &str) -> Result<Option<Value>, sqlx::Error> {
    let text: Option<String> = row.try_get(column)?;
    text.map(|t| serde_json::from_str(&t).map_err(|e| decode_error(column, e)))
        .transpose()
}

fn trigger_from_row(row: &SqliteRow) -> Result<Trigger, sqlx::Error> {
    Ok(Trigger {
        id: row.try_get("id")?,
        r#ref: row.try_get("ref")?,
        pack: row.try_get("pack")?,
        pack_ref: row.try_get("pack_ref")?,
        label: row.try_get("label")?,
        description: row.try_get("description")?,
        enabled: row.try_get("enabled")?,
        param_schema: get_opt_json(row, "param_schema")?,
        payload_schema: get_opt_json(row, "payload_schema")?,
        created: get_ts(row, "created")?,
        updated: get_ts(row, "updated")?,
    })
}

fn sensor_from_row(row: &SqliteRow) -> Result<Sensor, sqlx::Error> {
    Ok(Sensor {
        id: row.try_get("id")?,
        r#ref: row.try_get("ref")?,
        pack: row.try_get("pack")?,
        pack_ref: row.try_get("pack_ref")?,
        label: row.try_get("label")?,
        description: row.try_get("description")?,
        entrypoint: row.try_get("entrypoint")?,
        runtime: row.try_get("runtime")?,
        runtime_ref: row.try_get("runtime_ref")?,
        trigger: row.try_get("trigger")?,
        trigger_ref: row.try_get("trigger_ref")?,
        enabled: row.try_get("enabled")?,
        poll_interval: row.try_get("poll_interval")?,
        param_schema: get_opt_json(row, "param_schema")?,
        config: get_json(row, "config")?,
        pack_path: row.try_get("pack_path")?,
        mode: row.try_get("mode")?,
        pass_env: serde_json::from_value(get_json(row, "pass_env")?).unwrap_or_default(),
        created: get_ts(row, "created")?,
        updated: get_ts(row, "updated")?,
    })
}

fn rule_from_row(row: &SqliteRow) -> Result<Rule, sqlx::Error> {
    Ok(Rule {
        id: row.try_get("id")?,
        r#ref: row.try_get("ref")?,
        pack: row.try_get("pack")?,
        pack_ref: row.try_get("pack_ref")?,
        label: row.try_get("label")?,
        description: row.try_get("description")?,
        action: row.try_get("action")?,
        action_ref: row.try_get("action_ref")?,
        trigger: row.try_get("trigger")?,
        trigger_ref: row.try_get("trigger_ref")?,
        conditions: get_json(row, "conditions")?,
        enabled: row.try_get("enabled")?,
        created: get_ts(row, "created")?,
        updated: get_ts(row, "updated")?,
    })
}

fn event_from_row(row: &SqliteRow) -> Result<Event, sqlx::Error> {
    Ok(Event {
        id: row.try_get("id")?,
        trigger: row.try_get("trigger")?,
        trigger_ref: row.try_get("trigger_ref")?,
        config: get_json(row, "config")?,
        payload: get_json(row, "payload")?,
        source: row.try_get("source")?,
        source_ref: row.try_get("source_ref")?,
        created: get_ts(row, "created")?,
    })
}

fn enforcement_from_row(row: &SqliteRow) -> Result<Enforcement, sqlx::Error> {
    Ok(Enforcement {
        id: row.try_get("id")?,
        rule: row.try_get("rule")?,
        rule_ref: row.try_get("rule_ref")?,
        trigger_ref: row.try_get("trigger_ref")?,
        event: row.try_get("event")?,
        status: row.try_get("status")?,
        payload: get_json(row, "payload")?,
        condition: row.try_get("condition")?,
        conditions: get_json(row, "conditions")?,
        created: get_ts(row, "created")?,
    })
}

fn pack_from_row(row: &SqliteRow) -> Result<PackRow, sqlx::Error> {
    Ok(PackRow {
        id: row.try_get("id")?,
        r#ref: row.try_get("ref")?,
        label: row.try_get("label")?,
        description: row.try_get("description")?,
        version: row.try_get("version")?,
        created: get_ts(row, "created")?,
        updated: get_ts(row, "updated")?,
    })
}

fn outbox_from_row(row: &SqliteRow) -> Result<OutboxMessage, sqlx::Error> {
    let message_id: String = row.try_get("message_id")?;
    Ok(OutboxMessage {
        id: row.try_get("id")?,
        message_id: uuid::Uuid::parse_str(&message_id)
            .map_err(|e| decode_error("message_id", e))?,
        message_type: row.try_get("message_type")?,
        routing_key: row.try_get("routing_key")?,
        body: row.try_get("body")?,
    })
}

fn rows<T>(
    rows: Vec<SqliteRow>,
    map: fn(&SqliteRow) -> Result<T, sqlx::Error>,
) -> Result<Vec<T>, StoreError> {
    rows.iter().map(|r| map(r).map_err(store_error)).collect()
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn enabled_sensors(&self) -> Result<Vec<Sensor>, StoreError> {
        let found = sqlx::query(&format!(
            "SELECT {SENSOR_COLUMNS} FROM sensor WHERE enabled ORDER BY created, id"
        ))
        .fetch_all(&self.reader)
        .await
        .map_err(store_error)?;
        rows(found, sensor_from_row)
    }

    async fn sensor_by_ref(&self, sensor_ref: &str) -> Result<Option<Sensor>, StoreError> {
        let found = sqlx::query(&format!(
            "SELECT {SENSOR_COLUMNS} FROM sensor WHERE ref = ?1"
        ))
        .bind(sensor_ref)
        .fetch_optional(&self.reader)
        .await
        .map_err(store_error)?;
        found
            .as_ref()
            .map(sensor_from_row)
            .transpose()
            .map_err(store_error)
    }

    async fn trigger_by_ref(&self, trigger_ref: &str) -> Result<Option<Trigger>, StoreError> {
        let found = sqlx::query(&format!(
            r#"SELECT {TRIGGER_COLUMNS} FROM "trigger" WHERE ref = ?1"#
        ))
        .bind(trigger_ref)
        .fetch_optional(&self.reader)
        .await
        .map_err(store_error)?;
        found
            .as_ref()
            .map(trigger_from_row)
            .transpose()
            .map_err(store_error)
    }

    async fn enabled_rules_for_trigger(&self, trigger_ref: &str) -> Result<Vec<Rule>, StoreError> {
        let found = sqlx::query(&format!(
            "SELECT {RULE_COLUMNS} FROM rule WHERE trigger_ref = ?1 AND enabled \
             ORDER BY created, id"
        ))
        .bind(trigger_ref)
        .fetch_all(&self.reader)
        .await
        .map_err(store_error)?;
        rows(found, rule_from_row)
    }

    async fn rule_by_ref(&self, rule_ref: &str) -> Result<Option<Rule>, StoreError> {
        let found = sqlx::query(&format!("SELECT {RULE_COLUMNS} FROM rule WHERE ref = ?1"))
            .bind(rule_ref)
            .fetch_optional(&self.reader)
            .await
            .map_err(store_error)?;
        found
            .as_ref()
            .map(rule_from_row)
            .transpose()
            .map_err(store_error)
    }

    async fn create_events(&self, events: Vec<NewEvent>) -> Result<Vec<Event>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let created = now();
        let created_text = ts(created);
        let rows: Vec<EventJson<'_>> = events
            .iter()
            .map(|e| EventJson {
                t: e.trigger,
                r: &e.trigger_ref,
                c: json(&e.config),
                p: json(&e.payload),
                s: e.source,
                sr: e.source_ref.as_deref(),
            })
            .collect();
        let batch = batch_json(&rows)?;
        drop(rows);

        let mut tx = self.begin().await?;
        let outcome = sqlx::query(
            r#"INSERT INTO event
                   ("trigger", trigger_ref, config, payload, source, source_ref, created)
               SELECT value ->> 't', value ->> 'r', value ->> 'c', value ->> 'p',
                      value ->> 's', value ->> 'sr', ?2
               FROM json_each(?1) ORDER BY key"#,
        )
        .bind(batch)
        .bind(&created_text)
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        let ids = inserted_ids(&outcome, events.len())?;
        let stored: Vec<Event> = events
            .into_iter()
            .zip(ids)
            .map(|(new, id)| Event {
                id,
                trigger: new.trigger,
                trigger_ref: new.trigger_ref,
                config: new.config,
                payload: new.payload,
                source: new.source,
                source_ref: new.source_ref,
                created,
            })
            .collect();
        let drafts: Vec<OutboxDraft> = stored
            .iter()
            .map(|e| OutboxDraft::of(&Envelope::event_created(e)))
            .collect();
        Self::insert_outbox(&mut tx, &drafts, &created_text).await?;
        tx.commit().await.map_err(store_error)?;
        Ok(stored)
    }

    async fn create_enforcements(
        &self,
        enforcements: Vec<NewEnforcement>,
    ) -> Result<Vec<Enforcement>, StoreError> {
        if enforcements.is_empty() {
            return Ok(Vec::new());
        }
        let deduped = dedup_enforcements(&enforcements);
        let created = now();
        let created_text = ts(created);
        let pairs: Vec<(Id, Id)> = deduped
            .unique
            .iter()
            .map(|i| (enforcements[*i].rule, enforcements[*i].event))
            .collect();

        let mut tx = self.begin().await?;
        // The write lock is held since BEGIN IMMEDIATE, so what exists now is exactly
        // what the insert below would conflict with.
        let existing = sqlx::query(&format!(
            "SELECT {ENFORCEMENT_COLUMNS} FROM enforcement \
             WHERE (rule, event) IN (SELECT value ->> 0, value ->> 1 FROM json_each(?1))"
        ))
        .bind(batch_json(&pairs)?)
        .fetch_all(&mut *tx)
        .await
        .map_err(store_error)?;
        let existing: HashMap<(Id, Id), Enforcement> = rows(existing, enforcement_from_row)?
            .into_iter()
            .map(|e| ((e.rule, e.event), e))
            .collect();

        let fresh: Vec<&NewEnforcement> = deduped
            .unique
            .iter()
            .map(|i| &enforcements[*i])
            .filter(|e| !existing.contains_key(&(e.rule, e.event)))
            .collect();
        let mut inserted: HashMap<(Id, Id), Enforcement> = HashMap::with_capacity(fresh.len());
        if !fresh.is_empty() {
            let rows: Vec<EnforcementJson<'_>> = fresh
                .iter()
                .map(|e| EnforcementJson {
                    rule: e.rule,
                    rr: &e.rule_ref,
                    tr: &e.trigger_ref,
                    ev: e.event,
                    p: json(&e.payload),
                    c: &e.condition,
                    cs: json(&e.conditions),
                })
                .collect();
            let outcome = sqlx::query(
                "INSERT INTO enforcement (rule, rule_ref, trigger_ref, event, status, payload, \
                     condition, conditions, created) \
                 SELECT value ->> 'rule', value ->> 'rr', value ->> 'tr', value ->> 'ev', ?2, \
                     value ->> 'p', value ->> 'c', value ->> 'cs', ?3 \
                 FROM json_each(?1) ORDER BY key",
            )
            .bind(batch_json(&rows)?)
            .bind(ENFORCEMENT_CREATED)
            .bind(&created_text)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
            let ids = inserted_ids(&outcome, fresh.len())?;
            let mut drafts = Vec::with_capacity(fresh.len());
            for (new, id) in fresh.into_iter().zip(ids) {
                let enforcement = Enforcement {
                    id,
                    rule: new.rule,
                    rule_ref: new.rule_ref.clone(),
                    trigger_ref: new.trigger_ref.clone(),
                    event: new.event,
                    status: ENFORCEMENT_CREATED.to_owned(),
                    payload: new.payload.clone(),
                    condition: new.condition.clone(),
                    conditions: new.conditions.clone(),
                    created,
                };
                drafts.push(OutboxDraft::of(&Envelope::enforcement_created(
                    &enforcement,
                )));
                inserted.insert((new.rule, new.event), enforcement);
            }
            Self::insert_outbox(&mut tx, &drafts, &created_text).await?;
        }
        tx.commit().await.map_err(store_error)?;

        let results: Vec<Enforcement> = pairs
            .iter()
            .map(|pair| {
                existing
                    .get(pair)
                    .or_else(|| inserted.get(pair))
                    .cloned()
                    .ok_or_else(|| {
                        StoreError::Other(format!(
                            "enforcement for rule {} and event {} neither inserted nor found",
                            pair.0, pair.1
                        ))
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(deduped.slot.iter().map(|s| results[*s].clone()).collect())
    }

    async fn events_between(
        &self,
        after_id: Id,
        up_to: Id,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM event WHERE id > ?1 AND id <= ?2 ORDER BY id LIMIT ?3"
        ))
        .bind(after_id)
        .bind(up_to)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(store_error)?;
        rows.iter()
            .map(event_from_row)
            .collect::<Result<_, _>>()
            .map_err(store_error)
    }

    async fn last_event_id(&self) -> Result<Id, StoreError> {
        sqlx::query_scalar("SELECT COALESCE(max(id), 0) FROM event")
            .fetch_one(&self.reader)
            .await
            .map_err(store_error)
    }

    async fn matched_through(&self) -> Result<Id, StoreError> {
        sqlx::query_scalar("SELECT matched_through FROM matcher_progress WHERE id = 1")
            .fetch_one(&self.reader)
            .await
            .map_err(store_error)
    }

    async fn set_matched_through(&self, event_id: Id) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE matcher_progress SET matched_through = max(matched_through, ?1) WHERE id = 1",
        )
        .bind(event_id)
        .execute(&self.writer)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn get_event(&self, id: Id) -> Result<Option<Event>, StoreError> {
        let found = sqlx::query(&format!("SELECT {EVENT_COLUMNS} FROM event WHERE id = ?1"))
            .bind(id)
            .fetch_optional(&self.reader)
            .await
            .map_err(store_error)?;
        found
            .as_ref()
            .map(event_from_row)
            .transpose()
            .map_err(store_error)
    }

    async fn recent_events(
        &self,
        trigger_ref: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        let filtered = format!(
            "SELECT {EVENT_COLUMNS} FROM event WHERE trigger_ref = ?1 ORDER BY id DESC LIMIT ?2"
        );
        let all = format!("SELECT {EVENT_COLUMNS} FROM event ORDER BY id DESC LIMIT ?1");
        let found = match trigger_ref {
            Some(trigger_ref) => sqlx::query(&filtered)
                .bind(trigger_ref)
                .bind(i64::from(limit)),
            None => sqlx::query(&all).bind(i64::from(limit)),
        }
        .fetch_all(&self.reader)
        .await
        .map_err(store_error)?;
        rows(found, event_from_row)
    }

    async fn recent_enforcements(
        &self,
        rule_ref: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Enforcement>, StoreError> {
        let filtered = format!(
            "SELECT {ENFORCEMENT_COLUMNS} FROM enforcement WHERE rule_ref = ?1 ORDER BY id DESC LIMIT ?2"
        );
        let all =
            format!("SELECT {ENFORCEMENT_COLUMNS} FROM enforcement ORDER BY id DESC LIMIT ?1");
        let found = match rule_ref {
            Some(rule_ref) => sqlx::query(&filtered).bind(rule_ref).bind(i64::from(limit)),
            None => sqlx::query(&all).bind(i64::from(limit)),
        }
        .fetch_all(&self.reader)
        .await
        .map_err(store_error)?;
        rows(found, enforcement_from_row)
    }

    async fn pending_outbox(&self, limit: u32) -> Result<Vec<OutboxMessage>, StoreError> {
        let found = sqlx::query(
            "SELECT id, message_id, message_type, routing_key, body FROM outbox \
             WHERE published_at IS NULL ORDER BY id LIMIT ?1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(store_error)?;
        rows(found, outbox_from_row)
    }

    async fn mark_published(&self, ids: &[Id]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        // One statement for any number of ids: the list travels as a JSON array.
        let list = serde_json::to_string(ids)
            .map_err(|e| StoreError::Other(format!("cannot encode outbox ids: {e}")))?;
        sqlx::query(
            "UPDATE outbox SET published_at = ?1 \
             WHERE id IN (SELECT value FROM json_each(?2)) AND published_at IS NULL",
        )
        .bind(ts(now()))
        .bind(list)
        .execute(&self.writer)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn outbox_backlog(&self) -> Result<u64, StoreError> {
        let pending: i64 =
            sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
                .fetch_one(&self.reader)
                .await
                .map_err(store_error)?;
        Ok(u64::try_from(pending).unwrap_or(0))
    }

    async fn sensor_state(&self, sensor_ref: &str) -> Result<Option<Value>, StoreError> {
        let text: Option<String> =
            sqlx::query_scalar("SELECT state FROM sensor_state WHERE sensor_ref = ?1")
                .bind(sensor_ref)
                .fetch_optional(&self.reader)
                .await
                .map_err(store_error)?;
        text.map(|text| {
            serde_json::from_str(&text).map_err(|e| {
                StoreError::Other(format!("state of sensor {sensor_ref} is not JSON: {e}"))
            })
        })
        .transpose()
    }

    async fn save_sensor_state(&self, sensor_ref: &str, state: &Value) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sensor_state (sensor_ref, state, updated) VALUES (?1, ?2, ?3) \
             ON CONFLICT (sensor_ref) DO UPDATE SET state = excluded.state, updated = excluded.updated",
        )
        .bind(sensor_ref)
        .bind(json(state))
        .bind(ts(now()))
        .execute(&self.writer)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn upsert_pack(&self, pack: &PackDefinition) -> Result<PackUpsertSummary, StoreError> {
        let mut tx = SqlitePackTx(self.begin().await?);
        let summary = pack::upsert(&mut tx, pack).await?;
        tx.0.commit().await.map_err(store_error)?;
        Ok(summary)
    }
}

/// A SQLite transaction seen by the shared pack writer. Dropping it uncommitted rolls it
/// back.
struct SqlitePackTx(Transaction<'static, Sqlite>);

impl SqlitePackTx {
    async fn optional<T>(
        &mut self,
        sql: &str,
        key: &str,
        map: fn(&SqliteRow) -> Result<T, sqlx::Error>,
    ) -> Result<Option<T>, StoreError> {
        let found = sqlx::query(sql)
            .bind(key)
            .fetch_optional(&mut *self.0)
            .await
            .map_err(store_error)?;
        found.as_ref().map(map).transpose().map_err(store_error)
    }

    async fn refs_of_pack(&mut self, sql: &str, pack: Id) -> Result<Vec<(Id, String)>, StoreError> {
        sqlx::query_as(sql)
            .bind(pack)
            .fetch_all(&mut *self.0)
            .await
            .map_err(store_error)
    }

    async fn disable(&mut self, sql: &str, id: Id, now: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query(sql)
            .bind(id)
            .bind(ts(now))
            .execute(&mut *self.0)
            .await
            .map_err(store_error)?;
        Ok(())
    }
}

#[async_trait]
impl PackTx for SqlitePackTx {
    async fn pack_by_ref(&mut self, pack_ref: &str) -> Result<Option<PackRow>, StoreError> {
        self.optional(
            "SELECT id, ref, label, description, version, created, updated \
             FROM pack WHERE ref = ?1",
            pack_ref,
            pack_from_row,
        )
        .await
    }

    async fn insert_pack(&mut self, pack: &PackRow) -> Result<Id, StoreError> {
        let outcome = sqlx::query(
            "INSERT INTO pack (ref, label, description, version, created, updated) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(&pack.r#ref)
        .bind(&pack.label)
        .bind(&pack.description)
        .bind(&pack.version)
        .bind(ts(pack.created))
        .bind(ts(pack.updated))
        .execute(&mut *self.0)
        .await
        .map_err(store_error)?;
        Ok(outcome.last_insert_rowid())
    }

    async fn update_pack(&mut self, pack: &PackRow) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE pack SET label = ?2, description = ?3, version = ?4, updated = ?5 \
             WHERE id = ?1",
        )
        .bind(pack.id)
        .bind(&pack.label)
        .bind(&pack.description)
        .bind(&pack.version)
        .bind(ts(pack.updated))
        .execute(&mut *self.0)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn ensure_runtime(
        &mut self,
        runtime_ref: &str,
        now: DateTime<Utc>,
    ) -> Result<Id, StoreError> {
        sqlx::query(
            "INSERT INTO runtime (ref, label, created, updated) VALUES (?1, ?1, ?2, ?2) \
             ON CONFLICT (ref) DO NOTHING",
        )
        .bind(runtime_ref)
        .bind(ts(now))
        .execute(&mut *self.0)
        .await
        .map_err(store_error)?;
        sqlx::query_scalar("SELECT id FROM runtime WHERE ref = ?1")
            .bind(runtime_ref)
            .fetch_one(&mut *self.0)
            .await
            .map_err(store_error)
    }

    async fn action_id(&mut self, action_ref: &str) -> Result<Option<Id>, StoreError> {
        sqlx::query_scalar(r#"SELECT id FROM "action" WHERE ref = ?1"#)
            .bind(action_ref)
            .fetch_optional(&mut *self.0)
            .await
            .map_err(store_error)
    }

    async fn trigger_by_ref(&mut self, trigger_ref: &str) -> Result<Option<Trigger>, StoreError> {
        self.optional(
            &format!(r#"SELECT {TRIGGER_COLUMNS} FROM "trigger" WHERE ref = ?1"#),
            trigger_ref,
            trigger_from_row,
        )
        .await
    }

    async fn insert_trigger(&mut self, t: &Trigger) -> Result<Id, StoreError> {
        let outcome = sqlx::query(
            r#"INSERT INTO "trigger" (ref, pack, pack_ref, label, description, enabled,
                   param_schema, payload_schema, created, updated)
               VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"#,
        )
        .bind(&t.r#ref)
        .bind(t.pack)
        .bind(&t.pack_ref)
        .bind(&t.label)
        .bind(&t.description)
        .bind(t.enabled)
        .bind(opt_json(t.param_schema.as_ref()))
        .bind(opt_json(t.payload_schema.as_ref()))
        .bind(ts(t.created))
        .bind(ts(t.updated))
        .execute(&mut *self.0)
        .await
        .map_err(store_error)?;
        Ok(outcome.last_insert_rowid())
    }

    async fn update_trigger(&mut self, t: &Trigger) -> Result<(), StoreError> {
        sqlx::query(
            r#"UPDATE "trigger" SET pack = ?2, pack_ref = ?3, label = ?4, description = ?5,
                   enabled = ?6, param_schema = ?7, payload_schema = ?8, updated = ?9
               WHERE id = ?1"#,
        )
        .bind(t.id)
        .bind(t.pack)
        .bind(&t.pack_ref)
        .bind(&t.label)
        .bind(&t.description)
        .bind(t.enabled)
        .bind(opt_json(t.param_schema.as_ref()))
        .bind(opt_json(t.payload_schema.as_ref()))
        .bind(ts(t.updated))
        .execute(&mut *self.0)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn sensor_by_ref(&mut self, sensor_ref: &str) -> Result<Option<Sensor>, StoreError> {
        self.optional(
            &format!("SELECT {SENSOR_COLUMNS} FROM sensor WHERE ref = ?1"),
            sensor_ref,
            sensor_from_row,
        )
        .await
    }

    async fn insert_sensor(&mut self, s: &Sensor) -> Result<Id, StoreError> {
        let outcome = sqlx::query(
            r#"INSERT INTO sensor (ref, pack, pack_ref, label, description, entrypoint, runtime,
                   runtime_ref, "trigger", trigger_ref, enabled, poll_interval, param_schema,
                   config, created, updated, pack_path, mode, pass_env)
               VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                   ?17, ?18, ?19)"#,
        )
        .bind(&s.r#ref)
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
        .bind(opt_json(s.param_schema.as_ref()))
        .bind(json(&s.config))
        .bind(ts(s.created))
        .bind(ts(s.updated))
        .bind(&s.pack_path)
        .bind(&s.mode)
        .bind(json(&serde_json::json!(s.pass_env)))
        .execute(&mut *self.0)
        .await
        .map_err(store_error)?;
        Ok(outcome.last_insert_rowid())
    }

    async fn update_sensor(&mut self, s: &Sensor) -> Result<(), StoreError> {
        sqlx::query(
            r#"UPDATE sensor SET pack = ?2, pack_ref = ?3, label = ?4, description = ?5,
                   entrypoint = ?6, runtime = ?7, runtime_ref = ?8, "trigger" = ?9,
                   trigger_ref = ?10, enabled = ?11, poll_interval = ?12, param_schema = ?13,
                   config = ?14, updated = ?15, pack_path = ?16, mode = ?17, pass_env = ?18
               WHERE id = ?1"#,
        )
        .bind(s.id)
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
        .bind(opt_json(s.param_schema.as_ref()))
        .bind(json(&s.config))
        .bind(ts(s.updated))
        .bind(&s.pack_path)
        .bind(&s.mode)
        .bind(json(&serde_json::json!(s.pass_env)))
        .execute(&mut *self.0)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn rule_by_ref(&mut self, rule_ref: &str) -> Result<Option<Rule>, StoreError> {
        self.optional(
            &format!("SELECT {RULE_COLUMNS} FROM rule WHERE ref = ?1"),
            rule_ref,
            rule_from_row,
        )
        .await
    }

    async fn insert_rule(&mut self, r: &Rule) -> Result<Id, StoreError> {
        let outcome = sqlx::query(
            r#"INSERT INTO rule (ref, pack, pack_ref, label, description, "action", action_ref,
                   "trigger", trigger_ref, conditions, enabled, created, updated)
               VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"#,
        )
        .bind(&r.r#ref)
        .bind(r.pack)
        .bind(&r.pack_ref)
        .bind(&r.label)
        .bind(&r.description)
        .bind(r.action)
        .bind(&r.action_ref)
        .bind(r.trigger)
        .bind(&r.trigger_ref)
        .bind(json(&r.conditions))
        .bind(r.enabled)
        .bind(ts(r.created))
        .bind(ts(r.updated))
        .execute(&mut *self.0)
        .await
        .map_err(store_error)?;
        Ok(outcome.last_insert_rowid())
    }

    async fn update_rule(&mut self, r: &Rule) -> Result<(), StoreError> {
        sqlx::query(
            r#"UPDATE rule SET pack = ?2, pack_ref = ?3, label = ?4, description = ?5,
                   "action" = ?6, action_ref = ?7, "trigger" = ?8, trigger_ref = ?9,
                   conditions = ?10, enabled = ?11, updated = ?12
               WHERE id = ?1"#,
        )
        .bind(r.id)
        .bind(r.pack)
        .bind(&r.pack_ref)
        .bind(&r.label)
        .bind(&r.description)
        .bind(r.action)
        .bind(&r.action_ref)
        .bind(r.trigger)
        .bind(&r.trigger_ref)
        .bind(json(&r.conditions))
        .bind(r.enabled)
        .bind(ts(r.updated))
        .execute(&mut *self.0)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn enabled_pack_sensors(&mut self, pack: Id) -> Result<Vec<(Id, String)>, StoreError> {
        self.refs_of_pack(
            "SELECT id, ref FROM sensor WHERE pack = ?1 AND enabled ORDER BY id",
            pack,
        )
        .await
    }

    async fn enabled_pack_rules(&mut self, pack: Id) -> Result<Vec<(Id, String)>, StoreError> {
        self.refs_of_pack(
            "SELECT id, ref FROM rule WHERE pack = ?1 AND enabled ORDER BY id",
            pack,
        )
        .await
    }

    async fn disable_sensor(&mut self, id: Id, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.disable(
            "UPDATE sensor SET enabled = 0, updated = ?2 WHERE id = ?1",
            id,
            now,
        )
        .await
    }

    async fn disable_rule(&mut self, id: Id, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.disable(
            "UPDATE rule SET enabled = 0, updated = ?2 WHERE id = ?1",
            id,
            now,
        )
        .await
    }
}
