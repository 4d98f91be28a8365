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
use crate::merkle::{self, Checkpoint, Hash};
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
    /// Whether every member receives the record (audience COALITION, or sealed: sealed
    /// records travel to every member); what a checkpoint's cover leaves out.
    pub to_everyone: bool,
    /// What the record states, if it is a `checkpoint/v1` record.
    pub checkpoint: Option<Checkpoint>,
}

impl From<&Record> for Link {
    fn from(r: &Record) -> Self {
        Self {
            author: r.author,
            seq: r.seq,
            prev: r.prev,
            id: r.id,
            to_everyone: r.audience == crate::record::Audience::Coalition
                || r.schema == crate::sealed::SEALED_SCHEMA,
            checkpoint: Checkpoint::of_record(&r.schema, &r.payload),
        }
    }
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
    /// The author's checkpoint covering the most records, if any is held.
    pub checkpoint: Option<CheckpointSeen>,
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
    /// that does not fit the tree).
    pub problem: Option<String>,
}

impl AuthorChain {
    /// Seqs below the highest held that are not held.
    pub fn missing(&self) -> u64 {
        self.gaps.iter().map(|g| g.to - g.from + 1).sum()
    }
}

/// Checks every checkpoint of `author` among `seqs` against the records held and the
/// checkpoint's cover (pushing evidence for each one they contradict); returns the one
/// covering most.
fn checkpoints(
    author: OrgKey,
    seqs: &BTreeMap<u64, Vec<Link>>,
    evidence: &mut Vec<Evidence>,
) -> Option<CheckpointSeen> {
    let mut stated: Vec<(&Link, &Checkpoint)> = seqs
        .values()
        .flatten()
        .filter_map(|l| l.checkpoint.as_ref().map(|c| (l, c)))
        .collect();
    stated.sort_by_key(|(l, c)| (c.size, l.seq, l.id));
    if stated.is_empty() {
        return None;
    }
    // Leaf hashes of the seqs held once, computed once for every checkpoint below.
    let leaves: BTreeMap<u64, Hash> = seqs
        .iter()
        .filter(|(_, at)| at.len() == 1)
        .map(|(&seq, at)| (seq, merkle::leaf_hash(&at[0].id)))
        .collect();
    let mut best = None;
    for (l, c) in stated {
        let mut seen = CheckpointSeen {
            record: l.id,
            seq: l.seq,
            size: c.size,
            matches: None,
            missing: Vec::new(),
            problem: None,
        };
        if let Some((seq, _)) = seqs.range(1..=c.size).find(|(_, at)| at.len() > 1) {
            seen.problem = Some(format!("the author forked at seq {seq}, which it covers"));
        } else if !c.cover_fits() {
            seen.problem = Some("its cover does not fit inside it".into());
        } else {
            let mut covered = vec![false; c.size as usize];
            for part in &c.cover {
                covered[part.start as usize..(part.start + part.len) as usize].fill(true);
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
            let held = |i: u64| {
                (!covered[i as usize])
                    .then(|| leaves.get(&(i + 1)).copied())
                    .flatten()
            };
            match merkle::head_with_cover(c.size, &held, &c.cover) {
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
                    let mut missing: Vec<Gap> = Vec::new();
                    for seq in (1..=c.size)
                        .filter(|&s| !covered[(s - 1) as usize] && !seqs.contains_key(&s))
                    {
                        match missing.last_mut() {
                            Some(g) if g.to + 1 == seq => g.to = seq,
                            _ => missing.push(Gap { from: seq, to: seq }),
                        }
                    }
                    seen.missing = missing;
                }
                Err(e) => seen.problem = Some(e.to_string()),
            }
        }
        best = Some(seen);
    }
    best
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
    /// Checks the chains of `links` (any order; a link given twice counts once).
    pub fn check(links: impl IntoIterator<Item = Link>) -> Self {
        let mut by_author: BTreeMap<OrgKey, BTreeMap<u64, Vec<Link>>> = BTreeMap::new();
        for l in links {
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
            let checkpoint = checkpoints(author, &seqs, &mut report.evidence);
            report.authors.push(AuthorChain {
                author,
                held,
                highest: expected - 1,
                gaps,
                checkpoint,
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
