//! Organisation identity: the ed25519 signing key, the secrets that travel with it, and
//! their encrypted key file.
//!
//! A seized laptop must not give away the key, so the key file holds the secrets only as
//! XChaCha20-Poly1305 ciphertext under a key derived from the operator's passphrase with
//! argon2id. The public key and the KDF parameters are bound into the AEAD as associated
//! data, so a file whose header was edited fails to open just like a wrong passphrase.
//!
//! Key file format 2 (`coalition-key/v2`) seals, beside the 32-byte ed25519 seed, a random
//! 32-byte store key (the store's encryption key at rest) and the organisation's X25519
//! encryption secrets for sealed records, newest first: the plaintext is
//! `seed ‖ store_key ‖ enc_0 ‖ enc_1 ‖ …`, 32 bytes each, at least one encryption secret.
//! A format 1 file (the seed alone) opens and is rewritten as format 2 in place, with new
//! random secrets, the first time it is loaded.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use rand::rngs::OsRng;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Errors opening or creating a key file, or parsing a key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The passphrase does not open the key file (or the file was altered).
    #[error("wrong passphrase for {path} (set COALITION_PASSPHRASE or type it at the prompt); if the passphrase is right, the key file was altered: restore it from your backup")]
    WrongPassphrase {
        /// The key file.
        path: String,
    },
    /// The key file could not be read or parsed.
    #[error("cannot read key file {path}: {reason}")]
    KeyFile {
        /// The key file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The passphrase is empty or too short.
    #[error("the passphrase must be at least {min} characters long")]
    WeakPassphrase {
        /// Minimum length.
        min: usize,
    },
    /// A public key string is malformed.
    #[error("invalid organisation key {input:?}: {reason} (expected 64 lowercase hex characters)")]
    BadKey {
        /// What was given.
        input: String,
        /// Why it was rejected.
        reason: &'static str,
    },
}

/// Minimum passphrase length accepted by `init`.
pub const MIN_PASSPHRASE_LEN: usize = 8;

/// Keys each thread has decompressed and checked, at most this many before it starts over.
const CHECKED_KEYS: usize = 256;

thread_local! {
    static CHECKED: std::cell::RefCell<std::collections::HashMap<[u8; 32], VerifyingKey>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// Decompresses `bytes` as an ed25519 point and refuses weak (small-order) keys.
///
/// Decompression costs about a third of a signature check, and an import or a sync checks
/// many records by a few authors, so each thread remembers the last keys it accepted
/// (bounded; cleared when full). Rejected keys are never remembered: they are checked again
/// each time, so hostile input cannot fill the cache with anything but valid keys.
fn checked_key(bytes: &[u8; 32]) -> Result<VerifyingKey, &'static str> {
    if let Some(vk) = CHECKED.with(|c| c.borrow().get(bytes).copied()) {
        return Ok(vk);
    }
    let vk = VerifyingKey::from_bytes(bytes).map_err(|_| "not a valid ed25519 public key")?;
    if vk.is_weak() {
        return Err("weak (small-order) ed25519 public key");
    }
    CHECKED.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= CHECKED_KEYS {
            c.clear();
        }
        c.insert(*bytes, vk);
    });
    Ok(vk)
}

/// An organisation's public key: the identity other members and auditors know it by.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrgKey([u8; 32]);

impl OrgKey {
    /// Parses and checks raw key bytes: must be a valid, non-weak ed25519 point.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, &'static str> {
        Self::with_verifying_key(bytes).map(|(key, _)| key)
    }

    /// As [`OrgKey::from_bytes`], also returning the decompressed verifying key, so a
    /// caller about to check a signature does not decompress the point a second time.
    pub fn with_verifying_key(bytes: &[u8]) -> Result<(Self, VerifyingKey), &'static str> {
        let arr: [u8; 32] = bytes.try_into().map_err(|_| "not 32 bytes")?;
        Ok((Self(arr), checked_key(&arr)?))
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The ed25519 verifying key.
    pub fn verifying_key(&self) -> VerifyingKey {
        // Checked in `from_bytes`, the only constructor.
        checked_key(&self.0).expect("OrgKey holds a valid point")
    }

    /// Lowercase hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Short form for tables: first 12 hex characters.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }
}

impl FromStr for OrgKey {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason| IdentityError::BadKey {
            input: s.to_string(),
            reason,
        };
        if s.len() != 64 {
            return Err(bad("wrong length"));
        }
        let bytes = hex::decode(s).map_err(|_| bad("not hex"))?;
        Self::from_bytes(&bytes).map_err(bad)
    }
}

impl fmt::Display for OrgKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for OrgKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OrgKey({})", self.short())
    }
}

impl Serialize for OrgKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for OrgKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The organisation's signing identity and the secrets sealed beside it, unlocked in memory.
pub struct Identity {
    signing: SigningKey,
    key: OrgKey,
    /// The store's encryption key at rest.
    store_key: Zeroizing<[u8; 32]>,
    /// X25519 static secrets for sealed records, newest first (never empty).
    encryption: Vec<Zeroizing<[u8; 32]>>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Generates a fresh identity from the operating system's CSPRNG, with a random store
    /// key and a random encryption secret.
    pub fn generate() -> Self {
        let signing = SigningKey::generate(&mut OsRng);
        Self {
            key: OrgKey(signing.verifying_key().to_bytes()),
            signing,
            store_key: random_secret(),
            encryption: vec![random_secret()],
        }
    }

    /// Wraps an existing signing key (tests and benchmarks use fixed seeds). Its store key
    /// and encryption secret are derived from the seed (domain-separated SHA-256), so the
    /// same seed always gives the same identity.
    pub fn from_signing_key(signing: SigningKey) -> Self {
        let key = OrgKey(signing.verifying_key().to_bytes());
        let store_key = derived_secret(b"coalition/v2/store-key\0", &signing);
        let encryption = vec![derived_secret(b"coalition/v2/encryption-key\0", &signing)];
        Self {
            signing,
            key,
            store_key,
            encryption,
        }
    }

    /// Identity from a 32-byte seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self::from_signing_key(SigningKey::from_bytes(seed))
    }

    /// The public organisation key.
    pub fn key(&self) -> OrgKey {
        self.key
    }

    /// A 32-byte secret for this node's libp2p identity, derived from the organisation key
    /// and a per-home random salt, so every node of an organisation has its own peer id
    /// and the node key needs no separate storage.
    pub fn node_secret(&self, salt: &[u8]) -> Zeroizing<[u8; 32]> {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"coalition/v1/node-key\0");
        h.update(self.signing.to_bytes());
        h.update(salt);
        Zeroizing::new(h.finalize().into())
    }

    /// The store's encryption key at rest (random, kept only in the key file).
    pub fn store_key(&self) -> &[u8; 32] {
        &self.store_key
    }

    /// The organisation's X25519 static secrets for sealed records, newest first; never
    /// empty. Older ones are kept so records sealed to them before a rotation still open.
    /// The public key of the newest is [`Identity::encryption_key`] (in [`crate::sealed`]).
    pub fn encryption_secrets(&self) -> &[Zeroizing<[u8; 32]>] {
        &self.encryption
    }

    /// Makes a new random encryption secret the current one, keeping the older ones.
    /// Persist it with [`Identity::replace_key_file`].
    pub fn rotate_encryption_key(&mut self) {
        self.encryption.insert(0, random_secret());
        self.encryption.truncate(MAX_ENCRYPTION_SECRETS);
    }

    /// Signs `message` (callers add their own domain-separation prefix).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }

    /// Encrypts this identity under `passphrase` and writes it to `path` with mode 0600.
    /// Refuses to overwrite an existing file.
    pub fn save(&self, path: &Path, passphrase: &str) -> Result<(), IdentityError> {
        if passphrase.chars().count() < MIN_PASSPHRASE_LEN {
            return Err(IdentityError::WeakPassphrase {
                min: MIN_PASSPHRASE_LEN,
            });
        }
        let file = KeyFile::seal(self, passphrase, KdfParams::default())?;
        let text = serde_json::to_string_pretty(&file).expect("key file serialises");
        write_private(path, text.as_bytes()).map_err(|e| IdentityError::KeyFile {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    }

    /// Replaces the key file at `path` with this identity under `passphrase`, atomically:
    /// the new file is written and synced beside it, then renamed over it, so an
    /// interruption leaves either the old file or the new one, never a torn one.
    pub fn replace_key_file(&self, path: &Path, passphrase: &str) -> Result<(), IdentityError> {
        let shown = path.display().to_string();
        let io = |e: std::io::Error| IdentityError::KeyFile {
            path: shown.clone(),
            reason: format!("{e} (check that the home directory is writable)"),
        };
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".new");
        let tmp = std::path::PathBuf::from(tmp);
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
            _ => {}
        }
        self.save(&tmp, passphrase)?;
        std::fs::rename(&tmp, path).map_err(io)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
        Ok(())
    }

    /// Reads and decrypts the key file at `path`. A format 1 key file is upgraded to
    /// format 2 in place (new random store key and encryption secret) before it is
    /// returned, so every later load gives the same secrets.
    pub fn load(path: &Path, passphrase: &str) -> Result<Self, IdentityError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| IdentityError::KeyFile {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        let file: KeyFile = serde_json::from_str(&text).map_err(|e| IdentityError::KeyFile {
            path: shown.clone(),
            reason: format!("not a Coalition key file ({e})"),
        })?;
        let id = file.open(passphrase, &shown)?;
        if file.format == KEY_FILE_FORMAT_V1 {
            id.replace_key_file(path, passphrase)?;
        }
        Ok(id)
    }
}

fn random_secret() -> Zeroizing<[u8; 32]> {
    let mut s = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(s.as_mut());
    s
}

fn derived_secret(label: &[u8], signing: &SigningKey) -> Zeroizing<[u8; 32]> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(label);
    h.update(signing.to_bytes());
    Zeroizing::new(h.finalize().into())
}

/// Writes `bytes` to a new file readable only by its owner.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// argon2id cost parameters, stored in the key file so they can be raised later.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct KdfParams {
    /// Memory in KiB.
    m_cost: u32,
    /// Iterations.
    t_cost: u32,
    /// Lanes.
    p_cost: u32,
}

impl Default for KdfParams {
    /// RFC 9106's second recommended argon2id option (64 MiB, 3 passes, 4 lanes), for new
    /// key files: a seized key file is attacked offline, so each guess should cost what a
    /// laptop can afford once per unlock. Files written with other parameters (earlier key
    /// files used OWASP's 19 MiB / 2 passes / 1 lane) open with the ones in their header.
    fn default() -> Self {
        Self {
            m_cost: 64 * 1024,
            t_cost: 3,
            p_cost: 4,
        }
    }
}

/// On-disk key file (JSON). `ciphertext` = XChaCha20-Poly1305(key = argon2id(passphrase,
/// salt), nonce, plaintext, aad = associated_data()), where the plaintext is the 32-byte
/// ed25519 seed (format 1) or `seed ‖ store_key ‖ enc_0 ‖ …` (format 2, see the module
/// documentation).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    format: String,
    public_key: String,
    kdf: String,
    kdf_params: KdfParams,
    salt: String,
    aead: String,
    nonce: String,
    ciphertext: String,
}

/// The format written today.
const KEY_FILE_FORMAT: &str = "coalition-key/v2";
/// The seed alone; opened, then upgraded.
const KEY_FILE_FORMAT_V1: &str = "coalition-key/v1";
/// At most this many encryption secrets are kept (a rotation a week for twenty years).
const MAX_ENCRYPTION_SECRETS: usize = 1024;

impl KeyFile {
    fn seal(id: &Identity, passphrase: &str, params: KdfParams) -> Result<Self, IdentityError> {
        let mut plain = Zeroizing::new(Vec::with_capacity(64 + 32 * id.encryption.len()));
        plain.extend_from_slice(&id.signing.to_bytes());
        plain.extend_from_slice(id.store_key.as_ref());
        for secret in &id.encryption {
            plain.extend_from_slice(secret.as_ref());
        }
        Self::seal_plain(KEY_FILE_FORMAT, id.key, &plain, passphrase, params)
    }

    /// Seals `plain` in a key file of `format` for `public_key`.
    fn seal_plain(
        format: &str,
        public_key: OrgKey,
        plain: &[u8],
        passphrase: &str,
        params: KdfParams,
    ) -> Result<Self, IdentityError> {
        let mut salt = [0u8; 16];
        let mut nonce = [0u8; 24];
        OsRng.fill_bytes(&mut salt);
        OsRng.fill_bytes(&mut nonce);
        let mut file = KeyFile {
            format: format.into(),
            public_key: public_key.to_hex(),
            kdf: "argon2id".into(),
            kdf_params: params,
            salt: hex::encode(salt),
            aead: "xchacha20poly1305".into(),
            nonce: hex::encode(nonce),
            ciphertext: String::new(),
        };
        let key =
            derive_key(passphrase, &salt, params).map_err(|reason| IdentityError::KeyFile {
                path: String::new(),
                reason,
            })?;
        let cipher = XChaCha20Poly1305::new(key.as_ref().into());
        let aad = file.associated_data();
        let ct = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: &aad,
                },
            )
            .expect("encryption of a few hundred bytes cannot fail");
        file.ciphertext = hex::encode(ct);
        Ok(file)
    }

    fn associated_data(&self) -> Vec<u8> {
        format!(
            "{}|{}|{}|{}|{}|{}|{}|{}",
            self.format,
            self.public_key,
            self.kdf,
            self.kdf_params.m_cost,
            self.kdf_params.t_cost,
            self.kdf_params.p_cost,
            self.salt,
            self.aead
        )
        .into_bytes()
    }

    fn open(&self, passphrase: &str, path: &str) -> Result<Identity, IdentityError> {
        let bad = |reason: &str| IdentityError::KeyFile {
            path: path.to_string(),
            reason: reason.to_string(),
        };
        if !(self.format == KEY_FILE_FORMAT || self.format == KEY_FILE_FORMAT_V1)
            || self.kdf != "argon2id"
            || self.aead != "xchacha20poly1305"
        {
            return Err(bad("unsupported key file format"));
        }
        let p = self.kdf_params;
        if p.m_cost > 4 * 1024 * 1024 || p.t_cost > 64 || p.p_cost > 16 {
            return Err(bad("key derivation parameters out of range"));
        }
        let salt = hex::decode(&self.salt).map_err(|_| bad("salt is not hex"))?;
        let nonce: [u8; 24] = hex::decode(&self.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or_else(|| bad("nonce is not 24 hex-encoded bytes"))?;
        let ct = hex::decode(&self.ciphertext).map_err(|_| bad("ciphertext is not hex"))?;
        let key = derive_key(passphrase, &salt, p).map_err(|r| bad(&r))?;
        let cipher = XChaCha20Poly1305::new(key.as_ref().into());
        let aad = self.associated_data();
        // The decrypted secrets are wiped when dropped, whatever happens next.
        let plain = cipher
            .decrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &ct,
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| IdentityError::WrongPassphrase {
                path: path.to_string(),
            })?;
        let chunk = |i: usize| -> Zeroizing<[u8; 32]> {
            let mut s = Zeroizing::new([0u8; 32]);
            s.copy_from_slice(&plain[32 * i..32 * (i + 1)]);
            s
        };
        let id = if self.format == KEY_FILE_FORMAT_V1 {
            if plain.len() != 32 {
                return Err(bad("decrypted key has the wrong length"));
            }
            let signing = SigningKey::from_bytes(&chunk(0));
            Identity {
                key: OrgKey(signing.verifying_key().to_bytes()),
                signing,
                store_key: random_secret(),
                encryption: vec![random_secret()],
            }
        } else {
            let n = plain.len() / 32;
            if plain.len() % 32 != 0 || n < 3 || n - 2 > MAX_ENCRYPTION_SECRETS {
                return Err(bad("decrypted secrets have the wrong length"));
            }
            let signing = SigningKey::from_bytes(&chunk(0));
            Identity {
                key: OrgKey(signing.verifying_key().to_bytes()),
                signing,
                store_key: chunk(1),
                encryption: (2..n).map(chunk).collect(),
            }
        };
        if id.key.to_hex() != self.public_key {
            return Err(bad(
                "decrypted key does not match the public key in the file",
            ));
        }
        Ok(id)
    }
}

fn derive_key(passphrase: &str, salt: &[u8], p: KdfParams) -> Result<Zeroizing<[u8; 32]>, String> {
    let params = Params::new(p.m_cost, p.t_cost, p.p_cost, Some(32)).map_err(|e| e.to_string())?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(passphrase.as_bytes(), salt, out.as_mut())
        .map_err(|e| e.to_string())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_round_trips_and_rejects_wrong_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.enc");
        let id = Identity::generate();
        id.save(&path, "correct horse battery").unwrap();
        let back = Identity::load(&path, "correct horse battery").unwrap();
        assert_eq!(back.key(), id.key());
        let err = Identity::load(&path, "wrong horse battery").unwrap_err();
        assert!(
            matches!(err, IdentityError::WrongPassphrase { .. }),
            "{err}"
        );
        // The file never holds the seed in the clear.
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&hex::encode(id.signing.to_bytes())));
        // Never overwritten.
        assert!(id.save(&path, "correct horse battery").is_err());
    }

    #[test]
    fn new_key_files_use_rfc9106_costs_and_old_ones_still_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.enc");
        let id = Identity::generate();
        id.save(&path, "correct horse battery").unwrap();
        let file: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(file["kdf_params"]["m_cost"], 64 * 1024);
        assert_eq!(file["kdf_params"]["t_cost"], 3);
        assert_eq!(file["kdf_params"]["p_cost"], 4);
        // A key file written with the earlier, cheaper parameters opens by its header.
        let old = KeyFile::seal(
            &id,
            "correct horse battery",
            KdfParams {
                m_cost: 19 * 1024,
                t_cost: 2,
                p_cost: 1,
            },
        )
        .unwrap();
        let old_path = dir.path().join("old.enc");
        write_private(&old_path, serde_json::to_string(&old).unwrap().as_bytes()).unwrap();
        assert_eq!(
            Identity::load(&old_path, "correct horse battery")
                .unwrap()
                .key(),
            id.key()
        );
    }

    #[test]
    fn edited_header_fails_like_a_wrong_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.enc");
        Identity::generate().save(&path, "passphrase-1").unwrap();
        let mut file: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        file["kdf_params"]["t_cost"] = 1.into();
        let edited = dir.path().join("edited.enc");
        std::fs::write(&edited, file.to_string()).unwrap();
        assert!(matches!(
            Identity::load(&edited, "passphrase-1"),
            Err(IdentityError::WrongPassphrase { .. })
        ));
    }

    #[test]
    fn weak_and_malformed_keys_are_rejected() {
        assert!("00".parse::<OrgKey>().is_err());
        // The identity point is small-order.
        let mut identity_point = [0u8; 32];
        identity_point[0] = 1;
        assert!(OrgKey::from_bytes(&identity_point).is_err());
        let k = Identity::generate().key();
        assert_eq!(k.to_hex().parse::<OrgKey>().unwrap(), k);
    }

    /// The per-thread cache of checked keys never turns a rejected key into an accepted
    /// one, and keeps answering correctly after it fills up and starts over.
    #[test]
    fn checked_key_cache_is_bounded_and_never_accepts_a_rejected_key() {
        let mut identity_point = [0u8; 32];
        identity_point[0] = 1;
        let keys: Vec<OrgKey> = (0..CHECKED_KEYS as u8 + 10)
            .map(|i| Identity::from_seed(&[i; 32]).key())
            .collect();
        for _ in 0..2 {
            for k in &keys {
                let (again, vk) = OrgKey::with_verifying_key(k.as_bytes()).unwrap();
                assert_eq!(again, *k);
                assert_eq!(vk.to_bytes(), *k.as_bytes());
                assert!(OrgKey::from_bytes(&identity_point).is_err());
            }
        }
        assert!(CHECKED.with(|c| c.borrow().len()) <= CHECKED_KEYS);
    }

    #[test]
    fn key_file_keeps_the_store_key_and_encryption_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.enc");
        let mut id = Identity::generate();
        assert_ne!(id.store_key(), &*id.encryption_secrets()[0]);
        id.save(&path, "correct horse battery").unwrap();
        let back = Identity::load(&path, "correct horse battery").unwrap();
        assert_eq!(back.store_key(), id.store_key());
        assert_eq!(back.encryption_secrets(), id.encryption_secrets());
        // A rotation keeps the old secret behind the new one, and survives a reload.
        let old = id.encryption_secrets()[0].clone();
        id.rotate_encryption_key();
        id.replace_key_file(&path, "correct horse battery").unwrap();
        let back = Identity::load(&path, "correct horse battery").unwrap();
        assert_eq!(back.encryption_secrets().len(), 2);
        assert_ne!(back.encryption_secrets()[0], old);
        assert_eq!(back.encryption_secrets()[1], old);
        assert_eq!(back.store_key(), id.store_key());
        assert!(!dir.path().join("key.enc.new").exists());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&hex::encode(id.store_key())));
    }

    /// A format 1 key file (the seed alone) opens, is rewritten as format 2 once, and from
    /// then on gives the same store key: a store encrypted after the upgrade stays readable.
    #[test]
    fn format_1_key_files_are_upgraded_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.enc");
        let id = Identity::generate();
        let v1 = KeyFile::seal_plain(
            KEY_FILE_FORMAT_V1,
            id.key(),
            &id.signing.to_bytes(),
            "correct horse battery",
            KdfParams::default(),
        )
        .unwrap();
        write_private(&path, serde_json::to_string(&v1).unwrap().as_bytes()).unwrap();
        let first = Identity::load(&path, "correct horse battery").unwrap();
        assert_eq!(first.key(), id.key());
        let file: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(file["format"], KEY_FILE_FORMAT);
        let second = Identity::load(&path, "correct horse battery").unwrap();
        assert_eq!(second.store_key(), first.store_key());
        assert_eq!(second.encryption_secrets(), first.encryption_secrets());
        // A wrong passphrase on a format 1 file changes nothing.
        let v1_path = dir.path().join("v1.enc");
        write_private(&v1_path, serde_json::to_string(&v1).unwrap().as_bytes()).unwrap();
        assert!(Identity::load(&v1_path, "wrong horse battery").is_err());
        let file: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&v1_path).unwrap()).unwrap();
        assert_eq!(file["format"], KEY_FILE_FORMAT_V1);
    }

    #[test]
    fn secrets_of_a_seeded_identity_are_fixed_and_distinct() {
        let a = Identity::from_seed(&[1; 32]);
        let again = Identity::from_seed(&[1; 32]);
        let b = Identity::from_seed(&[2; 32]);
        assert_eq!(a.store_key(), again.store_key());
        assert_eq!(a.encryption_secrets(), again.encryption_secrets());
        assert_ne!(a.store_key(), b.store_key());
        assert_ne!(a.store_key(), &*a.encryption_secrets()[0]);
        assert_ne!(a.store_key(), &[1; 32]);
    }

    #[test]
    fn short_passphrase_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = Identity::generate()
            .save(&dir.path().join("k"), "short")
            .unwrap_err();
        assert!(matches!(err, IdentityError::WeakPassphrase { .. }));
    }
}
