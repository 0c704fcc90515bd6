//! Property tests: each ring against a `VecDeque` model, from start positions near
//! `u64::MAX` so that runs cross the wrap of the position counters.

use std::collections::VecDeque;

use proptest::prelude::*;

use super::{mpsc, spsc, PushError};

#[derive(Debug, Clone)]
enum Op {
    Push,
    PushN(usize),
    Pop(usize),
    Close,
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            4 => Just(Op::Push),
            2 => (1usize..6).prop_map(Op::PushN),
            4 => (1usize..6).prop_map(Op::Pop),
            1 => Just(Op::Close),
        ],
        1..200,
    )
}

/// Start positions: even, and within a few laps of the wrap.
fn start() -> impl Strategy<Value = u64> {
    (0u64..64).prop_map(|back| u64::MAX - 1 - 2 * back)
}

proptest! {
    #[test]
    fn spsc_matches_model(cap_log in 1u32..4, start in start(), ops in ops()) {
        let cap = 1usize << cap_log;
        let (mut p, mut c) = spsc::channel::<u64>(cap, start);
        let mut model: VecDeque<u64> = VecDeque::new();
        let mut closed = false;
        let mut next = 0u64;
        for op in ops {
            match op {
                Op::Push => {
                    next += 1;
                    match p.push(next) {
                        Ok(()) => { prop_assert!(!closed && model.len() < cap); model.push_back(next); }
                        Err(PushError::Full(v)) => { prop_assert_eq!(v, next); prop_assert!(!closed && model.len() == cap); }
                        Err(PushError::Closed(v)) => { prop_assert_eq!(v, next); prop_assert!(closed); }
                    }
                }
                Op::PushN(n) => match p.free_slots() {
                    Ok(free) => {
                        // A lower bound (the cached `head` may lag), exact when zero;
                        // a close is noticed lazily, by the push itself.
                        prop_assert!(closed || free <= cap - model.len());
                        prop_assert!(closed || free > 0 || model.len() == cap);
                        let n = n.min(free);
                        let values: Vec<u64> = (0..n as u64).map(|i| next + 1 + i).collect();
                        next += n as u64;
                        match p.push_n(n, values.iter().copied()) {
                            Ok(()) => {
                                prop_assert!(!closed);
                                model.extend(values);
                            }
                            Err(back) => {
                                prop_assert!(closed);
                                prop_assert_eq!(back, values);
                            }
                        }
                    }
                    Err(()) => prop_assert!(closed),
                },
                Op::Pop(k) => {
                    let mut got = Vec::new();
                    c.pop_batch(k, |v| got.push(v));
                    let want: Vec<u64> = (0..k.min(model.len())).filter_map(|_| model.pop_front()).collect();
                    prop_assert_eq!(got, want);
                }
                Op::Close => { c.close(); closed = true; }
            }
        }
        let mut rest = Vec::new();
        while c.pop_batch(usize::MAX, |v| rest.push(v)) > 0 {}
        prop_assert_eq!(rest, model.into_iter().collect::<Vec<_>>());
    }

    #[test]
    fn mpsc_matches_model(cap_log in 1u32..4, start in start(), ops in ops()) {
        let cap = 1usize << cap_log;
        let ring = mpsc::Ring::<u64>::new(cap, start);
        let mut c = mpsc::Consumer::new(&ring);
        let mut model: VecDeque<u64> = VecDeque::new();
        let mut closed = false;
        let mut next = 0u64;
        for op in ops {
            match op {
                Op::Push | Op::PushN(_) => {
                    next += 1;
                    match ring.push(next) {
                        Ok(()) => { prop_assert!(!closed && model.len() < cap); model.push_back(next); }
                        Err(PushError::Full(v)) => { prop_assert_eq!(v, next); prop_assert!(!closed && model.len() == cap); }
                        Err(PushError::Closed(v)) => { prop_assert_eq!(v, next); prop_assert!(closed); }
                    }
                }
                Op::Pop(k) => {
                    let mut got = Vec::new();
                    c.pop_batch(&ring, k, |v| got.push(v));
                    let want: Vec<u64> = (0..k.min(model.len())).filter_map(|_| model.pop_front()).collect();
                    prop_assert_eq!(got, want);
                }
                Op::Close => { c.close(&ring); closed = true; }
            }
        }
        let mut rest = Vec::new();
        while c.pop_batch(&ring, usize::MAX, |v| rest.push(v)) > 0 {}
        prop_assert_eq!(rest, model.into_iter().collect::<Vec<_>>());
    }
}
