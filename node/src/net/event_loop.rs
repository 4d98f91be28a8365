//! The event loop: the one task that owns the swarm. Other tasks (sync runs, answers to
//! requests) talk to it through bounded channels and never touch the swarm themselves.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coalition_proto::v1 as pb;
use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{gossipsub, mdns, Multiaddr, PeerId, Swarm};
use prost::Message;
use tokio::sync::{mpsc, oneshot, watch, Mutex};
use tokio::task::JoinSet;

use crate::charter::Membership;
use crate::identity::OrgKey;
use crate::node::Node;
use crate::now_ms;
use crate::record::RecordId;

use super::driver::{self, SyncStats};
use super::index::Index;
use super::relay::{self, Reservations};
use super::{
    Behaviour, BehaviourEvent, NetConfig, NetError, NetStatus, PeerStatus, MAX_VIOLATIONS,
};

/// Requests from other tasks to the event loop.
#[derive(Debug)]
pub enum Command {
    /// Send a sync request to a peer; the reply carries the response frame.
    Request {
        /// The peer.
        peer: PeerId,
        /// Encoded `SyncRequest`.
        request: Vec<u8>,
        /// Where the response goes.
        reply: oneshot::Sender<Result<Vec<u8>, String>>,
    },
    /// Sync with every verified peer now.
    SyncAll,
}

enum Work {
    Respond {
        peer: PeerId,
        channel: ResponseChannel<Vec<u8>>,
        response: Vec<u8>,
        verdict: Result<(), String>,
    },
    SyncDone {
        peer: PeerId,
        result: Result<SyncStats, String>,
    },
}

enum Pending {
    Reply(oneshot::Sender<Result<Vec<u8>, String>>),
    Hello(PeerId),
}

struct Peer {
    org: Option<(OrgKey, i64)>,
    connected_at: Instant,
    violations: u32,
    syncing: bool,
    resync: bool,
    last_sync: Option<i64>,
    last_stats: Option<SyncStats>,
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

/// Concurrent answers to inbound requests.
const MAX_INFLIGHT_ANSWERS: usize = 32;
/// Announcements waiting for a sync to resolve them.
const MAX_PENDING_ANNOUNCES: usize = 4096;
/// How long a peer that uses this node's relay server (reservation or circuit) before its
/// certificate verified may stay connected without one.
const RELAY_UNVERIFIED_GRACE: Duration = Duration::from_secs(2);

pub(super) struct EventLoop {
    swarm: Swarm<Behaviour>,
    node: Arc<Node>,
    me: OrgKey,
    cert: Vec<u8>,
    topic: gossipsub::IdentTopic,
    config: NetConfig,
    commands: mpsc::Sender<Command>,
    command_rx: mpsc::Receiver<Command>,
    status: watch::Sender<NetStatus>,
    index: Arc<Mutex<Index>>,
    peers: HashMap<PeerId, Peer>,
    pending: HashMap<OutboundRequestId, Pending>,
    work_tx: mpsc::Sender<Work>,
    work_rx: mpsc::Receiver<Work>,
    membership: Option<Membership>,
    announces: HashMap<PeerId, Vec<(gossipsub::MessageId, RecordId)>>,
    announced_upto: i64,
    /// Peers refused for membership (given another chance when membership changes).
    blocked: HashSet<PeerId>,
    /// Peers refused for protocol violations (blocked until restart).
    banned: HashSet<PeerId>,
    tasks: JoinSet<()>,
    inflight: Arc<std::sync::atomic::AtomicUsize>,
    received: u64,
    refused: u64,
    last_dial: Option<Instant>,
    /// Reservations with the relays of `[network] relays`.
    reservations: Reservations,
    /// Peers that used the relay server before they were verified, and since when.
    relay_unverified: HashMap<PeerId, Instant>,
    /// A relay server without `external_addresses` announces its listen addresses.
    announce_listen: bool,
}

impl EventLoop {
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn new(
        swarm: Swarm<Behaviour>,
        node: Arc<Node>,
        me: OrgKey,
        cert: Vec<u8>,
        topic: gossipsub::IdentTopic,
        config: NetConfig,
        commands: mpsc::Sender<Command>,
        command_rx: mpsc::Receiver<Command>,
        status: watch::Sender<NetStatus>,
    ) -> Result<Self, NetError> {
        let membership = node.membership().await?;
        let announced_upto = node
            .store()
            .max_rowid()
            .await
            .map_err(crate::node::NodeError::from)?;
        let mut index = Index::default();
        index
            .refresh(node.store())
            .await
            .map_err(crate::node::NodeError::from)?;
        let (work_tx, work_rx) = mpsc::channel(256);
        let reservations = Reservations::new(&config.relays, Instant::now());
        let announce_listen = config.relay_server && config.external_addresses.is_empty();
        if announce_listen {
            tracing::warn!("relay server without [network] external_addresses: announcing its listen addresses to the nodes that reserve with it");
        }
        Ok(Self {
            swarm,
            node,
            me,
            cert,
            topic,
            config,
            commands,
            command_rx,
            status,
            index: Arc::new(Mutex::new(index)),
            peers: HashMap::new(),
            pending: HashMap::new(),
            work_tx,
            work_rx,
            membership,
            announces: HashMap::new(),
            announced_upto,
            blocked: HashSet::new(),
            banned: HashSet::new(),
            tasks: JoinSet::new(),
            inflight: Arc::default(),
            received: 0,
            refused: 0,
            last_dial: None,
            reservations,
            relay_unverified: HashMap::new(),
            announce_listen,
        })
    }

    /// Runs until `shutdown` turns true, then lets running tasks finish (bounded).
    pub(super) async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        self.dial_bootstrap();
        let mut poll = tokio::time::interval(Duration::from_millis(200));
        let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
        let mut anti_entropy = tokio::time::interval(self.config.sync_interval);
        anti_entropy.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                event = self.swarm.select_next_some() => self.on_swarm(event).await,
                Some(cmd) = self.command_rx.recv() => self.on_command(cmd),
                Some(work) = self.work_rx.recv() => self.on_work(work).await,
                _ = poll.tick() => self.announce_new().await,
                _ = housekeeping.tick() => self.housekeeping().await,
                _ = anti_entropy.tick() => self.sync_all(),
                Some(_) = self.tasks.join_next(), if !self.tasks.is_empty() => {}
            }
        }
        tracing::info!("network shutting down; letting running syncs finish");
        let drain = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(10), drain)
            .await
            .is_err()
        {
            self.tasks.abort_all();
        }
    }

    fn is_verified(&self, peer: &PeerId) -> bool {
        self.peers.get(peer).is_some_and(|p| p.org.is_some())
    }

    /// Dials the bootstrap peers and relays that are not connected. A circuit address
    /// is dialled once its relay is connected and verified; until then the relay is.
    fn dial_bootstrap(&mut self) {
        self.last_dial = Some(Instant::now());
        let relays: Vec<Multiaddr> = self.reservations.addrs().cloned().collect();
        for mut addr in self.config.bootstrap.clone().into_iter().chain(relays) {
            if let Some((relay_addr, relay_peer)) = relay::via(&addr) {
                if !self.is_verified(&relay_peer) {
                    if self.peers.contains_key(&relay_peer) {
                        continue; // certificates are being exchanged
                    }
                    addr = relay_addr;
                }
            }
            // The peer an address leads to is its last /p2p (behind a relay, the target).
            let opts = match relay::target(&addr) {
                Some(t)
                    if self.peers.contains_key(&t)
                        || self.blocked.contains(&t)
                        || self.banned.contains(&t) =>
                {
                    continue
                }
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

    /// Requests a reservation with every configured relay that is connected, verified,
    /// holds none for this node and is not backing off.
    fn reserve(&mut self) {
        let now = Instant::now();
        let due = self
            .reservations
            .due(now, |p| self.peers.get(p).is_some_and(|x| x.org.is_some()));
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

    fn publish_relayed(&mut self) {
        let addrs = self.reservations.reachable(*self.swarm.local_peer_id());
        self.status.send_modify(|s| s.relayed_addrs = addrs);
    }

    async fn on_swarm(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } if relay::is_circuit(&address) => {
                tracing::debug!(%address, "relay listener address");
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                if self.announce_listen {
                    self.swarm.add_external_address(address.clone());
                }
                self.status
                    .send_modify(|s| s.listen_addrs.push(address.to_string()));
            }
            SwarmEvent::ExpiredListenAddr { address, .. } if !relay::is_circuit(&address) => {
                tracing::info!(%address, "no longer listening");
                if self.announce_listen {
                    self.swarm.remove_external_address(&address);
                }
                let gone = address.to_string();
                self.status
                    .send_modify(|s| s.listen_addrs.retain(|a| *a != gone));
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
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
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                let relayed = endpoint.is_relayed();
                let address = match &endpoint {
                    libp2p::core::ConnectedPoint::Listener { local_addr, .. } if relayed => {
                        local_addr.to_string()
                    }
                    e => e.get_remote_address().to_string(),
                };
                tracing::debug!(%peer_id, %address, relayed, "connection established");
                // Another connection to a known peer (e.g. direct after a hole punch) adds
                // to it; otherwise this is the first connection, or the first since the
                // peer was dropped while a connection was still being set up, and the
                // certificate gate starts.
                if let Some(p) = self.peers.get_mut(&peer_id) {
                    p.connections.insert(connection_id, (address, relayed));
                    return;
                }
                self.peers.insert(
                    peer_id,
                    Peer {
                        org: None,
                        connected_at: Instant::now(),
                        violations: 0,
                        syncing: false,
                        resync: false,
                        last_sync: None,
                        last_stats: None,
                        connections: HashMap::from([(connection_id, (address, relayed))]),
                    },
                );
                self.send_hello(peer_id);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } if num_established > 0 => {
                if let Some(p) = self.peers.get_mut(&peer_id) {
                    p.connections.remove(&connection_id);
                }
            }
            SwarmEvent::ConnectionClosed { peer_id, .. } => {
                self.peers.remove(&peer_id);
                self.relay_unverified.remove(&peer_id);
                for (msg, _) in self.announces.remove(&peer_id).unwrap_or_default() {
                    self.swarm
                        .behaviour_mut()
                        .gossipsub
                        .report_message_validation_result(
                            &msg,
                            &peer_id,
                            gossipsub::MessageAcceptance::Ignore,
                        );
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Sync(event)) => self.on_sync(event),
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => self.on_gossip(propagation_source, message_id, message),
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                for (peer, addr) in found {
                    if !self.peers.contains_key(&peer) && !self.blocked.contains(&peer) {
                        let _ = self.swarm.dial(addr.with(Protocol::P2p(peer)));
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(e)) => match e.result {
                Ok(_) => tracing::info!(peer = %e.remote_peer_id, "hole punch: direct connection"),
                Err(err) => {
                    tracing::info!(peer = %e.remote_peer_id, error = %error_chain(&err), "hole punch failed; staying relayed")
                }
            },
            SwarmEvent::Behaviour(BehaviourEvent::RelayClient(e)) => self.on_relay_client(e),
            SwarmEvent::Behaviour(BehaviourEvent::RelayServer(e)) => self.on_relay_server(e),
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(peer = ?peer_id, error = %error_chain(&error), "outgoing connection failed");
            }
            _ => {}
        }
    }

    fn on_relay_client(&mut self, event: libp2p::relay::client::Event) {
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

    /// The relay server serves members: a peer that uses it before its certificate
    /// verified has [`RELAY_UNVERIFIED_GRACE`] to present one (see `housekeeping`).
    fn on_relay_server(&mut self, event: libp2p::relay::Event) {
        use libp2p::relay::Event;
        match event {
            Event::ReservationReqAccepted {
                src_peer_id,
                renewed,
            } => {
                let member = self.is_verified(&src_peer_id);
                tracing::info!(peer = %src_peer_id, renewed, member, "relay server: reservation accepted");
                self.relay_used_by(src_peer_id);
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
                let member = self.is_verified(&src_peer_id);
                tracing::info!(src = %src_peer_id, dst = %dst_peer_id, member, "relay server: circuit opened");
                self.relay_used_by(src_peer_id);
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
    }

    fn relay_used_by(&mut self, peer: PeerId) {
        if !self.is_verified(&peer) && self.peers.contains_key(&peer) {
            self.relay_unverified
                .entry(peer)
                .or_insert_with(Instant::now);
        }
    }

    fn on_sync(&mut self, event: request_response::Event<Vec<u8>, Vec<u8>>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => self.on_request(peer, request, channel),
                request_response::Message::Response {
                    request_id,
                    response,
                } => match self.pending.remove(&request_id) {
                    Some(Pending::Reply(tx)) => {
                        let _ = tx.send(Ok(response));
                    }
                    Some(Pending::Hello(peer)) => self.on_hello_response(peer, &response),
                    None => {}
                },
            },
            request_response::Event::OutboundFailure {
                request_id,
                error,
                peer,
                ..
            } => match self.pending.remove(&request_id) {
                Some(Pending::Reply(tx)) => {
                    let _ = tx.send(Err(error.to_string()));
                }
                Some(Pending::Hello(_)) => {
                    tracing::debug!(%peer, %error, "hello failed");
                    // Sent on a connection that closed while another remains (a relayed
                    // one replaced by a direct one): send it again.
                    let unverified = self
                        .peers
                        .get(&peer)
                        .is_some_and(|p| p.org.is_none() && !p.connections.is_empty());
                    if unverified
                        && matches!(error, request_response::OutboundFailure::ConnectionClosed)
                    {
                        self.send_hello(peer);
                    }
                }
                None => {}
            },
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "inbound sync failure");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    /// Sends this node's certificate; the answer is handled by `on_hello_response`.
    fn send_hello(&mut self, peer: PeerId) {
        let hello = pb::SyncRequest {
            kind: Some(pb::sync_request::Kind::Hello(pb::Hello {
                certificate: self.cert.clone().into(),
            })),
        };
        let id = self
            .swarm
            .behaviour_mut()
            .sync
            .send_request(&peer, hello.encode_to_vec());
        self.pending.insert(id, Pending::Hello(peer));
    }

    fn respond(&mut self, channel: ResponseChannel<Vec<u8>>, response: pb::SyncResponse) {
        let _ = self
            .swarm
            .behaviour_mut()
            .sync
            .send_response(channel, response.encode_to_vec());
    }

    fn error_response(message: &str) -> pb::SyncResponse {
        pb::SyncResponse {
            kind: Some(pb::sync_response::Kind::Error(pb::Error {
                message: message.into(),
            })),
        }
    }

    fn on_request(&mut self, peer: PeerId, request: Vec<u8>, channel: ResponseChannel<Vec<u8>>) {
        let kind = match pb::SyncRequest::decode(request.as_slice())
            .ok()
            .and_then(|r| r.kind)
        {
            Some(k) => k,
            None => {
                self.respond(channel, Self::error_response("malformed request"));
                self.violation(peer, "malformed sync request");
                return;
            }
        };
        if let pb::sync_request::Kind::Hello(hello) = &kind {
            match driver::verify_certificate(&hello.certificate, &peer, self.membership.as_ref()) {
                Ok((org, expires)) => {
                    let reply = pb::SyncResponse {
                        kind: Some(pb::sync_response::Kind::Hello(pb::Hello {
                            certificate: self.cert.clone().into(),
                        })),
                    };
                    self.respond(channel, reply);
                    self.verified(peer, org, expires);
                }
                Err(reason) => {
                    self.respond(
                        channel,
                        Self::error_response(&format!("certificate refused: {reason}")),
                    );
                    self.refuse_certificate(peer, &reason);
                }
            }
            return;
        }
        let Some((org, _)) = self.peers.get(&peer).and_then(|p| p.org) else {
            self.respond(
                channel,
                Self::error_response("present a valid node certificate first"),
            );
            self.reject(peer, "request before a verified certificate");
            return;
        };
        if self.inflight.load(std::sync::atomic::Ordering::Relaxed) >= MAX_INFLIGHT_ANSWERS {
            self.respond(channel, Self::error_response("busy, retry later"));
            return;
        }
        self.inflight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (node, index, me, tx, inflight) = (
            self.node.clone(),
            self.index.clone(),
            self.me,
            self.work_tx.clone(),
            self.inflight.clone(),
        );
        self.tasks.spawn(async move {
            let (response, verdict) = driver::answer(&node, &index, me, peer, org, kind).await;
            inflight.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            let _ = tx
                .send(Work::Respond {
                    peer,
                    channel,
                    response: response.encode_to_vec(),
                    verdict,
                })
                .await;
        });
    }

    fn on_hello_response(&mut self, peer: PeerId, response: &[u8]) {
        match pb::SyncResponse::decode(response).ok().and_then(|r| r.kind) {
            Some(pb::sync_response::Kind::Hello(h)) => {
                match driver::verify_certificate(&h.certificate, &peer, self.membership.as_ref()) {
                    Ok((org, expires)) => self.verified(peer, org, expires),
                    Err(reason) => self.refuse_certificate(peer, &reason),
                }
            }
            Some(pb::sync_response::Kind::Error(e)) => {
                tracing::warn!(%peer, reason = %e.message, "peer refused this node's certificate");
            }
            _ => self.violation(peer, "malformed hello response"),
        }
    }

    fn verified(&mut self, peer: PeerId, org: OrgKey, expires: i64) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let first = p.org.is_none();
        p.org = Some((org, expires));
        if first {
            tracing::info!(%peer, org = %org.short(), "peer verified as a current member");
            self.relay_unverified.remove(&peer);
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
    }

    fn start_sync(&mut self, peer: PeerId) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let Some((org, _)) = p.org else { return };
        if p.syncing {
            p.resync = true;
            return;
        }
        p.syncing = true;
        let (node, index, commands, me, tx) = (
            self.node.clone(),
            self.index.clone(),
            self.commands.clone(),
            self.me,
            self.work_tx.clone(),
        );
        self.tasks.spawn(async move {
            let result = driver::drive(&node, &index, &commands, me, peer, org).await;
            let _ = tx.send(Work::SyncDone { peer, result }).await;
        });
    }

    fn sync_all(&mut self) {
        let verified: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.org.is_some())
            .map(|(k, _)| *k)
            .collect();
        for peer in verified {
            self.start_sync(peer);
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Request {
                peer,
                request,
                reply,
            } => {
                if self.peers.get(&peer).is_none_or(|p| p.org.is_none()) {
                    let _ = reply.send(Err("peer is not connected and verified".into()));
                    return;
                }
                let id = self.swarm.behaviour_mut().sync.send_request(&peer, request);
                self.pending.insert(id, Pending::Reply(reply));
            }
            Command::SyncAll => self.sync_all(),
        }
    }

    async fn on_work(&mut self, work: Work) {
        match work {
            Work::Respond {
                peer,
                channel,
                response,
                verdict,
            } => {
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_response(channel, response);
                if let Err(reason) = verdict {
                    self.violation(peer, &reason);
                }
            }
            Work::SyncDone { peer, result } => {
                let again = match self.peers.get_mut(&peer) {
                    Some(p) => {
                        p.syncing = false;
                        std::mem::take(&mut p.resync)
                    }
                    None => false,
                };
                match result {
                    Ok(stats) => {
                        if let Some(p) = self.peers.get_mut(&peer) {
                            p.last_sync = Some(now_ms());
                            p.last_stats = Some(stats);
                        }
                        self.received += stats.stored;
                        self.refused += stats.refused;
                        if stats.stored > 0 || stats.wanted > 0 {
                            tracing::info!(%peer, stored = stats.stored, refused = stats.refused, peer_lacks = stats.wanted, round_trips = stats.round_trips, bytes_sent = stats.bytes_sent, bytes_received = stats.bytes_received, "synced");
                        }
                        if stats.invalid > 0 {
                            self.violation(peer, "sent records that do not verify");
                        }
                        if stats.membership_stored {
                            self.membership_changed().await;
                        }
                    }
                    Err(e) => tracing::debug!(%peer, error = %e, "sync failed"),
                }
                self.resolve_announces(peer).await;
                if again {
                    self.start_sync(peer);
                }
            }
        }
    }

    async fn resolve_announces(&mut self, peer: PeerId) {
        let pending = self.announces.remove(&peer).unwrap_or_default();
        if pending.is_empty() {
            return;
        }
        let mut ix = self.index.lock().await;
        let _ = ix.refresh(self.node.store()).await;
        for (msg, id) in pending {
            let verdict = if ix.holds(&id) {
                gossipsub::MessageAcceptance::Accept
            } else {
                gossipsub::MessageAcceptance::Ignore
            };
            self.swarm
                .behaviour_mut()
                .gossipsub
                .report_message_validation_result(&msg, &peer, verdict);
        }
    }

    fn on_gossip(
        &mut self,
        source: PeerId,
        msg_id: gossipsub::MessageId,
        message: gossipsub::Message,
    ) {
        let verdict = |this: &mut Self, v| {
            this.swarm
                .behaviour_mut()
                .gossipsub
                .report_message_validation_result(&msg_id, &source, v);
        };
        if self.peers.get(&source).is_none_or(|p| p.org.is_none()) {
            verdict(self, gossipsub::MessageAcceptance::Reject);
            return self.violation(source, "gossip before a verified certificate");
        }
        let id = match pb::Announce::decode(message.data.as_slice())
            .ok()
            .and_then(|a| RecordId::from_slice(&a.id))
        {
            Some(id) => id,
            None => {
                verdict(self, gossipsub::MessageAcceptance::Reject);
                return self.violation(source, "malformed announcement");
            }
        };
        let held = self
            .index
            .try_lock()
            .map(|ix| ix.holds(&id))
            .unwrap_or(false);
        if held {
            return verdict(self, gossipsub::MessageAcceptance::Accept);
        }
        let waiting: usize = self.announces.values().map(Vec::len).sum();
        if waiting >= MAX_PENDING_ANNOUNCES {
            return verdict(self, gossipsub::MessageAcceptance::Ignore);
        }
        self.announces.entry(source).or_default().push((msg_id, id));
        self.start_sync(source);
    }

    /// Announces this organisation's new shareable records.
    async fn announce_new(&mut self) {
        let (upto, rows) = match self
            .node
            .store()
            .authored_since(&self.me, self.announced_upto)
            .await
        {
            Ok(r) => r,
            Err(e) => return tracing::warn!(error = %e, "cannot read new records"),
        };
        self.announced_upto = upto;
        let mut direct = false;
        for h in rows {
            if h.audience == 0 {
                continue;
            }
            if h.audience != 1 {
                // Members-only: not announced to the whole topic; sync with peers now.
                direct = true;
                continue;
            }
            let msg = pb::Announce {
                id: h.id.0.to_vec().into(),
                author: self.me.as_bytes().to_vec().into(),
                seq: h.seq,
            };
            match self
                .swarm
                .behaviour_mut()
                .gossipsub
                .publish(self.topic.clone(), msg.encode_to_vec())
            {
                Ok(_) => tracing::debug!(record = %h.id.short(), "announced"),
                Err(e) => {
                    tracing::debug!(record = %h.id.short(), error = %e, "not announced (peers will sync)")
                }
            }
        }
        if direct {
            self.sync_all();
        }
    }

    fn violation(&mut self, peer: PeerId, reason: &str) {
        tracing::warn!(%peer, reason, "protocol violation");
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        p.violations += 1;
        if p.violations >= MAX_VIOLATIONS {
            self.reject(peer, "too many protocol violations");
            self.blocked.remove(&peer);
            self.banned.insert(peer);
        }
    }

    /// A certificate naming a membership epoch this node has not seen may be valid: the
    /// peer is disconnected but not blocked, and tries again later.
    fn refuse_certificate(&mut self, peer: PeerId, reason: &str) {
        if reason.contains("not in this coalition's history") {
            tracing::info!(%peer, reason, "certificate names an unknown epoch; disconnecting");
            let _ = self.swarm.disconnect_peer_id(peer);
            self.peers.remove(&peer);
        } else {
            self.reject(peer, &format!("certificate refused: {reason}"));
        }
    }

    fn reject(&mut self, peer: PeerId, reason: &str) {
        tracing::warn!(%peer, reason, "disconnecting and blocking peer");
        self.swarm.behaviour_mut().blocked.block_peer(peer);
        self.swarm.behaviour_mut().gossipsub.blacklist_peer(&peer);
        self.blocked.insert(peer);
        let _ = self.swarm.disconnect_peer_id(peer);
        self.peers.remove(&peer);
    }

    async fn membership_changed(&mut self) {
        match self.node.membership().await {
            Ok(m) => self.membership = m,
            Err(e) => return tracing::warn!(error = %e, "cannot compute membership"),
        }
        // Members may have been added: give blocked peers another chance to present a
        // certificate; members removed or rotated away are cut off now.
        for peer in std::mem::take(&mut self.blocked) {
            self.swarm.behaviour_mut().blocked.unblock_peer(peer);
            self.swarm
                .behaviour_mut()
                .gossipsub
                .remove_blacklisted_peer(&peer);
        }
        let cut: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                p.org.is_some_and(|(org, _)| {
                    !self
                        .membership
                        .as_ref()
                        .is_some_and(|m| m.current().is_member(&org))
                })
            })
            .map(|(k, _)| *k)
            .collect();
        for peer in cut {
            self.reject(peer, "organisation is no longer a current member");
        }
    }

    async fn housekeeping(&mut self) {
        let now = now_ms();
        let late: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| match p.org {
                None => p.connected_at.elapsed() > self.config.hello_timeout,
                Some((_, expires)) => expires <= now,
            })
            .map(|(k, _)| *k)
            .collect();
        for peer in late {
            tracing::info!(%peer, "no valid certificate in time; disconnecting");
            let _ = self.swarm.disconnect_peer_id(peer);
            self.peers.remove(&peer);
        }
        // The relay server is not for strangers: a peer that reserved or opened a circuit
        // before it verified gets a short grace, not the whole hello timeout.
        let strangers: Vec<PeerId> = self
            .relay_unverified
            .iter()
            .filter(|(_, since)| since.elapsed() > RELAY_UNVERIFIED_GRACE)
            .map(|(k, _)| *k)
            .collect();
        for peer in strangers {
            self.relay_unverified.remove(&peer);
            if !self.is_verified(&peer) {
                tracing::info!(%peer, "used the relay without a valid certificate; disconnecting");
                let _ = self.swarm.disconnect_peer_id(peer);
                self.peers.remove(&peer);
            }
        }
        // Membership can also change through the CLI (approvals) or imports.
        if let Ok(m) = self.node.membership().await {
            let changed = m.as_ref().map(|m| m.current().epoch)
                != self.membership.as_ref().map(|m| m.current().epoch);
            if changed {
                self.membership_changed().await;
            }
        }
        if self
            .last_dial
            .is_none_or(|t| t.elapsed() > Duration::from_secs(3))
        {
            self.dial_bootstrap();
        }
        self.reserve();
        let per_author = match self.index.try_lock() {
            Ok(mut ix) => {
                let _ = ix.refresh(self.node.store()).await;
                Some(ix.per_author())
            }
            Err(_) => None,
        };
        let names: HashMap<OrgKey, String> = self
            .membership
            .as_ref()
            .map(|m| {
                m.current()
                    .members
                    .iter()
                    .map(|(k, v)| (*k, v.organisation.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let peers: Vec<PeerStatus> = self
            .peers
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
            .collect();
        let (epoch, coalition) = match &self.membership {
            Some(m) => (Some(hex::encode(m.current().epoch)), Some(m.name.clone())),
            None => (None, None),
        };
        let (received, refused) = (self.received, self.refused);
        self.status.send_modify(|s| {
            s.peers = peers;
            if let Some(pa) = per_author {
                s.records_per_author = pa.into_iter().map(|(k, n)| (k.to_hex(), n)).collect();
            }
            s.epoch = epoch;
            s.coalition = coalition;
            s.received = received;
            s.refused = refused;
        });
    }
}

/// An error with its sources, for logs.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}
