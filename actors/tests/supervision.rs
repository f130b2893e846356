//! Lifecycle tests of the actor tree with in-memory adapters.

mod support {
    pub mod memory;
}

use attune_actors::status::{SensorState, TreeStatus};
use attune_actors::supervisor::{ControlError, ReconcileReport};
use attune_actors::{SupervisorArgs, SupervisorConfig, SupervisorMsg, Tree};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use support::memory::{MemoryPublisher, MemoryStore, ScriptedFactory, wait_until};

fn fast_config() -> SupervisorConfig {
    SupervisorConfig {
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(80),
        healthy_after: Duration::from_secs(60),
        reconcile_interval: None,
        outbox_poll: Duration::from_millis(50),
        ..SupervisorConfig::default()
    }
}

struct Harness {
    tree: Tree,
    store: MemoryStore,
    publisher: MemoryPublisher,
    factory: ScriptedFactory,
}

async fn start(store: MemoryStore, config: SupervisorConfig) -> Harness {
    let publisher = MemoryPublisher::default();
    let factory = ScriptedFactory::default();
    let (tree, _handle) = Tree::start(SupervisorArgs {
        config,
        store: Arc::new(store.clone()),
        publisher: Arc::new(publisher.clone()),
        factory: Arc::new(factory.clone()),
        metrics: Arc::new(attune_actors::ports::NoMetrics),
        schemas: Arc::new(attune_actors::ports::NoSchemas),
    })
    .await
    .expect("tree starts");
    Harness {
        tree,
        store,
        publisher,
        factory,
    }
}

impl Harness {
    async fn status(&self) -> TreeStatus {
        self.tree.status()
    }

    async fn wait_for(&self, what: &str, check: impl Fn(&TreeStatus) -> bool) -> TreeStatus {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = self.status().await;
            if check(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting until {what}; last status: {status:#?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn control(
        &self,
        make: fn(String, ractor::RpcReplyPort<Result<(), ControlError>>) -> SupervisorMsg,
        sensor_ref: &str,
    ) -> Result<(), ControlError> {
        let sensor_ref = sensor_ref.to_owned();
        self.tree
            .supervisor
            .call(
                |reply| make(sensor_ref, reply),
                Some(Duration::from_secs(10)),
            )
            .await
            .expect("supervisor answers")
            .unwrap()
    }

    async fn reconcile(&self) -> ReconcileReport {
        ractor::call!(self.tree.supervisor, |reply| SupervisorMsg::Reconcile(
            Some(reply)
        ))
        .expect("supervisor answers")
        .expect("reconcile succeeds")
    }
}

fn state_of(status: &TreeStatus, sensor_ref: &str) -> Option<SensorState> {
    status.sensor(sensor_ref).map(|s| s.state)
}

fn store_with(sensors: &[(&str, &str)]) -> MemoryStore {
    let store = MemoryStore::default();
    store.add_trigger("test.tick");
    for (sensor_ref, behaviour) in sensors {
        store.add_sensor(sensor_ref, "test.tick", behaviour);
    }
    store
}

async fn assert_fails_after_max_attempts(behaviour: &str) {
    let h = start(store_with(&[("test.bad", behaviour)]), fast_config()).await;
    let began = Instant::now();
    let status = h
        .wait_for("the sensor is failed", |s| {
            state_of(s, "test.bad") == Some(SensorState::Failed)
        })
        .await;
    let elapsed = began.elapsed();
    let sensor = status.sensor("test.bad").expect("tracked");
    assert_eq!(
        sensor.restart_count, 3,
        "{behaviour}: restarted max_restart_attempts times"
    );
    assert_eq!(
        sensor.failure_count, 4,
        "{behaviour}: the first run and three restarts failed"
    );
    assert_eq!(h.factory.created("test.bad"), 4);
    assert!(sensor.last_error.is_some());
    // Backoff doubles: 20 + 40 + 80 ms at least between the four attempts.
    assert!(
        elapsed >= Duration::from_millis(140),
        "{behaviour}: restarted too fast: {elapsed:?}"
    );

    // It stays down: no further attempts happen on their own.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.factory.created("test.bad"), 4);

    // An operator restart brings it back and resets the consecutive failures.
    h.factory.healthy.store(true, Ordering::SeqCst);
    h.control(SupervisorMsg::RestartSensor, "test.bad")
        .await
        .expect("restart accepted");
    let status = h
        .wait_for("the restarted sensor emits", |s| {
            s.sensor("test.bad")
                .is_some_and(|x| x.activity.events_emitted > 0)
        })
        .await;
    let sensor = status.sensor("test.bad").expect("tracked");
    assert_eq!(sensor.state, SensorState::Running);
    assert_eq!(sensor.failure_count, 0);
    assert_eq!(sensor.restart_count, 4);
}

#[tokio::test]
async fn failing_sensor_is_restarted_with_backoff_then_failed_then_operator_restarted() {
    assert_fails_after_max_attempts("fail").await;
}

#[tokio::test]
async fn panicking_sensor_follows_the_same_policy() {
    assert_fails_after_max_attempts("panic").await;
}

#[tokio::test]
async fn sensor_refused_at_start_follows_the_same_policy() {
    assert_fails_after_max_attempts("refuse").await;
}

#[tokio::test]
async fn no_automatic_restart_when_restart_on_error_is_off() {
    let config = SupervisorConfig {
        restart_on_error: false,
        ..fast_config()
    };
    let h = start(store_with(&[("test.bad", "fail")]), config).await;
    let status = h
        .wait_for("the sensor is failed", |s| {
            state_of(s, "test.bad") == Some(SensorState::Failed)
        })
        .await;
    assert_eq!(status.sensor("test.bad").map(|s| s.restart_count), Some(0));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(h.factory.created("test.bad"), 1);
}

#[tokio::test]
async fn a_failing_sensor_leaves_the_others_and_the_pipeline_running() {
    let h = start(
        store_with(&[("test.bad", "panic"), ("test.good", "tick")]),
        fast_config(),
    )
    .await;
    h.wait_for("the bad sensor is failed", |s| {
        state_of(s, "test.bad") == Some(SensorState::Failed)
    })
    .await;
    let before = h.store.events_of("test.good");
    wait_until(
        "the good sensor keeps emitting",
        Duration::from_secs(5),
        || h.store.events_of("test.good") >= before + 5,
    )
    .await;
    let status = h.status().await;
    assert_eq!(state_of(&status, "test.good"), Some(SensorState::Running));
    assert_eq!(status.sensor("test.good").map(|s| s.failure_count), Some(0));
    assert!(
        status.pipeline.iter().all(|p| p.restart_count == 0),
        "{status:#?}"
    );
}

#[tokio::test]
async fn consecutive_count_resets_after_a_healthy_period() {
    let config = SupervisorConfig {
        healthy_after: Duration::from_millis(40),
        ..fast_config()
    };
    // Fails after 100 ms of running each time: always healthy for longer than 40 ms.
    let h = start(store_with(&[("test.flaky", "fail_later")]), config).await;
    wait_until("six runs happened", Duration::from_secs(10), || {
        h.factory.created("test.flaky") >= 6
    })
    .await;
    let status = h.status().await;
    let sensor = status.sensor("test.flaky").expect("tracked");
    assert_ne!(sensor.state, SensorState::Failed, "{sensor:#?}");
    assert!(sensor.failure_count <= 1, "{sensor:#?}");
    assert!(sensor.restart_count >= 5);
}

#[tokio::test]
async fn a_recovered_sensor_shows_no_failures_once_it_has_run_healthy_after() {
    let config = SupervisorConfig {
        healthy_after: Duration::from_secs(2),
        ..fast_config()
    };
    let h = start(store_with(&[("test.bad", "fail")]), config).await;
    h.wait_for("the first failure", |s| {
        s.sensor("test.bad").is_some_and(|x| x.failure_count >= 1)
    })
    .await;
    h.factory.healthy.store(true, Ordering::SeqCst);
    let recovered = h
        .wait_for("running and emitting again", |s| {
            s.sensor("test.bad")
                .is_some_and(|x| x.state == SensorState::Running && x.activity.events_emitted > 0)
        })
        .await;
    let failures = recovered.sensor("test.bad").map(|x| x.failure_count);
    assert!(
        failures >= Some(1),
        "the count stands until the run is healthy: {failures:?}"
    );
    h.wait_for("the count reset after healthy_after", |s| {
        s.sensor("test.bad").is_some_and(|x| x.failure_count == 0)
    })
    .await;
}

#[tokio::test]
async fn sensors_of_a_trigger_share_one_lookup_and_an_unknown_trigger_fails_only_its_sensor() {
    let store = store_with(&[("test.a", "tick"), ("test.b", "tick"), ("test.c", "tick")]);
    store.add_sensor("test.orphan", "test.missing", "tick");
    let h = start(store.clone(), fast_config()).await;
    let status = h
        .wait_for("the orphan has failed for good", |s| {
            state_of(s, "test.orphan") == Some(SensorState::Failed)
        })
        .await;
    for sensor_ref in ["test.a", "test.b", "test.c"] {
        assert_eq!(
            state_of(&status, sensor_ref),
            Some(SensorState::Running),
            "{status:#?}"
        );
    }
    let error = status
        .sensor("test.orphan")
        .and_then(|s| s.last_error.clone())
        .unwrap_or_default();
    assert!(
        error.contains("names unknown trigger 'test.missing'"),
        "{error}"
    );
    // One lookup for the three sensors of test.tick; a failed lookup is not remembered,
    // so each of the orphan's four attempts asked again.
    assert_eq!(h.store.trigger_lookups.load(Ordering::SeqCst), 1 + 4);

    // Once the trigger exists, an operator restart finds it.
    store.add_trigger("test.missing");
    h.control(SupervisorMsg::RestartSensor, "test.orphan")
        .await
        .expect("restart accepted");
    h.wait_for("the orphan runs", |s| {
        state_of(s, "test.orphan") == Some(SensorState::Running)
    })
    .await;
}

#[tokio::test]
async fn operator_stop_and_start() {
    let h = start(store_with(&[("test.a", "tick")]), fast_config()).await;
    h.wait_for("running", |s| {
        state_of(s, "test.a") == Some(SensorState::Running)
    })
    .await;
    h.control(SupervisorMsg::StopSensor, "test.a")
        .await
        .expect("stop accepted");
    assert_eq!(
        state_of(&h.status().await, "test.a"),
        Some(SensorState::Stopped)
    );
    let stopped_at = h.store.events_of("test.a");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        h.store.events_of("test.a"),
        stopped_at,
        "a stopped sensor emits nothing"
    );
    // A reconcile leaves an operator-stopped sensor alone only when it is unchanged.
    h.control(SupervisorMsg::StartSensor, "test.a")
        .await
        .expect("start accepted");
    wait_until("emitting again", Duration::from_secs(5), || {
        h.store.events_of("test.a") > stopped_at
    })
    .await;
    assert_eq!(
        h.control(SupervisorMsg::StopSensor, "test.missing").await,
        Err(ControlError::UnknownSensor("test.missing".into()))
    );
    assert_eq!(
        h.control(SupervisorMsg::RestartSensor, "test.missing")
            .await,
        Err(ControlError::UnknownSensor("test.missing".into()))
    );
}

#[tokio::test]
async fn reconcile_starts_new_stops_removed_and_restarts_changed_sensors() {
    let h = start(
        store_with(&[
            ("test.keep", "tick"),
            ("test.change", "tick"),
            ("test.remove", "tick"),
        ]),
        fast_config(),
    )
    .await;
    h.wait_for("all three run", |s| {
        ["test.keep", "test.change", "test.remove"]
            .iter()
            .all(|r| state_of(s, r) == Some(SensorState::Running))
    })
    .await;
    assert_eq!(h.factory.created("test.keep"), 1);

    h.store.update_sensor("test.remove", |s| s.enabled = false);
    h.store
        .update_sensor("test.change", |s| s.poll_interval = Some(5));
    h.store.add_sensor("test.new", "test.tick", "tick");
    let report = h.reconcile().await;
    assert_eq!(report.started, vec!["test.new".to_owned()]);
    assert_eq!(report.stopped, vec!["test.remove".to_owned()]);
    assert_eq!(report.restarted, vec!["test.change".to_owned()]);

    let status = h.status().await;
    assert!(status.sensor("test.remove").is_none());
    assert_eq!(state_of(&status, "test.new"), Some(SensorState::Running));
    assert_eq!(
        h.factory.created("test.keep"),
        1,
        "unchanged sensors are left alone"
    );
    assert_eq!(h.factory.created("test.change"), 2);

    assert_eq!(
        h.reconcile().await,
        ReconcileReport::default(),
        "a second reconcile changes nothing"
    );
}

#[tokio::test]
async fn system_event_flows_to_enforcements_and_the_bus() {
    let store = store_with(&[]);
    store.add_rule(
        "test.on_main",
        "test.tick",
        json!({"field": "payload.branch", "operator": "equals", "value": "main"}),
    );
    store.add_rule("test.on_any", "test.tick", json!([]));
    let h = start(store, fast_config()).await;

    let outcome = h
        .tree
        .system_events
        .emit("test.tick", json!({"branch": "main"}))
        .await
        .expect("emitted");
    assert_eq!(outcome.enforcement_ids.len(), 2);
    let outcome = h
        .tree
        .system_events
        .emit("test.tick", json!({"branch": "dev"}))
        .await
        .expect("emitted");
    assert_eq!(outcome.enforcement_ids.len(), 1);
    assert!(
        h.tree
            .system_events
            .emit("test.unknown", json!({}))
            .await
            .is_err()
    );

    wait_until("5 messages published", Duration::from_secs(5), || {
        h.publisher.published.lock().unwrap().len() == 5
    })
    .await;
    let published = h.publisher.published.lock().unwrap().clone();
    let keys: Vec<&str> = published.iter().map(|m| m.routing_key.as_str()).collect();
    assert_eq!(keys.iter().filter(|k| **k == "event.created").count(), 2);
    assert_eq!(
        keys.iter().filter(|k| **k == "enforcement.created").count(),
        3
    );
    let enforcement = h
        .store
        .enforcements()
        .into_iter()
        .find(|e| e.rule_ref == "test.on_main")
        .expect("stored");
    assert_eq!(enforcement.condition, "all");
    assert_eq!(enforcement.status, "created");
}

#[tokio::test]
async fn nothing_is_lost_while_the_database_or_broker_is_down() {
    let h = start(store_with(&[]), fast_config()).await;
    h.store.add_rule("test.all", "test.tick", json!([]));
    h.publisher.down.store(true, Ordering::SeqCst);
    h.store.down.store(true, Ordering::SeqCst);
    let events = h.tree.system_events.clone();
    let pending = tokio::spawn(async move { events.emit("test.tick", json!({"k": 1})).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(!pending.is_finished(), "the event waits for the database");
    h.store.down.store(false, Ordering::SeqCst);
    let outcome = pending
        .await
        .expect("joined")
        .expect("stored after the database came back");
    assert_eq!(outcome.enforcement_ids.len(), 1);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(h.publisher.published.lock().unwrap().is_empty());
    h.publisher.down.store(false, Ordering::SeqCst);
    wait_until("both messages published", Duration::from_secs(5), || {
        h.publisher.published.lock().unwrap().len() == 2
    })
    .await;
}

/// A batch the database refuses is narrowed down to the event it refuses: only that one is
/// answered with the refusal, the others are stored.
#[tokio::test]
async fn a_refused_event_is_isolated_and_the_rest_of_its_batch_is_stored() {
    let store = store_with(&[]);
    let h = start(store, fast_config()).await;
    // While the store is down the events pile up, so they are written as one batch.
    h.store.down.store(true, Ordering::SeqCst);
    let mut sent = Vec::new();
    for n in 0..7 {
        let events = h.tree.system_events.clone();
        let payload = json!({"n": n, "poison": n == 4});
        sent.push(tokio::spawn(async move {
            events.emit("test.tick", payload).await
        }));
    }
    wait_until(
        "all seven wait to be stored",
        Duration::from_secs(5),
        || h.tree.system_events.pending() == 7,
    )
    .await;
    h.store.down.store(false, Ordering::SeqCst);
    let mut stored = Vec::new();
    let mut refused = Vec::new();
    for (n, outcome) in sent.into_iter().enumerate() {
        match outcome.await.expect("task") {
            Ok(_) => stored.push(n),
            Err(attune_actors::ports::IntakeError::InvalidPayload(reason)) => {
                assert!(reason.contains("poisoned payload"), "{reason}");
                refused.push(n);
            }
            Err(other) => panic!("event {n}: {other}"),
        }
    }
    assert_eq!(refused, [4]);
    assert_eq!(stored, [0, 1, 2, 3, 5, 6]);
    let numbers: Vec<i64> = h
        .store
        .payloads()
        .iter()
        .filter_map(|p| p["n"].as_i64())
        .collect();
    assert_eq!(
        numbers,
        [0, 1, 2, 3, 5, 6],
        "stored in order, the refused one left out"
    );
}

/// One deadline for the whole shutdown: a sensor that ignores its stop and a broker that
/// is down cannot hold it past the deadline and the fixed tail.
#[tokio::test]
async fn shutdown_ends_by_its_deadline_whatever_sensors_and_broker_do() {
    let config = SupervisorConfig {
        stop_grace: Duration::from_secs(30),
        stop_timeout: Duration::from_secs(30),
        ..fast_config()
    };
    let h = start(
        store_with(&[("test.stubborn", "stubborn"), ("test.a", "tick")]),
        config,
    )
    .await;
    h.publisher.down.store(true, Ordering::SeqCst);
    wait_until("some events", Duration::from_secs(5), || {
        h.store.events_of("test.a") >= 3
    })
    .await;
    let asked = Instant::now();
    let report = h
        .tree
        .supervisor
        .call(
            |reply| {
                SupervisorMsg::Shutdown(
                    tokio::time::Instant::now() + Duration::from_millis(800),
                    reply,
                )
            },
            Some(Duration::from_secs(10)),
        )
        .await
        .expect("supervisor answers");
    let took = asked.elapsed();
    let ractor::rpc::CallResult::Success(report) = report else {
        panic!("no shutdown report within 10 s");
    };
    assert!(
        took < Duration::from_millis(800 + 1000),
        "shutdown took {took:?} with an 800 ms deadline"
    );
    assert!(report.in_flight_written, "{report:?}");
    assert!(!report.outbox_drained, "the broker is down: {report:?}");
}

#[tokio::test]
async fn shutdown_stops_sensors_and_drains_the_outbox() {
    let h = start(store_with(&[("test.a", "tick")]), fast_config()).await;
    wait_until("some events", Duration::from_secs(5), || {
        h.store.events_of("test.a") >= 3
    })
    .await;
    let report = ractor::call!(h.tree.supervisor, |reply| SupervisorMsg::Shutdown(
        tokio::time::Instant::now() + Duration::from_secs(5),
        reply
    ))
    .expect("shutdown answers");
    assert!(report.outbox_drained);
    let events = h.store.events_of("test.a");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        h.store.events_of("test.a"),
        events,
        "no sensor runs after shutdown"
    );
    let published = h.publisher.published.lock().unwrap().len();
    assert_eq!(published, events, "every stored event was published");
}

#[tokio::test]
async fn events_stored_but_never_matched_are_matched_on_start() {
    use attune_actors::domain::NewEvent;
    use attune_actors::ports::Store;
    let store = store_with(&[]);
    store.add_rule("test.all", "test.tick", json!([]));
    // A previous run stored these events and stopped before matching them.
    let orphans: Vec<NewEvent> = (0..3)
        .map(|n| NewEvent {
            trigger: None,
            trigger_ref: "test.tick".into(),
            config: json!({}),
            payload: json!({"n": n}),
            source: None,
            source_ref: None,
            idempotency_key: None,
            dedup_key: None,
            traceparent: None,
            lease: None,
        })
        .collect();
    let stored = store.create_events(orphans).await.expect("stored");
    let stored: Vec<_> = stored.into_iter().map(|w| w.into_event()).collect();
    let h = start(store, fast_config()).await;
    // A new event arriving while the orphans are recovered waits behind them.
    let fresh = h
        .tree
        .system_events
        .emit("test.tick", json!({"fresh": true}))
        .await
        .expect("emitted");
    assert_eq!(fresh.enforcement_ids.len(), 1);
    wait_until(
        "the orphans got their enforcements",
        Duration::from_secs(5),
        || h.store.enforcements().len() == 4,
    )
    .await;
    let enforced: Vec<i64> = h.store.enforcements().iter().map(|e| e.event).collect();
    let mut expected: Vec<i64> = stored.iter().map(|e| e.id).collect();
    expected.push(fresh.event_id);
    assert_eq!(
        enforced, expected,
        "orphans first, in order, then the new event"
    );
    let last = fresh.event_id;
    wait_until(
        "the watermark passes the orphans and the new event",
        Duration::from_secs(5),
        || h.store.matched_through_now() == last,
    )
    .await;
}

#[tokio::test]
async fn graceful_drivers_finish_their_cleanup_on_stop_restart_and_shutdown() {
    let h = start(store_with(&[("test.g", "graceful")]), fast_config()).await;
    h.wait_for("running", |s| {
        state_of(s, "test.g") == Some(SensorState::Running)
    })
    .await;
    h.control(SupervisorMsg::StopSensor, "test.g")
        .await
        .expect("stop accepted");
    assert_eq!(
        h.factory.clean_stops.load(Ordering::SeqCst),
        1,
        "stop waits for the cleanup"
    );
    h.control(SupervisorMsg::StartSensor, "test.g")
        .await
        .expect("start accepted");
    h.control(SupervisorMsg::RestartSensor, "test.g")
        .await
        .expect("restart accepted");
    assert_eq!(h.factory.clean_stops.load(Ordering::SeqCst), 2);
    ractor::call!(h.tree.supervisor, |reply| SupervisorMsg::Shutdown(
        tokio::time::Instant::now() + Duration::from_secs(5),
        reply
    ))
    .expect("shutdown answers");
    assert_eq!(h.factory.clean_stops.load(Ordering::SeqCst), 3);
}
