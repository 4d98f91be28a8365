//! Peers found on the local network by mDNS (`[network] mdns = true`), kept as dial
//! candidates for as long as their mDNS records live.
//!
//! libp2p reports a peer once per record lifetime (six minutes), not on every answer it
//! hears. A node that dialled a LAN peer only on that report stayed apart from it for
//! minutes when the one dial failed (the peer still starting, a hello that timed out
//! under load). Here a peer that is not connected is dialled again every [`LAN_REDIAL`]
//! until its record expires; a peer the node refused (blocked or banned) is not.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};

/// Most LAN peers remembered: anyone on the LAN can announce any number of them.
pub(super) const MAX_LAN_PEERS: usize = 64;
/// Most addresses remembered per LAN peer.
const MAX_ADDRS: usize = 8;
/// Between dials of one LAN peer that is not connected.
pub(super) const LAN_REDIAL: Duration = Duration::from_secs(10);

/// The LAN peers mDNS reported and that have not expired.
#[derive(Debug, Default)]
pub(super) struct LanPeers {
    peers: HashMap<PeerId, Candidate>,
}

#[derive(Debug)]
struct Candidate {
    addrs: Vec<Multiaddr>,
    last_dial: Option<Instant>,
}

impl LanPeers {
    /// Remembers `addr` of `peer`. Returns false (and remembers nothing) when
    /// [`MAX_LAN_PEERS`] others are remembered already.
    pub(super) fn discovered(&mut self, peer: PeerId, addr: Multiaddr) -> bool {
        if !self.peers.contains_key(&peer) && self.peers.len() >= MAX_LAN_PEERS {
            return false;
        }
        let c = self.peers.entry(peer).or_insert(Candidate {
            addrs: Vec::new(),
            last_dial: None,
        });
        if !c.addrs.contains(&addr) && c.addrs.len() < MAX_ADDRS {
            c.addrs.push(addr);
        }
        true
    }

    /// Forgets `addr` of `peer` (its mDNS record expired), and `peer` with its last one.
    pub(super) fn expired(&mut self, peer: &PeerId, addr: &Multiaddr) {
        if let Some(c) = self.peers.get_mut(peer) {
            c.addrs.retain(|a| a != addr);
            if c.addrs.is_empty() {
                self.peers.remove(peer);
            }
        }
    }

    /// The peers to dial at `now` with their addresses: those `may_dial` allows, never
    /// dialled or last dialled [`LAN_REDIAL`] ago or more. They are marked dialled.
    pub(super) fn due(
        &mut self,
        now: Instant,
        may_dial: impl Fn(&PeerId) -> bool,
    ) -> Vec<(PeerId, Vec<Multiaddr>)> {
        self.peers
            .iter_mut()
            .filter(|(peer, c)| {
                c.last_dial
                    .is_none_or(|t| now.saturating_duration_since(t) >= LAN_REDIAL)
                    && may_dial(peer)
            })
            .map(|(peer, c)| {
                c.last_dial = Some(now);
                (*peer, c.addrs.clone())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> Multiaddr {
        format!("/ip4/10.77.0.1/tcp/{port}").parse().unwrap()
    }

    #[test]
    fn a_lan_peer_is_dialled_again_until_connected_or_expired() {
        let (mut lan, peer, t0) = (LanPeers::default(), PeerId::random(), Instant::now());
        assert!(lan.discovered(peer, addr(1)));
        assert!(lan.discovered(peer, addr(1)), "the same address again");
        assert_eq!(lan.due(t0, |_| true), vec![(peer, vec![addr(1)])]);
        // Not again at once, again once LAN_REDIAL passed.
        assert!(lan.due(t0 + LAN_REDIAL / 2, |_| true).is_empty());
        assert_eq!(lan.due(t0 + LAN_REDIAL, |_| true).len(), 1);
        // Connected (or blocked, or banned): not dialled, and dialled as soon as it may.
        let later = t0 + LAN_REDIAL * 3;
        assert!(lan.due(later, |_| false).is_empty());
        assert_eq!(lan.due(later, |_| true).len(), 1);
        // Its record expired: forgotten.
        lan.expired(&peer, &addr(1));
        assert!(lan.due(later + LAN_REDIAL, |_| true).is_empty());
    }

    #[test]
    fn a_lan_peer_keeps_its_other_addresses_when_one_expires() {
        let (mut lan, peer) = (LanPeers::default(), PeerId::random());
        lan.discovered(peer, addr(1));
        lan.discovered(peer, addr(2));
        lan.expired(&peer, &addr(1));
        assert_eq!(
            lan.due(Instant::now(), |_| true),
            vec![(peer, vec![addr(2)])]
        );
    }

    #[test]
    fn a_lan_announcing_endless_peers_and_addresses_is_remembered_only_so_far() {
        let mut lan = LanPeers::default();
        let peers: Vec<PeerId> = (0..MAX_LAN_PEERS + 10).map(|_| PeerId::random()).collect();
        let remembered = peers
            .iter()
            .filter(|p| lan.discovered(**p, addr(1)))
            .count();
        assert_eq!(remembered, MAX_LAN_PEERS);
        for port in 0..100 {
            lan.discovered(peers[0], addr(port));
        }
        let due = lan.due(Instant::now(), |_| true);
        assert_eq!(due.len(), MAX_LAN_PEERS);
        let first = due
            .iter()
            .find(|(p, _)| *p == peers[0])
            .expect("the first peer");
        assert_eq!(first.1.len(), MAX_ADDRS);
    }
}
