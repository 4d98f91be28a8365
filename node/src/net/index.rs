//! What this node holds, with each record's effective audience, kept in memory and
//! refreshed incrementally from the store, so each sync can compute the set of records
//! both sides may hold without rescanning the database. It also holds the operator's
//! replica enrolments (peer ids; `coalition replica`), read again at each refresh, since
//! they decide whether a peer of this organisation gets its PRIVATE records.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use libp2p::PeerId;

use crate::audience::{self, grant_target};
use crate::charter::MEMBERSHIP_SCHEMAS;
use crate::finding::GRANT_SCHEMA;
use crate::identity::OrgKey;
use crate::merkle::CHECKPOINT_SCHEMA;
use crate::record::{self, Audience, RecordId};
use crate::store::{Store, StoreError};

use super::sync::{Entry, SyncSet};

#[derive(Debug, Clone)]
struct Held {
    rowid: i64,
    author: OrgKey,
    seq: u64,
    audience: Audience,
    /// A `checkpoint/v1` record.
    checkpoint: bool,
    /// A membership record (charter, proposal, approval).
    membership: bool,
    /// Size of its bytes.
    size: u64,
}

/// Common sets kept between requests (a sync asks for its set once per page).
const COMMON_CACHE: usize = 4;

/// In-memory index of held records.
#[derive(Debug, Default)]
pub struct Index {
    last_rowid: i64,
    held: HashMap<RecordId, Held>,
    /// Grants by (target, grant author): audiences to add.
    grants: HashMap<RecordId, Vec<(OrgKey, Audience)>>,
    /// Recently computed common sets by (me, peer, peer is a replica), newest last;
    /// emptied whenever a refresh loads anything, since new records or grants can change
    /// every set.
    common: Vec<((OrgKey, OrgKey, bool), Arc<SyncSet>)>,
    /// Peers enrolled as replicas of this organisation.
    replicas: HashSet<PeerId>,
}

impl Index {
    /// Loads records stored since the last refresh. Returns how many were new.
    pub async fn refresh(&mut self, store: &Store) -> Result<usize, StoreError> {
        let replicas: HashSet<PeerId> = store
            .meta(crate::node::REPLICAS_META)
            .await?
            .and_then(|t| serde_json::from_str::<Vec<String>>(&t).ok())
            .unwrap_or_default()
            .iter()
            .filter_map(|p| p.parse().ok())
            .collect();
        if replicas != self.replicas {
            self.replicas = replicas;
            self.common.clear();
        }
        let rows = store.holdings_since(self.last_rowid).await?;
        let n = rows.len();
        if n > 0 {
            self.common.clear();
        }
        for h in rows {
            self.last_rowid = self.last_rowid.max(h.rowid);
            let signed = match h.audience {
                1 => Audience::Coalition,
                2 => Audience::members(h.members.clone()),
                _ => Audience::Private,
            };
            // A sealed record travels to every member, whatever this node could read.
            let audience = audience::carried(&h.schema, &signed);
            if h.schema == GRANT_SCHEMA {
                if let Some((target, a)) = h
                    .grant
                    .as_deref()
                    .and_then(|b| record::verify(b).ok())
                    .and_then(|g| grant_target(&g))
                {
                    self.grants.entry(target).or_default().push((h.author, a));
                }
            }
            self.held.insert(
                h.id,
                Held {
                    rowid: h.rowid,
                    author: h.author,
                    seq: h.seq,
                    audience,
                    checkpoint: h.schema == CHECKPOINT_SCHEMA,
                    membership: MEMBERSHIP_SCHEMAS.contains(&h.schema.as_str()),
                    size: h.size,
                },
            );
        }
        Ok(n)
    }

    /// Forgets `ids`: records the store no longer holds (removed after a sync because
    /// their signatures failed). Without this the node went on listing them in its sync
    /// summaries until it restarted, so every sync with a peer that lacks them
    /// reconciled their buckets for nothing.
    pub fn forget(&mut self, ids: &[RecordId]) {
        let before = self.held.len();
        for id in ids {
            self.held.remove(id);
        }
        if self.held.len() != before {
            self.common.clear();
        }
    }

    /// Number of records held.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Whether `id` is held.
    pub fn holds(&self, id: &RecordId) -> bool {
        self.held.contains_key(id)
    }

    /// Where `id` is stored (rowid), its size and whether it is a membership record, if
    /// held: what a sync answer plans its page by before it reads anything.
    pub fn planned(&self, id: &RecordId) -> Option<(i64, u64, bool)> {
        self.held.get(id).map(|h| (h.rowid, h.size, h.membership))
    }

    /// Whether `id` is a held `checkpoint/v1` record.
    pub fn is_checkpoint(&self, id: &RecordId) -> bool {
        self.held.get(id).is_some_and(|h| h.checkpoint)
    }

    /// Where `id` is stored (its rowid), if held.
    pub fn rowid(&self, id: &RecordId) -> Option<i64> {
        self.held.get(id).map(|h| h.rowid)
    }

    /// A record's audience including same-author grants.
    pub fn audience(&self, id: &RecordId) -> Option<Audience> {
        let h = self.held.get(id)?;
        Some(audience::widened(
            &h.audience,
            self.grants
                .get(id)
                .into_iter()
                .flatten()
                .filter(|(author, _)| *author == h.author)
                .map(|(_, g)| g),
        ))
    }

    /// Whether `author` granted record `id` to `org` (the record need not be held).
    pub fn granted_to(&self, id: &RecordId, author: &OrgKey, org: &OrgKey) -> bool {
        self.grants
            .get(id)
            .into_iter()
            .flatten()
            .any(|(a, aud)| a == author && audience::reaches(aud, org))
    }

    /// Whether organisation `org` may receive record `id`.
    pub fn entitled(&self, id: &RecordId, org: &OrgKey) -> bool {
        let Some(h) = self.held.get(id) else {
            return false;
        };
        self.audience(id)
            .is_some_and(|a| audience::entitled(&h.author, &a, org))
    }

    /// Whether `peer` (a node of organisation `peer_org`) is a replica of this node of
    /// `me`: enrolled by the operator and proved to be of the same organisation.
    pub fn is_replica(&self, me: &OrgKey, peer_org: &OrgKey, peer: &PeerId) -> bool {
        me == peer_org && self.replicas.contains(peer)
    }

    /// Whether a replica of this node (of organisation `me`) may receive record `id`.
    fn replica_entitled(&self, id: &RecordId, me: &OrgKey) -> bool {
        let Some(h) = self.held.get(id) else {
            return false;
        };
        self.audience(id)
            .is_some_and(|a| audience::replica_entitled(&h.author, &a, me, me))
    }

    /// The records held that both `me` and `peer` (node `peer_id` of organisation `peer`)
    /// may receive: what a sync between the two compares; for a replica
    /// ([`Index::is_replica`]), this organisation's PRIVATE records too. Computed once
    /// per peer until the next refresh that loads anything (a full sync of 100,000
    /// records asks for it on every page).
    pub fn common(&mut self, me: &OrgKey, peer: &OrgKey, peer_id: &PeerId) -> Arc<SyncSet> {
        let replica = self.is_replica(me, peer, peer_id);
        let key = (*me, *peer, replica);
        if let Some(i) = self.common.iter().position(|(k, _)| *k == key) {
            let hit = self.common.remove(i);
            let set = hit.1.clone();
            self.common.push(hit);
            return set;
        }
        let set = Arc::new(SyncSet::new(
            self.held
                .iter()
                .filter(|(id, _)| {
                    if replica {
                        self.replica_entitled(id, me)
                    } else {
                        self.entitled(id, me) && self.entitled(id, peer)
                    }
                })
                .map(|(id, h)| Entry {
                    author: h.author,
                    seq: h.seq,
                    id: *id,
                }),
        ));
        if self.common.len() == COMMON_CACHE {
            self.common.remove(0);
        }
        self.common.push((key, set.clone()));
        set
    }

    /// Records per author.
    pub fn per_author(&self) -> std::collections::BTreeMap<OrgKey, u64> {
        let mut m = std::collections::BTreeMap::new();
        for h in self.held.values() {
            *m.entry(h.author).or_default() += 1;
        }
        m
    }
}
