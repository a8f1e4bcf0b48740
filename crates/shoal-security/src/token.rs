//! Bearer tokens: 192 random bits, stored only as their SHA-256.
//!
//! A token is high-entropy, so a plain (unsalted, fast) hash is enough: no guessing
//! attack on it is cheaper than guessing the token itself.

use ring::{
    digest::{SHA256, digest},
    rand::{SecureRandom as _, SystemRandom},
};

/// What every token starts with (so a leaked one is recognisable in logs and scans).
pub const TOKEN_PREFIX: &str = "shoal_";
const TOKEN_RANDOM_BYTES: usize = 24;
/// Longest token accepted from outside; anything longer is refused before hashing.
pub const TOKEN_CHARS_MAX: usize = 128;

/// A new random token.
pub fn generate() -> String {
    let mut bytes = [0u8; TOKEN_RANDOM_BYTES];
    // The system RNG fails only when the OS has none, and then nothing secure can run.
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the operating system's random number generator failed");
    format!("{TOKEN_PREFIX}{}", hex(&bytes))
}

/// The hex SHA-256 of a token: what the replicated state and files keep.
pub fn hash(token: &str) -> String {
    hash_bytes(token.as_bytes())
}

/// The hex SHA-256 of bytes.
pub fn hash_bytes(bytes: &[u8]) -> String {
    hex(digest(&SHA256, bytes).as_ref())
}

/// Whether `text` has the shape of a token hash (64 lowercase hex characters).
pub fn is_hash(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Checks a token given by a user before it is used: printable, no spaces, bounded.
pub fn validate(token: &str) -> Result<(), String> {
    if token.is_empty() || token.len() > TOKEN_CHARS_MAX {
        return Err(format!("must be 1-{TOKEN_CHARS_MAX} characters"));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be printable ASCII without spaces".into());
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_distinct_and_hash_stably() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 2 * TOKEN_RANDOM_BYTES);
        assert_eq!(hash(&a), hash(&a));
        assert_ne!(hash(&a), hash(&b));
        assert!(is_hash(&hash(&a)));
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(validate(&a).is_ok());
        assert!(validate("has space").is_err());
        assert!(validate("").is_err());
    }
}
