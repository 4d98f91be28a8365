//! Gossip announcements of new records. An announcement carries only a record id (the
//! gossip message id, so the same record announced twice is one message); the record
//! itself travels by sync. An announcement of a record this node lacks waits (bounded)
//! for a sync with its source, and is forwarded only if that sync brought the record.

use std::collections::HashMap;

use coalition_proto::v1 as pb;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance, MessageId};
use libp2p::PeerId;
use prost::Message;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use crate::identity::OrgKey;
use crate::node::Node;
use crate::record::RecordId;
use crate::store::Authored;

use super::index::Index;

/// Announcements waiting for a sync to resolve them.
pub(super) const MAX_PENDING_ANNOUNCES: usize = 4096;

/// The gossip topic. The same for every coalition: a topic is sent to every connected
/// peer in gossipsub's first message, before anything is verified, so it must not name
/// the coalition (it once carried the charter id). Only verified members get anything
/// published on it (see `event_loop::gate::UNVERIFIED_GOSSIP_SCORE`).
pub(super) const TOPIC: &str = "coalition/records/2";

/// The gossip topic as gossipsub takes it.
pub(super) fn topic() -> IdentTopic {
    IdentTopic::new(TOPIC)
}

/// Gossip message id: the announced record id (content-addressed), so the same record
/// announced twice is one message.
pub(super) fn message_id(m: &gossipsub::Message) -> MessageId {
    match pb::Announce::decode(m.data.as_slice()) {
        Ok(a) if a.id.len() == 32 => MessageId::from(a.id.to_vec()),
        _ => MessageId::from(Sha256::digest(&m.data).to_vec()),
    }
}

/// The record id an announcement names, or `None` if it is malformed.
pub(super) fn announced(data: &[u8]) -> Option<RecordId> {
    pb::Announce::decode(data)
        .ok()
        .and_then(|a| RecordId::from_slice(&a.id))
}

/// What to do about this organisation's records stored since the last look.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Outgoing {
    /// Encoded announcements of records shared with the whole coalition.
    pub(super) announce: Vec<(RecordId, Vec<u8>)>,
    /// Whether a members-only record is among them: it is not announced to the whole
    /// topic, so the node syncs with its peers now instead.
    pub(super) sync_now: bool,
}

impl Outgoing {
    /// Sorts `rows` (records by `me`): PRIVATE ones stay, coalition-wide ones are
    /// announced, members-only ones call for a sync.
    pub(super) fn of(me: &OrgKey, rows: Vec<Authored>) -> Self {
        let mut out = Self::default();
        for h in rows {
            match h.audience {
                0 => {}
                1 => {
                    let msg = pb::Announce {
                        id: h.id.0.to_vec().into(),
                        author: me.as_bytes().to_vec().into(),
                        seq: h.seq,
                    };
                    out.announce.push((h.id, msg.encode_to_vec()));
                }
                _ => out.sync_now = true,
            }
        }
        out
    }

    /// Whether there is nothing to do.
    pub(super) fn is_empty(&self) -> bool {
        self.announce.is_empty() && !self.sync_now
    }
}

/// Announcements of records not held yet, by the peer they came from.
#[derive(Debug, Default)]
pub(super) struct Pending {
    by_peer: HashMap<PeerId, Vec<(MessageId, RecordId)>>,
    len: usize,
}

impl Pending {
    /// Keeps an announcement until a sync with `source` resolves it; false (and nothing
    /// kept) when [`MAX_PENDING_ANNOUNCES`] are waiting already.
    pub(super) fn wait(&mut self, source: PeerId, msg: MessageId, id: RecordId) -> bool {
        if self.len >= MAX_PENDING_ANNOUNCES {
            return false;
        }
        self.by_peer.entry(source).or_default().push((msg, id));
        self.len += 1;
        true
    }

    /// The announcements that wait on `peer`, removed.
    pub(super) fn take(&mut self, peer: &PeerId) -> Vec<(MessageId, RecordId)> {
        let taken = self.by_peer.remove(peer).unwrap_or_default();
        self.len -= taken.len();
        taken
    }
}

/// Verdicts on announcements that waited for a sync: accepted (and so forwarded) if the
/// record is held now, ignored otherwise.
pub(super) async fn resolve(
    node: &Node,
    index: &Mutex<Index>,
    pending: Vec<(MessageId, RecordId)>,
) -> Vec<(MessageId, MessageAcceptance)> {
    let mut ix = index.lock().await;
    let _ = ix.refresh(node.store()).await;
    pending
        .into_iter()
        .map(|(msg, id)| {
            let verdict = if ix.holds(&id) {
                MessageAcceptance::Accept
            } else {
                MessageAcceptance::Ignore
            };
            (msg, verdict)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::test_support::peer_id;

    fn authored(n: u8, audience: i64) -> Authored {
        Authored {
            id: RecordId([n; 32]),
            seq: n as u64,
            audience,
        }
    }

    #[test]
    fn private_records_stay_and_members_only_ones_call_for_a_sync() {
        let me = crate::identity::Identity::from_seed(&[1; 32]).key();
        let out = Outgoing::of(&me, vec![authored(1, 0), authored(2, 1)]);
        assert_eq!(out.announce.len(), 1);
        assert_eq!(announced(&out.announce[0].1), Some(RecordId([2; 32])));
        assert!(!out.sync_now);
        let out = Outgoing::of(&me, vec![authored(3, 2)]);
        assert!(out.announce.is_empty() && out.sync_now);
        assert!(Outgoing::of(&me, vec![authored(4, 0)]).is_empty());
    }

    #[test]
    fn waiting_announcements_are_bounded_and_taken_per_peer() {
        let (a, b) = (peer_id(1), peer_id(2));
        let mut p = Pending::default();
        for i in 0..MAX_PENDING_ANNOUNCES {
            let source = if i % 2 == 0 { a } else { b };
            assert!(p.wait(source, MessageId::from(vec![1]), RecordId([0; 32])));
        }
        assert!(
            !p.wait(a, MessageId::from(vec![2]), RecordId([1; 32])),
            "over the bound"
        );
        assert_eq!(p.take(&a).len(), MAX_PENDING_ANNOUNCES / 2);
        assert!(p.take(&a).is_empty());
        assert!(
            p.wait(a, MessageId::from(vec![2]), RecordId([1; 32])),
            "room again"
        );
    }

    #[test]
    fn malformed_announcements_name_no_record() {
        assert_eq!(announced(b"\xff\xff"), None);
        let short = pb::Announce {
            id: vec![1, 2, 3].into(),
            author: Vec::new().into(),
            seq: 1,
        };
        assert_eq!(announced(&short.encode_to_vec()), None);
    }
}
