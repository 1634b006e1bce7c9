//! Topics (`a/b/c`) and patterns with `*` (exactly one level) and `**` (any number of levels,
//! zero included).

use crate::error::{Error, Result};

/// Longest topic or pattern, in bytes (it travels in every message header).
pub const TOPIC_MAX: usize = 255;

/// Topics under this prefix carry the bus's own traffic (replies); `**` does not match them.
pub(crate) const RESERVED_PREFIX: &str = "_ipckit/";

fn bad(what: &str, reason: &'static str) -> Error {
    Error::InvalidName {
        name: what.to_owned(),
        reason,
    }
}

/// Checks a topic: 1 to 255 bytes, levels separated by `/`, no empty level, no `*`, no NUL.
pub fn validate_topic(topic: &str) -> Result<()> {
    check_common(topic)?;
    if topic.contains('*') {
        return Err(bad(
            topic,
            "a topic cannot contain '*' (wildcards are for subscriptions), e.g. \"sensors/temp\"",
        ));
    }
    Ok(())
}

fn check_common(text: &str) -> Result<()> {
    if text.is_empty() {
        return Err(bad(
            text,
            "a topic needs at least one character, e.g. \"sensors/temp\"",
        ));
    }
    if text.len() > TOPIC_MAX {
        return Err(bad(text, "longer than 255 bytes"));
    }
    if text.contains('\0') {
        return Err(bad(text, "contains a NUL byte"));
    }
    if text.split('/').any(str::is_empty) {
        return Err(bad(
            text,
            "has an empty level (a leading, trailing or double '/'), e.g. \"sensors/temp\"",
        ));
    }
    Ok(())
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Level {
    Literal(String),
    /// `*`: exactly one level.
    One,
    /// `**`: zero or more levels.
    Any,
}

/// A parsed subscription pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    levels: Vec<Level>,
}

impl Pattern {
    /// Parses `a/*/c`, `a/**`, `**`, or a plain topic. `*` and `**` must be whole levels.
    pub fn parse(text: &str) -> Result<Pattern> {
        check_common(text)?;
        let levels = text
            .split('/')
            .map(|l| match l {
                "*" => Ok(Level::One),
                "**" => Ok(Level::Any),
                l if l.contains('*') => Err(bad(
                    text,
                    "'*' and '**' must be whole levels, e.g. \"sensors/*/temp\" or \"sensors/**\"",
                )),
                l => Ok(Level::Literal(l.to_owned())),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Pattern {
            text: text.to_owned(),
            levels,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `topic` matches. Reserved topics (`_ipckit/…`) match only a pattern that
    /// names that first level literally.
    pub fn matches(&self, topic: &str) -> bool {
        if topic.starts_with(RESERVED_PREFIX)
            && !matches!(self.levels.first(), Some(Level::Literal(l)) if l == "_ipckit")
        {
            return false;
        }
        match_levels(&self.levels, topic.split('/'))
    }
}

/// Matches the remaining pattern levels against the remaining topic levels. Walks the
/// topic's `split` iterator (cloned at a `**`, which costs a pointer pair): no allocation
/// per message.
fn match_levels(pat: &[Level], mut topic: std::str::Split<'_, char>) -> bool {
    match pat.split_first() {
        None => topic.next().is_none(),
        Some((Level::Any, rest)) => loop {
            if match_levels(rest, topic.clone()) {
                return true;
            }
            if topic.next().is_none() {
                return false;
            }
        },
        Some((Level::One, rest)) => topic.next().is_some() && match_levels(rest, topic),
        Some((Level::Literal(l), rest)) => {
            topic.next().is_some_and(|t| t == l) && match_levels(rest, topic)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, t: &str) -> bool {
        Pattern::parse(p).unwrap().matches(t)
    }

    #[test]
    fn wildcards() {
        assert!(m("a/b/c", "a/b/c"));
        assert!(!m("a/b/c", "a/b"));
        assert!(m("a/*/c", "a/x/c"));
        assert!(!m("a/*/c", "a/x/y/c"));
        assert!(!m("a/*", "a"));
        assert!(m("a/**", "a"));
        assert!(m("a/**", "a/b/c/d"));
        assert!(m("**", "x"));
        assert!(m("a/**/z", "a/z"));
        assert!(m("a/**/z", "a/b/c/z"));
        assert!(!m("a/**/z", "a/b/c/y"));
        assert!(m("*/b/**", "q/b"));
        assert!(!m("**", "_ipckit/reply/1"));
        assert!(m("_ipckit/reply/1", "_ipckit/reply/1"));
        assert!(m("a/**/**/z", "a/z"));
        assert!(m("**/z", "a/b/z"));
        assert!(!m("**/z", "a/b/z/q"));
        assert!(m("a/*/**", "a/b"));
        assert!(!m("a/*/**", "a"));
    }

    proptest::proptest! {
        /// The matcher agrees with a plain reference implementation on short random
        /// topics and patterns.
        #[test]
        fn agrees_with_a_reference(
            pat in proptest::collection::vec(proptest::sample::select(vec!["a", "b", "*", "**"]), 1..5),
            topic in proptest::collection::vec(proptest::sample::select(vec!["a", "b", "c"]), 1..6),
        ) {
            fn reference(p: &[&str], t: &[&str]) -> bool {
                match p.split_first() {
                    None => t.is_empty(),
                    Some((&"**", rest)) => (0..=t.len()).any(|k| reference(rest, &t[k..])),
                    Some((&"*", rest)) => !t.is_empty() && reference(rest, &t[1..]),
                    Some((l, rest)) => t.first() == Some(l) && reference(rest, &t[1..]),
                }
            }
            let parsed = Pattern::parse(&pat.join("/")).unwrap();
            proptest::prop_assert_eq!(parsed.matches(&topic.join("/")), reference(&pat, &topic));
        }
    }

    #[test]
    fn bad_topics_and_patterns() {
        for t in ["", "/a", "a/", "a//b", "a/*", "a\0b"] {
            assert!(validate_topic(t).is_err(), "{t:?}");
        }
        assert!(validate_topic(&"x".repeat(256)).is_err());
        for p in ["a*/b", "a/b**", "", "a//b"] {
            assert!(Pattern::parse(p).is_err(), "{p:?}");
        }
    }
}
