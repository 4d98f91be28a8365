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
//!
//! Layout, each module using only those listed before it: [`codec`], [`sync`],
//! [`relay`], `error`, `config`, `status`, [`index`], `cert`, `gossip`, `client`, `peers`,
//! `driver` (the initiating side of a sync), `answer` (the answering side), `poller`
//! (the task that reads the store), `behaviour` (the swarm), and `event_loop`, the task
//! that owns the swarm and routes between them. This file only starts them.

mod admission;
mod answer;
mod behaviour;
mod cert;
mod client;
pub mod codec;
mod config;
mod driver;
mod error;
mod event_loop;
mod gossip;
pub mod index;
mod lan;
mod peers;
mod poller;
pub mod relay;
mod status;
pub mod sync;
#[cfg(test)]
pub(crate) mod test_support;

use std::sync::Arc;
use std::time::Duration;

use libp2p::{identity, PeerId};
use tokio::sync::{mpsc, watch};

use crate::identity::Identity;
use crate::node::Node;

pub use admission::AdmissionLimits;
pub use behaviour::{MAX_CONNECTIONS, MAX_CONNECTIONS_PER_PEER, MAX_GOSSIP_BYTES};
pub use client::Command;
pub use config::{NetConfig, RequestLimits};
pub use error::{CertError, NetError, SyncError, Violation};
pub use peers::MAX_VIOLATIONS;
pub use relay::AddrError;
pub use status::{NetStatus, PeerStatus, SyncStats};

/// Commands waiting for the event loop.
const COMMAND_QUEUE: usize = 256;

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
    let salt = match node.store().meta("node_salt").await? {
        Some(s) => s,
        None => {
            use rand::RngCore;
            let mut b = [0u8; 16];
            rand::rngs::OsRng.fill_bytes(&mut b);
            let s = hex::encode(b);
            node.store().set_meta("node_salt", &s).await?;
            s
        }
    };
    let mut secret = *identity.node_secret(salt.as_bytes());
    identity::Keypair::ed25519_from_bytes(&mut secret).map_err(error::setup)
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
    let cert = cert::ensure_certificate(&node, &identity, &peer_id).await?;
    let topic = gossip::topic();
    let mut swarm = behaviour::build_swarm(keypair, &config)?;
    for addr in &config.listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| error::setup(format!("cannot listen on {addr}: {e}")))?;
    }
    for addr in &config.external_addresses {
        swarm.add_external_address(addr.clone());
    }
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&topic)
        .map_err(error::setup)?;
    let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE);
    let (status, status_rx) = status::Publisher::new(peer_id.to_string());
    let event_loop = event_loop::EventLoop::new(event_loop::Parts {
        swarm,
        node,
        me: identity.key(),
        cert,
        topic,
        config,
        commands: commands.clone(),
        command_rx,
        status,
    })
    .await?;
    let handle = tokio::spawn(event_loop.run(shutdown));
    Ok((
        Network {
            peer_id,
            commands,
            status: status_rx,
        },
        handle,
    ))
}
