//! Triggers' payload schemas (JSON Schema, draft 2020-12), checked with the `jsonschema`
//! crate where events enter: a webhook or `POST /events` answers 422 naming the failing
//! JSON pointer, a process sensor's line is bad output, a built-in sensor logs an error.
//! Compiled once per trigger version and kept.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use attune_actors::domain::{Id, Trigger};
use attune_actors::ports::PayloadSchemas;
use attune_actors::sync::{read, write};
use chrono::{DateTime, Utc};
use jsonschema::Validator;
use serde_json::Value;

/// Compiles `schema` as draft 2020-12, or says why it is not a usable schema.
pub fn compile(schema: &Value) -> Result<Validator, String> {
    jsonschema::draft202012::new(schema).map_err(|e| {
        let at = e.instance_path().to_string();
        if at.is_empty() {
            format!("not a valid JSON Schema (draft 2020-12): {e}")
        } else {
            format!("not a valid JSON Schema (draft 2020-12) at '{at}': {e}")
        }
    })
}

/// A trigger version: its id and when it was last updated.
type TriggerVersion = (Id, DateTime<Utc>);

/// The compiled schemas of the triggers seen so far, keyed by trigger version.
#[derive(Default)]
pub struct SchemaCache {
    compiled: RwLock<HashMap<TriggerVersion, Arc<Validator>>>,
}

impl SchemaCache {
    fn validator(&self, trigger: &Trigger, schema: &Value) -> Result<Arc<Validator>, String> {
        let key = (trigger.id, trigger.updated);
        if let Some(found) = read(&self.compiled).get(&key) {
            return Ok(found.clone());
        }
        let compiled = Arc::new(compile(schema)?);
        let mut cache = write(&self.compiled);
        // A newer version of the trigger replaces the older ones.
        cache.retain(|(id, _), _| *id != trigger.id);
        cache.insert(key, compiled.clone());
        Ok(compiled)
    }
}

impl PayloadSchemas for SchemaCache {
    fn check(&self, trigger: &Trigger, payload: &Value) -> Result<(), String> {
        let Some(schema) = trigger
            .payload_schema
            .as_ref()
            .filter(|_| trigger.validate_payloads)
        else {
            return Ok(());
        };
        let validator = self
            .validator(trigger, schema)
            .map_err(|e| format!("trigger {}: its payload_schema is {e}", trigger.r#ref))?;
        match validator.validate(payload) {
            Ok(()) => Ok(()),
            Err(error) => {
                let pointer = error.instance_path().to_string();
                let pointer = if pointer.is_empty() {
                    "/".to_owned()
                } else {
                    pointer
                };
                Err(format!(
                    "the payload does not match the payload_schema of trigger {} at '{pointer}': {error}",
                    trigger.r#ref
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn trigger(schema: Value, validate: bool) -> Trigger {
        Trigger {
            id: 1,
            r#ref: "demo.push".into(),
            pack: None,
            pack_ref: None,
            label: "push".into(),
            description: None,
            enabled: true,
            param_schema: None,
            payload_schema: Some(schema),
            validate_payloads: validate,
            dedup: None,
            created: Utc::now(),
            updated: Utc::now(),
        }
    }

    #[test]
    fn a_payload_is_checked_and_the_failure_names_its_pointer() {
        let schema = json!({
            "type": "object",
            "required": ["repo"],
            "properties": {"repo": {"type": "object", "properties": {"stars": {"type": "integer"}}}}
        });
        let cache = SchemaCache::default();
        let t = trigger(schema, true);
        assert!(cache.check(&t, &json!({"repo": {"stars": 3}})).is_ok());
        let error = cache
            .check(&t, &json!({"repo": {"stars": "many"}}))
            .unwrap_err();
        assert!(error.contains("'/repo/stars'"), "{error}");
        let error = cache.check(&t, &json!({})).unwrap_err();
        assert!(error.contains("'/'") && error.contains("repo"), "{error}");
        let off = trigger(json!({"type": "integer"}), false);
        assert!(
            cache.check(&off, &json!("anything")).is_ok(),
            "validate_payloads: false"
        );
    }

    #[test]
    fn an_invalid_schema_is_refused() {
        assert!(compile(&json!({"type": "integer"})).is_ok());
        let error = compile(&json!({"type": 12})).unwrap_err();
        assert!(error.contains("not a valid JSON Schema"), "{error}");
        // Draft 2020-12 keywords are understood.
        let v = compile(&json!({"prefixItems": [{"type": "string"}]})).unwrap();
        assert!(!v.is_valid(&json!([1])));
    }
}
