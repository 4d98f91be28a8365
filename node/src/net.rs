//! The coalition network: libp2p over TCP and QUIC (Noise, Yamux), identify and ping,
//! the `/coalition/sync/1` request-response protocol for anti-entropy, gossipsub
//! announcements of new records, mDNS on a LAN, relay and DCUtR for nodes behind NAT
//! ([`relay`]).
//!
//! Promises: a peer that has not presented a valid node certificate for a current member
//! gets nothing and is listened to for nothing, and is disconnected after
//! [`NetConfig::hello_timeout`]; a record goes only to peers its audience includes;
//! every received record is verified (signature, schema, author's membership under its
//! epoch) before it is stored; peers that break the rules are disconnected and blocked.
//! See `docs/PROTOCOL.md`.

pub mod codec;
mod driver;
mod event_loop;
pub mod index;
pub mod relay;
pub mod sync;

use std::sync::Arc;
use std::time::Duration;

use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    allow_block_list, connection_limits, dcutr, gossipsub, identify, identity, mdns, noise, ping,
    request_response, tcp, yamux, Multiaddr, PeerId, SwarmBuilder,
};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::identity::Identity;
use crate::node::{Node, NodeError};

pub use driver::SyncStats;
pub use event_loop::Command;

/// Largest gossip message (an announcement is ~100 bytes).
pub const MAX_GOSSIP_BYTES: usize = 1024;
/// Connections in total, and per peer.
pub const MAX_CONNECTIONS: u32 = 128;
/// Connections per peer.
pub const MAX_CONNECTIONS_PER_PEER: u32 = 4;
/// Protocol violations after which a peer is disconnected and blocked.
pub const MAX_VIOLATIONS: u32 = 3;

/// Network errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// Node-level failure.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// libp2p setup failure.
    #[error("network setup: {0}")]
    Setup(String),
}

fn setup(e: impl std::fmt::Display) -> NetError {
    NetError::Setup(e.to_string())
}

/// Network settings (the `[network]` section of the config, resolved).
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Peers to dial at start and whenever disconnected (direct, or circuit addresses
    /// `<relay>/p2p/RELAYID/p2p-circuit/p2p/TARGETID`).
    pub bootstrap: Vec<Multiaddr>,
    /// Relays (members with `relay_server`) to hold a reservation with, so that others
    /// reach this node at `<relay>/p2p-circuit/p2p/<peer id>`; each ends with `/p2p/ID`.
    pub relays: Vec<Multiaddr>,
    /// Addresses at which others reach this node directly (announced; a relay server
    /// gives them to the nodes that reserve with it). A relay server without any
    /// announces its listen addresses.
    pub external_addresses: Vec<Multiaddr>,
    /// Discover peers on the LAN with mDNS.
    pub mdns: bool,
    /// Serve as a relay for nodes behind NAT.
    pub relay_server: bool,
    /// Anti-entropy interval.
    pub sync_interval: Duration,
    /// How long a peer may stay connected without a verified certificate.
    pub hello_timeout: Duration,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            listen: vec![
                "/ip4/0.0.0.0/tcp/7400".parse().expect("valid"),
                "/ip4/0.0.0.0/udp/7400/quic-v1".parse().expect("valid"),
            ],
            bootstrap: Vec::new(),
            relays: Vec::new(),
            external_addresses: Vec::new(),
            mdns: false,
            relay_server: false,
            sync_interval: Duration::from_secs(30),
            hello_timeout: Duration::from_secs(10),
        }
    }
}

/// A connected peer as `coalition peers` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PeerStatus {
    /// libp2p peer id.
    pub peer_id: String,
    /// Organisation key, once its certificate verified.
    pub organisation_key: Option<String>,
    /// Organisation name from the charter.
    pub organisation: Option<String>,
    /// Remote address (of a direct connection when there is one; for a relayed
    /// connection the circuit through the relay).
    pub address: String,
    /// Whether every connection to the peer goes through a relay (no direct one, e.g.
    /// before or without a DCUtR hole punch).
    pub relayed: bool,
    /// Last completed sync, ms since the Unix epoch.
    pub last_sync_ms: Option<i64>,
    /// Figures of the last completed sync this node initiated with the peer.
    pub last_sync: Option<SyncStats>,
}

/// What `coalition status` shows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NetStatus {
    /// This node's peer id.
    pub peer_id: String,
    /// Addresses it listens on.
    pub listen_addrs: Vec<String>,
    /// Addresses at which others reach it through a relay that holds a reservation for
    /// it (`<relay>/p2p-circuit/p2p/<peer id>`; usable as their bootstrap entries).
    pub relayed_addrs: Vec<String>,
    /// Connected peers.
    pub peers: Vec<PeerStatus>,
    /// Records held per author key.
    pub records_per_author: std::collections::BTreeMap<String, u64>,
    /// Current membership epoch.
    pub epoch: Option<String>,
    /// Coalition name.
    pub coalition: Option<String>,
    /// Records received from peers and stored since start.
    pub received: u64,
    /// Records refused from peers since start.
    pub refused: u64,
}

/// The composed behaviour: gating first, then the protocols.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    limits: connection_limits::Behaviour,
    blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    gossipsub: gossipsub::Behaviour,
    sync: request_response::Behaviour<codec::Codec>,
    mdns: Toggle<mdns::tokio::Behaviour>,
    relay_client: libp2p::relay::client::Behaviour,
    relay_server: Toggle<libp2p::relay::Behaviour>,
    dcutr: dcutr::Behaviour,
}

/// A handle on the running network.
#[derive(Debug, Clone)]
pub struct Network {
    /// This node's peer id.
    pub peer_id: PeerId,
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<NetStatus>,
}

impl Network {
    /// The latest status snapshot.
    pub fn status(&self) -> NetStatus {
        self.status.borrow().clone()
    }

    /// Waits until the status satisfies `f` or `timeout` passes.
    pub async fn wait_for(&mut self, timeout: Duration, f: impl Fn(&NetStatus) -> bool) -> bool {
        tokio::time::timeout(timeout, self.status.wait_for(|s| f(s)))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Waits until the status changes; false once the network has stopped.
    pub async fn changed(&mut self) -> bool {
        self.status.changed().await.is_ok()
    }

    /// Asks the event loop to sync with every verified peer now.
    pub async fn sync_now(&self) {
        let _ = self.commands.send(Command::SyncAll).await;
    }
}

/// Derives the node's libp2p key from the organisation key and the home's salt.
pub async fn node_keypair(node: &Node, identity: &Identity) -> Result<identity::Keypair, NetError> {
    let salt = match node
        .store()
        .meta("node_salt")
        .await
        .map_err(NodeError::from)?
    {
        Some(s) => s,
        None => {
            use rand::RngCore;
            let mut b = [0u8; 16];
            rand::rngs::OsRng.fill_bytes(&mut b);
            let s = hex::encode(b);
            node.store()
                .set_meta("node_salt", &s)
                .await
                .map_err(NodeError::from)?;
            s
        }
    };
    let mut secret = *identity.node_secret(salt.as_bytes());
    identity::Keypair::ed25519_from_bytes(&mut secret).map_err(setup)
}

/// Starts the network: listens, dials bootstrap peers, issues this node's certificate if
/// needed, and runs the event loop until `shutdown` turns true.
pub async fn start(
    node: Arc<Node>,
    identity: Arc<Identity>,
    config: NetConfig,
    shutdown: watch::Receiver<bool>,
) -> Result<(Network, tokio::task::JoinHandle<()>), NetError> {
    let keypair = node_keypair(&node, &identity).await?;
    let peer_id = keypair.public().to_peer_id();
    let cert = driver::ensure_certificate(&node, &identity, &peer_id).await?;
    let coalition_topic = match node.membership().await.map_err(NetError::Node)? {
        Some(m) => format!("coalition/{}/records/1", hex::encode(&m.charter_id[..8])),
        None => "coalition/none/records/1".into(),
    };
    let relay_server = config.relay_server;
    let use_mdns = config.mdns;
    let mut swarm = SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(setup)?
        .with_quic()
        // `/dns4`, `/dns6` and `/dns` bootstrap addresses (compose service names, a
        // coalition member's host name) resolve through the system resolver and hosts file.
        .with_dns()
        .map_err(setup)?
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(setup)?
        .with_behaviour(
            |key, relay_client| -> Result<Behaviour, Box<dyn std::error::Error + Send + Sync>> {
                let local = key.public().to_peer_id();
                let gossip_config = gossipsub::ConfigBuilder::default()
                    .validation_mode(gossipsub::ValidationMode::Strict)
                    .validate_messages()
                    .message_id_fn(driver::gossip_message_id)
                    .max_transmit_size(MAX_GOSSIP_BYTES)
                    .heartbeat_interval(Duration::from_millis(500))
                    .build()
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                let mut gossipsub = gossipsub::Behaviour::new(
                    gossipsub::MessageAuthenticity::Signed(key.clone()),
                    gossip_config,
                )
                .map_err(std::io::Error::other)?;
                let mut score = gossipsub::PeerScoreParams::default();
                // Test coalitions run many nodes on one loopback address.
                score
                    .ip_colocation_factor_whitelist
                    .insert("127.0.0.1".parse().expect("ip"));
                gossipsub
                    .with_peer_score(score, gossipsub::PeerScoreThresholds::default())
                    .map_err(std::io::Error::other)?;
                let limits = connection_limits::ConnectionLimits::default()
                    .with_max_pending_incoming(Some(32))
                    .with_max_pending_outgoing(Some(32))
                    .with_max_established(Some(MAX_CONNECTIONS))
                    .with_max_established_per_peer(Some(MAX_CONNECTIONS_PER_PEER));
                Ok(Behaviour {
                    limits: connection_limits::Behaviour::new(limits),
                    blocked: allow_block_list::Behaviour::default(),
                    identify: identify::Behaviour::new(
                        identify::Config::new("/coalition/1".into(), key.public())
                            .with_agent_version(format!("coalition/{}", env!("CARGO_PKG_VERSION"))),
                    ),
                    ping: ping::Behaviour::new(
                        ping::Config::new().with_interval(Duration::from_secs(15)),
                    ),
                    gossipsub,
                    sync: request_response::Behaviour::with_codec(
                        codec::Codec::default(),
                        [(codec::PROTOCOL, request_response::ProtocolSupport::Full)],
                        request_response::Config::default()
                            .with_request_timeout(Duration::from_secs(60))
                            .with_max_concurrent_streams(64),
                    ),
                    mdns: Toggle::from(if use_mdns {
                        Some(mdns::tokio::Behaviour::new(mdns::Config::default(), local)?)
                    } else {
                        None
                    }),
                    relay_client,
                    relay_server: Toggle::from(
                        relay_server
                            .then(|| libp2p::relay::Behaviour::new(local, relay::server_config())),
                    ),
                    dcutr: dcutr::Behaviour::new(local),
                })
            },
        )
        .map_err(setup)?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build();
    for addr in &config.listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| setup(format!("cannot listen on {addr}: {e}")))?;
    }
    for addr in &config.external_addresses {
        swarm.add_external_address(addr.clone());
    }
    let topic = gossipsub::IdentTopic::new(coalition_topic);
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&topic)
        .map_err(setup)?;
    let (commands, command_rx) = mpsc::channel(256);
    let (status_tx, status) = watch::channel(NetStatus {
        peer_id: peer_id.to_string(),
        ..Default::default()
    });
    let event_loop = event_loop::EventLoop::new(
        swarm,
        node,
        identity.key(),
        cert,
        topic,
        config,
        commands.clone(),
        command_rx,
        status_tx,
    )
    .await?;
    let handle = tokio::spawn(event_loop.run(shutdown));
    Ok((
        Network {
            peer_id,
            commands,
            status,
        },
        handle,
    ))
}
