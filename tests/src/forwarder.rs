//! A controllable TCP forwarder for partition tests: it listens on a loopback port and
//! copies bytes both ways to a target address (a node's TCP port), so that nodes which
//! only know each other through forwarders can be cut apart and joined again.
//!
//! [`Forwarder::cut`] closes every connection it carries (both sockets are shut down, so
//! each node sees its connection end at once) and refuses new ones (accepted, then
//! closed before a byte is forwarded); [`Forwarder::heal`] lets new connections through
//! again. A node's bootstrap entry for a peer reached through a forwarder is
//! [`Forwarder::addr_for`] the peer: the forwarder's port with the peer's `/p2p` id, so
//! the Noise handshake still authenticates the real peer.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// One forwarder: a loopback listener and the connections it carries.
#[derive(Debug)]
pub struct Forwarder {
    local: SocketAddr,
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    cut: AtomicBool,
    stopped: AtomicBool,
    /// Both sockets of every live forwarded connection.
    live: Mutex<Vec<(TcpStream, TcpStream)>>,
    /// Connections forwarded since the start.
    forwarded: AtomicU64,
    /// Connections refused while cut.
    refused: AtomicU64,
    /// Live connections closed by a cut.
    dropped: AtomicU64,
}

impl Forwarder {
    /// Starts forwarding `127.0.0.1:<a free port>` to `target`.
    pub fn start(target: SocketAddr) -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a forwarder port");
        let local = listener.local_addr().expect("forwarder address");
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        thread::spawn(move || accept_loop(listener, target, s));
        Forwarder { local, shared }
    }

    /// Starts forwarding to the node whose printed TCP address is `tcp`
    /// (`/ip4/127.0.0.1/tcp/PORT/p2p/PEER`).
    pub fn to_node(tcp: &str) -> Forwarder {
        Forwarder::start(socket_of(tcp))
    }

    /// The loopback address it listens on.
    pub fn local(&self) -> SocketAddr {
        self.local
    }

    /// The multiaddress that reaches `peer` through this forwarder
    /// (`/ip4/127.0.0.1/tcp/PORT/p2p/PEER`).
    pub fn addr_for(&self, peer: &str) -> String {
        format!("/ip4/127.0.0.1/tcp/{}/p2p/{peer}", self.local.port())
    }

    /// Drops every connection it carries and refuses new ones until [`Forwarder::heal`].
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
        self.shared.close_all();
    }

    /// Lets new connections through again.
    pub fn heal(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
    }

    /// Whether it is cut.
    pub fn is_cut(&self) -> bool {
        self.shared.cut.load(Ordering::SeqCst)
    }

    /// Connections forwarded since the start.
    pub fn forwarded(&self) -> u64 {
        self.shared.forwarded.load(Ordering::SeqCst)
    }

    /// Connections refused while cut.
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::SeqCst)
    }

    /// Live connections a cut closed.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::SeqCst)
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.shared.close_all();
        // Wake the accept loop so it sees `stopped` and ends.
        TcpStream::connect(self.local).ok();
    }
}

impl Shared {
    fn close_all(&self) {
        let mut live = self.live.lock().expect("forwarder lock");
        for (a, b) in live.drain(..) {
            // A connection that ended by itself was shut down already.
            if a.shutdown(Shutdown::Both).is_ok() {
                self.dropped.fetch_add(1, Ordering::SeqCst);
            }
            b.shutdown(Shutdown::Both).ok();
        }
    }
}

/// The socket address of a printed `/ip4/A.B.C.D/tcp/PORT[/p2p/PEER]` multiaddress.
pub fn socket_of(multiaddr: &str) -> SocketAddr {
    let parts: Vec<&str> = multiaddr.split('/').collect();
    match parts.as_slice() {
        ["", "ip4", ip, "tcp", port, ..] => format!("{ip}:{port}")
            .parse()
            .unwrap_or_else(|e| panic!("{multiaddr}: {e}")),
        _ => panic!("{multiaddr} is not an /ip4/…/tcp/… address"),
    }
}

fn accept_loop(listener: TcpListener, target: SocketAddr, shared: Arc<Shared>) {
    for conn in listener.incoming() {
        if shared.stopped.load(Ordering::SeqCst) {
            return;
        }
        let Ok(inbound) = conn else { continue };
        if shared.cut.load(Ordering::SeqCst) {
            shared.refused.fetch_add(1, Ordering::SeqCst);
            inbound.shutdown(Shutdown::Both).ok();
            continue;
        }
        let Ok(outbound) = TcpStream::connect_timeout(&target, Duration::from_secs(2)) else {
            inbound.shutdown(Shutdown::Both).ok();
            continue;
        };
        inbound.set_nodelay(true).ok();
        outbound.set_nodelay(true).ok();
        let (Ok(in2), Ok(out2), Ok(in3), Ok(out3)) = (
            inbound.try_clone(),
            outbound.try_clone(),
            inbound.try_clone(),
            outbound.try_clone(),
        ) else {
            continue;
        };
        {
            let mut live = shared.live.lock().expect("forwarder lock");
            // A cut between the check above and here must not let this one through.
            if shared.cut.load(Ordering::SeqCst) {
                inbound.shutdown(Shutdown::Both).ok();
                outbound.shutdown(Shutdown::Both).ok();
                shared.refused.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            live.push((in3, out3));
        }
        shared.forwarded.fetch_add(1, Ordering::SeqCst);
        thread::spawn(move || pump(inbound, outbound));
        thread::spawn(move || pump(out2, in2));
    }
}

/// Copies `from` to `to` until either side ends, then shuts both down.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    from.shutdown(Shutdown::Both).ok();
    to.shutdown(Shutdown::Both).ok();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on loopback; returns its address.
    fn echo() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        thread::spawn(move || {
            for c in l.incoming().flatten() {
                thread::spawn(move || {
                    let mut w = c.try_clone().unwrap();
                    let mut r = c;
                    std::io::copy(&mut r, &mut w).ok();
                });
            }
        });
        addr
    }

    fn round_trip(s: &mut TcpStream) -> std::io::Result<()> {
        s.write_all(b"ping")?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf)?;
        assert_eq!(&buf, b"ping");
        Ok(())
    }

    #[test]
    fn a_cut_drops_live_connections_refuses_new_ones_and_a_heal_lets_them_through() {
        let f = Forwarder::start(echo());
        let mut live = TcpStream::connect(f.local()).unwrap();
        live.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        round_trip(&mut live).unwrap();
        f.cut();
        assert!(
            round_trip(&mut live).is_err(),
            "a cut connection still carried bytes"
        );
        let mut refused = TcpStream::connect(f.local()).unwrap();
        refused
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        assert!(
            round_trip(&mut refused).is_err(),
            "a cut link let a new connection through"
        );
        f.heal();
        let mut again = TcpStream::connect(f.local()).unwrap();
        again
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        round_trip(&mut again).unwrap();
        assert_eq!((f.forwarded(), f.refused(), f.dropped()), (2, 1, 1));
    }

    #[test]
    fn socket_of_reads_a_printed_tcp_address() {
        assert_eq!(
            socket_of("/ip4/127.0.0.1/tcp/4001/p2p/12D3KooW"),
            "127.0.0.1:4001".parse().unwrap()
        );
    }
}
