//! Reaching peers, for the event loop: dialling bootstrap peers and relays (a circuit
//! address once its relay is verified), reservations with the relays of `[network]
//! relays`, and the relay client's events.

use std::time::Instant;

use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::Multiaddr;

use super::super::error::error_chain;
use super::super::relay;
use super::EventLoop;

impl EventLoop {
    /// Dials the bootstrap peers and relays that are not connected. A circuit address
    /// is dialled once its relay is connected and verified; until then the relay is.
    pub(super) fn dial_bootstrap(&mut self) {
        self.last_dial = Some(Instant::now());
        let relays: Vec<Multiaddr> = self.reservations.addrs().cloned().collect();
        for mut addr in self.config.bootstrap.clone().into_iter().chain(relays) {
            if let Some((relay_addr, relay_peer)) = relay::via(&addr) {
                if !self.peers.is_verified(&relay_peer) {
                    if self.peers.contains(&relay_peer) {
                        continue; // certificates are being exchanged
                    }
                    addr = relay_addr;
                }
            }
            // The peer an address leads to is its last /p2p (behind a relay, the target).
            let opts = match relay::target(&addr) {
                Some(t) if !self.peers.may_dial(&t) => continue,
                Some(t) => DialOpts::peer_id(t)
                    .addresses(vec![addr.clone()])
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .build(),
                None => DialOpts::unknown_peer_id().address(addr.clone()).build(),
            };
            if let Err(e) = self.swarm.dial(opts) {
                tracing::debug!(%addr, error = %e, "dial failed");
            }
        }
    }

    /// Dials the LAN peers mDNS found that are not connected, blocked or banned, each at
    /// most every `LAN_REDIAL` ([`super::super::lan`]).
    pub(super) fn dial_lan(&mut self) {
        for (peer, addrs) in self.lan.due(Instant::now(), |p| self.peers.may_dial(p)) {
            let opts = DialOpts::peer_id(peer)
                .addresses(addrs)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            if let Err(e) = self.swarm.dial(opts) {
                tracing::debug!(%peer, error = %e, "dial of a LAN peer failed");
            }
        }
    }

    /// Requests a reservation with every configured relay that is connected, verified,
    /// holds none for this node and is not backing off.
    pub(super) fn reserve(&mut self) {
        let now = Instant::now();
        let due = self.reservations.due(now, |p| self.peers.is_verified(p));
        for circuit in due {
            match self.swarm.listen_on(circuit.clone()) {
                Ok(listener) => {
                    tracing::info!(relay = %circuit, "requesting a relay reservation");
                    self.reservations.requested(&circuit, listener);
                }
                Err(e) => {
                    let retry_in = self.reservations.request_failed(&circuit, now);
                    tracing::warn!(relay = %circuit, error = %error_chain(&e), ?retry_in, "cannot request a relay reservation");
                }
            }
        }
    }

    pub(super) fn publish_relayed(&mut self) {
        let addrs = self.reservations.reachable(*self.swarm.local_peer_id());
        self.status.relayed(addrs);
    }

    pub(super) fn on_relay_client(&mut self, event: libp2p::relay::client::Event) {
        use libp2p::relay::client::Event;
        match event {
            Event::ReservationReqAccepted {
                relay_peer_id,
                renewal,
                limit,
            } => match self.reservations.accepted(&relay_peer_id) {
                Some(relay) => {
                    let me = *self.swarm.local_peer_id();
                    let reachable = relay.with(Protocol::P2pCircuit).with(Protocol::P2p(me));
                    tracing::info!(%reachable, limit = ?limit.as_ref().map(|l| (l.duration(), l.data_in_bytes())), "relay reservation accepted; reachable through the relay");
                    self.publish_relayed();
                }
                None => {
                    tracing::debug!(relay = %relay_peer_id, renewal, "relay reservation renewed")
                }
            },
            Event::OutboundCircuitEstablished { relay_peer_id, .. } => {
                tracing::debug!(relay = %relay_peer_id, "relayed connection opened");
            }
            Event::InboundCircuitEstablished { src_peer_id, .. } => {
                tracing::debug!(peer = %src_peer_id, "relayed connection accepted");
            }
        }
    }

    /// A listener closed: if it was a relay reservation, it is requested again later.
    pub(super) fn on_listener_closed(
        &mut self,
        listener_id: ListenerId,
        reason: Result<(), std::io::Error>,
    ) {
        let now = Instant::now();
        if let Some(c) = self.reservations.closed(listener_id, reason.is_err(), now) {
            match &reason {
                Err(e) => {
                    tracing::warn!(relay = %c.addr, error = %error_chain(e), retry_in = ?c.retry_in, "relay reservation failed")
                }
                Ok(()) => {
                    tracing::info!(relay = %c.addr, was_accepted = c.was_accepted, retry_in = ?c.retry_in, "relay reservation closed (connection to the relay ended)")
                }
            }
            if c.was_accepted {
                self.publish_relayed();
            }
        }
    }
}
