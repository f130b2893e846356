//! The [`Store`] port on PostgreSQL (schema `attune`).
//!
//! Batches are written in two round trips whatever their size: ids are preallocated from
//! the sequences in one query, then one statement inserts the rows, their outbox rows and
//! their pending rows (`INSERT ... SELECT FROM UNNEST(...)` with explicit ids, chained as
//! data-modifying `WITH` clauses). Explicit ids make the mapping from input position to row
//! exact, which the outbox needs (its order is publish order) and which `RETURNING` on a
//! multi-row insert does not promise; they also let each message, which names its row's id,
//! be written before the statement runs. JSON documents are sent as the text serialized
//! once for both the row and its message (`documents`).
//!
//! Everything else (the reads, the pack writer, the single-row writes) is the shared SQL
//! of `queries` and `pack_tx`, run here with the `attune.` schema prefix.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use attune_actors::domain::{Enforcement, Event, Id, NewEnforcement, NewEvent};
use attune_actors::ports::StoreError;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection, PgConnection, Pool, Postgres, Transaction};

use super::adapter::{Adapter, impl_store};
use super::documents::{EnforcementDocuments, EventDocuments, RuleConditions};
use super::queries::Queries;
use super::rows::{self, ENFORCEMENT_COLUMNS};
use super::{OutboxDraft, Redactor, StoreOptions, dedup_enforcements, store_error};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// PostgreSQL adapter. Cheap to clone (it is a connection pool).
/// The longest a transaction may wait for its client between statements.
const IDLE_IN_TRANSACTION_MAX: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    deadline: Duration,
    instance: String,
}

/// Points a TLS failure at the URL parameters that cause it: the driver's message names
/// neither (e.g. "invalid peer certificate: UnknownIssuer").
fn tls_hint(error: &sqlx::Error) -> &'static str {
    let text = error.to_string().to_ascii_lowercase();
    if matches!(error, sqlx::Error::Tls(_))
        || text.contains("certificate")
        || text.contains("tls")
        || text.contains("ssl")
    {
        " (TLS: check sslmode, sslrootcert and that the server's certificate names the host in database.url)"
    } else {
        ""
    }
}

impl PgStore {
    /// Connects to `url` (`postgres://user:password@host:port/database`) and runs the
    /// migrations. A database that cannot be reached is [`StoreError::Unavailable`]; the
    /// password never appears in an error.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, StoreOptions::default()).await
    }

    /// [`connect`](Self::connect) with options.
    pub async fn connect_with(url: &str, store_options: StoreOptions) -> Result<Self, StoreError> {
        let redactor = Redactor::for_url(url);
        let deadline = store_options.statement_timeout;
        let options: PgConnectOptions = url.parse().map_err(|e: sqlx::Error| {
            StoreError::Invalid(redactor.clean(format!("bad PostgreSQL URL: {e}")))
        })?;
        // A single connection first, so that a server that is down fails `connect` at once
        // (a pool would keep retrying until its acquire timeout); callers retry on
        // `Unavailable`. The same connection runs the migrations, then is closed.
        let mut conn = PgConnection::connect_with(&options).await.map_err(|e| {
            let hint = tls_hint(&e);
            match redactor.error(e) {
                StoreError::Unavailable(m) | StoreError::Other(m) | StoreError::Invalid(m) => {
                    StoreError::Unavailable(format!("cannot connect to PostgreSQL: {m}{hint}"))
                }
                fenced @ StoreError::Fenced { .. } => fenced,
            }
        })?;
        let migrated = run_migrations(&mut conn).await;
        let _ = conn.close().await;
        migrated.map_err(|e| match e {
            StoreError::Unavailable(m) => StoreError::Unavailable(redactor.clean(m)),
            StoreError::Invalid(m) | StoreError::Other(m) => StoreError::Other(redactor.clean(m)),
            fenced @ StoreError::Fenced { .. } => fenced,
        })?;
        // The server ends a statement that runs too long even when this side has given up
        // on it, so a stuck query does not hold locks after its caller moved on. Set per
        // pooled connection rather than as a startup option, which poolers such as
        // PgBouncer refuse; the migration connection above runs without it.
        // A transaction left open by a paused or cut-off instance would hold its row locks
        // (a sensor lease's, a throttle window's) until it resumed: the server ends it.
        // Every transaction here sends its statements back to back, so one idle for
        // seconds belongs to a paused or starved process: it is ended sooner than a slow
        // statement, so its locks do not outlast a lease's failover.
        let set_timeout = format!(
            "SET statement_timeout = {ms}; SET idle_in_transaction_session_timeout = {idle}",
            ms = deadline.as_millis(),
            idle = deadline.min(IDLE_IN_TRANSACTION_MAX).as_millis()
        );
        let pool = PgPoolOptions::new()
            .after_connect(move |conn, _meta| {
                let set_timeout = set_timeout.clone();
                Box::pin(async move {
                    if let Err(error) = sqlx::Executor::execute(&mut *conn, set_timeout.as_str()).await {
                        tracing::warn!(%error, "cannot set statement_timeout and idle_in_transaction_session_timeout on a database connection; only the client-side deadline applies");
                    }
                    Ok(())
                })
            })
            .max_connections(8)
            // Past every call's bound, so that bound (whose error names the setting) is
            // what a caller sees when the server hangs.
            .acquire_timeout(super::adapter::commit_deadline(deadline) + Duration::from_secs(1))
            .connect_lazy_with(options);
        Ok(Self {
            pool,
            deadline,
            instance: store_options.instance,
        })
    }

    /// Wraps an existing pool (migrations are not run).
    pub fn from_pool(pool: PgPool) -> Self {
        Self {
            pool,
            deadline: StoreOptions::default().statement_timeout,
            instance: StoreOptions::default().instance,
        }
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
}

/// A batch's outbox rows as columns, one array per column, for `UNNEST`.
struct OutboxColumns<'a> {
    ids: &'a [Id],
    message_ids: Vec<uuid::Uuid>,
    types: Vec<&'static str>,
    keys: Vec<&'static str>,
    bodies: Vec<&'a str>,
}

impl<'a> OutboxColumns<'a> {
    /// `drafts[i]` gets `ids[i]`: the ids are ascending, so publish order is batch order.
    fn of(ids: &'a [Id], drafts: &'a [OutboxDraft]) -> Self {
        Self {
            ids: &ids[..drafts.len()],
            message_ids: drafts.iter().map(|d| d.message_id).collect(),
            types: drafts.iter().map(|d| d.message_type).collect(),
            keys: drafts.iter().map(|d| d.routing_key).collect(),
            bodies: drafts.iter().map(|d| d.body.as_str()).collect(),
        }
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

impl_store!(PgStore);

#[async_trait]
impl Adapter for PgStore {
    type Db = Postgres;

    fn reader(&self) -> &Pool<Postgres> {
        &self.pool
    }

    fn writer(&self) -> &Pool<Postgres> {
        &self.pool
    }

    fn deadline(&self) -> Duration {
        self.deadline
    }

    fn instance(&self) -> &str {
        &self.instance
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        self.begin().await
    }

    async fn insert_events(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        events: Vec<NewEvent>,
        created: DateTime<Utc>,
    ) -> Result<Vec<Event>, StoreError> {
        let (ids, outbox_ids) = Self::preallocate(
            tx,
            "attune.event_id_seq",
            "attune.outbox_id_seq",
            events.len(),
        )
        .await?;
        let sent = Utc::now();
        let mut documents = Vec::with_capacity(events.len());
        let mut drafts = Vec::with_capacity(events.len());
        let mut stored = Vec::with_capacity(events.len());
        for (new, id) in events.into_iter().zip(&ids) {
            let serialized = EventDocuments::of(&new)?;
            let event = new.stored(*id, created);
            drafts.push(serialized.message(&event, sent));
            documents.push(serialized);
            stored.push(event);
        }

        let triggers: Vec<Option<Id>> = stored.iter().map(|e| e.trigger).collect();
        let trigger_refs: Vec<&str> = stored.iter().map(|e| e.trigger_ref.as_str()).collect();
        let configs: Vec<&str> = documents.iter().map(|d| d.config.get()).collect();
        let payloads: Vec<&str> = documents.iter().map(|d| d.payload.get()).collect();
        let sources: Vec<Option<Id>> = stored.iter().map(|e| e.source).collect();
        let source_refs: Vec<Option<&str>> =
            stored.iter().map(|e| e.source_ref.as_deref()).collect();
        let message_ids: Vec<Option<uuid::Uuid>> = stored.iter().map(|e| e.message_id).collect();
        let traceparents: Vec<Option<&str>> =
            stored.iter().map(|e| e.traceparent.as_deref()).collect();
        let outbox = OutboxColumns::of(&outbox_ids, &drafts);
        // One statement for the events, their outbox rows and their pending rows: one
        // round trip, and the documents travel as the text already serialized for the
        // messages.
        sqlx::query(
            r#"WITH e AS (
                   INSERT INTO attune.event
                       (id, "trigger", trigger_ref, config, payload, source, source_ref,
                        created, message_id, traceparent, stored_by)
                   SELECT id, "trigger", trigger_ref, config::jsonb, payload::jsonb, source,
                          source_ref, $8, message_id, traceparent, $11
                   FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[],
                               $6::bigint[], $7::text[], $9::uuid[], $10::text[])
                        AS u(id, "trigger", trigger_ref, config, payload, source, source_ref,
                             message_id, traceparent)
               ),
               o AS (
                   INSERT INTO attune.outbox
                       (id, message_id, message_type, routing_key, body, created)
                   SELECT id, message_id, message_type, routing_key, body, $8
                   FROM UNNEST($12::bigint[], $13::uuid[], $14::text[], $15::text[],
                               $16::text[])
                        AS o(id, message_id, message_type, routing_key, body)
                   RETURNING id
               )
               INSERT INTO attune.outbox_pending (id) SELECT id FROM o"#,
        )
        .bind(&ids)
        .bind(triggers)
        .bind(trigger_refs)
        .bind(configs)
        .bind(payloads)
        .bind(sources)
        .bind(source_refs)
        .bind(created)
        .bind(message_ids)
        .bind(traceparents)
        .bind(&self.instance)
        .bind(outbox.ids)
        .bind(&outbox.message_ids)
        .bind(&outbox.types)
        .bind(&outbox.keys)
        .bind(&outbox.bodies)
        .execute(&mut **tx)
        .await
        .map_err(store_error)?;
        Ok(stored)
    }

    async fn insert_enforcements(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        enforcements: Vec<NewEnforcement>,
        created: DateTime<Utc>,
    ) -> Result<Vec<Enforcement>, StoreError> {
        let deduped = dedup_enforcements(&enforcements);
        let (ids, outbox_ids) = Self::preallocate(
            tx,
            "attune.enforcement_id_seq",
            "attune.outbox_id_seq",
            deduped.unique.len(),
        )
        .await?;
        let sent = Utc::now();
        // The unique indexes are distinct: each first occurrence is moved out once.
        let mut enforcements: Vec<Option<NewEnforcement>> =
            enforcements.into_iter().map(Some).collect();
        let mut documents = Vec::with_capacity(ids.len());
        let mut drafts = Vec::with_capacity(ids.len());
        let mut candidates = Vec::with_capacity(ids.len());
        let mut conditions = RuleConditions::default();
        let mut condition_sets = Vec::with_capacity(ids.len());
        for (index, id) in deduped.unique.iter().zip(&ids) {
            let Some(new) = enforcements.get_mut(*index).and_then(Option::take) else {
                return Err(StoreError::Other(format!(
                    "enforcement {index} of the batch taken twice"
                )));
            };
            let serialized = EnforcementDocuments::of(&new)?;
            condition_sets.push(conditions.text(new.rule, &new.conditions).to_owned());
            let enforcement = new.into_stored(*id, created);
            // Written only for the candidates inserted (see `RETURNING` below).
            drafts.push(serialized.message(&enforcement, sent));
            documents.push(serialized);
            candidates.push(enforcement);
        }

        let rules: Vec<Id> = candidates.iter().map(|e| e.rule).collect();
        let rule_refs: Vec<&str> = candidates.iter().map(|e| e.rule_ref.as_str()).collect();
        let trigger_refs: Vec<&str> = candidates.iter().map(|e| e.trigger_ref.as_str()).collect();
        let event_ids: Vec<Id> = candidates.iter().map(|e| e.event).collect();
        let payloads: Vec<&str> = documents.iter().map(|d| d.payload.get()).collect();
        let condition_names: Vec<&str> = candidates.iter().map(|e| e.condition.as_str()).collect();
        let correlation_ids: Vec<Option<uuid::Uuid>> =
            candidates.iter().map(|e| e.correlation_id).collect();
        let traceparents: Vec<Option<&str>> = candidates
            .iter()
            .map(|e| e.traceparent.as_deref())
            .collect();
        let statuses: Vec<&str> = candidates.iter().map(|e| e.status.as_str()).collect();
        let action_refs: Vec<&str> = candidates.iter().map(|e| e.action_ref.as_str()).collect();
        let action_params: Vec<Option<&str>> = documents
            .iter()
            .map(EnforcementDocuments::action_params_text)
            .collect();
        let errors: Vec<Option<&str>> = candidates.iter().map(|e| e.error.as_deref()).collect();
        let summaries: Vec<Option<&str>> = documents
            .iter()
            .map(EnforcementDocuments::summary_text)
            .collect();
        let outbox = OutboxColumns::of(&outbox_ids, &drafts);
        // One statement: the enforcements not stored yet, then the outbox and pending rows
        // of exactly those (a pair stored already keeps its one message).
        let inserted: HashSet<Id> = sqlx::query_scalar(
            r#"WITH u AS (
                   SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[],
                                        $5::bigint[], $6::text[], $7::text[], $10::text[],
                                        $11::uuid[], $12::text[], $8::text[], $13::text[],
                                        $14::text[], $15::text[], $16::text[], $17::bigint[],
                                        $18::uuid[], $19::text[], $20::text[], $21::text[])
                       AS u(id, rule, rule_ref, trigger_ref, event, payload, condition,
                            conditions, correlation_id, traceparent, status, action_ref,
                            action_params, error, throttle, outbox_id, message_id,
                            message_type, routing_key, body)
               ),
               inserted AS (
                   INSERT INTO attune.enforcement
                       (id, rule, rule_ref, trigger_ref, event, status, payload, condition,
                        conditions, created, correlation_id, traceparent, action_ref,
                        action_params, error, throttle)
                   SELECT id, rule, rule_ref, trigger_ref, event, status, payload::jsonb,
                          condition, conditions::jsonb, $9, correlation_id, traceparent,
                          action_ref, action_params::jsonb, error, throttle::jsonb
                   FROM u
                   ON CONFLICT (rule, event) DO NOTHING
                   RETURNING id
               ),
               o AS (
                   INSERT INTO attune.outbox
                       (id, message_id, message_type, routing_key, body, created)
                   SELECT u.outbox_id, u.message_id, u.message_type, u.routing_key, u.body, $9
                   FROM u JOIN inserted ON inserted.id = u.id
                   RETURNING id
               ),
               p AS (INSERT INTO attune.outbox_pending (id) SELECT id FROM o)
               SELECT id FROM inserted"#,
        )
        .bind(&ids)
        .bind(&rules)
        .bind(rule_refs)
        .bind(trigger_refs)
        .bind(&event_ids)
        .bind(payloads)
        .bind(condition_names)
        .bind(statuses)
        .bind(created)
        .bind(&condition_sets)
        .bind(correlation_ids)
        .bind(traceparents)
        .bind(action_refs)
        .bind(action_params)
        .bind(errors)
        .bind(summaries)
        .bind(outbox.ids)
        .bind(&outbox.message_ids)
        .bind(&outbox.types)
        .bind(&outbox.keys)
        .bind(&outbox.bodies)
        .fetch_all(&mut **tx)
        .await
        .map_err(store_error)?
        .into_iter()
        .collect();

        let mut results = candidates;
        if inserted.len() < results.len() {
            // Pairs that already existed keep their stored row (and their one message).
            let existing = Queries::<Postgres>::all(
                &mut **tx,
                sqlx::query(&format!(
                    "SELECT {ENFORCEMENT_COLUMNS} FROM attune.enforcement
                     WHERE (rule, event) IN (SELECT * FROM UNNEST($1::bigint[], $2::bigint[]))"
                ))
                .bind(&rules)
                .bind(&event_ids),
                rows::enforcement,
            )
            .await?;
            let existing: HashMap<(Id, Id), Enforcement> = existing
                .into_iter()
                .filter(|e| !inserted.contains(&e.id))
                .map(|e| ((e.rule, e.event), e))
                .collect();
            for result in results.iter_mut().filter(|r| !inserted.contains(&r.id)) {
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
        Ok(deduped.spread(results))
    }

    async fn write_published(&self, ids: &[Id]) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM attune.outbox_pending WHERE id = ANY($1)")
            .bind(ids)
            // Planned anew for each batch, for the table as it is now. A prepared statement
            // keeps the generic plan it chose while the table was small, until the table is
            // next analyzed: here a sequential scan of every pending row per mark, slower with
            // every row added (with autovacuum off, for good).
            .persistent(false)
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn begin_pack(
        &self,
        pack_ref: &str,
    ) -> Result<Transaction<'static, Postgres>, StoreError> {
        let mut tx = self.begin().await?;
        // Two loaders writing the same new pack would both see it missing; the second
        // would then fail on the unique ref instead of waiting and finding it unchanged.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("attune.pack:{pack_ref}"))
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        Ok(tx)
    }
}
