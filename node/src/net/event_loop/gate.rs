//! The certificate gate and peer discipline of the event loop: hellos both ways, the
//! decision on a peer's certificate (`cert`), violations, blocks and bans (the peer
//! table decides, this acts on the swarm), membership changes, and disconnecting peers
//! that have no valid certificate in time.

use std::time::{Duration, Instant};

use coalition_proto::v1 as pb;
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

impl EventLoop {
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
                self.verified(peer, org, expires);
            }
            Err(e) => {
                self.respond(channel, error_response(format!("certificate refused: {e}")));
                self.refuse_certificate(peer, e);
            }
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

    /// This node's certificate, as a hello.
    fn hello(&self) -> pb::Hello {
        pb::Hello {
            certificate: self.cert.clone().into(),
        }
    }

    pub(super) fn on_hello_response(&mut self, peer: PeerId, response: &[u8]) {
        match pb::SyncResponse::decode(response).ok().and_then(|r| r.kind) {
            Some(pb::sync_response::Kind::Hello(h)) => {
                match verify_certificate(&h.certificate, &peer, self.membership.as_ref()) {
                    Ok((org, expires)) => self.verified(peer, org, expires),
                    Err(e) => self.refuse_certificate(peer, e),
                }
            }
            Some(pb::sync_response::Kind::Error(e)) => {
                tracing::warn!(%peer, reason = %e.message, "peer refused this node's certificate");
            }
            _ => self.violation(peer, Violation::MalformedHello),
        }
    }

    pub(super) fn verified(&mut self, peer: PeerId, org: OrgKey, expires: i64) {
        if !self.peers.verify(peer, org, expires) {
            return;
        }
        tracing::info!(%peer, org = %org.short(), "peer verified as a current member");
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
