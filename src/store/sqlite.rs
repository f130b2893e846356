//! The [`Store`] port on SQLite, for single-node deployments and development.
//!
//! SQLite allows one writer at a time. Rather than let several pooled connections race
//! for the write lock (and fail with `SQLITE_BUSY` when a read transaction tries to
//! upgrade), every write goes through a pool of exactly one connection, so writes queue
//! in-process; reads use a separate pool and, thanks to WAL, never wait for the writer.
//! A batch is one transaction with one `INSERT ... SELECT FROM json_each(...)` per
//! table (see [`batch_json`]); its ids are consecutive and come from the insert itself.
//!
//! JSON is stored as text and timestamps as fixed-width UTC text (see the migration and
//! `dialect::Stamp`), so rows sort by time with plain text comparison. Everything but the
//! batch writers, the pools and the migrations is the shared SQL of `queries` and
//! `pack_tx`.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use attune_actors::domain::{Enforcement, Event, Id, NewEnforcement, NewEvent};
use attune_actors::messages::Envelope;
use attune_actors::ports::StoreError;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{Pool, Sqlite, Transaction};

use super::adapter::{Adapter, impl_store};
use super::dialect::Stamp;
use super::queries::Queries;
use super::rows::{self, ENFORCEMENT_COLUMNS};
use super::{OutboxDraft, Redactor, StoreOptions, dedup_enforcements, store_error};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// SQLite adapter. Cheap to clone (two connection pools).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    deadline: Duration,
    instance: String,
}

impl SqliteStore {
    /// Opens `url` (`sqlite:path/to/file.db`, `sqlite://path`, or `sqlite::memory:`),
    /// creating the file and its directory when missing, and runs the migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, StoreOptions::default()).await
    }

    /// [`connect`](Self::connect) with options.
    pub async fn connect_with(url: &str, store_options: StoreOptions) -> Result<Self, StoreError> {
        let deadline = store_options.statement_timeout;
        let redactor = Redactor::for_url(url);
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| {
                StoreError::Invalid(redactor.clean(format!("bad SQLite URL: {}", store_error(e))))
            })?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(deadline)
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
                fenced @ StoreError::Fenced { .. } => fenced.to_string(),
            };
            StoreError::Unavailable(format!("cannot open SQLite database: {message}"))
        };
        // An in-memory database lives as long as one of its connections, so that single
        // connection is kept forever and serves reads too.
        // No ping before each use: a connection to a local file cannot have dropped, and
        // the ping is one more round trip to SQLite's thread per transaction (a statement
        // that fails still fails as it would have).
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
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
                .test_before_acquire(false)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(options)
                .await
                .map_err(unavailable)?
        };
        MIGRATOR.run(&writer).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(inner) => store_error(inner),
            other => StoreError::Other(format!("migration failed: {other}")),
        })?;
        Ok(Self {
            writer,
            reader,
            deadline,
            instance: store_options.instance,
        })
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
    /// that order), and their pending rows in another.
    async fn insert_outbox(
        tx: &mut Transaction<'static, Sqlite>,
        drafts: &[OutboxDraft],
        created: Stamp,
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
        let outcome = sqlx::query(
            "INSERT INTO outbox (message_id, message_type, routing_key, body, created) \
             SELECT value ->> 'm', value ->> 'y', value ->> 'k', value ->> 'b', $2 \
             FROM json_each($1) ORDER BY key",
        )
        .bind(batch_json(&rows)?)
        .bind(created)
        .execute(&mut **tx)
        .await
        .map_err(store_error)?;
        let ids = inserted_ids(&outcome, drafts.len())?;
        if let (Some(first), Some(last)) = (ids.first(), ids.last()) {
            sqlx::query(
                "WITH RECURSIVE ids(id) AS (SELECT $1 UNION ALL SELECT id + 1 FROM ids WHERE id < $2) \
                 INSERT INTO outbox_pending (id) SELECT id FROM ids",
            )
            .bind(first)
            .bind(last)
            .execute(&mut **tx)
            .await
            .map_err(store_error)?;
        }
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
    m: String,
    tp: Option<&'a str>,
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
    ci: Option<String>,
    tp: Option<&'a str>,
    st: &'a str,
    ar: &'a str,
    ap: Option<String>,
    er: Option<&'a str>,
    th: Option<String>,
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

impl_store!(SqliteStore);

#[async_trait]
impl Adapter for SqliteStore {
    type Db = Sqlite;

    fn reader(&self) -> &Pool<Sqlite> {
        &self.reader
    }

    fn writer(&self) -> &Pool<Sqlite> {
        &self.writer
    }

    fn deadline(&self) -> Duration {
        self.deadline
    }

    fn instance(&self) -> &str {
        &self.instance
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        self.begin().await
    }

    async fn insert_events(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
        events: Vec<NewEvent>,
        created: DateTime<Utc>,
    ) -> Result<Vec<Event>, StoreError> {
        let message_ids: Vec<uuid::Uuid> = events.iter().map(|_| uuid::Uuid::new_v4()).collect();
        let rows: Vec<EventJson<'_>> = events
            .iter()
            .zip(&message_ids)
            .map(|(e, message_id)| EventJson {
                t: e.trigger,
                r: &e.trigger_ref,
                c: e.config.to_string(),
                p: e.payload.to_string(),
                s: e.source,
                sr: e.source_ref.as_deref(),
                m: message_id.to_string(),
                tp: e.traceparent.as_deref(),
            })
            .collect();
        let batch = batch_json(&rows)?;
        drop(rows);

        let outcome = sqlx::query(
            r#"INSERT INTO event
                   ("trigger", trigger_ref, config, payload, source, source_ref, created,
                    message_id, traceparent, stored_by)
               SELECT value ->> 't', value ->> 'r', value ->> 'c', value ->> 'p',
                      value ->> 's', value ->> 'sr', $2, value ->> 'm', value ->> 'tp', $3
               FROM json_each($1) ORDER BY key"#,
        )
        .bind(batch)
        .bind(Stamp(created))
        .bind(&self.instance)
        .execute(&mut **tx)
        .await
        .map_err(store_error)?;
        let ids = inserted_ids(&outcome, events.len())?;
        let stored: Vec<Event> = events
            .into_iter()
            .zip(ids)
            .zip(message_ids)
            .map(|((new, id), message_id)| new.stored_as(id, created, message_id))
            .collect();
        let drafts: Vec<OutboxDraft> = stored
            .iter()
            .map(|e| OutboxDraft::of(&Envelope::event_created(e)))
            .collect();
        Self::insert_outbox(tx, &drafts, Stamp(created)).await?;
        Ok(stored)
    }

    async fn insert_enforcements(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
        enforcements: Vec<NewEnforcement>,
        created: DateTime<Utc>,
    ) -> Result<Vec<Enforcement>, StoreError> {
        let deduped = dedup_enforcements(&enforcements);
        let pairs: Vec<(Id, Id)> = deduped
            .unique
            .iter()
            .map(|i| (enforcements[*i].rule, enforcements[*i].event))
            .collect();

        // The write lock is held since BEGIN IMMEDIATE, so what exists now is exactly
        // what the insert below would conflict with.
        let sql = format!(
            "SELECT {ENFORCEMENT_COLUMNS} FROM enforcement \
             WHERE (rule, event) IN (SELECT value ->> 0, value ->> 1 FROM json_each($1))"
        );
        let statement = sqlx::query(&sql).bind(batch_json(&pairs)?);
        let mut existing: HashMap<(Id, Id), Enforcement> =
            Queries::<Sqlite>::all(&mut **tx, statement, rows::enforcement)
                .await?
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
                    p: e.payload.to_string(),
                    c: &e.condition,
                    cs: e.conditions.to_string(),
                    ci: e.correlation_id.map(|id| id.to_string()),
                    tp: e.traceparent.as_deref(),
                    st: if e.error.is_some() {
                        attune_actors::domain::ENFORCEMENT_FAILED
                    } else {
                        attune_actors::domain::ENFORCEMENT_CREATED
                    },
                    ar: &e.action_ref,
                    ap: e.action_params.as_ref().map(serde_json::Value::to_string),
                    er: e.error.as_deref(),
                    th: e
                        .summary
                        .as_ref()
                        .and_then(|t| serde_json::to_string(t).ok()),
                })
                .collect();
            let outcome = sqlx::query(
                "INSERT INTO enforcement (rule, rule_ref, trigger_ref, event, status, payload, \
                     condition, conditions, created, correlation_id, traceparent, action_ref, \
                     action_params, error, throttle) \
                 SELECT value ->> 'rule', value ->> 'rr', value ->> 'tr', value ->> 'ev', \
                     value ->> 'st', value ->> 'p', value ->> 'c', value ->> 'cs', $2, \
                     value ->> 'ci', value ->> 'tp', value ->> 'ar', value ->> 'ap', \
                     value ->> 'er', value ->> 'th' \
                 FROM json_each($1) ORDER BY key",
            )
            .bind(batch_json(&rows)?)
            .bind(Stamp(created))
            .execute(&mut **tx)
            .await
            .map_err(store_error)?;
            let ids = inserted_ids(&outcome, fresh.len())?;
            let mut drafts = Vec::with_capacity(fresh.len());
            for (new, id) in fresh.into_iter().zip(ids) {
                let enforcement = new.stored(id, created);
                drafts.push(OutboxDraft::of(&Envelope::enforcement_created(
                    &enforcement,
                )));
                inserted.insert((new.rule, new.event), enforcement);
            }
            Self::insert_outbox(tx, &drafts, Stamp(created)).await?;
        }

        let results: Vec<Enforcement> = pairs
            .iter()
            .map(|pair| {
                existing
                    .remove(pair)
                    .or_else(|| inserted.remove(pair))
                    .ok_or_else(|| {
                        StoreError::Other(format!(
                            "enforcement for rule {} and event {} neither inserted nor found",
                            pair.0, pair.1
                        ))
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(deduped.spread(results))
    }

    async fn write_published(&self, ids: &[Id]) -> Result<(), StoreError> {
        // One statement for any number of ids: the list travels as a JSON array.
        let list = serde_json::to_string(ids)
            .map_err(|e| StoreError::Other(format!("cannot encode outbox ids: {e}")))?;
        sqlx::query("DELETE FROM outbox_pending WHERE id IN (SELECT value FROM json_each($1))")
            .bind(list)
            .execute(&self.writer)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    /// `BEGIN IMMEDIATE` already keeps every other writer out.
    async fn begin_pack(
        &self,
        _pack_ref: &str,
    ) -> Result<Transaction<'static, Sqlite>, StoreError> {
        self.begin().await
    }
}
