//! A dial flood: many dialers at once, each a fresh peer id from one of many loopback
//! addresses (127.0.0.2 and up: Linux answers for all of 127.0.0.0/8), each doing the
//! whole TCP + multistream-select + Noise + yamux handshake by hand, holding the
//! connection until the node closes it, then dialling again. A quarter of them never
//! finish: they send garbage instead of a Noise handshake.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use futures::AsyncWriteExt;
use libp2p::core::muxing::StreamMuxerExt;
use libp2p::core::upgrade::OutboundConnectionUpgrade;
use libp2p::multiaddr::Protocol;
use libp2p::{identity, noise, yamux, Multiaddr};
use multistream_select::{dialer_select_proto, Version};

/// Source addresses the dialers spread over.
const SOURCES: u32 = 200;
/// The longest a handshake may take before the dialer gives up.
const HANDSHAKE: Duration = Duration::from_secs(15);

/// What the dialers saw (counted as they went).
#[derive(Debug, Default)]
pub struct DialTally {
    /// Dials started.
    pub dials: AtomicU64,
    /// Dials whose every handshake completed (the node's admission let them in).
    pub established: AtomicU64,
    /// Dials refused or cut before or during the handshake.
    pub refused: AtomicU64,
    /// Garbage sent instead of a handshake.
    pub garbage: AtomicU64,
}

/// A running dial flood; stopped (and joined) by [`DialFlood::stop`] or when dropped.
pub struct DialFlood {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// What it did so far.
    pub tally: Arc<DialTally>,
}

impl DialFlood {
    /// Starts `dialers` concurrent dialers against `target` (`/ip4/…/tcp/…/p2p/…`).
    pub fn start(target: &str, dialers: usize) -> Self {
        let addr = socket_addr(&target.parse().expect("a multiaddress"));
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(DialTally::default());
        let (s, t) = (stop.clone(), tally.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let tasks: Vec<_> = (0..dialers)
                    .map(|i| {
                        let source = Ipv4Addr::from(
                            u32::from(Ipv4Addr::new(127, 0, 0, 2)) + (i as u32 % SOURCES),
                        );
                        tokio::spawn(dialer(addr, source, i % 4 == 3, s.clone(), t.clone()))
                    })
                    .collect();
                for task in tasks {
                    task.await.ok();
                }
            });
        });
        Self {
            stop,
            thread: Some(thread),
            tally,
        }
    }

    /// Stops every dialer and waits for them.
    pub fn stop(mut self) -> Arc<DialTally> {
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

impl Drop for DialFlood {
    fn drop(&mut self) {
        self.halt();
    }
}

/// The IPv4 address and TCP port of `addr`.
fn socket_addr(addr: &Multiaddr) -> SocketAddr {
    let mut ip = None;
    let mut port = None;
    for p in addr.iter() {
        match p {
            Protocol::Ip4(a) => ip = Some(a),
            Protocol::Tcp(p) => port = Some(p),
            _ => {}
        }
    }
    SocketAddr::V4(SocketAddrV4::new(
        ip.expect("an /ip4 address"),
        port.expect("a /tcp port"),
    ))
}

/// One dialer: dials, holds, dials again, until `stop`.
async fn dialer(
    addr: SocketAddr,
    source: Ipv4Addr,
    garbage: bool,
    stop: Arc<AtomicBool>,
    tally: Arc<DialTally>,
) {
    while !stop.load(Ordering::Relaxed) {
        tally.dials.fetch_add(1, Ordering::Relaxed);
        let outcome = tokio::time::timeout(HANDSHAKE, dial(addr, source, garbage, &stop)).await;
        match outcome {
            Ok(Ok(Some(mut muxer))) => {
                tally.established.fetch_add(1, Ordering::Relaxed);
                hold(&mut muxer, &stop).await;
            }
            Ok(Ok(None)) => {
                tally.garbage.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                tally.refused.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Dial again soon, without spinning a core of the machine the test runs on.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

type Muxer = yamux::Muxer<
    multistream_select::Negotiated<
        noise::Output<multistream_select::Negotiated<libp2p::tcp::tokio::TcpStream>>,
    >,
>;

/// One dial from `source`: the established yamux connection, `None` when this dialer
/// sent garbage instead of a handshake (and waited for the node to hang up).
async fn dial(
    addr: SocketAddr,
    source: Ipv4Addr,
    garbage: bool,
    stop: &AtomicBool,
) -> Result<Option<Muxer>, Box<dyn std::error::Error + Send + Sync>> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::V4(SocketAddrV4::new(source, 0)))?;
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut stream = libp2p::tcp::tokio::TcpStream(stream);
    if garbage {
        let junk: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        stream.write_all(&junk).await.ok();
        stream.flush().await.ok();
        // Wait (bounded by the caller) for the node to hang up.
        let mut buf = [0u8; 1024];
        while !stop.load(Ordering::Relaxed) {
            match futures::AsyncReadExt::read(&mut stream, &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        return Ok(None);
    }
    let (_, stream) = dialer_select_proto(stream, ["/noise"], Version::V1).await?;
    let key = identity::Keypair::generate_ed25519();
    let (_peer, secure) = noise::Config::new(&key)?
        .upgrade_outbound(stream, "/noise")
        .await?;
    let (_, secure) = dialer_select_proto(secure, ["/yamux/1.0.0"], Version::V1).await?;
    let muxer = yamux::Config::default()
        .upgrade_outbound(secure, "/yamux/1.0.0")
        .await?;
    Ok(Some(muxer))
}

/// Holds an established connection (accepting and dropping whatever streams the node
/// opens) until the node closes it or `stop`.
async fn hold(muxer: &mut Muxer, stop: &AtomicBool) {
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        let closed = futures::future::poll_fn(|cx| {
            if let std::task::Poll::Ready(r) = muxer.poll_inbound_unpin(cx) {
                return std::task::Poll::Ready(r.is_err());
            }
            match muxer.poll_unpin(cx) {
                std::task::Poll::Ready(Err(_)) => std::task::Poll::Ready(true),
                std::task::Poll::Ready(Ok(_)) => std::task::Poll::Ready(false),
                std::task::Poll::Pending => std::task::Poll::Pending,
            }
        });
        tokio::select! {
            closed = closed => if closed { return },
            _ = tick.tick() => if stop.load(Ordering::Relaxed) { return },
        }
    }
}
