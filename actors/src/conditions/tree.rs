//! The compiled form of a rule's conditions: what `compile` produces and `evaluate` and
//! `explain` walk. Every operand is prepared here once (regexes built, sets collected),
//! so evaluation parses nothing.

use regex::Regex;
use serde_json::Value;

use super::glob::Glob;
use super::path::Path;

/// A compiled group or condition.
#[derive(Debug, Clone)]
pub(super) enum Node {
    All {
        pointer: Box<str>,
        children: Box<[Node]>,
    },
    Any {
        pointer: Box<str>,
        children: Box<[Node]>,
    },
    Not {
        pointer: Box<str>,
        child: Box<Node>,
    },
    Condition(Box<Condition>),
}

/// A compiled leaf condition.
#[derive(Debug, Clone)]
pub(super) struct Condition {
    /// JSON pointer of the condition within the rule's `conditions` (for `explain`).
    pub pointer: Box<str>,
    /// The path as written (for `explain`).
    pub field: Box<str>,
    pub path: Path,
    pub ignore_case: bool,
    /// The `value` as written (for `explain`); `None` for operators that take none.
    pub value: Option<Value>,
    pub test: Test,
}

/// An operator with its operand, prepared for evaluation.
#[derive(Debug, Clone)]
pub(super) enum Test {
    Equals(Equality),
    NotEquals(Equality),
    Contains(Needle),
    NotContains(Needle),
    StartsWith(Affix),
    EndsWith(Affix),
    Order(Order, Value),
    In(Set),
    NotIn(Set),
    Matches(Regex),
    Wildcard(Glob),
    Exists,
    NotExists,
    TimediffLt(f64),
    TimediffGt(f64),
    AnyItem(Box<Node>),
    AllItem(Box<Node>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Order {
    Greater,
    Less,
    GreaterOrEqual,
    LessOrEqual,
}

/// Operand of `equals` / `not_equals`. `folded` (set with `ignore_case`) matches a string
/// equal to the value under simple case folding.
#[derive(Debug, Clone)]
pub(super) struct Equality {
    pub value: Value,
    pub folded: Option<Regex>,
}

/// Operand of `contains` / `not_contains`. With `ignore_case`, `substring` finds the value
/// inside a string and `exact` matches an element or key equal to it.
#[derive(Debug, Clone)]
pub(super) struct Needle {
    pub value: Value,
    pub substring: Option<Regex>,
    pub exact: Option<Regex>,
}

/// Operand of `starts_with` / `ends_with`; `folded` is the anchored case-insensitive form.
#[derive(Debug, Clone)]
pub(super) struct Affix {
    pub text: Box<str>,
    pub folded: Option<Regex>,
}

/// Operand of `in` / `not_in`; `folded` matches a string equal to any string element under
/// simple case folding (set with `ignore_case` when the array holds strings).
#[derive(Debug, Clone)]
pub(super) struct Set {
    pub items: Box<[Value]>,
    pub folded: Option<Regex>,
}

/// Every operator, in the order the documentation lists them.
pub(super) const OPERATORS: [&str; 20] = [
    "equals",
    "not_equals",
    "contains",
    "not_contains",
    "starts_with",
    "ends_with",
    "greater_than",
    "less_than",
    "greater_or_equal",
    "less_or_equal",
    "in",
    "not_in",
    "matches",
    "wildcard",
    "exists",
    "not_exists",
    "timediff_lt",
    "timediff_gt",
    "any_item",
    "all_item",
];
