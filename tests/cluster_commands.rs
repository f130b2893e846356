//! Several real instances on one PostgreSQL database (issue 9): operator commands and
//! reloads work on whichever instance receives them, a label selector keeps a sensor on
//! the instances whose labels match, and every instance serves every webhook.

mod support {
    pub mod cluster;
    pub mod postgres;
    pub mod processes;
    pub mod triggers;
}

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use support::cluster::*;
use support::postgres::TestDatabase;
use support::triggers::write_pack;
use tokio::time::Instant;

const TTL: u64 = 3;
/// Plain timers, placed anywhere.
const TIMERS: usize = 4;
/// Within this a forwarded command or reload is acted on (a tick is at most 1 s).
const ACTS_WITHIN: Duration = Duration::from_secs(5);

fn pack(root: &Path) -> PathBuf {
    let mut sensors: Vec<(String, String)> = (0..TIMERS)
        .map(|i| {
            (
                format!("t{i}"),
                format!(
                    "ref: t{i}\nruntime: builtin\nentrypoint: interval_timer\ntrigger: cx.hit\nconfig:\n  interval: 1\n"
                ),
            )
        })
        .collect();
    sensors.push((
        "local".into(),
        "ref: local\nruntime: builtin\nentrypoint: interval_timer\ntrigger: cx.hit\n\
         placement:\n  labels:\n    host: build-01\nconfig:\n  interval: 1\n"
            .into(),
    ));
    sensors.push((
        "nowhere".into(),
        "ref: nowhere\nruntime: builtin\nentrypoint: interval_timer\ntrigger: cx.hit\n\
         placement:\n  labels:\n    host: no-such-host\nconfig:\n  interval: 1\n"
            .into(),
    ));
    sensors.push((
        "hook".into(),
        "ref: hook\nruntime: builtin\nentrypoint: webhook\ntrigger: cx.hit\nconfig:\n  path: in\n"
            .into(),
    ));
    let sensors: Vec<(&str, String)> = sensors
        .iter()
        .map(|(name, text)| (name.as_str(), text.clone()))
        .collect();
    write_pack(
        root,
        "cx",
        &sensors,
        &[("every", "ref: every\ntrigger: cx.hit\naction: core.noop\n")],
    )
}

/// Polls `check` on `instance`'s status entry of `sensor_ref` until it holds.
async fn wait_sensor(
    instance: &Instance,
    sensor_ref: &str,
    what: &str,
    check: impl Fn(Option<&Value>) -> bool,
) -> Duration {
    let began = Instant::now();
    loop {
        let entry = instance.sensor(sensor_ref).await;
        if check(entry.as_ref()) {
            return began.elapsed();
        }
        assert!(
            began.elapsed() < ACTS_WITHIN,
            "{what}: {sensor_ref} on {} is {entry:?}",
            instance.id
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn is_running(entry: Option<&Value>) -> bool {
    entry.is_some_and(|s| s["state"] == "running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_reloads_labels_and_webhooks_work_across_instances() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = TestDatabase::create().await;
    let pack = pack(dir.path());
    let mut reader = Db::connect(&db.url).await;
    let a = start_instance(
        dir.path(),
        &db.url,
        &pack,
        "a",
        json!({"host": "build-01"}),
        TTL,
    )
    .await;
    let b = start_instance(dir.path(), &db.url, &pack, "b", json!({}), TTL).await;
    let (holders, _) = wait_holders(
        &mut reader,
        Duration::from_secs(30),
        "every leased sensor held, b holding some",
        |h| h.len() == TIMERS + 1 && h.values().any(|holder| holder == "b"),
    )
    .await;

    // The label selector: only a, whose labels match, ever holds cx.local.
    assert_eq!(holders["cx.local"], "a", "{holders:?}");
    let on_b = holders
        .iter()
        .find(|(_, holder)| *holder == "b")
        .map(|(sensor, _)| sensor.clone())
        .expect("b holds one");

    // Restart, stop and start of b's sensor, sent to a.
    let restarts =
        |entry: Option<&Value>| entry.map_or(0, |s| s["restart_count"].as_u64().unwrap_or(0));
    let before = restarts(b.sensor(&on_b).await.as_ref());
    let (code, answer) = a.control(&on_b, "restart").await;
    assert_eq!(code, 202, "{answer}");
    assert_eq!(answer["forwarded_to"], "b", "{answer}");
    let took = wait_sensor(&b, &on_b, "restarted by its holder", |s| {
        restarts(s) > before && is_running(s)
    })
    .await;
    eprintln!("restart sent to a, done by b in {took:?}");
    let (code, answer) = a.control(&on_b, "stop").await;
    assert_eq!(code, 202, "{answer}");
    let took = wait_sensor(&b, &on_b, "stopped by its holder", |s| {
        s.is_some_and(|s| s["state"] == "stopped")
    })
    .await;
    eprintln!("stop sent to a, done by b in {took:?}");
    let (code, answer) = a.control(&on_b, "start").await;
    assert_eq!(code, 202, "{answer}");
    let took = wait_sensor(&b, &on_b, "started by its holder", is_running).await;
    eprintln!("start sent to a, done by b in {took:?}");
    // A command for a sensor nobody has answers as before; one no live instance may run
    // (its labels match none) is refused, not queued for nobody.
    let (code, _) = a.control("cx.nothing", "restart").await;
    assert_eq!(code, 404);
    let (code, answer) = a.control("cx.nowhere", "restart").await;
    assert_eq!(code, 409, "{answer}");

    // Every instance serves the webhook; the event is stored by whichever received it.
    let http = reqwest::Client::new();
    for instance in [&a, &b] {
        let answer = http
            .post(format!("http://{}/webhooks/in", instance.webhook))
            .json(&json!({"via": instance.id}))
            .send()
            .await
            .expect("POST webhook");
        assert!(
            answer.status().is_success(),
            "webhook on {}: {}",
            instance.id,
            answer.status()
        );
    }
    for id in ["a", "b"] {
        let stored = reader
            .count(&format!(
                "SELECT count(*) AS n FROM attune.event \
                 WHERE trigger_ref = 'cx.hit' AND stored_by = '{id}' AND payload->'body'->>'via' = '{id}'"
            ))
            .await;
        assert_eq!(stored, 1, "the webhook posted to {id} is stored by {id}");
    }

    // A reload on a reaches b: the sensor disabled in the database stops on its holder
    // (the instances' own reconcile runs only hourly here).
    reader
        .execute(&format!(
            "UPDATE attune.sensor SET enabled = false WHERE ref = '{on_b}'"
        ))
        .await;
    a.reload().await;
    let took = wait_sensor(&b, &on_b, "stopped after the reload sent to a", |s| {
        s.is_none()
    })
    .await;
    eprintln!("reload sent to a, {on_b} gone from b in {took:?}");
    let (holders, _) = wait_holders(
        &mut reader,
        ACTS_WITHIN,
        "the disabled sensor's lease let go",
        |h| !h.contains_key(&on_b),
    )
    .await;
    assert_eq!(holders["cx.local"], "a");

    // b stops: cx.local stays with a (b may not run it), the rest move to a.
    b.terminate(Duration::from_secs(15)).await;
    let (holders, _) = wait_holders(
        &mut reader,
        Duration::from_secs(TTL + 5),
        "a holds everything left",
        |h| h.len() == TIMERS && h.values().all(|holder| holder == "a"),
    )
    .await;
    eprintln!("after b stopped: {holders:?}");
    a.terminate(Duration::from_secs(15)).await;
}
