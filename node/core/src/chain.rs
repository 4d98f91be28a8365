//! Chain integrity: each author's records form one chain, numbered by `seq` from 1 and
//! linked by `prev` (the id of the author's record with the seq before). An honest author
//! signs exactly one record per seq, each naming the one before it. Whoever holds two of
//! an author's neighbouring records can check the link between them, and whoever holds two
//! different records with one seq holds proof that the author showed different histories
//! (a fork: both records are signed, so anyone can check the evidence).
//!
//! A seq that is not held is a gap. A gap is not evidence by itself: the missing records
//! may be outside the holder's audience (private records never leave their author, records
//! for chosen members reach only them), or withheld. Gaps are reported, with the range of
//! seqs, so that a reader can tell a complete history from an incomplete one.

use std::collections::BTreeMap;
use std::fmt;

use crate::identity::OrgKey;
use crate::merkle::{self, Checkpoint, Cosignature, Hash};
use crate::record::{Record, RecordId};

/// One record's place in its author's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Author.
    pub author: OrgKey,
    /// Sequence number.
    pub seq: u64,
    /// The id the record names as the author's previous record (none at seq 1).
    pub prev: Option<RecordId>,
    /// The record's own id.
    pub id: RecordId,
    /// Whether the record is in every member's view and every auditor's bundle
    /// ([`in_every_view`]); a checkpoint's cover stands in for the others.
    pub to_everyone: bool,
    /// What the record states, if it is a `checkpoint/v1` record.
    pub checkpoint: Option<Checkpoint>,
    /// What the record states, if it is a `cosignature/v1` record (the link's author is
    /// the witness).
    pub cosignature: Option<Cosignature>,
}

impl From<&Record> for Link {
    fn from(r: &Record) -> Self {
        Self {
            author: r.author,
            seq: r.seq,
            prev: r.prev,
            id: r.id,
            to_everyone: in_every_view(&r.schema, &r.audience),
            checkpoint: Checkpoint::of_record(&r.schema, &r.payload),
            cosignature: Cosignature::of_record(&r.schema, &r.payload),
        }
    }
}

/// Whether every member receives a record of `schema` for `audience` and every bundle
/// made for an auditor carries it: records for the whole coalition and sealed records
/// (which travel to every member, read or not), except node certificates, which are
/// operational data kept out of every export. A checkpoint covers the others, so that a
/// member or an auditor without them still checks its head.
pub fn in_every_view(schema: &str, audience: &crate::record::Audience) -> bool {
    (*audience == crate::record::Audience::Coalition && schema != crate::charter::NODE_CERT_SCHEMA)
        || schema == crate::sealed::SEALED_SCHEMA
}

/// Signed proof that an author did not keep one history. Every record named is held, so
/// the evidence can be checked by anyone who is given those records.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Evidence {
    /// The author signed two or more different records with one seq.
    Fork {
        /// Author.
        author: OrgKey,
        /// The seq they share.
        seq: u64,
        /// The records (ids, sorted).
        records: Vec<RecordId>,
    },
    /// A record names as its previous record none of the author's records held at the seq
    /// before it: the author signed a record at that seq that this holder was not shown.
    BrokenLink {
        /// Author.
        author: OrgKey,
        /// Seq of the record whose `prev` does not match.
        seq: u64,
        /// That record.
        record: RecordId,
        /// The id it names as previous.
        prev: RecordId,
        /// The author's records held at `seq - 1` (none of them is `prev`).
        held: Vec<RecordId>,
    },
    /// A checkpoint whose head is not the head of the author's records it covers, all of
    /// which are held: the author committed to a history other than the one it showed.
    CheckpointContradicts {
        /// Author.
        author: OrgKey,
        /// The checkpoint record.
        checkpoint: RecordId,
        /// Records it covers.
        size: u64,
        /// The head it states.
        #[serde(with = "merkle::hex_hash")]
        stated: Hash,
        /// The head of the covered records held.
        #[serde(with = "merkle::hex_hash")]
        held: Hash,
    },
    /// A checkpoint that does not extend the author's checkpoint before it: its frontier
    /// does not give the earlier head, it names as previous a record that is not the
    /// earlier checkpoint, or it skips or ignores the earlier checkpoint. The author
    /// committed to two histories.
    InconsistentCheckpoints {
        /// Author.
        author: OrgKey,
        /// The earlier checkpoint (or the record the later one names as such).
        earlier: RecordId,
        /// The later checkpoint.
        later: RecordId,
        /// What does not hold.
        reason: String,
    },
    /// A checkpoint whose cover (records not every member receives) hides a record the
    /// author signed for every member: the author told members it was not theirs to see.
    CoverHides {
        /// Author.
        author: OrgKey,
        /// The checkpoint record.
        checkpoint: RecordId,
        /// Seq of the hidden record.
        seq: u64,
        /// The hidden record.
        record: RecordId,
    },
}

impl Evidence {
    /// The author the evidence is against.
    pub fn author(&self) -> OrgKey {
        match self {
            Evidence::Fork { author, .. }
            | Evidence::BrokenLink { author, .. }
            | Evidence::CheckpointContradicts { author, .. }
            | Evidence::InconsistentCheckpoints { author, .. }
            | Evidence::CoverHides { author, .. } => *author,
        }
    }

    /// Every record the evidence consists of.
    pub fn records(&self) -> Vec<RecordId> {
        match self {
            Evidence::Fork { records, .. } => records.clone(),
            Evidence::BrokenLink { record, held, .. } => std::iter::once(*record)
                .chain(held.iter().copied())
                .collect(),
            // With the covered records, which the holder has (their ids give `held`).
            Evidence::CheckpointContradicts { checkpoint, .. } => vec![*checkpoint],
            Evidence::InconsistentCheckpoints { earlier, later, .. } => vec![*earlier, *later],
            Evidence::CoverHides {
                checkpoint, record, ..
            } => vec![*checkpoint, *record],
        }
    }
}

fn ids(records: &[RecordId]) -> String {
    records
        .iter()
        .map(RecordId::to_hex)
        .collect::<Vec<_>>()
        .join(" and ")
}

impl fmt::Display for Evidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Evidence::Fork {
                author,
                seq,
                records,
            } => write!(
                f,
                "fork: author {author} signed {} different records with seq {seq}: {}",
                records.len(),
                ids(records)
            ),
            Evidence::BrokenLink {
                author,
                seq,
                record,
                prev,
                held,
            } => write!(
                f,
                "broken chain: author {author}'s record {record} (seq {seq}) names {prev} as \
                 its previous record, but the author's record with seq {} is {}",
                seq - 1,
                ids(held)
            ),
            Evidence::CheckpointContradicts {
                author,
                checkpoint,
                size,
                stated,
                held,
            } => write!(
                f,
                "contradicted checkpoint: author {author}'s checkpoint {checkpoint} states head \
                 {} for its first {size} records, but the records held at those seqs give {}",
                hex::encode(stated),
                hex::encode(held)
            ),
            Evidence::InconsistentCheckpoints {
                author,
                earlier,
                later,
                reason,
            } => write!(
                f,
                "inconsistent checkpoints: author {author}'s checkpoint {later} {reason} \
                 (earlier: record {earlier})"
            ),
            Evidence::CoverHides {
                author,
                checkpoint,
                seq,
                record,
            } => write!(
                f,
                "hidden record: author {author}'s checkpoint {checkpoint} covers its record \
                 {record} (seq {seq}) as one not every member receives, but it was signed for \
                 the whole coalition"
            ),
        }
    }
}

/// Seqs `from..=to` of one author, none of them held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Gap {
    /// First missing seq.
    pub from: u64,
    /// Last missing seq.
    pub to: u64,
}

/// `gaps` as text: `2, 4-6`.
pub fn seqs(gaps: &[Gap]) -> String {
    gaps.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for Gap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.from == self.to {
            write!(f, "{}", self.from)
        } else {
            write!(f, "{}-{}", self.from, self.to)
        }
    }
}

/// What is held of one author's chain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuthorChain {
    /// Author.
    pub author: OrgKey,
    /// Records held.
    pub held: u64,
    /// Highest seq held.
    pub highest: u64,
    /// Seqs below `highest` not held, in order.
    pub gaps: Vec<Gap>,
    /// The author's latest checkpoint, if any is held. Its `matches` and `missing` account
    /// for every checkpoint before it that it extends.
    pub checkpoint: Option<CheckpointSeen>,
    /// The author's latest checkpoint that at least one other member cosigned.
    pub witnessed: Option<CheckpointSeen>,
}

/// A checkpoint as a holder sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CheckpointSeen {
    /// The checkpoint record.
    pub record: RecordId,
    /// Its seq.
    pub seq: u64,
    /// Records it covers.
    pub size: u64,
    /// Whether the records held, with the checkpoint's cover, give its head: `true` (they
    /// do), `false` (they do not: evidence), or none when it cannot be told (see `missing`
    /// and `problem`).
    pub matches: Option<bool>,
    /// Seqs it covers that every member receives but that are not held: withheld, or not
    /// synced yet (in a bundle: left out).
    pub missing: Vec<Gap>,
    /// Why it could not be checked otherwise (a fork among the covered seqs, a cover
    /// that does not fit the tree, an earlier checkpoint it extends that is not held).
    pub problem: Option<String>,
    /// Members other than the author that cosigned it (`cosignature/v1` records naming
    /// it, its size and its head), in key order.
    pub witnesses: Vec<OrgKey>,
}

impl CheckpointSeen {
    /// Whether the holder holds every record it commits to that every member receives,
    /// and they (with its cover and the checkpoints before it) give its head.
    pub fn verified(&self) -> bool {
        self.matches == Some(true) && self.missing.is_empty() && self.problem.is_none()
    }
}

impl AuthorChain {
    /// Seqs below the highest held that are not held.
    pub fn missing(&self) -> u64 {
        self.gaps.iter().map(|g| g.to - g.from + 1).sum()
    }
}

/// Who cosigned which checkpoint: checkpoint id to (witness, author named, size, head) as
/// cosigned.
type Cosigned = BTreeMap<RecordId, Vec<(OrgKey, OrgKey, u64, Hash)>>;

/// Which keys belong to one organisation: a member that rotated its key signed with each
/// of them. Witnesses are counted by organisation, so that a member that rotated counts
/// once, and an author's new key cannot witness the checkpoints of its old one.
/// [`Organisations::default`] knows no rotation: every key is its own organisation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Organisations(BTreeMap<OrgKey, OrgKey>);

impl Organisations {
    /// From each key to the key its organisation was first admitted with (the
    /// membership's rotations followed; `charter::Membership::organisations`).
    pub fn new(first_keys: BTreeMap<OrgKey, OrgKey>) -> Self {
        Organisations(first_keys)
    }

    /// The organisation `key` signs for, named by its first key; a key never rotated
    /// stands for itself.
    pub fn of(&self, key: &OrgKey) -> OrgKey {
        self.0.get(key).copied().unwrap_or(*key)
    }
}

/// The organisations other than `author`'s that cosigned checkpoint `id` as it states
/// `c`: one key each (the lowest, when an organisation cosigned with several).
fn witnesses(
    cosigned: &Cosigned,
    orgs: &Organisations,
    author: OrgKey,
    id: RecordId,
    c: &Checkpoint,
) -> Vec<OrgKey> {
    let own = orgs.of(&author);
    let mut w: Vec<OrgKey> = cosigned
        .get(&id)
        .into_iter()
        .flatten()
        .filter(|(w, of, size, head)| {
            orgs.of(w) != own && *of == author && *size == c.size && *head == c.head
        })
        .map(|(w, ..)| *w)
        .collect();
    w.sort();
    w.dedup();
    let mut counted = std::collections::BTreeSet::new();
    w.retain(|k| counted.insert(orgs.of(k)));
    w
}

/// `a` and `b` as one list of gaps, in order, merged where they touch.
fn merge(a: &[Gap], b: &[Gap]) -> Vec<Gap> {
    let mut all: Vec<Gap> = a.iter().chain(b).copied().collect();
    all.sort_by_key(|g| g.from);
    let mut out: Vec<Gap> = Vec::new();
    for g in all {
        match out.last_mut() {
            Some(last) if g.from <= last.to.saturating_add(1) => last.to = last.to.max(g.to),
            _ => out.push(g),
        }
    }
    out
}

/// Checks every checkpoint of `author` among `seqs`, in chain order: that it extends the
/// author's checkpoint before it (its frontier gives the earlier head), and that the
/// records held after that earlier checkpoint, with its cover, give its head. Pushes
/// evidence for each one that does not; returns the latest checkpoint and the latest
/// witnessed one, each accounting for the checkpoints it extends.
fn checkpoints(
    author: OrgKey,
    seqs: &BTreeMap<u64, Vec<Link>>,
    cosigned: &Cosigned,
    orgs: &Organisations,
    evidence: &mut Vec<Evidence>,
) -> (Option<CheckpointSeen>, Option<CheckpointSeen>) {
    let mut stated: Vec<(&Link, &Checkpoint)> = seqs
        .values()
        .flatten()
        .filter_map(|l| l.checkpoint.as_ref().map(|c| (l, c)))
        .collect();
    stated.sort_by_key(|(l, _)| (l.seq, l.id));
    // Leaf hashes of the seqs held once, computed once for every checkpoint below.
    let leaves: BTreeMap<u64, Hash> = seqs
        .iter()
        .filter(|(_, at)| at.len() == 1)
        .map(|(&seq, at)| (seq, merkle::leaf_hash(&at[0].id)))
        .collect();
    let mut seen_all: Vec<CheckpointSeen> = Vec::with_capacity(stated.len());
    for (i, &(l, c)) in stated.iter().enumerate() {
        let mut seen = CheckpointSeen {
            record: l.id,
            seq: l.seq,
            size: c.size,
            matches: None,
            missing: Vec::new(),
            problem: None,
            witnesses: witnesses(cosigned, orgs, author, l.id, c),
        };
        // The checkpoint it extends, and whether it extends it faithfully.
        let earlier = stated[..i].iter().rposition(|(e, _)| e.seq < l.seq);
        let mut extends: Option<usize> = None;
        // The seq of the earlier checkpoint it extends, when that is not held.
        let mut unlinked: Option<u64> = None;
        let mut consistent = true;
        let mut inconsistent = |earlier: RecordId, reason: String| {
            consistent = false;
            evidence.push(Evidence::InconsistentCheckpoints {
                author,
                earlier,
                later: l.id,
                reason,
            });
        };
        match (&c.previous, earlier) {
            (None, None) => {}
            (None, Some(e)) => inconsistent(
                stated[e].0.id,
                format!(
                    "does not extend the author's earlier checkpoint at seq {}",
                    stated[e].0.seq
                ),
            ),
            (Some(p), earlier) => {
                if let Some(e) = earlier.filter(|&e| stated[e].0.seq > p.seq) {
                    inconsistent(
                        stated[e].0.id,
                        format!(
                            "extends the checkpoint at seq {}, passing over the author's later checkpoint at seq {}",
                            p.seq, stated[e].0.seq
                        ),
                    );
                }
                match seqs.get(&p.seq) {
                    None => unlinked = Some(p.seq),
                    Some(at) => {
                        for n in at {
                            match &n.checkpoint {
                                None => inconsistent(
                                    n.id,
                                    format!(
                                        "names the author's record at seq {} as its previous checkpoint, and that record is no checkpoint",
                                        p.seq
                                    ),
                                ),
                                Some(ec) if ec.size != p.size => inconsistent(
                                    n.id,
                                    format!(
                                        "says its previous checkpoint covered {} records; that checkpoint covers {}",
                                        p.size, ec.size
                                    ),
                                ),
                                Some(ec) if p.head() != Some(ec.head) => inconsistent(
                                    n.id,
                                    format!(
                                        "extends a tree whose head is not its previous checkpoint's {}: the author rewrote its first {} records",
                                        hex::encode(ec.head),
                                        p.size
                                    ),
                                ),
                                Some(_) => {
                                    extends = stated.iter().position(|(s, _)| s.id == n.id)
                                }
                            }
                        }
                    }
                }
            }
        }
        // The records after the checkpoint it extends.
        let since = c.since();
        if let Some((seq, _)) = seqs.range(since + 1..=c.size).find(|(_, at)| at.len() > 1) {
            seen.problem = Some(format!("the author forked at seq {seq}, which it covers"));
        } else if !c.cover_fits() || !c.previous_fits() {
            seen.problem = Some("its cover or frontier does not fit inside it".into());
        } else {
            // Everything here is bounded by the records held and the cover, never by the
            // size the checkpoint states (a member may state any size it likes).
            for part in &c.cover {
                for (&seq, at) in seqs.range(part.start + 1..=part.start + part.len) {
                    if at[0].to_everyone {
                        evidence.push(Evidence::CoverHides {
                            author,
                            checkpoint: l.id,
                            seq,
                            record: at[0].id,
                        });
                    }
                }
            }
            // The seq ranges after `since` that the cover leaves to the records held.
            let mut open: Vec<(u64, u64)> = Vec::new();
            let mut from = since + 1;
            for part in &c.cover {
                if part.start + 1 > from {
                    open.push((from, part.start));
                }
                from = part.start + part.len + 1;
            }
            if from <= c.size {
                open.push((from, c.size));
            }
            let held: BTreeMap<u64, Hash> = open
                .iter()
                .flat_map(|&(a, b)| leaves.range(a..=b).map(|(&seq, &h)| (seq - 1, h)))
                .collect();
            match merkle::head_with_cover(c.size, &held, &c.parts()) {
                Ok(h) => {
                    seen.matches = Some(h == c.head);
                    if h != c.head {
                        evidence.push(Evidence::CheckpointContradicts {
                            author,
                            checkpoint: l.id,
                            size: c.size,
                            stated: c.head,
                            held: h,
                        });
                    }
                }
                Err(merkle::CoverError::Uncovered(_)) => {
                    // The open seqs not held (at a forked seq two records are held).
                    let mut missing: Vec<Gap> = Vec::new();
                    for &(a, b) in &open {
                        let mut next = a;
                        for &seq in seqs.range(a..=b).map(|(s, _)| s) {
                            if seq > next {
                                missing.push(Gap {
                                    from: next,
                                    to: seq - 1,
                                });
                            }
                            next = seq + 1;
                        }
                        if next <= b {
                            missing.push(Gap { from: next, to: b });
                        }
                    }
                    seen.missing = missing;
                }
                Err(e) => seen.problem = Some(e.to_string()),
            }
        }
        // An earlier checkpoint it extends that is not held is itself a record every
        // member receives: missing, and nothing before it can be told.
        if let Some(p) = unlinked {
            seen.missing = merge(&[Gap { from: p, to: p }], &seen.missing);
            seen.problem = seen.problem.or_else(|| {
                Some(format!(
                    "it extends the author's checkpoint at seq {p}, which is not held, so the records before it cannot be told"
                ))
            });
        }
        // What holds of the checkpoints it extends holds of it.
        if !consistent {
            seen.matches = Some(false);
        } else if let Some(b) = extends.map(|b| &seen_all[b]) {
            seen.missing = merge(&b.missing, &seen.missing);
            seen.problem = seen.problem.or_else(|| b.problem.clone());
            seen.matches = match (b.matches, seen.matches) {
                (Some(false), _) | (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            };
        }
        seen_all.push(seen);
    }
    let witnessed = seen_all
        .iter()
        .rev()
        .find(|s| !s.witnesses.is_empty())
        .cloned();
    (seen_all.pop(), witnessed)
}

/// The chains of every author among some records, and the evidence they hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ChainReport {
    /// One entry per author, in key order.
    pub authors: Vec<AuthorChain>,
    /// Forks and broken links, by author and seq.
    pub evidence: Vec<Evidence>,
}

impl ChainReport {
    /// Checks the chains of `links` (any order; a link given twice counts once), every
    /// key counted as an organisation of its own (no rotations known).
    pub fn check(links: impl IntoIterator<Item = Link>) -> Self {
        Self::check_with(links, &Organisations::default())
    }

    /// As [`ChainReport::check`], counting witnesses by organisation (`orgs`).
    pub fn check_with(links: impl IntoIterator<Item = Link>, orgs: &Organisations) -> Self {
        let mut by_author: BTreeMap<OrgKey, BTreeMap<u64, Vec<Link>>> = BTreeMap::new();
        let mut cosigned = Cosigned::new();
        for l in links {
            if let Some(c) = &l.cosignature {
                cosigned
                    .entry(c.checkpoint)
                    .or_default()
                    .push((l.author, c.author, c.size, c.head));
            }
            let at = by_author
                .entry(l.author)
                .or_default()
                .entry(l.seq)
                .or_default();
            if !at.iter().any(|h| h.id == l.id) {
                at.push(l);
            }
        }
        let mut report = ChainReport::default();
        for (author, seqs) in by_author {
            let mut gaps = Vec::new();
            let mut expected = 1;
            let mut held = 0;
            for (&seq, at) in &seqs {
                held += at.len() as u64;
                if seq > expected {
                    gaps.push(Gap {
                        from: expected,
                        to: seq - 1,
                    });
                }
                expected = seq.saturating_add(1);
                if at.len() > 1 {
                    let mut records: Vec<RecordId> = at.iter().map(|l| l.id).collect();
                    records.sort();
                    report.evidence.push(Evidence::Fork {
                        author,
                        seq,
                        records,
                    });
                }
                let Some(before) = seq.checked_sub(1).and_then(|s| seqs.get(&s)) else {
                    continue;
                };
                let mut held_before: Vec<RecordId> = before.iter().map(|l| l.id).collect();
                held_before.sort();
                let mut broken: Vec<&Link> = at
                    .iter()
                    .filter(|l| l.prev.is_some_and(|p| !held_before.contains(&p)))
                    .collect();
                broken.sort_by_key(|l| l.id);
                for l in broken {
                    report.evidence.push(Evidence::BrokenLink {
                        author,
                        seq,
                        record: l.id,
                        prev: l.prev.expect("filtered on prev"),
                        held: held_before.clone(),
                    });
                }
            }
            let (checkpoint, witnessed) =
                checkpoints(author, &seqs, &cosigned, orgs, &mut report.evidence);
            report.authors.push(AuthorChain {
                author,
                held,
                highest: expected - 1,
                gaps,
                checkpoint,
                witnessed,
            });
        }
        report
    }

    /// True when no author forked or broke its chain.
    pub fn clean(&self) -> bool {
        self.evidence.is_empty()
    }

    /// The chain of `author`, if any of its records are held.
    pub fn author(&self, author: &OrgKey) -> Option<&AuthorChain> {
        self.authors.iter().find(|a| a.author == *author)
    }
}

/// How some records of an author stand in its history: whether a checkpoint other members
/// witnessed covers them, and whether everything that checkpoint commits to is held.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuthorHistory {
    /// Author.
    pub author: OrgKey,
    /// Records in question.
    pub records: u64,
    /// Seq of the author's latest witnessed checkpoint that the records held verify.
    pub witnessed_checkpoint: Option<u64>,
    /// Records it covers.
    pub witnessed_size: u64,
    /// Members that cosigned it.
    pub witnesses: usize,
    /// Records in question after it (no witness vouched for their place yet).
    pub beyond_witnessed: u64,
    /// Seqs up to the author's latest checkpoint that every member receives and that are
    /// not held.
    pub missing: Vec<Gap>,
    /// Evidence against the author.
    pub evidence: usize,
    /// Why the author's latest checkpoint could not be checked, if it could not.
    pub problem: Option<String>,
}

/// Whether records were taken from a complete, witnessed history ([`ChainReport::history`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct History {
    /// No author of the records forked, broke its chain or contradicted its checkpoints,
    /// and nothing their latest checkpoints commit to that every member receives is missing.
    pub complete: bool,
    /// Every record lies under a checkpoint of its author that another member cosigned and
    /// that the records held verify.
    pub witnessed: bool,
    /// Per author of the records.
    pub authors: Vec<AuthorHistory>,
}

impl ChainReport {
    /// How the records `(author, seq)` stand in their authors' histories as held here.
    pub fn history(&self, records: impl IntoIterator<Item = (OrgKey, u64)>) -> History {
        let mut per: BTreeMap<OrgKey, Vec<u64>> = BTreeMap::new();
        for (a, seq) in records {
            per.entry(a).or_default().push(seq);
        }
        let authors: Vec<AuthorHistory> = per
            .into_iter()
            .map(|(author, seqs)| {
                let chain = self.author(&author);
                let witnessed = chain
                    .and_then(|c| c.witnessed.as_ref())
                    .filter(|w| w.verified());
                let size = witnessed.map_or(0, |w| w.size);
                AuthorHistory {
                    author,
                    records: seqs.len() as u64,
                    witnessed_checkpoint: witnessed.map(|w| w.seq),
                    witnessed_size: size,
                    witnesses: witnessed.map_or(0, |w| w.witnesses.len()),
                    beyond_witnessed: seqs.iter().filter(|&&s| s > size).count() as u64,
                    missing: chain
                        .and_then(|c| c.checkpoint.as_ref())
                        .map(|c| c.missing.clone())
                        .unwrap_or_default(),
                    evidence: self
                        .evidence
                        .iter()
                        .filter(|e| e.author() == author)
                        .count(),
                    problem: chain
                        .and_then(|c| c.checkpoint.as_ref())
                        .and_then(|c| c.problem.clone()),
                }
            })
            .collect();
        History {
            complete: authors
                .iter()
                .all(|a| a.missing.is_empty() && a.evidence == 0 && a.problem.is_none()),
            witnessed: authors.iter().all(|a| a.beyond_witnessed == 0),
            authors,
        }
    }
}

impl fmt::Display for AuthorHistory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "author {}: {} records; ", self.author, self.records)?;
        match self.witnessed_checkpoint {
            Some(seq) => write!(
                f,
                "checkpoint {seq} over its first {} records witnessed by {} member{}",
                self.witnessed_size,
                self.witnesses,
                if self.witnesses == 1 { "" } else { "s" }
            )?,
            None => write!(f, "no witnessed checkpoint")?,
        }
        if self.beyond_witnessed > 0 {
            write!(f, "; {} after it, not witnessed yet", self.beyond_witnessed)?;
        }
        if !self.missing.is_empty() {
            write!(f, "; INCOMPLETE: seq {} not held", seqs(&self.missing))?;
        }
        if self.evidence > 0 {
            write!(f, "; {} pieces of EVIDENCE against it", self.evidence)?;
        }
        if let Some(p) = &self.problem {
            write!(f, "; its latest checkpoint CANNOT BE CHECKED: {p}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn id(n: u8) -> RecordId {
        RecordId([n; 32])
    }

    fn author() -> OrgKey {
        Identity::generate().key()
    }

    /// A chain of `seqs` for `a`, each linked to the id the one before it would have.
    fn link(a: OrgKey, seq: u64, id_n: u8, prev_n: Option<u8>) -> Link {
        Link {
            author: a,
            seq,
            prev: prev_n.map(id),
            id: id(id_n),
            to_everyone: true,
            checkpoint: None,
            cosignature: None,
        }
    }

    #[test]
    fn an_honest_chain_is_clean_and_complete() {
        let a = author();
        let links = (1..=5u8).map(|s| link(a, s as u64, s, (s > 1).then(|| s - 1)));
        let r = ChainReport::check(links);
        assert!(r.clean(), "{:?}", r.evidence);
        let c = r.author(&a).unwrap();
        assert_eq!((c.held, c.highest, c.missing()), (5, 5, 0));
    }

    #[test]
    fn two_records_with_one_seq_are_a_fork_with_both_records() {
        let a = author();
        let r = ChainReport::check([
            link(a, 1, 1, None),
            link(a, 2, 2, Some(1)),
            link(a, 2, 9, Some(1)),
            // The same record given twice is no fork.
            link(a, 2, 2, Some(1)),
        ]);
        assert_eq!(
            r.evidence,
            vec![Evidence::Fork {
                author: a,
                seq: 2,
                records: vec![id(2), id(9)]
            }]
        );
        assert_eq!(r.author(&a).unwrap().held, 3);
        assert!(r.evidence[0].to_string().contains("seq 2"));
    }

    #[test]
    fn a_prev_naming_an_unseen_record_is_a_broken_link() {
        let a = author();
        // Seq 3 names a seq-2 record this holder was never shown.
        let r = ChainReport::check([
            link(a, 1, 1, None),
            link(a, 2, 2, Some(1)),
            link(a, 3, 3, Some(7)),
        ]);
        assert_eq!(
            r.evidence,
            vec![Evidence::BrokenLink {
                author: a,
                seq: 3,
                record: id(3),
                prev: id(7),
                held: vec![id(2)]
            }]
        );
        assert_eq!(r.evidence[0].records(), vec![id(3), id(2)]);
    }

    #[test]
    fn after_a_fork_each_branch_links_to_its_own_record() {
        let a = author();
        let r = ChainReport::check([
            link(a, 1, 1, None),
            link(a, 2, 2, Some(1)),
            link(a, 2, 8, Some(1)),
            link(a, 3, 3, Some(2)),
            link(a, 3, 9, Some(8)),
        ]);
        // Two forks (seq 2 and 3), no broken link: each seq-3 record names a held seq-2 one.
        assert_eq!(r.evidence.len(), 2);
        assert!(r
            .evidence
            .iter()
            .all(|e| matches!(e, Evidence::Fork { .. })));
    }

    #[test]
    fn a_checkpoint_is_checked_against_the_records_it_covers() {
        let a = author();
        let chain: Vec<Link> = (1..=4u8)
            .map(|s| link(a, s as u64, s, (s > 1).then(|| s - 1)))
            .collect();
        let everyone = |_: u64| true;
        let honest = Checkpoint::of(&[id(1), id(2), id(3)], &everyone);
        let lying = Checkpoint::of(&[id(1), id(9), id(3)], &everyone);
        let at = |seq: u64, n: u8, c: &Checkpoint| Link {
            checkpoint: Some(c.clone()),
            ..link(a, seq, n, Some(n - 1))
        };
        let seen = |r: &ChainReport| r.author(&a).unwrap().checkpoint.clone().unwrap();
        // An honest checkpoint at seq 5 over seqs 1-3.
        let r = ChainReport::check(chain.iter().cloned().chain([at(5, 5, &honest)]));
        assert!(r.clean(), "{:?}", r.evidence);
        assert_eq!((seen(&r).size, seen(&r).matches), (3, Some(true)));
        // One stating a record at seq 2 that the author never showed: evidence.
        let r = ChainReport::check(chain.iter().cloned().chain([at(5, 5, &lying)]));
        assert!(matches!(
            r.evidence.as_slice(),
            [Evidence::CheckpointContradicts { size: 3, .. }]
        ));
        assert!(r.evidence[0]
            .to_string()
            .contains("contradicted checkpoint"));
        // With seq 2 left out (and not under the cover), the holder names what is missing.
        let r = ChainReport::check(
            chain
                .iter()
                .filter(|l| l.seq != 2)
                .cloned()
                .chain([at(5, 5, &honest)]),
        );
        assert!(r.clean());
        assert_eq!(seen(&r).matches, None);
        assert_eq!(seen(&r).missing, vec![Gap { from: 2, to: 2 }]);
    }

    #[test]
    fn a_cover_lets_a_member_without_the_private_records_check_a_checkpoint() {
        let a = author();
        let ids: Vec<RecordId> = (1..=9u8).map(id).collect();
        // Seqs 3 and 6-7 are private: the cover hides them, and only them.
        let private = |i: u64| [2, 5, 6].contains(&i);
        let cp = Checkpoint::of(&ids, &|i| !private(i));
        assert!(cp.cover_fits() && !cp.cover.is_empty());
        let shown = (1..=9u8)
            .filter(|s| !private((*s - 1) as u64))
            .map(|s| link(a, s as u64, s, (s > 1).then(|| s - 1)));
        let with_cp = |cp: &Checkpoint| {
            shown.clone().chain([Link {
                checkpoint: Some(cp.clone()),
                ..link(a, 10, 10, Some(9))
            }])
        };
        let r = ChainReport::check(with_cp(&cp));
        assert!(r.clean(), "{:?}", r.evidence);
        let seen = r.author(&a).unwrap().checkpoint.clone().unwrap();
        assert_eq!(seen.matches, Some(true), "{seen:?}");
        // A cover that hides a record signed for every member (seq 8): whoever holds that
        // record holds the proof of the lie.
        let hides = Checkpoint::of(&ids, &|i| !private(i) && i != 7);
        let r = ChainReport::check(with_cp(&hides));
        assert!(
            matches!(r.evidence.as_slice(), [Evidence::CoverHides { seq: 8, .. }]),
            "{:?}",
            r.evidence
        );
    }

    /// Author `a`'s chain of `n` records (seqs 1..=n, ids 1..=n) with checkpoints at the
    /// given seqs, each extending the one before; `private(index)` marks records not every
    /// member receives. Returns every link, held or not.
    fn checkpointed(a: OrgKey, n: u8, at: &[u8], private: &dyn Fn(u64) -> bool) -> Vec<Link> {
        let mut links: Vec<Link> = Vec::new();
        let mut previous: Option<(u64, u64)> = None;
        for s in 1..=n {
            let mut l = link(a, s as u64, s, (s > 1).then(|| s - 1));
            l.to_everyone = !private(s as u64 - 1);
            if at.contains(&s) {
                let ids: Vec<RecordId> = links.iter().map(|l| l.id).collect();
                let everyone = |i: u64| !private(i);
                let c = match previous {
                    None => Checkpoint::of(&ids, &everyone),
                    Some((seq, size)) => Checkpoint::after(&ids, &everyone, seq, size),
                };
                previous = Some((s as u64, c.size));
                l.to_everyone = true;
                l.checkpoint = Some(c);
            }
            links.push(l);
        }
        links
    }

    fn cosign(witness: OrgKey, seq: u64, of: &Link) -> Link {
        let c = of.checkpoint.as_ref().unwrap();
        Link {
            cosignature: Some(Cosignature {
                author: of.author,
                checkpoint: of.id,
                size: c.size,
                head: c.head,
            }),
            ..link(witness, seq, 200 + seq as u8, None)
        }
    }

    #[test]
    fn successive_checkpoints_are_checked_each_from_the_one_before_and_counted_by_witness() {
        let (a, b, c) = (author(), author(), author());
        let private = |i: u64| [2, 10].contains(&i);
        let all = checkpointed(a, 14, &[6, 14], &private);
        let held: Vec<Link> = all.iter().filter(|l| l.to_everyone).cloned().collect();
        // The second checkpoint's cover is only of the records after the first.
        let second = all[13].checkpoint.as_ref().unwrap();
        assert_eq!(
            second.previous.as_ref().map(|p| (p.seq, p.size)),
            Some((6, 5))
        );
        assert!(
            second.cover.iter().all(|p| p.start >= 5),
            "{:?}",
            second.cover
        );
        let witnessed_first = [cosign(b, 1, &all[5]), cosign(c, 1, &all[5])];
        let r = ChainReport::check(held.iter().cloned().chain(witnessed_first.clone()));
        assert!(r.clean(), "{:?}", r.evidence);
        let chain = r.author(&a).unwrap();
        let latest = chain.checkpoint.clone().unwrap();
        assert!(latest.verified(), "{latest:?}");
        assert_eq!(
            (latest.seq, latest.size, latest.witnesses.len()),
            (14, 13, 0)
        );
        let witnessed = chain.witnessed.clone().unwrap();
        assert_eq!((witnessed.seq, witnessed.witnesses.len()), (6, 2));
        // A cosignature by the author itself, or of another head, counts for nothing.
        let mut false_head = cosign(c, 2, &all[13]);
        false_head.cosignature.as_mut().unwrap().head[0] ^= 1;
        let r = ChainReport::check(held.iter().cloned().chain([
            cosign(a, 15, &all[13]),
            false_head,
            cosign(b, 2, &all[13]),
        ]));
        let latest = r.author(&a).unwrap().checkpoint.clone().unwrap();
        assert_eq!(latest.witnesses, vec![b]);
        // A record every member receives left out before the first checkpoint is missing
        // for the second too.
        let r = ChainReport::check(held.iter().filter(|l| l.seq != 4).cloned());
        let latest = r.author(&a).unwrap().checkpoint.clone().unwrap();
        assert_eq!(latest.missing, vec![Gap { from: 4, to: 4 }]);
        assert!(!latest.verified());
        let h = r.history([(a, 1)]);
        assert!(!h.complete && !h.witnessed, "{h:?}");
        // Records up to the witnessed checkpoint are in a complete, witnessed history;
        // a record after it is not witnessed yet.
        let r = ChainReport::check(held.iter().cloned().chain(witnessed_first));
        let h = r.history([(a, 1), (a, 5)]);
        assert!(h.complete && h.witnessed, "{h:?}");
        assert_eq!(h.authors[0].witnesses, 2);
        let h = r.history([(a, 1), (a, 8)]);
        assert!(h.complete && !h.witnessed, "{h:?}");
        assert!(h.authors[0]
            .to_string()
            .contains("1 after it, not witnessed yet"));
    }

    /// What a dishonest member that rotated its key would try: cosign its own old key's
    /// checkpoint with the new key, and cosign another's checkpoint with both keys.
    #[test]
    fn witnesses_are_counted_by_organisation_across_key_rotations() {
        let (a, a_new, b, b_new, c) = (author(), author(), author(), author(), author());
        let all = checkpointed(a, 6, &[6], &|_| false);
        let orgs = Organisations::new(BTreeMap::from([
            (a, a),
            (a_new, a),
            (b, b),
            (b_new, b),
            (c, c),
        ]));
        let cosigned = [
            cosign(a_new, 1, &all[5]),
            cosign(b, 1, &all[5]),
            cosign(b_new, 1, &all[5]),
            cosign(c, 1, &all[5]),
        ];
        let by_org = ChainReport::check_with(all.iter().cloned().chain(cosigned.clone()), &orgs);
        let seen = by_org.author(&a).unwrap().checkpoint.clone().unwrap();
        assert!(seen.verified(), "{seen:?}");
        let mut expected = vec![b.min(b_new), c];
        expected.sort();
        assert_eq!(
            seen.witnesses, expected,
            "the author's new key is not a witness; b counts once"
        );
        // Without the membership's rotations every key counts.
        let by_key = ChainReport::check(all.iter().cloned().chain(cosigned));
        let seen = by_key.author(&a).unwrap().checkpoint.clone().unwrap();
        assert_eq!(seen.witnesses.len(), 4);
    }

    #[test]
    fn a_checkpoint_that_does_not_extend_the_one_before_is_evidence() {
        let a = author();
        let nobody = |_: u64| false;
        let everyone = |_: u64| true;
        let all = checkpointed(a, 12, &[5, 12], &nobody);
        let ids: Vec<RecordId> = all[..11].iter().map(|l| l.id).collect();
        let with_second = |c: Checkpoint| {
            let mut links = all.clone();
            links[11].checkpoint = Some(c);
            ChainReport::check(links)
        };
        let kind = |r: &ChainReport| {
            assert!(!r.evidence.is_empty());
            r.evidence
                .iter()
                .map(|e| match e {
                    Evidence::InconsistentCheckpoints { reason, .. } => reason.clone(),
                    other => panic!("{other:?}"),
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        // The author rewrote its first four records in the tree it now extends (say it
        // shows a peer another record at seq 3).
        let mut rewritten = ids.clone();
        rewritten[2] = id(99);
        let r = with_second(Checkpoint::after(&rewritten, &everyone, 5, 4));
        assert!(
            kind(&r).contains("rewrote its first 4 records"),
            "{}",
            kind(&r)
        );
        assert!(r.evidence[0]
            .to_string()
            .starts_with("inconsistent checkpoints:"));
        assert_eq!(
            r.author(&a).unwrap().checkpoint.as_ref().unwrap().matches,
            Some(false)
        );
        // A later checkpoint that ignores the earlier one.
        let r = with_second(Checkpoint::of(&ids, &everyone));
        assert!(kind(&r).contains("does not extend"), "{}", kind(&r));
        // One that names a record that is no checkpoint, or misstates its size.
        let r = with_second(Checkpoint::after(&ids, &everyone, 4, 3));
        assert!(kind(&r).contains("no checkpoint"), "{}", kind(&r));
        let mut c = Checkpoint::after(&ids, &everyone, 5, 4);
        c.previous.as_mut().unwrap().size = 3;
        c.previous.as_mut().unwrap().frontier.pop();
        let r = with_second(c);
        assert!(kind(&r).contains("covered 3 records"), "{}", kind(&r));
        // Without the earlier checkpoint held, the later one cannot be told.
        let r = ChainReport::check(all.iter().filter(|l| l.seq != 5).cloned());
        let latest = r.author(&a).unwrap().checkpoint.clone().unwrap();
        assert!(latest
            .problem
            .clone()
            .unwrap()
            .contains("seq 5, which is not held"));
        // A bundle that leaves out the earlier checkpoint (to hide what came before it)
        // is incomplete: that checkpoint is itself a record every member receives.
        assert_eq!(latest.missing, vec![Gap { from: 5, to: 5 }]);
        let h = r.history([(a, 1)]);
        assert!(!h.complete, "{h:?}");
        assert!(h.authors[0].to_string().contains("CANNOT BE CHECKED"));
    }

    #[test]
    fn node_certificates_and_records_for_some_members_are_left_to_the_cover() {
        use crate::record::Audience;
        let some = Audience::members(vec![author()]);
        assert!(in_every_view("finding/v1", &Audience::Coalition));
        assert!(in_every_view(crate::sealed::SEALED_SCHEMA, &some));
        assert!(!in_every_view("finding/v1", &some));
        assert!(!in_every_view("finding/v1", &Audience::Private));
        // Kept out of auditors' bundles, so a bundle without them is still complete.
        assert!(!in_every_view(
            crate::charter::NODE_CERT_SCHEMA,
            &Audience::Coalition
        ));
    }

    #[test]
    fn a_checkpoint_stating_a_huge_size_costs_what_is_held_not_what_it_states() {
        // A member signs a checkpoint at seq 2^40 + 1 over 2^40 records, nearly all of
        // them never shown: checking it must neither allocate nor walk 2^40 of anything.
        let a = author();
        let huge = 1u64 << 40;
        let c = Checkpoint {
            size: huge,
            head: [7; 32],
            cover: vec![merkle::Covered {
                start: huge / 2,
                len: huge / 2,
                hash: [1; 32],
            }],
            previous: None,
        };
        let links = [
            link(a, 1, 1, None),
            Link {
                checkpoint: Some(c),
                ..link(a, huge + 1, 2, None)
            },
        ];
        let t = std::time::Instant::now();
        let r = ChainReport::check(links);
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
        let seen = r.author(&a).unwrap().checkpoint.clone().unwrap();
        assert_eq!(
            seen.missing,
            vec![Gap {
                from: 2,
                to: huge / 2
            }]
        );
        assert!(!seen.verified());
    }

    #[test]
    fn gaps_are_reported_as_ranges_and_links_across_them_are_not_judged() {
        let a = author();
        let b = author();
        let r = ChainReport::check([
            link(a, 2, 2, Some(1)),
            link(a, 5, 5, Some(4)),
            link(a, 6, 6, Some(5)),
            link(a, 9, 9, Some(8)),
            link(b, 1, 11, None),
        ]);
        assert!(r.clean(), "{:?}", r.evidence);
        let c = r.author(&a).unwrap();
        assert_eq!(
            c.gaps,
            vec![
                Gap { from: 1, to: 1 },
                Gap { from: 3, to: 4 },
                Gap { from: 7, to: 8 }
            ]
        );
        assert_eq!((c.held, c.highest, c.missing()), (4, 9, 5));
        assert_eq!(c.gaps[1].to_string(), "3-4");
        assert_eq!(r.author(&b).unwrap().missing(), 0);
    }
}
