//! Unit tests of the write-ahead bookkeeping beside it: safe points, batch tickets and
//! the order of a logged pass.

use std::io;

use super::*;
use crate::log::{LogConfig, SimStorage};
use crate::route::Router;
use crate::sync::plain::Arc;

fn wal(fsync: FsyncPolicy) -> (Wal<String>, SimStorage) {
    wal_with(fsync, CodecFns::of())
}

fn wal_with(fsync: FsyncPolicy, codec: CodecFns<String>) -> (Wal<String>, SimStorage) {
    let sim = SimStorage::new();
    let config = LogConfig {
        fsync,
        ..LogConfig::default()
    };
    let (log, _) = ShardLog::open(Arc::new(sim.clone()), "/shard-000", config).unwrap();
    let config = WalConfig {
        checkpoint_records: u64::MAX,
        checkpoint_interval: Duration::from_secs(3600),
        retention: RetentionLimit::default(),
    };
    (
        Wal::new(
            log,
            codec,
            config,
            Arc::new(crate::log::DirLock::unlocked()),
            0,
        ),
        sim,
    )
}

/// One step of a safe-point scenario.
enum Step {
    /// Every record up to this one is handled.
    Handled(u64),
    /// A candidate safe point: the outgoing lanes' tails, and the local messages queued.
    Point(&'static [u64], u64),
    /// This many more local messages are logged.
    Logged(u64),
    /// The receiving shards have made each lane durable up to these positions; `safe`
    /// must then be this.
    Advance(&'static [u64], Option<u64>),
}

#[test]
fn safe_points_advance_only_when_lanes_and_local_messages_are_durable() {
    use Step::*;
    let cases: &[(&str, &[Step])] = &[
        (
            "a point waits for its lanes",
            &[
                Handled(4),
                Point(&[0, 10], 0),
                Advance(&[0, 9], None),
                Advance(&[0, 10], Some(4)),
            ],
        ),
        (
            "a point waits for the local messages queued before it",
            &[
                Handled(4),
                Point(&[0, 0], 3),
                Advance(&[0, 0], None),
                Logged(2),
                Advance(&[0, 0], None),
                Logged(1),
                Advance(&[0, 0], Some(4)),
            ],
        ),
        (
            "points advance in order, each once its lanes are durable",
            &[
                Handled(1),
                Point(&[0, 5], 0),
                Handled(2),
                Point(&[0, 8], 0),
                Advance(&[0, 6], Some(1)),
                Advance(&[0, 8], Some(2)),
            ],
        ),
        (
            "no second point until more is handled",
            &[
                Handled(3),
                Point(&[0, 5], 0),
                Point(&[0, 9], 0),
                Advance(&[0, 5], Some(3)),
            ],
        ),
        (
            "nothing handled, no point",
            &[Point(&[0, 1], 0), Advance(&[0, 1], None)],
        ),
    ];
    for (name, steps) in cases {
        let (mut wal, _sim) = wal(FsyncPolicy::Never);
        for step in steps.iter() {
            match step {
                Handled(seq) => wal.replayed(Seq(*seq)),
                Point(tails, local) => wal.note_safe_point(tails.iter().copied(), *local),
                Logged(n) => wal.add_local(*n),
                Advance(durable, want) => {
                    wal.advance_safe(durable.len(), |lane, pos| pos <= durable[lane]);
                    assert_eq!(wal.safe, want.map(Seq), "{name}");
                }
            }
        }
        assert!(wal.points.is_empty(), "{name}: every point was used");
        assert!(wal.point_tails.is_empty(), "{name}");
    }
}

/// A shard side that records what a pass asks of it, in order.
struct Recorder {
    names: Vec<TopicKey>,
    /// Messages the next `drain` stages, all to topic 0.
    next: Vec<String>,
    calls: Vec<String>,
    head: u64,
}

impl Recorder {
    fn new(next: &[&str]) -> Self {
        Self {
            names: vec![Router::new(1).key("t").unwrap()],
            next: next.iter().map(|s| s.to_string()).collect(),
            calls: Vec::new(),
            head: 0,
        }
    }

    /// The deliveries recorded so far, in order.
    fn deliveries(&self) -> Vec<String> {
        let calls = self.calls.iter();
        calls
            .filter(|c| c.starts_with("deliver"))
            .cloned()
            .collect()
    }

    /// Passes until `n` messages were delivered (a pipelined pass that drains nothing
    /// waits for the oldest batch's sync), at most four passes.
    fn pass_until_delivered(&mut self, wal: &mut Wal<String>, status: &LogStatus, n: usize) {
        wal.pass(status, self);
        for _ in 0..3 {
            if self.deliveries().len() < n {
                wal.pass(status, self);
            }
        }
    }
}

impl WalShard<String> for Recorder {
    fn drain(&mut self, wal: &mut Wal<String>) -> usize {
        let n = self.next.len();
        for msg in self.next.drain(..) {
            wal.stage(Envelope { topic: 0, msg });
        }
        self.head += n as u64;
        self.calls.push(format!("drain {n}"));
        n
    }
    fn names(&self) -> &[TopicKey] {
        &self.names
    }
    fn ring_head(&self) -> u64 {
        self.head
    }
    fn deliver(&mut self, env: Staged<'_, String>, fate: Fate<'_>) {
        let env = env.take();
        let fate = match fate {
            Fate::Logged => "logged".to_owned(),
            Fate::NotLogged(_) | Fate::TooLarge { .. } => "not logged".to_owned(),
            Fate::NotEncoded(e) => format!("not encoded: {e}"),
            Fate::EncodePanicked(text) => format!("encode panicked: {text}"),
        };
        self.calls.push(format!("deliver {} {fate}", env.msg));
    }
    fn confirm_all(&mut self) {
        self.calls.push("confirm".into());
    }
    fn confirm_synced(&mut self, wal: &mut Wal<String>) {
        let ring = wal.take_ring_synced();
        self.calls.push(format!(
            "confirm synced {ring:?} ticket {}",
            wal.done_ticket()
        ));
    }
    fn note_onward(&self, _wal: &mut Wal<String>) {}
    fn close_intake(&mut self) {
        self.calls.push("close intake".into());
    }
}

#[test]
fn a_pass_confirms_before_the_handlers_run_and_closes_the_intake_once_on_failure() {
    let (mut wal, sim) = wal(FsyncPolicy::Always);
    let status = LogStatus::new();
    let mut shard = Recorder::new(&["a", "b"]);
    assert_eq!(wal.pass(&status, &mut shard), 2);
    assert_eq!(
        shard.calls,
        [
            "drain 2",
            "confirm",
            "deliver a logged",
            "deliver b logged",
            "confirm"
        ]
    );
    assert_eq!(wal.handled, Some(Seq(1)));

    // The next append fails: the batch is dead-lettered, the intake closed, once.
    sim.fail_next_append(io::Error::from_raw_os_error(5), 0);
    shard.calls.clear();
    shard.next = vec!["c".into()];
    assert_eq!(wal.pass(&status, &mut shard), 1);
    assert_eq!(
        shard.calls,
        ["drain 1", "deliver c not logged", "close intake"]
    );
    assert_eq!(status.state(), crate::inbox::LogState::Poisoned);
    shard.calls.clear();
    shard.next = vec!["d".into()];
    wal.pass(&status, &mut shard);
    assert_eq!(shard.calls, ["drain 1", "deliver d not logged"]);
    assert_eq!(
        wal.handled,
        Some(Seq(1)),
        "nothing after the failure is handled"
    );
}

#[test]
fn pipelined_tickets_count_batches_and_confirm_the_ring_after_their_sync() {
    let (mut wal, _sim) = wal(FsyncPolicy::Batch);
    assert!(
        wal.pipelined,
        "SimStorage clones file handles: the sync thread runs"
    );
    let status = LogStatus::new();
    let mut shard = Recorder::new(&["a", "b"]);
    assert_eq!(wal.next_ticket(), 1);
    let did = wal.pass(&status, &mut shard);
    // The batch is in flight (ticket 1) or already synced and delivered.
    assert_eq!(wal.next_ticket(), 2);
    let mut delivered = did - 2;
    // A pass that drains nothing waits for the oldest batch and delivers it.
    while delivered < 2 {
        delivered += wal.pass(&status, &mut shard);
    }
    assert_eq!(delivered, 2);
    assert_eq!(wal.done_ticket(), 1);
    assert!(wal.all_synced());
    assert!(shard.calls.contains(&"deliver a logged".to_string()));
    let confirmed: Vec<_> = shard
        .calls
        .iter()
        .filter(|c| c.starts_with("confirm synced Some"))
        .collect();
    assert_eq!(confirmed, ["confirm synced Some(2) ticket 1"]);
    assert_eq!(wal.handled, Some(Seq(1)));

    // A second batch gets the next ticket.
    shard.next = vec!["c".into()];
    wal.pass(&status, &mut shard);
    assert_eq!(wal.next_ticket(), 3);
    let flushed = wal.flush_pipeline(&status, |_, _| {});
    assert!(flushed <= 1);
    assert_eq!(wal.done_ticket(), 2);
    assert_eq!(wal.handled, Some(Seq(2)));
}

/// A codec that refuses every message starting with "bad", as a codec that is not
/// deterministic would on the shard thread after the publishing thread's check passed.
/// The shard log the tests' `Wal` wrote, recovered as at the next start.
fn recovered(sim: &SimStorage) -> crate::log::Recovered {
    crate::log::recover(
        Arc::new(sim.clone()),
        "/shard-000",
        crate::log::RecoveryOptions::default(),
    )
    .unwrap()
}

fn refusing() -> CodecFns<String> {
    CodecFns {
        encode: |msg: &String, out: &mut Vec<u8>| {
            out.extend_from_slice(b"junk"); // the shard discards it
            if msg.starts_with("bad") {
                return Err(crate::codec::EncodeError::new(format_args!(
                    "refused {msg}"
                )));
            }
            out.truncate(out.len() - 4);
            out.extend_from_slice(msg.as_bytes());
            Ok(())
        },
        ..CodecFns::of()
    }
}

#[test]
fn a_message_that_fails_to_encode_on_the_shard_is_dead_lettered_and_never_logged() {
    for fsync in [FsyncPolicy::Always, FsyncPolicy::Batch] {
        let (mut wal, sim) = wal_with(fsync, refusing());
        let status = LogStatus::new();
        let mut shard = Recorder::new(&["a", "bad 1", "b", "bad 2"]);
        shard.pass_until_delivered(&mut wal, &status, 4);
        let delivered = shard.deliveries();
        assert_eq!(
            delivered,
            [
                "deliver a logged",
                "deliver bad 1 not encoded: refused bad 1",
                "deliver b logged",
                "deliver bad 2 not encoded: refused bad 2"
            ],
            "{fsync:?}"
        );
        // Two records, with exactly the good payloads; the sequence numbers stay
        // contiguous.
        assert_eq!(wal.handled, Some(Seq(1)), "{fsync:?}");
        drop(wal);
        let r = recovered(&sim);
        let payloads: Vec<Vec<u8>> = r
            .replay()
            .unwrap()
            .map(|rec| rec.unwrap().payload)
            .collect();
        assert_eq!(payloads, [b"a".to_vec(), b"b".to_vec()], "{fsync:?}");
    }
}

/// [`refusing`], and a panic for every message starting with "boom", after it appended
/// some junk.
fn panicking() -> CodecFns<String> {
    CodecFns {
        encode: |msg: &String, out: &mut Vec<u8>| {
            if msg.starts_with("boom") {
                out.extend_from_slice(b"junk");
                panic!("exploded on {msg}");
            }
            (refusing().encode)(msg, out)
        },
        ..CodecFns::of()
    }
}

#[test]
fn a_message_whose_encode_panics_on_the_shard_is_dead_lettered_and_the_batch_goes_on() {
    for fsync in [FsyncPolicy::Always, FsyncPolicy::Batch] {
        let (mut wal, sim) = wal_with(fsync, panicking());
        let status = LogStatus::new();
        let batch = ["boom 0", "a", "boom 1", "boom 2", "b", "bad", "boom 3"];
        let mut shard = Recorder::new(&batch);
        shard.pass_until_delivered(&mut wal, &status, batch.len());
        assert_eq!(
            shard.deliveries(),
            [
                "deliver boom 0 encode panicked: exploded on boom 0",
                "deliver a logged",
                "deliver boom 1 encode panicked: exploded on boom 1",
                "deliver boom 2 encode panicked: exploded on boom 2",
                "deliver b logged",
                "deliver bad not encoded: refused bad",
                "deliver boom 3 encode panicked: exploded on boom 3",
            ],
            "{fsync:?}"
        );
        assert_eq!(wal.handled, Some(Seq(1)), "{fsync:?}");
        assert!(wal.encode_errors.is_empty(), "{fsync:?}");
        drop(wal);
        let r = recovered(&sim);
        let payloads: Vec<Vec<u8>> = r
            .replay()
            .unwrap()
            .map(|rec| rec.unwrap().payload)
            .collect();
        // No junk of a panicking message in the records around it.
        assert_eq!(payloads, [b"a".to_vec(), b"b".to_vec()], "{fsync:?}");
    }
}

/// [`refusing`], and, against the codec's contract, for "cut N", "cutboom N" and "poke":
/// removes the last N bytes of the buffer (its own record's header, or for N past it the
/// end of the record before), then appends the message ("cut") or panics ("cutboom");
/// "poke" changes the buffer's first byte (another record's header) and appends.
fn cutting() -> CodecFns<String> {
    CodecFns {
        encode: |msg: &String, out: &mut Vec<u8>| {
            if let Some(rest) = msg.strip_prefix("cut") {
                let (boom, n) = match rest.strip_prefix("boom ") {
                    Some(n) => (true, n),
                    None => (false, &rest[1..]),
                };
                out.truncate(out.len().saturating_sub(n.parse::<usize>().unwrap()));
                if boom {
                    panic!("cut and exploded");
                }
            }
            if msg == "poke" {
                if let Some(b) = out.first_mut() {
                    *b ^= 1;
                }
            }
            (refusing().encode)(msg, out)
        },
        ..CodecFns::of()
    }
}

/// A codec that removes or changes bytes before its own cannot damage another record:
/// the batch is framed again with each payload encoded apart, so every record is whole,
/// numbered without a gap, and holds exactly its message.
#[test]
fn a_codec_that_reaches_before_its_own_bytes_damages_no_other_record() {
    let batches: [&[&str]; 4] = [
        // Its own header only, shorter in the end.
        &["a", "cut 10", "b"],
        // Its own header, but longer in the end: seen in the headers' check.
        &["a", "cut 3", "b"],
        // Into the record before (13 of b's 28 bytes with its own 27), then a panic.
        &["a", "b", "cutboom 40", "c", "bad", "d"],
        // Another record's header, nothing removed.
        &["a", "b", "poke", "c"],
    ];
    for fsync in [FsyncPolicy::Always, FsyncPolicy::Batch] {
        for batch in batches {
            let (mut wal, sim) = wal_with(fsync, cutting());
            let status = LogStatus::new();
            let mut shard = Recorder::new(batch);
            shard.pass_until_delivered(&mut wal, &status, batch.len());
            let expected: Vec<String> = batch
                .iter()
                .map(|m| match *m {
                    "bad" => "deliver bad not encoded: refused bad".to_owned(),
                    m if m.starts_with("cutboom") => {
                        format!("deliver {m} encode panicked: cut and exploded")
                    }
                    m => format!("deliver {m} logged"),
                })
                .collect();
            assert_eq!(shard.deliveries(), expected, "{fsync:?} {batch:?}");
            drop(wal);
            let r = recovered(&sim);
            let records: Vec<(u64, String)> = r
                .replay()
                .unwrap()
                .map(|rec| rec.unwrap())
                .map(|rec| (rec.seq.get(), String::from_utf8(rec.payload).unwrap()))
                .collect();
            let logged: Vec<(u64, String)> = batch
                .iter()
                .filter(|m| **m != "bad" && !m.starts_with("cutboom"))
                .enumerate()
                .map(|(i, m)| (i as u64, m.to_string()))
                .collect();
            assert_eq!(records, logged, "{fsync:?} {batch:?}");
        }
    }
}
