//! Relays for members behind NAT (libp2p circuit relay v2), and the limits of this node's
//! own relay server.
//!
//! A node behind NAT cannot be dialled. With `[network] relays` it keeps a connection to
//! each listed relay, a member that runs with `relay_server = true`, and holds a
//! *reservation* there (it listens on `<relay>/p2p-circuit`). Other members then dial it at
//! `<relay>/p2p-circuit/p2p/<its peer id>`; over that relayed connection DCUtR tries to
//! punch a direct connection.
//!
//! Promises:
//! - a reservation is requested only over a connection to a relay that has presented a
//!   valid certificate for a current member (the membership gate of `event_loop`), and is
//!   requested again after it is refused or lost, with a bounded backoff
//!   ([`retry_after`]);
//! - the relay server's resources are bounded by the `RELAY_*` constants; a relay is no
//!   way around the membership gate: a relayed connection is gated like any other, and
//!   a peer that has not presented a member's certificate is disconnected from the relay
//!   (and with it every reservation and circuit it holds) after `hello_timeout`.
//!
//! See `docs/PROTOCOL.md` §1.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

/// Reservations this node's relay server holds at once.
pub const RELAY_MAX_RESERVATIONS: usize = 64;
/// Reservations one peer may hold at once (libp2p allows one more than this).
pub const RELAY_MAX_RESERVATIONS_PER_PEER: usize = 2;
/// How long a reservation lasts before the client must renew it.
pub const RELAY_RESERVATION_DURATION: Duration = Duration::from_secs(30 * 60);
/// Circuits (relayed connections) this node relays at once.
pub const RELAY_MAX_CIRCUITS: usize = 32;
/// Circuits one peer may be an end of at once (libp2p allows one more than this).
pub const RELAY_MAX_CIRCUITS_PER_PEER: usize = 8;
/// Longest a circuit stays open; the peers then reconnect (or are direct by then).
pub const RELAY_MAX_CIRCUIT_DURATION: Duration = Duration::from_secs(10 * 60);
/// Bytes a circuit carries (both directions) before the relay closes it.
pub const RELAY_MAX_CIRCUIT_BYTES: u64 = 32 * 1024 * 1024;
/// New reservations, and new circuits, per peer: a burst of this many, then
/// one per [`RELAY_RATE_INTERVAL`].
pub const RELAY_RATE_PER_PEER: u32 = 30;
/// New reservations, and new circuits, per IP address: a burst of this many, then
/// one per [`RELAY_RATE_INTERVAL`] (members behind one NAT share an address).
pub const RELAY_RATE_PER_IP: u32 = 60;
/// Refill interval of the per-peer and per-IP rates.
pub const RELAY_RATE_INTERVAL: Duration = Duration::from_secs(60);

/// The relay server's configuration: the `RELAY_*` limits above.
pub(super) fn server_config() -> libp2p::relay::Config {
    let per = |n: u32| NonZeroU32::new(n).expect("rate limits are positive");
    libp2p::relay::Config {
        max_reservations: RELAY_MAX_RESERVATIONS,
        max_reservations_per_peer: RELAY_MAX_RESERVATIONS_PER_PEER,
        reservation_duration: RELAY_RESERVATION_DURATION,
        reservation_rate_limiters: Vec::new(),
        max_circuits: RELAY_MAX_CIRCUITS,
        max_circuits_per_peer: RELAY_MAX_CIRCUITS_PER_PEER,
        max_circuit_duration: RELAY_MAX_CIRCUIT_DURATION,
        max_circuit_bytes: RELAY_MAX_CIRCUIT_BYTES,
        circuit_src_rate_limiters: Vec::new(),
    }
    .reservation_rate_per_peer(per(RELAY_RATE_PER_PEER), RELAY_RATE_INTERVAL)
    .reservation_rate_per_ip(per(RELAY_RATE_PER_IP), RELAY_RATE_INTERVAL)
    .circuit_src_per_peer(per(RELAY_RATE_PER_PEER), RELAY_RATE_INTERVAL)
    .circuit_src_per_ip(per(RELAY_RATE_PER_IP), RELAY_RATE_INTERVAL)
}

/// Whether `addr` goes through a relay (contains `/p2p-circuit`).
pub fn is_circuit(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| p == Protocol::P2pCircuit)
}

/// The peer an address leads to: its last `/p2p/…` (for a circuit address, the peer
/// behind the relay, not the relay).
pub fn target(addr: &Multiaddr) -> Option<PeerId> {
    match addr.iter().last()? {
        Protocol::P2p(id) => Some(id),
        _ => None,
    }
}

/// Why an address does not fit where it is listed (the text completes "[network] FIELD
/// entry "ADDR" …" and says what to write instead).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddrError {
    /// A relay entry that is itself a circuit address.
    #[error(
        "is itself a /p2p-circuit address; list the relay's own address \
         (/ip4/…/tcp/…/p2p/PEERID)"
    )]
    RelayIsCircuit,
    /// A relay entry without the relay's peer id.
    #[error(
        "does not end with the relay's peer id; append /p2p/PEERID as the \
         relay's `coalition run` prints it"
    )]
    RelayWithoutPeerId,
    /// A relay entry that is only a peer id.
    #[error("has no network address before /p2p/PEERID (/ip4/…/tcp/…/p2p/PEERID)")]
    RelayWithoutAddress,
    /// A circuit bootstrap entry of another shape than relay, circuit, target.
    #[error(
        "is a circuit address but not /ip4/…/tcp/…/p2p/RELAYID/p2p-circuit/p2p/TARGETID \
         (the relay's full address with its peer id, then /p2p-circuit, then the \
         target's /p2p/PEERID, as the target's `coalition run` prints it)"
    )]
    MalformedCircuit,
    /// A circuit bootstrap entry whose relay is also its target.
    #[error("names the relay itself as the target")]
    RelayIsTarget,
    /// A listen entry through a relay.
    #[error("is a /p2p-circuit address; list the relay in `relays` instead")]
    ListenOnCircuit,
    /// A circuit address where only a direct one fits.
    #[error("may not be a /p2p-circuit address")]
    NotDirect,
}

/// Checks an entry of `[network] relays` and returns the relay's peer id. It must be a
/// direct address ending in the relay's peer id, as its `coalition run` prints it.
pub fn check_relay(addr: &Multiaddr) -> Result<PeerId, AddrError> {
    if is_circuit(addr) {
        return Err(AddrError::RelayIsCircuit);
    }
    let Some(peer) = target(addr) else {
        return Err(AddrError::RelayWithoutPeerId);
    };
    if addr.iter().count() < 2 {
        return Err(AddrError::RelayWithoutAddress);
    }
    Ok(peer)
}

/// Checks an entry of `[network] bootstrap`: a direct address, or a circuit address
/// `<relay address>/p2p/RELAYID/p2p-circuit/p2p/TARGETID`.
pub fn check_bootstrap(addr: &Multiaddr) -> Result<(), AddrError> {
    if !is_circuit(addr) {
        return Ok(());
    }
    let Some((relay, relay_peer)) = via(addr) else {
        return Err(AddrError::MalformedCircuit);
    };
    check_relay(&relay)?;
    if target(addr) == Some(relay_peer) {
        return Err(AddrError::RelayIsTarget);
    }
    Ok(())
}

/// Checks an entry of `[network] listen`: not through a relay (that is `relays`).
pub fn check_listen(addr: &Multiaddr) -> Result<(), AddrError> {
    if is_circuit(addr) {
        Err(AddrError::ListenOnCircuit)
    } else {
        Ok(())
    }
}

/// Checks an address that must be direct (`[network] external_addresses`).
pub fn check_direct(addr: &Multiaddr) -> Result<(), AddrError> {
    if is_circuit(addr) {
        Err(AddrError::NotDirect)
    } else {
        Ok(())
    }
}

/// The relay of a circuit address `R/p2p/RELAYID/p2p-circuit/p2p/TARGETID`: `R/p2p/RELAYID`
/// and RELAYID. `None` unless the address has exactly that shape.
pub(super) fn via(addr: &Multiaddr) -> Option<(Multiaddr, PeerId)> {
    let parts: Vec<Protocol<'_>> = addr.iter().collect();
    let circuit = parts.iter().position(|p| *p == Protocol::P2pCircuit)?;
    let after = &parts[circuit + 1..];
    if !matches!(after, [Protocol::P2p(_)]) {
        return None;
    }
    let relay: Multiaddr = parts[..circuit].iter().cloned().collect();
    let peer = target(&relay)?;
    Some((relay, peer))
}

/// Logs what this node's relay server did; returns the peer that used it (reserved or
/// opened a circuit), which the event loop holds to the membership gate.
pub(super) fn server_event(
    event: libp2p::relay::Event,
    is_member: impl Fn(&PeerId) -> bool,
) -> Option<PeerId> {
    use libp2p::relay::Event;
    match event {
            Event::ReservationReqAccepted {
                src_peer_id,
                renewed,
            } => {
                let member = is_member(&src_peer_id);
                tracing::info!(peer = %src_peer_id, renewed, member, "relay server: reservation accepted");
                return Some(src_peer_id);
            }
            Event::ReservationReqDenied {
                src_peer_id,
                status,
            } => {
                tracing::info!(peer = %src_peer_id, ?status, "relay server: reservation denied");
            }
            Event::ReservationClosed { src_peer_id }
            | Event::ReservationTimedOut { src_peer_id } => {
                tracing::debug!(peer = %src_peer_id, "relay server: reservation ended");
            }
            Event::CircuitReqAccepted {
                src_peer_id,
                dst_peer_id,
            } => {
                let member = is_member(&src_peer_id);
                tracing::info!(src = %src_peer_id, dst = %dst_peer_id, member, "relay server: circuit opened");
                return Some(src_peer_id);
            }
            Event::CircuitReqDenied {
                src_peer_id,
                dst_peer_id,
                status,
            } => {
                tracing::info!(src = %src_peer_id, dst = %dst_peer_id, ?status, "relay server: circuit denied");
            }
            Event::CircuitClosed {
                src_peer_id,
                dst_peer_id,
                error,
            } => {
                tracing::debug!(src = %src_peer_id, dst = %dst_peer_id, error = ?error, "relay server: circuit closed");
            }
            Event::StatusChanged { status } => match status {
                libp2p::relay::Status::Enable => {
                    tracing::info!("relay server: serving reservations")
                }
                libp2p::relay::Status::Disable => tracing::warn!(
                    "relay server: not serving reservations (no external address; set [network] external_addresses)"
                ),
            },
            _ => {}
        }
    None
}

/// Delay before the next reservation attempt after `failures` refusals in a row:
/// 1 s, 2 s, 4 s, … up to 60 s.
pub(super) fn retry_after(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(6)).min(Duration::from_secs(60))
}

/// One relay of `[network] relays` and the state of this node's reservation there.
#[derive(Debug)]
struct Relay {
    addr: Multiaddr,
    peer: PeerId,
    /// The `/p2p-circuit` listener while a reservation is requested or held.
    listener: Option<ListenerId>,
    accepted: bool,
    failures: u32,
    next_try: Instant,
}

/// The reservations this node keeps, one per configured relay.
#[derive(Debug)]
pub(super) struct Reservations {
    relays: Vec<Relay>,
}

/// What a closed relay listener meant.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Closed {
    /// The relay.
    pub(super) relay: PeerId,
    /// Its address from the config.
    pub(super) addr: Multiaddr,
    /// Whether the reservation had been accepted (and is now lost).
    pub(super) was_accepted: bool,
    /// When it will be requested again.
    pub(super) retry_in: Duration,
}

impl Reservations {
    /// The relays of `addrs` (entries that do not pass [`check_relay`] are skipped;
    /// the config refuses them first).
    pub(super) fn new(addrs: &[Multiaddr], now: Instant) -> Self {
        let relays = addrs
            .iter()
            .filter_map(|a| {
                check_relay(a).ok().map(|peer| Relay {
                    addr: a.clone(),
                    peer,
                    listener: None,
                    accepted: false,
                    failures: 0,
                    next_try: now,
                })
            })
            .collect();
        Self { relays }
    }

    /// The relays' addresses (to dial like bootstrap peers).
    pub(super) fn addrs(&self) -> impl Iterator<Item = &Multiaddr> {
        self.relays.iter().map(|r| &r.addr)
    }

    /// Whether `peer` is one of the configured relays.
    pub(super) fn is_relay(&self, peer: &PeerId) -> bool {
        self.relays.iter().any(|r| r.peer == *peer)
    }

    /// The `<relay>/p2p-circuit` addresses to listen on now: relays with no reservation
    /// requested, that `ready` says are connected and verified, whose backoff is over.
    pub(super) fn due(&self, now: Instant, ready: impl Fn(&PeerId) -> bool) -> Vec<Multiaddr> {
        self.relays
            .iter()
            .filter(|r| r.listener.is_none() && r.next_try <= now && ready(&r.peer))
            .map(|r| r.addr.clone().with(Protocol::P2pCircuit))
            .collect()
    }

    /// A reservation was requested on `circuit` (an address from [`Self::due`]).
    pub(super) fn requested(&mut self, circuit: &Multiaddr, listener: ListenerId) {
        if let Some(r) = self.by_circuit(circuit) {
            r.listener = Some(listener);
            r.accepted = false;
        }
    }

    /// Requesting a reservation on `circuit` failed before it reached the relay.
    pub(super) fn request_failed(&mut self, circuit: &Multiaddr, now: Instant) -> Duration {
        match self.by_circuit(circuit) {
            Some(r) => r.failed(now),
            None => retry_after(0),
        }
    }

    /// The relay `peer` accepted a reservation; returns the relay's configured address
    /// when this is a new reservation (not a renewal).
    pub(super) fn accepted(&mut self, peer: &PeerId) -> Option<Multiaddr> {
        let r = self
            .relays
            .iter_mut()
            .find(|r| r.peer == *peer && r.listener.is_some())?;
        r.failures = 0;
        if std::mem::replace(&mut r.accepted, true) {
            None
        } else {
            Some(r.addr.clone())
        }
    }

    /// A listener closed; if it was a relay's, the reservation is gone (refused when
    /// `refused`, otherwise lost with the connection) and will be requested again.
    pub(super) fn closed(
        &mut self,
        listener: ListenerId,
        refused: bool,
        now: Instant,
    ) -> Option<Closed> {
        let r = self
            .relays
            .iter_mut()
            .find(|r| r.listener == Some(listener))?;
        r.listener = None;
        let was_accepted = std::mem::take(&mut r.accepted);
        let retry_in = if refused {
            r.failed(now)
        } else {
            r.next_try = now + retry_after(0);
            retry_after(0)
        };
        Some(Closed {
            relay: r.peer,
            addr: r.addr.clone(),
            was_accepted,
            retry_in,
        })
    }

    /// Addresses at which others reach this node (`me`) through the relays that hold a
    /// reservation for it: `<relay>/p2p-circuit/p2p/<me>`.
    pub(super) fn reachable(&self, me: PeerId) -> Vec<String> {
        self.relays
            .iter()
            .filter(|r| r.accepted)
            .map(|r| {
                r.addr
                    .clone()
                    .with(Protocol::P2pCircuit)
                    .with(Protocol::P2p(me))
                    .to_string()
            })
            .collect()
    }

    fn by_circuit(&mut self, circuit: &Multiaddr) -> Option<&mut Relay> {
        self.relays
            .iter_mut()
            .find(|r| r.addr.clone().with(Protocol::P2pCircuit) == *circuit)
    }
}

impl Relay {
    fn failed(&mut self, now: Instant) -> Duration {
        let wait = retry_after(self.failures);
        self.failures = self.failures.saturating_add(1);
        self.next_try = now + wait;
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u8) -> PeerId {
        libp2p::identity::Keypair::ed25519_from_bytes([n; 32])
            .expect("key")
            .public()
            .to_peer_id()
    }

    fn addr(s: &str) -> Multiaddr {
        s.parse().expect("multiaddr")
    }

    #[test]
    fn relay_entries_need_a_direct_address_and_the_peer_id() {
        let r = peer(1);
        assert_eq!(
            check_relay(&addr(&format!("/ip4/198.51.100.7/tcp/7400/p2p/{r}"))),
            Ok(r)
        );
        assert!(check_relay(&addr("/ip4/198.51.100.7/tcp/7400"))
            .unwrap_err()
            .to_string()
            .contains("peer id"));
        assert!(check_relay(&addr(&format!("/p2p/{r}")))
            .unwrap_err()
            .to_string()
            .contains("no network address"));
        assert!(check_relay(&addr(&format!(
            "/ip4/198.51.100.7/tcp/7400/p2p/{r}/p2p-circuit"
        )))
        .unwrap_err()
        .to_string()
        .contains("p2p-circuit"));
    }

    #[test]
    fn circuit_bootstrap_addresses_name_relay_and_target() {
        let (r, t) = (peer(1), peer(2));
        let relay = addr(&format!("/ip4/198.51.100.7/tcp/7400/p2p/{r}"));
        let circuit = relay
            .clone()
            .with(Protocol::P2pCircuit)
            .with(Protocol::P2p(t));
        assert_eq!(check_bootstrap(&circuit), Ok(()));
        assert_eq!(via(&circuit), Some((relay.clone(), r)));
        // The peer dialled is the one behind the relay, not the relay.
        assert_eq!(target(&circuit), Some(t));
        assert_eq!(target(&relay), Some(r));
        assert!(check_bootstrap(&addr(&format!("/ip4/1.2.3.4/tcp/1/p2p/{t}"))).is_ok());
        for bad in [
            format!("/ip4/198.51.100.7/tcp/7400/p2p-circuit/p2p/{t}"),
            format!("/ip4/198.51.100.7/tcp/7400/p2p/{r}/p2p-circuit"),
            format!("/p2p/{r}/p2p-circuit/p2p/{t}"),
            format!("/ip4/198.51.100.7/tcp/7400/p2p/{r}/p2p-circuit/p2p/{r}"),
        ] {
            assert!(check_bootstrap(&addr(&bad)).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let waits: Vec<u64> = (0..9).map(|n| retry_after(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn reservations_are_requested_when_ready_and_again_after_loss() {
        let (r, me) = (peer(1), peer(9));
        let relay = addr(&format!("/ip4/198.51.100.7/tcp/7400/p2p/{r}"));
        let t0 = Instant::now();
        let mut rs = Reservations::new(std::slice::from_ref(&relay), t0);
        assert!(rs.is_relay(&r) && !rs.is_relay(&me));
        assert!(rs.due(t0, |_| false).is_empty(), "relay not verified yet");
        let due = rs.due(t0, |_| true);
        assert_eq!(due, vec![relay.clone().with(Protocol::P2pCircuit)]);

        let listener = ListenerId::next();
        rs.requested(&due[0], listener);
        assert!(rs.due(t0, |_| true).is_empty(), "one request at a time");
        assert_eq!(rs.accepted(&r), Some(relay.clone()));
        assert_eq!(rs.accepted(&r), None, "a renewal is not new");
        assert_eq!(
            rs.reachable(me),
            vec![format!("{relay}/p2p-circuit/p2p/{me}")]
        );

        // Refused twice: the wait grows; accepted again: it resets.
        let closed = rs.closed(listener, true, t0).expect("relay listener");
        assert!(closed.was_accepted && closed.relay == r);
        assert_eq!(closed.retry_in, Duration::from_secs(1));
        assert!(rs.reachable(me).is_empty());
        assert!(rs.due(t0, |_| true).is_empty(), "backing off");
        let t1 = t0 + Duration::from_secs(1);
        let l2 = ListenerId::next();
        rs.requested(&rs.due(t1, |_| true)[0], l2);
        let closed = rs.closed(l2, true, t1).expect("relay listener");
        assert!(!closed.was_accepted);
        assert_eq!(closed.retry_in, Duration::from_secs(2));
        let t2 = t1 + Duration::from_secs(2);
        let l3 = ListenerId::next();
        rs.requested(&rs.due(t2, |_| true)[0], l3);
        assert!(rs.accepted(&r).is_some());
        // Lost with the connection: asked again after the shortest wait.
        let closed = rs.closed(l3, false, t2).expect("relay listener");
        assert_eq!(closed.retry_in, Duration::from_secs(1));
        assert!(rs.closed(ListenerId::next(), true, t2).is_none());
    }
}
