//! NATS subject checks: a literal subject to publish to, and a filter (wildcards allowed)
//! to subscribe with.

use crate::BridgeError;

/// Checks a subject to publish to: non-empty dot-separated tokens, no whitespace, no
/// wildcard tokens. Returns what is wrong.
pub(crate) fn check_literal(subject: &str) -> Result<(), &'static str> {
    check(subject, false)
}

/// Checks a subscription filter: as [`check_literal`], but `*` may be a whole token and
/// `>` the whole last token.
pub(crate) fn check_filter(subject: &str) -> Result<(), &'static str> {
    check(subject, true)
}

fn check(subject: &str, wildcards: bool) -> Result<(), &'static str> {
    if subject.is_empty() {
        return Err("empty subject");
    }
    if subject.chars().any(char::is_whitespace) {
        return Err("contains whitespace");
    }
    let mut tokens = subject.split('.').peekable();
    while let Some(token) = tokens.next() {
        if token.is_empty() {
            return Err("empty token");
        }
        let last = tokens.peek().is_none();
        match token {
            "*" if wildcards => {}
            ">" if wildcards && last => {}
            ">" if wildcards => return Err("`>` must be the last token"),
            _ if token.contains(['*', '>']) => {
                return Err(if wildcards {
                    "a wildcard must be a whole token"
                } else {
                    "wildcards are only allowed in subscriptions"
                })
            }
            _ => {}
        }
    }
    Ok(())
}

/// [`check_literal`] as a [`BridgeError`].
pub(crate) fn literal(subject: &str) -> Result<(), BridgeError> {
    check_literal(subject).map_err(|reason| BridgeError::InvalidSubject {
        subject: subject.to_owned(),
        reason,
    })
}

/// [`check_filter`] as a [`BridgeError`].
pub(crate) fn filter(subject: &str) -> Result<(), BridgeError> {
    check_filter(subject).map_err(|reason| BridgeError::InvalidSubject {
        subject: subject.to_owned(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_subjects() {
        assert_eq!(check_literal("orders.eu.1"), Ok(()));
        assert_eq!(check_literal(""), Err("empty subject"));
        assert_eq!(check_literal("orders..1"), Err("empty token"));
        assert_eq!(check_literal("orders."), Err("empty token"));
        assert_eq!(check_literal("or ders"), Err("contains whitespace"));
        assert_eq!(
            check_literal("orders.*"),
            Err("wildcards are only allowed in subscriptions")
        );
        assert_eq!(
            check_literal("orders.>"),
            Err("wildcards are only allowed in subscriptions")
        );
    }

    #[test]
    fn filters() {
        assert_eq!(check_filter("orders.*.x"), Ok(()));
        assert_eq!(check_filter("orders.>"), Ok(()));
        assert_eq!(
            check_filter("orders.>.x"),
            Err("`>` must be the last token")
        );
        assert_eq!(
            check_filter("orders.a*"),
            Err("a wildcard must be a whole token")
        );
    }
}
