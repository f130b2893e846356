//! The stored rows, written once for both backends: the columns each statement selects,
//! how a row becomes a domain value, and the values a batch writer hands back.
//!
//! Mappers read columns through [`StoredRow`], one getter per kind of column. It is
//! implemented once for any sqlx row whose database decodes those kinds, so PostgreSQL
//! (`jsonb`, `timestamptz`, `boolean`) and SQLite (JSON text, RFC 3339 text, 0/1) share a
//! single decode path: sqlx already maps each native representation onto `Value`,
//! `DateTime<Utc>` and `bool`.

use attune_actors::domain::{
    Enforcement, Event, Id, OutboxMessage, ParkedMessage, Rule, Sensor, Trigger,
};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{ColumnIndex, Database, Decode, Row, Type};

use super::pack::PackRow;

pub(crate) const TRIGGER_COLUMNS: &str = r#"id, ref, pack, pack_ref, label, description, enabled,
    param_schema, payload_schema, validate_payloads, dedup, created, updated"#;
pub(crate) const SENSOR_COLUMNS: &str = r#"id, ref, pack, pack_ref, label, description,
    entrypoint, runtime, runtime_ref, "trigger", trigger_ref, enabled, poll_interval,
    param_schema, config, pack_path, mode, pass_env, code_digest, dedup, placement, created,
    updated"#;
pub(crate) const RULE_COLUMNS: &str = r#"id, ref, pack, pack_ref, label, description, "action",
    action_ref, "trigger", trigger_ref, conditions, action_params, throttle, enabled, created,
    updated"#;
pub(crate) const EVENT_COLUMNS: &str = r#"id, "trigger", trigger_ref, config, payload, source,
    source_ref, created, CAST(message_id AS TEXT) AS message_id, traceparent"#;
pub(crate) const ENFORCEMENT_COLUMNS: &str = r#"id, rule, rule_ref, trigger_ref, event, status,
    payload, condition, conditions, created, CAST(correlation_id AS TEXT) AS correlation_id,
    traceparent, action_ref, action_params, error, throttle"#;
pub(crate) const PACK_COLUMNS: &str = "id, ref, label, description, version, created, updated";
/// Read from the pending rows (`p`) joined to their outbox rows (`o`). The message id is
/// `uuid` on PostgreSQL and text on SQLite: read as text, both decode one way. The body is
/// text on both, the service's own, and goes out as written.
pub(crate) const OUTBOX_COLUMNS: &str = "o.id, CAST(o.message_id AS TEXT) AS message_id, \
    o.message_type, o.routing_key, o.body, \
    CAST(p.attempts AS BIGINT) AS attempts";
pub(crate) const PARKED_COLUMNS: &str = "o.id, CAST(o.message_id AS TEXT) AS message_id, \
    o.message_type, o.routing_key, CAST(p.attempts AS BIGINT) AS attempts, p.last_error, \
    o.created, p.parked_at";

/// The kinds of column the schema has, read from a row by name.
pub(crate) trait StoredRow {
    fn int(&self, column: &str) -> Result<i64, sqlx::Error>;
    fn opt_int(&self, column: &str) -> Result<Option<i64>, sqlx::Error>;
    fn text(&self, column: &str) -> Result<String, sqlx::Error>;
    fn opt_text(&self, column: &str) -> Result<Option<String>, sqlx::Error>;
    fn flag(&self, column: &str) -> Result<bool, sqlx::Error>;
    fn json(&self, column: &str) -> Result<Value, sqlx::Error>;
    fn opt_json(&self, column: &str) -> Result<Option<Value>, sqlx::Error>;
    fn time(&self, column: &str) -> Result<DateTime<Utc>, sqlx::Error>;
    fn opt_time(&self, column: &str) -> Result<Option<DateTime<Utc>>, sqlx::Error>;
}

/// A type a row of `DB` decodes into.
pub(crate) trait Decoded<DB: Database>: for<'r> Decode<'r, DB> + Type<DB> {}

impl<DB: Database, T: for<'r> Decode<'r, DB> + Type<DB>> Decoded<DB> for T {}

impl<R> StoredRow for R
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    i64: Decoded<R::Database>,
    String: Decoded<R::Database>,
    bool: Decoded<R::Database>,
    Value: Decoded<R::Database>,
    DateTime<Utc>: Decoded<R::Database>,
{
    fn int(&self, column: &str) -> Result<i64, sqlx::Error> {
        self.try_get(column)
    }
    fn opt_int(&self, column: &str) -> Result<Option<i64>, sqlx::Error> {
        self.try_get(column)
    }
    fn text(&self, column: &str) -> Result<String, sqlx::Error> {
        self.try_get(column)
    }
    fn opt_text(&self, column: &str) -> Result<Option<String>, sqlx::Error> {
        self.try_get(column)
    }
    fn flag(&self, column: &str) -> Result<bool, sqlx::Error> {
        self.try_get(column)
    }
    fn json(&self, column: &str) -> Result<Value, sqlx::Error> {
        self.try_get(column)
    }
    fn opt_json(&self, column: &str) -> Result<Option<Value>, sqlx::Error> {
        self.try_get(column)
    }
    fn time(&self, column: &str) -> Result<DateTime<Utc>, sqlx::Error> {
        self.try_get(column)
    }
    fn opt_time(&self, column: &str) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        self.try_get(column)
    }
}

/// A JSON column holding a domain value (`dedup`, `throttle`); one that does not decode
/// is an error naming the column, not a silent `None`.
fn typed<T: serde::de::DeserializeOwned>(
    row: &impl StoredRow,
    column: &str,
) -> Result<Option<T>, sqlx::Error> {
    row.opt_json(column)?
        .map(|value| {
            serde_json::from_value(value).map_err(|e| sqlx::Error::ColumnDecode {
                index: column.to_owned(),
                source: Box::new(e),
            })
        })
        .transpose()
}

pub(crate) fn trigger(row: &impl StoredRow) -> Result<Trigger, sqlx::Error> {
    Ok(Trigger {
        id: row.int("id")?,
        r#ref: row.text("ref")?,
        pack: row.opt_int("pack")?,
        pack_ref: row.opt_text("pack_ref")?,
        label: row.text("label")?,
        description: row.opt_text("description")?,
        enabled: row.flag("enabled")?,
        param_schema: row.opt_json("param_schema")?,
        payload_schema: row.opt_json("payload_schema")?,
        validate_payloads: row.flag("validate_payloads")?,
        dedup: typed(row, "dedup")?,
        created: row.time("created")?,
        updated: row.time("updated")?,
    })
}

pub(crate) fn sensor(row: &impl StoredRow) -> Result<Sensor, sqlx::Error> {
    Ok(Sensor {
        id: row.int("id")?,
        r#ref: row.text("ref")?,
        pack: row.opt_int("pack")?,
        pack_ref: row.opt_text("pack_ref")?,
        label: row.text("label")?,
        description: row.opt_text("description")?,
        entrypoint: row.text("entrypoint")?,
        runtime: row.opt_int("runtime")?,
        runtime_ref: row.text("runtime_ref")?,
        trigger: row.int("trigger")?,
        trigger_ref: row.text("trigger_ref")?,
        enabled: row.flag("enabled")?,
        poll_interval: row.opt_int("poll_interval")?,
        param_schema: row.opt_json("param_schema")?,
        config: row.json("config")?,
        pack_path: row.opt_text("pack_path")?,
        mode: row.opt_text("mode")?,
        // A JSON array of strings; anything else reads as empty.
        pass_env: serde_json::from_value(row.json("pass_env")?).unwrap_or_default(),
        code_digest: row.opt_text("code_digest")?,
        dedup: typed(row, "dedup")?,
        placement: typed(row, "placement")?.unwrap_or_default(),
        created: row.time("created")?,
        updated: row.time("updated")?,
    })
}

pub(crate) fn rule(row: &impl StoredRow) -> Result<Rule, sqlx::Error> {
    Ok(Rule {
        id: row.int("id")?,
        r#ref: row.text("ref")?,
        pack: row.opt_int("pack")?,
        pack_ref: row.opt_text("pack_ref")?,
        label: row.text("label")?,
        description: row.opt_text("description")?,
        action: row.opt_int("action")?,
        action_ref: row.text("action_ref")?,
        trigger: row.int("trigger")?,
        trigger_ref: row.text("trigger_ref")?,
        conditions: row.json("conditions")?,
        action_params: row.opt_json("action_params")?,
        throttle: typed(row, "throttle")?,
        enabled: row.flag("enabled")?,
        created: row.time("created")?,
        updated: row.time("updated")?,
    })
}

pub(crate) fn event(row: &impl StoredRow) -> Result<Event, sqlx::Error> {
    Ok(Event {
        id: row.int("id")?,
        trigger: row.opt_int("trigger")?,
        trigger_ref: row.text("trigger_ref")?,
        config: row.json("config")?,
        payload: row.json("payload")?,
        source: row.opt_int("source")?,
        source_ref: row.opt_text("source_ref")?,
        created: row.time("created")?,
        message_id: opt_uuid(row, "message_id")?,
        traceparent: row.opt_text("traceparent")?,
    })
}

pub(crate) fn enforcement(row: &impl StoredRow) -> Result<Enforcement, sqlx::Error> {
    Ok(Enforcement {
        id: row.int("id")?,
        rule: row.int("rule")?,
        rule_ref: row.text("rule_ref")?,
        trigger_ref: row.text("trigger_ref")?,
        event: row.int("event")?,
        status: row.text("status")?,
        payload: row.json("payload")?,
        condition: row.text("condition")?,
        conditions: row.json("conditions")?,
        created: row.time("created")?,
        correlation_id: opt_uuid(row, "correlation_id")?,
        traceparent: row.opt_text("traceparent")?,
        action_ref: row.opt_text("action_ref")?.unwrap_or_default(),
        action_params: row.opt_json("action_params")?,
        error: row.opt_text("error")?,
        throttle: typed(row, "throttle")?,
    })
}

pub(crate) fn pack(row: &impl StoredRow) -> Result<PackRow, sqlx::Error> {
    Ok(PackRow {
        id: row.int("id")?,
        r#ref: row.text("ref")?,
        label: row.text("label")?,
        description: row.opt_text("description")?,
        version: row.text("version")?,
        created: row.time("created")?,
        updated: row.time("updated")?,
    })
}

pub(crate) fn outbox(row: &impl StoredRow) -> Result<OutboxMessage, sqlx::Error> {
    Ok(OutboxMessage {
        id: row.int("id")?,
        message_id: message_id(row)?,
        message_type: row.text("message_type")?,
        routing_key: row.text("routing_key")?,
        body: row.text("body")?,
        attempts: attempts(row)?,
    })
}

pub(crate) fn parked(row: &impl StoredRow) -> Result<ParkedMessage, sqlx::Error> {
    Ok(ParkedMessage {
        id: row.int("id")?,
        message_id: message_id(row)?,
        message_type: row.text("message_type")?,
        routing_key: row.text("routing_key")?,
        attempts: attempts(row)?,
        last_error: row.opt_text("last_error")?,
        created: row.time("created")?,
        parked_at: row.time("parked_at")?,
    })
}

fn message_id(row: &impl StoredRow) -> Result<uuid::Uuid, sqlx::Error> {
    parse_uuid("message_id", &row.text("message_id")?)
}

fn opt_uuid(row: &impl StoredRow, column: &str) -> Result<Option<uuid::Uuid>, sqlx::Error> {
    row.opt_text(column)?
        .map(|text| parse_uuid(column, &text))
        .transpose()
}

fn parse_uuid(column: &str, text: &str) -> Result<uuid::Uuid, sqlx::Error> {
    uuid::Uuid::parse_str(text).map_err(|e| sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: Box::new(e),
    })
}

fn attempts(row: &impl StoredRow) -> Result<u32, sqlx::Error> {
    Ok(u32::try_from(row.int("attempts")?).unwrap_or(u32::MAX))
}

/// `(id, ref)` of a row.
pub(crate) fn id_and_ref(row: &impl StoredRow) -> Result<(Id, String), sqlx::Error> {
    Ok((row.int("id")?, row.text("ref")?))
}
