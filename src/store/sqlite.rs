//! The [`Store`] port on SQLite, for single-node deployments and development.
//!
//! SQLite allows one writer at a time. Rather than let several pooled connections race
//! for the write lock (and fail with `SQLITE_BUSY` when a read transaction tries to
//! upgrade), every write goes through a pool of exactly one connection, so writes queue
//! in-process; reads use a separate pool and, thanks to WAL, never wait for the writer.
//! The pipeline's writes run on a thread of their own ([`WriteThread`]), and a batch's
//! rows are inserted with bound parameters on the connection's handle (`sqlite_batch`).
//!
//! JSON is stored as text and timestamps as fixed-width UTC text (see the migration and
//! `dialect::Stamp`), so rows sort by time with plain text comparison. Everything but the
//! batch writers, the pools and the migrations is the shared SQL of `queries` and
//! `pack_tx`.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use attune_actors::domain::{Enforcement, Event, Id, NewEnforcement, NewEvent};
use attune_actors::ports::StoreError;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{Pool, Sqlite, Transaction};

use super::adapter::{Adapter, impl_store};
use super::queries::Queries;
use super::rows::{self, ENFORCEMENT_COLUMNS};
use super::sqlite_batch::{self, on_handle};
use super::write_thread::WriteThread;
use super::{Redactor, StoreOptions, dedup_enforcements, store_error};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// SQLite adapter. Cheap to clone (two connection pools and the write thread).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    deadline: Duration,
    instance: String,
    writes: Arc<WriteThread>,
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
            writes: Arc::new(WriteThread::start("sqlite-writes")?),
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

    fn write_thread(&self) -> Option<&WriteThread> {
        Some(&self.writes)
    }

    async fn insert_events(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
        events: Vec<NewEvent>,
        created: DateTime<Utc>,
    ) -> Result<Vec<Event>, StoreError> {
        on_handle(tx, |db| {
            sqlite_batch::insert_events(db, events, created, &self.instance)
        })
        .await
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

        // The first of each pair, moved out of the batch.
        let mut batch: Vec<Option<NewEnforcement>> = enforcements.into_iter().map(Some).collect();
        let unique: Vec<NewEnforcement> = deduped
            .unique
            .iter()
            .filter_map(|i| batch[*i].take())
            .collect();
        // The write lock is held since BEGIN IMMEDIATE, so a pair stored already is one the
        // insert skips; usually there is none, and only those are read back in full.
        let inserted = on_handle(tx, |db| {
            sqlite_batch::insert_enforcements(db, unique, created)
        })
        .await?;
        let mut stored: HashMap<(Id, Id), Enforcement> = inserted
            .stored
            .into_iter()
            .map(|e| ((e.rule, e.event), e))
            .collect();
        if !inserted.existing.is_empty() {
            let list = serde_json::to_string(&inserted.existing)
                .map_err(|e| StoreError::Other(format!("cannot encode enforcement pairs: {e}")))?;
            let sql = format!(
                "SELECT {ENFORCEMENT_COLUMNS} FROM enforcement \
                 WHERE (rule, event) IN (SELECT value ->> 0, value ->> 1 FROM json_each($1))"
            );
            let found =
                Queries::<Sqlite>::all(&mut **tx, sqlx::query(&sql).bind(list), rows::enforcement)
                    .await?;
            stored.extend(found.into_iter().map(|e| ((e.rule, e.event), e)));
        }

        let results: Vec<Enforcement> = pairs
            .iter()
            .map(|pair| {
                stored.remove(pair).ok_or_else(|| {
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
