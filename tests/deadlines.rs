//! Deadlines that hold whatever the outside world does: `/status` answers from the
//! supervisor's snapshot while PostgreSQL hangs, and SIGTERM ends the real binary within
//! `shutdown.timeout` + 2 s in the worst case (a webhook request stalled mid-body, a
//! broker that hangs, a sensor process that ignores SIGTERM).

mod support {
    pub mod postgres;
    pub mod processes;
    pub mod proxy;
    pub mod rabbitmq;
    pub mod service;
}

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use attune_sensor::config::Settings;
use attune_sensor::service::Service;
use serde_json::{Value, json};
use support::postgres::TestDatabase;
use support::processes::{processes_in, run_service};
use support::proxy::TcpProxy;
use support::rabbitmq::{amqp_addr, amqp_url_via, unique_exchange};
use support::service::{TempDatabase, fixture, wait_for};

const DEADLINE: Duration = Duration::from_secs(15);

async fn get_status(client: &reqwest::Client, admin: SocketAddr) -> Value {
    client
        .get(format!("http://{admin}/status"))
        .send()
        .await
        .expect("GET /status answers")
        .json()
        .await
        .expect("status is JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_answers_from_the_snapshot_while_the_database_hangs() {
    let db = TestDatabase::create().await;
    let upstream: SocketAddr = "127.0.0.1:5432".parse().expect("address");
    let proxy = TcpProxy::start(upstream).await;
    let yaml = json!({
        "database": {"url": db.url_via(proxy.addr())},
        "admin": {"bind": "127.0.0.1:0"},
        "webhook": {"bind": "127.0.0.1:0"},
        "packs": {"autoload": [fixture("timer")]},
        "sensor": {"reconcile_interval": 3600},
        "shutdown": {"timeout": 2},
    });
    let settings = Settings::from_yaml(&yaml.to_string()).expect("settings");
    let service = Service::start(&settings).await.expect("service starts");
    let admin = service.admin_addr;
    let client = reqwest::Client::new();
    wait_for("the timer to run and emit", DEADLINE, || async {
        let status = get_status(&client, admin).await;
        let timer = status["sensors"]
            .as_array()?
            .iter()
            .find(|s| s["sensor_ref"] == "timer.every_second")?
            .clone();
        (timer["state"] == "running" && timer["events_emitted"].as_u64()? >= 1).then_some(())
    })
    .await;

    proxy.stall();
    // A reload makes the supervisor wait on the hung database; it cannot answer anything
    // until that query returns.
    let reload = tokio::spawn({
        let client = client.clone();
        async move { client.post(format!("http://{admin}/reload")).send().await }
    });
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let asked = Instant::now();
        let status = get_status(&client, admin).await;
        slowest = slowest.max(asked.elapsed());
        let timer = status["sensors"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["sensor_ref"] == "timer.every_second"))
            .unwrap_or_else(|| panic!("the timer is listed: {status}"));
        assert_eq!(timer["state"], "running", "{status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !reload.is_finished(),
        "the reload answered: the database was not hanging, so this measured nothing"
    );
    assert!(
        slowest < Duration::from_millis(100),
        "GET /status took {slowest:?} while the supervisor waited on the database"
    );

    // A cut makes the hung query fail, so the reload answers and the service stops.
    proxy.cut().await;
    let _ = tokio::time::timeout(DEADLINE, reload).await;
    let stopping = Instant::now();
    service.shutdown().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(4),
        "shutdown took {:?} with a 2 s timeout",
        stopping.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_database_call_times_out_and_the_service_recovers_without_restart() {
    let db = TestDatabase::create().await;
    let upstream: SocketAddr = "127.0.0.1:5432".parse().expect("address");
    let proxy = TcpProxy::start(upstream).await;
    let yaml = json!({
        "database": {"url": db.url_via(proxy.addr()), "statement_timeout": 1},
        "admin": {"bind": "127.0.0.1:0"},
        "webhook": {"bind": "127.0.0.1:0"},
        "packs": {"autoload": [fixture("timer")]},
        "sensor": {"enabled": false, "reconcile_interval": 3600},
        "shutdown": {"timeout": 2},
    });
    let settings = Settings::from_yaml(&yaml.to_string()).expect("settings");
    let service = Service::start(&settings).await.expect("service starts");
    let admin = service.admin_addr;
    service
        .tree
        .system_events
        .emit("timer.manual", json!({"level": "high"}))
        .await
        .expect("stored before the hang");

    proxy.stall();
    let asked = Instant::now();
    let error = service
        .store
        .ping()
        .await
        .expect_err("a hung database cannot answer");
    let took = asked.elapsed();
    assert!(
        took < Duration::from_millis(1800),
        "the call took {took:?} with a 1 s statement timeout"
    );
    assert!(
        matches!(error, attune_actors::ports::StoreError::Unavailable(_))
            && error.to_string().contains("database.statement_timeout"),
        "an expired call is a retryable failure that names the setting: {error}"
    );

    let client = reqwest::Client::new();
    let asked = Instant::now();
    let ready = client
        .get(format!("http://{admin}/ready"))
        .send()
        .await
        .expect("/ready answers");
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(ready.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = ready.json().await.expect("JSON");
    assert!(
        body["database"]
            .as_str()
            .is_some_and(|d| d.starts_with("down")),
        "{body}"
    );
    assert_eq!(body["broker"], "ok", "{body}");
    let asked = Instant::now();
    let health = client
        .get(format!("http://{admin}/health"))
        .send()
        .await
        .expect("/health answers");
    assert!(health.status().is_success() && asked.elapsed() < Duration::from_secs(1));

    // An event submitted during the hang waits (retried), and is stored once the
    // database answers again: no restart, nothing lost.
    let pending = tokio::spawn({
        let events = service.tree.system_events.clone();
        async move {
            events
                .emit("timer.manual", json!({"level": "high", "n": 2}))
                .await
        }
    });
    wait_for("the event's first write to time out", DEADLINE, || async {
        let status = service.tree.status();
        let generator = status
            .pipeline
            .iter()
            .find(|p| p.name == "event_generator")?
            .clone();
        generator
            .last_error
            .filter(|e| e.contains("statement_timeout"))
            .map(|_| ())
    })
    .await;
    assert!(!pending.is_finished());
    proxy.cut().await;
    proxy.restore();
    let outcome = tokio::time::timeout(DEADLINE, pending)
        .await
        .expect("stored after the hang")
        .expect("task")
        .expect("stored");
    assert_eq!(outcome.enforcement_ids.len(), 1, "{outcome:?}");
    wait_for("/ready again", DEADLINE, || async {
        let ready = client
            .get(format!("http://{admin}/ready"))
            .send()
            .await
            .ok()?;
        ready.status().is_success().then_some(())
    })
    .await;
    service.shutdown().await;
}

/// A port nobody listens on right now.
fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr")
}

/// A pack with a process sensor that ignores SIGTERM and a webhook sensor.
fn worst_case_pack(dir: &Path) {
    let process_pack = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/process_pack");
    std::fs::create_dir_all(dir.join("triggers")).expect("mkdir");
    std::fs::create_dir_all(dir.join("sensors")).expect("mkdir");
    std::fs::write(
        dir.join("pack.yaml"),
        "ref: worst\nlabel: Worst-case shutdown\n",
    )
    .expect("write pack");
    std::fs::write(dir.join("triggers/out.yaml"), "ref: out\nlabel: Out\n").expect("trigger");
    std::fs::write(
        dir.join("sensors/stubborn.yaml"),
        "ref: stubborn\nruntime: shell\nentrypoint: stubborn.sh\ntrigger: worst.out\nmode: stream\n",
    )
    .expect("sensor");
    std::fs::copy(
        process_pack.join("available/stubborn.sh"),
        dir.join("sensors/stubborn.sh"),
    )
    .expect("copy stubborn.sh");
    std::fs::write(
        dir.join("sensors/hook.yaml"),
        "ref: hook\nruntime: builtin\nentrypoint: webhook\ntrigger: worst.out\nconfig:\n  path: hook\n",
    )
    .expect("webhook sensor");
}

fn http_post(addr: SocketAddr, path: &str, body: &str) -> Option<String> {
    use std::io::Read;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    Some(answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_within_the_timeout_plus_two_seconds_in_the_worst_case() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    const TIMEOUT_S: u64 = 3;
    let pack = tempfile::tempdir().expect("temp dir");
    let pack_dir = std::fs::canonicalize(pack.path()).expect("canonical");
    worst_case_pack(&pack_dir);
    let database = TempDatabase::new();
    // A broker that accepts connections and never answers: the hardest kind of down.
    let broker = TcpProxy::start(amqp_addr()).await;
    broker.stall();
    let admin = free_addr();
    let webhook = free_addr();
    let config = pack_dir.join("service.yaml");
    let yaml = json!({
        "database": {"url": database.url},
        "mq": {"url": amqp_url_via(broker.addr()), "exchange": unique_exchange()},
        "admin": {"bind": admin.to_string()},
        "webhook": {"bind": webhook.to_string()},
        "packs": {"autoload": [pack_dir]},
        "log": {"level": "warn"},
        // The sensor's grace is far longer than the whole shutdown may take.
        "sensor": {"stop_grace": 30, "reconcile_interval": 3600},
        "shutdown": {"timeout": TIMEOUT_S},
    });
    std::fs::write(&config, yaml.to_string()).expect("write config");
    let log = pack_dir.join("service.log");
    let mut child = run_service(
        &config,
        std::fs::File::create(&log).expect("log file").into(),
    );
    let service_log = || std::fs::read_to_string(&log).unwrap_or_default();

    // The stubborn shell, its sleep, a sub-shell and its sleep.
    wait_for("4 stubborn sensor processes", DEADLINE, || async {
        (processes_in(&pack_dir).len() >= 4).then_some(())
    })
    .await;
    // The webhook takes events (stored; their messages wait for the broker).
    wait_for("the webhook to take an event", DEADLINE, || async {
        let answer = tokio::task::spawn_blocking(move || {
            http_post(webhook, "/webhooks/hook", r#"{"n": 1}"#)
        })
        .await
        .ok()??;
        answer.starts_with("HTTP/1.1 202").then_some(())
    })
    .await;
    // A request in flight: headers sent, the body promised and never finished.
    let mut stalled_request = TcpStream::connect(webhook).expect("connect to the webhook");
    stalled_request
        .write_all(
            format!(
                "POST /webhooks/hook HTTP/1.1\r\nHost: {webhook}\r\n\
                 Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"n\": "
            )
            .as_bytes(),
        )
        .expect("send half a request");

    let pid = Pid::from_raw(i32::try_from(child.id().expect("pid")).expect("pid fits"));
    let signalled = Instant::now();
    kill(pid, Signal::SIGTERM).expect("SIGTERM the service");
    let limit = Duration::from_secs(TIMEOUT_S + 2);
    let status = match tokio::time::timeout(limit + Duration::from_secs(10), child.wait()).await {
        Ok(status) => status.expect("wait"),
        Err(_) => panic!("still running 10 s past the limit:\n{}", service_log()),
    };
    let took = signalled.elapsed();
    assert!(
        took <= limit,
        "exit took {took:?}, past shutdown.timeout + 2 s = {limit:?}:\n{}",
        service_log()
    );
    assert_eq!(status.code(), Some(0), "{}", service_log());
    wait_for(
        "the stubborn processes to be gone",
        Duration::from_secs(2),
        || async { processes_in(&pack_dir).is_empty().then_some(()) },
    )
    .await;
    drop(stalled_request);
}
