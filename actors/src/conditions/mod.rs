//! The condition engine: decides whether an event satisfies a rule's conditions.
//!
//! Conditions are compiled once, when a rule is loaded, into a tree that evaluation walks
//! without parsing anything: paths are pre-split, regexes and globs pre-compiled. The
//! format, the operators and their semantics are documented in `docs/conditions.md`.
//!
//! ```
//! use attune_actors::conditions::CompiledConditions;
//! use serde_json::json;
//!
//! let rule = CompiledConditions::compile(&json!({"all": [
//!     {"field": "payload.branch", "operator": "equals", "value": "main"},
//!     {"field": "payload.commits", "operator": "any_item",
//!      "condition": {"field": "item.message", "operator": "contains",
//!                    "value": "[deploy]", "ignore_case": true}}
//! ]}))?;
//! let context = json!({"payload": {"branch": "main",
//!                                  "commits": [{"message": "Fix [DEPLOY]"}]}});
//! assert!(rule.matches(&context));
//!
//! // The same evaluation, traced for a person:
//! let explanation = rule.explain(&json!({"payload": {"branch": "dev"}}));
//! assert!(!explanation.matched);
//! assert!(explanation.render_tree().contains(r#"payload.branch equals "main" (actual: "dev")"#));
//! # Ok::<(), attune_actors::conditions::ConditionError>(())
//! ```

mod compile;
mod evaluate;
mod explain;
mod glob;
mod path;
mod tree;

use std::cell::OnceCell;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::domain::Event;

pub use explain::{ConditionTrace, ExplainNode, Explanation, ItemTrace};

/// Deepest nesting of groups and conditions accepted in a rule (the top level is depth 1).
pub const MAX_DEPTH: usize = 32;

/// Largest compiled size, in bytes, of a regex or glob from a rule. Patterns are compiled
/// when the rule loads, so an oversized one is refused there instead of costing memory and
/// time on every event.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A rule's conditions refused at load time. `pointer` is the JSON pointer of the bad node
/// within the rule's `conditions` (`/` for the conditions as a whole).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid condition at '{pointer}': {message}")]
pub struct ConditionError {
    pub pointer: String,
    pub message: String,
}

/// A rule's conditions, validated and ready to evaluate.
#[derive(Debug, Clone)]
pub struct CompiledConditions {
    root: Option<tree::Node>,
    top_level: &'static str,
}

impl CompiledConditions {
    /// Validates and compiles a rule's `conditions`: a group (`all`/`any`/`not`), a single
    /// condition, a list (meaning `all`), or null / empty (matching every event).
    pub fn compile(conditions: &Value) -> Result<Self, ConditionError> {
        let top_level = match conditions {
            Value::Object(map) if map.contains_key("any") => "any",
            _ => "all",
        };
        Ok(Self {
            root: compile::compile_root(conditions)?,
            top_level,
        })
    }

    /// Whether the evaluation context (see [`evaluation_context`]) satisfies the conditions.
    /// `timediff_*` operators compare with the current time. Allocates nothing.
    pub fn matches(&self, context: &Value) -> bool {
        self.evaluate(context, OnceCell::new())
    }

    /// [`Self::matches`] with `now` as the current time (for tests and replays).
    pub fn matches_at(&self, context: &Value, now: DateTime<Utc>) -> bool {
        self.evaluate(context, OnceCell::from(now))
    }

    fn evaluate(&self, context: &Value, now: OnceCell<DateTime<Utc>>) -> bool {
        self.root
            .as_ref()
            .is_none_or(|node| node.matches(evaluate::Env::new(context, &now)))
    }

    /// Evaluates every node and returns the trace: each condition with its field, operator,
    /// expected and actual values and result. `matched` always equals [`Self::matches`].
    pub fn explain(&self, context: &Value) -> Explanation {
        let now = OnceCell::new();
        explain::explain(self.root.as_ref(), evaluate::Env::new(context, &now))
    }

    /// [`Self::explain`] with `now` as the current time.
    pub fn explain_at(&self, context: &Value, now: DateTime<Utc>) -> Explanation {
        let now = OnceCell::from(now);
        explain::explain(self.root.as_ref(), evaluate::Env::new(context, &now))
    }

    /// `all` or `any`: the top-level combinator, stored with each enforcement.
    pub fn top_level(&self) -> &'static str {
        self.top_level
    }

    /// True when there are no conditions, so every event of the trigger matches.
    pub fn is_empty(&self) -> bool {
        self.root.is_none()
    }
}

/// A field path used outside a condition (a throttle's `group_by`, a dedup `key`), in the
/// grammar of condition fields: `payload.host`, `payload.tags[0]`, `payload["a.b"]`.
#[derive(Debug, Clone)]
pub struct FieldPath(path::Path);

impl FieldPath {
    /// Parses `field`, or says what is wrong with it.
    pub fn parse(field: &str) -> Result<Self, String> {
        path::Path::parse(field, false).map(Self)
    }

    /// The value at this path in `context`, `None` when it is missing.
    pub fn get<'a>(&self, context: &'a Value) -> Option<&'a Value> {
        self.0.resolve(context, None)
    }
}

/// The document condition paths are resolved against:
/// `{payload, trigger: {ref}, sensor: {ref} | null, event: {id, created}}`.
pub fn evaluation_context(event: &Event) -> Value {
    serde_json::json!({
        "payload": event.payload,
        "trigger": {"ref": event.trigger_ref},
        "sensor": event.source_ref.as_ref().map(|r| serde_json::json!({"ref": r})),
        "event": {"id": event.id, "created": event.created.to_rfc3339()},
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(conditions: Value, context: Value) -> bool {
        CompiledConditions::compile(&conditions)
            .expect("valid conditions")
            .matches(&context)
    }

    #[test]
    fn equals_any_and_missing_fields() {
        let ctx = json!({"payload": {"branch": "main", "n": 1}});
        assert!(check(
            json!({"field": "payload.branch", "operator": "equals", "value": "main"}),
            ctx.clone()
        ));
        assert!(check(
            json!({"field": "payload.n", "operator": "equals", "value": 1.0}),
            ctx.clone()
        ));
        assert!(!check(
            json!({"field": "payload.gone", "operator": "not_equals", "value": 1}),
            ctx.clone()
        ));
        assert!(check(
            json!({"any": [
                {"field": "payload.branch", "operator": "equals", "value": "dev"},
                {"field": "payload.branch", "operator": "contains", "value": "ai"}
            ]}),
            ctx.clone()
        ));
        assert!(check(json!([]), ctx));
    }

    #[test]
    fn unknown_operator_is_refused_with_its_pointer() {
        let err = CompiledConditions::compile(&json!({"all": [
            {"field": "payload.x", "operator": "bogus", "value": 1}
        ]}))
        .expect_err("must be refused");
        assert_eq!(err.pointer, "/all/0/operator");
    }
}
