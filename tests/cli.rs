//! The real `attune-sensor` binary: configuration errors, `migrate`, `pack load`, and a
//! running service driven by the client commands, stopped with SIGTERM.

mod support {
    pub mod service;
}

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::service::{TempDatabase, fixture};

const BIN: &str = env!("CARGO_BIN_EXE_attune-sensor");
const TIMER: &str = "timer.every_second";

/// A port nobody listens on right now.
fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr")
}

/// Everything one test's commands share: a database, an admin address, a token.
struct Env {
    db: TempDatabase,
    addr: SocketAddr,
    token: Option<String>,
}

impl Env {
    fn new() -> Self {
        Self {
            db: TempDatabase::new(),
            addr: free_addr(),
            token: None,
        }
    }

    /// The binary with this environment and nothing inherited from the operator's
    /// `ATTUNE__*` variables. The working directory is the temporary one, so the default
    /// relative paths never touch the repository.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ATTUNE__") {
                command.env_remove(key);
            }
        }
        command
            .args(args)
            .current_dir(self.db.dir.path())
            .env_remove("RUST_LOG")
            .env("ATTUNE__DATABASE__URL", &self.db.url)
            .env("ATTUNE__ADMIN__BIND", self.addr.to_string())
            .env("ATTUNE__WEBHOOK__BIND", "127.0.0.1:0")
            .env("ATTUNE__ADMIN__TOKEN", self.token.as_deref().unwrap_or(""))
            .env("ATTUNE__PACKS__AUTOLOAD", fixture("timer"))
            .env("ATTUNE__LOG__LEVEL", "warn")
            .env("ATTUNE__SENSOR__RECONCILE_INTERVAL", "3600")
            .env("ATTUNE__SHUTDOWN__TIMEOUT", "3")
            .stdin(Stdio::null());
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run attune-sensor")
    }

    fn log_file(&self) -> PathBuf {
        self.db.dir.path().join("service.log")
    }

    /// Starts `attune-sensor run` and waits until `/health` answers.
    fn start_service(&self) -> Service {
        let log = std::fs::File::create(self.log_file()).expect("log file");
        let child = self
            .command(&["run"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn attune-sensor run");
        let mut service = Service {
            child: Some(child),
            log: self.log_file(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if http_get(self.addr, "/health").is_some_and(|answer| answer.contains(" 200 ")) {
                return service;
            }
            if let Some(status) = service.try_wait() {
                panic!("the service exited with {status}:\n{}", service.log());
            }
            assert!(
                Instant::now() < deadline,
                "no /health within 10 s:\n{}",
                service.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The background `run` process, killed on drop if the test did not stop it.
struct Service {
    child: Option<Child>,
    log: PathBuf,
}

impl Service {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("try_wait"))
    }

    /// Sends SIGTERM and waits for the exit, failing after `within`.
    fn terminate(mut self, within: Duration) -> ExitStatus {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.try_wait() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "still running {within:?} after SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A bare HTTP/1.0 GET, to poll `/health` without an async runtime; `None` when nothing
/// answers.
fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    Some(answer)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts the exit code, showing both streams when it differs.
#[track_caller]
fn expect_code(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        text(&output.stdout),
        text(&output.stderr)
    );
}

fn json_out(output: &Output) -> Value {
    expect_code(output, 0);
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", text(&output.stdout)))
}

fn sensor<'a>(status: &'a Value, sensor_ref: &str) -> &'a Value {
    status["sensors"]
        .as_array()
        .expect("sensors")
        .iter()
        .find(|s| s["sensor_ref"] == sensor_ref)
        .unwrap_or_else(|| panic!("{sensor_ref} not in {status}"))
}

fn db_file(env: &Env) -> PathBuf {
    env.db.dir.path().join("attune.db")
}

#[test]
fn migrate_creates_the_database_and_can_run_again() {
    let env = Env::new();
    let output = env.run(&["migrate"]);
    expect_code(&output, 0);
    assert!(text(&output.stdout).contains("up to date"));
    assert!(db_file(&env).is_file(), "the SQLite file was created");
    expect_code(&env.run(&["migrate"]), 0);
}

#[test]
fn pack_load_reports_the_summary_and_refuses_a_bad_pack_with_exit_2() {
    let env = Env::new();
    let timer = fixture("timer");
    let output = env.run(&["pack", "load", &timer.display().to_string()]);
    expect_code(&output, 0);
    let stdout = text(&output.stdout);
    assert!(stdout.contains("0 updated"), "{stdout}");
    assert!(!stdout.contains(" 0 created"), "{stdout}");

    let output = env.run(&["pack", "load", &timer.display().to_string()]);
    expect_code(&output, 0);
    let stdout = text(&output.stdout);
    assert!(stdout.contains(" 0 created, 0 updated"), "{stdout}");

    let bad = fixture("bad").join("short_trigger");
    let output = env.run(&["pack", "load", &bad.display().to_string()]);
    expect_code(&output, 2);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&bad.join("rules/short.yaml").display().to_string()),
        "{stderr}"
    );
    assert!(stderr.contains("trigger"), "{stderr}");
}

#[test]
fn configuration_errors_exit_2_naming_the_key() {
    let env = Env::new();
    let file = env.db.dir.path().join("bad.yaml");
    std::fs::write(&file, "sensor:\n  max_restart_attempt: 5\n").expect("write");
    let output = env.run(&["--config", &file.display().to_string(), "migrate"]);
    expect_code(&output, 2);
    let stderr = text(&output.stderr);
    assert!(stderr.contains("max_restart_attempt"), "{stderr}");

    let output = env
        .command(&["migrate"])
        .env("ATTUNE__ADMIN__BIND", "nowhere")
        .output()
        .expect("run");
    expect_code(&output, 2);
    assert!(text(&output.stderr).contains("admin.bind"));

    let missing = env.db.dir.path().join("missing.yaml");
    let output = env.run(&["--config", &missing.display().to_string(), "migrate"]);
    expect_code(&output, 2);
    assert!(text(&output.stderr).contains("missing.yaml"));

    // A public admin API without a token is refused; a token given as a file will do.
    let output = env
        .command(&["run"])
        .env("ATTUNE__ADMIN__BIND", "0.0.0.0:0")
        .output()
        .expect("run");
    expect_code(&output, 2);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("admin.token") && stderr.contains("admin.bind"),
        "{stderr}"
    );
    let missing_token = env.db.dir.path().join("no-such-token");
    let output = env
        .command(&["migrate"])
        .env("ATTUNE__ADMIN__TOKEN_FILE", &missing_token)
        .output()
        .expect("run");
    expect_code(&output, 2);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("admin.token_file") && stderr.contains("no-such-token"),
        "{stderr}"
    );
    assert!(!db_file(&env).exists(), "nothing ran");
}

#[test]
fn client_commands_say_when_no_service_answers() {
    let env = Env::new();
    let output = env.run(&["status"]);
    assert_ne!(output.status.code(), Some(0));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("cannot reach the admin API"), "{stderr}");
    assert!(stderr.contains(&env.addr.to_string()), "{stderr}");
    assert_eq!(
        occurrences(&stderr, "error sending request"),
        1,
        "the cause is said once: {stderr}"
    );
    assert!(stderr.contains("Connection refused"), "{stderr}");
}

#[test]
fn a_running_service_is_driven_by_the_client_commands_and_stops_on_sigterm() {
    let mut env = Env::new();
    env.token = Some("cli-token".to_owned());
    let service = env.start_service();

    // The timer runs and the table shows it.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = json_out(&env.run(&["status", "--json"]));
        let timer = sensor(&status, TIMER);
        if timer["events_emitted"].as_u64() >= Some(1) {
            assert_eq!(timer["state"], "running");
            assert_eq!(status["outbox"]["bus"], "in-process");
            break;
        }
        assert!(Instant::now() < deadline, "no timer event: {status}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = env.run(&["status"]);
    expect_code(&output, 0);
    let table = text(&output.stdout);
    assert!(table.starts_with("SENSOR"), "{table}");
    let row = table
        .lines()
        .find(|l| l.starts_with(TIMER))
        .unwrap_or_else(|| panic!("no {TIMER} row:\n{table}"));
    assert!(row.contains("running"), "{row}");
    assert!(table.contains("pipeline rule_matcher"), "{table}");
    assert!(table.contains("outbox backlog="), "{table}");
    let this = table
        .lines()
        .skip_while(|l| !l.starts_with("INSTANCE"))
        .nth(1)
        .unwrap_or_else(|| panic!("no cluster table:\n{table}"));
    assert!(
        this.contains(" *") && this.contains("true"),
        "this instance, alive: {this}"
    );
    let status = json_out(&env.run(&["status", "--json"]));
    assert_eq!(
        status["cluster"]["instances"][0]["id"], status["instance"]["id"],
        "{status}"
    );

    // Sensor control.
    for (action, state, restarts) in [
        ("stop", "stopped", 0),
        ("start", "running", 0),
        ("restart", "running", 1),
    ] {
        let output = env.run(&["sensor", action, TIMER]);
        expect_code(&output, 0);
        assert_eq!(
            text(&output.stdout).trim(),
            format!("sensor {TIMER}: {action} done")
        );
        let status = json_out(&env.run(&["status", "--json"]));
        assert_eq!(sensor(&status, TIMER)["state"], state, "after {action}");
        assert_eq!(sensor(&status, TIMER)["restart_count"], restarts);
    }
    let output = env.run(&["sensor", "restart", "timer.nope"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("unknown sensor 'timer.nope'"), "{stderr}");
    assert!(stderr.contains("404"), "{stderr}");
    assert!(output.stdout.is_empty(), "no 'done' line on failure");

    // Events.
    let outcome = json_out(&env.run(&[
        "event",
        "emit",
        "timer.manual",
        "--payload",
        r#"{"level": "high"}"#,
    ]));
    assert!(outcome["event_id"].as_i64().is_some(), "{outcome}");
    assert_eq!(
        outcome["enforcement_ids"].as_array().map(Vec::len),
        Some(1),
        "{outcome}"
    );
    let outcome = json_out(&env.run(&["event", "emit", "timer.manual"]));
    assert_eq!(outcome["enforcement_ids"], serde_json::json!([]));
    let output = env.run(&["event", "emit", "timer.manual", "--payload", "{bad"]);
    expect_code(&output, 2);
    assert!(text(&output.stderr).contains("--payload is not valid JSON"));
    let output = env.run(&["event", "emit", "timer.nope"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("unknown trigger 'timer.nope'"));

    // A client with the wrong token is refused, and says so.
    let output = env
        .command(&["status"])
        .env("ATTUNE__ADMIN__TOKEN", "wrong")
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("401") && stderr.contains("token"),
        "{stderr}"
    );

    let status = service.terminate(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "exit after SIGTERM");
    assert!(
        http_get(env.addr, "/health").is_none(),
        "the admin API is closed"
    );
}

#[test]
fn the_service_refuses_to_start_on_a_taken_admin_port() {
    let env = Env::new();
    let _taken = TcpListener::bind(env.addr).expect("take the port");
    let output = env.command(&["run"]).output().expect("run");
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("admin.bind"), "{stderr}");
    assert!(stderr.contains(&env.addr.to_string()), "{stderr}");
    assert_eq!(
        occurrences(&stderr, "Address already in use"),
        1,
        "the cause is said once: {stderr}"
    );
}

#[test]
fn client_commands_show_a_non_json_error_answer_as_is() {
    // Something that is not the service (a proxy) answers in plain text.
    let proxy = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = proxy.local_addr().expect("addr");
    let server = std::thread::spawn(move || {
        let (mut stream, _) = proxy.accept().expect("accept");
        let mut request = [0u8; 4096];
        let _ = stream.read(&mut request);
        let body = "upstream is down";
        let _ = write!(
            stream,
            "HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
    });
    let env = Env::new();
    let output = env.run(&["--admin", &format!("http://{addr}"), "status"]);
    server.join().expect("fake proxy");
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("502") && stderr.contains("upstream is down"),
        "{stderr}"
    );
}

/// How often `needle` occurs in `haystack`.
fn occurrences(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}
