//! A dishonest member, and a gossiping stranger: a real libp2p peer with gossipsub on the
//! node's topic (`coalition/records/2`) and the `/coalition/sync/1` protocol. As a member
//! it presents a valid node certificate (issued by a member organisation for its peer id,
//! `coalition node cert --peer-id`), is verified like any member, and then misbehaves:
//! floods requests, opens streams whose answers it never reads, or floods gossip with
//! well-formed announcements of records nobody has, or with junk. As a stranger it
//! publishes on the topic without ever presenting a certificate, with a fresh peer id
//! each time the node closes the connection.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use coalition_proto::v1 as pb;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identity, noise, tcp, yamux, Multiaddr, PeerId, StreamProtocol, SwarmBuilder};
use prost::Message;

use super::{framed, request, Frame, PROTOCOL};

/// The node's gossip topic (docs/PROTOCOL.md).
pub const TOPIC: &str = "coalition/records/2";
/// Requests waiting for an answer at once, in a request flood.
const OUTSTANDING: usize = 64;
/// Streams whose answers are never read, at most, per connection.
const UNREAD: usize = 2000;
/// Gossip messages published per pump.
const GOSSIP_BATCH: usize = 100;

/// How the peer misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misdeed {
    /// As a member: requests (summaries, reconciliations, empty pushes) as fast as it
    /// gets answers, [`OUTSTANDING`] at a time.
    RequestFlood,
    /// As a member: summary requests on stream after stream, never reading an answer.
    NeverRead,
    /// As a member: gossip announcements, well formed, of records that do not exist.
    GossipRecords,
    /// As a member: gossip of junk, some of it over gossip's size limit.
    GossipJunk,
    /// As a stranger (no certificate, a fresh peer id each session): announcements.
    GossipStranger,
}

/// What the peer did and saw (counted as it went).
#[derive(Debug, Default)]
pub struct MemberTally {
    /// Connections the node accepted.
    pub connected: AtomicU64,
    /// Dials refused or failed.
    pub refused: AtomicU64,
    /// Times the node verified its certificate.
    pub verified: AtomicU64,
    /// Requests sent.
    pub requests: AtomicU64,
    /// Requests answered with content.
    pub answered: AtomicU64,
    /// Requests answered with an error (busy, too fast, no certificate…).
    pub turned_away: AtomicU64,
    /// Requests that failed (stream reset, timeout, connection closed).
    pub failed: AtomicU64,
    /// Gossip messages published.
    pub published: AtomicU64,
    /// Gossip publications refused locally (queues full, no subscribed peer).
    pub unpublished: AtomicU64,
}

/// A running misbehaving peer; stopped (and joined) by [`MemberAttack::stop`] or when
/// dropped.
pub struct MemberAttack {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// What it did so far.
    pub tally: Arc<MemberTally>,
}

impl MemberAttack {
    /// Starts misbehaving against `target` (`/ip4/…/tcp/…/p2p/…`) as `key`, presenting
    /// `cert` (a `node-cert/v1` record for `key`'s peer id). Without a certificate it is
    /// a stranger, with a fresh key each session.
    pub fn start(
        target: &str,
        key: identity::Keypair,
        cert: Option<Vec<u8>>,
        misdeed: Misdeed,
    ) -> Self {
        let target: Multiaddr = target.parse().expect("a multiaddress");
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(MemberTally::default());
        let (s, t) = (stop.clone(), tally.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                while !s.load(Ordering::Relaxed) {
                    let key = match cert {
                        Some(_) => key.clone(),
                        None => identity::Keypair::generate_ed25519(),
                    };
                    session(&target, key, cert.clone(), misdeed, &s, &t).await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
        });
        Self {
            stop,
            thread: Some(thread),
            tally,
        }
    }

    /// Stops it and waits for it.
    pub fn stop(mut self) -> Arc<MemberTally> {
        self.halt();
        self.tally.clone()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().ok();
        }
    }
}

impl Drop for MemberAttack {
    fn drop(&mut self) {
        self.halt();
    }
}

/// A codec that writes frames verbatim and reads answers only while `read` is set.
#[derive(Debug, Clone, Default)]
struct Moody {
    read: Arc<AtomicBool>,
}

impl request_response::Codec for Moody {
    type Protocol = StreamProtocol;
    type Request = Frame;
    type Response = Vec<u8>;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        _: &mut T,
    ) -> io::Result<Frame> {
        Err(io::Error::other("the adversary serves nothing"))
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        if !self.read.load(Ordering::Relaxed) {
            futures::future::pending::<()>().await;
        }
        let mut len = [0u8; 4];
        io.read_exact(&mut len).await?;
        let len = u32::from_be_bytes(len) as usize;
        if len > 8 << 20 {
            return Err(io::Error::other("answer over 8 MiB"));
        }
        let mut buf = vec![0; len];
        io.read_exact(&mut buf).await?;
        Ok(buf)
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Frame,
    ) -> io::Result<()> {
        io.write_all(&req.bytes).await?;
        io.flush().await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        _: &mut T,
        _: Vec<u8>,
    ) -> io::Result<()> {
        Err(io::Error::other("the adversary serves nothing"))
    }
}

#[derive(NetworkBehaviour)]
struct Peer {
    sync: request_response::Behaviour<Moody>,
    gossipsub: gossipsub::Behaviour,
}

/// A few pseudo-random bytes (splitmix64 over a counter: junk, not secrets).
fn junk(state: &mut u64, n: usize) -> Vec<u8> {
    (0..n)
        .map(|_| {
            *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = *state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) as u8
        })
        .collect()
}

/// The next request of a flood.
fn flood_request(i: u64, state: &mut u64) -> Frame {
    let kind = match i % 3 {
        0 => pb::sync_request::Kind::Summary(pb::Summary::default()),
        1 => pb::sync_request::Kind::Reconcile(pb::Reconcile {
            buckets: Vec::new(),
            ids: (0..64).map(|_| junk(state, 32).into()).collect(),
        }),
        _ => pb::sync_request::Kind::Push(pb::Push {
            records: Vec::new(),
        }),
    };
    framed(&request(kind))
}

fn build(key: identity::Keypair, read: Arc<AtomicBool>) -> libp2p::Swarm<Peer> {
    SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .expect("TCP transport")
        .with_behaviour(|key| {
            let gossip = gossipsub::ConfigBuilder::default()
                .max_transmit_size(64 << 10)
                .validation_mode(gossipsub::ValidationMode::Permissive)
                .heartbeat_interval(Duration::from_millis(500))
                .connection_handler_queue_len(100_000)
                .build()
                .expect("gossip config");
            Peer {
                sync: request_response::Behaviour::with_codec(
                    Moody { read },
                    [(PROTOCOL, ProtocolSupport::Outbound)],
                    request_response::Config::default()
                        .with_request_timeout(Duration::from_secs(120))
                        .with_max_concurrent_streams(UNREAD * 2),
                ),
                gossipsub: gossipsub::Behaviour::new(
                    MessageAuthenticity::Signed(key.clone()),
                    gossip,
                )
                .expect("gossipsub"),
            }
        })
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build()
}

/// One connection's worth of misbehaviour; ends when the node closes it or on `stop`.
async fn session(
    target: &Multiaddr,
    key: identity::Keypair,
    cert: Option<Vec<u8>>,
    misdeed: Misdeed,
    stop: &AtomicBool,
    tally: &MemberTally,
) {
    let read = Arc::new(AtomicBool::new(true));
    let mut swarm = build(key, read.clone());
    let topic = IdentTopic::new(TOPIC);
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&topic)
        .expect("subscribe");
    if swarm.dial(target.clone()).is_err() {
        tally.refused.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let mut state = Instant::now().elapsed().as_nanos() as u64 ^ 0x5eed;
    let mut node: Option<PeerId> = None;
    let mut go = false;
    let mut outstanding = 0usize;
    let mut sent = 0u64;
    let mut pump = tokio::time::interval(Duration::from_millis(5));
    let started = Instant::now();
    loop {
        tokio::select! {
            event = swarm.select_next_some() => match event {
                SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                    tally.connected.fetch_add(1, Ordering::Relaxed);
                    node = Some(peer_id);
                    match &cert {
                        Some(c) => {
                            let hello = request(pb::sync_request::Kind::Hello(pb::Hello {
                                certificate: c.clone().into(),
                                // Answers no `Leaves`, like a build from before them.
                                ..Default::default()
                            }));
                            swarm.behaviour_mut().sync.send_request(&peer_id, framed(&hello));
                        }
                        None => go = true,
                    }
                }
                SwarmEvent::OutgoingConnectionError { .. } => {
                    tally.refused.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                SwarmEvent::ConnectionClosed { num_established: 0, .. } => return,
                SwarmEvent::Behaviour(PeerEvent::Sync(request_response::Event::Message {
                    message: request_response::Message::Response { response, .. },
                    ..
                })) => {
                    let kind = pb::SyncResponse::decode(response.as_slice()).ok().and_then(|r| r.kind);
                    match kind {
                        Some(pb::sync_response::Kind::Hello(_)) if !go => {
                            tally.verified.fetch_add(1, Ordering::Relaxed);
                            go = true;
                            if misdeed == Misdeed::NeverRead {
                                read.store(false, Ordering::Relaxed);
                            }
                        }
                        Some(pb::sync_response::Kind::Error(_)) => {
                            tally.turned_away.fetch_add(1, Ordering::Relaxed);
                            outstanding = outstanding.saturating_sub(1);
                        }
                        _ => {
                            tally.answered.fetch_add(1, Ordering::Relaxed);
                            outstanding = outstanding.saturating_sub(1);
                        }
                    }
                }
                SwarmEvent::Behaviour(PeerEvent::Sync(request_response::Event::OutboundFailure { .. })) => {
                    tally.failed.fetch_add(1, Ordering::Relaxed);
                    outstanding = outstanding.saturating_sub(1);
                }
                _ => {}
            },
            _ = pump.tick() => {
                if stop.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(120) {
                    return;
                }
                let Some(peer) = node.filter(|_| go) else { continue };
                match misdeed {
                    Misdeed::RequestFlood | Misdeed::NeverRead => {
                        let cap = if misdeed == Misdeed::NeverRead { UNREAD } else { OUTSTANDING };
                        // A few a pump, so that the swarm's events are polled between.
                        for _ in 0..16 {
                            if outstanding >= cap {
                                break;
                            }
                            let frame = if misdeed == Misdeed::NeverRead {
                                framed(&request(pb::sync_request::Kind::Summary(pb::Summary::default())))
                            } else {
                                flood_request(sent, &mut state)
                            };
                            swarm.behaviour_mut().sync.send_request(&peer, frame);
                            tally.requests.fetch_add(1, Ordering::Relaxed);
                            outstanding += 1;
                            sent += 1;
                        }
                    }
                    Misdeed::GossipRecords | Misdeed::GossipJunk | Misdeed::GossipStranger => {
                        for _ in 0..GOSSIP_BATCH {
                            let data = if misdeed == Misdeed::GossipJunk {
                                let n = 16 + (sent as usize * 131) % 2000;
                                junk(&mut state, n)
                            } else {
                                pb::Announce {
                                    id: junk(&mut state, 32).into(),
                                    author: junk(&mut state, 32).into(),
                                    seq: sent,
                                }
                                .encode_to_vec()
                            };
                            sent += 1;
                            match swarm.behaviour_mut().gossipsub.publish(topic.clone(), data) {
                                Ok(_) => tally.published.fetch_add(1, Ordering::Relaxed),
                                Err(_) => tally.unpublished.fetch_add(1, Ordering::Relaxed),
                            };
                        }
                    }
                }
            }
        }
    }
}
