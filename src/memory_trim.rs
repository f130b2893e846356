//! Gives memory the service has freed back to the operating system once the actor tree
//! has settled after a change.
//!
//! glibc's allocator keeps freed memory for reuse, returning only what lies at the top of
//! its heaps. Starting sensors frees a lot in between (the definitions read, state loads,
//! the supervisor's status snapshots as the tree grew), so a service that had started
//! 100,000 interval timers held 947 to 1,081 MiB and, after `malloc_trim`, 914 to 923 MiB
//! (`cargo bench --bench sensors`, benches/README.md). The trim takes a few milliseconds
//! on such a heap, so it runs once the tree has been quiet for [`QUIET`], on a blocking
//! thread, not after every change while a start wave or a reconcile is still going.

use std::sync::Arc;
use std::time::Duration;

use attune_actors::status::StatusFeed;
use tokio::task::JoinHandle;

use crate::metrics::Metrics;

/// How long the tree's status must stay unchanged before freed memory is returned.
pub const QUIET: Duration = Duration::from_secs(1);

/// Returns the free memory of every malloc arena to the operating system. Other
/// platforms and allocators are left as they are.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and shrinks the allocator's own free lists, under
    // each arena's lock, so threads allocating meanwhile merely wait for it.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Trims after each change of the tree once it has been quiet for [`QUIET`].
pub fn spawn(feed: StatusFeed, metrics: Arc<Metrics>) -> JoinHandle<()> {
    tokio::spawn(trim_when_settled(feed, QUIET, move || {
        release_free_memory();
        metrics.memory_trimmed();
    }))
}

/// Runs `trim` (on a blocking thread) each time the feed has changed and then stayed
/// unchanged for `quiet`; returns when the supervisor stops publishing.
async fn trim_when_settled(
    mut feed: StatusFeed,
    quiet: Duration,
    trim: impl Fn() + Clone + Send + 'static,
) {
    while feed.changed().await {
        loop {
            match tokio::time::timeout(quiet, feed.changed()).await {
                Ok(true) => continue,
                Ok(false) => return,
                Err(_elapsed) => break,
            }
        }
        let trim = trim.clone();
        if let Err(error) = tokio::task::spawn_blocking(trim).await {
            tracing::warn!(%error, "returning freed memory failed");
        }
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

    #[tokio::test(start_paused = true)]
    async fn trims_once_the_tree_is_quiet_not_while_it_changes() {
        let (publish, feed) = watch::channel(Arc::new(TreeSnapshot::default()));
        let (trims, trim) = counting();
        let task = tokio::spawn(trim_when_settled(StatusFeed::new(feed), QUIET, trim));

        // A start wave: a snapshot every 200 ms for 5 s keeps it from trimming.
        for _ in 0..25 {
            publish.send_replace(Arc::new(TreeSnapshot::default()));
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(trims.load(Ordering::SeqCst), 0, "trimmed while changing");
        }
        wait_for(&trims, 1).await;

        // Nothing changes: no further trim.
        tokio::time::sleep(QUIET * 10).await;
        assert_eq!(trims.load(Ordering::SeqCst), 1);

        // The next change trims again once it has settled.
        publish.send_replace(Arc::new(TreeSnapshot::default()));
        wait_for(&trims, 2).await;

        drop(publish);
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("stops when the supervisor stops publishing")
            .expect("no panic");
    }
}
