//! The membership fold: proposals and approvals applied, in a deterministic order, to the
//! charter's founding state, giving each epoch's members and threshold; and the judgement
//! of a record's author against the epoch it names.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::*;
use crate::identity::OrgKey;
use crate::record::{Record, RecordId};

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
    /// Each key that was ever a member, mapped to the key its organisation was first
    /// admitted with: the founding members' and added members' keys to themselves, each
    /// rotated-in key to the first key of the organisation it replaced.
    pub fn organisations(&self) -> crate::chain::Organisations {
        let mut first: BTreeMap<OrgKey, OrgKey> = BTreeMap::new();
        for key in self.history.iter().take(1).flat_map(|s| s.members.keys()) {
            first.insert(*key, *key);
        }
        for a in &self.applied {
            match &a.change {
                Change::Add { member, .. } => {
                    first.entry(member.key).or_insert(member.key);
                }
                Change::Rotate { old, new } => {
                    let root = first.get(old).copied().unwrap_or(*old);
                    first.insert(new.key, root);
                }
                Change::Remove { .. } | Change::Threshold { .. } => {}
            }
        }
        crate::chain::Organisations::new(first)
    }

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
            // A sealed record gives its content key only to members of the epoch it
            // names: a removed member gets no key for what is written after its removal.
            if record.schema == crate::sealed::SEALED_SCHEMA {
                if let Ok(view) = crate::sealed::parse(&record.payload) {
                    if let Some(outsider) = view.recipients().find(|k| !state.is_member(k)) {
                        return Err(format!(
                            "sealed record wraps its key for {}, who is not a member under the epoch it names (epoch {}); a removed member must get no key",
                            outsider.short(),
                            &hex::encode(state.epoch)[..12]
                        ));
                    }
                }
            }
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
