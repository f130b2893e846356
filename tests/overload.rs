//! Admission control against a paused database: beyond `pipeline.max_pending` events
//! waiting to be stored, `POST /events` answers 503 with `Retry-After` at once; the events
//! it took are all stored once the database answers again.

mod support {
    pub mod postgres;
    pub mod proxy;
    pub mod service;
}

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use attune_sensor::config::Settings;
use attune_sensor::service::Service;
use serde_json::json;
use support::postgres::TestDatabase;
use support::proxy::TcpProxy;
use support::service::fixture;

const MAX_PENDING: usize = 20;
const FLOOD: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_against_a_paused_database_is_refused_beyond_max_pending_and_loses_nothing() {
    let db = TestDatabase::create().await;
    let proxy = TcpProxy::start("127.0.0.1:5432".parse().expect("address")).await;
    let yaml = json!({
        "database": {"url": db.url_via(proxy.addr()), "statement_timeout": 2},
        "admin": {"bind": "127.0.0.1:0"},
        "webhook": {"bind": "127.0.0.1:0"},
        "packs": {"autoload": [fixture("timer")]},
        "sensor": {"enabled": false, "reconcile_interval": 3600},
        "pipeline": {"max_pending": MAX_PENDING},
        "shutdown": {"timeout": 3},
    });
    let settings = Settings::from_yaml(&yaml.to_string()).expect("settings");
    let service = Service::start(&settings).await.expect("service starts");
    let admin: SocketAddr = service.admin_addr;
    let client = reqwest::Client::new();

    // Stored before the pause; it also caches the trigger, so the flood waits on nothing
    // but the event writes.
    service
        .tree
        .system_events
        .emit("timer.manual", json!({"level": "high"}))
        .await
        .expect("stored before the pause");

    proxy.stall();
    let (answers, mut answered) = tokio::sync::mpsc::unbounded_channel();
    for n in 0..FLOOD {
        let client = client.clone();
        let answers = answers.clone();
        tokio::spawn(async move {
            let sent = Instant::now();
            let answer = client
                .post(format!("http://{admin}/events"))
                .json(&json!({"trigger_ref": "timer.manual", "payload": {"level": "high", "n": n}}))
                .send()
                .await
                .expect("an answer");
            let status = answer.status();
            let retry_after = answer.headers().get("retry-after").cloned();
            let _ = answers.send((status.as_u16(), retry_after, sent.elapsed()));
        });
    }
    drop(answers);

    // Everything beyond the limit is refused at once, while the database still hangs.
    let mut refused = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while refused < FLOOD - MAX_PENDING {
        let (status, retry_after, took) = tokio::time::timeout_at(deadline, answered.recv())
            .await
            .expect("the refusals arrive while the database hangs")
            .expect("an answer");
        assert_eq!(status, 503, "only refusals can come back during the hang");
        assert_eq!(retry_after.as_ref().map(|v| v.as_bytes()), Some(&b"1"[..]));
        assert!(took < Duration::from_secs(1), "a refusal took {took:?}");
        refused += 1;
    }

    // The database answers again: every admitted event is stored and matched.
    proxy.cut().await;
    proxy.restore();
    let mut created = 0;
    while let Ok(Some((status, _, _))) = tokio::time::timeout_at(
        tokio::time::Instant::now() + Duration::from_secs(30),
        answered.recv(),
    )
    .await
    {
        assert_eq!(status, 201, "an admitted event is stored");
        created += 1;
    }
    assert_eq!(created, MAX_PENDING);
    let stored = service
        .store
        .recent_events(Some("timer.manual"), 1000)
        .await
        .expect("events");
    assert_eq!(
        stored.len(),
        MAX_PENDING + 1,
        "exactly the admitted events were stored, besides the one before the pause"
    );
    service.shutdown().await;
}
