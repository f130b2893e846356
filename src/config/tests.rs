use super::*;

#[test]
fn embedded_default_is_valid() {
    let settings = Settings::from_yaml("{}").expect("default loads");
    assert!(settings.database.url.starts_with("sqlite:"));
    assert!(settings.mq.url.is_empty());
    assert_eq!(settings.sensor.max_restart_attempts, 3);
    assert_eq!(settings.admin_addr().port(), 9180);
}

#[test]
fn secrets_given_as_files_replace_the_values() {
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |name: &str, content: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, content).expect("write secret");
        path.to_string_lossy().into_owned()
    };
    let token = write("token", "t0ken\n");
    let db = write("db", "postgres://u:pw@db/attune\n");
    let mq = write("mq", "amqps://u:pw@mq/%2f");
    let settings = Settings::load_with_env(
        None,
        env(&[
            ("ATTUNE__ADMIN__TOKEN_FILE", &token),
            ("ATTUNE__DATABASE__URL_FILE", &db),
            ("ATTUNE__MQ__URL_FILE", &mq),
        ]),
    )
    .expect("loads");
    assert_eq!(settings.admin_token(), Some("t0ken"));
    assert_eq!(settings.database.url, "postgres://u:pw@db/attune");
    assert_eq!(settings.mq.url, "amqps://u:pw@mq/%2f");

    let missing = dir.path().join("nope").to_string_lossy().into_owned();
    let error = Settings::load_with_env(None, env(&[("ATTUNE__ADMIN__TOKEN_FILE", &missing)]))
        .expect_err("missing file refused")
        .to_string();
    assert!(
        error.contains("admin.token_file") && error.contains(&missing),
        "{error}"
    );
}

#[test]
fn mq_tls_needs_amqps_and_a_whole_client_identity() {
    let error = Settings::from_yaml("mq:\n  url: amqp://h/\n  tls:\n    ca_file: /ca.pem\n")
        .expect_err("tls without amqps")
        .to_string();
    assert!(error.contains("mq.tls"), "{error}");
    let error = Settings::from_yaml("mq:\n  url: amqps://h/\n  tls:\n    cert_file: /c.pem\n")
        .expect_err("certificate without key")
        .to_string();
    assert!(error.contains("mq.tls.key_file"), "{error}");
    Settings::from_yaml("mq:\n  url: amqps://h/\n  tls:\n    ca_file: /ca.pem\n")
        .expect("amqps with a CA");
}

#[test]
fn a_public_admin_bind_needs_a_token_or_an_explicit_opt_out() {
    let error = Settings::from_yaml("admin:\n  bind: 0.0.0.0:9180\n")
        .expect_err("public and unauthenticated")
        .to_string();
    assert!(
        error.contains("admin.token")
            && error.contains("admin.bind")
            && error.contains("allow_unauthenticated"),
        "{error}"
    );
    Settings::from_yaml("admin:\n  bind: 0.0.0.0:9180\n  token: t\n").expect("with a token");
    Settings::from_yaml("admin:\n  bind: 0.0.0.0:9180\n  allow_unauthenticated: true\n")
        .expect("explicit opt-out");
    Settings::from_yaml("admin:\n  bind: \"[::1]:9180\"\n").expect("loopback needs none");
}

#[test]
fn unknown_key_is_refused_with_its_name() {
    let error = Settings::from_yaml("sensor:\n  max_restart_attempt: 5\n")
        .expect_err("typo refused")
        .to_string();
    assert!(error.contains("max_restart_attempt"), "{error}");
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn environment_overrides_keep_strings_and_convert_typed_keys() {
    let settings = Settings::load_with_env(
        None,
        env(&[
            ("ATTUNE__ADMIN__TOKEN", "0123"),
            ("ATTUNE__SENSOR__MAX_RESTART_ATTEMPTS", "5"),
            ("ATTUNE__SENSOR__RESTART_ON_ERROR", "false"),
            ("ATTUNE__DATABASE__URL", "postgres://u:p@db/attune"),
            ("ATTUNE__PACKS__AUTOLOAD", "packs/a, packs/b,"),
            ("UNRELATED", "x"),
        ]),
    )
    .expect("loads");
    assert_eq!(settings.admin.token, "0123");
    assert_eq!(settings.sensor.max_restart_attempts, 5);
    assert!(!settings.sensor.restart_on_error);
    assert_eq!(settings.database.url, "postgres://u:p@db/attune");
    assert_eq!(
        settings.packs.autoload,
        vec![PathBuf::from("packs/a"), PathBuf::from("packs/b")]
    );
    let empty =
        Settings::load_with_env(None, env(&[("ATTUNE__PACKS__AUTOLOAD", "")])).expect("loads");
    assert!(empty.packs.autoload.is_empty());
}

#[test]
fn unknown_or_bad_environment_keys_are_refused_by_name() {
    let error = Settings::load_with_env(None, env(&[("ATTUNE__SENSOR__MAX_RESTARTS", "5")]))
        .expect_err("typo refused")
        .to_string();
    assert!(error.contains("max_restarts"), "{error}");
    let error = Settings::load_with_env(None, env(&[("ATTUNE__SENSOR__POLL_INTERVAL", "soon")]))
        .expect_err("refused")
        .to_string();
    assert!(error.contains("poll_interval"), "{error}");
}

#[test]
fn runtimes_and_stop_grace_have_defaults_and_are_checked() {
    let settings = Settings::from_yaml("{}").expect("default loads");
    assert_eq!(settings.runtimes.python, "python3 -u");
    assert_eq!(settings.runtimes.node, "node");
    assert_eq!(settings.runtimes.shell, "sh");
    assert_eq!(settings.sensor_stop_grace(), Duration::from_secs(5));
    let supervisor = settings.supervisor();
    assert!(supervisor.stop_grace > settings.sensor_stop_grace());
    assert!(supervisor.stop_timeout > supervisor.stop_grace);
    let error = Settings::from_yaml("runtimes:\n  python: \"  \"\n")
        .expect_err("refused")
        .to_string();
    assert!(error.contains("runtimes.python"), "{error}");
    let error = Settings::from_yaml("sensor:\n  stop_grace: 0\n")
        .expect_err("refused")
        .to_string();
    assert!(error.contains("sensor.stop_grace"), "{error}");
}

#[test]
fn invalid_value_is_refused_with_its_key() {
    let error = Settings::from_yaml("admin:\n  bind: nowhere\n")
        .expect_err("refused")
        .to_string();
    assert!(error.contains("admin.bind"), "{error}");
    let error = Settings::from_yaml("log:\n  format: xml\n")
        .expect_err("refused")
        .to_string();
    assert!(error.contains("xml"), "{error}");
    let error = Settings::from_yaml("sensor:\n  poll_interval: -3\n")
        .expect_err("refused")
        .to_string();
    assert!(error.contains("poll_interval"), "{error}");
}

#[test]
fn routes_name_a_published_type_and_an_exchange() {
    let settings = Settings::from_yaml(
        "mq:\n  routes:\n    EnforcementCreated: attune.executions\n    EventCreated: {exchange: audit, routing_key: sensor.event}\n",
    )
    .expect("valid routes");
    let routes = settings.bus_routes();
    assert_eq!(routes.len(), 2);
    assert_eq!(routes[0].message_type, "EnforcementCreated");
    assert_eq!(routes[0].exchange, "attune.executions");
    assert_eq!(routes[0].routing_key, None);
    assert_eq!(routes[1].routing_key.as_deref(), Some("sensor.event"));
    let error = Settings::from_yaml("mq:\n  routes:\n    ExecutionRequested: x\n")
        .expect_err("not published by this service")
        .to_string();
    assert!(
        error.contains("mq.routes") && error.contains("ExecutionRequested"),
        "{error}"
    );
    let error = Settings::from_yaml("mq:\n  routes:\n    EventCreated: \"\"\n")
        .expect_err("empty exchange")
        .to_string();
    assert!(error.contains("mq.routes"), "{error}");
}
