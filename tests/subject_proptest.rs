//! The subject pattern matcher against a naive reference: a recursive match over token
//! lists, written straight from the NATS rules (`*` exactly one token, a final `>` one or
//! more). Subjects and patterns are drawn from a small alphabet of tokens so that matches
//! and near misses are both common.

use proptest::prelude::*;
use shardbus::{Pattern, SubjectError};

/// The reference: `*` takes one token, `>` (last) takes at least one, a literal takes
/// its equal.
fn naive(pattern: &[&str], subject: &[&str]) -> bool {
    match (pattern.split_first(), subject.split_first()) {
        (None, None) => true,
        (Some((&">", rest)), Some(_)) => rest.is_empty(),
        (Some((&"*", p)), Some((_, s))) => naive(p, s),
        (Some((lit, p)), Some((tok, s))) => lit == tok && naive(p, s),
        _ => false,
    }
}

fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_owned()),
        Just("b".to_owned()),
        Just("ab".to_owned()),
        Just("a*".to_owned()),
        Just(">x".to_owned()),
        "[a-c]{1,3}",
    ]
}

fn pattern_token() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => token(),
        1 => Just("*".to_owned()),
        1 => Just(">".to_owned()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn the_matcher_agrees_with_the_reference(
        subject in prop::collection::vec(token(), 1..6),
        pattern in prop::collection::vec(pattern_token(), 1..6),
    ) {
        let subject_text = subject.join(".");
        let pattern_text = pattern.join(".");
        let p: Vec<&str> = pattern.iter().map(String::as_str).collect();
        let s: Vec<&str> = subject.iter().map(String::as_str).collect();
        match Pattern::parse(&pattern_text) {
            Ok(parsed) => {
                prop_assert!(!p[..p.len() - 1].contains(&">"));
                prop_assert_eq!(parsed.matches(&subject_text), naive(&p, &s));
                prop_assert_eq!(parsed.as_str(), pattern_text.as_str());
            }
            Err(e) => {
                // Only a `>` before the last token is refused from this alphabet.
                prop_assert_eq!(e, SubjectError::FullWildcardNotLast);
                prop_assert!(p[..p.len() - 1].contains(&">"));
            }
        }
    }

    /// A pattern without wildcards matches exactly the subject it spells.
    #[test]
    fn a_literal_pattern_is_equality(
        a in prop::collection::vec(token(), 1..5),
        b in prop::collection::vec(token(), 1..5),
    ) {
        let (a, b) = (a.join("."), b.join("."));
        let p = Pattern::parse(&a).unwrap();
        prop_assert!(!p.has_wildcards());
        prop_assert_eq!(p.matches(&b), a == b);
    }
}
