//! Admission control against a paused database: beyond `pipeline.max_pending` events
//! waiting to be stored, `POST /events` answers 503 with `Retry-After` at once; the events
//! it took are all stored once the database answers again, and the real binary's memory
//! grows by about `max_pending` events however long the flood.

mod support {
    pub mod postgres;
    pub mod processes;
    pub mod proxy;
    pub mod service;
}

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use attune_sensor::config::Settings;
use attune_sensor::service::Service;
use serde_json::json;
use support::postgres::TestDatabase;
use support::processes::run_service;
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

/// Resident memory of a process, from `/proc`.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// The real binary against a paused database, flooded with large events by clients that
/// give up after 0.2 s (and so never stop sending): the memory it holds grows by about
/// `max_pending` events, not by the flood, and every event it admitted is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_impatient_clients_leaves_memory_bounded_by_max_pending() {
    const BOUNDED: usize = 200;
    const REQUESTS: usize = 10_000;
    const CONCURRENCY: usize = 64;
    const BLOB: usize = 16 * 1024;
    let db = TestDatabase::create().await;
    let proxy = TcpProxy::start("127.0.0.1:5432".parse().expect("address")).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let webhook = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let config = dir.path().join("service.yaml");
    let yaml = json!({
        "database": {"url": db.url_via(proxy.addr()), "statement_timeout": 2},
        "admin": {"bind": admin.to_string()},
        "webhook": {"bind": webhook.to_string()},
        "packs": {"autoload": [fixture("timer")]},
        "log": {"level": "error"},
        "sensor": {"enabled": false, "reconcile_interval": 3600},
        "pipeline": {"max_pending": BOUNDED},
        "shutdown": {"timeout": 3},
    });
    std::fs::write(&config, yaml.to_string()).expect("write config");
    let mut child = run_service(&config, std::process::Stdio::inherit());
    let pid = child.id().expect("pid");
    let client = reqwest::Client::new();
    let url = format!("http://{admin}/events");
    let blob = "x".repeat(BLOB);
    let body = |n: usize| json!({"trigger_ref": "timer.manual", "payload": {"n": n, "blob": blob}});
    // Warm up: the service answers, and a few requests have been through every path.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let answer = client.post(&url).json(&body(0)).send().await;
        if answer.is_ok_and(|a| a.status() == 201) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the service never answered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = rss_bytes(pid);

    proxy.stall();
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .expect("client");
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(1));
    let refused = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut senders = Vec::new();
    for _ in 0..CONCURRENCY {
        let (impatient, url, next, refused) = (
            impatient.clone(),
            url.clone(),
            next.clone(),
            refused.clone(),
        );
        let blob = blob.clone();
        senders.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if n > REQUESTS {
                    break;
                }
                let body =
                    json!({"trigger_ref": "timer.manual", "payload": {"n": n, "blob": blob}});
                if let Ok(answer) = impatient.post(&url).json(&body).send().await
                    && answer.status() == 503
                {
                    refused.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        }));
    }
    let mut peak = before;
    while senders.iter().any(|s| !s.is_finished()) {
        peak = peak.max(rss_bytes(pid));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    peak = peak.max(rss_bytes(pid));
    let refused = refused.load(std::sync::atomic::Ordering::SeqCst);
    let growth = peak.saturating_sub(before);
    println!(
        "flood of {REQUESTS} x {BLOB} B events, max_pending {BOUNDED}: RSS {:.1} MB before, \
         peak {:.1} MB (+{:.1} MB; the flood itself is {:.0} MB), {refused} refused with 503",
        before as f64 / 1e6,
        peak as f64 / 1e6,
        growth as f64 / 1e6,
        (REQUESTS * BLOB) as f64 / 1e6,
    );
    assert!(
        refused >= REQUESTS - BOUNDED - CONCURRENCY,
        "only {refused} of {REQUESTS} refused"
    );
    // max_pending events of 16 KB and their requests, with room for the allocator and
    // the connections: far below the flood (160 MB).
    assert!(
        growth < 48 * 1024 * 1024,
        "RSS grew by {:.1} MB",
        growth as f64 / 1e6
    );

    // The database is back: the admitted events are stored, each once.
    proxy.cut().await;
    proxy.restore();
    let store = attune_sensor::store::open(&db.url).await.expect("store");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let stored = store
            .recent_events(Some("timer.manual"), 1000)
            .await
            .expect("events")
            .len();
        // Every request not refused was admitted (the service admits or refuses at
        // once; only admitted ones outlive the client's 0.2 s), plus the warm-up event.
        let admitted = REQUESTS - refused + 1;
        assert!(
            stored <= admitted,
            "{stored} stored, only {admitted} admitted"
        );
        if stored == admitted {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{stored} stored, {admitted} admitted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.start_kill();
    let _ = child.wait().await;
}
