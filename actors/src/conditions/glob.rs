//! The `wildcard` operator's patterns: `*` any run of characters, `?` one character, `\`
//! escapes the next character; the whole string must match.
//!
//! A glob is compiled to an anchored regex, which decides any input in linear time and
//! folds case for `ignore_case`. A short case-sensitive ASCII glob is also split into its
//! segments between stars, which decide a short ASCII string without the regex engine's
//! fixed cost per search (the `single/wildcard` benchmark's glob, `refs/*/ma?n`, spends
//! most of its time there). Both give the same verdict; a property test checks.

use regex::Regex;

/// Longest glob, in bytes, that also gets segments: a string is searched once per segment,
/// so this bounds the work of the fast path on any input.
const FAST_GLOB_BYTES: usize = 64;
/// Longest string, in bytes, that the segments decide; longer ones go to the regex.
const FAST_TEXT_BYTES: usize = 4096;

/// A compiled `wildcard` pattern.
#[derive(Debug, Clone)]
pub(super) struct Glob {
    /// Decides whatever [`Glob::decide_quickly`] does not.
    pub(super) regex: Regex,
    segments: Option<Segments>,
}

impl Glob {
    /// `regex` is the glob's anchored regex (`glob_to_regex`), built with `ignore_case`.
    pub(super) fn new(glob: &str, regex: Regex, ignore_case: bool) -> Self {
        let segments = (!ignore_case && glob.len() <= FAST_GLOB_BYTES)
            .then(|| Segments::of(glob))
            .flatten();
        Self { regex, segments }
    }

    /// The verdict on `text` when the segments can give it (`None`: ask `regex`).
    pub(super) fn decide_quickly(&self, text: &str) -> Option<bool> {
        let segments = self.segments.as_ref()?;
        (text.len() <= FAST_TEXT_BYTES && text.is_ascii()).then(|| segments.fit(text.as_bytes()))
    }

    #[cfg(test)]
    fn is_match(&self, text: &str) -> bool {
        self.decide_quickly(text)
            .unwrap_or_else(|| self.regex.is_match(text))
    }
}

/// The glob's parts between stars; in a part, `None` is a `?`. A glob without a star has
/// one part, the whole string; one that starts or ends with a star has an empty first or
/// last part.
#[derive(Debug, Clone)]
struct Segments {
    parts: Box<[Box<[Option<u8>]>]>,
}

impl Segments {
    /// `None` when the glob is not ASCII (a `?` would then be one character of several
    /// bytes) or ends in a lone `\` (which the regex refuses first).
    fn of(glob: &str) -> Option<Self> {
        if !glob.is_ascii() {
            return None;
        }
        let mut parts = Vec::new();
        let mut part = Vec::new();
        let mut bytes = glob.bytes();
        while let Some(byte) = bytes.next() {
            match byte {
                b'*' => parts.push(std::mem::take(&mut part).into_boxed_slice()),
                b'?' => part.push(None),
                b'\\' => part.push(Some(bytes.next()?)),
                literal => part.push(Some(literal)),
            }
        }
        parts.push(part.into_boxed_slice());
        Some(Self {
            parts: parts.into_boxed_slice(),
        })
    }

    /// Whether `text` matches: the first part at its start, the last at its end, and each
    /// part between at its leftmost place after the one before (any later place would
    /// only leave less room for the rest).
    fn fit(&self, text: &[u8]) -> bool {
        let Some((first, rest)) = self.parts.split_first() else {
            return text.is_empty();
        };
        let Some((last, middle)) = rest.split_last() else {
            return text.len() == first.len() && fits(first, text);
        };
        let Some(end) = text.len().checked_sub(first.len() + last.len()) else {
            return false;
        };
        let end = end + first.len();
        if !fits(first, &text[..first.len()]) || !fits(last, &text[end..]) {
            return false;
        }
        let mut from = first.len();
        for part in middle {
            match find(part, &text[from..end]) {
                Some(at) => from += at + part.len(),
                None => return false,
            }
        }
        true
    }
}

/// Whether `part` matches `window`, of the same length.
fn fits(part: &[Option<u8>], window: &[u8]) -> bool {
    part.iter()
        .zip(window)
        .all(|(unit, byte)| unit.is_none_or(|wanted| wanted == *byte))
}

/// Where `part` first fits in `haystack`.
fn find(part: &[Option<u8>], haystack: &[u8]) -> Option<usize> {
    let last_start = haystack.len().checked_sub(part.len())?;
    (0..=last_start).find(|&start| fits(part, &haystack[start..start + part.len()]))
}

/// Translates a glob (`*` any run of characters, `?` one character, `\` escapes the next
/// character) into an anchored regex.
pub(super) fn glob_to_regex(glob: &str) -> Result<String, String> {
    let mut out = String::with_capacity(glob.len() + 8);
    out.push_str("^(?s:");
    let mut chars = glob.chars();
    let mut buf = [0u8; 4];
    let mut after_star = false;
    while let Some(c) = chars.next() {
        // A run of stars means the same as one; collapsing keeps the regex small.
        let star = c == '*';
        match c {
            '*' if after_star => {}
            '*' => out.push_str(".*"),
            '?' => out.push('.'),
            '\\' => {
                let escaped = chars
                    .next()
                    .ok_or_else(|| "invalid glob: it ends with a lone '\\'".to_owned())?;
                out.push_str(&regex::escape(escaped.encode_utf8(&mut buf)));
            }
            other => out.push_str(&regex::escape(other.encode_utf8(&mut buf))),
        }
        after_star = star;
    }
    out.push_str(")$");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn glob(pattern: &str) -> Glob {
        let regex = Regex::new(&glob_to_regex(pattern).expect("glob")).expect("regex");
        Glob::new(pattern, regex, false)
    }

    #[test]
    fn segments_decide_as_globs_do() {
        let cases = [
            ("refs/*/ma?n", "refs/heads/main", true),
            ("refs/*/ma?n", "refs/heads/man", false),
            ("*", "", true),
            ("", "", true),
            ("", "a", false),
            ("a*", "a", true),
            ("*a", "ba", true),
            ("*a", "ab", false),
            ("a*b*c", "abc", true),
            ("a*b*c", "acb", false),
            ("a**c", "ac", true),
            ("ab*ba", "aba", false),
            ("\\*x", "*x", true),
            ("\\*x", "ax", false),
            ("a?", "a\n", true),
        ];
        for (pattern, text, expected) in cases {
            let glob = glob(pattern);
            assert!(glob.segments.is_some(), "{pattern} has segments");
            assert_eq!(glob.is_match(text), expected, "{pattern} on {text:?}");
        }
    }

    #[test]
    fn non_ascii_or_long_input_goes_to_the_regex() {
        assert!(glob("caf?").is_match("café"));
        assert!(glob("é*").segments.is_none());
        let long = format!("a{}b", "x".repeat(FAST_TEXT_BYTES));
        assert!(glob("a*b").is_match(&long));
        assert!(glob(&"?".repeat(FAST_GLOB_BYTES + 1)).segments.is_none());
    }

    proptest! {
        #[test]
        fn segments_agree_with_the_regex(
            pattern in "[ab*?/]{0,8}|[ab*?/\\\\]{0,6}[ab*?]",
            text in "[ab/*?\\n]{0,12}",
        ) {
            let glob = glob(&pattern);
            prop_assert_eq!(
                glob.is_match(&text),
                glob.regex.is_match(&text),
                "{} on {:?}", pattern, text
            );
        }
    }
}
