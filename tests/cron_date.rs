//! Cron and date timers in the running service, and what all timers remember across a
//! restart: an every-second 6-field cron on SQLite and PostgreSQL, a date timer that fires
//! once and not again after a restart, both catch-up policies across a simulated downtime,
//! and pack-load refusals. Schedule computation (seconds, zones, DST) is unit-tested in
//! `src/runtimes/cron.rs`.

mod support {
    pub mod postgres;
    pub mod triggers;
}

use chrono::{DateTime, Duration as Span, SubsecRound, Utc};
use serde_json::{Value, json};
use std::time::Duration;
use support::postgres::TestDatabase;
use support::triggers::*;

const DEADLINE: Duration = Duration::from_secs(15);

fn at(value: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(
        value
            .as_str()
            .unwrap_or_else(|| panic!("not a timestamp: {value}")),
    )
    .expect("RFC 3339")
    .to_utc()
}

fn cron_sensor(expression: &str, extra: &str) -> String {
    format!(
        "ref: cron\nruntime: builtin\nentrypoint: cron_timer\ntrigger: {{pack}}.hit\nconfig:\n  expression: \"{expression}\"\n  timezone: Europe/Paris\n{extra}"
    )
}

fn pack_with(root: &std::path::Path, name: &str, sensor: String) -> std::path::PathBuf {
    write_pack(
        root,
        name,
        &[("timer", sensor.replace("{pack}", name))],
        &[],
    )
}

async fn every_second_cron(database_url: &str, root: &std::path::Path) {
    let pack = pack_with(root, "crons", cron_sensor("* * * * * *", ""));
    let service = start(&settings(database_url, &[pack])).await;
    let events = wait_events(&service, "crons.hit", 2, DEADLINE).await;
    let (first, second) = (&events[0].payload, &events[1].payload);
    assert_eq!(first["type"], "cron", "{first}");
    assert_eq!(first["expression"], "* * * * * *");
    assert_eq!(first["timezone"], "Europe/Paris");
    assert_eq!(first["sensor_ref"], "crons.cron");
    assert_eq!(first["execution_count"], 1);
    assert_eq!(second["execution_count"], 2);
    let scheduled = at(&first["scheduled_at"]);
    assert_eq!(
        scheduled,
        scheduled.trunc_subsecs(0),
        "whole seconds: {first}"
    );
    assert_eq!(at(&first["next_fire_at"]), scheduled + Span::seconds(1));
    assert_eq!(at(&second["scheduled_at"]), scheduled + Span::seconds(1));
    assert!(at(&first["fired_at"]) >= scheduled);
    // The timer saves its last fire just after the event is stored, so the state may
    // trail the events by a moment.
    let second_instant = at(&second["scheduled_at"]);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let state = service
            .store
            .sensor_state("crons.cron")
            .await
            .expect("read state");
        if state
            .as_ref()
            .is_some_and(|s| at(&s["last_fire"]) >= second_instant)
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the timer never saved its second fire: {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shutdown(service).await;
}

#[tokio::test]
async fn every_second_cron_fires_on_sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    every_second_cron(&sqlite_url(dir.path()), dir.path()).await;
}

#[tokio::test]
async fn every_second_cron_fires_on_postgres() {
    let db = TestDatabase::create().await;
    let dir = tempfile::tempdir().expect("temp dir");
    every_second_cron(&db.url, dir.path()).await;
}

#[tokio::test]
async fn date_timer_fires_once_and_not_again_after_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fire_at = (Utc::now() + Span::milliseconds(1500))
        .trunc_subsecs(3)
        .to_rfc3339();
    let sensor = format!(
        "ref: once\nruntime: builtin\nentrypoint: datetime_timer\ntrigger: dates.hit\nconfig:\n  fire_at: \"{fire_at}\"\n  catch_up: fire_once\n"
    );
    let pack = write_pack(dir.path(), "dates", &[("once", sensor)], &[]);
    let settings = settings(&sqlite_url(dir.path()), &[pack]);

    let service = start(&settings).await;
    let events = wait_events(&service, "dates.hit", 1, DEADLINE).await;
    let payload = &events[0].payload;
    assert_eq!(payload["type"], "date", "{payload}");
    assert_eq!(at(&payload["fire_at"]), at(&json!(fire_at)));
    assert!(at(&payload["fired_at"]) >= at(&payload["fire_at"]));
    assert_eq!(payload["sensor_ref"], "dates.once");
    assert!(payload.get("catch_up").is_none(), "{payload}");
    // Done: the sensor stops on its own.
    wait_status(&service, "dates.once", DEADLINE, |s| {
        s["state"] == "stopped"
    })
    .await;
    shutdown(service).await;

    // The pack is reloaded (fire_at is past now, but unchanged: not an error) and the
    // timer, remembering its fire, completes without firing again, even with fire_once.
    let service = start(&settings).await;
    let status = wait_status(&service, "dates.once", DEADLINE, |s| {
        s["state"] == "stopped"
    })
    .await;
    assert!(status["last_error"].is_null(), "{status}");
    assert_eq!(events_count(&service).await, 1);
    shutdown(service).await;
}

async fn events_count(service: &attune_sensor::service::Service) -> usize {
    events(service, "dates.hit").await.len()
}

/// Seeds a last fire `downtime` ago (as if the service had been down since), starts the
/// service, and returns the first event after the start and the start time.
async fn after_downtime(
    sensor: &str,
    catch_up: &str,
    downtime_secs: i64,
) -> (Vec<Value>, DateTime<Utc>, DateTime<Utc>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let sensor = format!("{sensor}  catch_up: {catch_up}\n");
    let pack = pack_with(dir.path(), "downs", sensor);
    let url = sqlite_url(dir.path());
    let last_fire = (Utc::now() - Span::seconds(downtime_secs)).trunc_subsecs(0);
    {
        let store = attune_sensor::store::open(&url).await.expect("open store");
        attune_sensor::packs::install_pack(store.as_ref(), &pack)
            .await
            .expect("pack loads");
        store
            .save_sensor_state(
                "downs.cron",
                &json!({"last_fire": last_fire.to_rfc3339(), "execution_count": 5}),
            )
            .await
            .expect("seed state");
    }
    let started = Utc::now();
    let service = start(&settings(&url, &[pack])).await;
    let events = wait_events(&service, "downs.hit", 2, DEADLINE).await;
    shutdown(service).await;
    (
        events.into_iter().map(|e| e.payload).collect(),
        last_fire,
        started,
    )
}

#[tokio::test]
async fn catch_up_fire_once_emits_one_event_with_the_missed_count() {
    let (events, last_fire, started) =
        after_downtime(&cron_sensor("* * * * * *", ""), "fire_once", 10).await;
    let catch_up = &events[0];
    assert_eq!(catch_up["catch_up"], true, "{catch_up}");
    let missed = catch_up["missed_count"].as_u64().expect("missed_count");
    assert!((9..=12).contains(&missed), "{catch_up}");
    let scheduled = at(&catch_up["scheduled_at"]);
    assert!(
        scheduled > last_fire && scheduled <= started + Span::seconds(1),
        "{catch_up}"
    );
    assert_eq!(
        catch_up["execution_count"], 6,
        "counts on from the saved state"
    );
    // Then the regular rhythm, without repeating the caught-up instant.
    let next = &events[1];
    assert!(next.get("catch_up").is_none(), "{next}");
    assert!(at(&next["scheduled_at"]) > scheduled);
    assert_eq!(next["execution_count"], 7);
}

#[tokio::test]
async fn catch_up_skip_forgets_the_missed_instants() {
    let (events, _, started) = after_downtime(&cron_sensor("* * * * * *", ""), "skip", 10).await;
    for event in &events {
        assert!(event.get("catch_up").is_none(), "{event}");
        assert!(
            at(&event["scheduled_at"]) > started - Span::seconds(1),
            "no invented fires: {event}"
        );
    }
    assert_eq!(events[0]["execution_count"], 6);
    assert!(at(&events[1]["scheduled_at"]) > at(&events[0]["scheduled_at"]));
}

#[tokio::test]
async fn interval_timer_resumes_its_rhythm_and_catches_up_once() {
    let interval = "ref: cron\nruntime: builtin\nentrypoint: interval_timer\ntrigger: {pack}.hit\nconfig:\n  interval: 1\n".to_owned();
    let (events, last_fire, _) = after_downtime(&interval, "fire_once", 5).await;
    let catch_up = &events[0];
    assert_eq!(catch_up["type"], "interval");
    assert_eq!(catch_up["catch_up"], true, "{catch_up}");
    assert!(
        (4..=7).contains(&catch_up["missed_count"].as_u64().unwrap_or(0)),
        "{catch_up}"
    );
    // Anchored on the saved last fire: instants stay on its whole seconds.
    for event in &events {
        let scheduled = at(&event["scheduled_at"]);
        assert_eq!(
            (scheduled - last_fire).num_milliseconds() % 1000,
            0,
            "{event}"
        );
    }
}

#[tokio::test]
async fn bad_timer_configs_are_refused_at_pack_load_naming_the_sensor() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = attune_sensor::store::open(&sqlite_url(dir.path()))
        .await
        .expect("open store");
    let cases = [
        ("badexpr", cron_sensor("61 * * * *", ""), "config.expression '61 * * * *'"),
        ("badzone", cron_sensor("* * * * *", "").replace("Europe/Paris", "Mars/Olympus"), "config.timezone 'Mars/Olympus'"),
        ("badcatch", cron_sensor("* * * * *", "  catch_up: always\n"), "config.catch_up"),
        (
            "pastdate",
            "ref: cron\nruntime: builtin\nentrypoint: datetime_timer\ntrigger: {pack}.hit\nconfig:\n  fire_at: \"2001-01-01T00:00:00Z\"\n".to_owned(),
            "config.fire_at 2001-01-01T00:00:00.000Z is already past",
        ),
    ];
    for (name, sensor, expected) in cases {
        let pack = pack_with(dir.path(), name, sensor);
        let error = attune_sensor::packs::install_pack(store.as_ref(), &pack)
            .await
            .expect_err("refused")
            .to_string();
        assert!(error.contains(expected), "{name}: {error}");
        assert!(
            error.contains(&format!("sensor {name}.cron")),
            "{name}: {error}"
        );
        assert!(error.contains("timer.yaml"), "{name}: {error}");
    }
}
