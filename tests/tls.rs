//! Encrypted connections for real: a PostgreSQL cluster of the test's own with `ssl = on`
//! and a CA made on the spot, RabbitMQ behind a TLS terminator the test controls, and
//! refusals that say what is wrong (a wrong CA, a server without TLS).

mod support {
    pub mod rabbitmq;
    pub mod service;
    pub mod tls;
}

use std::collections::HashSet;
use std::time::Duration;

use attune_sensor::config::Settings;
use attune_sensor::service::Service;
use serde_json::{Value, json};
use support::rabbitmq::{TestQueue, amqp_addr, require_rabbitmq, unique_exchange};
use support::service::{TempDatabase, fixture, wait_for};
use support::tls::{PgCluster, TestCa, TlsTerminator};

const DEADLINE: Duration = Duration::from_secs(20);

fn settings(yaml: Value) -> Settings {
    let mut base = json!({
        "admin": {"bind": "127.0.0.1:0"},
        "webhook": {"bind": "127.0.0.1:0"},
        "packs": {"autoload": [fixture("timer")]},
        "sensor": {"enabled": false, "reconcile_interval": 3600},
        "shutdown": {"timeout": 3},
    });
    if let (Some(base), Some(extra)) = (base.as_object_mut(), yaml.as_object()) {
        for (key, value) in extra {
            base.insert(key.clone(), value.clone());
        }
    }
    Settings::from_yaml(&base.to_string()).expect("test settings are valid")
}

/// The refusal of a service that must not start.
async fn refused(settings: &Settings) -> String {
    match Service::start(settings).await {
        Ok(service) => {
            service.shutdown().await;
            panic!("the service started");
        }
        Err(error) => {
            eprintln!("refused as expected: {error}");
            error.to_string()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_tls_with_verify_full_stores_and_matches_events() {
    let ca = TestCa::new("attune test CA");
    let certs = tempfile::tempdir().expect("temp dir");
    let ca_file = ca.write(certs.path(), "ca.pem");
    let cluster = PgCluster::start(Some(&ca.issue(&["localhost"])));

    let url = cluster.url(&format!(
        "sslmode=verify-full&sslrootcert={}",
        ca_file.display()
    ));
    let service = Service::start(&settings(json!({"database": {"url": url}})))
        .await
        .expect("the service starts over verify-full TLS");
    let outcome = service
        .tree
        .system_events
        .emit("timer.manual", json!({"level": "high"}))
        .await
        .expect("event stored and matched over TLS");
    assert_eq!(outcome.enforcement_ids.len(), 1, "{outcome:?}");
    service.shutdown().await;

    // A CA that did not sign the server's certificate.
    let other = TestCa::new("some other CA").write(certs.path(), "other.pem");
    let wrong_ca = cluster.url(&format!(
        "sslmode=verify-full&sslrootcert={}",
        other.display()
    ));
    let error = refused(&settings(json!({"database": {"url": wrong_ca}}))).await;
    assert!(
        error.contains("UnknownIssuer") && error.contains("TLS: check sslmode, sslrootcert"),
        "the refusal names the problem and the setting: {error}"
    );

    // The certificate names localhost, not this address.
    let wrong_host = format!(
        "postgres://postgres@127.0.0.1:{}/postgres?sslmode=verify-full&sslrootcert={}",
        cluster.port,
        ca_file.display()
    );
    let error = refused(&settings(json!({"database": {"url": wrong_host}}))).await;
    assert!(
        error.contains("certificate") && error.contains("names the host in database.url"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_require_against_a_server_without_tls_is_refused_clearly() {
    let cluster = PgCluster::start(None);
    let error = refused(&settings(
        json!({"database": {"url": cluster.url("sslmode=require")}}),
    ))
    .await;
    assert!(
        error.contains("server does not support TLS") && error.contains("TLS: check sslmode"),
        "the refusal says the server has no TLS and names sslmode: {error}"
    );
    // The same server without sslmode=require is fine.
    let service = Service::start(&settings(
        json!({"database": {"url": cluster.url("sslmode=disable")}}),
    ))
    .await
    .expect("plain connection");
    service.shutdown().await;
}

fn ids(queue: &mut TestQueue) -> (HashSet<i64>, HashSet<i64>) {
    let mut events = HashSet::new();
    let mut enforcements = HashSet::new();
    for message in queue.received_now() {
        let envelope: Value = serde_json::from_str(&message.body).expect("JSON envelope");
        match message.routing_key.as_str() {
            "event.created" => events.extend(envelope["payload"]["event_id"].as_i64()),
            "enforcement.created" => {
                enforcements.extend(envelope["payload"]["enforcement_id"].as_i64())
            }
            _ => {}
        }
    }
    (events, enforcements)
}

async fn emit(service: &Service, n: usize, events: &mut Vec<i64>, enforcements: &mut Vec<i64>) {
    for i in 0..n {
        let outcome = service
            .tree
            .system_events
            .emit("timer.manual", json!({"level": "high", "n": i}))
            .await
            .expect("stored");
        events.push(outcome.event_id);
        enforcements.extend(outcome.enforcement_ids);
    }
}

async fn wait_all(queue: &mut TestQueue, events: &[i64], enforcements: &[i64]) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (got_events, got_enforcements) = ids(queue);
        if events.iter().all(|id| got_events.contains(id))
            && enforcements.iter().all(|id| got_enforcements.contains(id))
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every message arrived: {} of {} events, {} of {} enforcements",
            events.iter().filter(|id| got_events.contains(id)).count(),
            events.len(),
            enforcements
                .iter()
                .filter(|id| got_enforcements.contains(id))
                .count(),
            enforcements.len()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_delivers_events_and_enforcements_and_reconnects_without_loss() {
    require_rabbitmq().await;
    let ca = TestCa::new("attune test CA");
    let certs = tempfile::tempdir().expect("temp dir");
    let ca_file = ca.write(certs.path(), "ca.pem");
    let terminator = TlsTerminator::start(amqp_addr(), &ca.issue(&["localhost"])).await;
    let exchange = unique_exchange();
    let mut queue = TestQueue::bind(&exchange, "#").await;
    let database = TempDatabase::new();
    let amqps = format!(
        "amqps://guest:guest@localhost:{}/%2f",
        terminator.addr.port()
    );
    let service = Service::start(&settings(json!({
        "database": {"url": database.url},
        "mq": {"url": amqps, "exchange": exchange, "tls": {"ca_file": ca_file}},
    })))
    .await
    .expect("service starts");

    let (mut events, mut enforcements) = (Vec::new(), Vec::new());
    emit(&service, 5, &mut events, &mut enforcements).await;
    assert_eq!(enforcements.len(), 5);
    wait_all(&mut queue, &events, &enforcements).await;

    terminator.cut();
    // Events keep being stored while the broker is away; publishing them finds the cut.
    let noticed_by = tokio::time::Instant::now() + DEADLINE;
    while service.publisher.is_connected() {
        assert!(
            tokio::time::Instant::now() < noticed_by,
            "the publisher never noticed the cut"
        );
        emit(&service, 1, &mut events, &mut enforcements).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    emit(&service, 5, &mut events, &mut enforcements).await;
    terminator.restore();
    wait_all(&mut queue, &events, &enforcements).await;
    service.shutdown().await;
    queue.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_with_a_wrong_ca_is_not_ready_and_says_why() {
    require_rabbitmq().await;
    let ca = TestCa::new("attune test CA");
    let certs = tempfile::tempdir().expect("temp dir");
    let other = TestCa::new("some other CA").write(certs.path(), "other.pem");
    let terminator = TlsTerminator::start(amqp_addr(), &ca.issue(&["localhost"])).await;
    let database = TempDatabase::new();
    let amqps = format!(
        "amqps://guest:guest@localhost:{}/%2f",
        terminator.addr.port()
    );
    let service = Service::start(&settings(json!({
        "database": {"url": database.url},
        "mq": {"url": amqps, "exchange": unique_exchange(), "tls": {"ca_file": other}},
    })))
    .await
    .expect("the service starts while the broker is unreachable");
    let admin = service.admin_addr;
    let ready = wait_for("/ready to explain the broker", DEADLINE, || async {
        let answer = reqwest::get(format!("http://{admin}/ready")).await.ok()?;
        let body: Value = answer.json().await.ok()?;
        let broker = body["broker"].as_str()?.to_owned();
        broker.contains("mq.tls.ca_file").then_some(broker)
    })
    .await;
    assert!(ready.contains("certificate"), "{ready}");
    service.shutdown().await;

    // A CA file that is no certificate stops the start, naming the setting.
    let junk = certs.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").expect("write");
    let error = refused(&settings(json!({
        "database": {"url": TempDatabase::new().url},
        "mq": {"url": "amqps://guest:guest@localhost:5671/%2f", "tls": {"ca_file": junk}},
    })))
    .await;
    assert!(error.contains("mq.tls.ca_file"), "{error}");
}
