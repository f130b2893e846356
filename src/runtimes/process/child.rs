//! Process plumbing: the process group of one sensor process, reading its pipes line by
//! line with a size cap, and describing how it ended.

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// The process group a sensor process leads (it is spawned with `process_group(0)`, so
/// the group id is its pid). Dropping the guard SIGKILLs the group unless it was
/// [released](ProcessGroup::release): that is the last resort when the driver is
/// aborted before it could stop the process in order.
#[derive(Debug)]
pub struct ProcessGroup {
    pgid: Option<Pid>,
}

impl ProcessGroup {
    /// `pid` is the leader's; `None` (a process already reaped) makes a guard that
    /// signals nothing. Never group 0: that would be the service's own group.
    pub fn new(pid: Option<u32>) -> Self {
        Self {
            pgid: pid
                .and_then(|pid| i32::try_from(pid).ok())
                .filter(|pid| *pid > 0)
                .map(Pid::from_raw),
        }
    }

    /// Sends `signal` to every process of the group. A group that is already gone is not
    /// an error: that is what a stop wants.
    pub fn signal(&self, signal: Signal) {
        if let Some(pgid) = self.pgid
            && let Err(error) = killpg(pgid, signal)
            && error != nix::errno::Errno::ESRCH
        {
            tracing::warn!(pgid = pgid.as_raw(), %error, ?signal, "cannot signal a sensor process group");
        }
    }

    /// Kills what is left of the group and disarms the guard. Called when the leader is
    /// reaped: until then its zombie keeps the group id taken, afterwards the id may
    /// belong to someone else.
    pub fn kill_and_disarm(&mut self) {
        self.signal(Signal::SIGKILL);
        self.pgid = None;
    }

    /// Kills what is left of the group (if the leader was not reaped yet) and disarms the
    /// drop guard.
    pub fn release(mut self) {
        self.kill_and_disarm();
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.signal(Signal::SIGKILL);
    }
}

/// One line read from a pipe, without its newline. A line longer than the cap keeps only
/// its first `cap` bytes; `len` is its full length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawLine {
    pub bytes: Vec<u8>,
    pub len: usize,
}

impl RawLine {
    pub fn truncated(&self) -> bool {
        self.len > self.bytes.len()
    }
}

/// Reads the next line, keeping at most `cap` bytes of it in memory so a process that
/// writes an endless line cannot exhaust the service's memory. `None` at end of input.
pub async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    cap: usize,
) -> std::io::Result<Option<RawLine>> {
    let mut bytes = Vec::new();
    let mut len = 0usize;
    let mut any = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(any.then_some(RawLine { bytes, len }));
        }
        any = true;
        let (chunk, consumed, done) = match available.iter().position(|b| *b == b'\n') {
            Some(end) => (&available[..end], end + 1, true),
            None => (available, available.len(), false),
        };
        let room = cap.saturating_sub(bytes.len());
        bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
        len += chunk.len();
        reader.consume(consumed);
        if done {
            // Tolerate CRLF line ends.
            if bytes.last() == Some(&b'\r') && len == bytes.len() {
                bytes.pop();
                len -= 1;
            }
            return Ok(Some(RawLine { bytes, len }));
        }
    }
}

/// "exited with code 3" / "killed by signal 9 (SIGKILL)".
pub fn describe_exit(status: &ExitStatus) -> String {
    if let Some(code) = status.code() {
        format!("exited with code {code}")
    } else if let Some(signal) = status.signal() {
        match Signal::try_from(signal) {
            Ok(name) => format!("killed by signal {signal} ({name})"),
            Err(_) => format!("killed by signal {signal}"),
        }
    } else {
        format!("ended ({status})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_split_capped_and_the_last_one_may_lack_a_newline() {
        let input: &[u8] = b"one\r\ntoolongline\n\nlast";
        let mut reader = tokio::io::BufReader::with_capacity(4, input);
        let mut lines = Vec::new();
        while let Some(line) = read_line(&mut reader, 5).await.expect("read") {
            lines.push(line);
        }
        assert_eq!(
            lines,
            vec![
                RawLine {
                    bytes: b"one".to_vec(),
                    len: 3
                },
                RawLine {
                    bytes: b"toolo".to_vec(),
                    len: 11
                },
                RawLine {
                    bytes: vec![],
                    len: 0
                },
                RawLine {
                    bytes: b"last".to_vec(),
                    len: 4
                },
            ]
        );
        assert!(lines[1].truncated());
    }
}
