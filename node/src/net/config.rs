//! The network settings, resolved from the `[network]` section of `config.toml`. The
//! config file holds plain strings and numbers; this module checks the addresses (a relay
//! entry must end in the relay's peer id, a circuit address must name its relay, …) and
//! says what to write instead when one is wrong.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use libp2p::Multiaddr;

use crate::config::{Config, ConfigError};

use super::admission::AdmissionLimits;
use super::relay::{self, AddrError};

/// How much of this node's answering one peer may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// A peer's requests answered at once (`max_requests_in_flight_per_peer`).
    pub in_flight_per_peer: u32,
    /// A peer's requests a second, bursts of twice that
    /// (`max_requests_per_second_per_peer`).
    pub per_second: u32,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            in_flight_per_peer: 4,
            per_second: 20,
        }
    }
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
    /// Inbound connections admitted per address, while unverified, and after a timeout.
    pub admission: AdmissionLimits,
    /// A peer's share of this node's answers.
    pub requests: RequestLimits,
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
            admission: AdmissionLimits::default(),
            requests: RequestLimits::default(),
        }
    }
}

/// A `[network]` entry that is wrong, and why.
fn invalid(field: &str, entry: &str, why: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        path: PathBuf::from("config.toml"),
        reason: format!("[network] {field} entry {entry:?} {why}"),
    }
}

/// Parses the entries of one address list, checking each with `check`.
fn parse(
    field: &str,
    list: &[String],
    check: fn(&Multiaddr) -> Result<(), AddrError>,
) -> Result<Vec<Multiaddr>, ConfigError> {
    list.iter()
        .map(|a| {
            let addr: Multiaddr = a
                .parse()
                .map_err(|e| invalid(field, a, format_args!("is not a multiaddress ({e})")))?;
            check(&addr).map_err(|why| invalid(field, a, why))?;
            Ok(addr)
        })
        .collect()
}

impl NetConfig {
    /// The settings of `config`'s `[network]` section, defaults for what it leaves out.
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let mut c = Self::default();
        let n = config.network.clone().unwrap_or_default();
        if let Some(l) = n.listen {
            c.listen = parse("listen", &l, relay::check_listen)?;
        }
        if let Some(b) = n.bootstrap {
            c.bootstrap = parse("bootstrap", &b, relay::check_bootstrap)?;
        }
        if let Some(r) = n.relays {
            c.relays = parse("relays", &r, |a| relay::check_relay(a).map(drop))?;
            let mut seen = HashSet::new();
            for a in &c.relays {
                let peer = relay::target(a).expect("checked");
                if !seen.insert(peer) {
                    return Err(invalid(
                        "relays",
                        &a.to_string(),
                        "names a relay listed before; list one address per relay",
                    ));
                }
            }
        }
        if let Some(e) = n.external_addresses {
            c.external_addresses = parse("external_addresses", &e, relay::check_direct)?;
        }
        c.mdns = n.mdns.unwrap_or(c.mdns);
        c.relay_server = n.relay_server.unwrap_or(c.relay_server);
        if let Some(s) = n.sync_interval_secs {
            c.sync_interval = Duration::from_secs(s.max(1));
        }
        if let Some(s) = n.hello_timeout_secs {
            c.hello_timeout = Duration::from_secs(s.max(1));
        }
        let a = &mut c.admission;
        a.per_ip = n.max_connections_per_ip.map_or(a.per_ip, |v| v.max(1));
        a.unverified = n
            .max_unverified_connections
            .map_or(a.unverified, |v| v.max(1));
        if let Some(s) = n.hello_timeout_block_secs {
            a.timeout_block = Duration::from_secs(s);
        }
        a.timeouts_per_ip = n
            .hello_timeouts_per_ip
            .map_or(a.timeouts_per_ip, |v| v.max(1));
        let r = &mut c.requests;
        r.in_flight_per_peer = n
            .max_requests_in_flight_per_peer
            .map_or(r.in_flight_per_peer, |v| v.max(1));
        r.per_second = n
            .max_requests_per_second_per_peer
            .map_or(r.per_second, |v| v.max(1));
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(network: &str) -> Result<NetConfig, ConfigError> {
        let key = crate::identity::Identity::from_seed(&[7; 32])
            .key()
            .to_hex();
        let text = format!(
            "[organisation]\nname = \"Org\"\ncountry = \"RS\"\nkey = \"{key}\"\n\n[network]\n{network}\n"
        );
        let c: Config = toml::from_str(&text).expect("config parses");
        NetConfig::from_config(&c)
    }

    fn peer(n: u8) -> String {
        libp2p::identity::Keypair::ed25519_from_bytes([n; 32])
            .expect("key")
            .public()
            .to_peer_id()
            .to_string()
    }

    #[test]
    fn abuse_limits_have_defaults_and_can_be_set() {
        let d = config("").expect("valid");
        assert_eq!(d.admission, AdmissionLimits::default());
        assert_eq!(d.requests, RequestLimits::default());
        let c = config(
            "max_connections_per_ip = 2\nmax_unverified_connections = 5\n\
             hello_timeout_block_secs = 60\nhello_timeouts_per_ip = 4\n\
             max_requests_in_flight_per_peer = 1\nmax_requests_per_second_per_peer = 3",
        )
        .expect("valid");
        assert_eq!(
            c.admission,
            AdmissionLimits {
                per_ip: 2,
                unverified: 5,
                timeout_block: Duration::from_secs(60),
                timeouts_per_ip: 4,
            }
        );
        assert_eq!(
            c.requests,
            RequestLimits {
                in_flight_per_peer: 1,
                per_second: 3,
            }
        );
    }

    #[test]
    fn relays_and_circuit_bootstrap_entries_resolve() {
        let (relay, target) = (peer(1), peer(2));
        let c = config(&format!(
            "relays = [\"/ip4/198.51.100.7/tcp/7400/p2p/{relay}\"]\n\
             bootstrap = [\"/ip4/198.51.100.7/tcp/7400/p2p/{relay}/p2p-circuit/p2p/{target}\"]\n\
             external_addresses = [\"/ip4/203.0.113.4/tcp/7400\"]"
        ))
        .expect("valid");
        assert_eq!(c.relays.len(), 1);
        assert_eq!(c.bootstrap.len(), 1);
        assert_eq!(c.external_addresses.len(), 1);
    }

    #[test]
    fn malformed_relay_entries_say_what_to_write() {
        let cases = [
            ("relays = [\"/ip4/198.51.100.7/tcp/7400\"]", "append /p2p/PEERID"),
            ("relays = [\"198.51.100.7:7400\"]", "not a multiaddress"),
            (
                "relays = [\"/ip4/198.51.100.7/tcp/7400/p2p/RELAY/p2p-circuit\"]",
                "list the relay's own address",
            ),
            (
                "relays = [\"/ip4/198.51.100.7/tcp/7400/p2p/RELAY\", \"/ip4/198.51.100.8/tcp/7400/p2p/RELAY\"]",
                "one address per relay",
            ),
            (
                "bootstrap = [\"/ip4/198.51.100.7/tcp/7400/p2p-circuit/p2p/TARGET\"]",
                "/p2p/RELAYID/p2p-circuit/p2p/TARGETID",
            ),
            (
                "listen = [\"/ip4/198.51.100.7/tcp/7400/p2p/RELAY/p2p-circuit\"]",
                "list the relay in `relays`",
            ),
            (
                "external_addresses = [\"/ip4/198.51.100.7/tcp/7400/p2p/RELAY/p2p-circuit\"]",
                "may not be a /p2p-circuit address",
            ),
        ];
        for (network, expected) in cases {
            let network = network
                .replace("RELAY", &peer(1))
                .replace("TARGET", &peer(2));
            let e = config(&network).expect_err(&network).to_string();
            assert!(e.contains(expected), "{network}: {e}");
            assert!(e.contains("[network]"), "{e}");
        }
    }
}
