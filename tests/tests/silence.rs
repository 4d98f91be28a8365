//! A node says nothing that names its organisation or its coalition to a peer that has not
//! proved membership (issue 15, point 2), as a hostile state scanning addresses would try
//! it: a stranger (a plain libp2p client with a fresh key) completes Noise and Yamux with
//! a member's node, runs identify and gossipsub, asks for the sync protocol, and keeps
//! every byte it receives after Noise decrypts them. Not one of them may spell the
//! organisation's key or name, the coalition's name or its charter id. A member's node
//! that dials an address without a peer id does not introduce itself to whoever answers;
//! refusals a peer is told carry no internal detail; auditor bundles carry no node
//! certificates.

use std::io;
use std::pin::Pin;
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use coalition::net::codec::{Codec, PROTOCOL};
use coalition_proto::v1 as pb;
use coalition_tests::{bundle_records, eventually, found, held, toml_list, verify_offline, Org};
use futures::{AsyncRead, AsyncWrite, StreamExt};
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::Boxed;
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade};
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    gossipsub, identify, identity, noise, request_response, tcp, yamux, Multiaddr, PeerId, Swarm,
    SwarmBuilder, Transport,
};
use multistream_select::{dialer_select_proto, listener_select_proto, Version};
use prost::Message;

/// Every decrypted byte a connection delivered to the stranger.
type Heard = Arc<Mutex<Vec<u8>>>;

/// A Noise session that keeps a copy of what it reads.
struct Tap<S> {
    inner: S,
    heard: Heard,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tap<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = &read {
            this.heard.lock().unwrap().extend_from_slice(&buf[..*n]);
        }
        read
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tap<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// TCP, then Noise, then (tapped) Yamux: the stack `coalition run` speaks, with every
/// plaintext byte the stranger receives copied into `heard`.
fn tapped_transport(key: &identity::Keypair, heard: Heard) -> Boxed<(PeerId, StreamMuxerBox)> {
    let noise = noise::Config::new(key).expect("noise config");
    tcp::tokio::Transport::new(tcp::Config::default())
        .and_then(move |socket, endpoint| async move {
            let dialer = endpoint.is_dialer();
            let (peer, secure) = if dialer {
                let (p, io) = dialer_select_proto(socket, ["/noise"], Version::V1)
                    .await
                    .map_err(io::Error::other)?;
                noise.upgrade_outbound(io, p).await
            } else {
                let (p, io) = listener_select_proto(socket, ["/noise"])
                    .await
                    .map_err(io::Error::other)?;
                noise.upgrade_inbound(io, p).await
            }
            .map_err(io::Error::other)?;
            let tapped = Tap {
                inner: secure,
                heard,
            };
            let muxer = if dialer {
                let (p, io) = dialer_select_proto(tapped, ["/yamux/1.0.0"], Version::V1)
                    .await
                    .map_err(io::Error::other)?;
                yamux::Config::default().upgrade_outbound(io, p).await?
            } else {
                let (p, io) = listener_select_proto(tapped, ["/yamux/1.0.0"])
                    .await
                    .map_err(io::Error::other)?;
                yamux::Config::default().upgrade_inbound(io, p).await?
            };
            Ok::<_, io::Error>((peer, StreamMuxerBox::new(muxer)))
        })
        .boxed()
}

/// What a stranger runs: identify (it asks the node who it is), gossipsub (it hears the
/// node's subscriptions and subscribes to whatever it hears), and the sync protocol.
#[derive(NetworkBehaviour)]
struct Stranger {
    identify: identify::Behaviour,
    gossipsub: gossipsub::Behaviour,
    sync: request_response::Behaviour<Codec>,
}

fn stranger_swarm(heard: Heard) -> Swarm<Stranger> {
    SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_other_transport(|key| tapped_transport(key, heard))
        .expect("transport")
        .with_behaviour(|key| Stranger {
            identify: identify::Behaviour::new(identify::Config::new(
                "/ipfs/id/1.0.0".into(),
                key.public(),
            )),
            gossipsub: gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Signed(key.clone()),
                gossipsub::Config::default(),
            )
            .expect("gossipsub"),
            sync: request_response::Behaviour::with_codec(
                Codec::default(),
                [(PROTOCOL, request_response::ProtocolSupport::Full)],
                request_response::Config::default(),
            ),
        })
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

/// What a stranger observed on one connection.
#[derive(Debug, Default)]
struct Heard1 {
    connected: bool,
    identified: bool,
    topics: Vec<String>,
    /// The node's answer to a hello with a garbage certificate.
    refusal: Option<String>,
    /// Whether the node closed the connection (rather than the deadline passing).
    closed: bool,
}

/// How a stranger behaves once connected.
#[derive(Clone, Copy, PartialEq)]
enum Conduct {
    /// Waits until the node gives up on it.
    Waits,
    /// Presents a garbage certificate at once.
    PresentsGarbage,
}

/// Drives `swarm` until its first connection closes or `deadline`; tells `connected`
/// once the connection is up.
async fn listen_in(
    swarm: &mut Swarm<Stranger>,
    conduct: Conduct,
    connected: mpsc::Sender<()>,
    deadline: Instant,
) -> Heard1 {
    let mut h = Heard1::default();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(event) = tokio::time::timeout(left, swarm.select_next_some()).await else {
            return h;
        };
        match event {
            SwarmEvent::ConnectionEstablished { peer_id, .. } if !h.connected => {
                h.connected = true;
                connected.send(()).ok();
                if conduct == Conduct::PresentsGarbage {
                    let hello = pb::SyncRequest {
                        kind: Some(pb::sync_request::Kind::Hello(pb::Hello {
                            certificate: b"garbage".to_vec().into(),
                            ..Default::default()
                        })),
                    };
                    swarm
                        .behaviour_mut()
                        .sync
                        .send_request(&peer_id, hello.encode_to_vec());
                }
            }
            SwarmEvent::ConnectionClosed {
                num_established: 0, ..
            } => {
                h.closed = true;
                return h;
            }
            SwarmEvent::Behaviour(StrangerEvent::Identify(identify::Event::Received {
                ..
            })) => h.identified = true,
            SwarmEvent::Behaviour(StrangerEvent::Gossipsub(gossipsub::Event::Subscribed {
                topic,
                ..
            })) => {
                h.topics.push(topic.to_string());
                // Join whatever the node announces on, to receive what it publishes.
                let _ = swarm
                    .behaviour_mut()
                    .gossipsub
                    .subscribe(&gossipsub::IdentTopic::new(topic.as_str()));
            }
            SwarmEvent::Behaviour(StrangerEvent::Sync(request_response::Event::Message {
                message: request_response::Message::Response { response, .. },
                ..
            })) => {
                h.refusal = match pb::SyncResponse::decode(response.as_slice()) {
                    Ok(pb::SyncResponse {
                        kind: Some(pb::sync_response::Kind::Error(e)),
                    }) => Some(e.message),
                    other => Some(format!("not an error: {other:?}")),
                };
            }
            _ => {}
        }
    }
}

/// Runs `f` with a fresh stranger swarm (and what it hears) on its own thread and
/// runtime.
fn stranger_thread<T, Fut>(
    f: impl FnOnce(Heard, Swarm<Stranger>) -> Fut + Send + 'static,
) -> std::thread::JoinHandle<T>
where
    Fut: std::future::Future<Output = T>,
    T: Send + 'static,
{
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let heard = Heard::default();
        let swarm = stranger_swarm(heard.clone());
        rt.block_on(f(heard, swarm))
    })
}

/// A stranger that dials `addr` (without a peer id, as a scan would) and behaves as
/// `conduct` says, on a thread of its own. Returns what it heard and every byte.
fn stranger_dials(
    addr: &str,
    conduct: Conduct,
    connected: mpsc::Sender<()>,
) -> std::thread::JoinHandle<(Heard1, Vec<u8>)> {
    let addr: Multiaddr = addr.parse().expect("address");
    let addr: Multiaddr = addr
        .iter()
        .filter(|p| !matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
        .collect();
    stranger_thread(move |heard, mut swarm| async move {
        swarm
            .dial(DialOpts::unknown_peer_id().address(addr).build())
            .expect("dial");
        let deadline = Instant::now() + Duration::from_secs(30);
        let h = listen_in(&mut swarm, conduct, connected, deadline).await;
        let bytes = heard.lock().unwrap().clone();
        (h, bytes)
    })
}

/// What names an organisation and its coalition, as bytes that could appear on the wire.
fn markers(org: &Org, coalition: &str) -> Vec<(String, Vec<u8>)> {
    let show = org.run(["charter", "show"]);
    show.ok();
    let charter = show
        .all()
        .lines()
        .find_map(|l| l.strip_prefix("charter").map(|r| r.trim().to_string()))
        .expect("`charter show` prints the charter id");
    assert_eq!(charter.len(), 64, "charter id {charter:?}");
    let key = org.key().to_string();
    vec![
        (
            "organisation key (hex)".into(),
            key.as_bytes()[..16].to_vec(),
        ),
        (
            "organisation key (bytes)".into(),
            hex::decode(&key).unwrap(),
        ),
        ("organisation name".into(), org.name().as_bytes().to_vec()),
        ("coalition name".into(), coalition.as_bytes().to_vec()),
        ("charter id (hex)".into(), charter.as_bytes()[..16].to_vec()),
        (
            "charter id (bytes)".into(),
            hex::decode(&charter).unwrap()[..8].to_vec(),
        ),
    ]
}

/// The markers found in `bytes`.
fn spelled(bytes: &[u8], markers: &[(String, Vec<u8>)]) -> Vec<String> {
    markers
        .iter()
        .filter(|(_, m)| bytes.windows(m.len()).any(|w| w == m.as_slice()))
        .map(|(what, _)| what.clone())
        .collect()
}

/// Two organisations founding `coalition`, and the markers that would name the first
/// one or the coalition.
fn founded_pair(
    coalition: &str,
    first: (&str, &str),
    second: (&str, &str),
) -> (Org, Org, Vec<(String, Vec<u8>)>) {
    let (a, b) = (Org::init(first.0, first.1), Org::init(second.0, second.1));
    found(coalition, &[&a, &b], 2);
    let marks = markers(&a, coalition);
    (a, b, marks)
}

/// A stranger that waits on a member's node (while the node publishes a new record to
/// its member peer) and one that presents a garbage certificate: both complete Noise,
/// hear identify and gossip, and neither hears the organisation or the coalition named.
/// The member still syncs.
#[test]
fn a_stranger_that_connects_hears_nothing_that_names_the_organisation() {
    let (a, b, marks) = founded_pair(
        "Quiet Rivers Coalition",
        ("Silence Watch Nis", "RS"),
        ("Org B", "GE"),
    );
    let na = a.start_node("a", "");
    let _nb = b.start_node("b", &format!("bootstrap = {}", toml_list(&[&na.tcp])));
    let first = a.add_example("01-rs-belgrade-protest-force.json", "coalition");
    eventually("B synced with A", Duration::from_secs(30), || {
        held(&b).contains(&first)
    });

    let (tx, rx) = mpsc::channel();
    let waiting = stranger_dials(&na.tcp, Conduct::Waits, tx);
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the stranger connected");
    // Published while the stranger is connected: gossip goes to B, not to the stranger.
    let second = a.add_example("02-rs-novi-sad-student-detention.json", "coalition");
    let (heard, bytes) = waiting.join().expect("stranger thread");
    eventually("B got A's new record", Duration::from_secs(30), || {
        held(&b).contains(&second)
    });
    assert!(
        heard.closed,
        "the node kept an unverified stranger: {heard:?}"
    );
    assert!(
        heard.identified && !bytes.is_empty(),
        "the stranger heard nothing at all, so the test proves nothing: {heard:?}"
    );
    let named = spelled(&bytes, &marks);
    assert!(
        named.is_empty(),
        "a waiting stranger heard the {named:?} ({} bytes; topics {:?})",
        bytes.len(),
        heard.topics
    );

    let (tx, _rx) = mpsc::channel();
    let (heard, bytes) = stranger_dials(&na.tcp, Conduct::PresentsGarbage, tx)
        .join()
        .expect("stranger thread");
    assert!(
        heard.closed,
        "a stranger with a garbage certificate stayed: {heard:?}"
    );
    // The refusal goes out before the block closes the connection, but the close can
    // still overtake it; when it arrives it is the fixed phrase, and no byte carries
    // the decoder's message.
    if let Some(told) = heard.refusal.as_deref() {
        assert_eq!(told, "certificate refused: not a valid node certificate");
    }
    let internal = spelled(
        &bytes,
        &[
            ("decoder text".into(), b"Protobuf".to_vec()),
            ("verification text".into(), b"does not verify".to_vec()),
        ],
    );
    assert!(internal.is_empty(), "a stranger was told the {internal:?}");
    let named = spelled(&bytes, &marks);
    assert!(named.is_empty(), "a refused stranger heard the {named:?}");
}

/// A member's node that dials an address without a peer id reaches whoever answers
/// there: it must not introduce itself (its certificate names its organisation).
#[test]
fn a_node_does_not_introduce_itself_to_a_peer_it_did_not_name() {
    let (d, _e, marks) = founded_pair(
        "Quiet Hills Coalition",
        ("Silence Watch Kumanovo", "MK"),
        ("Org E", "AL"),
    );
    let (addr_tx, addr_rx) = mpsc::channel();
    let listener = stranger_thread(move |heard, mut swarm| async move {
        swarm
            .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .expect("listen");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, swarm.select_next_some()).await {
                Ok(SwarmEvent::NewListenAddr { address, .. }) => {
                    addr_tx.send(address.to_string()).ok();
                    break;
                }
                Ok(_) => {}
                Err(_) => panic!("the stranger did not listen"),
            }
        }
        let (tx, _rx) = mpsc::channel();
        let h = listen_in(&mut swarm, Conduct::Waits, tx, deadline).await;
        let bytes = heard.lock().unwrap().clone();
        (h, bytes)
    });
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the stranger's address");
    let nd = d.start_node("d", &format!("bootstrap = {}", toml_list(&[&addr])));
    let (heard, bytes) = listener.join().expect("stranger thread");
    assert!(
        heard.connected && heard.identified,
        "the node never reached the stranger: {heard:?}"
    );
    let named = spelled(&bytes, &marks);
    assert!(
        named.is_empty(),
        "the node introduced itself to a peer it did not name: the stranger heard the {named:?}"
    );
    drop(nd);
    let log = std::fs::read_to_string(d.path("node.log")).expect("node log");
    assert!(
        log.contains("dialled an address without a peer id"),
        "the operator is not told why the dial led nowhere:\n{log}"
    );
}

/// Node certificates say which peer id (so which address) an organisation runs: they
/// stay out of auditor bundles and analyst exports, stay in a full backup, and a bundle
/// that still holds them (made by an earlier version) verifies as before.
#[test]
fn node_certificates_stay_out_of_auditor_exports() {
    let (a, b) = (Org::init("Org A", "RS"), Org::init("Org B", "GE"));
    found("Export Coalition", &[&a, &b], 2);
    let peer = identity::Keypair::generate_ed25519().public().to_peer_id();
    let out = a.run(["node", "cert", "--peer-id", &peer.to_string()]);
    out.ok();
    let cert = out.line();
    a.add_example("01-rs-belgrade-protest-force.json", "coalition");
    let schemas = |path: &std::path::Path| -> Vec<String> {
        bundle_records(path)
            .iter()
            .map(|r| coalition::record::verify(r).expect("a valid record").schema)
            .collect()
    };
    let auditor = a.export("bundle", "auditor.bundle", &[]);
    let in_auditor = schemas(&auditor);
    assert!(
        in_auditor.iter().any(|s| s == "finding/v1"),
        "{in_auditor:?}"
    );
    assert!(
        !in_auditor.iter().any(|s| s == "node-cert/v1"),
        "an auditor bundle carries a node certificate: {in_auditor:?}"
    );
    let for_b = a.export("bundle", "for-b.bundle", &["--for", b.key()]);
    assert!(!schemas(&for_b).iter().any(|s| s == "node-cert/v1"));
    let jsonl = a.export("jsonl", "analyst.jsonl", &[]);
    let exported = coalition_tests::parse_jsonl(&std::fs::read_to_string(&jsonl).unwrap());
    assert!(!exported.is_empty());
    assert!(
        !exported
            .iter()
            .any(|r| r["schema"] == "node-cert/v1" || r["id"] == cert.as_str()),
        "an analyst export carries a node certificate"
    );
    assert!(
        a.all_records().iter().any(|r| r["id"] == cert.as_str()),
        "a full backup keeps the node certificate"
    );

    // A bundle from before: the auditor bundle plus the certificate.
    let backup = a.export("bundle", "backup.bundle", &["--include-private"]);
    let mut old = bundle_records(&auditor);
    old.extend(
        bundle_records(&backup)
            .into_iter()
            .filter(|r| coalition::record::verify(r).unwrap().schema == "node-cert/v1"),
    );
    let old_path = a.path("old-auditor.bundle");
    coalition_tests::write_bundle(&old_path, &old);
    let (out, report) = verify_offline(&old_path);
    out.ok();
    assert_eq!(report["valid"].as_u64(), Some(old.len() as u64), "{report}");
    assert_eq!(report["failures"], serde_json::json!([]), "{report}");
}
