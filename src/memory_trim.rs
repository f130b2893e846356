//! Gives memory the service has freed back to the operating system once the actor tree
//! has settled after a change.
//!
//! An allocator keeps freed memory for reuse (glibc's returns only what lies at the top
//! of its heaps, mimalloc what stays free a while). Starting sensors frees a lot in
//! between (the definitions read, state loads, the supervisor's status snapshots as the
//! tree grew): a process serving 100,000 interval timers holds 1,370 to 1,390 MiB when
//! all have started and 1,088 MiB once trimmed (`cargo bench --bench sensors`,
//! benches/README.md). The trim takes a few milliseconds on such a heap,
//! during which allocations wait for it, so it runs on a blocking thread once the tree
//! has been quiet for [`QUIET`], and at most once per [`MIN_GAP`]: the supervisor
//! publishes its status after every message it handles (lease ticks every few seconds
//! on a cluster), and most of those change nothing.

use std::sync::Arc;
use std::time::Duration;

use attune_actors::status::StatusFeed;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::metrics::Metrics;

/// How long the tree's status must stay unchanged before freed memory is returned.
pub const QUIET: Duration = Duration::from_secs(1);
/// The least time between two trims.
pub const MIN_GAP: Duration = Duration::from_secs(60);

/// Returns free memory to the operating system: mimalloc's (the service's allocator, see
/// `allocator.rs`) and that of every glibc malloc arena (where SQLite and the other C
/// libraries allocate).
pub fn release_free_memory() {
    // SAFETY: mi_collect only frees the allocator's own unused pages; called from any
    // thread, it collects that thread's heap and the abandoned ones.
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and shrinks the allocator's own free lists, under
    // each arena's lock, so threads allocating meanwhile merely wait for it.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Trims after each change of the tree once it has been quiet for [`QUIET`], at most
/// once per [`MIN_GAP`].
pub fn spawn(feed: StatusFeed, metrics: Arc<Metrics>) -> JoinHandle<()> {
    let pace = Pace {
        quiet: QUIET,
        min_gap: MIN_GAP,
    };
    tokio::spawn(trim_when_settled(feed, pace, move || {
        release_free_memory();
        metrics.memory_trimmed();
    }))
}

/// When a trim may run.
#[derive(Debug, Clone, Copy)]
struct Pace {
    /// Unchanged this long since the last change.
    quiet: Duration,
    /// This long after the last trim.
    min_gap: Duration,
}

impl Pace {
    /// How long to wait for the next change before trimming, at `now`, the last trim
    /// having run at `last_trim`.
    fn wait(&self, now: Instant, last_trim: Option<Instant>) -> Duration {
        let gap_left = last_trim.map_or(Duration::ZERO, |at| {
            (at + self.min_gap).saturating_duration_since(now)
        });
        self.quiet.max(gap_left)
    }
}

/// Runs `trim` (on a blocking thread) each time the feed has changed and then stayed
/// unchanged as `pace` says; returns when the supervisor stops publishing.
async fn trim_when_settled(
    mut feed: StatusFeed,
    pace: Pace,
    trim: impl Fn() + Clone + Send + 'static,
) {
    let mut last_trim = None;
    while feed.changed().await {
        loop {
            let wait = pace.wait(Instant::now(), last_trim);
            match tokio::time::timeout(wait, feed.changed()).await {
                Ok(true) => continue,
                Ok(false) => return,
                Err(_elapsed) => break,
            }
        }
        let trim = trim.clone();
        if let Err(error) = tokio::task::spawn_blocking(trim).await {
            tracing::warn!(%error, "returning freed memory failed");
        }
        last_trim = Some(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use attune_actors::status::TreeSnapshot;
    use tokio::sync::watch;

    use super::*;

    fn counting() -> (Arc<AtomicUsize>, impl Fn() + Clone + Send + 'static) {
        let trims = Arc::new(AtomicUsize::new(0));
        let counter = trims.clone();
        (trims, move || {
            counter.fetch_add(1, Ordering::SeqCst);
        })
    }

    async fn wait_for(trims: &AtomicUsize, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while trims.load(Ordering::SeqCst) < n {
            assert!(tokio::time::Instant::now() < deadline, "no trim");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    const PACE: Pace = Pace {
        quiet: QUIET,
        min_gap: MIN_GAP,
    };

    #[test]
    fn waits_for_quiet_and_for_the_gap_since_the_last_trim() {
        let start = Instant::now();
        let now = start + MIN_GAP * 2;
        assert_eq!(PACE.wait(now, None), QUIET);
        assert_eq!(PACE.wait(now, Some(now)), MIN_GAP);
        assert_eq!(PACE.wait(now, Some(start)), QUIET, "long ago");
        let a_while_ago = start + MIN_GAP + Duration::from_secs(10);
        assert_eq!(PACE.wait(now, Some(a_while_ago)), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn trims_once_the_tree_is_quiet_not_while_it_changes() {
        let (publish, feed) = watch::channel(Arc::new(TreeSnapshot::default()));
        let (trims, trim) = counting();
        let task = tokio::spawn(trim_when_settled(StatusFeed::new(feed), PACE, trim));

        // A start wave: a snapshot every 200 ms for 5 s keeps it from trimming.
        for _ in 0..25 {
            publish.send_replace(Arc::new(TreeSnapshot::default()));
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(trims.load(Ordering::SeqCst), 0, "trimmed while changing");
        }
        wait_for(&trims, 1).await;

        let first = Instant::now();

        // Nothing changes: no further trim.
        tokio::time::sleep(QUIET * 10).await;
        assert_eq!(trims.load(Ordering::SeqCst), 1);

        // A change soon after waits out the gap since the first trim, then trims.
        publish.send_replace(Arc::new(TreeSnapshot::default()));
        tokio::time::sleep(QUIET * 5).await;
        assert_eq!(trims.load(Ordering::SeqCst), 1, "trimmed within the gap");
        wait_for(&trims, 2).await;
        assert!(
            first.elapsed() >= MIN_GAP,
            "trimmed after {:?}",
            first.elapsed()
        );

        drop(publish);
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("stops when the supervisor stops publishing")
            .expect("no panic");
    }
}
