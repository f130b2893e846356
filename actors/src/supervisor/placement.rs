//! Which leased sensors this instance should take and give up, as a pure function of what
//! every instance can read: the live instances, the leased sensors and who holds them.
//!
//! Each instance runs the same plan for itself on every placement tick. The share of one
//! instance is `⌈N / k⌉` for N leased sensors on k live instances; an instance above it
//! gives sensors back a few at a time, and only while another instance that may run them
//! has room, so a join or a death moves sensors gradually and never back and forth. A
//! free sensor is taken by an instance below its share, or by any instance that may run
//! it when none of those may (a label selector can leave one instance as the only home).

use std::collections::{BTreeMap, HashMap};

use crate::domain::Placement;

/// A live instance (heartbeat younger than the lease ttl).
#[derive(Debug, Clone, Copy)]
pub struct LiveInstance<'a> {
    pub id: &'a str,
    pub labels: &'a BTreeMap<String, String>,
}

/// A sensor that runs under a lease, and the instance whose lease on it is unexpired.
#[derive(Debug, Clone, Copy)]
pub struct LeasedSensor<'a> {
    pub sensor_ref: &'a str,
    pub placement: &'a Placement,
    pub holder: Option<&'a str>,
}

/// What this instance does on this tick, each list in the order to do it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlacementPlan {
    pub acquire: Vec<String>,
    pub release: Vec<String>,
}

/// The sensors `me` should take (free ones) and give up (ones it holds), moving at most
/// `max_moves` sensors away from it in one tick.
pub fn plan(
    me: &str,
    instances: &[LiveInstance<'_>],
    sensors: &[LeasedSensor<'_>],
    max_moves: usize,
) -> PlacementPlan {
    let Some(this) = instances.iter().find(|i| i.id == me) else {
        // Not live by its own heartbeat: it takes nothing (it may be cut off).
        return PlacementPlan::default();
    };
    let share = sensors.len().div_ceil(instances.len().max(1));
    let mut held: HashMap<&str, usize> = instances.iter().map(|i| (i.id, 0)).collect();
    for sensor in sensors {
        if let Some(count) = sensor.holder.and_then(|h| held.get_mut(h)) {
            *count += 1;
        }
    }
    let room_elsewhere = |held: &HashMap<&str, usize>, placement: &Placement| {
        instances.iter().any(|other| {
            other.id != me
                && placement.admits(other.labels)
                && held.get(other.id).copied().unwrap_or(0) < share
        })
    };
    let mut plan = PlacementPlan::default();

    let mut mine: Vec<&LeasedSensor<'_>> =
        sensors.iter().filter(|s| s.holder == Some(me)).collect();
    mine.sort_by_key(|s| std::cmp::Reverse(rank(me, s.sensor_ref)));
    let mut moves = 0;
    for sensor in &mine {
        let count = held.get(me).copied().unwrap_or(0);
        let misplaced = !sensor.placement.admits(this.labels);
        let surplus = count > share && moves < max_moves && room_elsewhere(&held, sensor.placement);
        if misplaced || surplus {
            plan.release.push(sensor.sensor_ref.to_owned());
            if let Some(count) = held.get_mut(me) {
                *count -= 1;
            }
            if !misplaced {
                moves += 1;
            }
        }
    }

    let mut free: Vec<&LeasedSensor<'_>> = sensors
        .iter()
        .filter(|s| s.holder.is_none() && s.placement.admits(this.labels))
        .collect();
    // Each instance walks the free sensors in its own order, so instances racing for them
    // mostly ask for different ones.
    free.sort_by_key(|s| rank(me, s.sensor_ref));
    for sensor in free {
        let count = held.get(me).copied().unwrap_or(0);
        if count < share || !room_elsewhere(&held, sensor.placement) {
            plan.acquire.push(sensor.sensor_ref.to_owned());
            if let Some(count) = held.get_mut(me) {
                *count += 1;
            }
        }
    }
    plan
}

/// How many sensors one tick moves away from an instance above its share.
pub fn max_moves(leased: usize, instances: usize) -> usize {
    (leased.div_ceil(instances.max(1)) / 4).max(1)
}

/// A stable pseudo-random order per instance (FNV-1a of both names): the same on every
/// run and every version, unlike `std`'s hasher.
fn rank(me: &str, sensor_ref: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in me.bytes().chain([0]).chain(sensor_ref.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::PlacementMode;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// Runs every instance's plan in turn, applying each as the database would (a
    /// release frees the sensor, an acquire of a free sensor takes it), until nothing
    /// changes; returns the holders and how many ticks it took.
    fn settle(
        instances: &[(&str, BTreeMap<String, String>)],
        placements: &[Placement],
        mut holders: Vec<Option<String>>,
    ) -> (Vec<Option<String>>, usize) {
        let refs: Vec<String> = (0..placements.len()).map(|i| format!("s{i}")).collect();
        for tick in 0..200 {
            let mut changed = false;
            for (me, _) in instances {
                let live: Vec<LiveInstance<'_>> = instances
                    .iter()
                    .map(|(id, labels)| LiveInstance { id, labels })
                    .collect();
                let sensors: Vec<LeasedSensor<'_>> = refs
                    .iter()
                    .zip(placements)
                    .zip(&holders)
                    .map(|((sensor_ref, placement), holder)| LeasedSensor {
                        sensor_ref,
                        placement,
                        holder: holder.as_deref(),
                    })
                    .collect();
                let step = plan(me, &live, &sensors, max_moves(refs.len(), live.len()));
                for released in &step.release {
                    let i = refs.iter().position(|r| r == released).unwrap();
                    holders[i] = None;
                    changed = true;
                }
                for acquired in &step.acquire {
                    let i = refs.iter().position(|r| r == acquired).unwrap();
                    if holders[i].is_none() {
                        holders[i] = Some((*me).to_owned());
                        changed = true;
                    }
                }
            }
            if !changed {
                return (holders, tick);
            }
        }
        panic!("placement never settled: {holders:?}");
    }

    fn count(holders: &[Option<String>], id: &str) -> usize {
        holders.iter().filter(|h| h.as_deref() == Some(id)).count()
    }

    #[test]
    fn sensors_spread_within_one_of_the_share() {
        let none = BTreeMap::new();
        let placements = vec![Placement::default(); 10];
        let three = [
            ("a", none.clone()),
            ("b", none.clone()),
            ("c", none.clone()),
        ];
        let (holders, _) = settle(&three, &placements, vec![None; 10]);
        for id in ["a", "b", "c"] {
            let held = count(&holders, id);
            // The bound is ⌈10/3⌉ + 1 = 5; every instance does some of the work.
            assert!((1..=5).contains(&held), "{id} holds {held}: {holders:?}");
        }
        assert!(holders.iter().all(Option::is_some), "every sensor runs");
    }

    #[test]
    fn a_joining_instance_takes_its_share_gradually() {
        let none = BTreeMap::new();
        let placements = vec![Placement::default(); 12];
        let all_on_a = vec![Some("a".to_owned()); 12];
        let two = [("a", none.clone()), ("b", none.clone())];
        // One tick of a alone: it gives back at most max_moves.
        let live: Vec<LiveInstance<'_>> = two
            .iter()
            .map(|(id, labels)| LiveInstance { id, labels })
            .collect();
        let refs: Vec<String> = (0..12).map(|i| format!("s{i}")).collect();
        let sensors: Vec<LeasedSensor<'_>> = refs
            .iter()
            .zip(&placements)
            .map(|(sensor_ref, placement)| LeasedSensor {
                sensor_ref,
                placement,
                holder: Some("a"),
            })
            .collect();
        let first = plan("a", &live, &sensors, max_moves(12, 2));
        assert_eq!(first.release.len(), 1, "{first:?}");
        assert!(first.acquire.is_empty());

        let (holders, ticks) = settle(&two, &placements, all_on_a);
        assert_eq!((count(&holders, "a"), count(&holders, "b")), (6, 6));
        assert!(ticks > 1, "moved over several ticks, not at once");
    }

    #[test]
    fn a_dead_instances_sensors_are_taken_by_the_living() {
        let none = BTreeMap::new();
        let placements = vec![Placement::default(); 9];
        // c died: its leases expired, so its sensors have no holder.
        let holders: Vec<Option<String>> = ["a", "a", "a", "b", "b", "b"]
            .iter()
            .map(|h| Some((*h).to_owned()))
            .chain([None, None, None])
            .collect();
        let two = [("a", none.clone()), ("b", none.clone())];
        let (holders, _) = settle(&two, &placements, holders);
        assert!(holders.iter().all(Option::is_some));
        assert!(count(&holders, "a") <= 6 && count(&holders, "b") <= 6);
    }

    #[test]
    fn label_selectors_are_honoured_and_their_sensors_never_float() {
        let build = labels(&[("host", "build-01")]);
        let plain = BTreeMap::new();
        let pinned = Placement {
            mode: PlacementMode::One,
            labels: build.clone(),
        };
        let mut placements = vec![pinned.clone(); 4];
        placements.extend(vec![Placement::default(); 2]);
        let two = [("a", plain.clone()), ("b", build.clone())];
        let (holders, _) = settle(&two, &placements, vec![None; 6]);
        for holder in &holders[..4] {
            assert_eq!(holder.as_deref(), Some("b"), "{holders:?}");
        }
        assert_eq!(count(&holders, "a"), 2);

        // An instance that loses the label gives its pinned sensors up at once.
        let live = [LiveInstance {
            id: "b",
            labels: &plain,
        }];
        let sensors = [LeasedSensor {
            sensor_ref: "s0",
            placement: &pinned,
            holder: Some("b"),
        }];
        assert_eq!(plan("b", &live, &sensors, 1).release, ["s0"]);
    }

    #[test]
    fn an_instance_that_is_not_live_takes_nothing() {
        let none = BTreeMap::new();
        let placement = Placement::default();
        let live = [LiveInstance {
            id: "a",
            labels: &none,
        }];
        let sensors = [LeasedSensor {
            sensor_ref: "s0",
            placement: &placement,
            holder: None,
        }];
        assert_eq!(plan("z", &live, &sensors, 1), PlacementPlan::default());
        assert_eq!(plan("a", &live, &sensors, 1).acquire, ["s0"]);
    }
}
