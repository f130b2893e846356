//! Upgrading a database that holds an outbox backlog: migration 0016 moves the rows
//! waiting to be published (parked ones with their attempts and errors) into
//! `outbox_pending`, and nothing already published comes back; on PostgreSQL, 0017 keeps
//! each body, as text.

mod support {
    pub mod postgres;
}

use std::borrow::Cow;
use std::path::Path;

use attune_actors::ports::Store;
use sqlx::migrate::Migrator;
use sqlx::{Connection, Executor, PgConnection, SqliteConnection};

/// The migrations before the pending table.
const BEFORE_PENDING: i64 = 15;

async fn migrator_before_pending(dir: &str) -> Migrator {
    let mut migrator = Migrator::new(Path::new(dir))
        .await
        .expect("read the migrations");
    let kept: Vec<_> = migrator
        .migrations
        .iter()
        .filter(|m| m.version <= BEFORE_PENDING)
        .cloned()
        .collect();
    assert_eq!(
        kept.len() as i64,
        BEFORE_PENDING,
        "migrations 1 to 15 exist"
    );
    migrator.migrations = Cow::Owned(kept);
    migrator
}

/// Rows 1 (published), 2 (waiting, refused twice) and 3 (parked) in the old shape.
const OLD_ROWS: &str = "INSERT INTO {outbox} \
    (id, message_id, message_type, routing_key, body, created, published_at, attempts, last_error, parked_at) VALUES \
    (1, '00000000-0000-4000-8000-000000000001', 'EventCreated', 'event.created', '{}', {t}, {t}, 0, NULL, NULL), \
    (2, '00000000-0000-4000-8000-000000000002', 'EventCreated', 'event.created', '{\"b\": 1, \"a\": [1, 2]}', {t}, NULL, 2, 'nack', NULL), \
    (3, '00000000-0000-4000-8000-000000000003', 'EnforcementCreated', 'enforcement.created', '{}', {t}, NULL, 10, 'unroutable', {t})";

async fn assert_backlog_kept(store: &dyn Store) {
    let waiting = store.pending_outbox(0, 100).await.expect("pending");
    assert_eq!(
        waiting
            .iter()
            .map(|m| (m.id, m.attempts))
            .collect::<Vec<_>>(),
        [(2, 2)],
        "the waiting row, with its attempts"
    );
    // On PostgreSQL the body was jsonb before migration 0017 and is its text now.
    let body: serde_json::Value = serde_json::from_str(&waiting[0].body).expect("JSON body");
    assert_eq!(body, serde_json::json!({"b": 1, "a": [1, 2]}));
    assert_eq!(store.outbox_backlog().await.expect("backlog"), 1);
    let parked = store.parked_outbox(100).await.expect("parked");
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(
        (
            parked[0].id,
            parked[0].attempts,
            parked[0].last_error.as_deref()
        ),
        (3, 10, Some("unroutable"))
    );
    assert_eq!(store.parked_count().await.expect("parked count"), 1);
    // Publishing the waiting row leaves only the parked one unpublished.
    store.mark_published(&[2]).await.expect("mark");
    assert_eq!(store.outbox_backlog().await.expect("backlog"), 0);
    assert_eq!(store.retry_parked(None).await.expect("retry"), 1);
    let back = store.pending_outbox(0, 100).await.expect("pending");
    assert_eq!(back.iter().map(|m| m.id).collect::<Vec<_>>(), [3]);
}

#[tokio::test]
async fn sqlite_upgrade_keeps_the_outbox_backlog() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("old.db").display());
    {
        let mut old = SqliteConnection::connect(&format!("{url}?mode=rwc"))
            .await
            .expect("open");
        migrator_before_pending("migrations/sqlite")
            .await
            .run(&mut old)
            .await
            .expect("migrations 1 to 15");
        let rows = OLD_ROWS
            .replace("{outbox}", "outbox")
            .replace("{t}", "'2026-12-01T00:00:00.000000Z'");
        old.execute(rows.as_str()).await.expect("old rows");
        old.close().await.expect("close");
    }
    let store = attune_sensor::store::open(&url).await.expect("upgrade");
    assert_backlog_kept(store.as_ref()).await;
}

#[tokio::test]
async fn postgres_upgrade_keeps_the_outbox_backlog() {
    let db = support::postgres::TestDatabase::create().await;
    {
        let mut old = PgConnection::connect(&db.url).await.expect("connect");
        old.execute("CREATE SCHEMA attune; SET search_path TO attune")
            .await
            .expect("schema");
        migrator_before_pending("migrations/postgres")
            .await
            .run(&mut old)
            .await
            .expect("migrations 1 to 15");
        let rows = OLD_ROWS
            .replace("{outbox}", "attune.outbox")
            .replace("{t}", "'2026-12-01T00:00:00Z'");
        old.execute(rows.as_str()).await.expect("old rows");
        old.close().await.expect("close");
    }
    let store = attune_sensor::store::open(&db.url).await.expect("upgrade");
    assert_backlog_kept(store.as_ref()).await;
}
