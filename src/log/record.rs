//! One log record: its in-memory forms and its byte encoding.
//!
//! ```text
//! offset  size  field
//! 0       4     len              u32 LE, bytes after the crc field (18 + topic_len + payload)
//! 4       4     crc              u32 LE, CRC32C over bytes 8 .. 8 + len
//! 8       8     seq              u64 LE
//! 16      8     timestamp_nanos  u64 LE, since the UNIX epoch
//! 24      2     topic_len        u16 LE
//! 26      n     topic            UTF-8
//! 26 + n  rest  payload
//! ```

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use super::error::{CorruptReason, LogError};

/// Bytes of the `len` and `crc` fields that precede every record body.
pub(crate) const FRAME_HEADER_LEN: usize = 8;
/// Bytes of the fixed body fields: `seq`, `timestamp_nanos`, `topic_len`.
pub(crate) const BODY_FIXED_LEN: usize = 18;
/// Smallest valid encoded record (empty topic, empty payload): the bytes a record takes
/// besides its topic and payload (the 8-byte frame and the 18 fixed body bytes).
pub const MIN_RECORD_LEN: usize = FRAME_HEADER_LEN + BODY_FIXED_LEN;

/// A log sequence number: the position of a record in its shard's log.
///
/// Sequence numbers start at 0 and are contiguous: the record appended after `Seq(n)` is
/// `Seq(n + 1)`, across segment boundaries and restarts. A newtype so it never mixes with the
/// byte offsets that sit next to it everywhere in this module.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Seq(pub u64);

impl Seq {
    /// The sequence number of the first record ever appended to a shard.
    pub const ZERO: Seq = Seq(0);

    /// Segment names (first sequence numbers) stop below this: 2^63, so that counting on from
    /// any segment can never reach `u64::MAX` (2^63 records at a billion a second take 292
    /// years). Recovery reports a segment named at or above it as corrupt
    /// ([`crate::log::CorruptReason::SeqOutOfRange`]).
    pub const LIMIT: Seq = Seq(1 << 63);

    /// The raw number.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The sequence number after this one (saturating: 2^64 records are never written, but a
    /// corrupt record must not overflow the reader).
    pub const fn next(self) -> Seq {
        Seq(self.0.saturating_add(1))
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A record to append: borrowed, without a sequence number (the log assigns it).
///
/// Public only with the `test-util` feature (tests, benchmarks, fuzzing); not a stable API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Wall-clock time of the message in nanoseconds since the UNIX epoch. Stored as given;
    /// retention by age reads it.
    pub timestamp_nanos: u64,
    /// The topic; at most `u16::MAX` bytes.
    pub topic: &'a str,
    /// The message bytes.
    pub payload: &'a [u8],
}

impl<'a> RecordRef<'a> {
    /// A record stamped with the current wall-clock time.
    #[cfg_attr(not(feature = "test-util"), allow(dead_code))] // test-util API
    pub fn new(topic: &'a str, payload: &'a [u8]) -> Self {
        RecordRef {
            timestamp_nanos: now_nanos(),
            topic,
            payload,
        }
    }

    /// The number of bytes this record takes on disk, frame header included.
    pub fn encoded_len(&self) -> u64 {
        (MIN_RECORD_LEN + self.topic.len() + self.payload.len()) as u64
    }
}

/// A record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its position in the shard's log.
    pub seq: Seq,
    /// Nanoseconds since the UNIX epoch, as given at append.
    pub timestamp_nanos: u64,
    /// The topic.
    pub topic: String,
    /// The message bytes.
    pub payload: Vec<u8>,
}

impl Record {
    /// The topic's name: [`topic`](Self::topic) without the partition of a partitioned
    /// topic's record (`docs/persistence.md`, "Partition records").
    pub fn topic_name(&self) -> &str {
        self.split_partition().0
    }

    /// The partition of a partitioned topic's record (its topic field is the name, a NUL
    /// byte, `p` and the number); `None` for a plain topic's.
    pub fn partition(&self) -> Option<usize> {
        self.split_partition().1
    }

    fn split_partition(&self) -> (&str, Option<usize>) {
        let (name, part) = split_partition(&self.topic);
        (name, part.map(usize::from))
    }

    /// Borrows this record as a [`RecordRef`] (to re-append it elsewhere, for example).
    ///
    /// Public only with the `test-util` feature (tests, benchmarks, fuzzing); not a stable API.
    #[cfg(feature = "test-util")]
    pub fn as_record_ref(&self) -> RecordRef<'_> {
        self.record_ref()
    }

    /// Borrows this record as a [`RecordRef`] (resharding re-appends it elsewhere).
    #[cfg(not(feature = "test-util"))]
    pub(crate) fn as_record_ref(&self) -> RecordRef<'_> {
        self.record_ref()
    }

    fn record_ref(&self) -> RecordRef<'_> {
        RecordRef {
            timestamp_nanos: self.timestamp_nanos,
            topic: &self.topic,
            payload: &self.payload,
        }
    }
}

/// What separates a partition's number from its topic's name in a record's topic field:
/// `"orders\0p17"` is partition 17 of `"orders"`.
pub(crate) const PART_MARK: &str = "\0p";

/// A record's topic field as (name, partition): a partitioned topic's field is the name,
/// [`PART_MARK`] and 1 to 5 decimal digits (a number up to `u16::MAX`); anything else is a
/// plain topic's name.
pub(crate) fn split_partition(topic: &str) -> (&str, Option<u16>) {
    if let Some((name, digits)) = topic.rsplit_once(PART_MARK) {
        let is_number =
            !digits.is_empty() && digits.len() <= 5 && digits.bytes().all(|b| b.is_ascii_digit());
        if let (true, Ok(part)) = (is_number, digits.parse()) {
            return (name, Some(part));
        }
    }
    (topic, None)
}

/// Nanoseconds since the UNIX epoch now; 0 if the clock is before 1970, saturating in 2554.
pub(crate) fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Checks that `rec` can be encoded within `max_record_size` and returns its encoded size.
pub(crate) fn check_len(rec: &RecordRef<'_>, max_record_size: u32) -> Result<usize, LogError> {
    if rec.topic.len() > usize::from(u16::MAX) {
        return Err(LogError::TopicTooLong {
            len: rec.topic.len(),
        });
    }
    let size = rec.encoded_len();
    if size > u64::from(max_record_size) {
        return Err(LogError::RecordTooLarge {
            size,
            max: max_record_size,
        });
    }
    // `size <= max_record_size <= u32::MAX`, so it fits a usize on every supported target.
    Ok(size as usize)
}

/// Appends the encoding of `rec` with sequence number `seq` to `buf`.
///
/// The caller has validated `rec` with [`check_len`], so the length fields cannot overflow.
#[cfg(test)]
pub(crate) fn encode(buf: &mut Vec<u8>, seq: Seq, rec: &RecordRef<'_>) {
    let start = encode_unsealed(buf, seq, rec);
    seal(buf, &[start]);
}

/// [`encode`] without the CRC (left zero): returns the record's offset in `buf`, for a
/// later [`seal`] of many records at once.
pub(crate) fn encode_unsealed(buf: &mut Vec<u8>, seq: Seq, rec: &RecordRef<'_>) -> usize {
    buf.reserve(FRAME_HEADER_LEN + BODY_FIXED_LEN + rec.topic.len() + rec.payload.len());
    let start = begin_frame(buf, seq, rec.timestamp_nanos, rec.topic);
    buf.extend_from_slice(rec.payload);
    finish_frame(buf, start);
    start
}

/// Starts a record at the end of `buf` whose payload is to be appended right after: the
/// frame header (its `len` left for [`finish_frame`], its CRC for [`seal`]) and the body's
/// fixed fields and topic (at most `u16::MAX` bytes, checked by the caller). Returns the
/// record's offset in `buf`.
#[inline]
pub(crate) fn begin_frame(buf: &mut Vec<u8>, seq: Seq, timestamp_nanos: u64, topic: &str) -> usize {
    let start = buf.len();
    buf.reserve(MIN_RECORD_LEN + topic.len());
    buf.extend_from_slice(&frame_head(seq, timestamp_nanos, topic));
    buf.extend_from_slice(topic.as_bytes());
    start
}

/// A record's first [`MIN_RECORD_LEN`] bytes as [`begin_frame`] writes them: `len` and
/// CRC zero, then the sequence number, the timestamp and the topic's length.
#[inline(always)]
fn frame_head(seq: Seq, timestamp_nanos: u64, topic: &str) -> [u8; MIN_RECORD_LEN] {
    let mut head = [0; MIN_RECORD_LEN];
    head[FRAME_HEADER_LEN..FRAME_HEADER_LEN + 8].copy_from_slice(&seq.0.to_le_bytes());
    head[FRAME_HEADER_LEN + 8..FRAME_HEADER_LEN + 16]
        .copy_from_slice(&timestamp_nanos.to_le_bytes());
    head[FRAME_HEADER_LEN + 16..].copy_from_slice(&(topic.len() as u16).to_le_bytes());
    head
}

/// Fills in the `len` field of the record [`begin_frame`] started at `start`, whose
/// payload ends `buf`. The caller has checked the record's size (`buf.len() - start`)
/// against the maximum record size, a `u32`.
#[inline]
pub(crate) fn finish_frame(buf: &mut [u8], start: usize) {
    let body_len = (buf.len() - start - FRAME_HEADER_LEN) as u32;
    buf[start..start + 4].copy_from_slice(&body_len.to_le_bytes());
}

/// Whether `record` (one whole record, its CRC not yet filled in) is framed as
/// [`begin_frame`] and [`finish_frame`] wrote it: its `len` covers the rest of it, and its
/// sequence number, timestamp and topic are these.
#[inline]
pub(crate) fn frame_is(record: &[u8], seq: Seq, timestamp_nanos: u64, topic: &str) -> bool {
    let Some((head, rest)) = record.split_first_chunk::<MIN_RECORD_LEN>() else {
        return false;
    };
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let mut expected = frame_head(seq, timestamp_nanos, topic);
    // The CRC is not filled in yet, and `len` is compared on its own.
    expected[..FRAME_HEADER_LEN].copy_from_slice(&head[..FRAME_HEADER_LEN]);
    len as usize + FRAME_HEADER_LEN == record.len()
        && *head == expected
        && rest.get(..topic.len()) == Some(topic.as_bytes())
}

/// Fills in the CRC of each record [`encode_unsealed`] wrote at the offsets `starts` of
/// `buf`, three records at a time ([`crate::crc::crc32c_3`]).
pub(crate) fn seal(buf: &mut [u8], starts: &[usize]) {
    let body = |buf: &[u8], start: usize| -> (usize, usize) {
        let len = u32::from_le_bytes([buf[start], buf[start + 1], buf[start + 2], buf[start + 3]]);
        let from = start + FRAME_HEADER_LEN;
        (from, from + len as usize)
    };
    for group in starts.chunks(3) {
        let (a, b, c) = match *group {
            [a, b, c] => (body(buf, a), body(buf, b), body(buf, c)),
            [a, b] => (body(buf, a), body(buf, b), (0, 0)),
            [a] => (body(buf, a), (0, 0), (0, 0)),
            _ => continue,
        };
        let crcs = crate::crc::crc32c_3(&buf[a.0..a.1], &buf[b.0..b.1], &buf[c.0..c.1]);
        for (&start, crc) in group.iter().zip(crcs) {
            buf[start + 4..start + FRAME_HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
        }
    }
}

/// Splits a frame header into its `len` and `crc` fields.
pub(crate) fn frame_header(header: &[u8; FRAME_HEADER_LEN]) -> (u32, u32) {
    let [a, b, c, d, e, f, g, h] = *header;
    (
        u32::from_le_bytes([a, b, c, d]),
        u32::from_le_bytes([e, f, g, h]),
    )
}

/// Whether `len` is a possible `len` field under `max_record_size`.
pub(crate) fn valid_body_len(len: u32, max_record_size: u32) -> bool {
    let len = u64::from(len);
    len >= BODY_FIXED_LEN as u64 && len + FRAME_HEADER_LEN as u64 <= u64::from(max_record_size)
}

/// Reads the `seq` field of a body without validating anything else.
pub(crate) fn body_seq(body: &[u8]) -> Option<Seq> {
    read_u64(body, 0).map(Seq)
}

/// Decodes a body whose CRC has already been checked.
pub(crate) fn decode_body(body: &[u8]) -> Result<Record, CorruptReason> {
    let fixed = (
        read_u64(body, 0),
        read_u64(body, 8),
        body.get(16..18).and_then(|b| b.try_into().ok()),
    );
    let (Some(seq), Some(timestamp_nanos), Some(topic_len)) = fixed else {
        // Unreachable after `valid_body_len`, but data never panics.
        return Err(CorruptReason::BadTopic);
    };
    let topic_end = BODY_FIXED_LEN + usize::from(u16::from_le_bytes(topic_len));
    let topic = body
        .get(BODY_FIXED_LEN..topic_end)
        .and_then(|t| std::str::from_utf8(t).ok())
        .ok_or(CorruptReason::BadTopic)?;
    let payload = body.get(topic_end..).ok_or(CorruptReason::BadTopic)?;
    Ok(Record {
        seq: Seq(seq),
        timestamp_nanos,
        topic: topic.to_owned(),
        payload: payload.to_vec(),
    })
}

fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    let b = bytes.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(b.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec<'a>(topic: &'a str, payload: &'a [u8]) -> RecordRef<'a> {
        RecordRef {
            timestamp_nanos: 1_700_000_000_123_456_789,
            topic,
            payload,
        }
    }

    #[test]
    fn encoding_matches_the_byte_table() {
        let mut buf = Vec::new();
        encode(&mut buf, Seq(7), &rec("ab", b"xyz"));
        assert_eq!(buf.len(), 8 + 18 + 2 + 3);
        assert_eq!(&buf[0..4], &23u32.to_le_bytes());
        assert_eq!(&buf[4..8], &crc32c::crc32c(&buf[8..]).to_le_bytes());
        assert_eq!(&buf[8..16], &7u64.to_le_bytes());
        assert_eq!(&buf[16..24], &1_700_000_000_123_456_789u64.to_le_bytes());
        assert_eq!(&buf[24..26], &2u16.to_le_bytes());
        assert_eq!(&buf[26..28], b"ab");
        assert_eq!(&buf[28..], b"xyz");
    }

    #[test]
    fn decode_inverts_encode() {
        let mut buf = Vec::new();
        encode(&mut buf, Seq(u64::MAX - 1), &rec("t/ü", b"\0\xff"));
        let (len, crc) = frame_header(buf[..8].try_into().unwrap());
        assert_eq!(len as usize, buf.len() - 8);
        assert_eq!(crc, crc32c::crc32c(&buf[8..]));
        let got = decode_body(&buf[8..]).unwrap();
        assert_eq!(
            got,
            Record {
                seq: Seq(u64::MAX - 1),
                timestamp_nanos: 1_700_000_000_123_456_789,
                topic: "t/ü".into(),
                payload: b"\0\xff".to_vec(),
            }
        );
        assert_eq!(got.as_record_ref(), rec("t/ü", b"\0\xff"));
    }

    #[test]
    fn a_partition_records_topic_field_splits_into_name_and_partition() {
        let rec = |topic: &str| Record {
            seq: Seq(0),
            timestamp_nanos: 0,
            topic: topic.into(),
            payload: Vec::new(),
        };
        let cases = [
            ("orders\0p17", "orders", Some(17)),
            ("orders\0p0", "orders", Some(0)),
            ("orders", "orders", None),
            ("orders\0p", "orders\0p", None),
            ("orders\0p1x", "orders\0p1x", None),
            ("orders\0p123456", "orders\0p123456", None),
            ("orders\0p70000", "orders\0p70000", None),
        ];
        for (topic, name, part) in cases {
            assert_eq!(
                (rec(topic).topic_name(), rec(topic).partition()),
                (name, part)
            );
        }
    }

    #[test]
    fn empty_topic_and_payload_is_the_minimum() {
        let mut buf = Vec::new();
        encode(&mut buf, Seq(0), &rec("", b""));
        assert_eq!(buf.len(), MIN_RECORD_LEN);
        assert!(valid_body_len(BODY_FIXED_LEN as u32, MIN_RECORD_LEN as u32));
        assert!(!valid_body_len(BODY_FIXED_LEN as u32 - 1, u32::MAX));
        assert!(!valid_body_len(u32::MAX, u32::MAX));
        assert_eq!(decode_body(&buf[8..]).unwrap().topic, "");
    }

    #[test]
    fn bad_topics_are_errors_not_panics() {
        let mut body = vec![0u8; 18];
        body[16..18].copy_from_slice(&5u16.to_le_bytes());
        body.extend_from_slice(b"abc"); // topic_len 5 but only 3 bytes left
        assert_eq!(decode_body(&body), Err(CorruptReason::BadTopic));
        body.truncate(18);
        body[16..18].copy_from_slice(&2u16.to_le_bytes());
        body.extend_from_slice(&[0xff, 0xfe]); // not UTF-8
        assert_eq!(decode_body(&body), Err(CorruptReason::BadTopic));
        assert_eq!(decode_body(&[1, 2, 3]), Err(CorruptReason::BadTopic));
    }

    #[test]
    fn size_limits_are_typed_errors() {
        let payload = vec![0u8; 100];
        let r = rec("topic", &payload);
        assert_eq!(check_len(&r, 131).unwrap(), 131);
        assert!(matches!(
            check_len(&r, 130),
            Err(LogError::RecordTooLarge {
                size: 131,
                max: 130
            })
        ));
        let long = "x".repeat(usize::from(u16::MAX) + 1);
        assert!(matches!(
            check_len(&rec(&long, b""), u32::MAX),
            Err(LogError::TopicTooLong { len: 65536 })
        ));
    }
}
