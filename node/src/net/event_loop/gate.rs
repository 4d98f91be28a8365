//! The certificate gate and peer discipline of the event loop: who speaks first, hellos,
//! the decision on a peer's certificate (`cert`), violations, blocks and bans (the peer
//! table decides, this acts on the swarm), membership changes, and disconnecting peers
//! that have no valid certificate in time.
//!
//! Silence towards strangers: a node that accepted a connection never speaks first (its
//! certificate goes out only as the answer to a valid member's hello); a node that dialled
//! introduces itself only when Noise has confirmed the peer id it dialled (`/p2p/ID` at
//! the end of the address); gossip is closed to a peer until its certificate verifies.
//! What a peer is told of a refusal is a fixed phrase; the detail goes to the local log.

use std::time::{Duration, Instant};

use coalition_proto::v1 as pb;
use libp2p::core::ConnectedPoint;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::ResponseChannel;
use libp2p::PeerId;
use prost::Message;

use crate::charter::Membership;
use crate::identity::OrgKey;
use crate::now_ms;

use super::super::answer::error_response;
use super::super::cert::verify_certificate;
use super::super::error::{CertError, Violation};
use super::super::relay;
use super::{EventLoop, Pending};

/// How long a peer that uses this node's relay server (reservation or circuit) before its
/// certificate verified may stay connected without one.
const RELAY_UNVERIFIED_GRACE: Duration = Duration::from_secs(2);

/// gossipsub application score of a peer whose certificate has not verified (weight 1,
/// see `behaviour`): far below the graylist threshold (-80), so nothing is published,
/// forwarded or gossiped to it, it is never grafted into the mesh, and whatever it sends
/// is ignored.
pub(super) const UNVERIFIED_GOSSIP_SCORE: f64 = -1000.0;

/// Who speaks first on a peer's first connection.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Opening {
    /// This node dialled the peer id it meant to reach (Noise confirmed it): it sends
    /// its hello.
    Introduce,
    /// This node accepted the connection: it waits for the dialler's hello.
    Listen,
    /// This node dialled an address without a peer id and reached whoever answers
    /// there: it says nothing.
    UnnamedDial,
}

/// How to open a peer's first connection, from its endpoint. A dial that names a peer id
/// (`/p2p/ID` last, as bootstrap entries, relay circuits and mDNS dials do) only
/// completes if Noise authenticated that id.
pub(super) fn opening(endpoint: &ConnectedPoint, peer: &PeerId) -> Opening {
    match endpoint {
        ConnectedPoint::Listener { .. } => Opening::Listen,
        ConnectedPoint::Dialer { address, .. } => match address.iter().last() {
            Some(Protocol::P2p(id)) if id == *peer => Opening::Introduce,
            _ => Opening::UnnamedDial,
        },
    }
}

/// What a peer is told when its certificate is refused: a fixed phrase per reason, no
/// internal detail (that goes to the local log).
pub(super) fn refusal(e: &CertError) -> &'static str {
    match e {
        CertError::DoesNotVerify(_) | CertError::Payload(_) => {
            "certificate refused: not a valid node certificate"
        }
        CertError::WrongSchema(_) => "certificate refused: not a node certificate",
        CertError::OtherPeer => "certificate refused: issued for another peer id",
        CertError::Expired => "certificate refused: expired",
        CertError::NoCharter => "certificate refused: this node has no charter yet",
        CertError::UnknownEpoch(_) => "certificate refused: names an epoch this node has not seen",
        CertError::NotMemberThen(_) | CertError::NotCurrentMember(_) => {
            "certificate refused: not a current member"
        }
    }
}

impl EventLoop {
    /// A peer's first connection: gossip stays closed to it until it verifies, and this
    /// node introduces itself only to a peer it dialled by its peer id.
    pub(super) fn gate_opened(&mut self, peer: PeerId, endpoint: &ConnectedPoint) {
        // Peer scores outlive connections: a member that reconnects is a stranger again
        // until its certificate verifies anew.
        self.swarm
            .behaviour_mut()
            .gossipsub
            .set_application_score(&peer, UNVERIFIED_GOSSIP_SCORE);
        match opening(endpoint, &peer) {
            Opening::Introduce => self.send_hello(peer),
            Opening::Listen => {}
            Opening::UnnamedDial => {
                let address = endpoint.get_remote_address();
                tracing::warn!(%peer, %address, "dialled an address without a peer id: not introducing this node to whoever answered (if {peer} is the member you meant, append /p2p/{peer} to the address)");
            }
        }
    }

    /// A peer's hello: its certificate is checked; a valid one is answered with this
    /// node's, anything else with the reason it was refused.
    pub(super) fn on_hello(
        &mut self,
        peer: PeerId,
        hello: &pb::Hello,
        channel: ResponseChannel<Vec<u8>>,
    ) {
        match verify_certificate(&hello.certificate, &peer, self.membership.as_ref()) {
            Ok((org, expires)) => {
                let reply = pb::SyncResponse {
                    kind: Some(pb::sync_response::Kind::Hello(self.hello())),
                };
                self.respond(channel, reply);
                self.verified(peer, org, expires, hello.answers_leaves);
            }
            Err(e) => {
                // Rejected once the refusal has gone out (`refused`): blocking the peer
                // closes its connections at once, and the answer with them.
                self.respond(channel, error_response(refusal(&e)));
                self.refusals.insert(peer, e);
            }
        }
    }

    /// Another connection to a tracked, unverified peer: if this node dialled it by its
    /// peer id and has no hello out to it (the peer's own connection came first, as when
    /// both dial at once, and each waits on the other), it introduces itself now.
    pub(super) fn gate_joined(&mut self, peer: PeerId, endpoint: &ConnectedPoint) {
        let hello_out = self
            .pending
            .values()
            .any(|p| matches!(p, Pending::Hello(to) if *to == peer));
        if opening(endpoint, &peer) == Opening::Introduce
            && !self.peers.is_verified(&peer)
            && !hello_out
        {
            self.send_hello(peer);
        }
    }

    /// Sends this node's certificate; the answer is handled by `on_hello_response`.
    pub(super) fn send_hello(&mut self, peer: PeerId) {
        let hello = pb::SyncRequest {
            kind: Some(pb::sync_request::Kind::Hello(self.hello())),
        };
        let id = self
            .swarm
            .behaviour_mut()
            .sync
            .send_request(&peer, hello.encode_to_vec());
        self.pending.insert(id, Pending::Hello(peer));
    }

    /// This node's certificate, as a hello, and what it answers beyond `sync/1`'s first
    /// requests.
    fn hello(&self) -> pb::Hello {
        pb::Hello {
            certificate: self.cert.clone().into(),
            answers_leaves: true,
        }
    }

    pub(super) fn on_hello_response(&mut self, peer: PeerId, response: &[u8]) {
        match pb::SyncResponse::decode(response).ok().and_then(|r| r.kind) {
            Some(pb::sync_response::Kind::Hello(h)) => {
                match verify_certificate(&h.certificate, &peer, self.membership.as_ref()) {
                    Ok((org, expires)) => self.verified(peer, org, expires, h.answers_leaves),
                    Err(e) => self.refuse_certificate(peer, e),
                }
            }
            Some(pb::sync_response::Kind::Error(e)) => {
                tracing::warn!(%peer, reason = %e.message, "peer refused this node's certificate");
            }
            _ => self.violation(peer, Violation::MalformedHello),
        }
    }

    /// `peer` presented a valid certificate of `org` (until `expires`); its hello said
    /// whether it answers `Leaves` requests.
    pub(super) fn verified(
        &mut self,
        peer: PeerId,
        org: OrgKey,
        expires: i64,
        answers_leaves: bool,
    ) {
        if !self.peers.verify(peer, org, expires, answers_leaves) {
            return;
        }
        tracing::info!(%peer, org = %org.short(), "peer verified as a current member");
        self.swarm
            .behaviour_mut()
            .gossipsub
            .set_application_score(&peer, 0.0);
        self.swarm.behaviour_mut().admission.verified(peer);
        self.start_sync(peer);
        if self.reservations.is_relay(&peer) {
            self.reserve();
        }
        let via_peer = self
            .config
            .bootstrap
            .iter()
            .any(|a| relay::via(a).is_some_and(|(_, r)| r == peer));
        if via_peer {
            self.dial_bootstrap();
        }
    }

    pub(super) fn violation(&mut self, peer: PeerId, violation: Violation) {
        tracing::warn!(%peer, reason = %violation, "protocol violation");
        crate::metrics::violation(&format!("{violation:?}"));
        if self.peers.violation(&peer) {
            self.reject(peer, "too many protocol violations");
            self.peers.ban(peer);
        }
    }

    /// A certificate naming a membership epoch this node has not seen may be valid: the
    /// peer is disconnected but not blocked, and tries again later.
    pub(super) fn refuse_certificate(&mut self, peer: PeerId, error: CertError) {
        if error.is_violation() {
            self.reject(peer, &format!("certificate refused: {error}"));
        } else {
            tracing::info!(%peer, reason = %error, "certificate names an unknown epoch; disconnecting");
            self.disconnect(peer);
        }
    }

    /// A response to `peer` went out (or failed): if it was a certificate refusal, the
    /// peer is refused now.
    pub(super) fn refused(&mut self, peer: PeerId) {
        if let Some(e) = self.refusals.remove(&peer) {
            self.refuse_certificate(peer, e);
        }
    }

    /// Disconnects `peer`; it may come back.
    pub(super) fn disconnect(&mut self, peer: PeerId) {
        let _ = self.swarm.disconnect_peer_id(peer);
        self.peers.drop_peer(&peer);
    }

    /// Disconnects and blocks `peer` (until membership changes).
    pub(super) fn reject(&mut self, peer: PeerId, reason: &str) {
        tracing::warn!(%peer, reason, "disconnecting and blocking peer");
        self.swarm.behaviour_mut().blocked.block_peer(peer);
        self.swarm.behaviour_mut().gossipsub.blacklist_peer(&peer);
        self.peers.block(peer);
        let _ = self.swarm.disconnect_peer_id(peer);
    }

    pub(super) fn membership_changed(&mut self, membership: Option<Membership>) {
        self.membership = membership;
        // Members may have been added: give blocked peers another chance to present a
        // certificate; members removed or rotated away are cut off now.
        for peer in self.peers.unblock_all() {
            self.swarm.behaviour_mut().blocked.unblock_peer(peer);
            self.swarm
                .behaviour_mut()
                .gossipsub
                .remove_blacklisted_peer(&peer);
        }
        for peer in self.peers.not_members(self.membership.as_ref()) {
            self.reject(peer, "organisation is no longer a current member");
        }
    }

    /// Disconnects peers without a valid certificate in time, and strangers that used
    /// the relay server.
    pub(super) fn close_gate(&mut self, now: Instant) {
        for peer in self.peers.late(now, now_ms(), self.config.hello_timeout) {
            tracing::info!(%peer, "no valid certificate in time; disconnecting");
            if !self.peers.is_verified(&peer) {
                self.swarm
                    .behaviour_mut()
                    .admission
                    .hello_timed_out(peer, now);
            }
            self.disconnect(peer);
        }
        // The relay server is not for strangers: a peer that reserved or opened a circuit
        // before it verified gets a short grace, not the whole hello timeout.
        for peer in self.peers.relay_strangers(now, RELAY_UNVERIFIED_GRACE) {
            tracing::info!(%peer, "used the relay without a valid certificate; disconnecting");
            self.disconnect(peer);
        }
    }
}

#[cfg(test)]
mod tests {
    use libp2p::core::transport::PortUse;
    use libp2p::core::Endpoint;
    use libp2p::Multiaddr;

    use super::*;
    use crate::net::test_support::peer_id;

    fn dialed(address: &str) -> ConnectedPoint {
        ConnectedPoint::Dialer {
            address: address.parse().unwrap(),
            role_override: Endpoint::Dialer,
            port_use: PortUse::New,
        }
    }

    #[test]
    fn only_a_dial_to_the_expected_peer_id_introduces_this_node() {
        let (peer, other) = (peer_id(1), peer_id(2));
        let accepted = ConnectedPoint::Listener {
            local_addr: "/ip4/127.0.0.1/tcp/7400".parse::<Multiaddr>().unwrap(),
            send_back_addr: "/ip4/127.0.0.1/tcp/50000".parse().unwrap(),
        };
        assert_eq!(opening(&accepted, &peer), Opening::Listen);
        let direct = format!("/ip4/198.51.100.7/tcp/7400/p2p/{peer}");
        assert_eq!(opening(&dialed(&direct), &peer), Opening::Introduce);
        let circuit = format!("/ip4/198.51.100.7/tcp/7400/p2p/{other}/p2p-circuit/p2p/{peer}");
        assert_eq!(opening(&dialed(&circuit), &peer), Opening::Introduce);
        // Through a relay, the relay's id is not the target's.
        assert_eq!(
            opening(&dialed(&circuit), &other),
            Opening::UnnamedDial,
            "a circuit names its target last"
        );
        assert_eq!(
            opening(&dialed("/ip4/198.51.100.7/tcp/7400"), &peer),
            Opening::UnnamedDial
        );
        assert_eq!(
            opening(&dialed("/dns4/node-a/tcp/7400"), &peer),
            Opening::UnnamedDial
        );
    }

    #[test]
    fn refusals_tell_the_peer_no_detail() {
        let detail = "0a1b2c3d4e5f secret detail /home/org/store.db";
        let Err(garbage) = crate::check::prepare(b"garbage") else {
            panic!("garbage verified")
        };
        let inner = garbage.to_string();
        let told = refusal(&CertError::DoesNotVerify(garbage));
        assert_eq!(told, "certificate refused: not a valid node certificate");
        assert!(!told.contains(&inner), "{told}");
        for e in [
            CertError::WrongSchema(detail.into()),
            CertError::UnknownEpoch(detail.into()),
            CertError::NotMemberThen(detail.into()),
            CertError::NotCurrentMember(detail.into()),
        ] {
            let told = refusal(&e);
            assert!(told.starts_with("certificate refused: "), "{told}");
            assert!(
                !told.contains("0a1b2c") && !told.contains("/home"),
                "{told}"
            );
        }
    }
}
