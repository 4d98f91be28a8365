//! Admission of inbound connections, before any protocol runs on them: a cap on the
//! connections one IP address may hold, a cap on the inbound connections of peers that
//! have not yet proved membership, and a time-limited block on peers (and, after repeated
//! offences, on the address) that connect and let the certificate gate time out.
//!
//! Without these, one stranger could hold every connection slot with connections that
//! never present a certificate, and come back at once with a fresh peer id each time the
//! gate closes one. Outbound connections (this node dialling its bootstrap peers and
//! relays) are never refused here. A relayed inbound connection has no IP address of its
//! own (the relay's would be wrong to count), so it counts only towards the unverified cap.
//!
//! The event loop tells this behaviour when a peer verified ([`Behaviour::verified`]) and
//! when one let its hello time out ([`Behaviour::hello_timed_out`]); every other input is
//! the swarm's own connection events.

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use libp2p::core::transport::PortUse;
use libp2p::core::{ConnectedPoint, Endpoint};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{
    dummy, CloseConnection, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};

/// Most blocked peers and addresses remembered at once (expired ones are dropped first).
const MAX_REMEMBERED: usize = 4096;

/// The admission limits (from `[network]`, see `NetConfig`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionLimits {
    /// Inbound connections (pending or established) from one IP address.
    pub per_ip: usize,
    /// Inbound connections of peers not (yet) verified, in total.
    pub unverified: usize,
    /// How long a peer that let its hello time out is refused.
    pub timeout_block: Duration,
    /// Hello timeouts from one IP address (within `timeout_block`) after which the
    /// address itself is refused for `timeout_block`.
    pub timeouts_per_ip: u32,
}

impl Default for AdmissionLimits {
    fn default() -> Self {
        Self {
            per_ip: 8,
            unverified: 16,
            timeout_block: Duration::from_secs(300),
            timeouts_per_ip: 3,
        }
    }
}

/// Why an inbound connection was refused (logged by the swarm as the denial's cause).
#[derive(Debug, thiserror::Error)]
pub(super) enum Refused {
    /// The address holds its share of connections.
    #[error("{ip} already holds {held} inbound connections (limit {limit})")]
    PerIp {
        /// The address.
        ip: IpAddr,
        /// Connections it holds.
        held: usize,
        /// The limit.
        limit: usize,
    },
    /// Too many connections wait for a certificate.
    #[error("{0} inbound connections wait for a certificate already")]
    Unverified(usize),
    /// The peer or its address let its hello time out recently.
    #[error("blocked for a while: {0} let its certificate gate time out")]
    Blocked(String),
}

/// The admission behaviour: decides on connections, emits nothing.
#[derive(Debug, Default)]
pub(super) struct Behaviour {
    limits: AdmissionLimits,
    /// Inbound connections being set up, by the IP address they come from.
    pending: HashMap<ConnectionId, Option<IpAddr>>,
    /// Established inbound connections: peer and IP address.
    inbound: HashMap<ConnectionId, (PeerId, Option<IpAddr>)>,
    verified: HashSet<PeerId>,
    blocked_peers: HashMap<PeerId, Instant>,
    blocked_ips: HashMap<IpAddr, Instant>,
    /// Hello timeouts per address: how many, since when.
    strikes: HashMap<IpAddr, (u32, Instant)>,
    /// Peers whose connections to close (their address was just blocked).
    close: VecDeque<PeerId>,
}

/// The IP address of a direct connection's remote address (`None` for a relayed one).
fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    if addr.iter().any(|p| matches!(p, Protocol::P2pCircuit)) {
        return None;
    }
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

impl Behaviour {
    /// A behaviour enforcing `limits`.
    pub(super) fn new(limits: AdmissionLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// `peer` presented a valid certificate: its connections no longer count as unverified.
    pub(super) fn verified(&mut self, peer: PeerId) {
        self.verified.insert(peer);
    }

    /// `peer` let its hello time out at `now`: it is refused for `timeout_block`, and
    /// each address it came from gets a strike; an address with `timeouts_per_ip` strikes
    /// is refused for `timeout_block` too.
    pub(super) fn hello_timed_out(&mut self, peer: PeerId, now: Instant) {
        self.forget_expired(now);
        let until = now + self.limits.timeout_block;
        if self.blocked_peers.len() < MAX_REMEMBERED {
            self.blocked_peers.insert(peer, until);
        }
        let ips: HashSet<IpAddr> = self
            .inbound
            .values()
            .filter(|(p, _)| *p == peer)
            .filter_map(|(_, ip)| *ip)
            .collect();
        for ip in ips {
            if self.strikes.len() >= MAX_REMEMBERED && !self.strikes.contains_key(&ip) {
                continue;
            }
            let (count, _) = self.strikes.entry(ip).or_insert((0, now));
            *count += 1;
            if *count >= self.limits.timeouts_per_ip && self.blocked_ips.len() < MAX_REMEMBERED {
                tracing::warn!(%ip, "address let the certificate gate time out repeatedly; refusing it for a while");
                self.blocked_ips.insert(ip, until);
                let unverified: HashSet<PeerId> = self
                    .inbound
                    .values()
                    .filter(|(p, i)| *i == Some(ip) && !self.verified.contains(p))
                    .map(|(p, _)| *p)
                    .collect();
                self.close.extend(unverified);
            }
        }
    }

    /// Drops blocks and strikes older than `timeout_block`.
    fn forget_expired(&mut self, now: Instant) {
        self.blocked_peers.retain(|_, until| *until > now);
        self.blocked_ips.retain(|_, until| *until > now);
        let window = self.limits.timeout_block;
        self.strikes
            .retain(|_, (_, since)| now.saturating_duration_since(*since) < window);
    }

    fn ip_blocked(&self, ip: &IpAddr, now: Instant) -> bool {
        self.blocked_ips.get(ip).is_some_and(|until| *until > now)
    }

    fn peer_blocked(&self, peer: &PeerId, now: Instant) -> bool {
        self.blocked_peers
            .get(peer)
            .is_some_and(|until| *until > now)
    }

    /// Inbound connections, pending or established, from `ip`.
    fn held_by(&self, ip: IpAddr) -> usize {
        self.pending.values().filter(|i| **i == Some(ip)).count()
            + self
                .inbound
                .values()
                .filter(|(_, i)| *i == Some(ip))
                .count()
    }

    /// Established inbound connections of unverified peers.
    fn unverified(&self) -> usize {
        self.inbound
            .values()
            .filter(|(p, _)| !self.verified.contains(p))
            .count()
    }

    /// Decides on an inbound connection from `remote` before its handshake.
    fn admit_pending(
        &mut self,
        connection: ConnectionId,
        remote: &Multiaddr,
        now: Instant,
    ) -> Result<(), Refused> {
        let ip = ip_of(remote);
        if let Some(ip) = ip {
            if self.ip_blocked(&ip, now) {
                return Err(Refused::Blocked(ip.to_string()));
            }
            let held = self.held_by(ip);
            if held >= self.limits.per_ip {
                return Err(Refused::PerIp {
                    ip,
                    held,
                    limit: self.limits.per_ip,
                });
            }
        }
        self.pending.insert(connection, ip);
        Ok(())
    }

    /// Decides on an inbound connection once the handshake named its peer.
    fn admit_established(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        remote: &Multiaddr,
        now: Instant,
    ) -> Result<(), Refused> {
        let ip = self
            .pending
            .remove(&connection)
            .unwrap_or_else(|| ip_of(remote));
        if self.peer_blocked(&peer, now) {
            return Err(Refused::Blocked(peer.to_string()));
        }
        if !self.verified.contains(&peer) {
            let waiting = self.unverified();
            if waiting >= self.limits.unverified {
                return Err(Refused::Unverified(waiting));
            }
        }
        self.inbound.insert(connection, (peer, ip));
        Ok(())
    }

    fn closed(&mut self, connection: ConnectionId, peer: PeerId, remaining: usize) {
        self.pending.remove(&connection);
        self.inbound.remove(&connection);
        if remaining == 0 {
            self.verified.remove(&peer);
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.admit_pending(connection_id, remote, Instant::now())
            .map_err(ConnectionDenied::new)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.admit_established(connection_id, peer, remote, Instant::now())
            .map_err(ConnectionDenied::new)?;
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        _peer: PeerId,
        _addr: &Multiaddr,
        _role_override: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            // Refused during setup, here or by a behaviour after this one (which may
            // refuse a connection this one admitted): it holds no slot.
            FromSwarm::ListenFailure(f) => {
                self.pending.remove(&f.connection_id);
                self.inbound.remove(&f.connection_id);
            }
            FromSwarm::ConnectionClosed(c) => {
                self.closed(c.connection_id, c.peer_id, c.remaining_established)
            }
            FromSwarm::ConnectionEstablished(c) => {
                // An inbound connection denied after this behaviour admitted it never
                // reaches here; one admitted is already counted.
                if let ConnectedPoint::Listener { .. } = c.endpoint {
                    debug_assert!(self.inbound.contains_key(&c.connection_id));
                }
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _peer: PeerId,
        _connection: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _cx: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        match self.close.pop_front() {
            Some(peer_id) => Poll::Ready(ToSwarm::CloseConnection {
                peer_id,
                connection: CloseConnection::All,
            }),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(ip: &str) -> Multiaddr {
        format!("/ip4/{ip}/tcp/4000").parse().unwrap()
    }

    fn peer() -> PeerId {
        libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id()
    }

    fn limits() -> AdmissionLimits {
        AdmissionLimits {
            per_ip: 2,
            unverified: 3,
            timeout_block: Duration::from_secs(60),
            timeouts_per_ip: 2,
        }
    }

    /// Admits one inbound connection from `ip` for `peer`, both steps.
    fn connect(
        b: &mut Behaviour,
        ip: &str,
        peer: PeerId,
        now: Instant,
    ) -> Result<ConnectionId, Refused> {
        let c = ConnectionId::new_unchecked(rand_id());
        b.admit_pending(c, &addr(ip), now)?;
        b.admit_established(c, peer, &addr(ip), now)?;
        Ok(c)
    }

    fn rand_id() -> usize {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(1);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }

    #[test]
    fn one_address_gets_its_share_of_connections_and_no_more() {
        let mut b = Behaviour::new(limits());
        let now = Instant::now();
        let first = connect(&mut b, "192.0.2.1", peer(), now).unwrap();
        connect(&mut b, "192.0.2.1", peer(), now).unwrap();
        // A fresh peer id from the same address does not help.
        let e = connect(&mut b, "192.0.2.1", peer(), now).unwrap_err();
        assert!(matches!(e, Refused::PerIp { held: 2, .. }), "{e}");
        // Another address is not affected; a closed connection frees its slot.
        let other = peer();
        b.verified(other);
        connect(&mut b, "192.0.2.2", other, now).unwrap();
        b.closed(first, peer(), 0);
        connect(&mut b, "192.0.2.1", peer(), now).unwrap();
    }

    #[test]
    fn unverified_connections_are_capped_and_members_still_get_in() {
        let mut b = Behaviour::new(limits());
        let now = Instant::now();
        for i in 1..=3 {
            connect(&mut b, &format!("192.0.2.{i}"), peer(), now).unwrap();
        }
        let e = connect(&mut b, "192.0.2.9", peer(), now).unwrap_err();
        assert!(matches!(e, Refused::Unverified(3)), "{e}");
        // A peer verified before (on an earlier connection) is not a stranger.
        let member = peer();
        b.verified(member);
        connect(&mut b, "192.0.2.10", member, now).unwrap();
    }

    #[test]
    fn a_hello_timeout_blocks_the_peer_then_repeated_ones_the_address_for_a_while() {
        let mut b = Behaviour::new(limits());
        let now = Instant::now();
        let p1 = peer();
        connect(&mut b, "192.0.2.1", p1, now).unwrap();
        b.hello_timed_out(p1, now);
        let c = b
            .inbound
            .iter()
            .find(|(_, (p, _))| *p == p1)
            .map(|(c, _)| *c)
            .unwrap();
        b.closed(c, p1, 0);
        assert!(matches!(
            connect(&mut b, "192.0.2.3", p1, now),
            Err(Refused::Blocked(_))
        ));
        // A fresh peer id from the same address gets in once more; its timeout is the
        // address's second strike.
        let p2 = peer();
        let c2 = connect(&mut b, "192.0.2.1", p2, now).unwrap();
        b.hello_timed_out(p2, now);
        assert_eq!(
            b.close.iter().collect::<Vec<_>>(),
            vec![&p2],
            "its connections are closed"
        );
        b.closed(c2, p2, 0);
        assert!(matches!(
            connect(&mut b, "192.0.2.1", peer(), now),
            Err(Refused::Blocked(_))
        ));
        // Blocks expire.
        let later = now + Duration::from_secs(61);
        connect(&mut b, "192.0.2.1", peer(), later).unwrap();
        connect(&mut b, "192.0.2.3", p1, later).unwrap();
    }

    #[test]
    fn relayed_connections_have_no_address_to_count() {
        let relayed: Multiaddr = format!("/ip4/192.0.2.1/tcp/4000/p2p/{}/p2p-circuit", peer())
            .parse()
            .unwrap();
        assert_eq!(ip_of(&relayed), None);
        assert_eq!(
            ip_of(&addr("192.0.2.1")),
            Some("192.0.2.1".parse().unwrap())
        );
    }
}
