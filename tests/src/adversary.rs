//! An adversarial peer: a real libp2p client (TCP, Noise, yamux) that speaks the node's
//! `/coalition/sync/1` framing (a 4-byte big-endian length, then a protobuf
//! `SyncRequest`; see docs/PROTOCOL.md) and misbehaves on purpose. It never presents a
//! certificate; it floods requests, sends oversized, malformed and padded frames, frames
//! that claim megabytes and stall after a few bytes, pushes governance records signed by
//! throwaway keys, never reads a response, and comes back with a fresh peer id from the
//! same IP address each time a connection ends. Some of its connections only sit there,
//! holding a slot until the node's certificate gate closes them.
//!
//! It is a peer, not a mock of the node: whatever the node under attack does to it is
//! what it would do to a stranger on the Internet.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use coalition::identity::Identity;
use coalition::record::{self, Audience, Draft};
use coalition_proto::v1 as pb;
use futures::{AsyncRead, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{noise, tcp, yamux, Multiaddr, StreamProtocol, SwarmBuilder};
use prost::Message;

pub mod dials;
pub mod measure;
pub mod member;

/// The node's sync protocol.
const PROTOCOL: StreamProtocol = StreamProtocol::new("/coalition/sync/1");
/// The node's largest request frame (4 MiB).
pub const MAX_REQUEST: usize = 4 << 20;
/// How long one session (one fresh peer id) lasts at most.
const SESSION: Duration = Duration::from_secs(20);

/// What the adversary did (counted as it went).
#[derive(Debug, Default)]
pub struct Tally {
    /// Sessions started, each with a fresh peer id.
    pub sessions: AtomicU64,
    /// Connections the node accepted.
    pub connected: AtomicU64,
    /// Dials the node refused or that failed.
    pub refused: AtomicU64,
    /// Frames sent.
    pub frames: AtomicU64,
    /// Bytes sent in frames.
    pub bytes: AtomicU64,
}

/// A running attack; stopped (and joined) by [`Attack::stop`] or when dropped.
pub struct Attack {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// What it did so far.
    pub tally: Arc<Tally>,
}

impl Attack {
    /// Starts `flooders` sessions that send everything they have and `squatters` that
    /// connect and stay silent, each looping with fresh peer ids, against `target`
    /// (`/ip4/…/tcp/…/p2p/PEER`, as a node prints it).
    pub fn start(target: &str, flooders: usize, squatters: usize) -> Self {
        Self::sending(target, flooders, squatters, barrage)
    }

    /// Like [`Attack::start`], the flooders sending what `frames` makes instead of the
    /// barrage (e.g. [`edge_frames`]).
    pub fn sending(
        target: &str,
        flooders: usize,
        squatters: usize,
        frames: fn() -> Vec<Frame>,
    ) -> Self {
        let target: Multiaddr = target.parse().expect("a multiaddress");
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let threads = (0..flooders + squatters)
            .map(|i| {
                let (target, stop, tally) = (target.clone(), stop.clone(), tally.clone());
                let flood = (i < flooders).then_some(frames);
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime");
                    rt.block_on(async {
                        while !stop.load(Ordering::Relaxed) {
                            tally.sessions.fetch_add(1, Ordering::Relaxed);
                            if !session(&target, flood, &stop, &tally).await {
                                // Refused: try again soon, as a persistent attacker would,
                                // without spinning a core of the machine the test runs on.
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                    });
                })
            })
            .collect();
        Self {
            stop,
            threads,
            tally,
        }
    }

    /// Stops every session and waits for them.
    pub fn stop(mut self) -> Arc<Tally> {
        self.halt();
        self.tally.clone()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            t.join().ok();
        }
    }
}

impl Drop for Attack {
    fn drop(&mut self) {
        self.halt();
    }
}

/// One request as the adversary writes it: raw bytes (framing included, honest or not),
/// and whether to stall after writing them instead of finishing the request.
#[derive(Debug, Clone)]
pub struct Frame {
    pub(crate) bytes: Vec<u8>,
    pub(crate) stall: bool,
}

/// A codec that writes frames verbatim and never reads a response.
#[derive(Debug, Clone, Copy, Default)]
struct Rude;

impl request_response::Codec for Rude {
    type Protocol = StreamProtocol;
    type Request = Frame;
    type Response = ();

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
        _: &mut T,
    ) -> io::Result<()> {
        // Never reads what the node answers: its writes back up until it gives up.
        futures::future::pending().await
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Frame,
    ) -> io::Result<()> {
        io.write_all(&req.bytes).await?;
        io.flush().await?;
        if req.stall {
            futures::future::pending::<()>().await;
        }
        Ok(())
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        _: &mut T,
        _: (),
    ) -> io::Result<()> {
        Err(io::Error::other("the adversary serves nothing"))
    }
}

/// `payload` framed as the node expects.
pub(crate) fn framed(payload: &[u8]) -> Frame {
    let mut bytes = (payload.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(payload);
    Frame {
        bytes,
        stall: false,
    }
}

pub(crate) fn request(kind: pb::sync_request::Kind) -> Vec<u8> {
    pb::SyncRequest { kind: Some(kind) }.encode_to_vec()
}

/// A record signed by a throwaway key whose body is padded with `padding` bytes of an
/// unknown field: it verifies, and is not canonical.
pub fn padded_record(identity: &Identity, padding: usize) -> Vec<u8> {
    let good = record::sign(identity, 1, None, draft("finding/v1"));
    pad(identity, &good.bytes, padding)
}

/// `bytes` (a record signed by `identity`) re-signed with `padding` bytes of unknown
/// field 99 appended to its body.
pub fn pad(identity: &Identity, bytes: &[u8], padding: usize) -> Vec<u8> {
    let env = pb::SignedRecord::decode(bytes).expect("a record");
    let mut body = env.body.to_vec();
    prost::encoding::bytes::encode(99, &vec![0u8; padding], &mut body);
    let mut message = record::SIGNING_PREFIX.to_vec();
    message.extend_from_slice(&body);
    pb::SignedRecord {
        body: body.into(),
        signature: identity.sign(&message).to_vec().into(),
    }
    .encode_to_vec()
}

fn draft(schema: &str) -> Draft {
    Draft {
        schema: schema.into(),
        audience: Audience::Coalition,
        supersedes: None,
        epoch: None,
        payload: b"{}".to_vec(),
        created_at_ms: 1_700_000_000_000,
    }
}

/// Everything a flooding session sends once connected.
fn barrage() -> Vec<Frame> {
    let mut out = Vec::new();
    // Claims 64 MiB: over the limit.
    let mut oversized = ((64u32) << 20).to_be_bytes().to_vec();
    oversized.extend_from_slice(&[0xab; 1024]);
    out.push(Frame {
        bytes: oversized,
        stall: false,
    });
    // Claims just under the limit, sends 1 KiB and stalls (holding the stream open).
    for _ in 0..8 {
        let mut slow = ((MAX_REQUEST - 1) as u32).to_be_bytes().to_vec();
        slow.extend_from_slice(&[0xcd; 1024]);
        out.push(Frame {
            bytes: slow,
            stall: true,
        });
    }
    // Malformed protobuf.
    out.push(framed(&[0xff; 4096]));
    out.push(framed(b""));
    // Governance records from throwaway keys, and a padded record.
    let governance: Vec<_> = ["charter/v1", "proposal/v1", "approval/v1"]
        .iter()
        .flat_map(|s| (0..20).map(move |_| record::sign(&Identity::generate(), 1, None, draft(s))))
        .map(|r| r.bytes.into())
        .collect();
    out.push(framed(&request(pb::sync_request::Kind::Push(pb::Push {
        records: governance,
    }))));
    out.push(framed(&request(pb::sync_request::Kind::Push(pb::Push {
        records: vec![padded_record(&Identity::generate(), 900 << 10).into()],
    }))));
    // A flood of ordinary requests, none of them preceded by a certificate.
    for _ in 0..100 {
        out.push(framed(&request(pb::sync_request::Kind::Summary(
            pb::Summary::default(),
        ))));
        out.push(framed(&request(pb::sync_request::Kind::Reconcile(
            pb::Reconcile {
                buckets: Vec::new(),
                ids: (0..64).map(|i| vec![i as u8; 32].into()).collect(),
            },
        ))));
    }
    // A hello with a certificate that is not one.
    out.push(framed(&request(pb::sync_request::Kind::Hello(pb::Hello {
        certificate: vec![7; 512].into(),
        ..Default::default()
    }))));
    out
}

/// Frames at the edges of the codec and garbage: exactly one byte over the limit (all of
/// it sent), exactly at the limit (junk, so it frames and fails to decode), and frames
/// of random bytes, some with honest lengths, some with lengths that are random too.
pub fn edge_frames() -> Vec<Frame> {
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(7, |d| d.as_nanos() as u64);
    let mut junk = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                // splitmix64: junk, not secrets.
                seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = seed;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                (z ^ (z >> 31)) as u8
            })
            .collect()
    };
    let mut out = Vec::new();
    // max + 1, every byte of it sent.
    let mut over = ((MAX_REQUEST + 1) as u32).to_be_bytes().to_vec();
    over.extend(junk(MAX_REQUEST + 1));
    out.push(Frame {
        bytes: over,
        stall: false,
    });
    // Exactly max: within the limit, garbage inside.
    out.push(framed(&junk(MAX_REQUEST)));
    for i in 0..64 {
        let n = 1 + (i * 997) % 8192;
        if i % 2 == 0 {
            out.push(framed(&junk(n)));
        } else {
            // No honest length at all: the first four random bytes are the length.
            out.push(Frame {
                bytes: junk(n),
                stall: false,
            });
        }
    }
    out
}

/// One session: a fresh peer id dials `target`; a flooder sends the frames `flood`
/// makes, a squatter sits silent; it ends when the node closes the connection or after
/// [`SESSION`]. False when the node refused the connection.
async fn session(
    target: &Multiaddr,
    flood: Option<fn() -> Vec<Frame>>,
    stop: &AtomicBool,
    tally: &Tally,
) -> bool {
    let mut swarm = SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .expect("TCP transport")
        .with_behaviour(|_| {
            request_response::Behaviour::with_codec(
                Rude,
                [(PROTOCOL, ProtocolSupport::Outbound)],
                request_response::Config::default()
                    .with_request_timeout(SESSION)
                    .with_max_concurrent_streams(1024),
            )
        })
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(SESSION))
        .build();
    if swarm.dial(target.clone()).is_err() {
        tally.refused.fetch_add(1, Ordering::Relaxed);
        return false;
    }
    let deadline = Instant::now() + SESSION;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            event = swarm.select_next_some() => match event {
                SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                    tally.connected.fetch_add(1, Ordering::Relaxed);
                    if let Some(frames) = flood {
                        for frame in frames() {
                            tally.frames.fetch_add(1, Ordering::Relaxed);
                            tally.bytes.fetch_add(frame.bytes.len() as u64, Ordering::Relaxed);
                            swarm.behaviour_mut().send_request(&peer_id, frame);
                        }
                    }
                }
                SwarmEvent::OutgoingConnectionError { .. } => {
                    tally.refused.fetch_add(1, Ordering::Relaxed);
                    return false;
                }
                SwarmEvent::ConnectionClosed { num_established: 0, .. } => return true,
                _ => {}
            },
            _ = tick.tick() => {
                if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                    return true;
                }
            }
        }
    }
}
