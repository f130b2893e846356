//! The [`Store`] port on PostgreSQL (schema `attune`).
//!
//! Batches are written with a constant number of round-trips whatever their size: ids are
//! preallocated from the sequences in one query, then each table gets a single
//! `INSERT ... SELECT FROM UNNEST(...)` with explicit ids. Explicit ids make the mapping
//! from input position to row exact, which the outbox needs (its order is publish order)
//! and which `RETURNING` on a multi-row insert does not promise.

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
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, PgConnection, Postgres, Row, Transaction};

use super::pack::{self, PackRow, PackTx};
use super::{ENFORCEMENT_CREATED, OutboxDraft, Redactor, dedup_enforcements, now, store_error};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

const TRIGGER_COLUMNS: &str = r#"id, ref, pack, pack_ref, label, description, enabled,
    param_schema, payload_schema, created, updated"#;
const SENSOR_COLUMNS: &str = r#"id, ref, pack, pack_ref, label, description, entrypoint, runtime,
    runtime_ref, "trigger", trigger_ref, enabled, poll_interval, param_schema, config, pack_path,
    mode, pass_env, created, updated"#;
const RULE_COLUMNS: &str = r#"id, ref, pack, pack_ref, label, description, "action", action_ref,
    "trigger", trigger_ref, conditions, enabled, created, updated"#;
const EVENT_COLUMNS: &str =
    r#"id, "trigger", trigger_ref, config, payload, source, source_ref, created"#;
const ENFORCEMENT_COLUMNS: &str = r#"id, rule, rule_ref, trigger_ref, event, status, payload,
    condition, conditions, created"#;

/// PostgreSQL adapter. Cheap to clone (it is a connection pool).
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to `url` (`postgres://user:password@host:port/database`) and runs the
    /// migrations. A database that cannot be reached is [`StoreError::Unavailable`]; the
    /// password never appears in an error.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let redactor = Redactor::for_url(url);
        let options: PgConnectOptions = url.parse().map_err(|e: sqlx::Error| {
            StoreError::Invalid(redactor.clean(format!("bad PostgreSQL URL: {e}")))
        })?;
        // A single connection first, so that a server that is down fails `connect` at once
        // (a pool would keep retrying until its acquire timeout); callers retry on
        // `Unavailable`. The same connection runs the migrations, then is closed.
        let mut conn =
            PgConnection::connect_with(&options)
                .await
                .map_err(|e| match redactor.error(e) {
                    StoreError::Unavailable(m) | StoreError::Other(m) | StoreError::Invalid(m) => {
                        StoreError::Unavailable(format!("cannot connect to PostgreSQL: {m}"))
                    }
                })?;
        let migrated = run_migrations(&mut conn).await;
        let _ = conn.close().await;
        migrated.map_err(|e| match e {
            StoreError::Unavailable(m) => StoreError::Unavailable(redactor.clean(m)),
            StoreError::Invalid(m) | StoreError::Other(m) => StoreError::Other(redactor.clean(m)),
        })?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(options);
        Ok(Self { pool })
    }

    /// Wraps an existing pool (migrations are not run).
    pub fn from_pool(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes every connection; waits for the ones in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn begin(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        self.pool.begin().await.map_err(store_error)
    }

    /// `n` fresh values of each named sequence, ascending, in one round-trip.
    async fn preallocate(
        tx: &mut Transaction<'static, Postgres>,
        first: &str,
        second: &str,
        n: usize,
    ) -> Result<(Vec<Id>, Vec<Id>), StoreError> {
        let rows: Vec<(Id, Id)> = sqlx::query_as(&format!(
            "SELECT nextval('{first}'), nextval('{second}') FROM generate_series(1, $1)"
        ))
        .bind(count(n)?)
        .fetch_all(&mut **tx)
        .await
        .map_err(store_error)?;
        let (mut a, mut b): (Vec<Id>, Vec<Id>) = rows.into_iter().unzip();
        // Sequence values come out ascending in practice; sorting makes it a guarantee
        // so that outbox order follows input order.
        a.sort_unstable();
        b.sort_unstable();
        Ok((a, b))
    }

    async fn insert_outbox(
        tx: &mut Transaction<'static, Postgres>,
        ids: &[Id],
        drafts: &[OutboxDraft],
        created: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let message_ids: Vec<uuid::Uuid> = drafts.iter().map(|d| d.message_id).collect();
        let types: Vec<&str> = drafts.iter().map(|d| d.message_type).collect();
        let keys: Vec<&str> = drafts.iter().map(|d| d.routing_key).collect();
        let bodies: Vec<&str> = drafts.iter().map(|d| d.body.as_str()).collect();
        sqlx::query(
            r#"INSERT INTO attune.outbox (id, message_id, message_type, routing_key, body, created)
               SELECT id, message_id, message_type, routing_key, body::jsonb, $6
               FROM UNNEST($1::bigint[], $2::uuid[], $3::text[], $4::text[], $5::text[])
                    AS u(id, message_id, message_type, routing_key, body)"#,
        )
        .bind(&ids[..drafts.len()])
        .bind(message_ids)
        .bind(types)
        .bind(keys)
        .bind(bodies)
        .bind(created)
        .execute(&mut **tx)
        .await
        .map_err(store_error)?;
        Ok(())
    }
}

/// Runs the embedded migrations with the migration history kept in
/// `attune._sqlx_migrations` rather than `public`: the database may be shared with other
/// services whose own sqlx migrations would otherwise collide with ours by version number.
async fn run_migrations(conn: &mut PgConnection) -> Result<(), StoreError> {
    sqlx::query("CREATE SCHEMA IF NOT EXISTS attune")
        .execute(&mut *conn)
        .await
        .map_err(store_error)?;
    // Only this connection's session; it is closed after migrating.
    sqlx::query("SET search_path TO attune")
        .execute(&mut *conn)
        .await
        .map_err(store_error)?;
    MIGRATOR.run(&mut *conn).await.map_err(|e| match e {
        sqlx::migrate::MigrateError::Execute(inner) => store_error(inner),
        other => StoreError::Other(format!("migration failed: {other}")),
    })
}

fn count(n: usize) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(|_| StoreError::Invalid(format!("batch of {n} rows is too large")))
}

fn trigger_from_row(row: &PgRow) -> Result<Trigger, sqlx::Error> {
    Ok(Trigger {
        id: row.try_get("id")?,
        r#ref: row.try_get("ref")?,
        pack: row.try_get("pack")?,
        pack_ref: row.try_get("pack_ref")?,
        label: row.try_get("label")?,
        description: row.try_get("description")?,
        enabled: row.try_get("enabled")?,
        param_schema: row.try_get("param_schema")?,
        payload_schema: row.try_get("payload_schema")?,
        created: row.try_get("created")?,
        updated: row.try_get("updated")?,
    })
}

fn sensor_from_row(row: &PgRow) -> Result<Sensor, sqlx::Error> {
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
        param_schema: row.try_get("param_schema")?,
        config: row.try_get("config")?,
        pack_path: row.try_get("pack_path")?,
        mode: row.try_get("mode")?,
        pass_env: string_list(row.try_get("pass_env")?),
        created: row.try_get("created")?,
        updated: row.try_get("updated")?,
    })
}

/// A JSON array of strings as stored in `pass_env`; anything else reads as empty.
fn string_list(value: Value) -> Vec<String> {
    serde_json::from_value(value).unwrap_or_default()
}

fn rule_from_row(row: &PgRow) -> Result<Rule, sqlx::Error> {
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
        conditions: row.try_get("conditions")?,
        enabled: row.try_get("enabled")?,
        created: row.try_get("created")?,
        updated: row.try_get("updated")?,
    })
}

fn event_from_row(row: &PgRow) -> Result<Event, sqlx::Error> {
    Ok(Event {
        id: row.try_get("id")?,
        trigger: row.try_get("trigger")?,
        trigger_ref: row.try_get("trigger_ref")?,
        config: row.try_get("config")?,
        payload: row.try_get("payload")?,
        source: row.try_get("source")?,
        source_ref: row.try_get("source_ref")?,
        created: row.try_get("created")?,
    })
}

fn enforcement_from_row(row: &PgRow) -> Result<Enforcement, sqlx::Error> {
    Ok(Enforcement {
        id: row.try_get("id")?,
        rule: row.try_get("rule")?,
        rule_ref: row.try_get("rule_ref")?,
        trigger_ref: row.try_get("trigger_ref")?,
        event: row.try_get("event")?,
        status: row.try_get("status")?,
        payload: row.try_get("payload")?,
        condition: row.try_get("condition")?,
        conditions: row.try_get("conditions")?,
        created: row.try_get("created")?,
    })
}

fn pack_from_row(row: &PgRow) -> Result<PackRow, sqlx::Error> {
    Ok(PackRow {
        id: row.try_get("id")?,
        r#ref: row.try_get("ref")?,
        label: row.try_get("label")?,
        description: row.try_get("description")?,
        version: row.try_get("version")?,
        created: row.try_get("created")?,
        updated: row.try_get("updated")?,
    })
}

fn rows<T>(
    rows: Vec<PgRow>,
    map: fn(&PgRow) -> Result<T, sqlx::Error>,
) -> Result<Vec<T>, StoreError> {
    rows.iter().map(|r| map(r).map_err(store_error)).collect()
}

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn enabled_sensors(&self) -> Result<Vec<Sensor>, StoreError> {
        let found = sqlx::query(&format!(
            "SELECT {SENSOR_COLUMNS} FROM attune.sensor WHERE enabled ORDER BY created, id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        rows(found, sensor_from_row)
    }

    async fn sensor_by_ref(&self, sensor_ref: &str) -> Result<Option<Sensor>, StoreError> {
        let found = sqlx::query(&format!(
            "SELECT {SENSOR_COLUMNS} FROM attune.sensor WHERE ref = $1"
        ))
        .bind(sensor_ref)
        .fetch_optional(&self.pool)
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
            r#"SELECT {TRIGGER_COLUMNS} FROM attune."trigger" WHERE ref = $1"#
        ))
        .bind(trigger_ref)
        .fetch_optional(&self.pool)
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
            "SELECT {RULE_COLUMNS} FROM attune.rule WHERE trigger_ref = $1 AND enabled \
             ORDER BY created, id"
        ))
        .bind(trigger_ref)
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        rows(found, rule_from_row)
    }

    async fn rule_by_ref(&self, rule_ref: &str) -> Result<Option<Rule>, StoreError> {
        let found = sqlx::query(&format!(
            "SELECT {RULE_COLUMNS} FROM attune.rule WHERE ref = $1"
        ))
        .bind(rule_ref)
        .fetch_optional(&self.pool)
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
        let mut tx = self.begin().await?;
        let (ids, outbox_ids) = Self::preallocate(
            &mut tx,
            "attune.event_id_seq",
            "attune.outbox_id_seq",
            events.len(),
        )
        .await?;
        let stored: Vec<Event> = events
            .into_iter()
            .zip(&ids)
            .map(|(new, id)| Event {
                id: *id,
                trigger: new.trigger,
                trigger_ref: new.trigger_ref,
                config: new.config,
                payload: new.payload,
                source: new.source,
                source_ref: new.source_ref,
                created,
            })
            .collect();

        let triggers: Vec<Option<Id>> = stored.iter().map(|e| e.trigger).collect();
        let trigger_refs: Vec<&str> = stored.iter().map(|e| e.trigger_ref.as_str()).collect();
        let configs: Vec<&Value> = stored.iter().map(|e| &e.config).collect();
        let payloads: Vec<&Value> = stored.iter().map(|e| &e.payload).collect();
        let sources: Vec<Option<Id>> = stored.iter().map(|e| e.source).collect();
        let source_refs: Vec<Option<&str>> =
            stored.iter().map(|e| e.source_ref.as_deref()).collect();
        sqlx::query(
            r#"INSERT INTO attune.event
                   (id, "trigger", trigger_ref, config, payload, source, source_ref, created)
               SELECT id, "trigger", trigger_ref, config, payload, source, source_ref, $8
               FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::jsonb[], $5::jsonb[],
                           $6::bigint[], $7::text[])
                    AS u(id, "trigger", trigger_ref, config, payload, source, source_ref)"#,
        )
        .bind(&ids)
        .bind(triggers)
        .bind(trigger_refs)
        .bind(configs)
        .bind(payloads)
        .bind(sources)
        .bind(source_refs)
        .bind(created)
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;

        let drafts: Vec<OutboxDraft> = stored
            .iter()
            .map(|e| OutboxDraft::of(&Envelope::event_created(e)))
            .collect();
        Self::insert_outbox(&mut tx, &outbox_ids, &drafts, created).await?;
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
        let mut tx = self.begin().await?;
        let (ids, outbox_ids) = Self::preallocate(
            &mut tx,
            "attune.enforcement_id_seq",
            "attune.outbox_id_seq",
            deduped.unique.len(),
        )
        .await?;
        let candidates: Vec<Enforcement> = deduped
            .unique
            .iter()
            .zip(&ids)
            .map(|(index, id)| {
                let new = &enforcements[*index];
                Enforcement {
                    id: *id,
                    rule: new.rule,
                    rule_ref: new.rule_ref.clone(),
                    trigger_ref: new.trigger_ref.clone(),
                    event: new.event,
                    status: ENFORCEMENT_CREATED.to_owned(),
                    payload: new.payload.clone(),
                    condition: new.condition.clone(),
                    conditions: new.conditions.clone(),
                    created,
                }
            })
            .collect();

        let rules: Vec<Id> = candidates.iter().map(|e| e.rule).collect();
        let rule_refs: Vec<&str> = candidates.iter().map(|e| e.rule_ref.as_str()).collect();
        let trigger_refs: Vec<&str> = candidates.iter().map(|e| e.trigger_ref.as_str()).collect();
        let event_ids: Vec<Id> = candidates.iter().map(|e| e.event).collect();
        let payloads: Vec<&Value> = candidates.iter().map(|e| &e.payload).collect();
        let conditions: Vec<&str> = candidates.iter().map(|e| e.condition.as_str()).collect();
        let condition_sets: Vec<&Value> = candidates.iter().map(|e| &e.conditions).collect();
        let inserted: Vec<Id> = sqlx::query_scalar(
            r#"INSERT INTO attune.enforcement
                   (id, rule, rule_ref, trigger_ref, event, status, payload, condition,
                    conditions, created)
               SELECT id, rule, rule_ref, trigger_ref, event, $8, payload, condition,
                      conditions, $9
               FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::bigint[],
                           $6::jsonb[], $7::text[], $10::jsonb[])
                    AS u(id, rule, rule_ref, trigger_ref, event, payload, condition, conditions)
               ON CONFLICT (rule, event) DO NOTHING
               RETURNING id"#,
        )
        .bind(&ids)
        .bind(&rules)
        .bind(rule_refs)
        .bind(trigger_refs)
        .bind(&event_ids)
        .bind(payloads)
        .bind(conditions)
        .bind(ENFORCEMENT_CREATED)
        .bind(created)
        .bind(condition_sets)
        .fetch_all(&mut *tx)
        .await
        .map_err(store_error)?;

        let mut results = candidates;
        if inserted.len() < results.len() {
            // Pairs that already existed keep their stored row (and their one message).
            let inserted: std::collections::HashSet<Id> = inserted.into_iter().collect();
            let existing = sqlx::query(&format!(
                "SELECT {ENFORCEMENT_COLUMNS} FROM attune.enforcement
                 WHERE (rule, event) IN (SELECT * FROM UNNEST($1::bigint[], $2::bigint[]))"
            ))
            .bind(&rules)
            .bind(&event_ids)
            .fetch_all(&mut *tx)
            .await
            .map_err(store_error)?;
            let existing: std::collections::HashMap<(Id, Id), Enforcement> =
                rows(existing, enforcement_from_row)?
                    .into_iter()
                    .filter(|e| !inserted.contains(&e.id))
                    .map(|e| ((e.rule, e.event), e))
                    .collect();
            for result in &mut results {
                if !inserted.contains(&result.id) {
                    match existing.get(&(result.rule, result.event)) {
                        Some(stored) => *result = stored.clone(),
                        None => {
                            return Err(StoreError::Other(format!(
                                "enforcement for rule {} and event {} neither inserted nor found",
                                result.rule, result.event
                            )));
                        }
                    }
                }
            }
            let drafts: Vec<OutboxDraft> = results
                .iter()
                .filter(|e| inserted.contains(&e.id))
                .map(|e| OutboxDraft::of(&Envelope::enforcement_created(e)))
                .collect();
            Self::insert_outbox(&mut tx, &outbox_ids, &drafts, created).await?;
        } else {
            let drafts: Vec<OutboxDraft> = results
                .iter()
                .map(|e| OutboxDraft::of(&Envelope::enforcement_created(e)))
                .collect();
            Self::insert_outbox(&mut tx, &outbox_ids, &drafts, created).await?;
        }
        tx.commit().await.map_err(store_error)?;
        Ok(deduped.slot.iter().map(|s| results[*s].clone()).collect())
    }

    async fn events_between(
        &self,
        after_id: Id,
        up_to: Id,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM attune.event WHERE id > $1 AND id <= $2 \
             ORDER BY id LIMIT $3"
        ))
        .bind(after_id)
        .bind(up_to)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        rows.iter()
            .map(event_from_row)
            .collect::<Result<_, _>>()
            .map_err(store_error)
    }

    async fn last_event_id(&self) -> Result<Id, StoreError> {
        sqlx::query_scalar("SELECT COALESCE(max(id), 0) FROM attune.event")
            .fetch_one(&self.pool)
            .await
            .map_err(store_error)
    }

    async fn matched_through(&self) -> Result<Id, StoreError> {
        sqlx::query_scalar("SELECT matched_through FROM attune.matcher_progress WHERE id = 1")
            .fetch_one(&self.pool)
            .await
            .map_err(store_error)
    }

    async fn set_matched_through(&self, event_id: Id) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE attune.matcher_progress \
             SET matched_through = GREATEST(matched_through, $1) WHERE id = 1",
        )
        .bind(event_id)
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn get_event(&self, id: Id) -> Result<Option<Event>, StoreError> {
        let found = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM attune.event WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
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
        // Two statements rather than `$1 IS NULL OR ...` so each gets its own index plan.
        let filtered = format!(
            "SELECT {EVENT_COLUMNS} FROM attune.event WHERE trigger_ref = $1 ORDER BY id DESC LIMIT $2"
        );
        let all = format!("SELECT {EVENT_COLUMNS} FROM attune.event ORDER BY id DESC LIMIT $1");
        let found = match trigger_ref {
            Some(trigger_ref) => sqlx::query(&filtered)
                .bind(trigger_ref)
                .bind(i64::from(limit)),
            None => sqlx::query(&all).bind(i64::from(limit)),
        }
        .fetch_all(&self.pool)
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
            "SELECT {ENFORCEMENT_COLUMNS} FROM attune.enforcement WHERE rule_ref = $1 ORDER BY id DESC LIMIT $2"
        );
        let all = format!(
            "SELECT {ENFORCEMENT_COLUMNS} FROM attune.enforcement ORDER BY id DESC LIMIT $1"
        );
        let found = match rule_ref {
            Some(rule_ref) => sqlx::query(&filtered).bind(rule_ref).bind(i64::from(limit)),
            None => sqlx::query(&all).bind(i64::from(limit)),
        }
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        rows(found, enforcement_from_row)
    }

    async fn pending_outbox(&self, limit: u32) -> Result<Vec<OutboxMessage>, StoreError> {
        let found = sqlx::query(
            "SELECT id, message_id, message_type, routing_key, body::text AS body \
             FROM attune.outbox WHERE published_at IS NULL ORDER BY id LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        found
            .iter()
            .map(|row| {
                Ok(OutboxMessage {
                    id: row.try_get("id")?,
                    message_id: row.try_get("message_id")?,
                    message_type: row.try_get("message_type")?,
                    routing_key: row.try_get("routing_key")?,
                    body: row.try_get("body")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(store_error)
    }

    async fn mark_published(&self, ids: &[Id]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "UPDATE attune.outbox SET published_at = $1 \
             WHERE id = ANY($2) AND published_at IS NULL",
        )
        .bind(now())
        .bind(ids)
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn outbox_backlog(&self) -> Result<u64, StoreError> {
        let pending: i64 =
            sqlx::query_scalar("SELECT count(*) FROM attune.outbox WHERE published_at IS NULL")
                .fetch_one(&self.pool)
                .await
                .map_err(store_error)?;
        Ok(u64::try_from(pending).unwrap_or(0))
    }

    async fn sensor_state(&self, sensor_ref: &str) -> Result<Option<Value>, StoreError> {
        sqlx::query_scalar("SELECT state FROM attune.sensor_state WHERE sensor_ref = $1")
            .bind(sensor_ref)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_error)
    }

    async fn save_sensor_state(&self, sensor_ref: &str, state: &Value) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO attune.sensor_state (sensor_ref, state, updated) VALUES ($1, $2, $3) \
             ON CONFLICT (sensor_ref) DO UPDATE SET state = EXCLUDED.state, updated = EXCLUDED.updated",
        )
        .bind(sensor_ref)
        .bind(state)
        .bind(now())
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn upsert_pack(&self, pack: &PackDefinition) -> Result<PackUpsertSummary, StoreError> {
        let mut tx = PgPackTx(self.begin().await?);
        // Two loaders writing the same new pack would both see it missing; the second
        // would then fail on the unique ref instead of waiting and finding it unchanged.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("attune.pack:{}", pack.r#ref))
            .execute(&mut *tx.0)
            .await
            .map_err(store_error)?;
        let summary = pack::upsert(&mut tx, pack).await?;
        tx.0.commit().await.map_err(store_error)?;
        Ok(summary)
    }
}

/// A PostgreSQL transaction seen by the shared pack writer. Dropping it uncommitted rolls
/// it back.
struct PgPackTx(Transaction<'static, Postgres>);

impl PgPackTx {
    async fn optional<T>(
        &mut self,
        sql: &str,
        key: &str,
        map: fn(&PgRow) -> Result<T, sqlx::Error>,
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
            .bind(now)
            .execute(&mut *self.0)
            .await
            .map_err(store_error)?;
        Ok(())
    }
}

#[async_trait]
impl PackTx for PgPackTx {
    async fn pack_by_ref(&mut self, pack_ref: &str) -> Result<Option<PackRow>, StoreError> {
        self.optional(
            "SELECT id, ref, label, description, version, created, updated \
             FROM attune.pack WHERE ref = $1 FOR UPDATE",
            pack_ref,
            pack_from_row,
        )
        .await
    }

    async fn insert_pack(&mut self, pack: &PackRow) -> Result<Id, StoreError> {
        sqlx::query_scalar(
            "INSERT INTO attune.pack (ref, label, description, version, created, updated) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(&pack.r#ref)
        .bind(&pack.label)
        .bind(&pack.description)
        .bind(&pack.version)
        .bind(pack.created)
        .bind(pack.updated)
        .fetch_one(&mut *self.0)
        .await
        .map_err(store_error)
    }

    async fn update_pack(&mut self, pack: &PackRow) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE attune.pack SET label = $2, description = $3, version = $4, updated = $5 \
             WHERE id = $1",
        )
        .bind(pack.id)
        .bind(&pack.label)
        .bind(&pack.description)
        .bind(&pack.version)
        .bind(pack.updated)
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
        // The no-op update makes RETURNING yield the id whether the row is new or not.
        sqlx::query_scalar(
            "INSERT INTO attune.runtime (ref, label, created, updated) VALUES ($1, $1, $2, $2) \
             ON CONFLICT (ref) DO UPDATE SET ref = EXCLUDED.ref RETURNING id",
        )
        .bind(runtime_ref)
        .bind(now)
        .fetch_one(&mut *self.0)
        .await
        .map_err(store_error)
    }

    async fn action_id(&mut self, action_ref: &str) -> Result<Option<Id>, StoreError> {
        sqlx::query_scalar(r#"SELECT id FROM attune."action" WHERE ref = $1"#)
            .bind(action_ref)
            .fetch_optional(&mut *self.0)
            .await
            .map_err(store_error)
    }

    async fn trigger_by_ref(&mut self, trigger_ref: &str) -> Result<Option<Trigger>, StoreError> {
        self.optional(
            &format!(r#"SELECT {TRIGGER_COLUMNS} FROM attune."trigger" WHERE ref = $1"#),
            trigger_ref,
            trigger_from_row,
        )
        .await
    }

    async fn insert_trigger(&mut self, t: &Trigger) -> Result<Id, StoreError> {
        sqlx::query_scalar(
            r#"INSERT INTO attune."trigger" (ref, pack, pack_ref, label, description, enabled,
                   param_schema, payload_schema, created, updated)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id"#,
        )
        .bind(&t.r#ref)
        .bind(t.pack)
        .bind(&t.pack_ref)
        .bind(&t.label)
        .bind(&t.description)
        .bind(t.enabled)
        .bind(&t.param_schema)
        .bind(&t.payload_schema)
        .bind(t.created)
        .bind(t.updated)
        .fetch_one(&mut *self.0)
        .await
        .map_err(store_error)
    }

    async fn update_trigger(&mut self, t: &Trigger) -> Result<(), StoreError> {
        sqlx::query(
            r#"UPDATE attune."trigger" SET pack = $2, pack_ref = $3, label = $4,
                   description = $5, enabled = $6, param_schema = $7, payload_schema = $8,
                   updated = $9
               WHERE id = $1"#,
        )
        .bind(t.id)
        .bind(t.pack)
        .bind(&t.pack_ref)
        .bind(&t.label)
        .bind(&t.description)
        .bind(t.enabled)
        .bind(&t.param_schema)
        .bind(&t.payload_schema)
        .bind(t.updated)
        .execute(&mut *self.0)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn sensor_by_ref(&mut self, sensor_ref: &str) -> Result<Option<Sensor>, StoreError> {
        self.optional(
            &format!("SELECT {SENSOR_COLUMNS} FROM attune.sensor WHERE ref = $1"),
            sensor_ref,
            sensor_from_row,
        )
        .await
    }

    async fn insert_sensor(&mut self, s: &Sensor) -> Result<Id, StoreError> {
        sqlx::query_scalar(
            r#"INSERT INTO attune.sensor (ref, pack, pack_ref, label, description, entrypoint,
                   runtime, runtime_ref, "trigger", trigger_ref, enabled, poll_interval,
                   param_schema, config, created, updated, pack_path, mode, pass_env)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                   $17, $18, $19)
               RETURNING id"#,
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
        .bind(&s.param_schema)
        .bind(&s.config)
        .bind(s.created)
        .bind(s.updated)
        .bind(&s.pack_path)
        .bind(&s.mode)
        .bind(serde_json::json!(s.pass_env))
        .fetch_one(&mut *self.0)
        .await
        .map_err(store_error)
    }

    async fn update_sensor(&mut self, s: &Sensor) -> Result<(), StoreError> {
        sqlx::query(
            r#"UPDATE attune.sensor SET pack = $2, pack_ref = $3, label = $4, description = $5,
                   entrypoint = $6, runtime = $7, runtime_ref = $8, "trigger" = $9,
                   trigger_ref = $10, enabled = $11, poll_interval = $12, param_schema = $13,
                   config = $14, updated = $15, pack_path = $16, mode = $17, pass_env = $18
               WHERE id = $1"#,
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
        .bind(&s.param_schema)
        .bind(&s.config)
        .bind(s.updated)
        .bind(&s.pack_path)
        .bind(&s.mode)
        .bind(serde_json::json!(s.pass_env))
        .execute(&mut *self.0)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn rule_by_ref(&mut self, rule_ref: &str) -> Result<Option<Rule>, StoreError> {
        self.optional(
            &format!("SELECT {RULE_COLUMNS} FROM attune.rule WHERE ref = $1"),
            rule_ref,
            rule_from_row,
        )
        .await
    }

    async fn insert_rule(&mut self, r: &Rule) -> Result<Id, StoreError> {
        sqlx::query_scalar(
            r#"INSERT INTO attune.rule (ref, pack, pack_ref, label, description, "action",
                   action_ref, "trigger", trigger_ref, conditions, enabled, created, updated)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id"#,
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
        .bind(&r.conditions)
        .bind(r.enabled)
        .bind(r.created)
        .bind(r.updated)
        .fetch_one(&mut *self.0)
        .await
        .map_err(store_error)
    }

    async fn update_rule(&mut self, r: &Rule) -> Result<(), StoreError> {
        sqlx::query(
            r#"UPDATE attune.rule SET pack = $2, pack_ref = $3, label = $4, description = $5,
                   "action" = $6, action_ref = $7, "trigger" = $8, trigger_ref = $9,
                   conditions = $10, enabled = $11, updated = $12
               WHERE id = $1"#,
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
        .bind(&r.conditions)
        .bind(r.enabled)
        .bind(r.updated)
        .execute(&mut *self.0)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn enabled_pack_sensors(&mut self, pack: Id) -> Result<Vec<(Id, String)>, StoreError> {
        self.refs_of_pack(
            "SELECT id, ref FROM attune.sensor WHERE pack = $1 AND enabled ORDER BY id",
            pack,
        )
        .await
    }

    async fn enabled_pack_rules(&mut self, pack: Id) -> Result<Vec<(Id, String)>, StoreError> {
        self.refs_of_pack(
            "SELECT id, ref FROM attune.rule WHERE pack = $1 AND enabled ORDER BY id",
            pack,
        )
        .await
    }

    async fn disable_sensor(&mut self, id: Id, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.disable(
            "UPDATE attune.sensor SET enabled = false, updated = $2 WHERE id = $1",
            id,
            now,
        )
        .await
    }

    async fn disable_rule(&mut self, id: Id, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.disable(
            "UPDATE attune.rule SET enabled = false, updated = $2 WHERE id = $1",
            id,
            now,
        )
        .await
    }
}
