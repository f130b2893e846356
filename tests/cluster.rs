//! Several instances on one database (issue 9, first part): instances register and
//! heartbeat, `GET /cluster` lists them; the outbox lease lets one instance publish at a
//! time, so two instances on one PostgreSQL database send each message once, and the
//! other takes over when the holder stops; SQLite refuses a second instance, naming the
//! file and the holder's pid.

mod support {
    pub mod postgres;
    pub mod processes;
    pub mod triggers;
}

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use attune_sensor::bus::in_process::DeliveredMessage;
use attune_sensor::config::Settings;
use attune_sensor::service::Service;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use support::postgres::TestDatabase;
use support::triggers::*;
use tokio::sync::mpsc::UnboundedReceiver;

const DEADLINE: Duration = Duration::from_secs(15);

fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::seconds(1_000_000 + seconds)
}

async fn leases_have_one_holder_and_count_generations(database_url: &str, _root: &Path) {
    let store = attune_sensor::store::open(database_url)
        .await
        .expect("store");
    let lease = |holder: &'static str, now: i64, until: i64| {
        let store = store.clone();
        async move {
            store
                .acquire_lease("outbox", holder, at(now), at(until))
                .await
                .expect("lease query")
        }
    };
    assert_eq!(lease("a", 0, 15).await, Some(1), "a free lease is granted");
    assert_eq!(lease("b", 1, 16).await, None, "held by another");
    assert_eq!(lease("a", 5, 20).await, Some(1), "renewed by its holder");
    assert_eq!(lease("b", 19, 34).await, None, "not expired yet");
    assert_eq!(lease("b", 20, 35).await, Some(2), "expired: taken over");
    assert_eq!(lease("a", 21, 36).await, None, "the old holder lost it");
    store.release_lease("outbox", "a").await.expect("release");
    assert_eq!(lease("a", 22, 37).await, None, "only the holder releases");
    store.release_lease("outbox", "b").await.expect("release");
    assert_eq!(lease("a", 23, 38).await, Some(3), "released: taken at once");
    let leases = store.leases().await.expect("leases");
    assert_eq!(leases.len(), 1);
    assert_eq!((leases[0].holder.as_str(), leases[0].generation), ("a", 3));
}

on_both_backends!(
    leases_have_one_holder_and_count_generations,
    sqlite_leases,
    postgres_leases
);

fn cluster_settings(database_url: &str, pack: &Path, id: &str, zone: &str) -> Settings {
    let yaml = json!({
        "database": {"url": database_url},
        "admin": {"bind": "127.0.0.1:0"},
        "webhook": {"bind": "127.0.0.1:0"},
        "packs": {"autoload": [pack]},
        "log": {"level": "warn"},
        "sensor": {"reconcile_interval": 3600},
        "shutdown": {"timeout": 3},
        "cluster": {"instance_id": id, "labels": {"zone": zone}, "lease_ttl": "3s"},
    });
    Settings::from_yaml(&yaml.to_string()).expect("valid settings")
}

fn bus(service: &Service) -> UnboundedReceiver<DeliveredMessage> {
    service
        .in_process_bus
        .as_ref()
        .expect("in-process bus")
        .subscribe("#")
}

/// Drains what has arrived so far.
fn received(messages: &mut UnboundedReceiver<DeliveredMessage>, into: &mut Vec<DeliveredMessage>) {
    while let Ok(message) = messages.try_recv() {
        into.push(message);
    }
}

async fn cluster_view(service: &Service) -> Value {
    reqwest::get(format!("http://{}/cluster", service.admin_addr))
        .await
        .expect("GET /cluster")
        .json()
        .await
        .expect("cluster JSON")
}

#[tokio::test]
async fn two_instances_publish_each_message_once_and_hand_the_outbox_over() {
    let db = TestDatabase::create().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let pack = write_pack(
        dir.path(),
        "cl",
        &[],
        &[("all", "ref: all\ntrigger: cl.hit\naction: core.x\n")],
    );
    let first = start(&cluster_settings(&db.url, &pack, "first", "a")).await;
    let second = start(&cluster_settings(&db.url, &pack, "second", "b")).await;
    let (mut on_first, mut on_second) = (bus(&first), bus(&second));

    const EACH: usize = 40;
    for n in 0..EACH {
        for service in [&first, &second] {
            service
                .tree
                .system_events
                .emit("cl.hit", json!({"n": n}))
                .await
                .expect("matched");
        }
    }
    // Every event gives two messages.
    let expected = EACH * 2 * 2;
    let (mut got_first, mut got_second) = (Vec::new(), Vec::new());
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while got_first.len() + got_second.len() < expected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {expected} messages published",
            got_first.len() + got_second.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        received(&mut on_first, &mut got_first);
        received(&mut on_second, &mut got_second);
    }
    let ids: HashSet<uuid::Uuid> = got_first
        .iter()
        .chain(&got_second)
        .map(|m| m.message_id)
        .collect();
    assert_eq!(ids.len(), expected, "no message published twice");
    assert!(
        got_first.is_empty() || got_second.is_empty(),
        "one instance publishes: {} and {}",
        got_first.len(),
        got_second.len()
    );
    let (publisher, standby, mut standby_bus) = if got_first.is_empty() {
        (second, first, on_first)
    } else {
        (first, second, on_second)
    };

    let view = cluster_view(&standby).await;
    let instances = view["instances"].as_array().expect("instances");
    assert_eq!(instances.len(), 2, "{view}");
    assert!(instances.iter().all(|i| i["alive"] == true), "{view}");
    let holder = instances
        .iter()
        .find(|i| i["leases"] == json!(["outbox"]))
        .unwrap_or_else(|| panic!("an instance holds the outbox lease: {view}"));
    assert_eq!(holder["id"], publisher.identity.id.as_str());
    let status: Value = reqwest::get(format!("http://{}/status", standby.admin_addr))
        .await
        .expect("GET /status")
        .json()
        .await
        .expect("status JSON");
    assert_eq!(status["instance"]["id"], standby.identity.id.as_str());
    assert_eq!(status["outbox"]["publishing"], false, "{status}");

    // The publisher stops (releasing the lease): the other publishes from then on.
    shutdown(publisher).await;
    standby
        .tree
        .system_events
        .emit("cl.hit", json!({"after": "handover"}))
        .await
        .expect("matched");
    let mut after = Vec::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while after.len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the standby did not take the outbox over"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        received(&mut standby_bus, &mut after);
    }
    let view = cluster_view(&standby).await;
    assert_eq!(
        view["instances"].as_array().map(Vec::len),
        Some(1),
        "the stopped instance deregistered: {view}"
    );
    shutdown(standby).await;
}

#[tokio::test]
async fn sqlite_refuses_a_second_instance_naming_the_file_and_the_holder() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = sqlite_url(dir.path());
    let first = start(&settings(&url, &[])).await;
    let refused = Service::start(&settings(&url, &[]))
        .await
        .err()
        .expect("a second instance on the same file is refused")
        .to_string();
    let file = dir.path().join("attune.db");
    assert!(refused.contains(&file.display().to_string()), "{refused}");
    assert!(
        refused.contains(&format!("pid {}", std::process::id())),
        "{refused}"
    );

    // The real binary exits 1 with that message.
    let config = dir.path().join("second.yaml");
    let yaml = json!({
        "database": {"url": url},
        "admin": {"bind": "127.0.0.1:0"},
        "webhook": {"bind": "127.0.0.1:0"},
        "packs": {"autoload": []},
    });
    std::fs::write(&config, yaml.to_string()).expect("write config");
    let child = support::processes::run_service(&config, std::process::Stdio::piped());
    let output = tokio::time::timeout(DEADLINE, child.wait_with_output())
        .await
        .expect("the second instance exits")
        .expect("its output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("is in use by another attune-sensor"),
        "{stderr}"
    );
    assert!(stderr.contains(&file.display().to_string()), "{stderr}");

    // Once the first is gone the file is free again.
    shutdown(first).await;
    let again = start(&settings(&url, &[])).await;
    shutdown(again).await;
}
