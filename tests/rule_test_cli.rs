//! `attune-sensor rule test`: exit codes, the explanation, rule files and stored rules.

use std::path::PathBuf;
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the binary with a private SQLite database so the operator's config and
/// environment never leak in.
fn attune(database: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_attune-sensor"))
        .args(args)
        .current_dir(root())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(
            "ATTUNE__DATABASE__URL",
            format!("sqlite://{}", database.display()),
        )
        .env("ATTUNE__PACKS__AUTOLOAD", "")
        .env("ATTUNE__LOG__LEVEL", "warn")
        .output()
        .expect("the binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

const EXAMPLE_RULE: &str = "config/packs/example/rules/log_ticks.yaml";

#[test]
fn rule_file_match_no_match_and_explanation() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("attune.db");

    let matched = attune(
        &db,
        &[
            "rule",
            "test",
            "--rule",
            EXAMPLE_RULE,
            "--payload",
            r#"{"type": "interval"}"#,
        ],
    );
    assert_eq!(matched.status.code(), Some(0), "{}", stderr(&matched));
    assert_eq!(stdout(&matched).trim(), "rule example.log_ticks: MATCHED");

    let missed = attune(
        &db,
        &[
            "rule",
            "test",
            "--rule",
            EXAMPLE_RULE,
            "--payload",
            r#"{"type": "cron"}"#,
            "--explain",
        ],
    );
    assert_eq!(missed.status.code(), Some(1), "{}", stderr(&missed));
    let text = stdout(&missed);
    assert!(
        text.starts_with("rule example.log_ticks: NOT MATCHED\n"),
        "{text}"
    );
    assert!(text.contains("✘ all"), "{text}");
    assert!(
        text.contains(r#"✘ payload.type equals "interval" (actual: "cron")"#),
        "{text}"
    );
    assert!(
        text.contains("payload.sensor_ref contains \"example.\" (missing)"),
        "{text}"
    );

    let json = attune(
        &db,
        &[
            "rule",
            "test",
            "--rule",
            EXAMPLE_RULE,
            "--payload",
            r#"{"type": "cron"}"#,
            "--json",
        ],
    );
    assert_eq!(json.status.code(), Some(1));
    let report: serde_json::Value =
        serde_json::from_str(&stdout(&json)).expect("--json prints JSON");
    assert_eq!(report["matched"], false);
    assert_eq!(report["rule_ref"], "example.log_ticks");
    assert_eq!(report["condition"], "all");
    assert_eq!(
        report["explanation"]["root"]["children"][0]["actual"],
        "cron"
    );
}

#[test]
fn payload_from_a_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let payload = dir.path().join("payload.json");
    std::fs::write(&payload, r#"{"type": "interval"}"#).expect("write payload");
    let argument = format!("@{}", payload.display());
    let output = attune(
        &dir.path().join("a.db"),
        &[
            "rule",
            "test",
            "--rule",
            EXAMPLE_RULE,
            "--payload",
            &argument,
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}

#[test]
fn invalid_rule_or_payload_exits_2_with_the_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("attune.db");

    let bad_payload = attune(
        &db,
        &["rule", "test", "--rule", EXAMPLE_RULE, "--payload", "{nope"],
    );
    assert_eq!(bad_payload.status.code(), Some(2));
    assert!(
        stderr(&bad_payload).contains("--payload"),
        "{}",
        stderr(&bad_payload)
    );

    let bad_rule = attune(
        &db,
        &[
            "rule",
            "test",
            "--rule",
            "tests/fixtures/rules/bad_operator.yaml",
            "--payload",
            "{}",
        ],
    );
    assert_eq!(bad_rule.status.code(), Some(2));
    let message = stderr(&bad_rule);
    assert!(
        message.contains("bad_operator.yaml"),
        "names the file: {message}"
    );
    assert!(
        message.contains("/any/1/operator"),
        "names the JSON pointer: {message}"
    );
    assert!(
        message.contains("bigger_than"),
        "names the value: {message}"
    );

    let missing_file = attune(
        &db,
        &[
            "rule",
            "test",
            "--rule",
            "no/such/rule.yaml",
            "--payload",
            "{}",
        ],
    );
    assert_eq!(missing_file.status.code(), Some(2));
    assert!(stderr(&missing_file).contains("no/such/rule.yaml"));
}

#[test]
fn stored_rule_by_ref() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("attune.db");
    let load = attune(&db, &["pack", "load", "config/packs/example"]);
    assert_eq!(load.status.code(), Some(0), "{}", stderr(&load));

    let matched = attune(
        &db,
        &[
            "rule",
            "test",
            "example.log_ticks",
            "--payload",
            r#"{"type": "interval"}"#,
        ],
    );
    assert_eq!(matched.status.code(), Some(0), "{}", stderr(&matched));
    let missed = attune(
        &db,
        &[
            "rule",
            "test",
            "example.log_ticks",
            "--payload",
            r#"{"type": 3}"#,
        ],
    );
    assert_eq!(missed.status.code(), Some(1), "{}", stderr(&missed));

    let unknown = attune(&db, &["rule", "test", "example.nope", "--payload", "{}"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(
        stderr(&unknown).contains("unknown rule 'example.nope'"),
        "{}",
        stderr(&unknown)
    );
}

#[test]
fn explain_shows_what_the_throttle_would_do() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("attune.db");
    let rule = "config/packs/example/rules/disk_almost_full.yaml";
    let payload = r#"{"mount": "/var", "used_percent": 97}"#;
    let from_file = attune(
        &db,
        &[
            "rule",
            "test",
            "--rule",
            rule,
            "--payload",
            payload,
            "--explain",
        ],
    );
    assert_eq!(from_file.status.code(), Some(0), "{}", stderr(&from_file));
    let text = stdout(&from_file);
    assert!(
        text.contains(r#"throttle: once_within 1800s, group ["/var"] (group_by payload.mount)"#),
        "{text}"
    );
    assert!(text.contains("not consulted"), "{text}");

    let load = attune(&db, &["pack", "load", "config/packs/example"]);
    assert_eq!(load.status.code(), Some(0), "{}", stderr(&load));
    let stored = attune(
        &db,
        &[
            "rule",
            "test",
            "example.disk_almost_full",
            "--payload",
            payload,
            "--json",
        ],
    );
    assert_eq!(stored.status.code(), Some(0), "{}", stderr(&stored));
    let report: serde_json::Value = serde_json::from_str(&stdout(&stored)).expect("JSON report");
    assert_eq!(report["throttle"]["outcome"], "enforce", "{report}");
    assert_eq!(report["throttle"]["group"], serde_json::json!(["/var"]));

    let quiet = attune(
        &db,
        &[
            "rule",
            "test",
            "--rule",
            rule,
            "--payload",
            r#"{"mount": "/", "used_percent": 3}"#,
            "--json",
        ],
    );
    assert_eq!(quiet.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_str(&stdout(&quiet)).expect("JSON report");
    assert!(
        report["throttle"].is_null(),
        "no match, no throttle: {report}"
    );
}
