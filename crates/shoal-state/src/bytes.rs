//! `#[serde(with = "crate::bytes")]` for `Vec<u8>` fields: serde's default writes a
//! `Vec<u8>` as a sequence of single bytes (one call per byte); this writes it as one
//! byte string. For postcard both produce the same bytes (length, then the bytes), so
//! logs and snapshots written before read back unchanged; it is only faster.

use std::fmt;

use serde::{Deserializer, Serializer, de};

pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bytes(bytes)
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    d.deserialize_byte_buf(BytesVisitor)
}

struct BytesVisitor;

impl<'de> de::Visitor<'de> for BytesVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(v)
    }

    /// Formats without byte strings (JSON) write a sequence of numbers.
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
        while let Some(b) = seq.next_element::<u8>()? {
            out.push(b);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Plain {
        value: Vec<u8>,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Fast {
        #[serde(with = "crate::bytes")]
        value: Vec<u8>,
    }

    #[test]
    fn postcard_bytes_are_identical_both_ways() {
        let value: Vec<u8> = (0..=255).collect();
        let plain = postcard::to_allocvec(&Plain {
            value: value.clone(),
        })
        .unwrap();
        let fast = postcard::to_allocvec(&Fast {
            value: value.clone(),
        })
        .unwrap();
        assert_eq!(plain, fast);
        let back: Fast = postcard::from_bytes(&plain).unwrap();
        assert_eq!(back.value, value);
    }

    #[test]
    fn json_round_trips() {
        let fast = Fast {
            value: vec![1, 2, 250],
        };
        let text = serde_json::to_string(&fast).unwrap();
        assert_eq!(serde_json::from_str::<Fast>(&text).unwrap(), fast);
    }
}
