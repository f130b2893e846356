//! Who used the machine's cores during a run: this process (the service and the load it
//! is given), the local PostgreSQL and RabbitMQ, and how much stayed idle, read from
//! `/proc`. On a 2-core machine the broker and the database share the cores with the
//! service, so a ratio to the broker's ceiling means little without this.

use std::collections::BTreeMap;
use std::fs;
use std::time::Instant;

/// CPU time so far, in clock ticks, of each group of processes and of the whole machine.
pub struct CpuSample {
    at: Instant,
    this: u64,
    postgres: u64,
    rabbitmq: u64,
    idle: u64,
    total: u64,
}

impl CpuSample {
    pub fn now() -> Self {
        let (mut postgres, mut rabbitmq) = (0, 0);
        if let Ok(entries) = fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(pid) = name
                    .to_str()
                    .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
                else {
                    continue;
                };
                let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                if comm.starts_with("postgres") {
                    postgres += process_ticks(pid);
                } else if comm.starts_with("beam") || comm.starts_with("erl_child_setup") {
                    rabbitmq += process_ticks(pid);
                }
            }
        }
        let (idle, total) = machine_ticks();
        Self {
            at: Instant::now(),
            this: process_ticks("self"),
            postgres,
            rabbitmq,
            idle,
            total,
        }
    }

    /// Cores each group used on average since `before`, and the machine's idle share.
    pub fn since(&self, before: &Self) -> String {
        // SAFETY: sysconf only reads a constant of the system.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let seconds = self.at.duration_since(before.at).as_secs_f64().max(1e-9);
        let cores = |now: u64, then: u64| now.saturating_sub(then) as f64 / hz / seconds;
        let total = self.total.saturating_sub(before.total).max(1) as f64;
        format!(
            "cores used: this process {:.2}, PostgreSQL {:.2}, RabbitMQ {:.2}; machine idle {:.0} %",
            cores(self.this, before.this),
            cores(self.postgres, before.postgres),
            cores(self.rabbitmq, before.rabbitmq),
            self.idle.saturating_sub(before.idle) as f64 / total * 100.0,
        )
    }
}

/// CPU ticks so far of this process's threads, summed by thread name (the runtime's
/// workers, SQLite's connection threads, the store's write thread...): which of them a
/// run kept busy, and so which one bounds it.
pub struct ThreadTicks(BTreeMap<String, (u64, usize)>);

impl ThreadTicks {
    pub fn now() -> Self {
        let mut by_name = BTreeMap::new();
        if let Ok(entries) = fs::read_dir("/proc/self/task") {
            for entry in entries.flatten() {
                let tid = entry.file_name();
                let Some(tid) = tid.to_str() else { continue };
                let path = format!("self/task/{tid}");
                let name = fs::read_to_string(format!("/proc/{path}/comm")).unwrap_or_default();
                let slot = by_name.entry(name.trim().to_owned()).or_insert((0, 0));
                slot.0 += process_ticks(&path);
                slot.1 += 1;
            }
        }
        Self(by_name)
    }

    /// CPU seconds each group of threads used since `before`, busiest first, leaving out
    /// those that used less than 0.05 s.
    pub fn since(&self, before: &Self) -> String {
        // SAFETY: sysconf only reads a constant of the system.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let mut used: Vec<(f64, &str, usize)> = self
            .0
            .iter()
            .map(|(name, (ticks, count))| {
                let then = before.0.get(name).map_or(0, |(t, _)| *t);
                (
                    ticks.saturating_sub(then) as f64 / hz,
                    name.as_str(),
                    *count,
                )
            })
            .filter(|(seconds, _, _)| *seconds >= 0.05)
            .collect();
        used.sort_by(|a, b| b.0.total_cmp(&a.0));
        let parts: Vec<String> = used
            .iter()
            .map(|(seconds, name, count)| format!("{name} x{count} {seconds:.2} s"))
            .collect();
        format!("CPU by thread: {}", parts.join(", "))
    }
}

/// User + system ticks of one process (all its threads) or, for `self/task/TID`, of one
/// thread; 0 when it is gone.
fn process_ticks(pid: &str) -> u64 {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // The command name may hold spaces and parentheses: fields count from the last ')'.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |index: usize| fields.get(index).and_then(|v| v.parse::<u64>().ok());
    field(11).unwrap_or(0) + field(12).unwrap_or(0)
}

/// Idle (with I/O wait) and all ticks of every core, from the first line of `/proc/stat`.
fn machine_ticks() -> (u64, u64) {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    (idle, ticks.iter().sum())
}
