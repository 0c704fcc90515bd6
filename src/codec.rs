//! How persisted messages become bytes and back.
//!
//! Only a persistent bus needs a codec ([`Builder::persist`](crate::Builder::persist)
//! requires `T: Codec`); the builder erases it into two function pointers, so the shard
//! loop carries no `Codec` bound and a memory-only bus never touches it.

use std::fmt;

/// Encodes a message into the payload of a log record and decodes it back.
///
/// Implemented for `Vec<u8>`, `Box<[u8]>` and `String` (stored as their raw bytes), and,
/// with the `serde` feature, for every type that opts in with
/// [`SerdeCodec`] (stored in the [postcard](https://docs.rs/postcard) format).
///
/// `encode` appends to `out` (the shard reuses one buffer for a whole batch); `decode`
/// gets exactly the bytes one `encode` appended, and must not panic on others: a log
/// written by an older version of the type is decoded at replay.
pub trait Codec: Sized {
    /// Appends the encoding of `self` to `out`.
    fn encode(&self, out: &mut Vec<u8>);
    /// Decodes a value from the bytes one `encode` appended.
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError>;
}

/// A payload that does not decode as the bus's message type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(String);

impl DecodeError {
    /// An error with the given explanation.
    pub fn new(reason: impl fmt::Display) -> Self {
        Self(reason.to_string())
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeError {}

impl Codec for Vec<u8> {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Ok(bytes.to_vec())
    }
}

impl Codec for Box<[u8]> {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Ok(bytes.into())
    }
}

impl Codec for String {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(DecodeError::new)
    }
}

/// Opts a serde type into [`Codec`] through [postcard](https://docs.rs/postcard):
/// `impl shardbus::SerdeCodec for MyMessage {}`.
///
/// Why postcard: a compact binary format (varint integers, no field names, no padding)
/// with a wire format specified and kept stable since its 1.0 release, maintained, `serde`
/// only, no `unsafe` tricks. (bincode, the other common choice, has ended development.)
/// Like every schema-less format it does not tolerate field reordering or type changes:
/// evolve the message type by adding enum variants at the end, or version it yourself.
///
/// Why an opt-in and not every serde type: a blanket impl would collide with the byte and
/// string impls above, which store raw bytes.
#[cfg(feature = "serde")]
pub trait SerdeCodec: serde::Serialize + serde::de::DeserializeOwned {}

#[cfg(feature = "serde")]
impl<T: SerdeCodec> Codec for T {
    fn encode(&self, out: &mut Vec<u8>) {
        // Serializing into a `Vec` fails only for types serde cannot represent (a map
        // with a non-string key is fine in postcard); such a type is a programming error
        // that the first test shows, so an empty payload plus a logged error is enough.
        let buf = std::mem::take(out);
        match postcard::to_extend(self, buf) {
            Ok(buf) => *out = buf,
            Err(e) => tracing::error!(error = %e, "postcard encoding failed"),
        }
    }
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        postcard::from_bytes(bytes).map_err(DecodeError::new)
    }
}

/// A codec erased into function pointers, stored in the bus's shared state.
pub(crate) struct CodecFns<T> {
    pub(crate) encode: fn(&T, &mut Vec<u8>),
    pub(crate) decode: fn(&[u8]) -> Result<T, DecodeError>,
}

impl<T: Codec> CodecFns<T> {
    pub(crate) fn of() -> Self {
        Self {
            encode: T::encode,
            decode: T::decode,
        }
    }
}

impl<T> Clone for CodecFns<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for CodecFns<T> {}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T: Codec + PartialEq + fmt::Debug>(value: T) {
        let mut buf = vec![9]; // encode appends
        value.encode(&mut buf);
        assert_eq!(T::decode(&buf[1..]).unwrap(), value);
    }

    #[test]
    fn built_in_codecs_round_trip() {
        round_trip(b"bytes\0\xff".to_vec());
        round_trip(Box::<[u8]>::from(&b"boxed"[..]));
        round_trip("grüße".to_string());
        assert!(String::decode(&[0xff, 0xfe]).is_err());
    }

    #[cfg(feature = "serde")]
    #[test]
    fn serde_codec_round_trips_through_postcard() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Order {
            id: u64,
            items: Vec<String>,
        }
        impl SerdeCodec for Order {}
        round_trip(Order {
            id: 7,
            items: vec!["a".into(), "b".into()],
        });
        assert!(Order::decode(&[0xff]).is_err());
    }
}
