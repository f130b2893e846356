//! Evaluation of a compiled tree against an evaluation context.
//!
//! The fast path ([`Node::matches`]) short-circuits and allocates nothing: it walks
//! pre-split paths, compares borrowed values and runs pre-compiled regexes.

use std::cell::OnceCell;
use std::cmp::Ordering;

use chrono::{DateTime, Utc};
use serde_json::{Number, Value};

use super::glob::Glob;
use super::tree::{Affix, Condition, Equality, Needle, Node, Order, Set, Test};

/// What a condition is evaluated against: the event context, the current element inside
/// `any_item` / `all_item`, and "now" (read from the clock at most once per evaluation, and
/// only when a `timediff_*` operator needs it).
#[derive(Clone, Copy)]
pub(super) struct Env<'a> {
    pub context: &'a Value,
    pub item: Option<&'a Value>,
    now: &'a OnceCell<DateTime<Utc>>,
}

impl<'a> Env<'a> {
    pub(super) fn new(context: &'a Value, now: &'a OnceCell<DateTime<Utc>>) -> Self {
        Self {
            context,
            item: None,
            now,
        }
    }

    pub(super) fn with_item(self, item: &'a Value) -> Self {
        Self {
            item: Some(item),
            ..self
        }
    }

    pub(super) fn now(&self) -> DateTime<Utc> {
        *self.now.get_or_init(Utc::now)
    }
}

/// The outcome of one condition. Only `Pass` makes it true; the other cases exist so
/// `explain` can say why a condition failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Pass,
    Fail,
    Missing,
    Mismatch(&'static str),
}

impl From<bool> for Verdict {
    fn from(passed: bool) -> Self {
        if passed { Self::Pass } else { Self::Fail }
    }
}

impl Verdict {
    fn negate(self) -> Self {
        match self {
            Self::Pass => Self::Fail,
            Self::Fail => Self::Pass,
            other => other,
        }
    }
}

impl Node {
    /// Whether the node holds. Short-circuits.
    pub(super) fn matches(&self, env: Env<'_>) -> bool {
        match self {
            Node::All { children, .. } => children.iter().all(|c| c.matches(env)),
            Node::Any { children, .. } => children.iter().any(|c| c.matches(env)),
            Node::Not { child, .. } => !child.matches(env),
            Node::Condition(condition) => condition.verdict(env) == Verdict::Pass,
        }
    }
}

impl Condition {
    pub(super) fn actual<'a>(&self, env: Env<'a>) -> Option<&'a Value> {
        self.path.resolve(env.context, env.item)
    }

    pub(super) fn verdict(&self, env: Env<'_>) -> Verdict {
        self.test.check(self.actual(env), env)
    }
}

impl Test {
    /// The operator's verdict on `actual` (`None` when the field is missing).
    pub(super) fn check(&self, actual: Option<&Value>, env: Env<'_>) -> Verdict {
        let Some(actual) = actual else {
            return if matches!(self, Test::NotExists) {
                Verdict::Pass
            } else {
                Verdict::Missing
            };
        };
        match self {
            Test::Exists => Verdict::Pass,
            Test::NotExists => Verdict::Fail,
            Test::Equals(eq) => eq.holds(actual).into(),
            Test::NotEquals(eq) => (!eq.holds(actual)).into(),
            Test::Contains(needle) => needle.check(actual),
            Test::NotContains(needle) => needle.check(actual).negate(),
            Test::StartsWith(affix) => match actual {
                Value::String(s) => affix.prefix_of(s).into(),
                _ => Verdict::Mismatch("the field is not a string"),
            },
            Test::EndsWith(affix) => match actual {
                Value::String(s) => affix.suffix_of(s).into(),
                _ => Verdict::Mismatch("the field is not a string"),
            },
            Test::Order(order, value) => match compare(actual, value) {
                Some(ordering) => order.holds(ordering).into(),
                None => Verdict::Mismatch("ordering needs two numbers or two strings"),
            },
            Test::In(set) => set.contains(actual).into(),
            Test::NotIn(set) => (!set.contains(actual)).into(),
            // One call of the regex for both: a second kept the compiler from inlining
            // the regex's setup into this one (`matches` took 2 % more instructions).
            Test::Matches(re) | Test::Wildcard(Glob { regex: re, .. }) => match actual {
                Value::String(s) => {
                    let quick = match self {
                        Test::Wildcard(glob) => glob.decide_quickly(s),
                        _ => None,
                    };
                    quick.unwrap_or_else(|| re.is_match(s)).into()
                }
                _ => Verdict::Mismatch("the field is not a string"),
            },
            Test::TimediffLt(limit) => match age_seconds(actual, env) {
                Ok(age) => (age < *limit).into(),
                Err(why) => Verdict::Mismatch(why),
            },
            Test::TimediffGt(limit) => match age_seconds(actual, env) {
                Ok(age) => (age > *limit).into(),
                Err(why) => Verdict::Mismatch(why),
            },
            Test::AnyItem(node) => match actual {
                Value::Array(items) => items.iter().any(|i| node.matches(env.with_item(i))).into(),
                _ => Verdict::Mismatch("the field is not an array"),
            },
            Test::AllItem(node) => match actual {
                Value::Array(items) => items.iter().all(|i| node.matches(env.with_item(i))).into(),
                _ => Verdict::Mismatch("the field is not an array"),
            },
        }
    }
}

impl Equality {
    fn holds(&self, actual: &Value) -> bool {
        match (&self.folded, actual) {
            (Some(folded), Value::String(s)) => folded.is_match(s),
            _ => json_equal(actual, &self.value),
        }
    }
}

impl Needle {
    fn check(&self, actual: &Value) -> Verdict {
        match actual {
            Value::String(s) => match (&self.substring, &self.value) {
                (Some(folded), _) => folded.is_match(s).into(),
                (None, Value::String(needle)) => s.contains(needle.as_str()).into(),
                _ => Verdict::Mismatch("a string field needs a string value"),
            },
            Value::Array(items) => items
                .iter()
                .any(|item| match (&self.exact, item) {
                    (Some(folded), Value::String(s)) => folded.is_match(s),
                    _ => json_equal(item, &self.value),
                })
                .into(),
            Value::Object(map) => match (&self.exact, &self.value) {
                (Some(folded), _) => map.keys().any(|k| folded.is_match(k)).into(),
                (None, Value::String(key)) => map.contains_key(key.as_str()).into(),
                _ => Verdict::Mismatch("an object field needs a string value (a key)"),
            },
            _ => Verdict::Mismatch("the field is not a string, an array or an object"),
        }
    }
}

impl Affix {
    fn prefix_of(&self, s: &str) -> bool {
        match &self.folded {
            Some(folded) => folded.is_match(s),
            None => s.starts_with(&*self.text),
        }
    }

    fn suffix_of(&self, s: &str) -> bool {
        match &self.folded {
            Some(folded) => folded.is_match(s),
            None => s.ends_with(&*self.text),
        }
    }
}

impl Set {
    fn contains(&self, actual: &Value) -> bool {
        match (&self.folded, actual) {
            // Only string elements can equal a string, and the regex covers all of them.
            (Some(folded), Value::String(s)) => folded.is_match(s),
            _ => self.items.iter().any(|item| json_equal(actual, item)),
        }
    }
}

impl Order {
    fn holds(self, ordering: Ordering) -> bool {
        match self {
            Order::Greater => ordering == Ordering::Greater,
            Order::Less => ordering == Ordering::Less,
            Order::GreaterOrEqual => ordering != Ordering::Less,
            Order::LessOrEqual => ordering != Ordering::Greater,
        }
    }
}

/// Seconds between the RFC 3339 timestamp in `actual` and now (negative in the future).
pub(super) fn age_seconds(actual: &Value, env: Env<'_>) -> Result<f64, &'static str> {
    let Value::String(s) = actual else {
        return Err("the field is not a string");
    };
    let at =
        DateTime::parse_from_rfc3339(s).map_err(|_| "the field is not an RFC 3339 timestamp")?;
    Ok(env.now().signed_duration_since(at).as_seconds_f64())
}

/// `a` compared to `b`: numbers by value, strings by code point; `None` for anything else.
pub(super) fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => number_cmp(x, y),
        (Value::String(x), Value::String(y)) => Some(x.as_str().cmp(y.as_str())),
        _ => None,
    }
}

/// JSON equality where numbers compare by value (`1` equals `1.0`) at any depth; values of
/// different types are never equal.
pub(super) fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => number_cmp(x, y) == Some(Ordering::Equal),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_equal(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

/// A JSON number widened without loss: every `i64` and `u64` fits an `i128`.
enum Wide {
    Int(i128),
    Float(f64),
}

fn wide(n: &Number) -> Wide {
    if let Some(i) = n.as_i64() {
        Wide::Int(i128::from(i))
    } else if let Some(u) = n.as_u64() {
        Wide::Int(i128::from(u))
    } else {
        Wide::Float(n.as_f64().unwrap_or(f64::NAN))
    }
}

/// Exact numeric order. Converting integers to `f64` would call 2^53 + 1 equal to 2^53, so
/// an integer meets a float through the float's integer part.
fn number_cmp(a: &Number, b: &Number) -> Option<Ordering> {
    match (wide(a), wide(b)) {
        (Wide::Int(x), Wide::Int(y)) => Some(x.cmp(&y)),
        (Wide::Float(x), Wide::Float(y)) => x.partial_cmp(&y),
        (Wide::Int(x), Wide::Float(y)) => int_float_cmp(x, y),
        (Wide::Float(x), Wide::Int(y)) => int_float_cmp(y, x).map(Ordering::reverse),
    }
}

fn int_float_cmp(i: i128, f: f64) -> Option<Ordering> {
    // Bounds of the integers a JSON number can hold: [-2^63, 2^64).
    const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;
    const MINUS_TWO_POW_63: f64 = -9_223_372_036_854_775_808.0;
    if f.is_nan() {
        return None;
    }
    if f >= TWO_POW_64 {
        return Some(Ordering::Less);
    }
    if f < MINUS_TWO_POW_63 {
        return Some(Ordering::Greater);
    }
    let whole = f.trunc();
    // Exact: `whole` is an integer within i128 range.
    let whole_int = whole as i128;
    Some(match i.cmp(&whole_int) {
        Ordering::Equal if f > whole => Ordering::Less,
        Ordering::Equal if f < whole => Ordering::Greater,
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_compare_exactly() {
        let cmp = |a: Value, b: Value| compare(&a, &b);
        assert_eq!(cmp(json!(1), json!(1.0)), Some(Ordering::Equal));
        assert_eq!(cmp(json!(-2), json!(-2.5)), Some(Ordering::Greater));
        assert_eq!(cmp(json!(2.5), json!(2)), Some(Ordering::Greater));
        assert_eq!(
            cmp(
                json!(9_007_199_254_740_993_i64),
                json!(9_007_199_254_740_992.0)
            ),
            Some(Ordering::Greater)
        );
        assert_eq!(cmp(json!(u64::MAX), json!(-1)), Some(Ordering::Greater));
        assert_eq!(cmp(json!(u64::MAX), json!(1e30)), Some(Ordering::Less));
        assert_eq!(cmp(json!(i64::MIN), json!(-1e30)), Some(Ordering::Greater));
        assert_eq!(cmp(json!("1"), json!(1)), None);
    }

    #[test]
    fn equality_is_deep_and_by_value_for_numbers() {
        assert!(json_equal(&json!({"a": [1, 2.0]}), &json!({"a": [1.0, 2]})));
        assert!(!json_equal(&json!({"a": [1]}), &json!({"a": [1], "b": 1})));
        assert!(!json_equal(&json!("1"), &json!(1)));
        assert!(!json_equal(&json!(null), &json!(false)));
    }
}
