//! Field paths: where in the evaluation context a condition looks.
//!
//! A path is parsed once, when the rule is loaded, into a root and a list of segments, so
//! evaluation only walks the JSON tree. Grammar:
//!
//! ```text
//! path    := name ( "." name | "[" quoted "]" | "[" digits "]" )*
//! name    := one or more characters other than  .  [  ]
//! quoted  := "..." or '...'   (backslash escapes the quote and the backslash)
//! ```
//!
//! A name made of digits (`commits.0`) indexes an array, and still reads the key `"0"` of an
//! object; `[0]` does the same. A quoted segment (`["a.b"]`) is always an object key.

use serde_json::Value;

/// The roots of the evaluation context built by [`super::evaluation_context`].
pub(super) const CONTEXT_ROOTS: [&str; 4] = ["payload", "trigger", "sensor", "event"];

/// The root that names the current element inside `any_item` / `all_item`.
pub(super) const ITEM_ROOT: &str = "item";

/// A compiled field path.
#[derive(Debug, Clone)]
pub(super) struct Path {
    root: Root,
    rest: Box<[Segment]>,
}

#[derive(Debug, Clone)]
enum Root {
    /// A top-level key of the evaluation context (`payload`, `trigger`, ...).
    Context(Box<str>),
    /// The array element an `any_item` / `all_item` condition is looking at.
    Item,
}

#[derive(Debug, Clone, PartialEq)]
struct Segment {
    key: Box<str>,
    /// Set for unquoted numeric segments: they index arrays.
    index: Option<usize>,
}

impl Segment {
    fn step<'a>(&self, value: &'a Value) -> Option<&'a Value> {
        match value {
            Value::Object(map) => map.get(&*self.key),
            Value::Array(items) => items.get(self.index?),
            _ => None,
        }
    }
}

impl Path {
    /// Parses `field`. `in_item` allows the `item` root (inside `any_item` / `all_item`).
    /// The error is a sentence for [`super::ConditionError::message`].
    pub(super) fn parse(field: &str, in_item: bool) -> Result<Self, String> {
        let (first, mut rest) = take_name(field, field)?;
        let root = if first == ITEM_ROOT && in_item {
            Root::Item
        } else if CONTEXT_ROOTS.contains(&first) {
            Root::Context(first.into())
        } else {
            let item = if in_item {
                ", or item (the current element)"
            } else {
                ""
            };
            return Err(format!(
                "malformed path '{field}': unknown root '{first}' (a path starts with payload, \
                 trigger, sensor or event{item})"
            ));
        };
        let mut segments = Vec::new();
        while let Some(c) = rest.chars().next() {
            match c {
                '.' => {
                    let (name, after) = take_name(field, &rest[1..])?;
                    segments.push(Segment {
                        key: name.into(),
                        index: canonical_index(name),
                    });
                    rest = after;
                }
                '[' => {
                    let (segment, after) = take_bracket(field, rest)?;
                    segments.push(segment);
                    rest = after;
                }
                other => {
                    return Err(format!(
                        "malformed path '{field}': unexpected '{other}' at offset {}",
                        offset(field, rest)
                    ));
                }
            }
        }
        Ok(Self {
            root,
            rest: segments.into_boxed_slice(),
        })
    }

    /// The value at this path, or `None` when it is missing. `item` is the current array
    /// element inside `any_item` / `all_item`.
    #[inline]
    pub(super) fn resolve<'a>(
        &self,
        context: &'a Value,
        item: Option<&'a Value>,
    ) -> Option<&'a Value> {
        let start = match &self.root {
            Root::Context(key) => context.get(&**key)?,
            Root::Item => item?,
        };
        self.rest
            .iter()
            .try_fold(start, |current, segment| segment.step(current))
    }
}

fn offset(field: &str, rest: &str) -> usize {
    field.len() - rest.len()
}

/// Splits a bare name off the front of `rest`.
fn take_name<'a>(field: &str, rest: &'a str) -> Result<(&'a str, &'a str), String> {
    let end = rest.find(['.', '[', ']']).unwrap_or(rest.len());
    if end == 0 {
        let what = if field.is_empty() {
            "the path is empty".to_owned()
        } else {
            format!("empty segment at offset {}", offset(field, rest))
        };
        return Err(format!("malformed path '{field}': {what}"));
    }
    Ok((&rest[..end], &rest[end..]))
}

/// Parses `[...]` at the front of `rest` (which starts with `[`).
fn take_bracket<'a>(field: &str, rest: &'a str) -> Result<(Segment, &'a str), String> {
    let bad = |what: &str, at: &str| {
        format!(
            "malformed path '{field}': {what} at offset {}",
            offset(field, at)
        )
    };
    let inner = &rest[1..];
    let mut chars = inner.char_indices();
    match chars.next() {
        Some((_, quote @ ('"' | '\''))) => {
            let mut key = String::new();
            let mut escaped = false;
            for (i, c) in chars {
                if escaped {
                    key.push(c);
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == quote {
                    let after = &inner[i + c.len_utf8()..];
                    let Some(after) = after.strip_prefix(']') else {
                        return Err(bad("expected ']' after the quoted key", after));
                    };
                    return Ok((
                        Segment {
                            key: key.into(),
                            index: None,
                        },
                        after,
                    ));
                } else {
                    key.push(c);
                }
            }
            Err(bad("unterminated quoted key", rest))
        }
        Some((_, c)) if c.is_ascii_digit() => {
            let end = inner
                .find(']')
                .ok_or_else(|| bad("unterminated '['", rest))?;
            let digits = &inner[..end];
            let index = canonical_index(digits)
                .ok_or_else(|| bad("a bracket holds a quoted key or an array index", rest))?;
            Ok((
                Segment {
                    key: digits.into(),
                    index: Some(index),
                },
                &inner[end + 1..],
            ))
        }
        _ => Err(bad("a bracket holds a quoted key or an array index", rest)),
    }
}

/// `Some(n)` for `0`, `1`, `42`... but not `01` or `+1`, which stay plain keys.
fn canonical_index(name: &str) -> Option<usize> {
    let canonical =
        name.bytes().all(|b| b.is_ascii_digit()) && (name == "0" || !name.starts_with('0'));
    if canonical { name.parse().ok() } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn keys(path: &Path) -> Vec<(&str, Option<usize>)> {
        path.rest.iter().map(|s| (&*s.key, s.index)).collect()
    }

    #[test]
    fn splits_dots_brackets_and_indices() {
        let path = Path::parse(r#"payload["a.b"].c[0].d.01['x\'y']"#, false).expect("valid");
        assert_eq!(
            keys(&path),
            vec![
                ("a.b", None),
                ("c", None),
                ("0", Some(0)),
                ("d", None),
                ("01", None),
                ("x'y", None)
            ]
        );
    }

    #[test]
    fn resolves_through_objects_and_arrays() {
        let ctx = json!({"payload": {"a.b": {"c": [10, {"d": true}]}, "o": {"0": "zero"}}});
        let at = |p: &str| {
            Path::parse(p, false)
                .expect("valid")
                .resolve(&ctx, None)
                .cloned()
        };
        assert_eq!(at(r#"payload["a.b"].c.1.d"#), Some(json!(true)));
        assert_eq!(at("payload.o.0"), Some(json!("zero")));
        assert_eq!(at("payload.a"), None);
        assert_eq!(at(r#"payload["a.b"].c.7"#), None);
        assert_eq!(at(r#"payload["a.b"].c.0.x"#), None);
    }

    #[test]
    fn refuses_malformed_paths() {
        for bad in [
            "",
            "payload.",
            ".payload",
            "payload..a",
            "payload[",
            "payload[\"a",
            "payload[\"a\"",
            "payload[\"a\"]x",
            "payload[a]",
            "payload[-1]",
            "payload]",
            "payload.[0]",
            "paylaod.x",
            "item.x",
        ] {
            assert!(
                Path::parse(bad, false).is_err(),
                "{bad:?} should be refused"
            );
        }
        assert!(Path::parse("item.x", true).is_ok());
    }
}
