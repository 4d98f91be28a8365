//! The event loop: the one task that owns the swarm, and a router. It takes swarm events,
//! commands from the `Network` handle and sync runs, results of its own
//! tasks, and what the store poller found, and hands each to the part that decides: the
//! certificate checks (`cert`), the peer table (`peers`), gossip (`gossip`), the two sides
//! of a sync (`driver`, `answer`, in tasks of their own), the status (`status`). It never
//! waits on the store; the poller (`poller`) and the tasks read it.
//!
//! Its handlers live beside it: `gate` (hellos, certificates, violations, blocks,
//! membership changes), `gossiping` (announcements in and out), `relaying` (dialling,
//! relay reservations).
//!
//! Cancel safety: every branch of the `select!` in [`EventLoop::run`] is a channel
//! receive, a timer tick, a swarm poll or a task join, each cancel safe; handlers run to
//! completion between polls and do not await. All channels are bounded.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coalition_proto::v1 as pb;
use futures::StreamExt;
use libp2p::gossipsub::{self, MessageAcceptance, MessageId};
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::SwarmEvent;
use libp2p::{mdns, PeerId, Swarm};
use prost::Message;
use tokio::sync::{mpsc, oneshot, watch, Mutex, Notify};
use tokio::task::JoinSet;

use crate::charter::Membership;
use crate::identity::OrgKey;
use crate::node::{Node, NodeError};
use crate::now_ms;

use super::answer::{self, error_response};
use super::behaviour::{Behaviour, BehaviourEvent};
use super::client::Command;
use super::config::NetConfig;
use super::driver;
use super::error::{error_chain, CertError, NetError, SyncError, Violation};
use super::gossip;
use super::index::Index;
use super::lan::LanPeers;
use super::peers::PeerTable;
use super::poller::{Polled, Poller, POLLED_QUEUE};
use super::relay::{self, Reservations};
use super::status::{member_names, Publisher, SyncStats};

mod gate;
mod gossiping;
mod relaying;

/// Results of the event loop's tasks.
enum Work {
    /// An answer ready to send; `verdict` says whether the request broke the rules.
    Respond {
        peer: PeerId,
        channel: ResponseChannel<Vec<u8>>,
        response: Vec<u8>,
        verdict: Result<(), Violation>,
    },
    /// A sync this node initiated ended.
    SyncDone {
        peer: PeerId,
        result: Result<SyncStats, SyncError>,
    },
    /// Announcements from `peer` resolved after a sync with it.
    Resolved {
        peer: PeerId,
        verdicts: Vec<(MessageId, MessageAcceptance)>,
    },
}

/// What an outbound request's response is for.
enum Pending {
    Reply(oneshot::Sender<Result<Vec<u8>, SyncError>>),
    Hello(PeerId),
}

/// Concurrent answers to inbound requests.
const MAX_INFLIGHT_ANSWERS: usize = 32;
/// Results of tasks waiting for the event loop.
const WORK_QUEUE: usize = 256;
/// Between dials of disconnected bootstrap peers and relays.
const REDIAL_AFTER: Duration = Duration::from_secs(3);
/// How long running tasks may take to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What [`EventLoop::new`] is built from.
pub(super) struct Parts {
    pub(super) swarm: Swarm<Behaviour>,
    pub(super) node: Arc<Node>,
    pub(super) me: OrgKey,
    pub(super) cert: Vec<u8>,
    pub(super) topic: gossipsub::IdentTopic,
    pub(super) config: NetConfig,
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) command_rx: mpsc::Receiver<Command>,
    pub(super) status: Publisher,
}

pub(super) struct EventLoop {
    swarm: Swarm<Behaviour>,
    node: Arc<Node>,
    me: OrgKey,
    cert: Vec<u8>,
    topic: gossipsub::IdentTopic,
    config: NetConfig,
    commands: mpsc::Sender<Command>,
    command_rx: mpsc::Receiver<Command>,
    status: Publisher,
    index: Arc<Mutex<Index>>,
    peers: PeerTable,
    pending: HashMap<OutboundRequestId, Pending>,
    work_tx: mpsc::Sender<Work>,
    work_rx: mpsc::Receiver<Work>,
    /// The store poller, until `run` starts it.
    poller: Option<Poller>,
    polled_rx: mpsc::Receiver<Polled>,
    /// Asks the poller to fold the membership now.
    refold: Arc<Notify>,
    membership: Option<Membership>,
    announces: gossip::Pending,
    /// Peers whose certificate was refused, rejected once the refusal is sent.
    refusals: HashMap<PeerId, CertError>,
    tasks: JoinSet<()>,
    inflight: Arc<AtomicUsize>,
    last_dial: Option<Instant>,
    /// Reservations with the relays of `[network] relays`.
    reservations: Reservations,
    /// Peers mDNS found on the local network, dialled until connected or expired.
    lan: LanPeers,
    /// A relay server without `external_addresses` announces its listen addresses.
    announce_listen: bool,
}

impl EventLoop {
    pub(super) async fn new(parts: Parts) -> Result<Self, NetError> {
        let node = parts.node;
        let membership = node.membership().await?;
        let announced_upto = node.store().max_rowid().await.map_err(NodeError::from)?;
        let mut index = Index::default();
        index.refresh(node.store()).await?;
        let index = Arc::new(Mutex::new(index));
        let (work_tx, work_rx) = mpsc::channel(WORK_QUEUE);
        let (polled_tx, polled_rx) = mpsc::channel(POLLED_QUEUE);
        let refold = Arc::new(Notify::new());
        let poller = Poller {
            node: node.clone(),
            index: index.clone(),
            me: parts.me,
            announced_upto,
            epoch: membership.as_ref().map(|m| m.current().epoch),
            refold: refold.clone(),
            tx: polled_tx,
        };
        let reservations = Reservations::new(&parts.config.relays, Instant::now());
        let announce_listen =
            parts.config.relay_server && parts.config.external_addresses.is_empty();
        if announce_listen {
            tracing::warn!("relay server without [network] external_addresses: announcing its listen addresses to the nodes that reserve with it");
        }
        Ok(Self {
            swarm: parts.swarm,
            node,
            me: parts.me,
            cert: parts.cert,
            topic: parts.topic,
            config: parts.config,
            commands: parts.commands,
            command_rx: parts.command_rx,
            status: parts.status,
            index,
            peers: PeerTable::default(),
            pending: HashMap::new(),
            work_tx,
            work_rx,
            poller: Some(poller),
            polled_rx,
            refold,
            membership,
            announces: gossip::Pending::default(),
            refusals: HashMap::new(),
            tasks: JoinSet::new(),
            inflight: Arc::default(),
            last_dial: None,
            reservations,
            lan: LanPeers::default(),
            announce_listen,
        })
    }

    /// Runs until `shutdown` turns true, then lets running tasks finish (bounded).
    pub(super) async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        if let Some(poller) = self.poller.take() {
            self.tasks.spawn(poller.run(shutdown.clone()));
        }
        self.dial_bootstrap();
        let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
        let mut anti_entropy = tokio::time::interval(self.config.sync_interval);
        anti_entropy.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                event = self.swarm.select_next_some() => self.on_swarm(event),
                Some(cmd) = self.command_rx.recv() => self.on_command(cmd),
                Some(work) = self.work_rx.recv() => self.on_work(work),
                Some(polled) = self.polled_rx.recv() => self.on_polled(polled),
                _ = housekeeping.tick() => self.housekeeping(),
                _ = anti_entropy.tick() => self.sync_all(),
                Some(_) = self.tasks.join_next(), if !self.tasks.is_empty() => {}
            }
        }
        tracing::info!("network shutting down; letting running syncs finish");
        // A poller waiting to send gives up once nobody receives.
        self.polled_rx.close();
        let drain = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
            self.tasks.abort_all();
        }
    }

    fn on_swarm(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } if relay::is_circuit(&address) => {
                tracing::debug!(%address, "relay listener address");
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                if self.announce_listen {
                    self.swarm.add_external_address(address.clone());
                }
                self.status.listening(&address);
            }
            SwarmEvent::ExpiredListenAddr { address, .. } if !relay::is_circuit(&address) => {
                tracing::info!(%address, "no longer listening");
                if self.announce_listen {
                    self.swarm.remove_external_address(&address);
                }
                self.status.not_listening(&address);
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => self.on_listener_closed(listener_id, reason),
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
                let now = Instant::now();
                if self
                    .peers
                    .connected(peer_id, connection_id, address, relayed, now)
                {
                    self.gate_opened(peer_id, &endpoint);
                } else {
                    self.gate_joined(peer_id, &endpoint);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } if num_established > 0 => self.peers.connection_closed(&peer_id, &connection_id),
            SwarmEvent::ConnectionClosed { peer_id, .. } => {
                self.peers.disconnected(&peer_id);
                self.refusals.remove(&peer_id);
                for (msg, _) in self.announces.take(&peer_id) {
                    self.report(&msg, &peer_id, MessageAcceptance::Ignore);
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
                    if !self.lan.discovered(peer, addr) {
                        tracing::debug!(%peer, "LAN peer not remembered: too many on the LAN");
                    }
                }
                self.dial_lan();
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Expired(gone))) => {
                for (peer, addr) in gone {
                    self.lan.expired(&peer, &addr);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(e)) => match e.result {
                Ok(_) => tracing::info!(peer = %e.remote_peer_id, "hole punch: direct connection"),
                Err(err) => {
                    tracing::info!(peer = %e.remote_peer_id, error = %error_chain(&err), "hole punch failed; staying relayed")
                }
            },
            SwarmEvent::Behaviour(BehaviourEvent::RelayClient(e)) => self.on_relay_client(e),
            SwarmEvent::Behaviour(BehaviourEvent::RelayServer(e)) => {
                // The relay server serves members: a peer that uses it before its
                // certificate verified has RELAY_UNVERIFIED_GRACE to present one.
                if let Some(peer) = relay::server_event(e, |p| self.peers.is_verified(p)) {
                    self.peers.relay_used_by(peer, Instant::now());
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(peer = ?peer_id, error = %error_chain(&error), "outgoing connection failed");
            }
            _ => {}
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
                    let _ = tx.send(Err(error.into()));
                }
                Some(Pending::Hello(_)) => {
                    tracing::debug!(%peer, %error, "hello failed");
                    // Sent on a connection that closed while another remains (a relayed
                    // one replaced by a direct one): send it again.
                    if self.peers.needs_hello(&peer)
                        && matches!(error, request_response::OutboundFailure::ConnectionClosed)
                    {
                        self.send_hello(peer);
                    }
                }
                None => {}
            },
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "inbound sync failure");
                self.refused(peer);
            }
            request_response::Event::ResponseSent { peer, .. } => self.refused(peer),
        }
    }

    pub(super) fn respond(
        &mut self,
        channel: ResponseChannel<Vec<u8>>,
        response: pb::SyncResponse,
    ) {
        let _ = self
            .swarm
            .behaviour_mut()
            .sync
            .send_response(channel, response.encode_to_vec());
    }

    fn on_request(&mut self, peer: PeerId, request: Vec<u8>, channel: ResponseChannel<Vec<u8>>) {
        let Some(kind) = pb::SyncRequest::decode(request.as_slice())
            .ok()
            .and_then(|r| r.kind)
        else {
            self.respond(channel, error_response("malformed request"));
            return self.violation(peer, Violation::MalformedRequest);
        };
        if let pb::sync_request::Kind::Hello(hello) = &kind {
            return self.on_hello(peer, hello, channel);
        }
        let Some(org) = self.peers.org(&peer) else {
            self.respond(
                channel,
                error_response("present a valid node certificate first"),
            );
            return self.reject(peer, "request before a verified certificate");
        };
        if self.inflight.load(Ordering::Relaxed) >= MAX_INFLIGHT_ANSWERS {
            return self.respond(channel, error_response("busy, retry later"));
        }
        if let Err(why) = self
            .peers
            .admit_request(&peer, Instant::now(), &self.config.requests)
        {
            return self.respond(channel, error_response(why.to_string()));
        }
        self.inflight.fetch_add(1, Ordering::Relaxed);
        let (node, index, me, tx, inflight) = (
            self.node.clone(),
            self.index.clone(),
            self.me,
            self.work_tx.clone(),
            self.inflight.clone(),
        );
        self.tasks.spawn(async move {
            let (response, verdict) = answer::answer(&node, &index, me, peer, org, kind).await;
            inflight.fetch_sub(1, Ordering::Relaxed);
            let response = response.encode_to_vec();
            let _ = tx
                .send(Work::Respond {
                    peer,
                    channel,
                    response,
                    verdict,
                })
                .await;
        });
    }

    fn start_sync(&mut self, peer: PeerId) {
        let Some(with) = self.peers.start_sync(&peer) else {
            return;
        };
        let (node, index, commands, me, tx) = (
            self.node.clone(),
            self.index.clone(),
            self.commands.clone(),
            self.me,
            self.work_tx.clone(),
        );
        self.tasks.spawn(async move {
            let started = Instant::now();
            let result = driver::drive(&node, &index, &commands, me, peer, with).await;
            crate::metrics::sync_finished(result.as_ref().ok(), started.elapsed());
            let vouched = result.as_ref().map_or(0, |s| s.vouched);
            let _ = tx.send(Work::SyncDone { peer, result }).await;
            // Records taken on a checkpoint are served only once their signatures verify.
            if vouched > 0 {
                match node.check_unchecked().await {
                    Ok(c) => {
                        if !c.removed_ids.is_empty() {
                            index.lock().await.forget(&c.removed_ids);
                        }
                        tracing::info!(%peer, verified = c.verified, removed = c.removed, "signatures of records taken on checkpoints verified")
                    }
                    Err(e) => tracing::warn!(%peer, error = %e, "signatures of records taken on checkpoints not verified; retried after the next sync or at restart"),
                }
            }
        });
    }

    fn sync_all(&mut self) {
        for peer in self.peers.verified() {
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
                if !self.peers.is_verified(&peer) {
                    let _ = reply.send(Err(SyncError::NotVerified));
                    return;
                }
                let id = self.swarm.behaviour_mut().sync.send_request(&peer, request);
                self.pending.insert(id, Pending::Reply(reply));
            }
            Command::SyncAll => self.sync_all(),
        }
    }

    fn on_work(&mut self, work: Work) {
        match work {
            Work::Respond {
                peer,
                channel,
                response,
                verdict,
            } => {
                self.peers.answered(&peer);
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_response(channel, response);
                if let Err(v) = verdict {
                    self.violation(peer, v);
                }
            }
            Work::SyncDone { peer, result } => self.sync_done(peer, result),
            Work::Resolved { peer, verdicts } => {
                for (msg, verdict) in verdicts {
                    self.report(&msg, &peer, verdict);
                }
            }
        }
    }

    fn sync_done(&mut self, peer: PeerId, result: Result<SyncStats, SyncError>) {
        let again = self
            .peers
            .sync_done(&peer, result.as_ref().ok().copied(), now_ms());
        match result {
            Ok(stats) => {
                self.status.synced(&stats);
                if stats.stored > 0 || stats.wanted > 0 {
                    tracing::info!(%peer, stored = stats.stored, vouched = stats.vouched, refused = stats.refused, peer_lacks = stats.wanted, round_trips = stats.round_trips, bytes_sent = stats.bytes_sent, bytes_received = stats.bytes_received, "synced");
                }
                if stats.invalid > 0 {
                    self.violation(peer, Violation::InvalidRecords);
                }
                if stats.membership_stored {
                    self.refold.notify_one();
                }
            }
            Err(e) => tracing::debug!(%peer, error = %e, "sync failed"),
        }
        self.resolve_announces(peer);
        if again {
            self.start_sync(peer);
        }
    }

    fn on_polled(&mut self, polled: Polled) {
        match polled {
            Polled::Own(out) => self.announce(out),
            Polled::Membership(m) => self.membership_changed(m),
            Polled::PerAuthor(per_author) => self.status.per_author(per_author),
        }
    }

    fn housekeeping(&mut self) {
        self.close_gate(Instant::now());
        if self.last_dial.is_none_or(|t| t.elapsed() > REDIAL_AFTER) {
            self.dial_bootstrap();
        }
        self.dial_lan();
        self.reserve();
        let names = member_names(self.membership.as_ref());
        self.status
            .publish(self.peers.statuses(&names), self.membership.as_ref());
    }
}
