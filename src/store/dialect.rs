//! What differs between the two SQL dialects the shared statements are written in: where
//! the tables live, row locks, and how a timestamp is stored.
//!
//! Placeholders need no rendering: every statement uses PostgreSQL's `$1, $2, ...`, which
//! SQLite reads as parameters named `$1`, `$2` and sqlx binds by that number (a name used
//! twice is one parameter, as on PostgreSQL). JSON needs nothing either: sqlx encodes a
//! `serde_json::Value` as jsonb on PostgreSQL and as serde's text on SQLite, and decodes
//! both back, so rows read and write JSON columns with the plain `Value`.

use chrono::{DateTime, Utc};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo};
use sqlx::sqlite::{SqliteArgumentValue, SqliteTypeInfo};
use sqlx::{Database, Encode, Postgres, Sqlite, Type};

/// A database the shared statements run on.
pub(crate) trait Backend: Database {
    const DIALECT: Dialect;

    /// How many rows a statement changed (sqlx has no common trait for it).
    fn rows_affected(done: &Self::QueryResult) -> u64;
}

impl Backend for Postgres {
    const DIALECT: Dialect = Dialect {
        schema: "attune.",
        lock_read_rows: " FOR UPDATE",
        json_texts: "SELECT jsonb_array_elements_text($1)",
        // `OFFSET 0` keeps the subquery from being flattened into a join the planner may
        // hash: sized for the limit rather than the few rows waiting, a hash join over a
        // sequential scan of the whole outbox looked cheaper than a lookup per row.
        lookup_by_id: "CROSS JOIN LATERAL (SELECT * FROM {table} WHERE id = {of}.id OFFSET 0) AS {alias}",
        prepare_growing_reads: false,
    };

    fn rows_affected(done: &Self::QueryResult) -> u64 {
        done.rows_affected()
    }
}

impl Backend for Sqlite {
    // SQLite has no row locks: its write transactions hold the database's write lock
    // from `BEGIN IMMEDIATE` on, so what they read cannot change under them.
    const DIALECT: Dialect = Dialect {
        schema: "",
        lock_read_rows: "",
        json_texts: "SELECT value FROM json_each($1)",
        // SQLite joins by nested loops only: this is a lookup by primary key per row.
        lookup_by_id: "JOIN {table} AS {alias} ON {alias}.id = {of}.id",
        // Without ANALYZE, SQLite plans by the schema alone, not by how big the tables
        // were when the statement was prepared.
        prepare_growing_reads: true,
    };

    fn rows_affected(done: &Self::QueryResult) -> u64 {
        done.rows_affected()
    }
}

/// The SQL text that differs between the backends.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dialect {
    /// Prefix of every table: PostgreSQL keeps them in the `attune` schema so the database
    /// can be shared with other services; a SQLite file is ours alone.
    schema: &'static str,
    /// Appended to a `SELECT` inside a write transaction whose rows it will update.
    lock_read_rows: &'static str,
    /// A subquery yielding the strings of the JSON array bound as `$1` (a `Value`, which
    /// is `jsonb` on PostgreSQL and text on SQLite), one row each.
    json_texts: &'static str,
    /// Joins to each row of `{of}` the row of `{table}` with its id, as `{alias}`, one
    /// primary key lookup per row whatever the statistics say.
    lookup_by_id: &'static str,
    /// Whether reads over tables that grow and shrink quickly (the outbox's) may keep
    /// their prepared statement: PostgreSQL keeps the generic plan it chose for a
    /// statement's first runs, costed for the tables as they were then.
    prepare_growing_reads: bool,
}

impl Dialect {
    /// The qualified (and where needed quoted) name of a table.
    pub(crate) fn table(self, table: Table) -> String {
        format!("{}{}", self.schema, table.name())
    }

    pub(crate) fn lock_read_rows(self) -> &'static str {
        self.lock_read_rows
    }

    /// See `lookup_by_id`: the row of `table` with the id of each row of `of`, as `alias`.
    pub(crate) fn lookup_by_id(self, table: Table, of: &str, alias: &str) -> String {
        self.lookup_by_id
            .replace("{table}", &self.table(table))
            .replace("{of}", of)
            .replace("{alias}", alias)
    }

    pub(crate) fn prepare_growing_reads(self) -> bool {
        self.prepare_growing_reads
    }

    pub(crate) fn json_texts(self) -> &'static str {
        self.json_texts
    }
}

/// The tables of the schema (both migrations create the same ones).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Table {
    Pack,
    Runtime,
    Trigger,
    Sensor,
    Action,
    Rule,
    Event,
    Enforcement,
    Outbox,
    OutboxPending,
    OutboxParked,
    SensorState,
    MatcherWatermark,
    IdempotencyKey,
    RuleThrottle,
    Instance,
    Lease,
    SensorCommand,
    ClusterReload,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Self::Pack => "pack",
            Self::Runtime => "runtime",
            // Reserved words in both dialects.
            Self::Trigger => r#""trigger""#,
            Self::Action => r#""action""#,
            Self::Sensor => "sensor",
            Self::Rule => "rule",
            Self::Event => "event",
            Self::Enforcement => "enforcement",
            Self::Outbox => "outbox",
            Self::OutboxPending => "outbox_pending",
            Self::OutboxParked => "outbox_parked",
            Self::SensorState => "sensor_state",
            Self::MatcherWatermark => "matcher_watermark",
            Self::IdempotencyKey => "idempotency_key",
            Self::RuleThrottle => "rule_throttle",
            Self::Instance => "instance",
            Self::Lease => "lease",
            Self::SensorCommand => "sensor_command",
            Self::ClusterReload => "cluster_reload",
        }
    }
}

/// A timestamp as bound to a statement: `timestamptz` on PostgreSQL; on SQLite
/// fixed-width UTC text (`2024-01-02T03:04:05.678901Z`, see its migration) so that text
/// order is time order. sqlx's own SQLite encoding drops trailing zero digits and writes
/// `+00:00`, which would break that order.
///
/// Reading needs no such type: sqlx decodes `DateTime<Utc>` from `timestamptz` and from
/// RFC 3339 text alike.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stamp(pub DateTime<Utc>);

impl Stamp {
    /// The text SQLite stores.
    pub(crate) fn text(self) -> String {
        self.0.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
    }
}

impl Type<Postgres> for Stamp {
    fn type_info() -> PgTypeInfo {
        <DateTime<Utc> as Type<Postgres>>::type_info()
    }
}

impl Encode<'_, Postgres> for Stamp {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <DateTime<Utc> as Encode<'_, Postgres>>::encode_by_ref(&self.0, buf)
    }
}

impl Type<Sqlite> for Stamp {
    fn type_info() -> SqliteTypeInfo {
        <str as Type<Sqlite>>::type_info()
    }
}

impl Encode<'_, Sqlite> for Stamp {
    fn encode_by_ref(&self, buf: &mut Vec<SqliteArgumentValue<'_>>) -> Result<IsNull, BoxDynError> {
        Encode::<Sqlite>::encode(self.text(), buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn sqlite_stamps_are_fixed_width_utc() {
        let whole = Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).single();
        let whole = whole.map(|t| Stamp(t).text());
        assert_eq!(whole.as_deref(), Some("2024-01-02T03:04:05.000000Z"));
    }

    #[test]
    fn tables_carry_the_schema_and_quotes() {
        assert_eq!(
            Postgres::DIALECT.table(Table::Trigger),
            r#"attune."trigger""#
        );
        assert_eq!(Sqlite::DIALECT.table(Table::Event), "event");
    }
}
