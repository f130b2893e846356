//! A rule's `throttle` and a sensor's or trigger's `dedup` as written in pack files, and
//! their checks: durations read like the configuration's (`5m`, `10m`, `24h`), in whole
//! seconds of at least one; field paths compile as condition fields do.

use serde::Deserialize;

use attune_actors::domain::{ContentDedup, Placement, PlacementMode, Throttle, ThrottleMode};
use attune_actors::grouping::FieldValues;

use crate::config::Seconds;

/// `throttle: {once_within: 5m, group_by: [payload.host]}` or `{once_after: ...}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleFile {
    once_within: Option<Seconds>,
    once_after: Option<Seconds>,
    #[serde(default)]
    group_by: Vec<String>,
}

/// `dedup: {key: [payload.alert_id], window: 10m}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupFile {
    key: Vec<String>,
    window: Seconds,
}

/// A window of whole seconds, at least one.
fn whole_seconds(window: Seconds, field: &str) -> Result<u64, String> {
    let seconds = window.0.as_secs();
    if seconds == 0 || window.0.subsec_nanos() != 0 {
        return Err(format!(
            "{field}: must be a whole number of seconds, at least 1 (e.g. 30s, 5m), got {:?}",
            window.0
        ));
    }
    Ok(seconds)
}

impl ThrottleFile {
    /// The rule's throttle, or what is wrong with it (the message names the field).
    pub fn into_throttle(self) -> Result<Throttle, String> {
        let (mode, window, field) = match (self.once_within, self.once_after) {
            (Some(window), None) => (ThrottleMode::OnceWithin, window, "throttle.once_within"),
            (None, Some(window)) => (ThrottleMode::OnceAfter, window, "throttle.once_after"),
            _ => return Err("throttle: give exactly one of once_within and once_after".to_owned()),
        };
        FieldValues::compile(&self.group_by, "throttle.group_by")?;
        Ok(Throttle {
            mode,
            window_secs: whole_seconds(window, field)?,
            group_by: self.group_by,
        })
    }
}

impl DedupFile {
    /// The dedup, or what is wrong with it (the message names the field).
    pub fn into_dedup(self) -> Result<ContentDedup, String> {
        if self.key.is_empty() {
            return Err("dedup.key: name at least one field (e.g. [payload.alert_id])".to_owned());
        }
        FieldValues::compile(&self.key, "dedup.key")?;
        Ok(ContentDedup {
            key: self.key,
            window_secs: whole_seconds(self.window, "dedup.window")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(yaml: &str) -> Result<Throttle, String> {
        serde_norway::from_str::<ThrottleFile>(yaml)
            .map_err(|e| e.to_string())?
            .into_throttle()
    }

    fn dedup(yaml: &str) -> Result<ContentDedup, String> {
        serde_norway::from_str::<DedupFile>(yaml)
            .map_err(|e| e.to_string())?
            .into_dedup()
    }

    #[test]
    fn throttles_read_as_written_and_mistakes_are_named() {
        let t = throttle("{once_within: 5m, group_by: [payload.host]}").expect("valid");
        assert_eq!((t.mode, t.window_secs), (ThrottleMode::OnceWithin, 300));
        assert_eq!(t.group_by, ["payload.host"]);
        let t = throttle("{once_after: 90}").expect("valid");
        assert_eq!((t.mode, t.window_secs), (ThrottleMode::OnceAfter, 90));
        for (yaml, expected) in [
            ("{once_within: 5m, once_after: 5m}", "exactly one"),
            ("{group_by: [payload.host]}", "exactly one"),
            ("{once_within: 0}", "throttle.once_within"),
            ("{once_after: 1.5s}", "throttle.once_after"),
            (
                "{once_within: 1m, group_by: [host]}",
                "throttle.group_by[0] 'host'",
            ),
            ("{once_within: 1m, every: 2}", "unknown field"),
        ] {
            let error = throttle(yaml).expect_err(yaml);
            assert!(error.contains(expected), "{yaml}: {error}");
        }
    }

    #[test]
    fn dedups_read_as_written_and_mistakes_are_named() {
        let d = dedup("{key: [payload.alert_id], window: 10m}").expect("valid");
        assert_eq!(
            (d.key.as_slice(), d.window_secs),
            (&["payload.alert_id".to_owned()][..], 600)
        );
        for (yaml, expected) in [
            ("{key: [], window: 10m}", "dedup.key"),
            ("{key: [alert], window: 10m}", "dedup.key[0] 'alert'"),
            ("{key: [payload.a], window: 0}", "dedup.window"),
            ("{key: [payload.a]}", "missing field `window`"),
        ] {
            let error = dedup(yaml).expect_err(yaml);
            assert!(error.contains(expected), "{yaml}: {error}");
        }
    }
}

/// A sensor's `placement`: `one` (the default: on one instance, under a lease), `all`
/// (on every instance: the default for webhooks), or `{labels: {host: build-01}}` (on one
/// instance whose `cluster.labels` include these), optionally with `mode: one | all`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PlacementFile {
    Mode(String),
    Detailed {
        #[serde(default)]
        mode: Option<String>,
        #[serde(default)]
        labels: std::collections::BTreeMap<String, String>,
    },
}

fn placement_mode(mode: &str) -> Result<PlacementMode, String> {
    match mode {
        "one" => Ok(PlacementMode::One),
        "all" => Ok(PlacementMode::All),
        other => Err(format!("mode must be one or all, got '{other}'")),
    }
}

impl PlacementFile {
    /// `default` is the mode of a sensor without `placement`, or without its `mode`.
    pub fn into_placement(self, default: PlacementMode) -> Result<Placement, String> {
        match self {
            Self::Mode(mode) => Ok(Placement {
                mode: placement_mode(&mode)?,
                labels: Default::default(),
            }),
            Self::Detailed { mode, labels } => Ok(Placement {
                mode: mode.as_deref().map_or(Ok(default), placement_mode)?,
                labels,
            }),
        }
    }
}
