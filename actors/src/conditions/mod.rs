//! The condition engine: decides whether an event satisfies a rule's conditions.
//!
//! Conditions are compiled once, when a rule is loaded, into a tree that evaluation walks
//! without parsing anything.

use serde_json::Value;

use crate::domain::Event;

/// A rule's conditions refused at load time. `pointer` is the JSON pointer of the bad node
/// within the rule's `conditions`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid condition at '{pointer}': {message}")]
pub struct ConditionError {
    pub pointer: String,
    pub message: String,
}

#[derive(Debug, Clone)]
enum Node {
    All(Vec<Node>),
    Any(Vec<Node>),
    Compare {
        path: Vec<String>,
        operator: Operator,
        value: Value,
    },
}

#[derive(Debug, Clone, Copy)]
enum Operator {
    Equals,
    NotEquals,
    Contains,
}

/// A rule's conditions, validated and ready to evaluate.
#[derive(Debug, Clone)]
pub struct CompiledConditions {
    root: Option<Node>,
    top_level: &'static str,
}

impl CompiledConditions {
    /// Validates and compiles a rule's `conditions`: a group (`all`/`any`), a single
    /// condition, a list (meaning `all`), or null / empty (matching every event).
    pub fn compile(conditions: &Value) -> Result<Self, ConditionError> {
        let top_level = match conditions {
            Value::Object(map) if map.contains_key("any") => "any",
            _ => "all",
        };
        let root = match conditions {
            Value::Null => None,
            Value::Array(items) if items.is_empty() => None,
            Value::Object(map) if map.is_empty() => None,
            Value::Array(items) => Some(Node::All(compile_list(items, "")?)),
            other => Some(compile_node(other, "")?),
        };
        Ok(Self { root, top_level })
    }

    /// Whether the evaluation context (see [`evaluation_context`]) satisfies the conditions.
    pub fn matches(&self, context: &Value) -> bool {
        self.root.as_ref().is_none_or(|node| evaluate(node, context))
    }

    /// `all` or `any`: the top-level combinator, stored with each enforcement.
    pub fn top_level(&self) -> &'static str {
        self.top_level
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

fn error(pointer: &str, message: impl Into<String>) -> ConditionError {
    ConditionError {
        pointer: if pointer.is_empty() {
            "/".to_owned()
        } else {
            pointer.to_owned()
        },
        message: message.into(),
    }
}

fn compile_list(items: &[Value], pointer: &str) -> Result<Vec<Node>, ConditionError> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| compile_node(item, &format!("{pointer}/{i}")))
        .collect()
}

fn compile_node(node: &Value, pointer: &str) -> Result<Node, ConditionError> {
    let Value::Object(map) = node else {
        return Err(error(pointer, "expected an object (a condition or a group)"));
    };
    for group in ["all", "any"] {
        if let Some(items) = map.get(group) {
            if map.len() != 1 {
                return Err(error(pointer, format!("a '{group}' group takes no other keys")));
            }
            let Value::Array(items) = items else {
                return Err(error(&format!("{pointer}/{group}"), "expected an array"));
            };
            let children = compile_list(items, &format!("{pointer}/{group}"))?;
            return Ok(if group == "all" {
                Node::All(children)
            } else {
                Node::Any(children)
            });
        }
    }
    let field = match map.get("field") {
        Some(Value::String(field)) if !field.is_empty() => field,
        _ => return Err(error(pointer, "missing or empty 'field'")),
    };
    let operator = match map.get("operator").and_then(Value::as_str) {
        Some("equals") => Operator::Equals,
        Some("not_equals") => Operator::NotEquals,
        Some("contains") => Operator::Contains,
        Some(other) => {
            return Err(error(
                &format!("{pointer}/operator"),
                format!("unknown operator '{other}'"),
            ));
        }
        None => return Err(error(pointer, "missing 'operator'")),
    };
    let value = map
        .get("value")
        .cloned()
        .ok_or_else(|| error(pointer, "missing 'value'"))?;
    Ok(Node::Compare {
        path: field.split('.').map(str::to_owned).collect(),
        operator,
        value,
    })
}

fn resolve<'a>(context: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(context, |current, segment| match current {
        Value::Object(map) => map.get(segment),
        Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn evaluate(node: &Node, context: &Value) -> bool {
    match node {
        Node::All(children) => children.iter().all(|c| evaluate(c, context)),
        Node::Any(children) => children.iter().any(|c| evaluate(c, context)),
        Node::Compare {
            path,
            operator,
            value,
        } => {
            let Some(actual) = resolve(context, path) else {
                return false;
            };
            match operator {
                Operator::Equals => json_equal(actual, value),
                Operator::NotEquals => !json_equal(actual, value),
                Operator::Contains => match (actual, value) {
                    (Value::String(s), Value::String(needle)) => s.contains(needle.as_str()),
                    (Value::Array(items), v) => items.iter().any(|item| json_equal(item, v)),
                    (Value::Object(map), Value::String(key)) => map.contains_key(key),
                    _ => false,
                },
            }
        }
    }
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
