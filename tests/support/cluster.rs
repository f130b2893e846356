#![allow(dead_code)]
//! Real `attune-sensor` processes sharing one PostgreSQL database, and what the tests read
//! of them: the sensor leases, each timer's fired instants, the enforcements per event.

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection, Row};
use tokio::time::Instant;

/// One running instance: its process, admin address and log.
pub struct Instance {
    pub id: String,
    pub admin: SocketAddr,
    pub webhook: SocketAddr,
    pub log: PathBuf,
    child: Option<tokio::process::Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Starts `attune-sensor run` as instance `id` (lease ttl `ttl_secs`) on the database and
/// waits for `/health`.
pub async fn start_instance(
    root: &Path,
    database_url: &str,
    pack: &Path,
    id: &str,
    labels: Value,
    ttl_secs: u64,
) -> Instance {
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port())
        .parse()
        .expect("address");
    let webhook: SocketAddr = format!("127.0.0.1:{}", free_port())
        .parse()
        .expect("address");
    let config = json!({
        "database": {"url": database_url},
        "admin": {"bind": admin.to_string()},
        "webhook": {"bind": webhook.to_string()},
        "packs": {"autoload": [pack]},
        "log": {"level": "info"},
        "sensor": {"reconcile_interval": 3600},
        "shutdown": {"timeout": 5},
        "cluster": {"instance_id": id, "labels": labels, "lease_ttl": format!("{ttl_secs}s")},
    });
    let config_path = root.join(format!("{id}.yaml"));
    std::fs::write(&config_path, config.to_string()).expect("write config");
    let log = root.join(format!("{id}.log"));
    let stderr = std::fs::File::create(&log).expect("log file");
    let child = super::processes::run_service(&config_path, stderr.into());
    let mut instance = Instance {
        id: id.to_owned(),
        admin,
        webhook,
        log,
        child: Some(child),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(answer) = reqwest::get(format!("http://{admin}/health")).await
            && answer.status().is_success()
        {
            return instance;
        }
        if let Some(child) = instance.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            panic!("instance {id} exited with {status}:\n{}", instance.log());
        }
        assert!(
            Instant::now() < deadline,
            "instance {id}: no /health within 20 s:\n{}",
            instance.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Instance {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pid(&self) -> Pid {
        let pid = self
            .child
            .as_ref()
            .and_then(|c| c.id())
            .expect("instance is running");
        Pid::from_raw(i32::try_from(pid).expect("pid fits"))
    }

    pub fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).expect("signal the instance");
    }

    /// `kill -9`.
    pub async fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("kill -9");
        }
    }

    /// SIGTERM, then waits for exit code 0.
    pub async fn terminate(mut self, within: Duration) {
        self.signal(Signal::SIGTERM);
        let mut child = self.child.take().expect("running");
        let status = tokio::time::timeout(within, child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} still running {within:?} after SIGTERM", self.id))
            .expect("wait");
        assert!(
            status.success(),
            "{} exited with {status}:\n{}",
            self.id,
            self.log()
        );
    }

    pub async fn post_event(&self, trigger_ref: &str, payload: Value) -> Value {
        let answer = reqwest::Client::new()
            .post(format!("http://{}/events", self.admin))
            .json(&json!({"trigger_ref": trigger_ref, "payload": payload}))
            .send()
            .await
            .expect("POST /events");
        assert!(
            answer.status().is_success(),
            "POST /events on {}: {}",
            self.id,
            answer.status()
        );
        answer.json().await.expect("JSON answer")
    }

    /// `POST /sensors/{ref}/{action}`: the status code and the answer.
    pub async fn control(&self, sensor_ref: &str, action: &str) -> (u16, Value) {
        let answer = reqwest::Client::new()
            .post(format!(
                "http://{}/sensors/{sensor_ref}/{action}",
                self.admin
            ))
            .send()
            .await
            .expect("POST /sensors");
        let code = answer.status().as_u16();
        (code, answer.json().await.unwrap_or(Value::Null))
    }

    /// `POST /reload`.
    pub async fn reload(&self) -> Value {
        let answer = reqwest::Client::new()
            .post(format!("http://{}/reload", self.admin))
            .send()
            .await
            .expect("POST /reload");
        assert!(answer.status().is_success(), "reload: {}", answer.status());
        answer.json().await.expect("reload JSON")
    }

    /// This instance's `/status` entry of `sensor_ref`, if it tracks it.
    pub async fn sensor(&self, sensor_ref: &str) -> Option<Value> {
        self.status().await["sensors"]
            .as_array()?
            .iter()
            .find(|s| s["sensor_ref"] == sensor_ref)
            .cloned()
    }

    pub async fn status(&self) -> Value {
        reqwest::get(format!("http://{}/status", self.admin))
            .await
            .expect("GET /status")
            .json()
            .await
            .expect("status JSON")
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

/// Reads the shared database directly.
pub struct Db(PgConnection);

impl Db {
    pub async fn connect(url: &str) -> Self {
        Self(PgConnection::connect(url).await.expect("connect"))
    }

    /// Sensor ref → holder of its unexpired lease.
    pub async fn holders(&mut self) -> BTreeMap<String, String> {
        sqlx::query(
            "SELECT substr(name, 8) AS sensor, holder FROM attune.lease \
             WHERE name LIKE 'sensor:%' AND expires > now()",
        )
        .fetch_all(&mut self.0)
        .await
        .expect("read leases")
        .iter()
        .map(|row| (row.get("sensor"), row.get("holder")))
        .collect()
    }

    /// Sensor ref → its timer's fired instants in event order.
    pub async fn instants(&mut self) -> BTreeMap<String, Vec<String>> {
        let mut by_sensor: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let rows = sqlx::query(
            "SELECT source_ref, payload->>'scheduled_at' AS at FROM attune.event \
             WHERE source_ref IS NOT NULL ORDER BY id",
        )
        .fetch_all(&mut self.0)
        .await
        .expect("read events");
        for row in rows {
            let sensor: String = row.get("source_ref");
            let at: Option<String> = row.get("at");
            by_sensor.entry(sensor).or_default().extend(at);
        }
        by_sensor
    }

    /// The one integer `sql` selects (as `n`).
    pub async fn count(&mut self, sql: &str) -> i64 {
        sqlx::query(sql)
            .fetch_one(&mut self.0)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get("n")
    }

    pub async fn execute(&mut self, sql: &str) {
        sqlx::query(sql)
            .execute(&mut self.0)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Events with their enforcement count.
    pub async fn enforcements_per_event(&mut self) -> HashMap<i64, i64> {
        sqlx::query(
            "SELECT e.id, count(f.id) AS n FROM attune.event e \
             LEFT JOIN attune.enforcement f ON f.event = e.id GROUP BY e.id",
        )
        .fetch_all(&mut self.0)
        .await
        .expect("read enforcements")
        .iter()
        .map(|row| (row.get("id"), row.get("n")))
        .collect()
    }
}

/// Waits until every stored event has exactly one enforcement (a timer's last event may
/// be stored a moment before its enforcement); fails at once on an event enforced twice.
/// Returns how many events there are.
pub async fn wait_each_event_enforced_once(db: &mut Db, within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let per_event = db.enforcements_per_event().await;
        let twice: Vec<_> = per_event.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            twice.is_empty(),
            "events enforced more than once: {twice:?}"
        );
        let missing: Vec<_> = per_event.iter().filter(|(_, n)| **n == 0).collect();
        if missing.is_empty() {
            return per_event.len();
        }
        assert!(
            Instant::now() < deadline,
            "events without an enforcement after {within:?}: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for `check` to hold on the leases, polling every 100 ms; returns them and how
/// long it took.
pub async fn wait_holders(
    db: &mut Db,
    within: Duration,
    what: &str,
    check: impl Fn(&BTreeMap<String, String>) -> bool,
) -> (BTreeMap<String, String>, Duration) {
    let started = Instant::now();
    loop {
        let holders = db.holders().await;
        if check(&holders) {
            return (holders, started.elapsed());
        }
        assert!(
            started.elapsed() < within,
            "{what}: not within {within:?}; leases: {holders:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How many sensors each instance holds.
pub fn counts(holders: &BTreeMap<String, String>) -> BTreeMap<&str, usize> {
    let mut counts = BTreeMap::new();
    for holder in holders.values() {
        *counts.entry(holder.as_str()).or_insert(0) += 1;
    }
    counts
}

/// Fails when any timer fired one scheduled instant twice; returns the largest gap
/// between consecutive instants of one timer, in seconds.
pub fn assert_each_instant_once(instants: &BTreeMap<String, Vec<String>>) -> f64 {
    let mut widest: f64 = 0.0;
    for (sensor, fired) in instants {
        let mut seen = std::collections::HashSet::new();
        for at in fired {
            assert!(seen.insert(at), "{sensor} fired {at} twice: {fired:?}");
        }
        let mut times: Vec<chrono::DateTime<chrono::Utc>> = fired
            .iter()
            .map(|at| at.parse().expect("RFC 3339 instant"))
            .collect();
        times.sort();
        for pair in times.windows(2) {
            widest = widest.max((pair[1] - pair[0]).num_milliseconds() as f64 / 1000.0);
        }
    }
    widest
}
