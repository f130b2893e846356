//! SQLite's batch writers: events, enforcements and their outbox rows, one prepared
//! `INSERT` per table run once per row with bound parameters, on the writer connection's
//! own handle (through rusqlite) inside the sqlx transaction that holds the write lock.
//!
//! Why not sqlx: each sqlx statement is a round trip to the connection's thread, so a
//! batch used to travel as one JSON array unpacked by `json_each`, and SQLite's JSON
//! functions (turning each element back into text and parsing it again for every column)
//! took about a third of the writer thread's time. Bound parameters cost none of that, and
//! the whole batch runs in one call.
//!
//! The write lock is held since `BEGIN IMMEDIATE`, so nothing else writes while a batch
//! runs: each row's id is the one SQLite just gave it. Each row's JSON documents are
//! serialized once, for the row and for its message (`messages::event_created_json`).

use attune_actors::domain::{Enforcement, Event, Id, NewEnforcement, NewEvent};
use attune_actors::ports::StoreError;
use chrono::{DateTime, Utc};
use rusqlite::{CachedStatement, Connection, ErrorCode, params};
use sqlx::sqlite::SqliteConnection;
use uuid::Uuid;

use super::dialect::Stamp;
use super::documents::{EnforcementDocuments, EventDocuments, RuleConditions};
use super::{OutboxDraft, store_error};

/// Runs `work` with rusqlite on `connection`'s handle: synchronous, so the caller should
/// be on a thread where blocking is fine (the store's write thread).
pub(crate) async fn on_handle<T>(
    connection: &mut SqliteConnection,
    work: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let mut locked = connection.lock_handle().await.map_err(store_error)?;
    // SAFETY: the handle stays open and is ours alone while `locked` (sqlx's lock on the
    // connection) lives; `from_handle` neither closes nor finalizes anything of sqlx's, and
    // the rusqlite connection, with the statements it prepared, is dropped before the lock.
    let borrowed =
        unsafe { Connection::from_handle(locked.as_raw_handle().as_ptr()) }.map_err(batch_error)?;
    let result = work(&borrowed);
    drop(borrowed);
    drop(locked);
    result
}

/// Inserts `events` in order with their outbox rows; returns them as stored.
pub(crate) fn insert_events(
    db: &Connection,
    events: Vec<NewEvent>,
    created: DateTime<Utc>,
    instance: &str,
) -> Result<Vec<Event>, StoreError> {
    let stamp = Stamp(created).text();
    let mut insert = prepare(
        db,
        r#"INSERT INTO event ("trigger", trigger_ref, config, payload, source, source_ref,
               created, message_id, traceparent, stored_by)
           VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"#,
    )?;
    let sent = Utc::now();
    let mut stored = Vec::with_capacity(events.len());
    let mut drafts = Vec::with_capacity(events.len());
    for new in events {
        let documents = EventDocuments::of(&new)?;
        let message_id = Uuid::new_v4();
        insert
            .execute(params![
                new.trigger,
                new.trigger_ref,
                documents.config.get(),
                documents.payload.get(),
                new.source,
                new.source_ref,
                stamp,
                message_id.to_string(),
                new.traceparent,
                instance,
            ])
            .map_err(batch_error)?;
        let event = new.stored_as(db.last_insert_rowid(), created, message_id);
        drafts.push(documents.message(&event, sent));
        stored.push(event);
    }
    insert_outbox(db, &drafts, &stamp)?;
    Ok(stored)
}

/// What [`insert_enforcements`] did with a batch.
pub(crate) struct InsertedEnforcements {
    /// Those inserted, in order.
    pub stored: Vec<Enforcement>,
    /// The `(rule, event)` pairs that had an enforcement already: not inserted, no message.
    pub existing: Vec<(Id, Id)>,
}

/// Inserts `enforcements` (one per `(rule, event)` pair) in order with their outbox rows,
/// skipping the pairs stored already.
pub(crate) fn insert_enforcements(
    db: &Connection,
    enforcements: Vec<NewEnforcement>,
    created: DateTime<Utc>,
) -> Result<InsertedEnforcements, StoreError> {
    let stamp = Stamp(created).text();
    let mut insert = prepare(
        db,
        "INSERT INTO enforcement (rule, rule_ref, trigger_ref, event, status, payload, \
             condition, conditions, created, correlation_id, traceparent, action_ref, \
             action_params, error, throttle) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) \
         ON CONFLICT (rule, event) DO NOTHING",
    )?;
    let sent = Utc::now();
    // A rule's conditions are the same in every enforcement of the batch: written once.
    let mut conditions = RuleConditions::default();
    let mut existing = Vec::new();
    let mut stored = Vec::with_capacity(enforcements.len());
    let mut drafts = Vec::with_capacity(enforcements.len());
    for new in enforcements {
        let documents = EnforcementDocuments::of(&new)?;
        let enforcement = {
            let inserted = insert
                .execute(params![
                    new.rule,
                    new.rule_ref,
                    new.trigger_ref,
                    new.event,
                    new.status(),
                    documents.payload.get(),
                    new.condition,
                    conditions.text(new.rule, &new.conditions),
                    stamp,
                    new.correlation_id.map(|id| id.to_string()),
                    new.traceparent,
                    new.action_ref,
                    documents.action_params_text(),
                    new.error,
                    documents.summary_text(),
                ])
                .map_err(batch_error)?;
            if inserted == 0 {
                existing.push((new.rule, new.event));
                continue;
            }
            new.into_stored(db.last_insert_rowid(), created)
        };
        drafts.push(documents.message(&enforcement, sent));
        stored.push(enforcement);
    }
    insert_outbox(db, &drafts, &stamp)?;
    Ok(InsertedEnforcements { stored, existing })
}

/// Inserts outbox rows in order, each with its pending row.
fn insert_outbox(db: &Connection, drafts: &[OutboxDraft], created: &str) -> Result<(), StoreError> {
    if drafts.is_empty() {
        return Ok(());
    }
    let mut insert = prepare(
        db,
        "INSERT INTO outbox (message_id, message_type, routing_key, body, created) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    let mut pending = prepare(db, "INSERT INTO outbox_pending (id) VALUES (?1)")?;
    for draft in drafts {
        insert
            .execute(params![
                draft.message_id.to_string(),
                draft.message_type,
                draft.routing_key,
                draft.body,
                created,
            ])
            .map_err(batch_error)?;
        pending
            .execute([db.last_insert_rowid()])
            .map_err(batch_error)?;
    }
    Ok(())
}

fn prepare<'db>(db: &'db Connection, sql: &str) -> Result<CachedStatement<'db>, StoreError> {
    db.prepare_cached(sql).map_err(batch_error)
}

/// The port's kinds, as `store_error` gives them for sqlx's errors: refused data is
/// `Invalid`, a lock still held once the busy timeout ran out is `Unavailable`.
fn batch_error(error: rusqlite::Error) -> StoreError {
    let code = error.sqlite_error_code();
    let message = error.to_string();
    match code {
        Some(ErrorCode::ConstraintViolation) => StoreError::Invalid(message),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            StoreError::Unavailable(message)
        }
        _ => StoreError::Other(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Connection {
        let db = Connection::open_in_memory().expect("memory database");
        db.execute_batch(
            "PRAGMA foreign_keys = ON;
             CREATE TABLE parent (id INTEGER PRIMARY KEY);
             CREATE TABLE child (id INTEGER PRIMARY KEY, parent INTEGER NOT NULL REFERENCES parent (id));",
        )
        .expect("schema");
        db
    }

    #[test]
    fn refused_rows_are_invalid_and_other_failures_are_not() {
        let db = schema();
        let refused = db
            .execute("INSERT INTO child (parent) VALUES (42)", [])
            .map_err(batch_error)
            .expect_err("no such parent");
        assert!(matches!(refused, StoreError::Invalid(m) if m.contains("FOREIGN KEY")));
        let broken = db
            .execute("INSERT INTO nowhere (x) VALUES (1)", [])
            .map_err(batch_error)
            .expect_err("no such table");
        assert!(matches!(broken, StoreError::Other(m) if m.contains("nowhere")));
    }
}
