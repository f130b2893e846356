//! Idempotent event writes: inside the transaction that stores a batch, an event whose
//! key is already stored (within its window) or appears earlier in the batch is left out
//! and answered with the first event; the keys of the new events are stored with them.
//!
//! Because a key is committed with its event, a repeat finds it whatever became of the
//! first request's answer (sent, timed out, or stored late after the client gave up). The
//! statements run in `impl_store!`'s `create_events`, where the backend is concrete; the
//! decisions are here, without a database.

use attune_actors::domain::{Event, EventWrite, Id, IdempotencyKey, NewEvent, capped_after};
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

/// When a content key (scope `dedup:...`) may be pruned: the end of its own window.
/// Request keys answer `None` and go after `dedup.window`, which is their window.
pub(crate) fn expires(now: DateTime<Utc>, key: &IdempotencyKey) -> Option<DateTime<Utc>> {
    if !key.is_content_key() {
        return None;
    }
    let window = chrono::Duration::from_std(key.window).unwrap_or(chrono::Duration::MAX);
    Some(capped_after(now, window))
}

/// Decides the fates of a batch's events in order, asking the database only about keys
/// not already seen in the batch.
#[derive(Debug, Default)]
pub(crate) struct Planner {
    first_with_key: HashMap<(String, String), usize>,
    fates: Vec<Fate>,
}

/// An event's keys: its idempotency key, then its content key (`dedup`).
fn keys(event: &NewEvent) -> Vec<&IdempotencyKey> {
    event
        .idempotency_key
        .iter()
        .chain(event.dedup_key.iter())
        .collect()
}

fn slot(key: &IdempotencyKey) -> (String, String) {
    (key.scope.clone(), key.key.clone())
}

impl Planner {
    /// The keys of the next event that the database must be asked about; empty when its
    /// fate is already known (no key, or a key seen earlier in the batch), which is then
    /// recorded. A non-empty answer is followed by [`found`](Self::found).
    pub(crate) fn next<'e>(&mut self, event: &'e NewEvent) -> Vec<&'e IdempotencyKey> {
        let keys = keys(event);
        if keys.is_empty() {
            self.fates.push(Fate::New);
            return keys;
        }
        if let Some(first) = keys
            .iter()
            .find_map(|key| self.first_with_key.get(&slot(key)))
        {
            self.fates.push(Fate::SameAs(*first));
            return Vec::new();
        }
        keys
    }

    /// Records the database's answer for the keys [`next`](Self::next) returned: the
    /// stored event the first of them that is known names, if any.
    pub(crate) fn found(&mut self, keys: &[&IdempotencyKey], stored: Option<Id>) {
        match stored {
            Some(id) => self.fates.push(Fate::RepeatOf(id)),
            None => {
                let index = self.fates.len();
                for key in keys {
                    self.first_with_key.insert(slot(key), index);
                }
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
) -> (Vec<NewEvent>, Vec<Vec<IdempotencyKey>>) {
    events
        .into_iter()
        .zip(fates)
        .filter(|(_, fate)| **fate == Fate::New)
        .map(|(mut event, _)| {
            let keys = event
                .idempotency_key
                .take()
                .into_iter()
                .chain(event.dedup_key.take())
                .collect();
            (event, keys)
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
            dedup_key: None,
            traceparent: None,
            lease: None,
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
            let keys = planner.next(e);
            if let Some(key) = keys.first() {
                asked.push(key.key.clone());
                let stored = (key.key == "b").then_some(7);
                planner.found(&keys, stored);
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
        assert_eq!(
            keys[0].iter().map(|k| k.key.as_str()).collect::<Vec<_>>(),
            ["a"]
        );
        assert!(keys[1].is_empty());
    }

    #[test]
    fn an_event_repeats_another_by_either_of_its_keys() {
        let content = |k: &str| {
            IdempotencyKey::new("dedup:trigger:t", k, Duration::from_secs(60)).expect("valid")
        };
        let mut first = event(Some("a"));
        first.dedup_key = Some(content("c1"));
        // Another request key, the same content: the same event again.
        let mut second = event(Some("b"));
        second.dedup_key = Some(content("c1"));
        // The first's request key with other content: a retry of the first.
        let mut third = event(Some("a"));
        third.dedup_key = Some(content("c2"));
        let mut fourth = event(None);
        fourth.dedup_key = Some(content("c3"));
        let events = [first, second, third, fourth];
        let mut planner = Planner::default();
        for e in &events {
            let keys = planner.next(e);
            if !keys.is_empty() {
                let stored = keys.iter().any(|k| k.key == "c3").then_some(42);
                planner.found(&keys, stored);
            }
        }
        let fates = planner.fates();
        assert_eq!(
            fates,
            [
                Fate::New,
                Fate::SameAs(0),
                Fate::SameAs(0),
                Fate::RepeatOf(42)
            ]
        );
        let (_, keys) = fresh(events.to_vec(), &fates);
        assert_eq!(
            keys[0].len(),
            2,
            "both keys are stored with the first event"
        );
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
