//! The reconcile plan as a pure function: the sensors the supervisor tracks and the
//! enabled sensors in the database go in, what to start, stop and restart comes out.
//! Applying it is the supervisor's job (`control.rs`).

use std::collections::BTreeMap;

use crate::domain::Sensor;

/// What a reconcile changes, each list ordered by sensor ref.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReconcilePlan {
    /// Enabled in the database and not tracked yet.
    pub start: Vec<Sensor>,
    /// Tracked but no longer enabled (or removed, or sensors are switched off).
    pub stop: Vec<String>,
    /// Tracked, but the database holds a different definition: stopped and started
    /// again with the new one.
    pub restart: Vec<Sensor>,
}

impl ReconcilePlan {
    /// Every sensor the plan stops, the restarted ones included.
    pub fn stopping(&self) -> impl Iterator<Item = &str> {
        self.stop
            .iter()
            .map(String::as_str)
            .chain(self.restart.iter().map(|s| s.r#ref.as_str()))
    }
}

/// `current` are the tracked sensors by ref; `desired` the enabled ones in the database
/// (empty when sensors are switched off in this service).
pub fn plan<'a>(
    current: impl IntoIterator<Item = (&'a str, &'a Sensor)>,
    desired: Vec<Sensor>,
) -> ReconcilePlan {
    let current: BTreeMap<&str, &Sensor> = current.into_iter().collect();
    let desired: BTreeMap<String, Sensor> =
        desired.into_iter().map(|s| (s.r#ref.clone(), s)).collect();
    let mut plan = ReconcilePlan {
        stop: current
            .keys()
            .filter(|r| !desired.contains_key(**r))
            .map(|r| (*r).to_owned())
            .collect(),
        ..ReconcilePlan::default()
    };
    for (sensor_ref, sensor) in desired {
        match current.get(sensor_ref.as_str()) {
            None => plan.start.push(sensor),
            Some(tracked) if **tracked != sensor => plan.restart.push(sensor),
            Some(_) => {}
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;
    use serde_json::json;

    fn sensor(sensor_ref: &str, interval: u64) -> Sensor {
        let now = DateTime::UNIX_EPOCH;
        Sensor {
            id: 1,
            r#ref: sensor_ref.to_owned(),
            pack: None,
            pack_ref: Some("p".to_owned()),
            label: sensor_ref.to_owned(),
            description: None,
            entrypoint: "interval_timer".to_owned(),
            runtime: None,
            runtime_ref: "builtin".to_owned(),
            trigger: 1,
            trigger_ref: "p.tick".to_owned(),
            enabled: true,
            poll_interval: None,
            param_schema: None,
            config: json!({"interval": interval}),
            pack_path: None,
            mode: None,
            pass_env: Vec::new(),
            code_digest: None,
            dedup: None,
            created: now,
            updated: now,
            placement: Default::default(),
        }
    }

    fn refs(sensors: &[Sensor]) -> Vec<&str> {
        sensors.iter().map(|s| s.r#ref.as_str()).collect()
    }

    #[test]
    fn starts_new_stops_removed_restarts_changed_leaves_the_rest() {
        let tracked = [
            sensor("p.same", 1),
            sensor("p.gone", 1),
            sensor("p.edit", 1),
        ];
        let current = tracked.iter().map(|s| (s.r#ref.as_str(), s));
        let desired = vec![sensor("p.new", 1), sensor("p.same", 1), sensor("p.edit", 5)];
        let plan = plan(current, desired);
        assert_eq!(refs(&plan.start), ["p.new"]);
        assert_eq!(plan.stop, ["p.gone"]);
        assert_eq!(refs(&plan.restart), ["p.edit"]);
        assert_eq!(plan.restart[0].config, json!({"interval": 5}));
        assert_eq!(plan.stopping().collect::<Vec<_>>(), ["p.gone", "p.edit"]);
    }

    #[test]
    fn nothing_desired_stops_everything_in_ref_order() {
        let tracked = [sensor("p.b", 1), sensor("p.a", 1)];
        let plan = plan(tracked.iter().map(|s| (s.r#ref.as_str(), s)), Vec::new());
        assert_eq!(plan.stop, ["p.a", "p.b"]);
        assert!(plan.start.is_empty() && plan.restart.is_empty());
    }

    #[test]
    fn an_unchanged_tree_plans_nothing() {
        let tracked = [sensor("p.a", 1)];
        let plan = plan(
            tracked.iter().map(|s| (s.r#ref.as_str(), s)),
            vec![sensor("p.a", 1)],
        );
        assert_eq!(plan, ReconcilePlan::default());
    }
}
