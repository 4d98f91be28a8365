//! The composed libp2p behaviour and the swarm built from it: gating first (connection
//! limits, the block list), then identify, ping, gossipsub (strict validation, manual
//! validation of every message, content-addressed message ids, a size limit), the
//! `/coalition/sync/1` request-response protocol with the length-limited codec, mDNS,
//! and relay client, relay server and DCUtR for nodes behind NAT.

use std::time::Duration;

use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    allow_block_list, connection_limits, dcutr, gossipsub, identify, identity, mdns, noise, ping,
    request_response, tcp, yamux, Swarm, SwarmBuilder,
};

use super::config::NetConfig;
use super::error::{setup, NetError};
use super::{admission, codec, gossip, relay};

/// Largest gossip message (an announcement is ~100 bytes).
pub const MAX_GOSSIP_BYTES: usize = 1024;
/// Connections in total, and per peer.
pub const MAX_CONNECTIONS: u32 = 128;
/// Connections per peer.
pub const MAX_CONNECTIONS_PER_PEER: u32 = 4;
/// Seconds between mDNS queries on the local network (`[network] mdns = true`).
pub(super) const MDNS_QUERY_SECS: u64 = 20;

/// The composed behaviour: gating first, then the protocols.
#[derive(NetworkBehaviour)]
pub(super) struct Behaviour {
    pub(super) admission: admission::Behaviour,
    pub(super) limits: connection_limits::Behaviour,
    pub(super) blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    pub(super) identify: identify::Behaviour,
    pub(super) ping: ping::Behaviour,
    pub(super) gossipsub: gossipsub::Behaviour,
    pub(super) sync: request_response::Behaviour<codec::Codec>,
    pub(super) mdns: Toggle<mdns::tokio::Behaviour>,
    pub(super) relay_client: libp2p::relay::client::Behaviour,
    pub(super) relay_server: Toggle<libp2p::relay::Behaviour>,
    pub(super) dcutr: dcutr::Behaviour,
}

/// Builds the swarm for `keypair` (not yet listening).
pub(super) fn build_swarm(
    keypair: identity::Keypair,
    config: &NetConfig,
) -> Result<Swarm<Behaviour>, NetError> {
    let relay_server = config.relay_server;
    let use_mdns = config.mdns;
    let admission = config.admission;
    let swarm = SwarmBuilder::with_existing_identity(keypair)
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
                    .message_id_fn(gossip::message_id)
                    .max_transmit_size(MAX_GOSSIP_BYTES)
                    .heartbeat_interval(Duration::from_millis(500))
                    .build()
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                let mut gossipsub = gossipsub::Behaviour::new(
                    gossipsub::MessageAuthenticity::Signed(key.clone()),
                    gossip_config,
                )
                .map_err(std::io::Error::other)?;
                // Peers hold gossip's application score from the certificate gate:
                // unverified ones far below the graylist threshold
                // (`event_loop::gate::UNVERIFIED_GOSSIP_SCORE`), members 0.
                let mut score = gossipsub::PeerScoreParams {
                    app_specific_weight: 1.0,
                    ..Default::default()
                };
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
                    admission: admission::Behaviour::new(admission),
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
                        // Asked again every 20 s instead of every 5 minutes: a query
                        // sent while the other node was still starting is not answered,
                        // and two nodes could then wait minutes to find each other.
                        let config = mdns::Config {
                            query_interval: Duration::from_secs(MDNS_QUERY_SECS),
                            ..mdns::Config::default()
                        };
                        Some(mdns::tokio::Behaviour::new(config, local)?)
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
    Ok(swarm)
}
