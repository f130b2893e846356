//! Custom sensors as supervised processes: `runtime: python | node | shell | native`,
//! `entrypoint: <file in the pack's sensors/ directory>`.
//!
//! The protocol (stdin, environment, stdout lines) is described in
//! `docs/sensor-protocol.md`. In short: the service starts the process in its own process
//! group with a cleared environment, writes one JSON line to its stdin, and turns each
//! JSON line on its stdout into an event, a saved state or a log line. `mode: poll` runs
//! the process every poll interval and expects it to exit in time; `mode: stream` keeps it
//! running. An unexpected exit is returned as a [`SensorFailure`], so the supervisor's
//! restart policy applies. A stop sends SIGTERM to the group, then SIGKILL after the grace
//! period.

pub mod child;
pub mod protocol;

use async_trait::async_trait;
use nix::sys::signal::Signal;
use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior, sleep_until};

use attune_actors::domain::{Sensor, SensorDefinition};
use attune_actors::ports::DetectionSink;
use attune_actors::ports::IntakeError;
use attune_actors::ports::{SensorDriver, SensorFailure};

use super::DefinitionError;
use crate::config::Settings;
use child::{ProcessGroup, RawLine, describe_exit, read_line};
use protocol::{BadLine, LogLevel, MAX_LINE_BYTES, OutputLine};

/// Runtimes whose sensors are processes.
pub const RUNTIMES: [&str; 4] = ["python", "node", "shell", "native"];

/// Variables a sensor process inherits from the service when they are set; everything
/// else is cleared unless the sensor lists it in `pass_env`.
pub const INHERITED_ENV: [&str; 4] = ["PATH", "HOME", "LANG", "TZ"];

/// How long the pipes of an exited process are still read: a grandchild that left the
/// process group could otherwise hold them open forever.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// stderr lines longer than this are cut for the logs and the status.
const MAX_STDERR_LINE: usize = 4096;

/// The shortest `pass_env` value masked in stderr.
const MIN_MASKED_LEN: usize = 4;

/// `text` with every occurrence of a secret replaced by `***`, longest secrets first so a
/// secret that contains another is masked whole.
fn mask_secrets(text: &str, secrets: &[String]) -> String {
    let mut secrets: Vec<&String> = secrets.iter().collect();
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets.into_iter().fold(text.to_owned(), |text, secret| {
        text.replace(secret.as_str(), "***")
    })
}

/// A line cut at its length limit may end in the first part of a secret: any such part,
/// however short, is masked too, so no prefix of a secret is left.
fn mask_cut_secret(mut text: String, secrets: &[String]) -> String {
    for secret in secrets {
        let longest = (1..secret.len())
            .rev()
            .filter(|&end| secret.is_char_boundary(end))
            .find(|&end| text.ends_with(&secret[..end]));
        if let Some(end) = longest {
            text.truncate(text.len() - end);
            text.push_str("***");
        }
    }
    text
}

/// How many stderr lines go into a failure message.
const STDERR_EXCERPT_LINES: usize = 3;

pub fn is_process_runtime(runtime: &str) -> bool {
    RUNTIMES.contains(&runtime)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Started every poll interval; must exit within the sensor timeout.
    Poll,
    /// Runs as long as the sensor does.
    Stream,
}

impl Mode {
    pub fn parse(mode: Option<&str>) -> Result<Self, String> {
        match mode {
            None | Some("poll") => Ok(Self::Poll),
            Some("stream") => Ok(Self::Stream),
            Some(other) => Err(format!("'{other}' is not a mode (poll or stream)")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Poll => "poll",
            Self::Stream => "stream",
        }
    }
}

/// Service-wide settings of process sensors, shared by all their drivers.
#[derive(Debug, Clone)]
pub struct ProcessSettings {
    pub python: Vec<String>,
    pub node: Vec<String>,
    pub shell: Vec<String>,
    /// For sensors that set no `poll_interval`.
    pub default_poll_interval: Duration,
    /// How long one poll may run.
    pub sensor_timeout: Duration,
    /// Between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
    /// One permit per running sensor process (`sensor.max_concurrent_sensors`).
    pub slots: Arc<Semaphore>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl ProcessSettings {
    pub fn from_settings(settings: &Settings, metrics: Arc<crate::metrics::Metrics>) -> Self {
        let split = |command: &str| command.split_whitespace().map(str::to_owned).collect();
        Self {
            python: split(&settings.runtimes.python),
            node: split(&settings.runtimes.node),
            shell: split(&settings.runtimes.shell),
            default_poll_interval: Duration::from_secs(settings.sensor.poll_interval),
            sensor_timeout: Duration::from_secs(settings.sensor.sensor_timeout),
            stop_grace: settings.sensor_stop_grace(),
            slots: Arc::new(Semaphore::new(
                usize::try_from(settings.sensor.max_concurrent_sensors).unwrap_or(usize::MAX),
            )),
            metrics,
        }
    }

    fn interpreter(&self, runtime: &str) -> Option<&[String]> {
        match runtime {
            "python" => Some(&self.python),
            "node" => Some(&self.node),
            "shell" => Some(&self.shell),
            _ => None,
        }
    }
}

fn refuse(field: &'static str, message: impl Into<String>) -> DefinitionError {
    DefinitionError {
        field,
        message: message.into(),
    }
}

/// Pack-load checks of a process sensor: its mode, `pass_env` names and entrypoint file.
pub fn validate(sensor: &SensorDefinition) -> Result<(), DefinitionError> {
    Mode::parse(sensor.mode.as_deref()).map_err(|e| refuse("mode", e))?;
    for name in &sensor.pass_env {
        check_env_name(name).map_err(|e| refuse("pass_env", e))?;
    }
    let pack_path = sensor
        .pack_path
        .as_deref()
        .ok_or_else(|| refuse("entrypoint", "the sensor has no pack directory"))?;
    let path = resolve_entrypoint(Path::new(pack_path), &sensor.entrypoint)
        .map_err(|e| refuse("entrypoint", e))?;
    if sensor.runtime_ref == "native" {
        check_executable(&path, &sensor.entrypoint).map_err(|e| refuse("entrypoint", e))?;
    }
    Ok(())
}

fn check_env_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!(
            "'{name}' is not a variable name (letters, digits and '_', not starting with a digit)"
        ));
    }
    // The service's own settings (database URL, admin token) live in ATTUNE__* variables,
    // and ATTUNE_SENSOR_REF and friends are set by the service.
    if name.starts_with("ATTUNE_") {
        return Err(format!(
            "'{name}': ATTUNE_* variables are the service's own and cannot be passed"
        ));
    }
    Ok(())
}

/// The file an entrypoint names, resolved inside `<pack>/sensors/`. Refused: URLs,
/// absolute paths, `..`, a path (or symlink) that resolves outside the pack directory,
/// a missing file.
pub fn resolve_entrypoint(pack_path: &Path, entrypoint: &str) -> Result<PathBuf, String> {
    if entrypoint.trim().is_empty() {
        return Err("must name a file in the pack's sensors/ directory".to_owned());
    }
    if entrypoint.contains("://") {
        return Err(format!(
            "'{entrypoint}' looks like a URL; sensor code must be a file in the pack's sensors/ directory"
        ));
    }
    let relative = Path::new(entrypoint);
    if relative.is_absolute() {
        return Err(format!(
            "'{entrypoint}' is an absolute path; name a file relative to the pack's sensors/ directory"
        ));
    }
    if relative
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!(
            "'{entrypoint}' contains '..'; sensor code must stay inside the pack"
        ));
    }
    let pack = std::fs::canonicalize(pack_path).map_err(|e| {
        format!(
            "cannot resolve the pack directory {}: {e}",
            pack_path.display()
        )
    })?;
    let path = pack.join("sensors").join(relative);
    let real = std::fs::canonicalize(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            format!("'{entrypoint}' does not exist ({})", path.display())
        }
        _ => format!("cannot resolve '{entrypoint}' ({}): {e}", path.display()),
    })?;
    if !real.starts_with(&pack) {
        return Err(format!(
            "'{entrypoint}' resolves to {}, outside the pack directory {}",
            real.display(),
            pack.display()
        ));
    }
    if !real.is_file() {
        return Err(format!("'{entrypoint}' ({}) is not a file", real.display()));
    }
    Ok(real)
}

fn check_executable(path: &Path, entrypoint: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|e| format!("cannot read '{entrypoint}': {e}"))?
        .permissions()
        .mode();
    if mode & 0o111 == 0 {
        return Err(format!(
            "'{entrypoint}' is not executable (chmod +x it, or use runtime python, node or shell)"
        ));
    }
    Ok(())
}

/// The driver of one process sensor.
pub struct ProcessSensor {
    program: PathBuf,
    args: Vec<OsString>,
    /// For log and error messages.
    command_line: String,
    pack_dir: PathBuf,
    mode: Mode,
    poll_interval: Duration,
    pass_env: Vec<String>,
    /// The values of the `pass_env` variables, which are often credentials: masked
    /// wherever the sensor's output goes (log, status, last error). Read once, like the
    /// service's environment they come from; values under [`MIN_MASKED_LEN`] characters
    /// are left alone, as masking them would garble the text.
    secrets: Vec<String>,
    settings: ProcessSettings,
}

/// How one run of the process ended.
struct Outcome {
    status: ExitStatus,
    stopped: bool,
    timed_out: bool,
    stderr_tail: VecDeque<String>,
}

impl Outcome {
    fn stderr_excerpt(&self) -> String {
        if self.stderr_tail.is_empty() {
            String::new()
        } else {
            let lines: Vec<&str> = self.stderr_tail.iter().map(String::as_str).collect();
            format!("; stderr: {}", lines.join(" | "))
        }
    }
}

enum Output {
    Stdout(RawLine),
    Stderr(RawLine),
}

/// Aborts helper tasks (pipe readers, the stdin writer) when a run ends in any way.
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

impl ProcessSensor {
    /// Checks the sensor again at start (its files may have changed since the pack was
    /// loaded) and prepares the command.
    pub fn new(sensor: &Sensor, settings: &ProcessSettings) -> Result<Self, String> {
        let mode = Mode::parse(sensor.mode.as_deref())?;
        for name in &sensor.pass_env {
            check_env_name(name)?;
        }
        let pack_dir = sensor
            .pack_path
            .as_deref()
            .map(PathBuf::from)
            .ok_or("the sensor has no pack directory; load its pack again")?;
        let entrypoint = resolve_entrypoint(&pack_dir, &sensor.entrypoint)?;
        let (program, args) = match settings.interpreter(&sensor.runtime_ref) {
            Some([program, args @ ..]) => {
                let mut args: Vec<OsString> = args.iter().map(OsString::from).collect();
                args.push(entrypoint.clone().into_os_string());
                (PathBuf::from(program), args)
            }
            Some([]) => {
                return Err(format!("runtimes.{} names no program", sensor.runtime_ref));
            }
            None if sensor.runtime_ref == "native" => {
                check_executable(&entrypoint, &sensor.entrypoint)?;
                (entrypoint, Vec::new())
            }
            None => return Err(format!("'{}' is not a process runtime", sensor.runtime_ref)),
        };
        let command_line = std::iter::once(program.as_os_str())
            .chain(args.iter().map(OsString::as_os_str))
            .map(|part| part.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        let poll_interval = sensor
            .poll_interval
            .and_then(|seconds| u64::try_from(seconds).ok())
            .filter(|seconds| *seconds > 0)
            .map(Duration::from_secs)
            .unwrap_or(settings.default_poll_interval);
        Ok(Self {
            program,
            args,
            command_line,
            pack_dir,
            mode,
            poll_interval,
            pass_env: sensor.pass_env.clone(),
            secrets: sensor
                .pass_env
                .iter()
                .filter_map(|name| std::env::var(name).ok())
                .filter(|value| value.chars().count() >= MIN_MASKED_LEN)
                .collect(),
            settings: settings.clone(),
        })
    }

    fn environment(&self, sink: &DetectionSink) -> Vec<(OsString, OsString)> {
        let sensor = sink.sensor();
        let mut env: Vec<(OsString, OsString)> = INHERITED_ENV
            .iter()
            .copied()
            .chain(self.pass_env.iter().map(String::as_str))
            .filter_map(|name| std::env::var_os(name).map(|value| (name.into(), value)))
            .collect();
        for (name, value) in [
            ("ATTUNE_SENSOR_REF", sensor.r#ref.clone()),
            ("ATTUNE_TRIGGER_REF", sensor.trigger_ref.clone()),
            (
                "ATTUNE_PACK_REF",
                sensor.pack_ref.clone().unwrap_or_default(),
            ),
            (
                "ATTUNE_POLL_INTERVAL",
                self.poll_interval.as_secs().to_string(),
            ),
        ] {
            env.push((name.into(), value.into()));
        }
        env
    }

    fn failure(&self, sink: &DetectionSink, message: impl std::fmt::Display) -> SensorFailure {
        SensorFailure::new(format!(
            "sensor '{}' ({}): {message}",
            sink.sensor().r#ref,
            self.mode.as_str()
        ))
    }

    /// Starts the process once and handles its output until it exits (or is stopped or
    /// timed out and killed). `None` when the sensor was stopped before a process started.
    async fn run_once(
        &self,
        sink: &DetectionSink,
        timeout: Option<Duration>,
    ) -> Result<Option<Outcome>, SensorFailure> {
        let _slot = tokio::select! {
            biased;
            _ = sink.stopping() => return Ok(None),
            slot = self.settings.slots.clone().acquire_owned() => slot
                .map_err(|_| self.failure(sink, "the sensor process slots are closed"))?,
        };
        let state = sink
            .load_state()
            .await
            .map_err(|e| self.failure(sink, format!("cannot load the sensor state: {e}")))?;
        let message = protocol::start_message(
            sink.sensor(),
            sink.trigger(),
            self.mode.as_str(),
            self.poll_interval.as_secs(),
            state,
        );
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .env_clear()
            .envs(self.environment(sink))
            .current_dir(&self.pack_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            // The group guard below kills the whole group; this covers the leader should
            // the guard ever be skipped.
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                self.failure(sink, format!("cannot start `{}`: {e}", self.command_line))
            })?;
        let mut group = ProcessGroup::new(child.id());
        tracing::debug!(sensor = %sink.sensor().r#ref, pid = child.id(), command = %self.command_line, "sensor process started");

        let mut tasks = Tasks(Vec::new());
        if let Some(mut stdin) = child.stdin.take() {
            let mut line = message.to_string().into_bytes();
            line.push(b'\n');
            // In its own task: a process that never reads stdin must not stall the
            // driver once the pipe buffer is full. A process that exits first is fine.
            tasks.0.push(tokio::spawn(async move {
                let _ = stdin.write_all(&line).await;
                let _ = stdin.shutdown().await;
            }));
        }
        let (lines, mut output) = mpsc::channel::<Output>(16);
        if let Some(stdout) = child.stdout.take() {
            let lines = lines.clone();
            tasks.0.push(tokio::spawn(async move {
                let mut reader = BufReader::new(stdout);
                while let Ok(Some(line)) = read_line(&mut reader, MAX_LINE_BYTES).await {
                    if lines.send(Output::Stdout(line)).await.is_err() {
                        break;
                    }
                }
            }));
        }
        if let Some(stderr) = child.stderr.take() {
            let lines = lines.clone();
            tasks.0.push(tokio::spawn(async move {
                let mut reader = BufReader::new(stderr);
                while let Ok(Some(line)) = read_line(&mut reader, MAX_STDERR_LINE).await {
                    if lines.send(Output::Stderr(line)).await.is_err() {
                        break;
                    }
                }
            }));
        }
        drop(lines);

        let started = Instant::now();
        let deadline = timeout.map(|timeout| started + timeout);
        let grace = self.settings.stop_grace;
        let mut exit: Option<ExitStatus> = None;
        let mut stopped = false;
        let mut timed_out = false;
        // Set while SIGTERM was sent and SIGKILL is due.
        let mut kill_at: Option<Instant> = None;
        // Once stopping, line handling is bounded by this.
        let mut give_up_at: Option<Instant> = None;
        let mut drain_until: Option<Instant> = None;
        let mut pipes_open = true;
        let mut line_number = 0u64;
        // An event whose storage was not confirmed (interrupted by a stop): a later state
        // line must not be saved, or a restart could skip that event.
        let mut unconfirmed = false;
        let mut stderr_tail = VecDeque::new();

        while exit.is_none() || pipes_open {
            tokio::select! {
                biased;
                _ = sink.stopping(), if !stopped => {
                    stopped = true;
                    give_up_at = Some(Instant::now() + grace);
                    if exit.is_none() {
                        group.signal(Signal::SIGTERM);
                        kill_at = give_up_at;
                    }
                }
                _ = sleep_until(deadline.unwrap_or(started)),
                    if deadline.is_some() && exit.is_none() && !timed_out && !stopped =>
                {
                    timed_out = true;
                    group.signal(Signal::SIGTERM);
                    kill_at = Some(Instant::now() + grace);
                }
                _ = sleep_until(kill_at.unwrap_or(started)), if kill_at.is_some() && exit.is_none() => {
                    group.signal(Signal::SIGKILL);
                    kill_at = None;
                }
                status = child.wait(), if exit.is_none() => {
                    let status = status
                        .map_err(|e| self.failure(sink, format!("cannot wait for the process: {e}")))?;
                    exit = Some(status);
                    // Whatever the process left behind in its group goes with it, now and
                    // only now: once the leader is reaped its group id may be reused.
                    group.kill_and_disarm();
                    drain_until = Some(Instant::now() + DRAIN_AFTER_EXIT);
                }
                _ = sleep_until(drain_until.unwrap_or(started)), if drain_until.is_some() && pipes_open => {
                    tracing::warn!(sensor = %sink.sensor().r#ref, "sensor process exited but its output pipes stay open (a process outside its group holds them); no longer reading them");
                    pipes_open = false;
                }
                line = output.recv(), if pipes_open => match line {
                    None => pipes_open = false,
                    Some(Output::Stderr(line)) => self.stderr_line(sink, &line, &mut stderr_tail),
                    Some(Output::Stdout(line)) => {
                        line_number += 1;
                        let handled = self.stdout_line(sink, line_number, line, unconfirmed);
                        if stopped {
                            let until = give_up_at.unwrap_or_else(Instant::now);
                            match tokio::time::timeout_at(until, handled).await {
                                Ok(result) => result?,
                                Err(_) => unconfirmed = true,
                            }
                        } else {
                            tokio::select! {
                                biased;
                                result = handled => result?,
                                // The poll timeout holds while an event is being stored.
                                _ = sleep_until(deadline.unwrap_or(started)),
                                    if deadline.is_some() && exit.is_none() && !timed_out =>
                                {
                                    unconfirmed = true;
                                    timed_out = true;
                                    group.signal(Signal::SIGTERM);
                                    kill_at = Some(Instant::now() + grace);
                                }
                                _ = sink.stopping() => {
                                    unconfirmed = true;
                                    stopped = true;
                                    give_up_at = Some(Instant::now() + grace);
                                    if exit.is_none() {
                                        group.signal(Signal::SIGTERM);
                                        kill_at = give_up_at;
                                    }
                                }
                            }
                        }
                    }
                },
            }
        }
        group.release();
        drop(tasks);
        let status = exit.unwrap_or_default();
        tracing::debug!(sensor = %sink.sensor().r#ref, status = %describe_exit(&status), "sensor process ended");
        Ok(Some(Outcome {
            status,
            stopped,
            timed_out,
            stderr_tail,
        }))
    }

    fn stderr_line(&self, sink: &DetectionSink, line: &RawLine, tail: &mut VecDeque<String>) {
        let mut text = mask_secrets(&String::from_utf8_lossy(&line.bytes), &self.secrets);
        if line.truncated() {
            // The cut may have split a secret: its first part is at the end.
            text = mask_cut_secret(text, &self.secrets);
            text.push_str(" […]");
        }
        // At debug: sensor code may print anything, and stderr is its diagnostics.
        tracing::debug!(sensor = %sink.sensor().r#ref, stream = "stderr", "{text}");
        sink.record_stderr(&text);
        if tail.len() >= STDERR_EXCERPT_LINES {
            tail.pop_front();
        }
        tail.push_back(text);
    }

    /// Handles one stdout line: an event is stored before this returns, and a state is
    /// saved only if every event before it was.
    async fn stdout_line(
        &self,
        sink: &DetectionSink,
        number: u64,
        line: RawLine,
        unconfirmed: bool,
    ) -> Result<(), SensorFailure> {
        let sensor_ref = &sink.sensor().r#ref;
        let parsed = if line.truncated() {
            Err(BadLine::TooLong(line.len))
        } else {
            protocol::parse_line(&line.bytes)
        };
        match parsed {
            Err(error) => {
                tracing::warn!(sensor = %sensor_ref, line = number, %error, "bad output line dropped");
                sink.record_bad_output();
            }
            Ok(None) => {}
            Ok(Some(OutputLine::Payload(payload))) => match sink.emit(payload).await {
                Ok(_) => {}
                Err(IntakeError::InvalidPayload(reason)) => {
                    tracing::warn!(sensor = %sensor_ref, line = number, %reason, "bad output line dropped");
                    sink.record_bad_output();
                }
                Err(e) => {
                    return Err(self.failure(
                        sink,
                        format!("stdout line {number}: cannot store the event: {e}"),
                    ));
                }
            },
            Ok(Some(OutputLine::State(state))) => {
                if unconfirmed {
                    tracing::warn!(sensor = %sensor_ref, line = number, "state not saved: an event before it may not be stored");
                } else {
                    sink.save_state(&state).await.map_err(|e| {
                        self.failure(
                            sink,
                            format!("stdout line {number}: cannot save the state: {e}"),
                        )
                    })?;
                }
            }
            Ok(Some(OutputLine::Log { level, message })) => {
                match (level, mask_secrets(&message, &self.secrets)) {
                    (LogLevel::Debug, message) => {
                        tracing::debug!(sensor = %sensor_ref, "{message}")
                    }
                    (LogLevel::Info, message) => tracing::info!(sensor = %sensor_ref, "{message}"),
                    (LogLevel::Warn, message) => tracing::warn!(sensor = %sensor_ref, "{message}"),
                    (LogLevel::Error, message) => {
                        tracing::error!(sensor = %sensor_ref, "{message}")
                    }
                }
            }
        }
        Ok(())
    }

    async fn run_poll(&self, sink: &DetectionSink) -> Result<(), SensorFailure> {
        let timeout = self.settings.sensor_timeout;
        // The first poll runs at once; then one starts every interval (start to start),
        // or right after a poll that took longer.
        let mut ticks = tokio::time::interval(self.poll_interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = sink.stopping() => return Ok(()),
                _ = ticks.tick() => {}
            }
            sink.record_poll();
            let Some(outcome) = self.run_once(sink, Some(timeout)).await? else {
                return Ok(());
            };
            if outcome.stopped {
                return Ok(());
            }
            if outcome.timed_out {
                self.settings.metrics.process_timeout(&sink.sensor().r#ref);
                return Err(self.failure(
                    sink,
                    format!(
                        "poll process timed out after {} s (sensor.sensor_timeout) and was {}{}",
                        timeout.as_secs_f64(),
                        describe_exit(&outcome.status),
                        outcome.stderr_excerpt()
                    ),
                ));
            }
            if !outcome.status.success() {
                return Err(self.failure(
                    sink,
                    format!(
                        "poll process {}{}",
                        describe_exit(&outcome.status),
                        outcome.stderr_excerpt()
                    ),
                ));
            }
        }
    }

    async fn run_stream(&self, sink: &DetectionSink) -> Result<(), SensorFailure> {
        sink.record_poll();
        match self.run_once(sink, None).await? {
            None => Ok(()),
            Some(outcome) if outcome.stopped => Ok(()),
            Some(outcome) => Err(self.failure(
                sink,
                format!(
                    "stream process {} (a stream sensor must keep running){}",
                    describe_exit(&outcome.status),
                    outcome.stderr_excerpt()
                ),
            )),
        }
    }
}

#[async_trait]
impl SensorDriver for ProcessSensor {
    async fn run(&mut self, sink: DetectionSink) -> Result<(), SensorFailure> {
        match self.mode {
            Mode::Poll => self.run_poll(&sink).await,
            Mode::Stream => self.run_stream(&sink).await,
        }
    }

    fn stops_gracefully(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_part_of_a_cut_secret_is_masked() {
        let secrets = vec!["hunter2-token".to_owned()];
        assert_eq!(
            mask_cut_secret("token hunter2-to".to_owned(), &secrets),
            "token ***"
        );
        assert_eq!(
            mask_cut_secret("nothing at the end".to_owned(), &secrets),
            "nothing at the end"
        );
    }

    #[test]
    fn secrets_are_masked_longest_first() {
        let secrets = vec!["hunter2-token".to_owned(), "hunter2".to_owned()];
        assert_eq!(
            mask_secrets("auth hunter2-token failed, retry hunter2", &secrets),
            "auth *** failed, retry ***"
        );
        assert_eq!(mask_secrets("nothing here", &secrets), "nothing here");
    }

    #[test]
    fn env_names_are_checked() {
        assert!(check_env_name("MY_TOKEN").is_ok());
        assert!(check_env_name("_x1").is_ok());
        assert!(check_env_name("1X").is_err());
        assert!(check_env_name("A-B").is_err());
        assert!(check_env_name("").is_err());
        assert!(check_env_name("ATTUNE__DATABASE__URL").is_err());
    }

    #[test]
    fn modes_parse() {
        assert_eq!(Mode::parse(None), Ok(Mode::Poll));
        assert_eq!(Mode::parse(Some("stream")), Ok(Mode::Stream));
        assert!(Mode::parse(Some("push")).is_err());
    }
}
