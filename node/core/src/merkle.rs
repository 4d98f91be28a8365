//! The Merkle tree of an author's log, as Certificate Transparency defines it (RFC 6962
//! §2.1): leaf `i` is the id of the author's record with seq `i + 1`, hashed as
//! `SHA-256(0x00 || id)`; an inner node is `SHA-256(0x01 || left || right)`; a tree of `n`
//! leaves splits at the largest power of two below `n`. The head of such a tree commits to
//! every record of the log, whatever its audience, while revealing none of them.
//!
//! Whoever holds only some of an author's records (a member outside the audience of the
//! others) recomputes the head from the ids it holds and a [`Cover`]: the hashes of the
//! largest subtrees that contain none of its records, which the author supplies. A cover
//! reveals only hashes of records the holder may not see, never their ids or contents.
//! The tests hold this tree to the `ct-merkle` crate's RFC 6962 implementation.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::record::RecordId;

/// A node hash of the tree.
pub type Hash = [u8; 32];

/// The hash of leaf `id` (`SHA-256(0x00 || id)`).
pub fn leaf_hash(id: &RecordId) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(id.0);
    h.finalize().into()
}

fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The largest power of two strictly below `n` (`n >= 2`).
fn split(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

/// The head (RFC 6962 `MTH`) of the tree over `leaves` (leaf hashes, in seq order). The
/// head of an empty tree is `SHA-256("")`.
pub fn head(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => Sha256::digest([]).into(),
        1 => leaves[0],
        n => {
            let k = split(n as u64) as usize;
            node_hash(&head(&leaves[..k]), &head(&leaves[k..]))
        }
    }
}

/// Schema of the record in which an organisation commits to its own log.
pub const CHECKPOINT_SCHEMA: &str = "checkpoint/v1";

/// What a `checkpoint/v1` record says: the head of the author's first `size` records,
/// and the cover of those not every member receives (private records, records for chosen
/// members that travel unsealed), so that every member can check the head from the
/// records it holds, and an auditor can tell a complete bundle from one with records left
/// out.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    /// Records covered: seqs `1..=size`.
    pub size: u64,
    /// The head of the tree over their ids.
    #[serde(with = "hex_hash")]
    pub head: Hash,
    /// The subtrees of records not every member receives ([`cover`]); with a `previous`
    /// checkpoint, only among the records after it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cover: Cover,
    /// The author's checkpoint before this one, which this one extends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Previous>,
}

/// How a checkpoint extends the author's checkpoint before it: the hashes of the perfect
/// subtrees that make up the earlier tree (its *frontier*, [`blocks`]). Folded, they give
/// the earlier head; each is also a subtree of the later tree, so the later head is
/// computed from them and the records after the earlier checkpoint. Whoever checks both
/// heads this way knows the later tree holds the earlier one unchanged (RFC 9162 §2.1.4
/// proves the same with a consistency proof; a frontier has at most one hash per bit of
/// the earlier size, and needs no record of the earlier tree to check).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Previous {
    /// Seq of the earlier checkpoint record.
    pub seq: u64,
    /// Records it covered.
    pub size: u64,
    /// Hashes of the subtrees [`blocks`]`(size)`, in leaf order.
    #[serde(with = "hex_hashes")]
    pub frontier: Vec<Hash>,
}

impl Previous {
    /// The head the frontier gives, if it has the right number of hashes.
    pub fn head(&self) -> Option<Hash> {
        (self.size >= 1 && self.frontier.len() == self.size.count_ones() as usize)
            .then(|| fold(&self.frontier))
    }

    /// The frontier as covered subtrees of a later tree.
    fn parts(&self) -> impl Iterator<Item = Covered> + '_ {
        blocks(self.size)
            .into_iter()
            .zip(&self.frontier)
            .map(|((start, len), hash)| Covered {
                start,
                len,
                hash: *hash,
            })
    }
}

/// The perfect subtrees `(first leaf, leaves)` that make up a tree of `n` leaves, largest
/// first: one per bit of `n`. They are subtrees of every larger tree too.
pub fn blocks(n: u64) -> Vec<(u64, u64)> {
    let mut start = 0;
    (0..64)
        .rev()
        .map(|b| 1u64 << b)
        .filter(|len| n & len != 0)
        .map(|len| {
            start += len;
            (start - len, len)
        })
        .collect()
}

/// The head of the tree made of the perfect subtrees with hashes `frontier` ([`blocks`]
/// order): RFC 6962 splits off the largest first, so the fold runs from the right.
fn fold(frontier: &[Hash]) -> Hash {
    let (last, rest) = frontier.split_last().expect("a frontier has a hash");
    rest.iter().rev().fold(*last, |acc, h| node_hash(h, &acc))
}

impl Checkpoint {
    /// The checkpoint of the log whose ids, in seq order from seq 1, are `ids`, where
    /// `to_everyone(index)` says whether every member receives the record at that index.
    pub fn of(ids: &[RecordId], to_everyone: &dyn Fn(u64) -> bool) -> Self {
        let leaves: Vec<Hash> = ids.iter().map(leaf_hash).collect();
        Self {
            size: ids.len() as u64,
            head: head(&leaves),
            cover: cover(&leaves, to_everyone),
            previous: None,
        }
    }

    /// As [`Checkpoint::of`], extending the author's checkpoint record at `seq` that
    /// covered the first `size` of `ids`: the cover is only of the records after it, and
    /// the frontier of the earlier tree links the two.
    pub fn after(ids: &[RecordId], to_everyone: &dyn Fn(u64) -> bool, seq: u64, size: u64) -> Self {
        assert!(
            size >= 1 && size as usize <= ids.len(),
            "an earlier checkpoint is inside the log"
        );
        let leaves: Vec<Hash> = ids.iter().map(leaf_hash).collect();
        Self {
            size: ids.len() as u64,
            head: head(&leaves),
            cover: cover(&leaves, &|i| i < size || to_everyone(i)),
            previous: Some(Previous {
                seq,
                size,
                frontier: blocks(size)
                    .into_iter()
                    .map(|(start, len)| head(&leaves[start as usize..(start + len) as usize]))
                    .collect(),
            }),
        }
    }

    /// Records before those this checkpoint covers itself: the previous checkpoint's size,
    /// or 0.
    pub fn since(&self) -> u64 {
        self.previous.as_ref().map_or(0, |p| p.size)
    }

    /// What recomputes the head besides the records after [`Checkpoint::since`]: the
    /// previous frontier, then the cover.
    pub fn parts(&self) -> Vec<Covered> {
        let mut parts: Vec<Covered> = self.previous.iter().flat_map(Previous::parts).collect();
        parts.extend(&self.cover);
        parts
    }

    /// Whether the previous checkpoint is inside this one and its frontier has one hash per
    /// subtree.
    pub fn previous_fits(&self) -> bool {
        self.previous
            .as_ref()
            .is_none_or(|p| p.size >= 1 && p.size <= self.size && p.head().is_some())
    }

    /// Whether the cover's subtrees lie inside the checkpoint after the previous one, in
    /// order, apart.
    pub fn cover_fits(&self) -> bool {
        let mut next = self.since();
        self.cover.iter().all(|c| {
            let ok = c.len >= 1
                && c.start >= next
                && c.start
                    .checked_add(c.len)
                    .is_some_and(|end| end <= self.size);
            next = c.start.saturating_add(c.len);
            ok
        })
    }

    /// The compact JSON payload of a `checkpoint/v1` record.
    pub fn payload(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a checkpoint serialises")
    }

    /// The checkpoint a record states: `None` for any other schema or a payload that does
    /// not parse (schema validation refuses those before they are stored).
    pub fn of_record(schema: &str, payload: &[u8]) -> Option<Self> {
        (schema == CHECKPOINT_SCHEMA)
            .then(|| serde_json::from_slice(payload).ok())
            .flatten()
    }
}

/// Schema of the record in which a member witnesses another member's checkpoint.
pub const COSIGNATURE_SCHEMA: &str = "cosignature/v1";

/// What a `cosignature/v1` record says: its signer (the witness) holds every record of
/// `author` that every member receives up to the checkpoint, recomputed the head from them
/// and the checkpoint's cover and frontier, and found it equal; and it has never cosigned
/// a checkpoint of `author` that this one does not extend.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cosignature {
    /// The checkpoint's author.
    pub author: crate::identity::OrgKey,
    /// The checkpoint record.
    pub checkpoint: RecordId,
    /// Records it covers.
    pub size: u64,
    /// The head it states.
    #[serde(with = "hex_hash")]
    pub head: Hash,
}

impl Cosignature {
    /// The compact JSON payload of a `cosignature/v1` record.
    pub fn payload(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a cosignature serialises")
    }

    /// The cosignature a record states: `None` for any other schema or a payload that does
    /// not parse.
    pub fn of_record(schema: &str, payload: &[u8]) -> Option<Self> {
        (schema == COSIGNATURE_SCHEMA)
            .then(|| serde_json::from_slice(payload).ok())
            .flatten()
    }
}

/// A subtree none of whose leaves the holder has: the leaves `start..start + len` and
/// their subtree's hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Covered {
    /// First leaf (seq - 1).
    pub start: u64,
    /// Number of leaves.
    pub len: u64,
    /// The subtree's hash.
    #[serde(with = "hex_hash")]
    pub hash: Hash,
}

/// What a holder needs, besides the ids it holds, to recompute a head: the hash of every
/// maximal subtree holding none of its leaves, in leaf order.
pub type Cover = Vec<Covered>;

/// The cover of the tree over `leaves` for a holder that has exactly the leaves for which
/// `held(index)` is true (what the author computes for it).
pub fn cover(leaves: &[Hash], held: &dyn Fn(u64) -> bool) -> Cover {
    fn walk(leaves: &[Hash], start: u64, held: &dyn Fn(u64) -> bool, out: &mut Cover) -> bool {
        // Returns whether any leaf below is held; pushes covers of the unheld subtrees.
        let n = leaves.len() as u64;
        if n == 1 {
            return held(start);
        }
        let k = split(n);
        let mut left = Vec::new();
        let mut right = Vec::new();
        let l = walk(&leaves[..k as usize], start, held, &mut left);
        let r = walk(&leaves[k as usize..], start + k, held, &mut right);
        if !l && !r {
            return false;
        }
        for (side, any, from, len) in [(left, l, start, k), (right, r, start + k, n - k)] {
            if any {
                out.extend(side);
            } else {
                let slice = &leaves[from as usize - start as usize..][..len as usize];
                out.push(Covered {
                    start: from,
                    len,
                    hash: head(slice),
                });
            }
        }
        true
    }
    let mut out = Cover::new();
    if !leaves.is_empty() && !walk(leaves, 0, held, &mut out) {
        out.push(Covered {
            start: 0,
            len: leaves.len() as u64,
            hash: head(leaves),
        });
    }
    out
}

/// Why a head could not be recomputed from held leaves and a cover.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoverError {
    /// A leaf is neither held nor under a covered subtree.
    #[error("leaf {0} (seq {s}) is neither held nor covered", s = .0 + 1)]
    Uncovered(u64),
    /// A covered subtree is not one of the tree's subtrees, or overlaps a held leaf.
    #[error("the cover's subtree at leaf {start} of {len} leaves does not fit the tree")]
    Misfit {
        /// Its first leaf.
        start: u64,
        /// Its leaves.
        len: u64,
    },
    /// A covered subtree holds a leaf the holder has: the author would be vouching for a
    /// record there other than the one held.
    #[error("the cover hides leaf {0} (seq {s}), which is held", s = .0 + 1)]
    CoversHeld(u64),
    /// The cover has subtrees the recomputation did not use.
    #[error("the cover has {0} subtrees that are not part of the tree")]
    Unused(usize),
}

/// Recomputes the head of a tree of `size` leaves from the leaves the holder has
/// (`held`: leaf index to leaf hash) and `cover`. The result is compared with a signed
/// head by the caller: equal means the author committed to exactly the records held, at
/// their seqs, plus the covered subtrees. The work is bounded by the held leaves and the
/// cover, never by `size` (a member states any size it likes; a holder must not walk it).
pub fn head_with_cover(
    size: u64,
    held: &BTreeMap<u64, Hash>,
    cover: &[Covered],
) -> Result<Hash, CoverError> {
    fn walk(
        start: u64,
        n: u64,
        held: &BTreeMap<u64, Hash>,
        cover: &[Covered],
        next: &mut usize,
    ) -> Result<Hash, CoverError> {
        let end = start + n;
        if let Some(c) = cover.get(*next) {
            if c.start == start && c.len == n {
                if let Some((&i, _)) = held.range(start..end).next() {
                    return Err(CoverError::CoversHeld(i));
                }
                *next += 1;
                return Ok(c.hash);
            }
            if c.start < end && c.start.saturating_add(c.len) > end {
                return Err(CoverError::Misfit {
                    start: c.start,
                    len: c.len,
                });
            }
        }
        if n == 1 {
            return held
                .get(&start)
                .copied()
                .ok_or(CoverError::Uncovered(start));
        }
        let k = split(n);
        let l = walk(start, k, held, cover, next)?;
        let r = walk(start + k, n - k, held, cover, next)?;
        Ok(node_hash(&l, &r))
    }
    if size == 0 {
        return match cover.len() {
            0 => Ok(head(&[])),
            n => Err(CoverError::Unused(n)),
        };
    }
    let mut next = 0;
    let h = walk(0, size, held, cover, &mut next)?;
    match cover.len() - next {
        0 => Ok(h),
        n => {
            let c = cover[next];
            if c.start < size {
                Err(CoverError::Misfit {
                    start: c.start,
                    len: c.len,
                })
            } else {
                Err(CoverError::Unused(n))
            }
        }
    }
}

/// Why the ids a peer gave for an author's log do not fit a checkpoint of that author.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VouchError {
    /// The checkpoint's previous frontier or cover does not fit its own size.
    #[error("the checkpoint's cover or previous frontier does not fit its size")]
    Malformed,
    /// The ids leave a leaf neither given nor covered, or give one the cover hides.
    #[error(transparent)]
    Cover(#[from] CoverError),
    /// The ids give another head than the one the checkpoint states.
    #[error("the ids give another head than the checkpoint states")]
    Head,
}

/// The records a checkpoint vouches for. `leaves` are the ids a peer says the
/// checkpoint's author has at each seq (any seqs; those outside the checkpoint's own
/// range, after its previous checkpoint, and those under its cover are ignored). If the
/// ids in the range, with the cover and the previous frontier, give the checkpoint's
/// head, each of them is the record the author committed to at that seq, and is returned
/// as `(seq, id)`: whoever verified the checkpoint's signature may take these records as
/// the author's without verifying theirs (their ids are hashes of their bytes, signature
/// included). Otherwise nothing is vouched for. The work is bounded by the leaves given
/// and the cover, never by the size the checkpoint states.
pub fn vouched(
    checkpoint: &Checkpoint,
    leaves: &BTreeMap<u64, RecordId>,
) -> Result<Vec<(u64, RecordId)>, VouchError> {
    if !checkpoint.previous_fits() || !checkpoint.cover_fits() {
        return Err(VouchError::Malformed);
    }
    let (since, size) = (checkpoint.since(), checkpoint.size);
    let cover = &checkpoint.cover;
    let under_cover = |leaf: u64| {
        let at = cover.partition_point(|c| c.start <= leaf);
        at > 0 && leaf < cover[at - 1].start + cover[at - 1].len
    };
    let mine: Vec<(u64, RecordId)> = leaves
        .range(since.saturating_add(1)..=size)
        .filter(|(seq, _)| !under_cover(*seq - 1))
        .map(|(seq, id)| (*seq, *id))
        .collect();
    let held: BTreeMap<u64, Hash> = mine.iter().map(|(s, id)| (s - 1, leaf_hash(id))).collect();
    if head_with_cover(size, &held, &checkpoint.parts())? != checkpoint.head {
        return Err(VouchError::Head);
    }
    Ok(mine)
}

/// Serde for a hash as 64 hex digits.
pub(crate) mod hex_hash {
    pub(crate) fn serialize<S: serde::Serializer>(h: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(h))
    }

    pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<[u8; 32], D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        let v = hex::decode(&s).map_err(serde::de::Error::custom)?;
        v.try_into()
            .map_err(|_| serde::de::Error::custom("a hash is 32 bytes (64 hex digits)"))
    }
}

/// Serde for a list of hashes, each as 64 hex digits.
mod hex_hashes {
    use super::Hash;

    pub(super) fn serialize<S: serde::Serializer>(v: &[Hash], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(hex::encode))
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<Hash>, D::Error> {
        <Vec<String> as serde::Deserialize>::deserialize(d)?
            .iter()
            .map(|s| {
                hex::decode(s)
                    .map_err(serde::de::Error::custom)?
                    .try_into()
                    .map_err(|_| serde::de::Error::custom("a hash is 32 bytes (64 hex digits)"))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The leaves `get` gives among the first `n`, as `head_with_cover` takes them.
    fn held_map(n: u64, get: impl Fn(u64) -> Option<Hash>) -> BTreeMap<u64, Hash> {
        (0..n).filter_map(|i| get(i).map(|h| (i, h))).collect()
    }

    fn ids(n: usize) -> Vec<RecordId> {
        (0..n)
            .map(|i| RecordId(Sha256::digest((i as u64).to_be_bytes()).into()))
            .collect()
    }

    /// Seq → id of the first `n` of `ids`, as a peer lists them.
    fn listed(ids: &[RecordId], keep: impl Fn(u64) -> bool) -> BTreeMap<u64, RecordId> {
        (1..=ids.len() as u64)
            .filter(|s| keep(*s))
            .map(|s| (s, ids[s as usize - 1]))
            .collect()
    }

    #[test]
    fn a_checkpoint_vouches_for_exactly_the_ids_that_give_its_head() {
        let all = ids(1000);
        let private = |i: u64| i % 7 == 3;
        let cp = Checkpoint::of(&all, &|i| !private(i));
        // A peer lists what it holds: every record but the private ones.
        let given = listed(&all, |s| !private(s - 1));
        let v = vouched(&cp, &given).unwrap();
        assert_eq!(v.len(), given.len());
        assert!(v.iter().all(|(s, id)| all[*s as usize - 1] == *id));
        // Ids under the cover (a peer that also lists private ones) are left out, not
        // vouched for: the checkpoint does not say what they are.
        let v = vouched(&cp, &listed(&all, |_| true)).unwrap();
        assert_eq!(v.len(), given.len());
        // One id swapped for another record's: nothing is vouched for.
        let mut forged = given.clone();
        forged.insert(10, RecordId([9; 32]));
        assert_eq!(vouched(&cp, &forged), Err(VouchError::Head));
        // Two ids swapped between seqs: the same.
        let mut swapped = given.clone();
        let (a, b) = (swapped[&1], swapped[&2]);
        swapped.insert(1, b);
        swapped.insert(2, a);
        assert_eq!(vouched(&cp, &swapped), Err(VouchError::Head));
        // One left out: the head cannot be recomputed.
        let mut short = given.clone();
        short.remove(&500);
        assert!(matches!(
            vouched(&cp, &short),
            Err(VouchError::Cover(CoverError::Uncovered(499)))
        ));
        // Ids after the checkpoint's size are not its to vouch for.
        let more = ids(1010);
        let v = vouched(&cp, &listed(&more, |s| !private(s - 1))).unwrap();
        assert!(v.iter().all(|(s, _)| *s <= 1000));
    }

    #[test]
    fn a_later_checkpoint_vouches_for_the_records_after_the_one_it_extends() {
        let all = ids(1500);
        let cp = Checkpoint::after(&all, &|_| true, 1001, 1000);
        let v = vouched(&cp, &listed(&all, |_| true)).unwrap();
        assert_eq!(v.first().map(|(s, _)| *s), Some(1001));
        assert_eq!(v.len(), 500);
        // The records before it come from the frontier, whatever ids are listed there.
        let mut other = listed(&all, |_| true);
        other.insert(5, RecordId([1; 32]));
        assert_eq!(vouched(&cp, &other).unwrap().len(), 500);
        // A checkpoint stating 2^40 records with two listed: refused fast, nothing walked.
        let huge = Checkpoint {
            size: 1 << 40,
            ..cp.clone()
        };
        assert!(vouched(&huge, &listed(&all, |_| true)).is_err());
        let wrapped = Checkpoint {
            cover: vec![Covered {
                start: u64::MAX,
                len: 2,
                hash: [0; 32],
            }],
            ..cp
        };
        assert_eq!(
            vouched(&wrapped, &listed(&all, |_| true)),
            Err(VouchError::Malformed)
        );
    }

    /// The head the `ct-merkle` crate computes for the same ids: the tree here is RFC 6962's.
    fn reference_head(ids: &[RecordId]) -> Hash {
        let mut tree =
            ct_merkle::mem_backed_tree::MemoryBackedTree::<sha2_011::Sha256, [u8; 32]>::new();
        for id in ids {
            tree.push(id.0);
        }
        tree.root().as_bytes().as_slice().try_into().unwrap()
    }

    #[test]
    fn heads_match_the_reference_rfc_6962_implementation() {
        for n in [1, 2, 3, 4, 5, 7, 8, 9, 31, 64, 100] {
            let ids = ids(n);
            let leaves: Vec<Hash> = ids.iter().map(leaf_hash).collect();
            assert_eq!(head(&leaves), reference_head(&ids), "{n} leaves");
        }
    }

    #[test]
    fn the_empty_head_is_the_hash_of_nothing() {
        assert_eq!(
            hex::encode(head(&[])),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    proptest! {
        /// Whatever a holder has, its held leaves and the author's cover give the head, and
        /// the cover holds no hash of a held leaf.
        #[test]
        fn a_cover_recomputes_the_head(n in 1usize..200, mask in proptest::collection::vec(any::<bool>(), 200)) {
            let leaves: Vec<Hash> = ids(n).iter().map(leaf_hash).collect();
            let held = |i: u64| mask[i as usize];
            let c = cover(&leaves, &held);
            for part in &c {
                prop_assert!((part.start..part.start + part.len).all(|i| !held(i)));
            }
            let got = head_with_cover(n as u64, &held_map(n as u64, |i| held(i).then(|| leaves[i as usize])), &c);
            prop_assert_eq!(got, Ok(head(&leaves)));
        }
    }

    proptest! {
        /// A checkpoint extending an earlier one: its frontier gives the earlier head (as the
        /// reference implementation computes it over the earlier records), and the frontier
        /// with the later records held and the cover gives the later head.
        #[test]
        fn a_frontier_links_two_heads(n in 2usize..150, cut in 1usize..150, mask in proptest::collection::vec(any::<bool>(), 150)) {
            let cut = cut.min(n);
            let ids = ids(n);
            let leaves: Vec<Hash> = ids.iter().map(leaf_hash).collect();
            let held = |i: u64| mask[i as usize];
            let c = Checkpoint::after(&ids, &held, 7, cut as u64);
            prop_assert!(c.previous_fits() && c.cover_fits());
            prop_assert_eq!(c.previous.as_ref().unwrap().head(), Some(reference_head(&ids[..cut])));
            prop_assert!(c.cover.iter().all(|p| p.start >= cut as u64));
            let later = |i: u64| (i >= cut as u64 && held(i)).then(|| leaves[i as usize]);
            prop_assert_eq!(head_with_cover(n as u64, &held_map(n as u64, later), &c.parts()), Ok(head(&leaves)));
        }
    }

    #[test]
    fn a_frontier_has_one_hash_per_bit_and_never_fits_another_history() {
        assert_eq!(blocks(13), vec![(0, 8), (8, 4), (12, 1)]);
        assert_eq!(blocks(16), vec![(0, 16)]);
        let ids = ids(40);
        let c = Checkpoint::after(&ids, &|_| true, 30, 29);
        assert_eq!(c.previous.as_ref().unwrap().frontier.len(), 4);
        // The earlier tree of another history: its head is not what the frontier folds to.
        let mut other = ids[..29].to_vec();
        other[3] = RecordId([7; 32]);
        let other_head = head(&other.iter().map(leaf_hash).collect::<Vec<_>>());
        assert_ne!(c.previous.as_ref().unwrap().head(), Some(other_head));
        // A frontier with a hash too few or too many fits nothing.
        let mut short = c.clone();
        short.previous.as_mut().unwrap().frontier.pop();
        assert!(!short.previous_fits());
        // A cover whose end does not fit in 64 bits fits nothing (and panics nowhere).
        let mut wraps = c.clone();
        wraps.cover = vec![Covered {
            start: u64::MAX,
            len: 2,
            hash: [0; 32],
        }];
        assert!(!wraps.cover_fits());
        // A cover reaching back before the previous checkpoint does not fit.
        let mut back = Checkpoint::after(&ids, &|i| i != 35, 30, 29);
        assert!(back.cover_fits());
        back.cover[0].start = 3;
        assert!(!back.cover_fits());
        // The JSON form round-trips.
        let json = String::from_utf8(c.payload()).unwrap();
        assert!(
            json.contains("\"previous\":{\"seq\":30,\"size\":29,\"frontier\":[\""),
            "{json}"
        );
        assert_eq!(
            Checkpoint::of_record(CHECKPOINT_SCHEMA, json.as_bytes()),
            Some(c)
        );
    }

    #[test]
    fn a_cover_for_a_holder_missing_a_few_leaves_is_small() {
        let leaves: Vec<Hash> = ids(100_000).iter().map(leaf_hash).collect();
        // Every tenth record private: one leaf each, so 10 000 hashes, never more.
        let c = cover(&leaves, &|i| !i.is_multiple_of(10));
        assert_eq!(c.len(), 10_000);
        // One private run of 1 000 records: a handful of subtrees.
        let c = cover(&leaves, &|i| !(5_000..6_000).contains(&i));
        assert!(c.len() <= 2 * 17, "{} subtrees", c.len());
    }

    #[test]
    fn a_lying_cover_or_a_changed_leaf_gives_another_head() {
        let leaves: Vec<Hash> = ids(50).iter().map(leaf_hash).collect();
        let held = |i: u64| !i.is_multiple_of(3);
        let mut c = cover(&leaves, &held);
        let truth = head(&leaves);
        let get = |i: u64| held(i).then(|| leaves[i as usize]);
        // The author hides another record under the cover of a private one.
        c[0].hash[0] ^= 1;
        assert_ne!(head_with_cover(50, &held_map(50, get), &c), Ok(truth));
        c[0].hash[0] ^= 1;
        // A held record the author's tree does not have.
        let swapped = |i: u64| {
            held(i).then(|| {
                if i == 1 {
                    leaves[2]
                } else {
                    leaves[i as usize]
                }
            })
        };
        assert_ne!(head_with_cover(50, &held_map(50, swapped), &c), Ok(truth));
        // A cover that leaves a private leaf out, or claims more than the tree.
        let short = &c[1..];
        assert!(head_with_cover(50, &held_map(50, get), short).is_err());
        let mut long = c.clone();
        long.push(Covered {
            start: 60,
            len: 1,
            hash: [0; 32],
        });
        assert_eq!(
            head_with_cover(50, &held_map(50, get), &long),
            Err(CoverError::Unused(1))
        );
        // A cover over a record the holder has, vouching for something else there.
        let all = cover(&leaves, &|i| i >= 4);
        assert_eq!(
            head_with_cover(50, &held_map(50, |i| Some(leaves[i as usize])), &all),
            Err(CoverError::CoversHeld(0))
        );
        // A subtree that straddles the tree's own split.
        let bad = vec![Covered {
            start: 30,
            len: 4,
            hash: [0; 32],
        }];
        assert!(head_with_cover(50, &held_map(50, |_| Some([0; 32])), &bad).is_err());
    }
}
