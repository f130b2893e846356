//! Poison-tolerant locking, for the whole workspace.
//!
//! `std::sync::Mutex::lock` fails with a `PoisonError` when another thread panicked
//! while holding the lock. Unwrapping that error turns one panic into a panic in every
//! later user of the lock (a status counter read by the admin API could then take the
//! API down with it). These helpers take the guard out of the error instead, and so use
//! the value as the panicking thread left it.
//!
//! That is only sound when a panic in the middle of a critical section cannot leave the
//! value half-updated in a way that matters: each write replaces a whole value, or every
//! intermediate state is itself valid. Use them for such small shared cells (status
//! counters, last errors, current actor refs, route tables, rate-limit state, subscriber
//! lists). A lock that guards an invariant spread over several steps should keep the
//! poisoning and handle it.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use attune_actors::sync::lock;
//!
//! let hits = Arc::new(Mutex::new(0_u32));
//! let in_thread = Arc::clone(&hits);
//! // A thread panics while holding the lock: the mutex is now poisoned.
//! let _ = std::thread::spawn(move || {
//!     let _guard = in_thread.lock().unwrap();
//!     panic!("boom");
//! })
//! .join();
//! assert!(hits.lock().is_err());
//! // The helper still hands out the (consistent) value.
//! *lock(&hits) += 1;
//! assert_eq!(*lock(&hits), 1);
//! ```
//!
//! For `tokio::sync::Mutex` (held across `.await`) none of this applies: it does not
//! poison.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks `mutex`, ignoring poisoning (see the [module docs](self) for when that is sound).
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Read-locks `lock`, ignoring poisoning (see the [module docs](self)).
pub fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Write-locks `lock`, ignoring poisoning (see the [module docs](self)).
pub fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Records (or clears) the last error of a pipeline actor.
pub(crate) fn set_error(slot: &Mutex<Option<String>>, error: Option<String>) {
    *lock(slot) = error;
}
