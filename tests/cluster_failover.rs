//! Several real `attune-sensor` processes on one PostgreSQL database (issue 9): leased
//! sensors run once and spread; `kill -9` of an instance moves its sensors within
//! `lease_ttl` + 5 s; an instance paused past its leases cannot store events from the
//! sensors it lost; a rolling restart of every instance keeps each sensor down at most a
//! few seconds and never runs one twice. Each interval timer fires every second, so its
//! stored instants show both: an instant stored twice is a sensor run twice (or a move
//! that fired an instant again), a wide gap between instants is a sensor down.

mod support {
    pub mod cluster;
    pub mod postgres;
    pub mod processes;
    pub mod triggers;
}

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::json;
use support::cluster::*;
use support::postgres::TestDatabase;
use support::triggers::write_pack;

const TTL: u64 = 3;
const TIMERS: usize = 6;

fn timer_pack(root: &Path) -> PathBuf {
    let sensors: Vec<(String, String)> = (0..TIMERS)
        .map(|i| {
            (
                format!("t{i}"),
                format!(
                    "ref: t{i}\nruntime: builtin\nentrypoint: interval_timer\ntrigger: fo.hit\nconfig:\n  interval: 1\n"
                ),
            )
        })
        .collect();
    let sensors: Vec<(&str, String)> = sensors
        .iter()
        .map(|(name, text)| (name.as_str(), text.clone()))
        .collect();
    write_pack(
        root,
        "fo",
        &sensors,
        &[("every", "ref: every\ntrigger: fo.hit\naction: core.noop\n")],
    )
}

fn all_held_by(holders: &std::collections::BTreeMap<String, String>, ids: &[&str]) -> bool {
    holders.len() == TIMERS && holders.values().all(|h| ids.contains(&h.as_str()))
}

/// The share bound: none holds more than ⌈N/k⌉ + 1, and every instance holds one.
fn spread(holders: &std::collections::BTreeMap<String, String>, ids: &[&str]) -> bool {
    let counts = counts(holders);
    let bound = TIMERS.div_ceil(ids.len()) + 1;
    all_held_by(holders, ids)
        && ids
            .iter()
            .all(|id| counts.get(id).copied().unwrap_or(0) >= 1)
        && counts.values().all(|n| *n <= bound)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_spread_fail_over_after_kill_and_fence_a_paused_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = TestDatabase::create().await;
    let pack = timer_pack(dir.path());
    let mut reader = Db::connect(&db.url).await;
    let start = |id: &'static str| start_instance(dir.path(), &db.url, &pack, id, json!({}), TTL);
    let a = start("a").await;
    let b = start("b").await;
    let c = start("c").await;

    let (holders, took) = wait_holders(
        &mut reader,
        Duration::from_secs(30),
        "spread over a, b, c",
        |h| spread(h, &["a", "b", "c"]),
    )
    .await;
    eprintln!("spread in {took:?}: {:?}", counts(&holders));

    // Events posted to every instance are each matched once, by whichever received them.
    for instance in [&a, &b, &c] {
        for n in 0..5 {
            instance
                .post_event("fo.hit", json!({"posted_to": instance.id, "n": n}))
                .await;
        }
    }

    // kill -9 c: its sensors run elsewhere within lease_ttl + 5 s.
    let held_by_c: BTreeSet<String> = holders
        .iter()
        .filter(|(_, h)| *h == "c")
        .map(|(s, _)| s.clone())
        .collect();
    c.kill().await;
    let (_, took) = wait_holders(
        &mut reader,
        Duration::from_secs(TTL + 5),
        "c's sensors taken by a and b",
        |h| all_held_by(h, &["a", "b"]),
    )
    .await;
    eprintln!("after kill -9, {held_by_c:?} moved in {took:?}");

    // SIGSTOP b past its leases: a takes them; b, resumed, cannot store from them.
    let (before_pause, _) =
        wait_holders(&mut reader, Duration::from_secs(10), "b holds some", |h| {
            all_held_by(h, &["a", "b"]) && h.values().any(|holder| holder == "b")
        })
        .await;
    b.signal(Signal::SIGSTOP);
    let (_, took) = wait_holders(
        &mut reader,
        Duration::from_secs(TTL + 5),
        "b's sensors taken by a while b is paused",
        |h| all_held_by(h, &["a"]),
    )
    .await;
    eprintln!(
        "b paused: a took every sensor in {took:?} (b held {:?})",
        counts(&before_pause)
    );
    let events_before_resume = reader.instants().await;
    b.signal(Signal::SIGCONT);
    // b learns it lost the leases at its next tick; until then its timers try to emit
    // under the old generations, and the store refuses them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = b.status().await;
        let sensors = status["sensors"].as_array().cloned().unwrap_or_default();
        if sensors
            .iter()
            .all(|s| s["lease"].is_null() || s["state"] != "running")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "b still runs sensors it lost: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Both go on; a and b share the sensors again.
    wait_holders(
        &mut reader,
        Duration::from_secs(30),
        "spread over a and b",
        |h| spread(h, &["a", "b"]),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let instants = reader.instants().await;
    let widest = assert_each_instant_once(&instants);
    eprintln!("widest gap between a timer's instants: {widest} s");
    for (sensor, fired) in &events_before_resume {
        assert!(
            instants[sensor].len() >= fired.len(),
            "{sensor} lost events"
        );
    }
    // Every event (timer or posted) has its one enforcement.
    let events = wait_each_event_enforced_once(&mut reader, Duration::from_secs(10)).await;
    assert!(events > 15, "{events} events");
    let b_log = b.log();
    a.terminate(Duration::from_secs(15)).await;
    b.terminate(Duration::from_secs(15)).await;
    assert!(
        b_log.contains("sensor lease lost") || b_log.contains("refused"),
        "b says it lost its leases:\n{b_log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_keeps_every_sensor_running_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = TestDatabase::create().await;
    let pack = timer_pack(dir.path());
    let mut reader = Db::connect(&db.url).await;
    let start = |id: String| {
        let (root, url, pack) = (dir.path().to_owned(), db.url.clone(), pack.clone());
        async move { start_instance(&root, &url, &pack, &id, json!({}), TTL).await }
    };
    let mut instances = vec![
        start("a1".into()).await,
        start("b1".into()).await,
        start("c1".into()).await,
    ];
    wait_holders(&mut reader, Duration::from_secs(30), "spread", |h| {
        spread(h, &["a1", "b1", "c1"])
    })
    .await;
    let before = reader.instants().await;
    assert_each_instant_once(&before);

    // Replace each instance in turn, as a rolling deploy does: the new one starts, then
    // the old one gets SIGTERM.
    for (i, name) in ["a2", "b2", "c2"].into_iter().enumerate() {
        let new = start(name.to_owned()).await;
        let old = std::mem::replace(&mut instances[i], new);
        old.terminate(Duration::from_secs(15)).await;
        let live: Vec<String> = instances.iter().map(|x| x.id.clone()).collect();
        wait_holders(
            &mut reader,
            Duration::from_secs(10),
            "all held by live instances",
            |h| all_held_by(h, &live.iter().map(String::as_str).collect::<Vec<_>>()),
        )
        .await;
    }
    wait_holders(
        &mut reader,
        Duration::from_secs(30),
        "spread over the new ones",
        |h| spread(h, &["a2", "b2", "c2"]),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let instants = reader.instants().await;
    let widest = assert_each_instant_once(&instants);
    eprintln!("rolling restart: widest gap between a timer's instants {widest} s");
    // An instant every second; a handover within 3 s leaves at most 4 s between two.
    assert!(
        widest <= 4.0,
        "a sensor was down too long: {widest} s; {instants:?}"
    );
    for instance in instances {
        instance.terminate(Duration::from_secs(15)).await;
    }
}
