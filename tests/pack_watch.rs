//! `packs.watch`: an edited pack is reloaded shortly after the change. A change to a
//! process sensor's code restarts that sensor with the new code; a pack that no longer
//! loads is refused (visible in `/status`) and the definitions in force stay; fixing it
//! reloads it.

mod support {
    pub mod triggers;
}

use std::time::Duration;

use attune_sensor::config::Settings;
use serde_json::{Value, json};
use support::triggers::*;

const DEADLINE: Duration = Duration::from_secs(15);

fn sensor_code(version: u32) -> String {
    format!("read -r start\necho '{{\"payload\": {{\"version\": {version}}}}}'\nexec sleep 300\n")
}

async fn status(service: &attune_sensor::service::Service) -> Value {
    reqwest::get(format!("http://{}/status", service.admin_addr))
        .await
        .expect("GET /status")
        .json()
        .await
        .expect("status JSON")
}

async fn wait_status(
    service: &attune_sensor::service::Service,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let status = status(service).await;
        if check(&status) {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn edited_packs_are_reloaded_and_a_broken_one_changes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sensor =
        "ref: versioned\nruntime: shell\nentrypoint: versioned.sh\ntrigger: w.hit\nmode: stream\n"
            .to_owned();
    let rule = "ref: on_hit\ntrigger: w.hit\naction: core.first\n";
    let pack = write_pack(
        dir.path(),
        "w",
        &[("versioned", sensor)],
        &[("on_hit", rule)],
    );
    std::fs::write(pack.join("sensors/versioned.sh"), sensor_code(1)).expect("write code");

    let yaml = json!({
        "database": {"url": sqlite_url(dir.path())},
        "admin": {"bind": "127.0.0.1:0"},
        "webhook": {"bind": "127.0.0.1:0"},
        "packs": {"autoload": [pack], "watch": true, "watch_debounce": "200ms"},
        "log": {"level": "warn"},
        "sensor": {"reconcile_interval": 3600, "stop_grace": 0.5},
        "shutdown": {"timeout": 3},
    });
    let settings = Settings::from_yaml(&yaml.to_string()).expect("valid settings");
    let service = start(&settings).await;
    let first = wait_events(&service, "w.hit", 1, DEADLINE).await;
    assert_eq!(first[0].payload["version"], 1);
    assert_eq!(status(&service).await["packs"]["watching"], true);

    // The code alone changes: the sensor restarts and runs the new code.
    std::fs::write(pack.join("sensors/versioned.sh"), sensor_code(2)).expect("edit code");
    let events = wait_events(&service, "w.hit", 2, DEADLINE).await;
    assert_eq!(events[1].payload["version"], 2, "the new code runs");
    let reloaded = wait_status(&service, "one reload", |s| s["packs"]["reloads"] == 1).await;
    assert_eq!(reloaded["packs"]["refused"], 0);

    // A broken rule: the pack is refused and nothing it defined changes.
    std::fs::write(
        pack.join("rules/on_hit.yaml"),
        "ref: on_hit\ntrigger: [not a ref\n",
    )
    .expect("break the rule");
    let refused = wait_status(&service, "the broken pack refused", |s| {
        s["packs"]["refused"] == 1
    })
    .await;
    let error = refused["packs"]["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("rules/on_hit.yaml"), "{refused}");
    let matched = service
        .tree
        .system_events
        .emit("w.hit", json!({"by": "hand"}))
        .await
        .expect("matched");
    assert_eq!(matched.enforcement_ids.len(), 1, "the rule in force stays");
    let sensor = &refused["sensors"][0];
    assert_eq!(sensor["state"], "running", "{sensor}");

    // Fixed, with another action: reloaded, and the rule now asks for it.
    std::fs::write(
        pack.join("rules/on_hit.yaml"),
        "ref: on_hit\ntrigger: w.hit\naction: core.second\n",
    )
    .expect("fix the rule");
    wait_status(&service, "the fixed pack reloaded", |s| {
        s["packs"]["reloads"] == 2
    })
    .await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let matched = service
            .tree
            .system_events
            .emit("w.hit", json!({"by": "hand"}))
            .await
            .expect("matched");
        let enforcements = service
            .store
            .recent_enforcements(Some("w.on_hit"), 1)
            .await
            .expect("enforcements");
        if enforcements[0].event == matched.event_id && enforcements[0].action_ref == "core.second"
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the fixed rule did not take effect: {enforcements:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown(service).await;
}
