//! Who used the machine's cores during a run: this process (the service and the load it
//! is given), the local PostgreSQL and RabbitMQ, and how much stayed idle, read from
//! `/proc`. On a 2-core machine the broker and the database share the cores with the
//! service, so a ratio to the broker's ceiling means little without this.

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

/// User + system ticks of one process (all its threads); 0 when it is gone.
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
