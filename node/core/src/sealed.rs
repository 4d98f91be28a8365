//! Sealed records: records for chosen members that any member can store and forward but
//! only their audience (and their author) can read.
//!
//! A sealed record is an ordinary signed record with schema [`SEALED_SCHEMA`], audience
//! MEMBERS, and a payload that is the protobuf encoding of `coalition.v1.Sealed`: one
//! ChaCha20-Poly1305 ciphertext of the real schema and payload under a fresh 32-byte
//! content key, and that content key wrapped with HPKE (RFC 9180) to each recipient's
//! X25519 key ([`key`]). The author's signature covers the envelope and the ciphertext, so
//! a relay can check the record without any key but can neither read nor alter it. The
//! inner schema is inside the ciphertext: a relay cannot tell a finding from an annex.
//!
//! This module is pure: it seals, checks the envelope's structure ([`parse`]) and opens.
//! Which records a node seals, and for whom, is the node's business; the record check
//! ([`crate::check::prepare`]) calls [`parse`] and the audience rule, and
//! [`crate::check::prepare_opened`] validates what [`open`] returns. `docs/FORMATS.md` §6
//! gives every byte.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use coalition_proto::v1 as pb;
use hpke::{Deserializable, OpModeR, OpModeS, Serializable};
use prost::Message;
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::finding::{ANNEX_SCHEMA, FINDING_SCHEMA, RETRACTION_SCHEMA};
use crate::identity::OrgKey;
use crate::record::{Record, MAX_AUDIENCE_MEMBERS};

mod grant;
pub mod key;

pub use grant::grant_keys;
pub use key::{
    current_encryption_key, encryption_key_of, encryption_key_payload, public, EncryptionKey,
    ENCRYPTION_KEY_SCHEMA,
};

/// Schema id of a sealed record (its payload is a `coalition.v1.Sealed`).
pub const SEALED_SCHEMA: &str = "sealed/v1";
/// The inner schemas a sealed record may carry. Governance records, grants, node
/// certificates and encryption keys are never sealed: every member must read them.
pub const SEALABLE_SCHEMAS: &[&str] = &[FINDING_SCHEMA, ANNEX_SCHEMA, RETRACTION_SCHEMA];
/// Most wrapped keys a sealed record carries: every member of the largest audience, and
/// the author.
pub const MAX_WRAPS: usize = MAX_AUDIENCE_MEMBERS + 1;
/// Shortest ciphertext: the 16-byte Poly1305 tag.
pub const MIN_CIPHERTEXT_BYTES: usize = 16;
/// Prefix of the content cipher's associated data, followed by the author's 32-byte key.
pub const CONTENT_AAD_PREFIX: &[u8] = b"coalition/v1/sealed\0";
/// Prefix of the HPKE `info` of a wrap, followed by the author's and the recipient's keys.
pub const WRAP_INFO_PREFIX: &[u8] = b"coalition/v1/sealed-key\0";
/// Length of the HPKE encapsulated key (DHKEM(X25519): Nenc = 32).
pub const ENC_BYTES: usize = 32;
/// Length of a wrapped content key: 32 bytes and the 16-byte tag.
pub const WRAPPED_BYTES: usize = 48;

/// HPKE suite of every wrap: KDF HKDF-SHA256 (id 0x0001), AEAD ChaCha20Poly1305 (0x0003).
type Kdf = hpke::kdf::HkdfSha256;
type WrapAead = hpke::aead::ChaCha20Poly1305;
use key::Kem;

/// Whether records of `schema` may be sealed.
pub fn is_sealable(schema: &str) -> bool {
    SEALABLE_SCHEMAS.contains(&schema)
}

/// Why a sealed payload cannot be made, or is not a well-formed sealed envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The inner schema is not one that may be sealed.
    #[error("records of schema {schema:?} are never sealed (only finding/v1, annex/v1 and retraction/v1 are); share it with the coalition instead")]
    NotSealable {
        /// The schema given.
        schema: String,
    },
    /// One organisation is listed twice.
    #[error("organisation {org} is listed twice among the recipients; list each recipient once")]
    DuplicateRecipient {
        /// Its key (short form).
        org: String,
    },
    /// The author is not among the recipients (it must be able to read its own record).
    #[error("the author {org} is not among the recipients; include the author's own current encryption key so it can read the record back")]
    AuthorNotRecipient {
        /// The author (short form).
        org: String,
    },
    /// No recipient, or more than [`MAX_WRAPS`].
    #[error("{count} wrapped keys; a sealed record carries 1 to {max} (the author and at most 256 audience members)")]
    WrapCount {
        /// How many.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A recipient's encryption key is a small-order point nothing can be sealed to.
    #[error("the encryption key {key} of organisation {org} cannot be encrypted to (a small-order X25519 point); ask that organisation to publish a new encryption key")]
    UnusableKey {
        /// The recipient (short form).
        org: String,
        /// The key (short form).
        key: String,
    },
    /// The envelope is not a canonical `coalition.v1.Sealed` with fields of the right size.
    #[error("malformed sealed envelope: {0}; the author's software must write the canonical encoding of coalition.v1.Sealed")]
    Malformed(String),
}

/// Why a sealed record does not open for this organisation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The record is not a sealed record at all.
    #[error("record {record} has schema {schema:?}, not sealed/v1: it is not encrypted, read its payload directly")]
    NotSealed {
        /// Record id (short form).
        record: String,
        /// Its schema.
        schema: String,
    },
    /// The envelope is malformed (see [`parse`]).
    #[error("record {record}: {source}")]
    Malformed {
        /// Record id (short form).
        record: String,
        /// What is wrong.
        source: SealError,
    },
    /// The record holds no wrapped key for this organisation.
    #[error("record {record} is sealed for other organisations, not for {me}; only its author can share it with you (by a grant)")]
    NotRecipient {
        /// Record id (short form).
        record: String,
        /// This organisation (short form).
        me: String,
    },
    /// The wrap is for an encryption key whose secret this key file does not hold.
    #[error("record {record} was sealed to encryption key {key}, whose secret is not in this key file (rotated away or lost); restore a key file that still holds it, or ask the author for a grant to your current key")]
    NoSecret {
        /// Record id (short form).
        record: String,
        /// The key it was wrapped to (short form).
        key: String,
    },
    /// The HPKE wrap does not open: forged, corrupted, or moved from another record.
    #[error("record {record}: the wrapped key for {me} does not open (forged, corrupted, or taken from another record); do not trust it, and fetch the record again from its author")]
    BadWrap {
        /// Record id (short form).
        record: String,
        /// This organisation (short form).
        me: String,
    },
    /// The ciphertext does not open under the unwrapped content key.
    #[error("record {record}: the content does not decrypt under its key (forged or corrupted); do not trust it, and fetch the record again from its author")]
    BadCiphertext {
        /// Record id (short form).
        record: String,
    },
    /// The decrypted content is not a canonical `SealedContent`, or its schema may not be
    /// sealed.
    #[error("record {record}: the decrypted content is malformed ({reason}); the author's software sealed something invalid, report it to the author")]
    BadContent {
        /// Record id (short form).
        record: String,
        /// What is wrong.
        reason: String,
    },
}

/// A record's 32-byte content key; wiped from memory when dropped, never printed.
#[derive(Clone)]
pub struct ContentKey(Zeroizing<[u8; 32]>);

impl ContentKey {
    /// A fresh random content key (the operating system's CSPRNG).
    fn generate() -> Self {
        let mut k = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(k.as_mut());
        Self(k)
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for ContentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContentKey(..)")
    }
}

/// Someone a record is sealed for: an organisation and its current encryption key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recipient {
    /// The organisation.
    pub org: OrgKey,
    /// Its X25519 encryption key (from its latest `encryption-key/v1` record).
    pub key: EncryptionKey,
}

/// What [`seal`] makes: the bytes for `RecordBody.payload` and the content key (keep it
/// only while a grant may need to wrap it again; it is wiped when dropped).
#[derive(Debug)]
pub struct SealedPayload {
    /// The encoded `coalition.v1.Sealed`: the payload of a `sealed/v1` record.
    pub payload: Vec<u8>,
    /// The record's content key.
    pub content_key: ContentKey,
}

/// The content key wrapped to one recipient (`coalition.v1.WrappedKey`, or the JSON
/// object of a grant's `keys`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    /// The recipient organisation.
    pub recipient: OrgKey,
    /// The encryption key it was wrapped to.
    pub encryption_key: EncryptionKey,
    /// HPKE encapsulated key.
    pub enc: [u8; ENC_BYTES],
    /// HPKE ciphertext of the content key.
    pub wrapped: [u8; WRAPPED_BYTES],
}

/// A structurally valid sealed envelope, read without any key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedView {
    /// One wrap per recipient, in the order of the envelope.
    pub keys: Vec<WrappedKey>,
    /// The content ciphertext.
    pub ciphertext: Vec<u8>,
}

impl SealedView {
    /// The organisations the record holds a wrapped key for.
    pub fn recipients(&self) -> impl Iterator<Item = &OrgKey> {
        self.keys.iter().map(|k| &k.recipient)
    }

    /// The wrap for `org`, if any.
    pub fn key_for(&self, org: &OrgKey) -> Option<&WrappedKey> {
        self.keys.iter().find(|k| k.recipient == *org)
    }
}

/// What an opened sealed record says: its inner schema and payload.
#[derive(Debug)]
pub struct Opened {
    /// Inner schema id (one of [`SEALABLE_SCHEMAS`]).
    pub schema: String,
    /// Inner payload (UTF-8 JSON, not yet validated: see [`crate::check::prepare_opened`]).
    pub payload: Vec<u8>,
    /// The content key, for wrapping it to members added later by a grant ([`wrap_for`]).
    pub content_key: ContentKey,
}

/// `"coalition/v1/sealed\0" || author`: the content cipher's associated data.
pub fn content_aad(author: &OrgKey) -> Vec<u8> {
    [CONTENT_AAD_PREFIX, author.as_bytes()].concat()
}

/// `"coalition/v1/sealed-key\0" || author || recipient`: the HPKE `info` of a wrap.
pub fn wrap_info(author: &OrgKey, recipient: &OrgKey) -> Vec<u8> {
    [WRAP_INFO_PREFIX, author.as_bytes(), recipient.as_bytes()].concat()
}

/// `SHA-256(ciphertext)`: the HPKE `aad` of every wrap, binding it to this ciphertext.
pub fn wrap_aad(ciphertext: &[u8]) -> [u8; 32] {
    Sha256::digest(ciphertext).into()
}

/// Seals `payload` of inner schema `schema`, by `author`, for `recipients` (which must
/// include the author with its own current key, and list each organisation once). The
/// record to sign around it has schema [`SEALED_SCHEMA`] and audience MEMBERS listing at
/// least every recipient but the author.
pub fn seal(
    author: &OrgKey,
    schema: &str,
    payload: &[u8],
    recipients: &[Recipient],
) -> Result<SealedPayload, SealError> {
    if !is_sealable(schema) {
        return Err(SealError::NotSealable {
            schema: schema.to_string(),
        });
    }
    if recipients.is_empty() || recipients.len() > MAX_WRAPS {
        return Err(SealError::WrapCount {
            count: recipients.len(),
            max: MAX_WRAPS,
        });
    }
    check_unique(recipients.iter().map(|r| &r.org))?;
    if !recipients.iter().any(|r| r.org == *author) {
        return Err(SealError::AuthorNotRecipient {
            org: author.short(),
        });
    }
    let content_key = ContentKey::generate();
    let plain = Zeroizing::new(
        pb::SealedContent {
            schema: schema.to_string(),
            payload: payload.to_vec().into(),
        }
        .encode_to_vec(),
    );
    let ciphertext = ChaCha20Poly1305::new(content_key.as_bytes().into())
        .encrypt(
            &Nonce::default(),
            Payload {
                msg: &plain,
                aad: &content_aad(author),
            },
        )
        .expect("ChaCha20-Poly1305 encrypts any message under 256 GiB");
    let keys = recipients
        .iter()
        .map(|r| wrap_for(author, &content_key, &ciphertext, r))
        .collect::<Result<Vec<_>, _>>()?;
    let payload = pb::Sealed {
        keys: keys.iter().map(WrappedKey::to_proto).collect(),
        ciphertext: ciphertext.into(),
    }
    .encode_to_vec();
    Ok(SealedPayload {
        payload,
        content_key,
    })
}

/// Wraps `content_key` of the record by `author` whose content ciphertext is `ciphertext`
/// to `recipient`. Used by [`seal`], and by a grant that widens a sealed record's audience:
/// the same content key is wrapped again, the ciphertext is never re-encrypted.
pub fn wrap_for(
    author: &OrgKey,
    content_key: &ContentKey,
    ciphertext: &[u8],
    recipient: &Recipient,
) -> Result<WrappedKey, SealError> {
    let unusable = || SealError::UnusableKey {
        org: recipient.org.short(),
        key: recipient.key.short(),
    };
    let (enc, wrapped) = hpke::single_shot_seal::<WrapAead, Kdf, Kem>(
        &OpModeS::Base,
        &recipient.key.hpke_public(),
        &wrap_info(author, &recipient.org),
        content_key.as_bytes(),
        &wrap_aad(ciphertext),
    )
    .map_err(|_| unusable())?;
    Ok(WrappedKey {
        recipient: recipient.org,
        encryption_key: recipient.key,
        enc: enc.to_bytes().into(),
        wrapped: wrapped.try_into().map_err(|_| unusable())?,
    })
}

/// Checks the structure of a sealed payload without any key: a canonical
/// `coalition.v1.Sealed` with 1 to [`MAX_WRAPS`] wraps of exact field sizes, each for a
/// valid organisation key and no organisation twice, and a ciphertext of at least
/// [`MIN_CIPHERTEXT_BYTES`].
pub fn parse(payload: &[u8]) -> Result<SealedView, SealError> {
    let bad = |m: String| SealError::Malformed(m);
    // Counted before decoding: 1 MiB of empty `keys` entries (2 bytes each) would decode
    // to half a million structs, some 64 MiB.
    let count = wrap_count(payload)?;
    if count == 0 || count > MAX_WRAPS {
        return Err(SealError::WrapCount {
            count,
            max: MAX_WRAPS,
        });
    }
    let sealed = pb::Sealed::decode(payload).map_err(|e| bad(e.to_string()))?;
    if sealed.encoded_len() != payload.len() || sealed.encode_to_vec() != payload {
        return Err(bad(
            "not canonically encoded (unknown, repeated or out-of-order fields)".into(),
        ));
    }
    if sealed.ciphertext.len() < MIN_CIPHERTEXT_BYTES {
        return Err(bad(format!(
            "ciphertext of {} bytes, shorter than the {MIN_CIPHERTEXT_BYTES}-byte tag",
            sealed.ciphertext.len()
        )));
    }
    let keys = sealed
        .keys
        .iter()
        .enumerate()
        .map(|(i, k)| WrappedKey::from_proto(k).map_err(|m| bad(format!("wrapped key #{i}: {m}"))))
        .collect::<Result<Vec<_>, _>>()?;
    check_unique(keys.iter().map(|k| &k.recipient))?;
    Ok(SealedView {
        keys,
        ciphertext: sealed.ciphertext.to_vec(),
    })
}

/// The number of `keys` entries (field 1) in an encoded `Sealed`, read from the framing
/// alone, allocating nothing. Every field of a `Sealed` is length-delimited; anything
/// else, or a length past the end, is malformed.
fn wrap_count(mut buf: &[u8]) -> Result<usize, SealError> {
    use prost::encoding::{decode_key, decode_varint, WireType};
    let bad = |m: &str| SealError::Malformed(m.to_string());
    let mut count = 0;
    while !buf.is_empty() {
        let (tag, wire_type) = decode_key(&mut buf).map_err(|e| bad(&e.to_string()))?;
        if wire_type != WireType::LengthDelimited {
            return Err(bad(
                "a field of coalition.v1.Sealed is not length-delimited",
            ));
        }
        let len = decode_varint(&mut buf).map_err(|e| bad(&e.to_string()))?;
        let len = usize::try_from(len)
            .ok()
            .filter(|l| *l <= buf.len())
            .ok_or_else(|| bad("a field runs past the end of the envelope"))?;
        buf = &buf[len..];
        if tag == 1 {
            count += 1;
        }
    }
    Ok(count)
}

/// Opens sealed `record` as organisation `me`, with its encryption secrets `secrets`
/// ([`crate::identity::Identity::encryption_secrets`]): finds the wrap for `me`, the
/// secret of the key it was wrapped to, unwraps the content key and decrypts.
pub fn open(
    record: &Record,
    me: &OrgKey,
    secrets: &[Zeroizing<[u8; 32]>],
) -> Result<Opened, OpenError> {
    let view = view_of(record)?;
    let wrap = view.key_for(me).ok_or_else(|| OpenError::NotRecipient {
        record: record.id.short(),
        me: me.short(),
    })?;
    open_sealed(record, &view.ciphertext, wrap, secrets)
}

/// Opens sealed `record` with a wrap that came from elsewhere (a grant's `keys`), made for
/// `me`: as [`open`], but with `wrap` instead of one of the record's own.
pub fn open_with_wrap(
    record: &Record,
    wrap: &WrappedKey,
    me: &OrgKey,
    secrets: &[Zeroizing<[u8; 32]>],
) -> Result<Opened, OpenError> {
    let view = view_of(record)?;
    if wrap.recipient != *me {
        return Err(OpenError::NotRecipient {
            record: record.id.short(),
            me: me.short(),
        });
    }
    open_sealed(record, &view.ciphertext, wrap, secrets)
}

/// Unwraps the content key from `wrap`, for the record by `author` whose content
/// ciphertext is `ciphertext`. `record` only names the record in errors.
pub fn open_wrap(
    author: &OrgKey,
    ciphertext: &[u8],
    wrap: &WrappedKey,
    secrets: &[Zeroizing<[u8; 32]>],
    record: &str,
) -> Result<ContentKey, OpenError> {
    let secret =
        key::secret_for(secrets, &wrap.encryption_key).ok_or_else(|| OpenError::NoSecret {
            record: record.to_string(),
            key: wrap.encryption_key.short(),
        })?;
    let bad = || OpenError::BadWrap {
        record: record.to_string(),
        me: wrap.recipient.short(),
    };
    let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(&wrap.enc).map_err(|_| bad())?;
    let plain = hpke::single_shot_open::<WrapAead, Kdf, Kem>(
        &OpModeR::Base,
        &key::private(secret),
        &enc,
        &wrap_info(author, &wrap.recipient),
        &wrap.wrapped,
        &wrap_aad(ciphertext),
    )
    .map(Zeroizing::new)
    .map_err(|_| bad())?;
    if plain.len() != 32 {
        return Err(bad());
    }
    let mut k = Zeroizing::new([0u8; 32]);
    k.copy_from_slice(&plain);
    Ok(ContentKey(k))
}

/// Decrypts the content `ciphertext` of the record by `author` under `content_key`:
/// returns the inner schema and payload. `record` only names the record in errors.
pub fn decrypt(
    author: &OrgKey,
    ciphertext: &[u8],
    content_key: &ContentKey,
    record: &str,
) -> Result<(String, Vec<u8>), OpenError> {
    let plain = ChaCha20Poly1305::new(content_key.as_bytes().into())
        .decrypt(
            &Nonce::default(),
            Payload {
                msg: ciphertext,
                aad: &content_aad(author),
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| OpenError::BadCiphertext {
            record: record.to_string(),
        })?;
    let bad = |reason: String| OpenError::BadContent {
        record: record.to_string(),
        reason,
    };
    let content = pb::SealedContent::decode(plain.as_slice()).map_err(|e| bad(e.to_string()))?;
    if content.encode_to_vec().as_slice() != plain.as_slice() {
        return Err(bad("SealedContent is not canonically encoded".into()));
    }
    if !is_sealable(&content.schema) {
        return Err(bad(format!(
            "inner schema {:?} may not be sealed",
            content.schema.chars().take(64).collect::<String>()
        )));
    }
    Ok((content.schema, content.payload.to_vec()))
}

fn view_of(record: &Record) -> Result<SealedView, OpenError> {
    if record.schema != SEALED_SCHEMA {
        return Err(OpenError::NotSealed {
            record: record.id.short(),
            schema: record.schema.clone(),
        });
    }
    parse(&record.payload).map_err(|source| OpenError::Malformed {
        record: record.id.short(),
        source,
    })
}

fn open_sealed(
    record: &Record,
    ciphertext: &[u8],
    wrap: &WrappedKey,
    secrets: &[Zeroizing<[u8; 32]>],
) -> Result<Opened, OpenError> {
    let name = record.id.short();
    let content_key = open_wrap(&record.author, ciphertext, wrap, secrets, &name)?;
    let (schema, payload) = decrypt(&record.author, ciphertext, &content_key, &name)?;
    Ok(Opened {
        schema,
        payload,
        content_key,
    })
}

pub(crate) fn check_unique<'a>(orgs: impl Iterator<Item = &'a OrgKey>) -> Result<(), SealError> {
    let mut seen = std::collections::BTreeSet::new();
    for org in orgs {
        if !seen.insert(*org) {
            return Err(SealError::DuplicateRecipient { org: org.short() });
        }
    }
    Ok(())
}

impl WrappedKey {
    pub(crate) fn to_proto(&self) -> pb::WrappedKey {
        pb::WrappedKey {
            recipient: self.recipient.as_bytes().to_vec().into(),
            encryption_key: self.encryption_key.as_bytes().to_vec().into(),
            enc: self.enc.to_vec().into(),
            wrapped: self.wrapped.to_vec().into(),
        }
    }

    pub(crate) fn from_proto(k: &pb::WrappedKey) -> Result<Self, String> {
        let size = |field: &str, b: &[u8], n: usize| {
            if b.len() == n {
                Ok(())
            } else {
                Err(format!("{field} is {} bytes, expected {n}", b.len()))
            }
        };
        size("recipient", &k.recipient, 32)?;
        size("encryption_key", &k.encryption_key, 32)?;
        size("enc", &k.enc, ENC_BYTES)?;
        size("wrapped", &k.wrapped, WRAPPED_BYTES)?;
        Ok(Self {
            recipient: OrgKey::from_bytes(&k.recipient).map_err(|r| format!("recipient: {r}"))?,
            encryption_key: EncryptionKey::from_slice(&k.encryption_key).expect("32 bytes"),
            enc: k.enc.as_ref().try_into().expect("checked size"),
            wrapped: k.wrapped.as_ref().try_into().expect("checked size"),
        })
    }
}

#[cfg(test)]
mod grant_tests;
#[cfg(test)]
mod tests;
