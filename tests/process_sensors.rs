//! Process sensors with real `python3`, `node` and `sh`: events and state, bad output,
//! timeouts, crashes under the restart policy, process hygiene, refused entrypoints.
//!
//! Each test builds its own pack in a temporary directory from
//! `tests/fixtures/process_pack` (the base) and the sensors it names from `available/`.
//! Every sensor process runs with the pack directory as its working directory, so "no
//! sensor process is left" is checked by looking for live processes whose cwd is in that
//! directory.

mod support {
    pub mod postgres;
    pub mod processes;
    pub mod rabbitmq;
    pub mod service;
}

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use attune_actors::SupervisorMsg;
use attune_actors::domain::Event;
use attune_actors::status::{SensorState, SensorStatus};
use attune_sensor::config::Settings;
use attune_sensor::packs;
use attune_sensor::service::Service;
use ractor::rpc::CallResult;
use serde_json::{Value, json};
use support::postgres::TestDatabase;
use support::processes::{processes_in, run_service};
use support::service::{TempDatabase, wait_for};

const DEADLINE: Duration = Duration::from_secs(15);

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/process_pack")
}

/// A copy of the base pack with the named sensors (and their code) in `sensors/`.
struct TestPack {
    dir: tempfile::TempDir,
}

impl TestPack {
    fn new(sensors: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let base = fixture_dir();
        for sub in ["triggers", "rules", "sensors"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
        }
        for file in ["pack.yaml", "triggers/out.yaml", "rules/on_out.yaml"] {
            std::fs::copy(base.join(file), dir.path().join(file)).expect("copy base file");
        }
        for name in sensors {
            let yaml_file = base.join("available").join(format!("{name}.yaml"));
            let yaml = std::fs::read_to_string(&yaml_file).expect("sensor yaml");
            let entrypoint = yaml
                .lines()
                .find_map(|line| line.strip_prefix("entrypoint: "))
                .expect("entrypoint line")
                .trim();
            std::fs::write(dir.path().join(format!("sensors/{name}.yaml")), &yaml)
                .expect("write yaml");
            // `copy` keeps the permission bits (the native sensor is executable).
            std::fs::copy(
                base.join("available").join(entrypoint),
                dir.path().join("sensors").join(entrypoint),
            )
            .expect("copy sensor code");
        }
        Self { dir }
    }

    fn path(&self) -> PathBuf {
        std::fs::canonicalize(self.dir.path()).expect("canonical pack dir")
    }
}

async fn wait_no_processes(dir: &Path, what: &str) {
    wait_for(what, Duration::from_secs(3), || async {
        processes_in(dir).is_empty().then_some(())
    })
    .await;
}

async fn sensor_status(service: &Service, sensor_ref: &str) -> Option<SensorStatus> {
    service
        .tree
        .status()
        .sensors
        .into_iter()
        .find(|s| s.sensor_ref == sensor_ref)
}

async fn wait_status(
    service: &Service,
    sensor_ref: &str,
    what: &str,
    check: impl Fn(&SensorStatus) -> bool,
) -> SensorStatus {
    wait_for(what, DEADLINE, || async {
        sensor_status(service, sensor_ref)
            .await
            .filter(|s| check(s))
    })
    .await
}

enum Control {
    Restart,
    Stop,
    Start,
}

async fn control(service: &Service, sensor_ref: &str, action: Control) {
    let sensor_ref = sensor_ref.to_owned();
    let result = service
        .tree
        .supervisor
        .call(
            |reply| match action {
                Control::Restart => SupervisorMsg::RestartSensor(sensor_ref, reply),
                Control::Stop => SupervisorMsg::StopSensor(sensor_ref, reply),
                Control::Start => SupervisorMsg::StartSensor(sensor_ref, reply),
            },
            Some(Duration::from_secs(20)),
        )
        .await
        .expect("supervisor answers");
    let CallResult::Success(Ok(())) = result else {
        panic!("control command refused or timed out");
    };
}

/// Events of a sensor, oldest first.
async fn events_of(service: &Service, sensor_ref: &str) -> Vec<Event> {
    let mut events: Vec<Event> = service
        .store
        .recent_events(Some("proc.out"), 1000)
        .await
        .expect("events")
        .into_iter()
        .filter(|e| e.source_ref.as_deref() == Some(sensor_ref))
        .collect();
    events.sort_by_key(|e| e.id);
    events
}

async fn wait_events(service: &Service, sensor_ref: &str, count: usize) -> Vec<Event> {
    wait_for(
        &format!("{count} events of {sensor_ref}"),
        DEADLINE,
        || async {
            let events = events_of(service, sensor_ref).await;
            (events.len() >= count).then_some(events)
        },
    )
    .await
}

/// A service on a fresh SQLite file with `pack` loaded; `sensor` overrides keys of the
/// `sensor` section.
struct Running {
    service: Service,
    _database: TempDatabase,
}

impl Running {
    fn service(&self) -> &Service {
        &self.service
    }

    async fn shutdown(self) {
        tokio::time::timeout(Duration::from_secs(20), self.service.shutdown())
            .await
            .expect("service shut down within 20 s");
    }
}

async fn start(pack: &TestPack, sensor: Value) -> Running {
    let database = TempDatabase::new();
    let mut sensor_section = json!({
        "stop_grace": 0.5,
        "restart_backoff_initial": 0.1,
        "restart_backoff_max": 0.5,
        "reconcile_interval": 3600,
    });
    if let (Some(section), Value::Object(overrides)) = (sensor_section.as_object_mut(), sensor) {
        section.extend(overrides);
    }
    let yaml = json!({
        "database": {"url": database.url},
        "admin": {"bind": "127.0.0.1:0"},
        "webhook": {"bind": "127.0.0.1:0"},
        "packs": {"autoload": [pack.path()]},
        "log": {"level": "warn"},
        "sensor": sensor_section,
        "shutdown": {"timeout": 5},
    });
    let settings = Settings::from_yaml(&yaml.to_string()).expect("test settings are valid");
    let service = Service::start(&settings).await.expect("service starts");
    Running {
        service,
        _database: database,
    }
}

#[tokio::test]
async fn python_poll_sensor_round_trips_events_and_state_in_order() {
    let pack = TestPack::new(&["counter"]);
    let svc = start(&pack, json!({})).await;
    let service = svc.service();

    let events = wait_events(service, "proc.counter", 4).await;
    let order: Vec<(i64, i64)> = events
        .iter()
        .map(|e| {
            (
                e.payload["n"].as_i64().expect("n"),
                e.payload["i"].as_i64().expect("i"),
            )
        })
        .collect();
    // The state saved by one poll is handed to the next: n counts polls.
    assert_eq!(&order[..4], &[(1, 0), (1, 1), (2, 0), (2, 1)]);
    let first = &events[0].payload;
    assert_eq!(first["config"], json!({"greeting": "hello"}));
    assert_eq!(first["sensor"]["ref"], "proc.counter");
    assert_eq!(first["sensor"]["mode"], "poll");
    assert_eq!(first["sensor"]["poll_interval"], 1);
    assert_eq!(first["trigger"]["ref"], "proc.out");
    assert_eq!(first["cwd"], json!(pack.path().display().to_string()));
    // The state line follows the events it covers, so its save may trail them a moment.
    wait_for("the second poll's state saved", DEADLINE, || async {
        service
            .store
            .sensor_state("proc.counter")
            .await
            .expect("state")
            .filter(|state| state["n"].as_i64().is_some_and(|n| n >= 2))
    })
    .await;

    // The rule turned events into enforcements.
    let event_id = events[0].id;
    wait_for("an enforcement of the first event", DEADLINE, || async {
        service
            .store
            .recent_enforcements(Some("proc.on_out"), 1000)
            .await
            .expect("enforcements")
            .into_iter()
            .find(|e| e.event == event_id)
    })
    .await;
    let status = sensor_status(service, "proc.counter")
        .await
        .expect("status");
    assert_eq!(status.failure_count, 0, "{status:?}");
    assert!(status.activity.last_poll.is_some());
    svc.shutdown().await;
    wait_no_processes(&pack.path(), "no sensor process after shutdown").await;
}

#[tokio::test]
async fn node_stream_sensor_skips_bad_lines_and_sees_a_cleared_environment() {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")
        .expect("cargo test sets CARGO_MANIFEST_DIR, which the sensor's pass_env allows");
    assert!(
        std::env::var_os("CARGO_PKG_NAME").is_some(),
        "cargo test sets CARGO_PKG_NAME, which must not reach the sensor"
    );
    let pack = TestPack::new(&["stream"]);
    let svc = start(&pack, json!({})).await;
    let service = svc.service();

    let events = wait_events(service, "proc.stream", 2).await;
    assert_eq!(events[0].payload["seq"], 1);
    assert_eq!(events[1].payload["seq"], 2);
    assert_eq!(events.len(), 2, "bad lines produce no event");
    // occurred_at is normalized to UTC and copied into the payload.
    assert_eq!(events[1].payload["occurred_at"], "2025-01-01T10:00:00Z");

    let env = events[0].payload["env"].as_object().expect("env object");
    let names: BTreeSet<&str> = env.keys().map(String::as_str).collect();
    let mut expected: BTreeSet<&str> = [
        "ATTUNE_SENSOR_REF",
        "ATTUNE_TRIGGER_REF",
        "ATTUNE_PACK_REF",
        "ATTUNE_POLL_INTERVAL",
        "CARGO_MANIFEST_DIR",
    ]
    .into_iter()
    .collect();
    for inherited in ["PATH", "HOME", "LANG", "TZ"] {
        if std::env::var_os(inherited).is_some() {
            expected.insert(inherited);
        }
    }
    assert_eq!(names, expected, "the environment is cleared but for these");
    assert_eq!(env["ATTUNE_SENSOR_REF"], "proc.stream");
    assert_eq!(env["ATTUNE_TRIGGER_REF"], "proc.out");
    assert_eq!(env["ATTUNE_PACK_REF"], "proc");
    assert_eq!(env["ATTUNE_POLL_INTERVAL"], "30");
    assert_eq!(env["CARGO_MANIFEST_DIR"], json!(manifest_dir));

    let status = wait_status(service, "proc.stream", "4 bad lines counted", |s| {
        s.activity.bad_output_count == 4
    })
    .await;
    assert_eq!(status.state, SensorState::Running, "{status:?}");
    assert_eq!(status.failure_count, 0, "{status:?}");
    assert_eq!(processes_in(&pack.path()).len(), 1, "the node process runs");

    control(service, "proc.stream", Control::Stop).await;
    assert!(
        processes_in(&pack.path()).is_empty(),
        "stop returns after the process is gone: {:?}",
        processes_in(&pack.path())
    );
    svc.shutdown().await;
}

#[tokio::test]
async fn poll_timeout_kills_the_process_group_and_counts_a_failure() {
    let pack = TestPack::new(&["sleepy"]);
    let svc = start(
        &pack,
        json!({"sensor_timeout": 1, "restart_on_error": false}),
    )
    .await;
    let service = svc.service();
    wait_for("the poll process and its child", DEADLINE, || async {
        (processes_in(&pack.path()).len() >= 2).then_some(())
    })
    .await;
    let status = wait_status(service, "proc.sleepy", "failed after the timeout", |s| {
        s.state == SensorState::Failed
    })
    .await;
    assert_eq!(status.failure_count, 1, "{status:?}");
    let error = status.last_error.clone().unwrap_or_default();
    assert!(error.contains("timed out after 1 s"), "{error}");
    assert!(error.contains("killed by signal 15"), "{error}");
    assert!(error.contains("stderr: sleeping"), "{error}");
    assert!(
        processes_in(&pack.path()).is_empty(),
        "the whole group is killed: {:?}",
        processes_in(&pack.path())
    );
    svc.shutdown().await;
}

#[tokio::test]
async fn crashing_sensor_fails_after_its_attempts_and_recovers_on_operator_restart() {
    let pack = TestPack::new(&["crash"]);
    std::fs::write(pack.path().join("crash"), "").expect("crash file");
    let svc = start(
        &pack,
        json!({"max_restart_attempts": 2, "restart_backoff_initial": 0.05, "restart_backoff_max": 0.1}),
    )
    .await;
    let service = svc.service();

    let status = wait_status(service, "proc.crash", "failed", |s| {
        s.state == SensorState::Failed
    })
    .await;
    assert_eq!(
        status.failure_count, 3,
        "two restarts, then failed: {status:?}"
    );
    assert_eq!(status.restart_count, 2, "{status:?}");
    let error = status.last_error.clone().unwrap_or_default();
    assert!(error.contains("exited with code 3"), "{error}");
    assert!(error.contains("boom: the crash file is there"), "{error}");
    assert!(
        status
            .activity
            .stderr_tail
            .iter()
            .any(|line| line.contains("boom")),
        "{status:?}"
    );
    assert!(events_of(service, "proc.crash").await.is_empty());

    std::fs::remove_file(pack.path().join("crash")).expect("remove crash file");
    control(service, "proc.crash", Control::Restart).await;
    let events = wait_events(service, "proc.crash", 1).await;
    assert_eq!(events[0].payload, json!({"ok": true}));
    let status = sensor_status(service, "proc.crash").await.expect("status");
    assert_eq!(status.state, SensorState::Running, "{status:?}");
    assert_eq!(status.failure_count, 0, "{status:?}");
    svc.shutdown().await;
}

#[tokio::test]
async fn native_and_shell_sensors_produce_events() {
    let pack = TestPack::new(&["native", "hello"]);
    let svc = start(&pack, json!({})).await;
    let service = svc.service();
    let native = wait_events(service, "proc.native", 1).await;
    assert_eq!(native[0].payload, json!({"runtime": "native"}));
    let shell = wait_events(service, "proc.hello", 1).await;
    assert_eq!(shell[0].payload, json!({"runtime": "shell"}));
    svc.shutdown().await;
    wait_no_processes(&pack.path(), "no sensor process after shutdown").await;
}

#[tokio::test]
async fn secrets_handed_through_pass_env_are_masked_in_stderr_and_errors() {
    const SECRET: &str = "s3cr3t-t0ken-value";
    // Only this test reads the variable; set before its service starts.
    unsafe { std::env::set_var("LEAKY_TEST_SECRET", SECRET) };
    let pack = TestPack::new(&["leaky"]);
    let svc = start(&pack, json!({})).await;
    let service = svc.service();
    let status = wait_for("the leaky sensor to fail once", DEADLINE, || async {
        sensor_status(service, "proc.leaky")
            .await
            .filter(|s| s.failure_count >= 1 && !s.activity.stderr_tail.is_empty())
    })
    .await;
    let shown = format!("{:?} {:?}", status.activity.stderr_tail, status.last_error);
    assert!(!shown.contains(SECRET), "the secret leaked: {shown}");
    assert!(shown.contains("connecting with token ***"), "{shown}");
    svc.shutdown().await;
}

#[tokio::test]
async fn a_poll_process_that_exits_takes_its_leftover_children_along() {
    let pack = TestPack::new(&["leaver"]);
    let svc = start(&pack, json!({})).await;
    let service = svc.service();
    wait_events(service, "proc.leaver", 1).await;
    // Within a second: not only when the driver gives up on the pipes the child holds
    // (after 2 s) and cleans up.
    wait_for(
        "the left-behind sleep is killed",
        Duration::from_secs(1),
        || async { processes_in(&pack.path()).is_empty().then_some(()) },
    )
    .await;
    let status = sensor_status(service, "proc.leaver").await.expect("status");
    assert_eq!(status.failure_count, 0, "{status:?}");
    svc.shutdown().await;
}

#[tokio::test]
async fn stop_restart_and_shutdown_leave_no_process_behind() {
    let pack = TestPack::new(&["stubborn"]);
    let dir = pack.path();
    let svc = start(&pack, json!({})).await;
    let service = svc.service();
    // The shell, a sleep, a sub-shell and its sleep.
    let running = |count: usize| {
        let dir = dir.clone();
        async move {
            wait_for(&format!("{count} sensor processes"), DEADLINE, || async {
                (processes_in(&dir).len() >= count).then(|| processes_in(&dir))
            })
            .await
        }
    };
    running(4).await;

    // It ignores SIGTERM: the stop waits out the grace period, then SIGKILLs the group.
    let started = std::time::Instant::now();
    control(service, "proc.stubborn", Control::Stop).await;
    let took = started.elapsed();
    assert!(
        processes_in(&dir).is_empty(),
        "after stop: {:?}",
        processes_in(&dir)
    );
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(3),
        "stop took {took:?} with a 0.5 s grace"
    );

    control(service, "proc.stubborn", Control::Start).await;
    let before: BTreeSet<u32> = running(4).await.into_iter().map(|(pid, _)| pid).collect();
    control(service, "proc.stubborn", Control::Restart).await;
    let after = running(4).await;
    assert!(
        after.iter().all(|(pid, _)| !before.contains(pid)),
        "restart leaves none of the old processes: before {before:?}, after {after:?}"
    );

    svc.shutdown().await;
    assert!(
        processes_in(&dir).is_empty(),
        "after shutdown: {:?}",
        processes_in(&dir)
    );
}

/// The real binary: SIGTERM ends the service and every sensor process with it.
#[tokio::test]
async fn the_service_process_leaves_no_sensor_process_after_sigterm() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    let pack = TestPack::new(&["stubborn", "stream"]);
    let database = TempDatabase::new();
    let config = pack.dir.path().join("service.yaml");
    let yaml = json!({
        "database": {"url": database.url},
        "admin": {"bind": "127.0.0.1:0"},
        "webhook": {"bind": "127.0.0.1:0"},
        "packs": {"autoload": [pack.path()]},
        "log": {"level": "warn"},
        "sensor": {"stop_grace": 0.5, "reconcile_interval": 3600},
        "shutdown": {"timeout": 5},
    });
    std::fs::write(&config, yaml.to_string()).expect("write config");
    let mut child = run_service(&config, std::process::Stdio::null());
    // The stubborn shell with its three children, and node.
    wait_for("5 sensor processes", DEADLINE, || async {
        (processes_in(&pack.path()).len() >= 5).then_some(())
    })
    .await;
    let pid = Pid::from_raw(i32::try_from(child.id().expect("pid")).expect("pid fits"));
    kill(pid, Signal::SIGTERM).expect("SIGTERM the service");
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("the service exits after SIGTERM")
        .expect("wait");
    assert_eq!(status.code(), Some(0));
    assert!(
        processes_in(&pack.path()).is_empty(),
        "after the service exited: {:?}",
        processes_in(&pack.path())
    );
}

#[tokio::test]
async fn max_concurrent_sensors_bounds_running_processes() {
    let pack = TestPack::new(&["holder", "holder2"]);
    let svc = start(&pack, json!({"max_concurrent_sensors": 1})).await;
    let service = svc.service();
    let first = wait_for("one holder reports", DEADLINE, || async {
        let a = events_of(service, "proc.holder").await;
        let b = events_of(service, "proc.holder2").await;
        match (a.is_empty(), b.is_empty()) {
            (false, true) => Some(("proc.holder", "proc.holder2")),
            (true, false) => Some(("proc.holder2", "proc.holder")),
            (false, false) => panic!("both holders ran at once"),
            (true, true) => None,
        }
    })
    .await;
    let (running, waiting) = first;
    // A bounded look: the waiting sensor must not get a process while the slot is taken.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(events_of(service, waiting).await.is_empty());
    assert_eq!(processes_in(&pack.path()).len(), 1);

    control(service, running, Control::Stop).await;
    wait_events(service, waiting, 1).await;
    svc.shutdown().await;
}

fn write(path: &Path, text: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(path, text).expect("write");
}

#[test]
fn bad_entrypoints_and_fields_are_refused_at_pack_load() {
    let outside = tempfile::tempdir().expect("temp dir");
    write(&outside.path().join("evil.py"), "print('hi')\n");
    let cases: Vec<(&str, String, &str)> = vec![
        ("entrypoint", "entrypoint: /bin/sh".into(), "absolute path"),
        ("entrypoint", "entrypoint: ../../evil.py".into(), "'..'"),
        (
            "entrypoint",
            "entrypoint: https://example.com/x.py".into(),
            "looks like a URL",
        ),
        (
            "entrypoint",
            "entrypoint: link.py".into(),
            "outside the pack",
        ),
        ("entrypoint", "entrypoint: nope.py".into(), "does not exist"),
        (
            "runtime",
            "entrypoint: code.py\nruntime_override".into(),
            "not supported",
        ),
        (
            "mode",
            "entrypoint: code.py\nmode: push".into(),
            "'push' is not a mode",
        ),
        (
            "pass_env",
            "entrypoint: code.py\npass_env: [BAD-NAME]".into(),
            "'BAD-NAME' is not a variable name",
        ),
        (
            "pass_env",
            "entrypoint: code.py\npass_env: [ATTUNE__DATABASE__URL]".into(),
            "service's own",
        ),
    ];
    for (field, fragment, reason) in cases {
        let pack = tempfile::tempdir().expect("temp dir");
        write(&pack.path().join("pack.yaml"), "ref: bad\n");
        write(&pack.path().join("triggers/t.yaml"), "ref: t\n");
        write(&pack.path().join("sensors/code.py"), "print('hi')\n");
        std::os::unix::fs::symlink(
            outside.path().join("evil.py"),
            pack.path().join("sensors/link.py"),
        )
        .expect("symlink");
        let runtime = if fragment.contains("runtime_override") {
            "ruby"
        } else {
            "python"
        };
        let fragment = fragment.replace("\nruntime_override", "");
        write(
            &pack.path().join("sensors/s.yaml"),
            &format!("ref: s\nruntime: {runtime}\ntrigger: bad.t\n{fragment}\n"),
        );
        let error = packs::read_pack(pack.path())
            .expect_err(&format!("{fragment} refused"))
            .to_string();
        assert!(
            error.contains("sensors/s.yaml") && error.contains(&format!(": {field}: ")),
            "names the file and {field}: {error}"
        );
        assert!(error.contains(reason), "{fragment}: {error}");
    }

    // runtime: native needs an executable file.
    let pack = tempfile::tempdir().expect("temp dir");
    write(&pack.path().join("pack.yaml"), "ref: bad\n");
    write(&pack.path().join("triggers/t.yaml"), "ref: t\n");
    write(&pack.path().join("sensors/run.sh"), "#!/bin/sh\n");
    write(
        &pack.path().join("sensors/s.yaml"),
        "ref: s\nruntime: native\nentrypoint: run.sh\ntrigger: bad.t\n",
    );
    let error = packs::read_pack(pack.path())
        .expect_err("not executable")
        .to_string();
    assert!(error.contains("not executable"), "{error}");

    // The fixture sensors themselves are fine.
    let good = TestPack::new(&["counter", "stream", "native", "hello", "stubborn"]);
    packs::read_pack(&good.path()).expect("fixture sensors load");
}

#[tokio::test]
async fn process_sensors_drive_the_pipeline_on_postgres_and_rabbitmq() {
    let amqp = support::rabbitmq::require_rabbitmq().await;
    let db = TestDatabase::create().await;
    let exchange = support::rabbitmq::unique_exchange();
    let mut queue = support::rabbitmq::TestQueue::bind(&exchange, "event.created").await;
    let pack = TestPack::new(&["counter", "stream", "native", "hello"]);
    let yaml = json!({
        "database": {"url": db.url},
        "mq": {"url": amqp, "exchange": exchange},
        "admin": {"bind": "127.0.0.1:0"},
        "webhook": {"bind": "127.0.0.1:0"},
        "packs": {"autoload": [pack.path()]},
        "log": {"level": "warn"},
        "sensor": {"reconcile_interval": 3600, "stop_grace": 0.5},
        "shutdown": {"timeout": 5},
    });
    let settings = Settings::from_yaml(&yaml.to_string()).expect("settings");
    let service = Service::start(&settings).await.expect("service starts");

    let counter = wait_events(&service, "proc.counter", 2).await;
    assert_eq!(counter[1].payload["i"], 1);
    let stream = wait_events(&service, "proc.stream", 2).await;
    assert_eq!(stream[1].payload["seq"], 2);
    wait_events(&service, "proc.native", 1).await;
    wait_events(&service, "proc.hello", 1).await;
    // Every runtime's events reach the broker as EventCreated.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let published: BTreeSet<String> = queue
            .received_now()
            .iter()
            .filter_map(|m| {
                let envelope: Value = serde_json::from_str(&m.body).ok()?;
                envelope["payload"]["sensor_ref"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        if ["proc.counter", "proc.stream", "proc.native", "proc.hello"]
            .iter()
            .all(|r| published.contains(*r))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every runtime's events reached RabbitMQ: {published:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_for("enforcements of both sensors", DEADLINE, || async {
        let enforcements = service
            .store
            .recent_enforcements(Some("proc.on_out"), 1000)
            .await
            .expect("enforcements");
        let has = |id| enforcements.iter().any(|e| e.event == id);
        (has(counter[0].id) && has(stream[0].id)).then_some(())
    })
    .await;
    wait_for("the counter's state saved", DEADLINE, || async {
        service
            .store
            .sensor_state("proc.counter")
            .await
            .expect("state")
    })
    .await;

    let report = service.shutdown().await;
    assert!(report.outbox_drained);
    assert!(processes_in(&pack.path()).is_empty());
    queue.finish().await;
}
