//! Storage adapters: the [`Store`] port on PostgreSQL ([`PgStore`]) and SQLite
//! ([`SqliteStore`]).
//!
//! Pick one at run time from the database URL with [`open`]:
//!
//! ```no_run
//! # async fn demo() -> Result<(), attune_actors::ports::StoreError> {
//! let store = attune_sensor::store::open("sqlite:data/attune.db").await?;
//! store.ping().await?;
//! # Ok(()) }
//! ```
//!
//! Both adapters run their embedded migrations when they connect, so a fresh database is
//! usable right away and an up-to-date one is left alone. The behaviour they share (how a
//! pack is diffed against what is stored, how enforcement batches are deduplicated, how
//! a row's documents are serialized once for the row and its message) lives here, in `pack`
//! and in `documents`, so the two backends cannot drift apart in semantics.
//!
//! Nor in SQL, where it can be the same: the reads, the pack writer's statements, the
//! column lists and the row decoding are written once (`queries`, `pack_tx`, `rows`) over
//! sqlx's generic `Database`, with the little that differs in text (table names, row
//! locks, timestamp storage) in `dialect`. Each backend module keeps only its pools,
//! migrations, transactions and batch writers, and gets its `Store` implementation from
//! `adapter`.

mod adapter;
mod cluster;
mod commands;
mod dialect;
mod documents;
mod events_tx;
mod idempotency;
mod outbox_queries;
mod pack;
mod pack_plan;
mod pack_tx;
mod postgres;
mod queries;
mod rows;
mod sqlite;
mod sqlite_batch;
mod throttle;
mod throttle_tx;
mod watermark;
mod write_thread;

use std::collections::HashMap;
use std::sync::Arc;

use attune_actors::domain::{Id, NewEnforcement};
use attune_actors::ports::{Store, StoreError};
use chrono::{DateTime, SubsecRound, Utc};

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// How the stores behave, beyond what the URL says.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// The most one port call may take (waiting for a connection included): a server-side
    /// `statement_timeout` on PostgreSQL and a client-side deadline on both backends, which
    /// also covers a connection that hangs without an answer and SQLite's busy waits.
    pub statement_timeout: std::time::Duration,
    /// The instance whose events this store writes (`event.stored_by`, whose matcher
    /// watermark covers them).
    pub instance: String,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            statement_timeout: std::time::Duration::from_secs(10),
            instance: "local".to_owned(),
        }
    }
}

/// Connects to the database named by `url`, migrates it, and returns it as a [`Store`].
///
/// `postgres://` and `postgresql://` URLs select PostgreSQL, `sqlite:` URLs SQLite (the
/// file and its directory are created when missing). Errors never contain the URL's
/// password.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    open_with(url, StoreOptions::default()).await
}

/// [`open`] with options.
pub async fn open_with(url: &str, options: StoreOptions) -> Result<Arc<dyn Store>, StoreError> {
    match Backend::of(url)? {
        Backend::Postgres => Ok(Arc::new(PgStore::connect_with(url, options).await?)),
        Backend::Sqlite => Ok(Arc::new(SqliteStore::connect_with(url, options).await?)),
    }
}

/// Brings the database named by `url` to the latest schema without keeping a connection.
/// Safe to run any number of times.
pub async fn migrate(url: &str) -> Result<(), StoreError> {
    match Backend::of(url)? {
        Backend::Postgres => PgStore::connect(url).await?.close().await,
        Backend::Sqlite => SqliteStore::connect(url).await?.close().await,
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    fn of(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else {
            // Only the scheme is echoed: the rest of the URL may hold a password.
            let scheme = url.split_once(':').map_or("(none)", |(scheme, _)| scheme);
            Err(StoreError::Invalid(format!(
                "unsupported database URL scheme `{scheme}`: expected postgres://, \
                 postgresql:// or sqlite:"
            )))
        }
    }
}

/// The current time at the precision both databases keep (microseconds), so a row handed
/// back to the caller compares equal to the same row read again later.
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Removes a URL's password from text (error messages) before it leaves the adapter.
#[derive(Debug, Clone, Default)]
pub(crate) struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    pub(crate) fn for_url(url: &str) -> Self {
        let mut secrets = Vec::new();
        if let Ok(parsed) = url::Url::parse(url)
            && let Some(password) = parsed.password()
            && !password.is_empty()
        {
            secrets.push(password.to_owned());
            if let Ok(decoded) = urlencoding_decode(password)
                && decoded != password
            {
                secrets.push(decoded);
            }
        }
        Self { secrets }
    }

    pub(crate) fn clean(&self, text: impl Into<String>) -> String {
        let mut text = text.into();
        for secret in &self.secrets {
            text = text.replace(secret.as_str(), "***");
        }
        text
    }

    /// Classifies an error and strips secrets from its message.
    pub(crate) fn error(&self, error: sqlx::Error) -> StoreError {
        match store_error(error) {
            StoreError::Unavailable(m) => StoreError::Unavailable(self.clean(m)),
            StoreError::Invalid(m) => StoreError::Invalid(self.clean(m)),
            StoreError::Other(m) => StoreError::Other(self.clean(m)),
            fenced @ StoreError::Fenced { .. } => fenced,
        }
    }
}

fn urlencoding_decode(text: &str) -> Result<String, std::string::FromUtf8Error> {
    let bytes: Vec<u8> = url::form_urlencoded::parse(format!("x={text}").as_bytes())
        .next()
        .map(|(_, value)| value.into_owned().into_bytes())
        .unwrap_or_default();
    String::from_utf8(bytes)
}

/// Maps a driver error onto the port's three kinds: worth retrying (`Unavailable`), refused
/// data (`Invalid`), anything else (`Other`).
pub(crate) fn store_error(error: sqlx::Error) -> StoreError {
    use sqlx::error::ErrorKind;
    match &error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(error.to_string()),
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            match db.kind() {
                ErrorKind::UniqueViolation
                | ErrorKind::ForeignKeyViolation
                | ErrorKind::NotNullViolation
                | ErrorKind::CheckViolation => StoreError::Invalid(db.message().to_owned()),
                _ if is_transient_code(&code) => StoreError::Unavailable(db.message().to_owned()),
                _ => StoreError::Other(db.message().to_owned()),
            }
        }
        _ => StoreError::Other(error.to_string()),
    }
}

/// PostgreSQL SQLSTATEs for lost connections, shutdowns and exhausted resources, and
/// SQLite's BUSY/LOCKED (left over once the busy timeout has run out).
fn is_transient_code(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57P")
        || code == "40001"
        || code == "40P01"
        || code == "5"
        || code == "6"
}

/// An outbox row: the message a new row will be announced with.
#[derive(Debug, Clone)]
pub(crate) struct OutboxDraft {
    pub message_id: uuid::Uuid,
    pub message_type: &'static str,
    pub routing_key: &'static str,
    pub body: String,
}

/// A batch of new enforcements with repeated `(rule, event)` pairs folded together.
pub(crate) struct DedupedEnforcements {
    /// Indexes into the input of the first occurrence of each pair, in input order.
    pub unique: Vec<usize>,
    /// For every input item, its position in `unique`.
    pub slot: Vec<usize>,
}

impl DedupedEnforcements {
    /// Every input item's result, from the results of the unique pairs: moved when no
    /// pair repeats (the common case), cloned for the repeats.
    pub(crate) fn spread<T: Clone>(&self, results: Vec<T>) -> Vec<T> {
        if self.unique.len() == self.slot.len() {
            return results;
        }
        self.slot.iter().map(|s| results[*s].clone()).collect()
    }
}

pub(crate) fn dedup_enforcements(items: &[NewEnforcement]) -> DedupedEnforcements {
    let mut seen: HashMap<(Id, Id), usize> = HashMap::with_capacity(items.len());
    let mut unique = Vec::with_capacity(items.len());
    let mut slot = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let position = *seen.entry((item.rule, item.event)).or_insert_with(|| {
            unique.push(index);
            unique.len() - 1
        });
        slot.push(position);
    }
    DedupedEnforcements { unique, slot }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redactor_hides_plain_and_encoded_passwords() {
        let redactor = Redactor::for_url("postgres://bob:p%40ss@db:5432/attune");
        assert_eq!(redactor.clean("x p%40ss y p@ss"), "x *** y ***");
    }

    #[test]
    fn unknown_scheme_is_refused_without_echoing_the_url() {
        let error = Backend::of("mysql://root:hunter2@db/x").unwrap_err();
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }

    #[test]
    fn dedup_folds_repeated_pairs_onto_the_first() {
        let item = |rule, event| NewEnforcement {
            rule,
            rule_ref: String::new(),
            trigger_ref: String::new(),
            event,
            payload: serde_json::Value::Null,
            condition: "all".into(),
            conditions: serde_json::Value::Null,
            correlation_id: None,
            traceparent: None,
            action_ref: String::new(),
            action_params: None,
            error: None,
            throttle: None,
            summary: None,
        };
        let deduped = dedup_enforcements(&[item(1, 1), item(2, 1), item(1, 1)]);
        assert_eq!(deduped.unique, vec![0, 1]);
        assert_eq!(deduped.slot, vec![0, 1, 0]);
        assert_eq!(deduped.spread(vec!["a", "b"]), ["a", "b", "a"]);
        let distinct = dedup_enforcements(&[item(1, 1), item(2, 1)]);
        assert_eq!(distinct.spread(vec!["a", "b"]), ["a", "b"]);
    }
}
