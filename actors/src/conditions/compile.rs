//! Validation and compilation of a rule's `conditions` into the tree evaluation walks.
//!
//! Everything that can be wrong with a rule is found here, when the rule is loaded: unknown
//! operators, missing or extra keys, values of the wrong kind, malformed paths, invalid
//! regexes or globs and nesting deeper than [`MAX_DEPTH`]. Regexes, globs and paths are
//! compiled once, so evaluation never parses anything from the rule.

use regex::{Regex, RegexBuilder};
use serde_json::{Map, Value};

use super::glob::{Glob, glob_to_regex};
use super::path::Path;
use super::tree::{Affix, Condition, Equality, Needle, Node, OPERATORS, Order, Set, Test};
use super::{ConditionError, MAX_DEPTH, REGEX_SIZE_LIMIT};

/// What an operator expects besides `field` and `operator`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Operand {
    Value,
    Nothing,
    Condition,
}

fn operand(operator: &str) -> Operand {
    match operator {
        "exists" | "not_exists" => Operand::Nothing,
        "any_item" | "all_item" => Operand::Condition,
        _ => Operand::Value,
    }
}

fn takes_ignore_case(operator: &str) -> bool {
    matches!(
        operator,
        "equals"
            | "not_equals"
            | "contains"
            | "not_contains"
            | "starts_with"
            | "ends_with"
            | "in"
            | "not_in"
            | "matches"
            | "wildcard"
    )
}

/// Builds a [`ConditionError`]. The root is reported as `/` so messages never show an empty
/// location.
pub(super) fn error(pointer: &str, message: impl Into<String>) -> ConditionError {
    ConditionError {
        pointer: if pointer.is_empty() {
            "/".to_owned()
        } else {
            pointer.to_owned()
        },
        message: message.into(),
    }
}

/// Appends a reference token to a JSON pointer, escaping `~` and `/` (RFC 6901).
fn child(pointer: &str, token: &str) -> String {
    let token = token.replace('~', "~0").replace('/', "~1");
    format!("{pointer}/{token}")
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Compiles the top level of a rule's `conditions`. `None` means "no conditions": every
/// event matches.
pub(super) fn compile_root(conditions: &Value) -> Result<Option<Node>, ConditionError> {
    match conditions {
        Value::Null => Ok(None),
        Value::Array(items) if items.is_empty() => Ok(None),
        Value::Object(map) if map.is_empty() => Ok(None),
        Value::Array(items) => Ok(Some(Node::All {
            pointer: "".into(),
            children: compile_list(items, "", 1, false)?,
        })),
        Value::Object(map) => {
            // An empty top-level group is "no conditions", whatever its combinator.
            let empty_group = map.len() == 1
                && ["all", "any"].iter().any(|g| {
                    map.get(*g)
                        .and_then(Value::as_array)
                        .is_some_and(Vec::is_empty)
                });
            if empty_group {
                Ok(None)
            } else {
                compile_node(conditions, "", 1, false).map(Some)
            }
        }
        other => Err(error(
            "",
            format!(
                "expected a condition, a group, a list of conditions or null, found {}",
                kind(other)
            ),
        )),
    }
}

/// Compiles the items of a list or group; they sit one level deeper than the list.
fn compile_list(
    items: &[Value],
    pointer: &str,
    depth: usize,
    in_item: bool,
) -> Result<Box<[Node]>, ConditionError> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| compile_node(item, &format!("{pointer}/{i}"), depth + 1, in_item))
        .collect()
}

fn compile_node(
    node: &Value,
    pointer: &str,
    depth: usize,
    in_item: bool,
) -> Result<Node, ConditionError> {
    if depth > MAX_DEPTH {
        return Err(error(
            pointer,
            format!("conditions are nested deeper than {MAX_DEPTH} levels"),
        ));
    }
    let Value::Object(map) = node else {
        return Err(error(
            pointer,
            format!(
                "expected a condition or a group (an object), found {}",
                kind(node)
            ),
        ));
    };
    if map.is_empty() {
        return Err(error(
            pointer,
            "empty object: expected a condition or a group",
        ));
    }
    for group in ["all", "any", "not"] {
        let Some(inner) = map.get(group) else {
            continue;
        };
        if let Some(extra) = map.keys().find(|k| k.as_str() != group) {
            return Err(error(
                &child(pointer, extra),
                format!("a '{group}' group takes no other key, found '{extra}'"),
            ));
        }
        let inner_pointer = child(pointer, group);
        if group == "not" {
            return Ok(Node::Not {
                pointer: pointer.into(),
                child: Box::new(compile_node(inner, &inner_pointer, depth + 1, in_item)?),
            });
        }
        let Value::Array(items) = inner else {
            return Err(error(
                &inner_pointer,
                format!(
                    "'{group}' takes an array of conditions, found {}",
                    kind(inner)
                ),
            ));
        };
        let children = compile_list(items, &inner_pointer, depth, in_item)?;
        return Ok(if group == "all" {
            Node::All {
                pointer: pointer.into(),
                children,
            }
        } else {
            Node::Any {
                pointer: pointer.into(),
                children,
            }
        });
    }
    compile_condition(map, pointer, depth, in_item).map(|c| Node::Condition(Box::new(c)))
}

fn compile_condition(
    map: &Map<String, Value>,
    pointer: &str,
    depth: usize,
    in_item: bool,
) -> Result<Condition, ConditionError> {
    let operator = match map.get("operator") {
        Some(Value::String(op)) if OPERATORS.contains(&op.as_str()) => op.as_str(),
        Some(Value::String(op)) => {
            return Err(error(
                &child(pointer, "operator"),
                format!(
                    "unknown operator '{op}' (expected one of: {})",
                    OPERATORS.join(", ")
                ),
            ));
        }
        Some(other) => {
            return Err(error(
                &child(pointer, "operator"),
                format!("'operator' must be a string, found {}", kind(other)),
            ));
        }
        None => {
            return Err(error(
                pointer,
                "missing 'operator' (a condition has 'field', 'operator' and usually 'value'; \
                 a group has a single key 'all', 'any' or 'not')",
            ));
        }
    };
    let wants = operand(operator);
    for key in map.keys() {
        let allowed = match key.as_str() {
            "field" | "operator" => true,
            "value" => wants == Operand::Value,
            "condition" => wants == Operand::Condition,
            "ignore_case" => takes_ignore_case(operator),
            _ => false,
        };
        if !allowed {
            let why = match key.as_str() {
                "value" => format!("'{operator}' takes no 'value'"),
                "condition" => "only any_item and all_item take a 'condition'".to_owned(),
                "ignore_case" => format!("'ignore_case' does not apply to '{operator}'"),
                _ => format!(
                    "unknown key '{key}' (a condition takes field, operator, value, \
                     ignore_case and, for any_item/all_item, condition)"
                ),
            };
            return Err(error(&child(pointer, key), why));
        }
    }

    let field = match map.get("field") {
        Some(Value::String(field)) => field,
        Some(other) => {
            return Err(error(
                &child(pointer, "field"),
                format!("'field' must be a string, found {}", kind(other)),
            ));
        }
        None => return Err(error(pointer, "missing 'field'")),
    };
    let path = Path::parse(field, in_item).map_err(|m| error(&child(pointer, "field"), m))?;

    let ignore_case = match map.get("ignore_case") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(error(
                &child(pointer, "ignore_case"),
                format!("'ignore_case' must be true or false, found {}", kind(other)),
            ));
        }
    };

    let value_pointer = child(pointer, "value");
    let value = match wants {
        Operand::Value => Some(map.get("value").cloned().ok_or_else(|| {
            error(
                pointer,
                format!("missing 'value' (required by '{operator}')"),
            )
        })?),
        _ => None,
    };
    let test = match (operator, &value) {
        (_, _) if wants == Operand::Condition => {
            let condition_pointer = child(pointer, "condition");
            let nested = map.get("condition").ok_or_else(|| {
                error(
                    pointer,
                    format!(
                        "missing 'condition' (required by '{operator}': a condition or group \
                         whose paths start at item)"
                    ),
                )
            })?;
            let node = Box::new(compile_node(nested, &condition_pointer, depth + 1, true)?);
            if operator == "any_item" {
                Test::AnyItem(node)
            } else {
                Test::AllItem(node)
            }
        }
        ("exists", _) => Test::Exists,
        ("not_exists", _) => Test::NotExists,
        (_, Some(value)) => {
            compile_test(operator, value, ignore_case).map_err(|m| error(&value_pointer, m))?
        }
        (_, None) => return Err(error(pointer, format!("missing 'value' for '{operator}'"))),
    };
    Ok(Condition {
        pointer: pointer.into(),
        field: field.as_str().into(),
        path,
        ignore_case,
        value,
        test,
    })
}

/// Compiles an operator that takes a `value`. The error is the message for the `value`
/// pointer.
fn compile_test(operator: &str, value: &Value, ignore_case: bool) -> Result<Test, String> {
    let needs_string = |what: &str| -> Result<&str, String> {
        match value {
            Value::String(s) => Ok(s.as_str()),
            other => Err(format!("'{operator}' needs {what}, found {}", kind(other))),
        }
    };
    // `ignore_case` only changes how strings compare; on any other value it would silently
    // do nothing, which hides a mistake in the rule.
    let folded_string = |anchor: (&str, &str)| -> Result<Option<Regex>, String> {
        if !ignore_case {
            return Ok(None);
        }
        let s = needs_string("a string value with ignore_case")?;
        literal_regex(s, anchor).map(Some)
    };
    Ok(match operator {
        "equals" | "not_equals" => {
            let eq = Equality {
                value: value.clone(),
                folded: folded_string(("^", "$"))?,
            };
            if operator == "equals" {
                Test::Equals(eq)
            } else {
                Test::NotEquals(eq)
            }
        }
        "contains" | "not_contains" => {
            let needle = Needle {
                value: value.clone(),
                substring: folded_string(("", ""))?,
                exact: folded_string(("^", "$"))?,
            };
            if operator == "contains" {
                Test::Contains(needle)
            } else {
                Test::NotContains(needle)
            }
        }
        "starts_with" | "ends_with" => {
            let text = needs_string("a string value")?;
            let anchors = if operator == "starts_with" {
                ("^", "")
            } else {
                ("", "$")
            };
            let affix = Affix {
                text: text.into(),
                folded: folded_string(anchors)?,
            };
            if operator == "starts_with" {
                Test::StartsWith(affix)
            } else {
                Test::EndsWith(affix)
            }
        }
        "greater_than" | "less_than" | "greater_or_equal" | "less_or_equal" => {
            if !matches!(value, Value::Number(_) | Value::String(_)) {
                return Err(format!(
                    "'{operator}' needs a number or a string value, found {}",
                    kind(value)
                ));
            }
            let order = match operator {
                "greater_than" => Order::Greater,
                "less_than" => Order::Less,
                "greater_or_equal" => Order::GreaterOrEqual,
                _ => Order::LessOrEqual,
            };
            Test::Order(order, value.clone())
        }
        "in" | "not_in" => {
            let Value::Array(items) = value else {
                return Err(format!(
                    "'{operator}' needs an array value, found {}",
                    kind(value)
                ));
            };
            let strings: Vec<String> = items
                .iter()
                .filter_map(Value::as_str)
                .map(regex::escape)
                .collect();
            // An empty alternation would match the empty string, so no strings, no regex.
            let folded = if ignore_case && !strings.is_empty() {
                Some(build_regex(&format!("^(?:{})$", strings.join("|")), true)?)
            } else {
                None
            };
            let set = Set {
                items: items.clone().into_boxed_slice(),
                folded,
            };
            if operator == "in" {
                Test::In(set)
            } else {
                Test::NotIn(set)
            }
        }
        "matches" => Test::Matches(build_regex(needs_string("a regex string")?, ignore_case)?),
        "wildcard" => {
            let glob = needs_string("a glob string")?;
            let regex = build_regex(&glob_to_regex(glob)?, ignore_case)?;
            Test::Wildcard(Glob::new(glob, regex, ignore_case))
        }
        "timediff_lt" | "timediff_gt" => {
            let seconds = value
                .as_f64()
                .filter(|s| value.is_number() && s.is_finite() && *s >= 0.0)
                .ok_or_else(|| {
                    format!(
                        "'{operator}' needs a number of seconds (zero or more), found {}",
                        if value.is_number() {
                            "a negative number"
                        } else {
                            kind(value)
                        }
                    )
                })?;
            if operator == "timediff_lt" {
                Test::TimediffLt(seconds)
            } else {
                Test::TimediffGt(seconds)
            }
        }
        other => return Err(format!("'{other}' takes no 'value'")),
    })
}

/// Builds a regex with the size limits every rule-supplied pattern gets.
fn build_regex(pattern: &str, ignore_case: bool) -> Result<Regex, String> {
    RegexBuilder::new(pattern)
        .case_insensitive(ignore_case)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(limit) => {
                format!("the pattern is too large (compiled size over {limit} bytes)")
            }
            other => format!("invalid pattern: {other}"),
        })
}

/// Case-insensitive matcher for a literal. The `regex` crate folds case with Unicode simple
/// case folding, which is exactly the `ignore_case` contract, so the literal operators reuse
/// it instead of carrying a second folding table.
fn literal_regex(text: &str, (start, end): (&str, &str)) -> Result<Regex, String> {
    build_regex(&format!("{start}(?:{}){end}", regex::escape(text)), true)
}
