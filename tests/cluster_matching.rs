//! Matching with several instances on one PostgreSQL database (issue 9): each instance
//! matches the events it stores and keeps its own watermark; when one dies between
//! committing events and committing their enforcements, a live instance matches what it
//! left, once.

mod support {
    pub mod cluster;
    pub mod postgres;
    pub mod processes;
    pub mod triggers;
}

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use support::cluster::*;
use support::postgres::TestDatabase;
use support::triggers::write_pack;
use tokio::time::Instant;

const TTL: u64 = 3;
const LEFT_BEHIND: i64 = 20;

/// Events stored by `instance` that have no enforcement yet.
fn unmatched_of(instance: &str) -> String {
    format!(
        "SELECT count(*) AS n FROM attune.event e WHERE e.stored_by = '{instance}' \
         AND NOT EXISTS (SELECT 1 FROM attune.enforcement f WHERE f.event = e.id)"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instances_unmatched_events_are_matched_by_a_live_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = TestDatabase::create().await;
    let pack = write_pack(
        dir.path(),
        "mx",
        &[],
        &[("every", "ref: every\ntrigger: mx.hit\naction: core.noop\n")],
    );
    let mut reader = Db::connect(&db.url).await;
    let a = start_instance(dir.path(), &db.url, &pack, "a", json!({}), TTL).await;
    let b = start_instance(dir.path(), &db.url, &pack, "b", json!({}), TTL).await;

    // A flood into b, killed in the middle of it: some of what b stored may have no
    // enforcement yet when it dies.
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicUsize::new(0));
    let admin = b.admin;
    let posters: Vec<_> = (0..8)
        .map(|client| {
            let (stop, accepted) = (stop.clone(), accepted.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let sent = http
                        .post(format!("http://{admin}/events"))
                        .json(&json!({"trigger_ref": "mx.hit", "payload": {"client": client, "n": n}}))
                        .send()
                        .await;
                    if sent.is_ok_and(|answer| answer.status().is_success()) {
                        accepted.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while reader
        .count("SELECT count(*) AS n FROM attune.event WHERE stored_by = 'b'")
        .await
        < 300
    {
        assert!(
            Instant::now() < deadline,
            "b stored too little:\n{}",
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    b.kill().await;
    stop.store(true, Ordering::SeqCst);
    for poster in posters {
        let _ = poster.await;
    }
    let unmatched_at_kill = reader.count(&unmatched_of("b")).await;

    // And what an instance killed between its two commits leaves, for certain: events
    // stored by b above b's watermark, with no enforcement.
    reader
        .execute(&format!(
            "INSERT INTO attune.event (trigger_ref, config, payload, created, stored_by) \
             SELECT 'mx.hit', '{{}}', jsonb_build_object('left', n), now(), 'b' \
             FROM generate_series(1, {LEFT_BEHIND}) AS n"
        ))
        .await;
    let killed = Instant::now();
    let stored_by_b = reader
        .count("SELECT count(*) AS n FROM attune.event WHERE stored_by = 'b'")
        .await;

    let deadline = killed + Duration::from_secs(TTL + 10);
    loop {
        let left = reader.count(&unmatched_of("b")).await;
        let watermark = reader
            .count("SELECT count(*) AS n FROM attune.matcher_watermark WHERE instance = 'b'")
            .await;
        if left == 0 && watermark == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} of b's events unmatched, watermark rows {watermark}, {:?} after kill -9:\n{}",
            killed.elapsed(),
            a.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "b stored {stored_by_b} events ({} posts accepted); {unmatched_at_kill} had no \
         enforcement at kill -9, plus {LEFT_BEHIND} left above its watermark; a matched \
         them all {:?} after the kill",
        accepted.load(Ordering::SeqCst),
        killed.elapsed()
    );
    wait_each_event_enforced_once(&mut reader, Duration::from_secs(10)).await;
    assert!(
        a.log()
            .contains("matching the events a stopped instance left unmatched"),
        "a says it adopted b's events:\n{}",
        a.log()
    );
    // a, live, keeps its own watermark.
    assert_eq!(
        reader
            .count("SELECT count(*) AS n FROM attune.matcher_watermark WHERE instance = 'b'")
            .await,
        0
    );
    a.terminate(Duration::from_secs(15)).await;
}
