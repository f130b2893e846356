//! Poison-tolerant locking, for the small shared cells of the whole workspace (status
//! counters, last errors, current actor refs, webhook routes, bus subscribers).
//!
//! A panic while one of these locks is held cannot leave the value in a state that
//! matters (each write replaces a whole value or a whole entry), so a poisoned lock is
//! used as is rather than spreading the panic to the supervisor or the admin API.
//!
//! ```
//! use std::sync::Mutex;
//! let hits = Mutex::new(0);
//! *attune_actors::sync::lock(&hits) += 1;
//! assert_eq!(*attune_actors::sync::lock(&hits), 1);
//! ```

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Records (or clears) the last error of a pipeline actor.
pub(crate) fn set_error(slot: &Mutex<Option<String>>, error: Option<String>) {
    *lock(slot) = error;
}
