//! Subjects: topic names as `.`-separated tokens, and the `*` / `>` patterns that match
//! them (the NATS syntax).
//!
//! A topic name is a *subject*: one or more non-empty tokens separated by `.`
//! (`orders.eu.created`). A [`Pattern`] is a subject in which a token may be a wildcard:
//! `*` matches exactly one token, `>` (only as the last token) matches one or more trailing
//! tokens. A wildcard is a whole token: `a*` or `>x` are ordinary tokens that match only
//! themselves, as in NATS.
//!
//! A name that is published to must be a plain subject: no `*` or `>` token, no empty
//! token (`a..b`, a leading or trailing `.`) and no whitespace. The check runs where a
//! resolver first meets a name (its cache's miss path), never per message.

use std::fmt;

/// Why a name is not a valid subject or pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubjectError {
    /// A name published to (or subscribed to as a plain topic) has a `*` or `>` token:
    /// only a pattern subscription ([`Bus::subscribe_pattern`](crate::Bus::subscribe_pattern))
    /// takes wildcards.
    Wildcard,
    /// An empty token: `a..b`, or a leading or trailing `.` (or an empty pattern).
    EmptyToken,
    /// A whitespace character (space, tab, newline, any Unicode whitespace).
    Whitespace,
    /// A pattern whose `>` token is not its last.
    FullWildcardNotLast,
    /// A control character (NUL and the other C0/C1 controls that are not whitespace). A
    /// persistent bus's records mark a partition's topic with a NUL and its number after
    /// the name, so a plain name must never contain one.
    Control,
}

impl fmt::Display for SubjectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Wildcard => {
                "a `*` or `>` token: wildcards are for pattern subscriptions (`subscribe_pattern`)"
            }
            Self::EmptyToken => "an empty token (`..`, or a leading or trailing `.`)",
            Self::Whitespace => "whitespace",
            Self::FullWildcardNotLast => "`>` is allowed only as the last token",
            Self::Control => "a control character (such as NUL)",
        })
    }
}

impl std::error::Error for SubjectError {}

/// Checks that `name` is a plain subject: non-empty tokens, no wildcard token, no
/// whitespace. (Its length is checked by the router.)
pub(crate) fn check_name(name: &str) -> Result<(), SubjectError> {
    for token in name.split('.') {
        check_token(token)?;
        if token == "*" || token == ">" {
            return Err(SubjectError::Wildcard);
        }
    }
    Ok(())
}

fn check_token(token: &str) -> Result<(), SubjectError> {
    if token.is_empty() {
        return Err(SubjectError::EmptyToken);
    }
    if token.chars().any(char::is_whitespace) {
        return Err(SubjectError::Whitespace);
    }
    if token.chars().any(char::is_control) {
        return Err(SubjectError::Control);
    }
    Ok(())
}

/// The typed error for a topic name that does not resolve: [`Error::InvalidSubject`] when
/// its length is fine but it is not a plain subject, else [`Error::InvalidTopic`].
///
/// [`Error::InvalidSubject`]: crate::Error::InvalidSubject
/// [`Error::InvalidTopic`]: crate::Error::InvalidTopic
pub(crate) fn name_error(name: &str) -> crate::Error {
    let len = name.len();
    if (1..=crate::MAX_TOPIC_LEN).contains(&len) {
        if let Err(reason) = check_name(name) {
            return crate::Error::InvalidSubject {
                name: name.to_owned(),
                reason,
            };
        }
    }
    crate::Error::InvalidTopic {
        len,
        max: crate::MAX_TOPIC_LEN,
    }
}

/// Resolves a name for a subscription or a `Topic` handle: its id, interning it the first
/// time, or the typed error ([`name_error`]).
pub(crate) fn resolve(
    topics: &crate::intern::Topics,
    name: &str,
) -> Result<crate::intern::TopicId, crate::Error> {
    topics
        .router
        .key(name)
        .and_then(|key| topics.resolve(&key))
        .ok_or_else(|| name_error(name))
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(Box<str>),
    /// `*`: exactly one token.
    One,
    /// `>`: one or more trailing tokens.
    Rest,
}

/// A subject pattern in NATS syntax: `.`-separated tokens where `*` matches exactly one
/// token and a final `>` matches one or more trailing tokens.
///
/// ```
/// use shardbus::Pattern;
/// let p = Pattern::parse("orders.*.created")?;
/// assert!(p.matches("orders.eu.created"));
/// assert!(!p.matches("orders.eu.west.created"));
/// let all = Pattern::parse("orders.>")?;
/// assert!(all.matches("orders.eu.created"));
/// assert!(!all.matches("orders")); // `>` needs at least one token
/// assert!(Pattern::parse("orders.>.created").is_err());
/// # Ok::<(), shardbus::SubjectError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Pattern {
    text: Box<str>,
    tokens: Box<[Token]>,
}

impl Pattern {
    /// Parses a pattern: non-empty tokens without whitespace, `>` only last.
    pub fn parse(pattern: &str) -> Result<Self, SubjectError> {
        let mut tokens = Vec::new();
        let mut parts = pattern.split('.').peekable();
        while let Some(token) = parts.next() {
            check_token(token)?;
            tokens.push(match token {
                "*" => Token::One,
                ">" if parts.peek().is_some() => return Err(SubjectError::FullWildcardNotLast),
                ">" => Token::Rest,
                _ => Token::Literal(token.into()),
            });
        }
        Ok(Self {
            text: pattern.into(),
            tokens: tokens.into_boxed_slice(),
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the pattern has a wildcard token (a pattern without one matches exactly
    /// the subject it spells).
    pub fn has_wildcards(&self) -> bool {
        self.tokens.iter().any(|t| !matches!(t, Token::Literal(_)))
    }

    /// Whether `subject` matches. One pass over both token lists, no allocation.
    pub fn matches(&self, subject: &str) -> bool {
        let mut names = subject.split('.');
        for token in self.tokens.iter() {
            match token {
                Token::Rest => return names.next().is_some(),
                Token::One => {
                    if names.next().is_none() {
                        return false;
                    }
                }
                Token::Literal(lit) => {
                    if names.next() != Some(&**lit) {
                        return false;
                    }
                }
            }
        }
        names.next().is_none()
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Pattern").field(&self.as_str()).finish()
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_are_refused() {
        for name in ["a\0b", "orders\0p1", "x\u{1}", "x\u{7f}"] {
            assert_eq!(
                super::check_name(name),
                Err(super::SubjectError::Control),
                "{name:?}"
            );
        }
        assert!(super::check_name("orders.eu-1_x").is_ok());
    }

    use super::*;

    #[test]
    fn publish_names() {
        for ok in ["a", "orders.eu.created", "a*", ">x", "é.ü", "a-b_c"] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("a.*", SubjectError::Wildcard),
            (">", SubjectError::Wildcard),
            ("a.>.b", SubjectError::Wildcard),
            ("a..b", SubjectError::EmptyToken),
            (".a", SubjectError::EmptyToken),
            ("a.", SubjectError::EmptyToken),
            ("a b", SubjectError::Whitespace),
            ("a.\tb", SubjectError::Whitespace),
            ("a\u{a0}b", SubjectError::Whitespace),
        ] {
            assert_eq!(check_name(bad), Err(why), "{bad:?}");
        }
    }

    #[test]
    fn patterns() {
        let p = |s| Pattern::parse(s).unwrap();
        assert!(p("a.*").matches("a.b"));
        assert!(!p("a.*").matches("a"));
        assert!(!p("a.*").matches("a.b.c"));
        assert!(p("a.>").matches("a.b.c"));
        assert!(!p("a.>").matches("a"));
        assert!(p(">").matches("a"));
        assert!(p("*.*").matches("x.y"));
        assert!(p("a").matches("a"));
        assert!(!p("a").has_wildcards());
        assert!(p("*").has_wildcards());
        assert!(!p("a*").matches("ab"));
        assert!(p("a*").matches("a*"));
        assert_eq!(
            Pattern::parse("a.>.b"),
            Err(SubjectError::FullWildcardNotLast)
        );
        assert_eq!(Pattern::parse(""), Err(SubjectError::EmptyToken));
        assert_eq!(Pattern::parse("a..*"), Err(SubjectError::EmptyToken));
        assert_eq!(Pattern::parse("a *"), Err(SubjectError::Whitespace));
    }
}
