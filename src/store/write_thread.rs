//! A thread of its own for a store's writes.
//!
//! SQLite has one writer connection, so every write transaction waits for the one before
//! it, and the connection is the pipeline's bottleneck. A transaction run by an actor on
//! the shared runtime goes back and forth between that actor's task and SQLite's thread
//! for every statement, and each time its task waits its turn behind the other tasks
//! (the posters, the matcher, the answers). Run here, the task is the only one on its
//! thread: it resumes as soon as SQLite answers, and the batch writers' synchronous work
//! (`sqlite_batch`) blocks nothing else.

use std::future::Future;

use attune_actors::ports::StoreError;
use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

/// A single-threaded runtime on a named thread, alive as long as this value.
#[derive(Debug)]
pub(crate) struct WriteThread {
    handle: Handle,
    /// Dropping it ends the thread's runtime (and any task still on it).
    _stop: oneshot::Sender<()>,
}

impl WriteThread {
    /// Starts the thread, named `name`.
    pub(crate) fn start(name: &str) -> Result<Self, StoreError> {
        let runtime = Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Other(format!("cannot build the {name} runtime: {e}")))?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                // Either outcome (a send never happens) means the owner is gone.
                let _ = runtime.block_on(stopped);
            })
            .map_err(|e| StoreError::Other(format!("cannot start the {name} thread: {e}")))?;
        Ok(Self {
            handle,
            _stop: stop,
        })
    }

    /// Runs `work` on the thread and waits for its result. The work goes on if the caller
    /// stops waiting (it carries its own deadline); only the thread's end cancels it.
    pub(crate) async fn run<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        match self.handle.spawn(work).await {
            Ok(result) => result,
            Err(error) if error.is_panic() => Err(StoreError::Other(format!(
                "a write panicked: {}",
                panic_message(error.into_panic())
            ))),
            Err(_) => Err(StoreError::Unavailable(
                "the store's write thread has stopped".to_owned(),
            )),
        }
    }
}

fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_on_the_named_thread_and_its_result_comes_back() {
        let thread = WriteThread::start("attune-test-writes").expect("thread");
        let name = thread
            .run(async { Ok(std::thread::current().name().map(str::to_owned)) })
            .await
            .expect("run");
        assert_eq!(name.as_deref(), Some("attune-test-writes"));
        let error = thread
            .run(async { Err::<(), _>(StoreError::Invalid("refused".into())) })
            .await
            .expect_err("the work's own error");
        assert!(matches!(error, StoreError::Invalid(m) if m == "refused"));
    }

    #[tokio::test]
    async fn a_panicking_write_is_an_error_and_the_thread_goes_on() {
        let thread = WriteThread::start("attune-test-panics").expect("thread");
        let error = thread
            .run(async { panic!("boom") as Result<(), StoreError> })
            .await
            .expect_err("a panic");
        assert!(error.to_string().contains("boom"), "{error}");
        assert_eq!(thread.run(async { Ok(7) }).await.expect("still running"), 7);
    }

    #[tokio::test]
    async fn the_thread_ends_with_its_owner() {
        let thread = WriteThread::start("attune-test-ends").expect("thread");
        let handle = thread.handle.clone();
        drop(thread);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        // A runtime that has shut down refuses to run a spawned task.
        loop {
            let probe = handle.spawn(async {});
            if probe.await.is_err() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the runtime is still running"
            );
            tokio::task::yield_now().await;
        }
    }
}
