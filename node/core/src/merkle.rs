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
    /// The subtrees of records not every member receives ([`cover`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cover: Cover,
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
        }
    }

    /// Whether the cover's subtrees lie inside the checkpoint, in order, apart.
    pub fn cover_fits(&self) -> bool {
        let mut next = 0;
        self.cover.iter().all(|c| {
            let ok = c.len >= 1 && c.start >= next && c.start + c.len <= self.size;
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
/// (`held(index)` gives the leaf hash, or none) and `cover`. The result is compared with
/// a signed head by the caller: equal means the author committed to exactly the records
/// held, at their seqs, plus the covered subtrees.
pub fn head_with_cover(
    size: u64,
    held: &dyn Fn(u64) -> Option<Hash>,
    cover: &[Covered],
) -> Result<Hash, CoverError> {
    fn walk(
        start: u64,
        n: u64,
        held: &dyn Fn(u64) -> Option<Hash>,
        cover: &[Covered],
        next: &mut usize,
    ) -> Result<Hash, CoverError> {
        if let Some(c) = cover.get(*next) {
            if c.start == start && c.len == n {
                if let Some(i) = (start..start + n).find(|&i| held(i).is_some()) {
                    return Err(CoverError::CoversHeld(i));
                }
                *next += 1;
                return Ok(c.hash);
            }
            if c.start < start + n && c.start + c.len > start + n {
                return Err(CoverError::Misfit {
                    start: c.start,
                    len: c.len,
                });
            }
        }
        if n == 1 {
            return held(start).ok_or(CoverError::Uncovered(start));
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ids(n: usize) -> Vec<RecordId> {
        (0..n)
            .map(|i| RecordId(Sha256::digest((i as u64).to_be_bytes()).into()))
            .collect()
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
            let got = head_with_cover(n as u64, &|i| held(i).then(|| leaves[i as usize]), &c);
            prop_assert_eq!(got, Ok(head(&leaves)));
        }
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
        assert_ne!(head_with_cover(50, &get, &c), Ok(truth));
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
        assert_ne!(head_with_cover(50, &swapped, &c), Ok(truth));
        // A cover that leaves a private leaf out, or claims more than the tree.
        let short = &c[1..];
        assert!(head_with_cover(50, &get, short).is_err());
        let mut long = c.clone();
        long.push(Covered {
            start: 60,
            len: 1,
            hash: [0; 32],
        });
        assert_eq!(head_with_cover(50, &get, &long), Err(CoverError::Unused(1)));
        // A cover over a record the holder has, vouching for something else there.
        let all = cover(&leaves, &|i| i >= 4);
        assert_eq!(
            head_with_cover(50, &|i| Some(leaves[i as usize]), &all),
            Err(CoverError::CoversHeld(0))
        );
        // A subtree that straddles the tree's own split.
        let bad = vec![Covered {
            start: 30,
            len: 4,
            hash: [0; 32],
        }];
        assert!(head_with_cover(50, &|_| Some([0; 32]), &bad).is_err());
    }
}
