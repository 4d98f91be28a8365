//! Peer bookkeeping of the event loop: who is connected over which connections, the
//! certificate gate's state (when a peer connected, and once its certificate verified,
//! its organisation and the certificate's expiry), protocol violations and the ban they
//! lead to, peers blocked for membership, relay use before verification, and each peer's
//! sync schedule. No swarm here: the table decides, the event loop acts.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use libp2p::swarm::ConnectionId;
use libp2p::PeerId;

use crate::charter::Membership;
use crate::identity::OrgKey;

use super::config::RequestLimits;
use super::status::{PeerStatus, SyncStats};

/// Protocol violations after which a peer is disconnected and blocked.
pub const MAX_VIOLATIONS: u32 = 3;

/// Why a peer's request was not admitted (the peer is told).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum RequestRefused {
    /// Its earlier requests are still being answered.
    #[error("busy: {0} of your requests are being answered already; wait for their answers")]
    Busy(u32),
    /// It asks faster than the rate allows.
    #[error("too many requests: at most {0} a second; retry later")]
    TooFast(u32),
    /// Not connected (its connection closed meanwhile).
    #[error("not connected")]
    NotConnected,
}

/// A verified peer a sync starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SyncWith {
    pub(super) org: OrgKey,
    /// Its hello said it answers `Leaves` requests (sync from checkpoints).
    pub(super) answers_leaves: bool,
}

/// A connected peer.
#[derive(Debug)]
struct Peer {
    /// Organisation and certificate expiry (ms since the Unix epoch), once verified.
    org: Option<(OrgKey, i64)>,
    /// Its hello said it answers `Leaves` requests.
    answers_leaves: bool,
    connected_at: Instant,
    violations: u32,
    syncing: bool,
    resync: bool,
    last_sync: Option<i64>,
    last_stats: Option<SyncStats>,
    /// Its requests being answered now.
    answering: u32,
    /// Requests it may still make now (a token bucket refilled at the configured rate).
    tokens: f64,
    /// When `tokens` was last refilled.
    refilled: Instant,
    /// Open connections: remote address (for a relayed inbound one, the circuit it came
    /// through) and whether it is relayed.
    connections: HashMap<ConnectionId, (String, bool)>,
}

impl Peer {
    /// The address to show (a direct connection's when there is one) and whether every
    /// connection is relayed.
    fn address(&self) -> (String, bool) {
        let mut conns: Vec<&(String, bool)> = self.connections.values().collect();
        conns.sort_by_key(|(addr, relayed)| (*relayed, addr.clone()));
        conns
            .first()
            .map(|(a, r)| (a.clone(), *r))
            .unwrap_or_default()
    }
}

/// Every peer the event loop knows of.
#[derive(Debug, Default)]
pub(super) struct PeerTable {
    peers: HashMap<PeerId, Peer>,
    /// Peers refused for membership (given another chance when membership changes).
    blocked: HashSet<PeerId>,
    /// Peers refused for protocol violations (blocked until restart).
    banned: HashSet<PeerId>,
    /// Peers that used the relay server before they were verified, and since when.
    relay_unverified: HashMap<PeerId, Instant>,
}

impl PeerTable {
    /// Whether `peer` is connected.
    pub(super) fn contains(&self, peer: &PeerId) -> bool {
        self.peers.contains_key(peer)
    }

    /// Whether `peer` is connected and its certificate verified.
    pub(super) fn is_verified(&self, peer: &PeerId) -> bool {
        self.org(peer).is_some()
    }

    /// The organisation of a connected, verified peer.
    pub(super) fn org(&self, peer: &PeerId) -> Option<OrgKey> {
        self.peers.get(peer)?.org.map(|(org, _)| org)
    }

    /// Whether `peer` is blocked for membership.
    #[cfg(test)]
    pub(super) fn is_blocked(&self, peer: &PeerId) -> bool {
        self.blocked.contains(peer)
    }

    /// Whether `peer` should be dialled: neither connected, blocked nor banned.
    pub(super) fn may_dial(&self, peer: &PeerId) -> bool {
        !self.contains(peer) && !self.blocked.contains(peer) && !self.banned.contains(peer)
    }

    /// The verified peers.
    pub(super) fn verified(&self) -> Vec<PeerId> {
        self.peers
            .iter()
            .filter(|(_, p)| p.org.is_some())
            .map(|(k, _)| *k)
            .collect()
    }

    /// A connection opened. True when it is the peer's first (or the first since it was
    /// dropped while a connection was still being set up): the certificate gate starts.
    /// Another connection to a known peer (e.g. direct after a hole punch) adds to it.
    pub(super) fn connected(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        address: String,
        relayed: bool,
        now: Instant,
    ) -> bool {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.connections.insert(connection, (address, relayed));
            return false;
        }
        self.peers.insert(
            peer,
            Peer {
                org: None,
                answers_leaves: false,
                connected_at: now,
                violations: 0,
                syncing: false,
                resync: false,
                last_sync: None,
                last_stats: None,
                answering: 0,
                tokens: f64::INFINITY,
                refilled: now,
                connections: HashMap::from([(connection, (address, relayed))]),
            },
        );
        true
    }

    /// A connection closed while others to the peer remain.
    pub(super) fn connection_closed(&mut self, peer: &PeerId, connection: &ConnectionId) {
        if let Some(p) = self.peers.get_mut(peer) {
            p.connections.remove(connection);
        }
    }

    /// The peer's last connection closed.
    pub(super) fn disconnected(&mut self, peer: &PeerId) {
        self.peers.remove(peer);
        self.relay_unverified.remove(peer);
    }

    /// Forgets a peer this node disconnects (its gate starts again if it reconnects).
    pub(super) fn drop_peer(&mut self, peer: &PeerId) {
        self.peers.remove(peer);
    }

    /// Whether `peer`'s hello should be sent again after it failed: the peer is still
    /// unverified and connected over another connection.
    pub(super) fn needs_hello(&self, peer: &PeerId) -> bool {
        self.peers
            .get(peer)
            .is_some_and(|p| p.org.is_none() && !p.connections.is_empty())
    }

    /// The peer's certificate verified for `org` until `expires`, with what its hello
    /// said it answers. True the first time (the peer is then a member to sync with);
    /// false if renewed or not connected.
    pub(super) fn verify(
        &mut self,
        peer: PeerId,
        org: OrgKey,
        expires: i64,
        answers_leaves: bool,
    ) -> bool {
        let Some(p) = self.peers.get_mut(&peer) else {
            return false;
        };
        let first = p.org.is_none();
        p.org = Some((org, expires));
        p.answers_leaves = answers_leaves;
        if first {
            self.relay_unverified.remove(&peer);
        }
        first
    }

    /// Admits a request of `peer` at `now` under `limits`: at most
    /// `in_flight_per_peer` of its requests are answered at once, and it may make
    /// `per_second` requests a second (bursts of twice that). Refused requests are
    /// answered with the reason; an admitted one must be followed by [`Self::answered`].
    pub(super) fn admit_request(
        &mut self,
        peer: &PeerId,
        now: Instant,
        limits: &RequestLimits,
    ) -> Result<(), RequestRefused> {
        let Some(p) = self.peers.get_mut(peer) else {
            return Err(RequestRefused::NotConnected);
        };
        let burst = f64::from(limits.per_second.max(1)) * 2.0;
        let elapsed = now.saturating_duration_since(p.refilled).as_secs_f64();
        p.tokens = (p.tokens + elapsed * f64::from(limits.per_second)).min(burst);
        p.refilled = now;
        if p.answering >= limits.in_flight_per_peer {
            return Err(RequestRefused::Busy(limits.in_flight_per_peer));
        }
        if p.tokens < 1.0 {
            return Err(RequestRefused::TooFast(limits.per_second));
        }
        p.tokens -= 1.0;
        p.answering += 1;
        Ok(())
    }

    /// An admitted request of `peer` was answered.
    pub(super) fn answered(&mut self, peer: &PeerId) {
        if let Some(p) = self.peers.get_mut(peer) {
            p.answering = p.answering.saturating_sub(1);
        }
    }

    /// Counts a violation. True when the peer has reached [`MAX_VIOLATIONS`] and is to
    /// be banned.
    pub(super) fn violation(&mut self, peer: &PeerId) -> bool {
        let Some(p) = self.peers.get_mut(peer) else {
            return false;
        };
        p.violations += 1;
        p.violations >= MAX_VIOLATIONS
    }

    /// Refuses a peer until membership changes, and forgets it.
    pub(super) fn block(&mut self, peer: PeerId) {
        self.blocked.insert(peer);
        self.peers.remove(&peer);
    }

    /// Refuses a peer until restart, and forgets it.
    pub(super) fn ban(&mut self, peer: PeerId) {
        self.blocked.remove(&peer);
        self.banned.insert(peer);
        self.peers.remove(&peer);
    }

    /// The peers blocked for membership, no longer blocked (membership changed).
    pub(super) fn unblock_all(&mut self) -> HashSet<PeerId> {
        std::mem::take(&mut self.blocked)
    }

    /// Verified peers whose organisation is not a current member of `membership`.
    pub(super) fn not_members(&self, membership: Option<&Membership>) -> Vec<PeerId> {
        self.peers
            .iter()
            .filter(|(_, p)| {
                p.org.is_some_and(|(org, _)| {
                    !membership.is_some_and(|m| m.current().is_member(&org))
                })
            })
            .map(|(k, _)| *k)
            .collect()
    }

    /// Peers without a valid certificate in time: unverified after `hello_timeout`, or
    /// whose certificate expired by `now_ms`.
    pub(super) fn late(&self, now: Instant, now_ms: i64, hello_timeout: Duration) -> Vec<PeerId> {
        self.peers
            .iter()
            .filter(|(_, p)| match p.org {
                None => now.saturating_duration_since(p.connected_at) > hello_timeout,
                Some((_, expires)) => expires <= now_ms,
            })
            .map(|(k, _)| *k)
            .collect()
    }

    /// Notes that a connected, unverified peer used this node's relay server.
    pub(super) fn relay_used_by(&mut self, peer: PeerId, now: Instant) {
        if !self.is_verified(&peer) && self.contains(&peer) {
            self.relay_unverified.entry(peer).or_insert(now);
        }
    }

    /// Peers that used the relay server more than `grace` ago and are still not
    /// verified (each reported once).
    pub(super) fn relay_strangers(&mut self, now: Instant, grace: Duration) -> Vec<PeerId> {
        let expired: Vec<PeerId> = self
            .relay_unverified
            .iter()
            .filter(|(_, since)| now.saturating_duration_since(**since) > grace)
            .map(|(k, _)| *k)
            .collect();
        expired
            .into_iter()
            .filter(|peer| {
                self.relay_unverified.remove(peer);
                !self.is_verified(peer)
            })
            .collect()
    }

    /// Schedules a sync with `peer`: whom to sync with if one should start now; `None` if
    /// the peer is not verified, or a sync runs already (another follows when it ends).
    pub(super) fn start_sync(&mut self, peer: &PeerId) -> Option<SyncWith> {
        let p = self.peers.get_mut(peer)?;
        let (org, _) = p.org?;
        if p.syncing {
            p.resync = true;
            return None;
        }
        p.syncing = true;
        Some(SyncWith {
            org,
            answers_leaves: p.answers_leaves,
        })
    }

    /// A sync with `peer` ended (with its figures if it completed at `now_ms`). True if
    /// another was asked for meanwhile.
    pub(super) fn sync_done(
        &mut self,
        peer: &PeerId,
        stats: Option<SyncStats>,
        now_ms: i64,
    ) -> bool {
        let Some(p) = self.peers.get_mut(peer) else {
            return false;
        };
        p.syncing = false;
        if let Some(stats) = stats {
            p.last_sync = Some(now_ms);
            p.last_stats = Some(stats);
        }
        std::mem::take(&mut p.resync)
    }

    /// The peers as `coalition peers` shows them, named from `names`.
    pub(super) fn statuses(&self, names: &HashMap<OrgKey, String>) -> Vec<PeerStatus> {
        self.peers
            .iter()
            .map(|(id, p)| {
                let (address, relayed) = p.address();
                PeerStatus {
                    peer_id: id.to_string(),
                    organisation_key: p.org.map(|(k, _)| k.to_hex()),
                    organisation: p.org.and_then(|(k, _)| names.get(&k).cloned()),
                    address,
                    relayed,
                    last_sync_ms: p.last_sync,
                    last_sync: p.last_stats,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
