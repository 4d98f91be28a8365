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
use std::fmt;

use ed25519_dalek::Signature;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::identity::{Identity, OrgKey};
use crate::record::{Record, RecordId};

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

/// A proposed membership change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Change {
    /// Admit a member.
    Add {
        /// The new member.
        member: Member,
        /// Accept a resulting threshold at or below half.
        #[serde(default, skip_serializing_if = "is_false")]
        low_threshold_acknowledged: bool,
    },
    /// Remove a member.
    Remove {
        /// Its key.
        key: OrgKey,
        /// Accept a resulting threshold at or below half.
        #[serde(default, skip_serializing_if = "is_false")]
        low_threshold_acknowledged: bool,
    },
    /// Replace a member's key.
    Rotate {
        /// Key being retired.
        old: OrgKey,
        /// The member with its new key.
        new: Member,
    },
    /// Change the threshold.
    Threshold {
        /// New threshold.
        threshold: u32,
        /// Accept a threshold at or below half.
        #[serde(default, skip_serializing_if = "is_false")]
        low_threshold_acknowledged: bool,
    },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Add { member, .. } => write!(
                f,
                "add {} ({}, {})",
                member.organisation,
                member.country,
                member.key.short()
            ),
            Change::Remove { key, .. } => write!(f, "remove {}", key.short()),
            Change::Rotate { old, new } => write!(
                f,
                "rotate {} -> {} ({})",
                old.short(),
                new.key.short(),
                new.organisation
            ),
            Change::Threshold { threshold, .. } => write!(f, "set threshold to {threshold}"),
        }
    }
}

/// Membership at one epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberState {
    /// Epoch id.
    #[serde(serialize_with = "ser_hex")]
    pub epoch: [u8; 32],
    /// Number of changes since the charter.
    pub height: u64,
    /// Current members by key.
    pub members: BTreeMap<OrgKey, Member>,
    /// Current threshold.
    pub threshold: u32,
    /// Threshold at or below half was acknowledged.
    pub low_threshold_acknowledged: bool,
}

fn ser_hex<S: serde::Serializer>(b: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(b))
}

impl MemberState {
    fn genesis(doc: &CharterDoc) -> Self {
        let mut h = Sha256::new();
        h.update(EPOCH_PREFIX);
        h.update(doc.id());
        Self {
            epoch: h.finalize().into(),
            height: 0,
            members: doc.members.iter().map(|m| (m.key, m.clone())).collect(),
            threshold: doc.threshold,
            low_threshold_acknowledged: doc.low_threshold_acknowledged,
        }
    }

    /// Whether `key` is a member in this state.
    pub fn is_member(&self, key: &OrgKey) -> bool {
        self.members.contains_key(key)
    }

    /// The state after `change` (proposal `id`), or why the change cannot apply.
    pub fn apply(&self, change: &Change, id: &RecordId) -> Result<Self, GovernanceError> {
        let mut next = self.clone();
        let n = self.members.len();
        match change {
            Change::Add {
                member,
                low_threshold_acknowledged,
            } => {
                if self.is_member(&member.key) {
                    return Err(invalid(format!("{} is already a member", member.key)));
                }
                let name = member.organisation.trim().to_lowercase();
                if self
                    .members
                    .values()
                    .any(|m| m.organisation.trim().to_lowercase() == name)
                {
                    return Err(invalid(format!(
                        "an organisation named {:?} is already a member (rotate its key instead of adding it again)",
                        member.organisation
                    )));
                }
                next.members.insert(member.key, member.clone());
                next.low_threshold_acknowledged |= *low_threshold_acknowledged;
                check_threshold(next.threshold, n + 1, next.low_threshold_acknowledged)?;
            }
            Change::Remove {
                key,
                low_threshold_acknowledged,
            } => {
                if next.members.remove(key).is_none() {
                    return Err(invalid(format!("{key} is not a member")));
                }
                next.low_threshold_acknowledged |= *low_threshold_acknowledged;
                check_threshold(next.threshold, n - 1, next.low_threshold_acknowledged)?;
            }
            Change::Rotate { old, new } => {
                let Some(prev) = next.members.remove(old) else {
                    return Err(invalid(format!("{old} is not a member")));
                };
                if self.is_member(&new.key) {
                    return Err(invalid(format!("{} is already a member", new.key)));
                }
                let _ = prev;
                next.members.insert(new.key, new.clone());
            }
            Change::Threshold {
                threshold,
                low_threshold_acknowledged,
            } => {
                next.threshold = *threshold;
                next.low_threshold_acknowledged = *low_threshold_acknowledged;
                check_threshold(*threshold, n, *low_threshold_acknowledged)?;
            }
        }
        next.height += 1;
        let state = serde_json::json!({
            "members": next.members.values().collect::<Vec<_>>(),
            "threshold": next.threshold,
        });
        let mut h = Sha256::new();
        h.update(EPOCH_PREFIX);
        h.update(self.epoch);
        h.update(id.0);
        h.update(canonical_json(&state));
        next.epoch = h.finalize().into();
        Ok(next)
    }
}

/// A change that took effect.
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    /// The proposal record.
    pub proposal: RecordId,
    /// What changed.
    pub change: Change,
    /// Members whose approvals counted.
    pub approvers: Vec<OrgKey>,
    /// Epoch before.
    #[serde(serialize_with = "ser_hex")]
    pub from_epoch: [u8; 32],
    /// Epoch after.
    #[serde(serialize_with = "ser_hex")]
    pub to_epoch: [u8; 32],
}

/// A proposal for the current epoch that has not (yet) passed.
#[derive(Debug, Clone, Serialize)]
pub struct Pending {
    /// The proposal record.
    pub proposal: RecordId,
    /// Proposed change.
    pub change: Change,
    /// Members supporting it so far.
    pub approvers: Vec<OrgKey>,
    /// Why it cannot apply even with enough approvals, if so.
    pub problem: Option<String>,
}

/// A member that supported two different proposals for one epoch; both signed records
/// are kept as evidence.
#[derive(Debug, Clone, Serialize)]
pub struct Equivocation {
    /// The member.
    pub member: OrgKey,
    /// The epoch.
    #[serde(serialize_with = "ser_hex")]
    pub epoch: [u8; 32],
    /// The proposals it supported.
    pub proposals: Vec<RecordId>,
    /// Its signed records (proposals or approvals) showing it.
    pub evidence: Vec<RecordId>,
}

/// The membership every node computes from the same records.
#[derive(Debug, Clone, Serialize)]
pub struct Membership {
    /// Coalition name.
    pub name: String,
    /// Charter id.
    #[serde(serialize_with = "ser_hex")]
    pub charter_id: [u8; 32],
    /// Charter records adopting this charter.
    pub charter_records: Vec<RecordId>,
    /// States, oldest (the charter) first.
    pub history: Vec<MemberState>,
    /// Changes that took effect, in order.
    pub applied: Vec<Applied>,
    /// Proposals for the current epoch still open.
    pub pending: Vec<Pending>,
    /// Equivocating members.
    pub equivocations: Vec<Equivocation>,
    /// Membership records that had no effect, and why.
    pub ignored: Vec<(RecordId, String)>,
}

/// A proposal under evaluation: support, id, approvers, resulting state, the change.
type Candidate<'a> = (
    usize,
    RecordId,
    Vec<OrgKey>,
    Result<MemberState, GovernanceError>,
    &'a Change,
);

struct Proposal {
    id: RecordId,
    author: OrgKey,
    epoch: [u8; 32],
    change: Change,
}

struct Approval {
    id: RecordId,
    author: OrgKey,
    epoch: [u8; 32],
    proposal: RecordId,
}

impl Membership {
    /// Folds the membership out of `records` (any records; non-membership ones are
    /// skipped). `None` when there is no valid charter. With several charters, `chosen`
    /// picks one by id; otherwise that is an error.
    pub fn fold(
        records: &[Record],
        chosen: Option<[u8; 32]>,
    ) -> Result<Option<Self>, GovernanceError> {
        let mut recs: Vec<&Record> = records
            .iter()
            .filter(|r| MEMBERSHIP_SCHEMAS.contains(&r.schema.as_str()))
            .collect();
        recs.sort_by_key(|r| r.id);
        recs.dedup_by_key(|r| r.id);

        let mut ignored = Vec::new();
        let mut charters: BTreeMap<[u8; 32], (CharterDoc, Vec<RecordId>)> = BTreeMap::new();
        let mut proposals = Vec::new();
        let mut approvals = Vec::new();
        for r in recs {
            let payload: Value = match serde_json::from_slice(&r.payload) {
                Ok(v) => v,
                Err(e) => {
                    ignored.push((r.id, format!("payload is not JSON: {e}")));
                    continue;
                }
            };
            match r.schema.as_str() {
                CHARTER_SCHEMA => match serde_json::from_value::<SignedCharter>(payload) {
                    Ok(sc) => match sc.check() {
                        Ok(()) if sc.charter.members.iter().any(|m| m.key == r.author) => {
                            charters
                                .entry(sc.charter.id())
                                .or_insert_with(|| (sc.charter.clone(), Vec::new()))
                                .1
                                .push(r.id);
                        }
                        Ok(()) => ignored.push((
                            r.id,
                            "charter stored by an organisation that is not a founder".into(),
                        )),
                        Err(e) => ignored.push((r.id, format!("invalid charter: {e}"))),
                    },
                    Err(e) => ignored.push((r.id, format!("invalid charter: {e}"))),
                },
                PROPOSAL_SCHEMA => match (
                    r.epoch,
                    serde_json::from_value::<Change>(payload["change"].clone()),
                ) {
                    (Some(epoch), Ok(change)) => proposals.push(Proposal {
                        id: r.id,
                        author: r.author,
                        epoch,
                        change,
                    }),
                    (None, _) => ignored.push((r.id, "proposal names no epoch".into())),
                    (_, Err(e)) => ignored.push((r.id, format!("invalid change: {e}"))),
                },
                _ => match (
                    r.epoch,
                    payload["proposal"].as_str().and_then(|p| p.parse().ok()),
                ) {
                    (Some(epoch), Some(proposal)) => approvals.push(Approval {
                        id: r.id,
                        author: r.author,
                        epoch,
                        proposal,
                    }),
                    _ => ignored.push((r.id, "approval names no epoch or no proposal".into())),
                },
            }
        }
        let (charter_id, (doc, charter_records)) = match (charters.len(), chosen) {
            (0, _) => return Ok(None),
            (_, Some(c)) => match charters.remove(&c) {
                Some(x) => (c, x),
                None => return Ok(None),
            },
            (1, None) => charters.pop_first().expect("one charter"),
            (n, None) => return Err(GovernanceError::SeveralCharters(n)),
        };

        let mut history = vec![MemberState::genesis(&doc)];
        let mut applied = Vec::new();
        let mut equivocations = Vec::new();
        let mut used: BTreeSet<RecordId> = BTreeSet::new();
        let pending = loop {
            let state = history.last().expect("genesis").clone();
            let here: Vec<&Proposal> = proposals
                .iter()
                .filter(|p| p.epoch == state.epoch)
                .filter(|p| {
                    let ok = state.is_member(&p.author);
                    if !ok {
                        ignored.push((
                            p.id,
                            format!(
                                "proposer {} was not a member under the epoch it names",
                                p.author.short()
                            ),
                        ));
                    }
                    ok
                })
                .collect();
            // support[member] = (proposals it supports, records showing it)
            let mut support: BTreeMap<OrgKey, (BTreeSet<RecordId>, Vec<RecordId>)> =
                BTreeMap::new();
            for p in &here {
                let e = support.entry(p.author).or_default();
                e.0.insert(p.id);
                e.1.push(p.id);
            }
            for a in approvals.iter().filter(|a| a.epoch == state.epoch) {
                if !state.is_member(&a.author) {
                    ignored.push((
                        a.id,
                        format!(
                            "approval by {} who was not a member under the epoch it names",
                            a.author.short()
                        ),
                    ));
                } else if here.iter().any(|p| p.id == a.proposal) {
                    let e = support.entry(a.author).or_default();
                    e.0.insert(a.proposal);
                    e.1.push(a.id);
                } else {
                    ignored.push((
                        a.id,
                        "approval of a proposal that is not for the same epoch (or unknown)".into(),
                    ));
                }
            }
            for (member, (props, evidence)) in &support {
                if props.len() > 1 {
                    equivocations.push(Equivocation {
                        member: *member,
                        epoch: state.epoch,
                        proposals: props.iter().copied().collect(),
                        evidence: evidence.clone(),
                    });
                }
            }
            let mut candidates: Vec<Candidate<'_>> = here
                .iter()
                .map(|p| {
                    let approvers: Vec<OrgKey> = support
                        .iter()
                        .filter(|(_, (props, _))| props.contains(&p.id))
                        .map(|(k, _)| *k)
                        .collect();
                    (
                        approvers.len(),
                        p.id,
                        approvers,
                        state.apply(&p.change, &p.id),
                        &p.change,
                    )
                })
                .collect();
            // Most support first, then smallest proposal id: deterministic on every node.
            candidates.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            let winner = candidates
                .iter()
                .position(|(n, _, _, next, _)| *n >= state.threshold as usize && next.is_ok());
            match winner {
                Some(i) => {
                    let (_, id, approvers, next, change) = candidates.swap_remove(i);
                    let next = next.expect("checked ok");
                    for (_, other, _, _, _) in &candidates {
                        used.insert(*other);
                    }
                    used.insert(id);
                    applied.push(Applied {
                        proposal: id,
                        change: change.clone(),
                        approvers,
                        from_epoch: state.epoch,
                        to_epoch: next.epoch,
                    });
                    history.push(next);
                }
                None => {
                    break candidates
                        .into_iter()
                        .map(|(_, id, approvers, next, change)| Pending {
                            proposal: id,
                            change: change.clone(),
                            approvers,
                            problem: next.err().map(|e| e.to_string()),
                        })
                        .collect::<Vec<_>>();
                }
            }
        };
        let epochs: BTreeSet<[u8; 32]> = history.iter().map(|s| s.epoch).collect();
        let current = history.last().expect("genesis").epoch;
        for p in &proposals {
            if p.epoch != current && !applied.iter().any(|a| a.proposal == p.id) {
                let why = if epochs.contains(&p.epoch) {
                    "stale: it applies to an earlier epoch that another change superseded"
                } else {
                    "it applies to an epoch not in this coalition's history"
                };
                ignored.push((p.id, why.into()));
            }
        }
        ignored.sort();
        ignored.dedup();
        Ok(Some(Self {
            name: doc.name,
            charter_id,
            charter_records,
            history,
            applied,
            pending,
            equivocations,
            ignored,
        }))
    }

    /// The current state.
    pub fn current(&self) -> &MemberState {
        self.history
            .last()
            .expect("history starts with the charter")
    }

    /// The state of `epoch`, if it is in the history.
    pub fn state_at(&self, epoch: &[u8; 32]) -> Option<&MemberState> {
        self.history.iter().find(|s| &s.epoch == epoch)
    }

    /// Whether `record`'s author was a member under the epoch it names (no epoch: the
    /// founding membership). Charters are judged by their founders' signatures instead.
    pub fn judge(&self, record: &Record) -> Result<(), String> {
        if record.schema == CHARTER_SCHEMA {
            return if self.charter_records.contains(&record.id) {
                Ok(())
            } else {
                Err("charter of another coalition, or not signed by every founder".into())
            };
        }
        let state = match &record.epoch {
            None => &self.history[0],
            Some(e) => self.state_at(e).ok_or_else(|| {
                format!(
                    "names membership epoch {} which is not in this coalition's history (made under a membership this node has not seen, or a fork)",
                    &hex::encode(e)[..12]
                )
            })?,
        };
        if state.is_member(&record.author) {
            Ok(())
        } else {
            Err(format!(
                "author {} was not a member under the epoch its record names (epoch {}; removed, rotated away, or never a member)",
                record.author.short(),
                &hex::encode(state.epoch)[..12]
            ))
        }
    }
}

#[cfg(test)]
mod tests;
