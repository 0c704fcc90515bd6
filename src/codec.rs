//! How persisted messages become bytes and back.
//!
//! Only a persistent bus needs a codec ([`Builder::persist`](crate::Builder::persist)
//! requires `T: Codec`); the builder erases it into function pointers ([`CodecFns`]), so
//! the shard loop carries no `Codec` bound and a memory-only bus never touches it.
//!
//! A message is encoded on its shard thread, into the batch's buffer, when it is logged.
//! Before that, the publishing thread may encode it once into a scratch buffer of its own
//! ([`CodecFns::encoded_len`]) to refuse what the log could not take while the message
//! can still be given back: a durable publish always (its record must fit
//! `max_record_size`), any publish whose codec can fail ([`Codec::CAN_FAIL`]).

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;

use crate::sync::plain::Arc;

/// Encodes a message into the payload of a log record and decodes it back.
///
/// Implemented for `Vec<u8>`, `Box<[u8]>` and `String` (stored as their raw bytes), and,
/// with the `postcard` feature, for every type that opts in with `PostcardCodec` (stored in the
/// [postcard](https://docs.rs/postcard) format).
///
/// `encode` appends to `out` (the shard reuses one buffer for a whole batch); `decode`
/// gets exactly the bytes one successful `encode` appended, and must not panic on others:
/// a log written by an older version of the type is decoded at replay.
///
/// # Encoding that fails
///
/// `encode` may refuse a message ([`EncodeError`]); such a message never reaches the log.
/// On a bus whose codec can fail ([`CAN_FAIL`](Self::CAN_FAIL), the default), every publish
/// encodes the message once on the publishing thread first, into a reused per-thread
/// buffer, and a refusal comes back as the publish's `Encode` error with the message. The
/// shard encodes it again when it logs it, so `encode` must be deterministic: a message
/// that encoded on the publishing thread and fails on the shard is not logged, not
/// handled, and goes to the dead-letter handler
/// ([`DeadLetterReason::EncodeFailed`](crate::DeadLetterReason::EncodeFailed)).
///
/// # Panics in the codec
///
/// A codec should return errors, not panic; if it panics anyway:
///
/// - on the publishing thread (the encoding of a durable publish, or of any publish whose
///   codec can fail), the panic is the caller's own: it unwinds out of the `publish` call
///   in the caller's thread, as a panic in the caller's own code would. Nothing was pushed
///   and the bus is left as it was (the thread's scratch buffer is released by the
///   unwinding). It is not turned into an error because it is the caller's code failing on
///   the caller's stack: the caller sees it where it happens and can catch it there, and
///   no shard or other publisher is involved.
/// - on the shard thread (logging the message), the panic is caught and counted
///   ([`PanicSites::encode`](crate::PanicSites::encode)); the message is not logged, not
///   handled, and goes to the dead-letter handler
///   ([`DeadLetterReason::EncodePanicked`](crate::DeadLetterReason::EncodePanicked)); the
///   rest of its batch and the shard go on. With `CAN_FAIL = false` a plain publish is
///   first encoded here.
/// - in `decode`, replaying the log at `build()`, the panic is caught and counted, and
///   `build()` returns [`Error::Decode`](crate::Error::Decode) naming the record, as for a
///   decode error.
///
/// ```
/// use shardbus::{Codec, DecodeError, EncodeError};
///
/// /// A reading, stored as 8 little-endian bytes; NaN is refused.
/// struct Reading(f64);
///
/// impl Codec for Reading {
///     fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
///         if self.0.is_nan() {
///             return Err(EncodeError::new("NaN reading"));
///         }
///         out.extend_from_slice(&self.0.to_le_bytes());
///         Ok(())
///     }
///     fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
///         let bytes: [u8; 8] = bytes.try_into().map_err(DecodeError::new)?;
///         Ok(Reading(f64::from_le_bytes(bytes)))
///     }
/// }
/// ```
pub trait Codec: Sized {
    /// Whether [`encode`](Self::encode) can return an error. If it can (the default), a
    /// persistent bus encodes every message once on the publishing thread before it
    /// accepts it, so that a refusal gives the message back instead of losing it after
    /// the publish returned. A codec that never fails sets it to `false` and spares
    /// plain publishes that work (durable publishes encode on the publishing thread
    /// anyway, to check the record size). The built-in byte and string codecs set it to
    /// `false`; `PostcardCodec` types keep `true`.
    const CAN_FAIL: bool = true;

    /// Appends the encoding of `self` to `out`, or says why it cannot. On an error the
    /// caller discards whatever was appended; the bytes before (other messages of the
    /// batch) must be left as they were.
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError>;
    /// Decodes a value from the bytes one `encode` appended.
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError>;
}

/// The error a codec error keeps as its cause, shared so that the error stays `Clone`.
type Cause = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// A message that its [`Codec`] cannot encode (a serde type that postcard cannot
/// represent, say). A publish refuses it with the message back
/// ([`PublishError::Encode`](crate::PublishError::Encode) and its siblings); it never
/// reaches the log.
///
/// It keeps the codec's own error, if it was given one
/// ([`with_source`](Self::with_source)), as its [`source`](std::error::Error::source).
#[derive(Debug, Clone)]
pub struct EncodeError {
    reason: Cow<'static, str>,
    source: Option<Cause>,
}

impl EncodeError {
    /// An error with the given explanation and no underlying cause.
    pub fn new(reason: impl fmt::Display) -> Self {
        Self {
            reason: Cow::Owned(reason.to_string()),
            source: None,
        }
    }

    /// An error with the given explanation, caused by `source` (the serializer's own
    /// error, say), which [`source`](std::error::Error::source) returns.
    pub fn with_source(
        reason: impl fmt::Display,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            reason: Cow::Owned(reason.to_string()),
            source: Some(Arc::new(source)),
        }
    }

    /// An error with a fixed explanation, built without allocating.
    pub(crate) const fn fixed(reason: &'static str) -> Self {
        Self {
            reason: Cow::Borrowed(reason),
            source: None,
        }
    }
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for EncodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
}

/// Equal when the explanations are equal and so are the causes' messages (a cause has no
/// equality of its own).
impl PartialEq for EncodeError {
    fn eq(&self, other: &Self) -> bool {
        self.reason == other.reason && same_cause(&self.source, &other.source)
    }
}

impl Eq for EncodeError {}

/// A payload that does not decode as the bus's message type.
///
/// It keeps the codec's own error, if it was given one
/// ([`with_source`](Self::with_source)), as its [`source`](std::error::Error::source):
/// with the `postcard` feature, a `postcard::Error`.
#[derive(Debug, Clone)]
pub struct DecodeError {
    reason: Cow<'static, str>,
    source: Option<Cause>,
}

impl DecodeError {
    /// An error with the given explanation and no underlying cause.
    pub fn new(reason: impl fmt::Display) -> Self {
        Self {
            reason: Cow::Owned(reason.to_string()),
            source: None,
        }
    }

    /// An error with the given explanation, caused by `source` (the deserializer's own
    /// error, say), which [`source`](std::error::Error::source) returns.
    pub fn with_source(
        reason: impl fmt::Display,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            reason: Cow::Owned(reason.to_string()),
            source: Some(Arc::new(source)),
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for DecodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
}

/// Equal when the explanations are equal and so are the causes' messages (a cause has no
/// equality of its own).
impl PartialEq for DecodeError {
    fn eq(&self, other: &Self) -> bool {
        self.reason == other.reason && same_cause(&self.source, &other.source)
    }
}

impl Eq for DecodeError {}

fn same_cause(a: &Option<Cause>, b: &Option<Cause>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.to_string() == b.to_string(),
        _ => false,
    }
}

impl Codec for Vec<u8> {
    const CAN_FAIL: bool = false;
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.extend_from_slice(self);
        Ok(())
    }
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Ok(bytes.to_vec())
    }
}

impl Codec for Box<[u8]> {
    const CAN_FAIL: bool = false;
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.extend_from_slice(self);
        Ok(())
    }
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Ok(bytes.into())
    }
}

impl Codec for String {
    const CAN_FAIL: bool = false;
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.extend_from_slice(self.as_bytes());
        Ok(())
    }
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|e| DecodeError::with_source("the payload is not UTF-8", e))
    }
}

/// Opts a serde type into [`Codec`] through [postcard](https://docs.rs/postcard):
/// `impl shardbus::PostcardCodec for MyMessage {}`.
///
/// Why postcard: a compact binary format (varint integers, no field names, no padding)
/// with a wire format specified and kept stable since its 1.0 release, maintained, `serde`
/// only, no `unsafe` tricks. (bincode, the other common choice, has ended development.)
/// Like every schema-less format it does not tolerate field reordering or type changes:
/// evolve the message type by adding enum variants at the end, or version it yourself.
///
/// Why an opt-in and not every serde type: a blanket impl would collide with the byte and
/// string impls above, which store raw bytes.
#[cfg(feature = "postcard")]
pub trait PostcardCodec: serde::Serialize + serde::de::DeserializeOwned {}

#[cfg(feature = "postcard")]
impl<T: PostcardCodec> Codec for T {
    /// postcard refuses what its format cannot represent (a sequence or map of unknown
    /// length, a `Serialize` impl that returns an error): such a publish is refused.
    const CAN_FAIL: bool = true;

    fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        postcard::serialize_with_flavor::<T, _, ()>(self, AppendTo(&mut *out)).map_err(|e| {
            out.truncate(start);
            EncodeError::with_source("postcard cannot encode the message", e)
        })
    }
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        postcard::from_bytes(bytes)
            .map_err(|e| DecodeError::with_source("postcard cannot decode the payload", e))
    }
}

/// A postcard output that appends to a `Vec` it borrows, leaving the bytes before alone
/// (`postcard::to_extend` takes the `Vec` by value, and loses it on an error).
#[cfg(feature = "postcard")]
struct AppendTo<'a>(&'a mut Vec<u8>);

#[cfg(feature = "postcard")]
impl postcard::ser_flavors::Flavor for AppendTo<'_> {
    type Output = ();

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// A codec erased into function pointers, stored in the bus's shared state.
pub(crate) struct CodecFns<T> {
    pub(crate) encode: fn(&T, &mut Vec<u8>) -> Result<(), EncodeError>,
    pub(crate) decode: fn(&[u8]) -> Result<T, DecodeError>,
    /// [`Codec::CAN_FAIL`].
    pub(crate) can_fail: bool,
}

impl<T: Codec> CodecFns<T> {
    pub(crate) fn of() -> Self {
        Self {
            encode: T::encode,
            decode: T::decode,
            can_fail: T::CAN_FAIL,
        }
    }
}

impl<T> Clone for CodecFns<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for CodecFns<T> {}

/// A scratch buffer above this capacity is freed after use rather than kept: a thread
/// that once published a huge message does not keep its size for good. Messages up to
/// it encode with no allocation once the buffer has grown.
const SCRATCH_KEEP: usize = 256 << 10;

thread_local! {
    /// The publishing thread's buffer for [`CodecFns::encoded_len`], reused.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl<T> CodecFns<T> {
    /// Encodes `msg` into the calling thread's scratch buffer and returns the payload's
    /// length; the bytes are discarded. Allocates nothing once the buffer has grown to
    /// the thread's usual message size.
    pub(crate) fn encoded_len(&self, msg: &T) -> Result<usize, EncodeError> {
        let encode = |buf: &mut Vec<u8>| {
            buf.clear();
            let r = (self.encode)(msg, buf).map(|()| buf.len());
            if buf.capacity() > SCRATCH_KEEP {
                *buf = Vec::new();
            } else {
                buf.clear();
            }
            r
        };
        SCRATCH
            .try_with(|scratch| match scratch.try_borrow_mut() {
                Ok(mut buf) => encode(&mut buf),
                // Already in use: an `encode` that publishes (or a thread-local
                // destructor that does). Correct, just not reused.
                Err(_) => encode(&mut Vec::new()),
            })
            // The thread is exiting and its buffer is gone.
            .unwrap_or_else(|_| encode(&mut Vec::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T: Codec + PartialEq + fmt::Debug>(value: T) {
        let mut buf = vec![9]; // encode appends
        value.encode(&mut buf).unwrap();
        assert_eq!(T::decode(&buf[1..]).unwrap(), value);
        assert_eq!(CodecFns::<T>::of().encoded_len(&value), Ok(buf.len() - 1));
    }

    #[test]
    fn built_in_codecs_round_trip() {
        round_trip(b"bytes\0\xff".to_vec());
        round_trip(Box::<[u8]>::from(&b"boxed"[..]));
        round_trip("grüße".to_string());
        // The UTF-8 error is kept as the source.
        let e = String::decode(&[b'a', 0xff, 0xfe]).unwrap_err();
        let utf8 = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<std::str::Utf8Error>())
            .expect("the source is the Utf8Error");
        assert_eq!(utf8.valid_up_to(), 1);
        // Infallible: plain publishes skip the encoding on the publishing thread.
        assert!(!CodecFns::<Vec<u8>>::of().can_fail);
        assert!(!CodecFns::<Box<[u8]>>::of().can_fail);
        assert!(!CodecFns::<String>::of().can_fail);
    }

    /// A codec that refuses odd numbers.
    #[derive(Debug, PartialEq)]
    struct Even(u32);

    impl Codec for Even {
        fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
            out.extend_from_slice(b"partial"); // discarded by the caller on an error
            if self.0 % 2 == 1 {
                return Err(EncodeError::new(format_args!("{} is odd", self.0)));
            }
            out.truncate(out.len() - 7);
            out.extend_from_slice(&self.0.to_le_bytes());
            Ok(())
        }
        fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
            let b: [u8; 4] = bytes.try_into().map_err(DecodeError::new)?;
            Ok(Even(u32::from_le_bytes(b)))
        }
    }

    #[test]
    fn codec_errors_keep_their_source_and_compare_by_message() {
        use std::error::Error as _;
        let io = || std::io::Error::new(std::io::ErrorKind::InvalidData, "bad byte");
        let e = EncodeError::with_source("cannot encode", io());
        assert_eq!(e.to_string(), "cannot encode");
        let src = e.source().and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(src.map(|s| s.kind()), Some(std::io::ErrorKind::InvalidData));
        assert_eq!(e.clone(), e);
        assert_ne!(e, EncodeError::new("cannot encode"));
        assert!(EncodeError::new("x").source().is_none());
        let d = DecodeError::with_source("cannot decode", io());
        assert_eq!(d.to_string(), "cannot decode");
        assert!(d.source().is_some_and(|s| s.is::<std::io::Error>()));
        assert_eq!(d.clone(), d);
        assert_ne!(d, DecodeError::new("cannot decode"));
    }

    #[test]
    fn encoded_len_reports_the_codec_error_and_reuses_its_buffer() {
        let fns = CodecFns::<Even>::of();
        assert!(fns.can_fail);
        assert_eq!(fns.encoded_len(&Even(2)), Ok(4));
        assert_eq!(fns.encoded_len(&Even(3)), Err(EncodeError::new("3 is odd")));
        // The scratch buffer is left empty with its capacity; a huge one is freed.
        SCRATCH.with(|b| {
            assert!(b.borrow().is_empty());
            assert!(b.borrow().capacity() >= 7);
        });
        let big = CodecFns::<Vec<u8>>::of();
        assert_eq!(
            big.encoded_len(&vec![0; SCRATCH_KEEP + 1]),
            Ok(SCRATCH_KEEP + 1)
        );
        SCRATCH.with(|b| assert_eq!(b.borrow().capacity(), 0));
        // In use (an `encode` that encodes again): a buffer of its own, same answer.
        SCRATCH.with(|b| {
            let _held = b.borrow_mut();
            assert_eq!(fns.encoded_len(&Even(4)), Ok(4));
        });
    }

    #[cfg(feature = "postcard")]
    #[test]
    fn postcard_codec_round_trips() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Order {
            id: u64,
            items: Vec<String>,
        }
        impl PostcardCodec for Order {}
        round_trip(Order {
            id: 7,
            items: vec!["a".into(), "b".into()],
        });
        // A decode failure keeps postcard's own error as its source.
        let e = Order::decode(&[0xff]).unwrap_err();
        let cause = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<postcard::Error>())
            .expect("the source is the postcard error");
        assert_eq!(*cause, postcard::Error::DeserializeUnexpectedEnd);
    }

    /// postcard refuses a sequence of unknown length (a `Serialize` that streams an
    /// iterator without an exact size); the bytes already in the buffer stay as they were.
    #[cfg(feature = "postcard")]
    #[test]
    fn postcard_codec_refuses_what_postcard_cannot_encode_and_keeps_the_buffer() {
        #[derive(serde::Deserialize, PartialEq, Debug)]
        struct Evens(Vec<u32>);
        impl serde::Serialize for Evens {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.iter().filter(|n| *n % 2 == 0))
            }
        }
        impl PostcardCodec for Evens {}
        assert!(CodecFns::<Evens>::of().can_fail);
        let mut buf = b"earlier records".to_vec();
        let e = Evens(vec![1, 2, 3, 4]).encode(&mut buf).unwrap_err();
        assert_eq!(buf, b"earlier records");
        let cause = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<postcard::Error>())
            .expect("the source is the postcard error");
        assert_eq!(*cause, postcard::Error::SerializeSeqLengthUnknown);
        assert!(CodecFns::<Evens>::of()
            .encoded_len(&Evens(vec![2]))
            .is_err());
    }
}
