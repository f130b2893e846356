//! The pack loader against a fresh SQLite database: good packs load idempotently, bad
//! ones are refused with the file (and field) at fault and leave the database untouched.

mod support {
    pub mod service;
}

use std::path::Path;
use std::sync::Arc;

use attune_actors::ports::Store;
use attune_sensor::packs::{self, PackError};
use serde_json::json;
use support::service::{TempDatabase, example_pack, fixture};

async fn open_store(db: &TempDatabase) -> Arc<dyn Store> {
    attune_sensor::store::open(&db.url)
        .await
        .expect("fresh SQLite database opens")
}

#[tokio::test]
async fn the_example_pack_loads_and_loading_it_again_changes_nothing() {
    let db = TempDatabase::new();
    let store = open_store(&db).await;

    let first = packs::install_pack(store.as_ref(), &example_pack())
        .await
        .expect("example pack loads");
    assert!(first.created >= 3, "trigger, sensor and rule: {first:?}");
    assert_eq!(first.updated, 0, "{first:?}");

    let trigger = store
        .trigger_by_ref("example.tick")
        .await
        .expect("store")
        .expect("trigger stored");
    assert_eq!(trigger.pack_ref.as_deref(), Some("example"));
    assert_eq!(trigger.label, "Tick");
    let sensor = store
        .sensor_by_ref("example.every_five_seconds")
        .await
        .expect("store")
        .expect("sensor stored");
    assert_eq!(sensor.trigger_ref, "example.tick");
    assert_eq!(sensor.trigger, trigger.id);
    assert_eq!(sensor.runtime_ref, "builtin");
    assert_eq!(sensor.entrypoint, "interval_timer");
    assert_eq!(sensor.config, json!({"interval": 5, "unit": "seconds"}));
    assert!(sensor.enabled);
    let rule = store
        .rule_by_ref("example.log_ticks")
        .await
        .expect("store")
        .expect("rule stored");
    assert_eq!(rule.action_ref, "core.echo");
    assert_eq!(rule.trigger, trigger.id);
    assert_eq!(rule.conditions["all"][0]["field"], "payload.type");

    let second = packs::install_pack(store.as_ref(), &example_pack())
        .await
        .expect("example pack loads again");
    assert_eq!((second.created, second.updated), (0, 0), "{second:?}");
    assert_eq!(second.unchanged, first.created, "{second:?}");
    let again = store
        .sensor_by_ref("example.every_five_seconds")
        .await
        .expect("store")
        .expect("sensor stored");
    assert_eq!(
        again.updated, sensor.updated,
        "an unchanged row keeps its time"
    );
}

/// Copies a fixture pack into a temporary directory, for tests that edit it.
fn copy_pack(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read fixture") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            copy_pack(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

#[tokio::test]
async fn an_edited_pack_reports_what_changed() {
    let db = TempDatabase::new();
    let store = open_store(&db).await;
    let dir = tempfile::tempdir().expect("tempdir");
    copy_pack(&fixture("timer"), dir.path());
    let first = packs::install_pack(store.as_ref(), dir.path())
        .await
        .expect("loads");

    let sensor_file = dir.path().join("sensors/every_second.yaml");
    let text = std::fs::read_to_string(&sensor_file).expect("read");
    std::fs::write(&sensor_file, text.replace("interval: 1", "interval: 7")).expect("write");
    let edited = packs::install_pack(store.as_ref(), dir.path())
        .await
        .expect("edited pack loads");
    assert_eq!((edited.created, edited.updated), (0, 1), "{edited:?}");
    assert_eq!(edited.unchanged, first.created - 1, "{edited:?}");
    let sensor = store
        .sensor_by_ref("timer.every_second")
        .await
        .expect("store")
        .expect("sensor");
    assert_eq!(sensor.config["interval"], 7);
}

#[tokio::test]
async fn a_pack_may_use_the_triggers_of_a_pack_loaded_before_it() {
    let db = TempDatabase::new();
    let store = open_store(&db).await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("rules")).expect("mkdir");
    std::fs::write(dir.path().join("pack.yaml"), "ref: borrower\n").expect("write");
    std::fs::write(
        dir.path().join("rules/uses_manual.yaml"),
        "ref: uses_manual\ntrigger: timer.manual\naction: core.echo\n",
    )
    .expect("write");

    let error = packs::install_pack(store.as_ref(), dir.path())
        .await
        .expect_err("timer.manual is not known yet");
    assert!(error.to_string().contains("timer.manual"), "{error}");

    packs::install_pack(store.as_ref(), &fixture("timer"))
        .await
        .expect("timer pack loads");
    packs::install_pack(store.as_ref(), dir.path())
        .await
        .expect("now the trigger exists");
    let rule = store
        .rule_by_ref("borrower.uses_manual")
        .await
        .expect("store")
        .expect("rule stored");
    assert_eq!(rule.trigger_ref, "timer.manual");
}

/// What a bad fixture pack must be refused with.
struct Refusal {
    pack: &'static str,
    /// The file at fault, relative to the pack directory.
    file: &'static str,
    field: Option<&'static str>,
    /// Texts the message must contain.
    says: &'static [&'static str],
}

const REFUSALS: &[Refusal] = &[
    Refusal {
        pack: "invalid_yaml",
        file: "rules/broken.yaml",
        field: None,
        says: &["line 4"],
    },
    Refusal {
        pack: "unknown_field",
        file: "sensors/timer.yaml",
        field: None,
        says: &["unknown field", "intervall"],
    },
    Refusal {
        pack: "missing_field",
        file: "sensors/timer.yaml",
        field: None,
        says: &["missing field", "entrypoint"],
    },
    Refusal {
        pack: "duplicate_ref",
        file: "rules/b_second.yaml",
        field: Some("ref"),
        says: &["duplicate rule ref 'duplicate_ref.same'", "a_first.yaml"],
    },
    Refusal {
        pack: "unknown_trigger",
        file: "rules/orphan.yaml",
        field: Some("trigger"),
        says: &[
            "unknown trigger",
            "nowhere.nothing",
            "unknown_trigger.orphan",
        ],
    },
    Refusal {
        pack: "bad_condition",
        file: "rules/odd.yaml",
        field: Some("conditions"),
        says: &["/all/1/operator", "resembles", "bad_condition.odd"],
    },
    Refusal {
        pack: "bad_interval",
        file: "sensors/zero.yaml",
        field: Some("config"),
        says: &["config.interval", "bad_interval.zero"],
    },
    Refusal {
        pack: "short_trigger",
        file: "rules/short.yaml",
        field: Some("trigger"),
        says: &["'tick'", "not a full ref", "<pack>.<name>"],
    },
];

#[tokio::test]
async fn bad_packs_are_refused_naming_the_file_and_field_and_nothing_is_written() {
    let db = TempDatabase::new();
    let store = open_store(&db).await;
    for case in REFUSALS {
        let dir = fixture("bad").join(case.pack);
        let error = packs::install_pack(store.as_ref(), &dir)
            .await
            .expect_err(case.pack);
        let shown = error.to_string();
        let PackError::Invalid {
            file,
            field,
            message,
        } = &error
        else {
            panic!("{}: expected an invalid pack, got {shown}", case.pack);
        };
        assert_eq!(file, &dir.join(case.file), "{}: {shown}", case.pack);
        assert_eq!(field.as_deref(), case.field, "{}: {shown}", case.pack);
        for text in case.says {
            assert!(
                message.contains(text),
                "{}: no '{text}' in {shown}",
                case.pack
            );
        }
        // The error as printed starts with the file, then the field.
        let mut expected_start = dir.join(case.file).display().to_string();
        if let Some(field) = case.field {
            expected_start.push_str(&format!(": {field}: "));
        }
        assert!(shown.starts_with(&expected_start), "{shown}");

        // The pack's valid trigger was not written on its own.
        let tick = format!("{}.tick", case.pack);
        assert_eq!(
            store.trigger_by_ref(&tick).await.expect("store"),
            None,
            "{}: nothing of a refused pack is stored",
            case.pack
        );
    }
    // Not even the packs' own rows: every table a pack writes is still empty.
    let pool = sqlx::SqlitePool::connect(&db.url)
        .await
        .expect("open SQLite");
    for table in ["pack", "trigger", "sensor", "rule"] {
        let rows: i64 = sqlx::query_scalar(&format!(r#"SELECT count(*) FROM "{table}""#))
            .fetch_one(&pool)
            .await
            .expect("count");
        assert_eq!(rows, 0, "table {table} after refused packs");
    }
    pool.close().await;
}

#[test]
fn bad_packs_are_refused_before_the_database_is_asked() {
    for case in REFUSALS {
        let result = packs::read_pack(&fixture("bad").join(case.pack));
        // Only whether a trigger exists elsewhere needs the database.
        assert_eq!(
            result.is_ok(),
            case.pack == "unknown_trigger",
            "{}: {:?}",
            case.pack,
            result.err()
        );
    }
}

#[tokio::test]
async fn a_directory_without_pack_yaml_is_refused() {
    let db = TempDatabase::new();
    let store = open_store(&db).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let error = packs::install_pack(store.as_ref(), dir.path())
        .await
        .expect_err("no pack.yaml");
    assert!(
        error.to_string().contains("pack.yaml"),
        "the message names the missing file: {error}"
    );
}

/// Editing a process sensor's code (not its YAML) and loading the pack again changes
/// its definition, so the next reconcile restarts it and the new code runs.
#[tokio::test]
async fn a_code_change_alone_restarts_the_process_sensor() {
    use attune_actors::SupervisorMsg;
    let dir = tempfile::tempdir().expect("temp dir");
    let pack = dir.path().join("code");
    for sub in ["triggers", "sensors"] {
        std::fs::create_dir_all(pack.join(sub)).expect("mkdir");
    }
    std::fs::write(pack.join("pack.yaml"), "ref: code\n").expect("pack");
    std::fs::write(pack.join("triggers/out.yaml"), "ref: out\n").expect("trigger");
    std::fs::write(
        pack.join("sensors/live.yaml"),
        "ref: live\nruntime: shell\nentrypoint: live.sh\ntrigger: code.out\nmode: stream\n",
    )
    .expect("sensor");
    let script = |version: u32| {
        format!(
            "echo '{{\"payload\": {{\"version\": {version}}}}}'\nwhile true; do sleep 1; done\n"
        )
    };
    std::fs::write(pack.join("sensors/live.sh"), script(1)).expect("script");
    let database = dir.path().join("attune.db");
    let yaml = serde_json::json!({
        "database": {"url": format!("sqlite://{}", database.display())},
        "admin": {"bind": "127.0.0.1:0"},
        "webhook": {"bind": "127.0.0.1:0"},
        "packs": {"autoload": [pack.clone()]},
        "log": {"level": "warn"},
        "sensor": {"reconcile_interval": 3600, "stop_grace": 1},
        "shutdown": {"timeout": 3},
    });
    let settings = attune_sensor::config::Settings::from_yaml(&yaml.to_string()).expect("settings");
    let service = attune_sensor::service::Service::start(&settings)
        .await
        .expect("starts");
    let versions = || async {
        service
            .store
            .recent_events(Some("code.out"), 100)
            .await
            .expect("events")
            .iter()
            .filter_map(|e| e.payload["version"].as_u64())
            .collect::<Vec<_>>()
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    while !versions().await.contains(&1) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "version 1 never ran"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let unchanged = attune_sensor::packs::install_pack(service.store.as_ref(), &pack)
        .await
        .expect("load again");
    assert_eq!(unchanged.updated, 0, "nothing changed yet: {unchanged:?}");

    std::fs::write(pack.join("sensors/live.sh"), script(2)).expect("edit the code");
    let summary = attune_sensor::packs::install_pack(service.store.as_ref(), &pack)
        .await
        .expect("load the edited pack");
    assert_eq!(
        summary.updated, 1,
        "the sensor's definition changed: {summary:?}"
    );
    let report = ractor::call!(service.tree.supervisor, |reply| SupervisorMsg::Reconcile(
        Some(reply)
    ))
    .expect("supervisor answers")
    .expect("reconcile");
    assert_eq!(report.restarted, vec!["code.live".to_owned()], "{report:?}");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    while !versions().await.contains(&2) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new code never ran"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    service.shutdown().await;
}
