//! Secrets at rest: every secret the hub stores (applications' secrets,
//! subscriptions' signing keys, sessions' fingerprints) is sealed with
//! ChaCha20-Poly1305 under the operator's key before it is written, and
//! opened when read.
//!
//! A sealed value is `tidings-sealed:v1:<key id>:<base64 of nonce, ciphertext
//! and tag>`; the key id is the first 8 hex digits of the key's SHA-256, so
//! the right key is found among several; the additional data binds the value
//! to its table, record and field, so a sealed value moved elsewhere does not
//! open. Without a key values are stored as they are; values stored in clear
//! are read as they are, and re-sealed in the background once a key is given
//! (as are values sealed with a key that is no longer the first).

use base64::Engine;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

/// How a sealed value starts (application secrets may not).
pub const SEALED_PREFIX: &str = "tidings-sealed:";

const VERSION: &str = "v1";

/// Why a stored value could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Sealed with a key the hub was not given.
    #[error("sealed with key {0}, which is not among the secrets keys given")]
    UnknownKey(String),
    /// Not a sealed value of a known form, or altered, or moved.
    #[error("a sealed value does not open (altered, moved from another record, or truncated)")]
    Corrupt,
}

/// A 256-bit key with its id.
struct SecretsKey {
    id: String,
    key: LessSafeKey,
}

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretsKey").field("id", &self.id).finish()
    }
}

impl SecretsKey {
    fn new(bytes: &[u8; 32]) -> Self {
        use sha2::Digest;
        let id = hex::encode(&sha2::Sha256::digest(bytes)[..4]);
        // A 32-byte key is what ChaCha20-Poly1305 takes: this cannot fail.
        let Ok(unbound) = UnboundKey::new(&CHACHA20_POLY1305, bytes) else {
            unreachable!("ChaCha20-Poly1305 takes 32-byte keys")
        };
        Self {
            id,
            key: LessSafeKey::new(unbound),
        }
    }
}

/// The keys secrets are sealed with: the first seals, all open.
#[derive(Debug, Default)]
pub struct Sealer {
    keys: Vec<SecretsKey>,
}

impl Sealer {
    /// No key: values are stored in clear.
    pub fn none() -> Self {
        Self::default()
    }

    /// Seals with the first key; opens with any.
    pub fn new(keys: &[[u8; 32]]) -> Self {
        Self {
            keys: keys.iter().map(SecretsKey::new).collect(),
        }
    }

    /// Reads keys from text: one per line, 64 hex digits or the base64 of
    /// 32 bytes; blank lines and lines starting with `#` are skipped. The
    /// first seals; the others only open (keep them until the background
    /// re-sealing has finished, which the log says).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bytes = hex::decode(line)
                .ok()
                .or_else(|| base64::engine::general_purpose::STANDARD.decode(line).ok())
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| {
                    format!(
                        "line {}: a secrets key is 64 hex digits or the base64 of 32 bytes \
                         (make one with: openssl rand -hex 32)",
                        n + 1
                    )
                })?;
            keys.push(bytes);
        }
        if keys.is_empty() {
            return Err("no key in it (make one with: openssl rand -hex 32)".to_owned());
        }
        Ok(Self::new(&keys))
    }

    /// Whether there is a key (values are sealed).
    pub fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The id of the sealing key, if any.
    pub fn current_id(&self) -> Option<&str> {
        self.keys.first().map(|k| k.id.as_str())
    }

    /// Seals `clear` for the field named by `context` (with no key: as is).
    pub fn seal(&self, clear: &str, context: &str) -> String {
        let Some(key) = self.keys.first() else {
            return clear.to_owned();
        };
        let nonce_bytes = crate::ids::random_bytes::<NONCE_LEN>();
        let mut sealed = clear.as_bytes().to_vec();
        let nonce = Nonce::assume_unique_for_key(nonce_bytes);
        // Sealing fails only for inputs beyond ChaCha20's 256 GiB.
        if key
            .key
            .seal_in_place_append_tag(nonce, Aad::from(context.as_bytes()), &mut sealed)
            .is_err()
        {
            unreachable!("a secret is far below ChaCha20-Poly1305's limit")
        }
        let mut blob = nonce_bytes.to_vec();
        blob.extend_from_slice(&sealed);
        format!(
            "{SEALED_PREFIX}{VERSION}:{}:{}",
            key.id,
            base64::engine::general_purpose::STANDARD.encode(blob)
        )
    }

    /// Opens a stored value for the field named by `context`; a value
    /// stored in clear is returned as it is.
    pub fn open(&self, stored: &str, context: &str) -> Result<String, SealError> {
        let Some(rest) = stored.strip_prefix(SEALED_PREFIX) else {
            return Ok(stored.to_owned());
        };
        let mut parts = rest.splitn(3, ':');
        let (Some(VERSION), Some(id), Some(encoded)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(SealError::Corrupt);
        };
        let key = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or_else(|| SealError::UnknownKey(id.to_owned()))?;
        let blob = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| SealError::Corrupt)?;
        if blob.len() < NONCE_LEN {
            return Err(SealError::Corrupt);
        }
        let (nonce, sealed) = blob.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Corrupt)?;
        let mut in_out = sealed.to_vec();
        let clear = key
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut in_out)
            .map_err(|_| SealError::Corrupt)?;
        String::from_utf8(clear.to_vec()).map_err(|_| SealError::Corrupt)
    }

    /// Whether a stored value should be sealed again: it is in clear or
    /// sealed with another key than the first (never when there is no key).
    pub fn stale(&self, stored: &str) -> bool {
        let Some(id) = self.current_id() else {
            return false;
        };
        let current = format!("{SEALED_PREFIX}{VERSION}:{id}:");
        !stored.starts_with(&current)
    }
}

/// A stored record, with the secrets it holds (if any): each named, so a
/// sealed value is bound to its field.
pub trait HoldsSecrets {
    /// Its secrets, by field name.
    fn secrets_mut(&mut self) -> Vec<(&'static str, &mut String)> {
        Vec::new()
    }
}

impl Sealer {
    /// A copy of `record` (key `key` of `table`) with its secrets sealed.
    pub fn seal_record<T: HoldsSecrets + Clone>(&self, table: &str, key: &str, record: &T) -> T {
        let mut sealed = record.clone();
        for (field, value) in sealed.secrets_mut() {
            *value = self.seal(value, &format!("{table}/{key}/{field}"));
        }
        sealed
    }

    /// `record` (key `key` of `table`) with its secrets opened.
    pub fn open_record<T: HoldsSecrets>(
        &self,
        table: &str,
        key: &str,
        mut record: T,
    ) -> Result<T, SealError> {
        for (field, value) in record.secrets_mut() {
            *value = self.open(value, &format!("{table}/{key}/{field}"))?;
        }
        Ok(record)
    }

    /// Whether any secret of a stored `record` should be sealed again.
    pub fn stale_record<T: HoldsSecrets>(&self, record: &mut T) -> bool {
        record.secrets_mut().iter().any(|(_, v)| self.stale(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_opens_and_binds_to_the_field() {
        let old = Sealer::new(&[[1; 32]]);
        let both = Sealer::new(&[[2; 32], [1; 32]]);
        let sealed = old.seal("user-service-secret", "t/a/secret");
        assert!(sealed.starts_with(SEALED_PREFIX) && !sealed.contains("user-service"));
        assert_ne!(
            sealed,
            old.seal("user-service-secret", "t/a/secret"),
            "fresh nonce"
        );
        assert_eq!(
            old.open(&sealed, "t/a/secret").ok().as_deref(),
            Some("user-service-secret")
        );
        // A rotated key set opens the old value, and calls it stale.
        assert_eq!(
            both.open(&sealed, "t/a/secret").ok().as_deref(),
            Some("user-service-secret")
        );
        assert!(both.stale(&sealed) && !old.stale(&sealed));
        assert!(!both.stale(&both.seal("x", "c")));
        // Moved to another record or field, altered, or unknown key: refused.
        assert_eq!(old.open(&sealed, "t/b/secret"), Err(SealError::Corrupt));
        let mut altered = sealed.clone();
        altered.pop();
        altered.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert!(old.open(&altered, "t/a/secret").is_err());
        assert!(matches!(
            Sealer::new(&[[3; 32]]).open(&sealed, "t/a/secret"),
            Err(SealError::UnknownKey(_))
        ));
        // Clear values pass; without a key nothing is sealed or stale.
        assert_eq!(old.open("plain", "c").ok().as_deref(), Some("plain"));
        assert!(old.stale("plain"));
        assert_eq!(Sealer::none().seal("plain", "c"), "plain");
        assert!(!Sealer::none().stale("plain"));
    }

    #[test]
    fn key_files() {
        let text = format!(
            "# new\n{}\n\n{}\n",
            "ab".repeat(32),
            base64::engine::general_purpose::STANDARD.encode([9u8; 32])
        );
        let sealer = Sealer::parse(&text).map(|s| s.keys.len());
        assert_eq!(sealer, Ok(2));
        assert!(Sealer::parse("# nothing\n").is_err());
        assert!(Sealer::parse("abcd\n").is_err());
    }
}
