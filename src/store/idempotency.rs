//! Idempotent event writes: inside the transaction that stores a batch, an event whose
//! key is already stored (within its window) or appears earlier in the batch is left out
//! and answered with the first event; the keys of the new events are stored with them.
//!
//! Because a key is committed with its event, a repeat finds it whatever became of the
//! first request's answer (sent, timed out, or stored late after the client gave up). The
//! statements run in `impl_store!`'s `create_events`, where the backend is concrete; the
//! decisions are here, without a database.

use attune_actors::domain::{Event, EventWrite, Id, IdempotencyKey, NewEvent};
use attune_actors::ports::StoreError;
use chrono::{DateTime, Utc};
use std::collections::HashMap;

/// What one event of a batch turns into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    /// Stored now.
    New,
    /// Its key names this stored event.
    RepeatOf(Id),
    /// Its key is the key of the batch's event at this index (stored now).
    SameAs(usize),
}

/// The oldest creation time at which a key still counts, `window` before `now`; never
/// before 1970, which every database can store (PostgreSQL's timestamps end in 4713 BC).
pub(crate) fn since(now: DateTime<Utc>, key: &IdempotencyKey) -> DateTime<Utc> {
    chrono::Duration::from_std(key.window)
        .ok()
        .and_then(|window| now.checked_sub_signed(window))
        .map_or(DateTime::<Utc>::UNIX_EPOCH, |at| {
            at.max(DateTime::<Utc>::UNIX_EPOCH)
        })
}

/// Decides the fates of a batch's events in order, asking the database only about keys
/// not already seen in the batch.
#[derive(Debug, Default)]
pub(crate) struct Planner {
    first_with_key: HashMap<(String, String), usize>,
    fates: Vec<Fate>,
}

impl Planner {
    /// The key of the next event that the database must be asked about; `None` when its
    /// fate is already known (no key, or a key seen earlier in the batch), which is then
    /// recorded.
    pub(crate) fn next<'e>(&mut self, event: &'e NewEvent) -> Option<&'e IdempotencyKey> {
        let Some(key) = &event.idempotency_key else {
            self.fates.push(Fate::New);
            return None;
        };
        match self
            .first_with_key
            .get(&(key.scope.clone(), key.key.clone()))
        {
            Some(first) => {
                self.fates.push(Fate::SameAs(*first));
                None
            }
            None => Some(key),
        }
    }

    /// Records the database's answer for the key [`next`](Self::next) returned.
    pub(crate) fn found(&mut self, key: &IdempotencyKey, stored: Option<Id>) {
        match stored {
            Some(id) => self.fates.push(Fate::RepeatOf(id)),
            None => {
                let index = self.fates.len();
                self.first_with_key
                    .insert((key.scope.clone(), key.key.clone()), index);
                self.fates.push(Fate::New);
            }
        }
    }

    pub(crate) fn fates(self) -> Vec<Fate> {
        self.fates
    }
}

/// The events to insert (those whose fate is [`Fate::New`]), in order, with their keys.
pub(crate) fn fresh(
    events: Vec<NewEvent>,
    fates: &[Fate],
) -> (Vec<NewEvent>, Vec<Option<IdempotencyKey>>) {
    events
        .into_iter()
        .zip(fates)
        .filter(|(_, fate)| **fate == Fate::New)
        .map(|(mut event, _)| {
            let key = event.idempotency_key.take();
            (event, key)
        })
        .unzip()
}

/// A key another writer stored between our look-up and our insert (another instance):
/// the batch fails as retryable, and the retry answers a repeat.
pub(crate) fn raced(key: &IdempotencyKey) -> StoreError {
    StoreError::Unavailable(format!(
        "idempotency key '{}' was stored by another writer at the same moment; retrying",
        key.key
    ))
}

/// Every event of the batch as written, in input order; `repeated` holds the stored
/// events that [`Fate::RepeatOf`] names.
pub(crate) fn assemble(
    fates: &[Fate],
    stored: Vec<Event>,
    repeated: &HashMap<Id, Event>,
) -> Result<Vec<EventWrite>, StoreError> {
    let mut stored = stored.into_iter();
    let mut writes: Vec<EventWrite> = Vec::with_capacity(fates.len());
    for fate in fates {
        let write = match fate {
            Fate::New => EventWrite::Stored(stored.next().ok_or_else(|| {
                StoreError::Other("fewer events stored than the batch holds".to_owned())
            })?),
            Fate::SameAs(index) => EventWrite::Repeat(writes[*index].event().clone()),
            Fate::RepeatOf(id) => {
                EventWrite::Repeat(repeated.get(id).cloned().ok_or_else(|| {
                    StoreError::Other(format!(
                        "idempotency key names event {id}, which does not exist"
                    ))
                })?)
            }
        };
        writes.push(write);
    }
    Ok(writes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    fn event(key: Option<&str>) -> NewEvent {
        NewEvent {
            trigger: None,
            trigger_ref: "t".into(),
            config: json!({}),
            payload: json!({}),
            source: None,
            source_ref: None,
            idempotency_key: key.map(|k| {
                IdempotencyKey::new("api", k, Duration::from_secs(60)).expect("valid key")
            }),
            traceparent: None,
        }
    }

    #[test]
    fn a_key_repeated_in_one_batch_is_asked_about_once() {
        let events = [
            event(Some("a")),
            event(None),
            event(Some("a")),
            event(Some("b")),
        ];
        let mut planner = Planner::default();
        let mut asked = Vec::new();
        for e in &events {
            if let Some(key) = planner.next(e) {
                asked.push(key.key.clone());
                let stored = (key.key == "b").then_some(7);
                planner.found(key, stored);
            }
        }
        assert_eq!(asked, ["a", "b"]);
        let fates = planner.fates();
        assert_eq!(
            fates,
            [Fate::New, Fate::New, Fate::SameAs(0), Fate::RepeatOf(7)]
        );
        let (fresh, keys) = fresh(events.to_vec(), &fates);
        assert_eq!(fresh.len(), 2);
        assert!(fresh.iter().all(|e| e.idempotency_key.is_none()));
        assert_eq!(keys[0].as_ref().map(|k| k.key.as_str()), Some("a"));
        assert!(keys[1].is_none());
    }

    #[test]
    fn since_is_the_window_before_now_and_survives_huge_windows() {
        let now = Utc::now();
        let key = IdempotencyKey::new("api", "k", Duration::from_secs(3600)).unwrap();
        assert_eq!(since(now, &key), now - chrono::Duration::hours(1));
        let forever = IdempotencyKey::new("api", "k", Duration::MAX).unwrap();
        assert_eq!(since(now, &forever), DateTime::<Utc>::UNIX_EPOCH);
    }
}
