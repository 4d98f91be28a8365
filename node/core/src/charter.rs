//! Coalition membership as signed data that every node folds the same way.
//!
//! A coalition begins with a charter (`charter/v1`) that every founder signed. After
//! that, membership changes are `proposal/v1` records naming the epoch they apply to,
//! and take effect once `approval/v1` records (the proposer's proposal counts as its
//! approval) from `threshold` distinct current members exist for that epoch. The fold
//! below is a pure function of the *set* of membership records: it sorts them by id
//! first, so every node holding the same records computes the same membership and epoch,
//! whatever order they arrived in. No single member and no node can change membership.
//!
//! An epoch is a hash of the membership state and the history that led to it, so a
//! record naming its epoch can be judged without trusting anyone's clock.

use std::collections::{BTreeMap, BTreeSet};

use ed25519_dalek::Signature;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::identity::{Identity, OrgKey};

mod fold;

pub use fold::{Applied, Change, Equivocation, MemberState, Membership, Pending};

/// Schema id of charters.
pub const CHARTER_SCHEMA: &str = "charter/v1";
/// Schema id of membership change proposals.
pub const PROPOSAL_SCHEMA: &str = "proposal/v1";
/// Schema id of approvals.
pub const APPROVAL_SCHEMA: &str = "approval/v1";
/// Schema id of node certificates.
pub const NODE_CERT_SCHEMA: &str = "node-cert/v1";
/// Schemas whose records make up the membership.
pub const MEMBERSHIP_SCHEMAS: [&str; 3] = [CHARTER_SCHEMA, PROPOSAL_SCHEMA, APPROVAL_SCHEMA];

const CHARTER_PREFIX: &[u8] = b"coalition/v1/charter\0";
const EPOCH_PREFIX: &[u8] = b"coalition/v1/epoch\0";

/// Governance errors a user can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GovernanceError {
    /// A charter or change breaks a rule.
    #[error("{0}")]
    Invalid(String),
    /// More than one coalition's charter is present.
    #[error(
        "records of {0} different charters are present; a node or bundle belongs to one coalition"
    )]
    SeveralCharters(usize),
}

fn invalid(msg: impl Into<String>) -> GovernanceError {
    GovernanceError::Invalid(msg.into())
}

/// Canonical JSON: object keys sorted, no whitespace. Signed charter bytes use it so
/// that any tool re-serialising the draft produces the same bytes.
pub fn canonical_json(v: &Value) -> Vec<u8> {
    fn write(v: &Value, out: &mut Vec<u8>) {
        match v {
            Value::Object(m) => {
                let sorted: BTreeMap<&String, &Value> = m.iter().collect();
                out.push(b'{');
                for (i, (k, v)) in sorted.into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend(serde_json::to_vec(k).expect("string serialises"));
                    out.push(b':');
                    write(v, out);
                }
                out.push(b'}');
            }
            Value::Array(a) => {
                out.push(b'[');
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write(v, out);
                }
                out.push(b']');
            }
            scalar => out.extend(serde_json::to_vec(scalar).expect("scalar serialises")),
        }
    }
    let mut out = Vec::new();
    write(v, &mut out);
    out
}

/// A member organisation, as `coalition identity export` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Organisation name.
    pub organisation: String,
    /// Country code.
    pub country: String,
    /// Organisation key.
    pub key: OrgKey,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The founding document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CharterDoc {
    /// Coalition name.
    pub name: String,
    /// Approvals a change needs.
    pub threshold: u32,
    /// Founders accepted a threshold at or below half.
    #[serde(default, skip_serializing_if = "is_false")]
    pub low_threshold_acknowledged: bool,
    /// Founding members.
    pub members: Vec<Member>,
    /// When drafted, ms.
    pub created_at_ms: i64,
}

/// One founder's signature on a charter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CharterSignature {
    /// The founder.
    pub key: OrgKey,
    /// Hex ed25519 signature.
    pub signature: String,
}

/// A charter with its founders' signatures: the draft file and the record payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedCharter {
    /// The document.
    pub charter: CharterDoc,
    /// Signatures collected so far.
    pub signatures: Vec<CharterSignature>,
}

/// Whether `t` of `n` is a strict majority.
pub fn is_majority(t: u32, n: usize) -> bool {
    (t as usize) * 2 > n
}

/// Checks a threshold against a member count.
fn check_threshold(t: u32, n: usize, acknowledged: bool) -> Result<(), GovernanceError> {
    if t == 0 || t as usize > n {
        return Err(invalid(format!(
            "threshold {t} is impossible with {n} members (it must be between 1 and {n})"
        )));
    }
    if !is_majority(t, n) && !acknowledged {
        return Err(invalid(format!(
            "threshold {t} of {n} members is not a strict majority, so two conflicting changes could both pass; use at least {} or acknowledge with --allow-low-threshold",
            n / 2 + 1
        )));
    }
    Ok(())
}

impl CharterDoc {
    /// The bytes founders sign (after [`CHARTER_PREFIX`]).
    pub fn canonical(&self) -> Vec<u8> {
        canonical_json(&serde_json::to_value(self).expect("charter serialises"))
    }

    /// Charter id: SHA-256 of the canonical bytes.
    pub fn id(&self) -> [u8; 32] {
        Sha256::digest(self.canonical()).into()
    }

    /// Checks members and threshold.
    pub fn validate(&self) -> Result<(), GovernanceError> {
        let keys: BTreeSet<OrgKey> = self.members.iter().map(|m| m.key).collect();
        if keys.len() != self.members.len() {
            return Err(invalid("the same organisation key is listed twice"));
        }
        let names: BTreeSet<String> = self
            .members
            .iter()
            .map(|m| m.organisation.trim().to_lowercase())
            .collect();
        if names.len() != self.members.len() {
            return Err(invalid("the same organisation is listed twice (each organisation is one member, with one key)"));
        }
        check_threshold(
            self.threshold,
            self.members.len(),
            self.low_threshold_acknowledged,
        )
    }

    fn message(&self) -> Vec<u8> {
        let mut m = CHARTER_PREFIX.to_vec();
        m.extend(self.canonical());
        m
    }
}

impl SignedCharter {
    /// A new, unsigned draft.
    pub fn draft(
        name: &str,
        threshold: u32,
        members: Vec<Member>,
        allow_low: bool,
        now_ms: i64,
    ) -> Result<Self, GovernanceError> {
        let charter = CharterDoc {
            name: name.to_string(),
            threshold,
            low_threshold_acknowledged: allow_low && !is_majority(threshold, members.len()),
            members,
            created_at_ms: now_ms,
        };
        charter.validate()?;
        Ok(Self {
            charter,
            signatures: Vec::new(),
        })
    }

    /// Adds (or replaces) `identity`'s signature; it must be a founder.
    pub fn sign(&mut self, identity: &Identity) -> Result<(), GovernanceError> {
        self.charter.validate()?;
        if !self.charter.members.iter().any(|m| m.key == identity.key()) {
            return Err(invalid(format!(
                "organisation {} is not a founder listed in this charter draft",
                identity.key()
            )));
        }
        let sig = identity.sign(&self.charter.message());
        self.signatures.retain(|s| s.key != identity.key());
        self.signatures.push(CharterSignature {
            key: identity.key(),
            signature: hex::encode(sig),
        });
        self.signatures.sort_by_key(|s| s.key);
        Ok(())
    }

    /// Founders whose valid signature is missing.
    pub fn missing(&self) -> Vec<&Member> {
        let msg = self.charter.message();
        self.charter
            .members
            .iter()
            .filter(|m| {
                !self
                    .signatures
                    .iter()
                    .any(|s| s.key == m.key && verify_hex_sig(&m.key, &msg, &s.signature))
            })
            .collect()
    }

    /// The charter is valid and every founder (and only founders) signed it.
    pub fn check(&self) -> Result<(), GovernanceError> {
        self.charter.validate()?;
        let founders: BTreeSet<OrgKey> = self.charter.members.iter().map(|m| m.key).collect();
        if let Some(s) = self.signatures.iter().find(|s| !founders.contains(&s.key)) {
            return Err(invalid(format!(
                "signature by {} who is not a founder",
                s.key
            )));
        }
        let missing = self.missing();
        if !missing.is_empty() {
            return Err(invalid(format!(
                "missing or invalid signatures from: {}",
                missing
                    .iter()
                    .map(|m| format!("{} ({})", m.organisation, m.key.short()))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(())
    }
}

fn verify_hex_sig(key: &OrgKey, msg: &[u8], sig_hex: &str) -> bool {
    let Some(sig) = hex::decode(sig_hex)
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
    else {
        return false;
    };
    key.verifying_key()
        .verify_strict(msg, &Signature::from_bytes(&sig))
        .is_ok()
}

#[cfg(test)]
mod tests;
