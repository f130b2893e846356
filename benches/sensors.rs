//! Many sensors: how long the service takes to start N interval timers, how much memory
//! they hold, and how fast `GET /status` answers with all of them.
//!
//! `cargo bench --bench sensors` runs, for each N of `ATTUNE_BENCH_SENSORS` (default
//! `10000,100000`), on the embedded default (SQLite + the in-process bus):
//! 1. in a process of its own, writes a pack of N interval timers (every 60 s, so none
//!    fires during the measurement) and loads it, as `attune-sensor pack load` does
//!    (timed on its own);
//! 2. in another process, as `attune-sensor` runs after that, starts the service with
//!    sensors on and waits until every timer is running: the start time, and the
//!    process's resident memory (`VmRSS`) before, when all run, and settled (once the
//!    service has returned what it freed starting them, `memory_trim`): what the process
//!    serving N timers holds, as `ps` shows it;
//! 3. asks `GET /status` over HTTP five times: the median and the slowest answer.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use attune_actors::status::SensorState;
use attune_sensor::config::Settings;
use attune_sensor::service::Service;
use serde_json::json;

fn resident_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn write_pack(dir: &Path, sensors: usize) {
    for sub in ["triggers", "sensors", "rules"] {
        std::fs::create_dir_all(dir.join(sub)).expect("pack dirs");
    }
    std::fs::write(dir.join("pack.yaml"), "ref: many\n").expect("pack.yaml");
    std::fs::write(dir.join("triggers/tick.yaml"), "ref: tick\n").expect("trigger");
    std::fs::write(
        dir.join("rules/every.yaml"),
        "ref: every\ntrigger: many.tick\naction: core.noop\n",
    )
    .expect("rule");
    for n in 0..sensors {
        std::fs::write(
            dir.join("sensors").join(format!("t{n}.yaml")),
            format!(
                "ref: t{n}\nruntime: builtin\nentrypoint: interval_timer\ntrigger: many.tick\nconfig:\n  interval: 60\n"
            ),
        )
        .expect("sensor");
    }
}

fn settings(database_url: &str) -> Settings {
    let yaml = json!({
        "database": {"url": database_url},
        "admin": {"bind": "127.0.0.1:0"},
        "webhook": {"bind": "127.0.0.1:0"},
        "log": {"level": "warn"},
        "sensor": {"reconcile_interval": 3600},
        "shutdown": {"timeout": 30},
    });
    match Settings::from_yaml(&yaml.to_string()) {
        Ok(settings) => settings,
        Err(error) => panic!("bench settings: {error}"),
    }
}

fn database_url(dir: &Path) -> String {
    format!("sqlite:{}", dir.join("attune.db").display())
}

/// Step 1: the pack of `sensors` timers written and loaded into the database in `dir`.
async fn load(sensors: usize, dir: &Path) {
    let pack = dir.join("many");
    write_pack(&pack, sensors);
    let loading = Instant::now();
    // With the default statement timeout, as `attune-sensor pack load` runs.
    let store = attune_sensor::store::open(&database_url(dir))
        .await
        .expect("open the database");
    attune_sensor::packs::install_pack(store.as_ref(), &pack)
        .await
        .expect("load the pack");
    println!(
        "{sensors} interval timers: pack written and loaded by a process of its own in {:.2} s",
        loading.elapsed().as_secs_f64()
    );
}

/// Steps 2 and 3: the service on the database in `dir`, in a process that does nothing
/// else.
async fn serve(sensors: usize, dir: &Path) {
    let settings = settings(&database_url(dir));
    let before = resident_mib();
    let starting = Instant::now();
    let service = Service::start(&settings).await.expect("service starts");
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let running = service
            .tree
            .status()
            .sensors
            .iter()
            .filter(|s| s.sensor_ref.starts_with("many.") && s.state == SensorState::Running)
            .count();
        if running == sensors {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{running} of {sensors} timers running after 300 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = starting.elapsed();
    let after = resident_mib();
    // The service returns what it freed once the tree has been quiet for a while; what
    // it holds then is what it keeps while the sensors run.
    let trims = service.metrics.memory_trims();
    let deadline = Instant::now() + Duration::from_secs(60);
    while service.metrics.memory_trims() == trims {
        assert!(
            Instant::now() < deadline,
            "freed memory not returned within 60 s of the last start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let settled = resident_mib();

    let http = reqwest::Client::new();
    let url = format!("http://{}/status", service.admin_addr);
    let mut answers = Vec::new();
    for _ in 0..5 {
        let asked = Instant::now();
        let body = http
            .get(&url)
            .send()
            .await
            .expect("GET /status")
            .bytes()
            .await
            .expect("status body");
        answers.push((asked.elapsed(), body.len()));
    }
    answers.sort();
    let (median, size) = answers[answers.len() / 2];
    let slowest = answers[answers.len() - 1].0;
    println!(
        "{sensors} interval timers: all running {:.2} s after start; \
         RSS of the serving process {before:.0} MiB before start, {after:.0} MiB when all run, \
         {settled:.0} MiB settled ({:.0} MiB more than before start, {:.1} KiB per timer; \
         {:.0} MiB when all run); GET /status ({:.1} MB) median {:.0} ms, slowest {:.0} ms",
        started.as_secs_f64(),
        settled - before,
        (settled - before) * 1024.0 / sensors as f64,
        after - before,
        size as f64 / 1e6,
        median.as_secs_f64() * 1000.0,
        slowest.as_secs_f64() * 1000.0,
    );
    service.shutdown().await;
}

fn main() {
    support::run(bench());
}

async fn bench() {
    // `cargo bench` passes `--bench`; nothing else is read from the command line.
    let counts = std::env::var("ATTUNE_BENCH_SENSORS").unwrap_or_else(|_| "10000,100000".into());
    let counts: Vec<usize> = counts
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    // A step asked of this process by the one below.
    if let (Ok(step), Ok(dir), [count]) =
        (std::env::var(STEP), std::env::var(STEP_DIR), &counts[..])
    {
        match step.as_str() {
            "load" => load(*count, Path::new(&dir)).await,
            "serve" => serve(*count, Path::new(&dir)).await,
            other => panic!("unknown step {other}"),
        }
        return;
    }
    // Each step in a process of its own, so that what loading the pack (or an earlier
    // count) allocated does not count in the service's memory.
    let me = std::env::current_exe().expect("this benchmark's path");
    for count in counts {
        let dir = tempfile::tempdir().expect("tempdir");
        for step in ["load", "serve"] {
            let status = std::process::Command::new(&me)
                .arg("--bench")
                .env("ATTUNE_BENCH_SENSORS", count.to_string())
                .env(STEP, step)
                .env(STEP_DIR, dir.path())
                .status()
                .expect("run one step");
            assert!(status.success(), "{count} timers, {step}: {status}");
        }
    }
}

/// The step a child process runs (`load` or `serve`) and the directory of its database.
const STEP: &str = "ATTUNE_BENCH_SENSORS_STEP";
const STEP_DIR: &str = "ATTUNE_BENCH_SENSORS_DIR";
