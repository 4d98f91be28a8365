//! X25519 encryption keys: the public half of an organisation's encryption secrets, and
//! the `encryption-key/v1` record that publishes it.
//!
//! Every organisation's key file holds X25519 static secrets beside its ed25519 seed
//! ([`Identity::encryption_secrets`], newest first). The public key of the newest one is
//! published in an `encryption-key/v1` record with audience COALITION, so any member can
//! seal a record to it. A rotation is a newer such record: the author's record with the
//! highest `seq` is its current key. Keys are separate records (not charter fields) so a
//! rotation needs no membership vote and leaves the charter valid.

use std::fmt;
use std::str::FromStr;

use hpke::{Deserializable, Kem as _, Serializable};
use zeroize::Zeroizing;

use crate::identity::{Identity, OrgKey};
use crate::record::{Audience, Record};

/// Schema id of the record that publishes an organisation's current encryption key.
pub const ENCRYPTION_KEY_SCHEMA: &str = "encryption-key/v1";

/// The HPKE KEM of sealed records: DHKEM(X25519, HKDF-SHA256), RFC 9180 KEM id 0x0020.
pub(crate) type Kem = hpke::kem::X25519HkdfSha256;

/// An organisation's X25519 public encryption key (32 bytes, shown as 64 lower-case hex).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EncryptionKey(pub [u8; 32]);

/// A string that is not an encryption key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid encryption key {input:?}: expected 64 lower-case hex characters (an X25519 public key)")]
pub struct BadEncryptionKey {
    /// What was given (at most 80 characters of it).
    pub input: String,
}

impl EncryptionKey {
    /// From 32 raw bytes (`None` for any other length). Any 32 bytes are accepted here; a
    /// key that cannot be encrypted to (a small-order point) is refused by
    /// [`EncryptionKey::check_usable`] and by sealing.
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        b.try_into().ok().map(Self)
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// First 12 hex characters: the key id shown in tables and errors.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }

    /// Whether a wrap can be made to this key: HPKE refuses a key whose Diffie-Hellman
    /// result is all zeros (a small-order point, which would make every wrap readable by
    /// anyone). Costs one X25519 operation.
    pub fn check_usable(&self) -> bool {
        let Ok(pk) = <Kem as hpke::Kem>::PublicKey::from_bytes(&self.0) else {
            return false;
        };
        Kem::encap(&pk, None).is_ok()
    }

    pub(crate) fn hpke_public(&self) -> <Kem as hpke::Kem>::PublicKey {
        <Kem as hpke::Kem>::PublicKey::from_bytes(&self.0).expect("32 bytes is an X25519 key")
    }
}

/// The public key of X25519 static secret `secret` (the secret is clamped as RFC 7748 and
/// RFC 9180 §7.1.2 say, so any 32 bytes are a secret).
pub fn public(secret: &[u8; 32]) -> EncryptionKey {
    let sk = private(secret);
    let mut out = [0u8; 32];
    out.copy_from_slice(&Kem::sk_to_pk(&sk).to_bytes());
    EncryptionKey(out)
}

pub(crate) fn private(secret: &[u8; 32]) -> <Kem as hpke::Kem>::PrivateKey {
    <Kem as hpke::Kem>::PrivateKey::from_bytes(secret).expect("32 bytes is an X25519 secret")
}

impl Identity {
    /// The public key of this organisation's newest encryption secret: the one to publish
    /// in an `encryption-key/v1` record ([`encryption_key_payload`]).
    pub fn encryption_key(&self) -> EncryptionKey {
        public(&self.encryption_secrets()[0])
    }
}

/// The secret among `secrets` whose public key is `key`, if any.
pub(crate) fn secret_for<'a>(
    secrets: &'a [Zeroizing<[u8; 32]>],
    key: &EncryptionKey,
) -> Option<&'a Zeroizing<[u8; 32]>> {
    secrets.iter().find(|s| public(s) == *key)
}

impl FromStr for EncryptionKey {
    type Err = BadEncryptionKey;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadEncryptionKey {
            input: s.chars().take(80).collect(),
        };
        if s.len() != 64 || s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(bad());
        }
        let bytes = hex::decode(s).map_err(|_| bad())?;
        Self::from_slice(&bytes).ok_or_else(bad)
    }
}

impl fmt::Display for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EncryptionKey({})", self.short())
    }
}

impl serde::Serialize for EncryptionKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for EncryptionKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The `encryption-key/v1` payload publishing `key`: `{"x25519":"<64 hex>"}` (compact
/// JSON, the bytes to sign). Sign it with audience COALITION.
pub fn encryption_key_payload(key: &EncryptionKey) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "x25519": key.to_hex() }))
        .expect("JSON values serialise")
}

/// The key an `encryption-key/v1` record publishes (`None` for any other record, or a
/// payload that does not parse; [`crate::check::prepare`] refuses those at the door).
pub fn encryption_key_of(record: &Record) -> Option<EncryptionKey> {
    if record.schema != ENCRYPTION_KEY_SCHEMA || record.audience != Audience::Coalition {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&record.payload).ok()?;
    v["x25519"].as_str()?.parse().ok()
}

/// The current encryption key of `author`: the one published by its `encryption-key/v1`
/// record with the highest `seq` among `records` (records by others, and other schemas,
/// are skipped). Two records with one `seq` are a fork; the key with the larger bytes is
/// taken so every node picks the same one.
pub fn current_encryption_key<'a>(
    author: &OrgKey,
    records: impl IntoIterator<Item = &'a Record>,
) -> Option<EncryptionKey> {
    records
        .into_iter()
        .filter(|r| r.author == *author)
        .filter_map(|r| Some((r.seq, encryption_key_of(r)?)))
        .max()
        .map(|(_, k)| k)
}
