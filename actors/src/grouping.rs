//! Keys made of an event's field values: the group of a throttled rule (`group_by`) and
//! the content key of a deduplicated sensor or trigger (`dedup.key`). Paths are compiled
//! once, when the rule or sensor is loaded; a key is then a walk of the JSON tree.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::conditions::FieldPath;
use crate::domain::{CONTENT_KEY_SCOPE, ContentDedup, IdempotencyKey, Sensor, Trigger};

/// Compiled field paths, in order.
#[derive(Debug, Clone)]
pub struct FieldValues {
    paths: Vec<FieldPath>,
}

impl FieldValues {
    /// Compiles each path; the error names the path (`field` is what the list is called
    /// in the file: `group_by`, `dedup.key`).
    pub fn compile(paths: &[String], field: &str) -> Result<Self, String> {
        let paths = paths
            .iter()
            .enumerate()
            .map(|(index, path)| {
                FieldPath::parse(path).map_err(|e| format!("{field}[{index}] '{path}': {e}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { paths })
    }

    /// The values at the paths, `null` where one is missing.
    pub fn values(&self, context: &Value) -> Vec<Value> {
        self.paths
            .iter()
            .map(|path| path.get(context).cloned().unwrap_or(Value::Null))
            .collect()
    }

    /// A throttle group: the values as a JSON array (`["web-1"]`; `[]` without paths).
    pub fn group(&self, context: &Value) -> String {
        Value::Array(self.values(context)).to_string()
    }

    /// The values, or `None` when any path is missing.
    fn present(&self, context: &Value) -> Option<Vec<Value>> {
        self.paths
            .iter()
            .map(|path| path.get(context).cloned())
            .collect()
    }
}

/// A sensor's or trigger's compiled `dedup`.
#[derive(Debug, Clone)]
pub struct DedupKey {
    fields: FieldValues,
    /// `dedup:sensor:<ref>` or `dedup:trigger:<ref>`: duplicates are looked for among the
    /// events of the one that declares it.
    scope: String,
    window: std::time::Duration,
}

impl DedupKey {
    /// The dedup of events from `sensor` of `trigger`: the sensor's own `dedup`, else the
    /// trigger's. One that does not compile (the pack loader refuses those, so only rows
    /// written some other way) is logged and ignored: events are stored, not lost.
    pub fn of_source(trigger: &Trigger, sensor: Option<&Sensor>) -> Option<Self> {
        let (dedup, scope) = match sensor.and_then(|s| s.dedup.as_ref().map(|d| (d, s))) {
            Some((dedup, sensor)) => (dedup, format!("{CONTENT_KEY_SCOPE}sensor:{}", sensor.r#ref)),
            None => (
                trigger.dedup.as_ref()?,
                format!("{CONTENT_KEY_SCOPE}trigger:{}", trigger.r#ref),
            ),
        };
        match Self::compile(dedup, scope) {
            Ok(key) => Some(key),
            Err(error) => {
                tracing::error!(trigger = %trigger.r#ref, sensor = ?sensor.map(|s| &s.r#ref), %error, "dedup ignored: its key is invalid");
                None
            }
        }
    }

    pub fn compile(dedup: &ContentDedup, scope: String) -> Result<Self, String> {
        Ok(Self {
            fields: FieldValues::compile(&dedup.key, "dedup.key")?,
            scope,
            window: dedup.window(),
        })
    }

    /// The content key of a new event of `trigger_ref` (from `sensor_ref`, if a sensor
    /// produced it), built over the context the key paths read: `{payload, trigger: {ref},
    /// sensor: {ref} | null}`.
    pub fn key_for(
        &self,
        payload: &Value,
        trigger_ref: &str,
        sensor_ref: Option<&str>,
    ) -> Option<IdempotencyKey> {
        self.key(&serde_json::json!({
            "payload": payload,
            "trigger": {"ref": trigger_ref},
            "sensor": sensor_ref.map(|r| serde_json::json!({"ref": r})),
        }))
    }

    /// The idempotency key of an event whose context (`{payload, trigger, sensor}`) is
    /// `context`: a SHA-256 of its key values. `None` when a key field is missing: such an
    /// event has no content key and is always stored.
    fn key(&self, context: &Value) -> Option<IdempotencyKey> {
        let values = self.fields.present(context)?;
        let digest = Sha256::digest(Value::Array(values).to_string().as_bytes());
        Some(IdempotencyKey {
            scope: self.scope.clone(),
            key: hex::encode(digest),
            window: self.window,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dedup(paths: &[&str]) -> DedupKey {
        let spec = ContentDedup {
            key: paths.iter().map(|p| p.to_string()).collect(),
            window_secs: 600,
        };
        DedupKey::compile(&spec, "dedup:sensor:s".into()).expect("valid paths")
    }

    #[test]
    fn equal_values_make_equal_keys_and_others_differ() {
        let key = dedup(&["payload.alert_id", "payload.host"]);
        let a = key.key(&json!({"payload": {"alert_id": 7, "host": "h", "at": 1}}));
        let b = key.key(&json!({"payload": {"alert_id": 7, "host": "h", "at": 2}}));
        let c = key.key(&json!({"payload": {"alert_id": 8, "host": "h"}}));
        assert_eq!(a, b);
        assert_ne!(a, c);
        let a = a.expect("a key");
        assert_eq!(a.scope, "dedup:sensor:s");
        assert_eq!(a.key.len(), 64);
        assert_eq!(a.window, std::time::Duration::from_secs(600));
    }

    #[test]
    fn a_missing_field_means_no_key() {
        assert_eq!(
            dedup(&["payload.alert_id"]).key(&json!({"payload": {}})),
            None
        );
        // A present null is a value like any other.
        assert!(
            dedup(&["payload.alert_id"])
                .key(&json!({"payload": {"alert_id": null}}))
                .is_some()
        );
    }

    #[test]
    fn groups_are_the_values_as_json() {
        let by = FieldValues::compile(
            &["payload.host".into(), "payload.missing".into()],
            "group_by",
        )
        .expect("valid");
        assert_eq!(
            by.group(&json!({"payload": {"host": "web-1"}})),
            r#"["web-1",null]"#
        );
        let none = FieldValues::compile(&[], "group_by").expect("valid");
        assert_eq!(none.group(&json!({})), "[]");
    }

    #[test]
    fn a_bad_path_is_named() {
        let error = FieldValues::compile(&["payload.ok".into(), "nowhere.x".into()], "group_by")
            .expect_err("bad root");
        assert!(error.starts_with("group_by[1] 'nowhere.x'"), "{error}");
    }
}
