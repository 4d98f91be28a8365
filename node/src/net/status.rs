//! What the running network shows: [`NetStatus`] for `coalition status`, [`PeerStatus`]
//! for `coalition peers`, and the figures of a sync ([`SyncStats`]). The event loop
//! publishes them through a `watch` channel ([`Publisher`]); readers take snapshots and
//! never wait on the event loop.

use std::collections::{BTreeMap, HashMap};

use libp2p::Multiaddr;
use serde::Serialize;
use tokio::sync::watch;

use crate::charter::Membership;
use crate::identity::OrgKey;

/// Counters of one sync run, as seen by the node that initiated it. Bytes are the
/// `/coalition/sync/1` frames (4-byte length prefix included) in both directions;
/// Noise, Yamux, TCP/QUIC overhead and gossip are not counted.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct SyncStats {
    /// Request-response round trips.
    pub round_trips: u64,
    /// Bytes sent (frames).
    pub bytes_sent: u64,
    /// Bytes received (frames).
    pub bytes_received: u64,
    /// Records received and stored.
    pub stored: u64,
    /// Of them, taken on their author's checkpoint (signatures verified after the sync).
    pub vouched: u64,
    /// Records received and refused.
    pub refused: u64,
    /// Records received that failed verification (a violation by the sender).
    pub invalid: u64,
    /// Records the peer lacks (it pulls them in its own sync).
    pub wanted: u64,
    /// Membership records among those stored.
    pub membership_stored: bool,
}

impl SyncStats {
    /// Adds `other`'s round trips and bytes (another client's requests in the same run).
    pub(super) fn add_traffic(&mut self, other: &SyncStats) {
        self.round_trips += other.round_trips;
        self.bytes_sent += other.bytes_sent;
        self.bytes_received += other.bytes_received;
    }
}

/// A connected peer as `coalition peers` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PeerStatus {
    /// libp2p peer id.
    pub peer_id: String,
    /// Organisation key, once its certificate verified.
    pub organisation_key: Option<String>,
    /// Organisation name from the charter.
    pub organisation: Option<String>,
    /// Remote address (of a direct connection when there is one; for a relayed
    /// connection the circuit through the relay).
    pub address: String,
    /// Whether every connection to the peer goes through a relay (no direct one, e.g.
    /// before or without a DCUtR hole punch).
    pub relayed: bool,
    /// Last completed sync, ms since the Unix epoch.
    pub last_sync_ms: Option<i64>,
    /// Figures of the last completed sync this node initiated with the peer.
    pub last_sync: Option<SyncStats>,
}

/// What `coalition status` shows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NetStatus {
    /// This node's peer id.
    pub peer_id: String,
    /// Addresses it listens on.
    pub listen_addrs: Vec<String>,
    /// Addresses at which others reach it through a relay that holds a reservation for
    /// it (`<relay>/p2p-circuit/p2p/<peer id>`; usable as their bootstrap entries).
    pub relayed_addrs: Vec<String>,
    /// Connected peers.
    pub peers: Vec<PeerStatus>,
    /// Records held per author key.
    pub records_per_author: BTreeMap<String, u64>,
    /// Current membership epoch.
    pub epoch: Option<String>,
    /// Coalition name.
    pub coalition: Option<String>,
    /// Records received from peers and stored since start.
    pub received: u64,
    /// Records refused from peers since start.
    pub refused: u64,
}

/// Organisation names of the current members, for [`PeerStatus::organisation`].
pub(super) fn member_names(membership: Option<&Membership>) -> HashMap<OrgKey, String> {
    membership
        .map(|m| {
            m.current()
                .members
                .iter()
                .map(|(k, v)| (*k, v.organisation.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// The sending side of the status channel, with the counters it publishes.
#[derive(Debug)]
pub(super) struct Publisher {
    tx: watch::Sender<NetStatus>,
    received: u64,
    refused: u64,
}

impl Publisher {
    /// A publisher for the node `peer_id`, and the first receiver.
    pub(super) fn new(peer_id: String) -> (Self, watch::Receiver<NetStatus>) {
        let (tx, rx) = watch::channel(NetStatus {
            peer_id,
            ..Default::default()
        });
        let publisher = Self {
            tx,
            received: 0,
            refused: 0,
        };
        (publisher, rx)
    }

    /// A new listen address.
    pub(super) fn listening(&self, address: &Multiaddr) {
        let a = address.to_string();
        self.tx.send_modify(|s| s.listen_addrs.push(a));
    }

    /// A listen address gone.
    pub(super) fn not_listening(&self, address: &Multiaddr) {
        let gone = address.to_string();
        self.tx
            .send_modify(|s| s.listen_addrs.retain(|a| *a != gone));
    }

    /// The addresses reachable through relays now.
    pub(super) fn relayed(&self, addrs: Vec<String>) {
        self.tx.send_modify(|s| s.relayed_addrs = addrs);
    }

    /// Counts what a completed sync received (published with the next [`Self::publish`]).
    pub(super) fn synced(&mut self, stats: &SyncStats) {
        self.received += stats.stored;
        self.refused += stats.refused;
    }

    /// Records held per author.
    pub(super) fn per_author(&self, per_author: BTreeMap<OrgKey, u64>) {
        let pa = per_author
            .into_iter()
            .map(|(k, n)| (k.to_hex(), n))
            .collect();
        self.tx.send_modify(|s| s.records_per_author = pa);
    }

    /// Peers, membership and counters.
    pub(super) fn publish(&self, peers: Vec<PeerStatus>, membership: Option<&Membership>) {
        let (epoch, coalition) = match membership {
            Some(m) => (Some(hex::encode(m.current().epoch)), Some(m.name.clone())),
            None => (None, None),
        };
        let (received, refused) = (self.received, self.refused);
        self.tx.send_modify(|s| {
            s.peers = peers;
            s.epoch = epoch;
            s.coalition = coalition;
            s.received = received;
            s.refused = refused;
        });
    }
}
