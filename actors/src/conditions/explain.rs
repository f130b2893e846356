//! `explain`: the full trace of an evaluation, for `rule test` and for people debugging a
//! rule that did not fire.
//!
//! Unlike [`super::CompiledConditions::matches`], explaining evaluates every node (no
//! short-circuit), so the trace shows every failing condition at once. The result is the
//! same.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use super::evaluate::{Env, Verdict, age_seconds};
use super::tree::{Condition, Node, Test};

/// The trace of one evaluation. Serializes (for `--json`) as
/// `{"matched": bool, "root": node | null}`; `root` is null when the rule has no
/// conditions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    pub matched: bool,
    pub root: Option<ExplainNode>,
}

/// One node of the trace. Serialized with a `kind` tag: `all`, `any`, `not` or `condition`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExplainNode {
    All {
        pointer: String,
        result: bool,
        children: Vec<ExplainNode>,
    },
    Any {
        pointer: String,
        result: bool,
        children: Vec<ExplainNode>,
    },
    Not {
        pointer: String,
        result: bool,
        child: Box<ExplainNode>,
    },
    Condition(ConditionTrace),
}

/// How one condition was evaluated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConditionTrace {
    /// JSON pointer of the condition within the rule's `conditions`.
    pub pointer: String,
    pub field: String,
    pub operator: &'static str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub ignore_case: bool,
    /// The condition's `value`; absent for operators that take none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<Value>,
    /// The field's value; absent when the field is missing (then `missing` is true). A
    /// field holding `null` shows `"actual": null`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual: Option<Value>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub missing: bool,
    pub result: bool,
    /// Why the operator could not apply (type mismatch), or extra facts such as the age of a
    /// timestamp.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// For `any_item` / `all_item`: the nested condition evaluated on each element.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<ItemTrace>,
}

/// The nested condition of `any_item` / `all_item` evaluated on one element.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ItemTrace {
    pub index: usize,
    pub result: bool,
    pub node: ExplainNode,
}

impl ExplainNode {
    pub fn result(&self) -> bool {
        match self {
            ExplainNode::All { result, .. }
            | ExplainNode::Any { result, .. }
            | ExplainNode::Not { result, .. } => *result,
            ExplainNode::Condition(trace) => trace.result,
        }
    }

    pub fn pointer(&self) -> &str {
        match self {
            ExplainNode::All { pointer, .. }
            | ExplainNode::Any { pointer, .. }
            | ExplainNode::Not { pointer, .. } => pointer,
            ExplainNode::Condition(trace) => &trace.pointer,
        }
    }
}

pub(super) fn explain(root: Option<&Node>, env: Env<'_>) -> Explanation {
    let root = root.map(|node| explain_node(node, env));
    Explanation {
        matched: root.as_ref().is_none_or(ExplainNode::result),
        root,
    }
}

fn pointer_or_root(pointer: &str) -> String {
    if pointer.is_empty() {
        "/".to_owned()
    } else {
        pointer.to_owned()
    }
}

fn explain_node(node: &Node, env: Env<'_>) -> ExplainNode {
    match node {
        Node::All { pointer, children } => {
            let children: Vec<_> = children.iter().map(|c| explain_node(c, env)).collect();
            ExplainNode::All {
                pointer: pointer_or_root(pointer),
                result: children.iter().all(ExplainNode::result),
                children,
            }
        }
        Node::Any { pointer, children } => {
            let children: Vec<_> = children.iter().map(|c| explain_node(c, env)).collect();
            ExplainNode::Any {
                pointer: pointer_or_root(pointer),
                result: children.iter().any(ExplainNode::result),
                children,
            }
        }
        Node::Not { pointer, child } => {
            let child = explain_node(child, env);
            ExplainNode::Not {
                pointer: pointer_or_root(pointer),
                result: !child.result(),
                child: Box::new(child),
            }
        }
        Node::Condition(condition) => ExplainNode::Condition(explain_condition(condition, env)),
    }
}

fn explain_condition(condition: &Condition, env: Env<'_>) -> ConditionTrace {
    let actual = condition.actual(env);
    let mut items = Vec::new();
    let verdict = match (&condition.test, actual) {
        (Test::AnyItem(node) | Test::AllItem(node), Some(Value::Array(elements))) => {
            items = elements
                .iter()
                .enumerate()
                .map(|(index, element)| {
                    let node = explain_node(node, env.with_item(element));
                    ItemTrace {
                        index,
                        result: node.result(),
                        node,
                    }
                })
                .collect();
            let passed = if matches!(condition.test, Test::AnyItem(_)) {
                items.iter().any(|i| i.result)
            } else {
                items.iter().all(|i| i.result)
            };
            Verdict::from(passed)
        }
        (test, actual) => test.check(actual, env),
    };
    let note = match verdict {
        Verdict::Mismatch(why) => Some(format!("type mismatch: {why}")),
        _ => match (&condition.test, actual) {
            (Test::TimediffLt(_) | Test::TimediffGt(_), Some(value)) => age_seconds(value, env)
                .ok()
                .map(|age| format!("{age:.3} s old")),
            _ => None,
        },
    };
    ConditionTrace {
        pointer: pointer_or_root(&condition.pointer),
        field: condition.field.to_string(),
        operator: condition.test.name(),
        ignore_case: condition.ignore_case,
        expected: condition.value.clone(),
        actual: actual.cloned(),
        missing: actual.is_none(),
        result: verdict == Verdict::Pass,
        note,
        items,
    }
}

impl Test {
    /// The operator as written in a rule.
    pub(super) fn name(&self) -> &'static str {
        match self {
            Test::Equals(_) => "equals",
            Test::NotEquals(_) => "not_equals",
            Test::Contains(_) => "contains",
            Test::NotContains(_) => "not_contains",
            Test::StartsWith(_) => "starts_with",
            Test::EndsWith(_) => "ends_with",
            Test::Order(order, _) => match order {
                super::tree::Order::Greater => "greater_than",
                super::tree::Order::Less => "less_than",
                super::tree::Order::GreaterOrEqual => "greater_or_equal",
                super::tree::Order::LessOrEqual => "less_or_equal",
            },
            Test::In(_) => "in",
            Test::NotIn(_) => "not_in",
            Test::Matches(_) => "matches",
            Test::Wildcard(_) => "wildcard",
            Test::Exists => "exists",
            Test::NotExists => "not_exists",
            Test::TimediffLt(_) => "timediff_lt",
            Test::TimediffGt(_) => "timediff_gt",
            Test::AnyItem(_) => "any_item",
            Test::AllItem(_) => "all_item",
        }
    }
}

/// Longest JSON rendering shown inline in the tree; the `--json` form is never cut.
const INLINE_LIMIT: usize = 60;

fn inline(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() <= INLINE_LIMIT {
        return text;
    }
    let cut: String = text.chars().take(INLINE_LIMIT).collect();
    format!("{cut}…")
}

fn mark(result: bool) -> char {
    if result { '✔' } else { '✘' }
}

impl Explanation {
    /// An indented tree, one line per node, for people:
    ///
    /// ```text
    /// ✘ all
    ///   ✔ payload.branch equals "main" (actual: "main")
    ///   ✘ payload.size greater_than 10 (actual: "big"; type mismatch: ...)
    ///   ✘ payload.tag exists (missing)
    /// ```
    pub fn render_tree(&self) -> String {
        let mut out = String::new();
        match &self.root {
            None => out.push_str("✔ no conditions: every event matches\n"),
            Some(root) => render(root, 0, "", &mut out),
        }
        out
    }
}

fn render(node: &ExplainNode, depth: usize, prefix: &str, out: &mut String) {
    let indent = "  ".repeat(depth);
    let mark = mark(node.result());
    // Writing to a String cannot fail.
    match node {
        ExplainNode::All { children, .. } | ExplainNode::Any { children, .. } => {
            let name = if matches!(node, ExplainNode::All { .. }) {
                "all"
            } else {
                "any"
            };
            let _ = writeln!(out, "{indent}{mark} {prefix}{name}");
            for child in children {
                render(child, depth + 1, "", out);
            }
        }
        ExplainNode::Not { child, .. } => {
            let _ = writeln!(out, "{indent}{mark} {prefix}not");
            render(child, depth + 1, "", out);
        }
        ExplainNode::Condition(trace) => {
            let _ = write!(
                out,
                "{indent}{mark} {prefix}{} {}",
                trace.field, trace.operator
            );
            if trace.ignore_case {
                out.push_str(" (ignore case)");
            }
            if let Some(expected) = &trace.expected {
                let _ = write!(out, " {}", inline(expected));
            }
            let mut facts = Vec::new();
            match &trace.actual {
                None => facts.push("missing".to_owned()),
                Some(Value::Array(items)) if matches!(trace.operator, "any_item" | "all_item") => {
                    facts.push(format!("{} item(s)", items.len()));
                }
                Some(actual) => facts.push(format!("actual: {}", inline(actual))),
            }
            if let Some(note) = &trace.note {
                facts.push(note.clone());
            }
            let _ = writeln!(out, " ({})", facts.join("; "));
            for item in &trace.items {
                render(&item.node, depth + 1, &format!("[{}] ", item.index), out);
            }
        }
    }
}
