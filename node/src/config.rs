//! The node's home directory and its configuration file.
//!
//! A home holds `config.toml`, the encrypted key file `key.enc` and the store
//! `coalition.db`. Resolution order for the home: `--home` flag, then `COALITION_HOME`,
//! then `coalition/` under the user's data directory.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::identity::OrgKey;

/// Errors reading or writing the configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No home at the given path.
    #[error("no Coalition home at {0} (run `coalition init --org NAME --country CC`, or pass --home / set COALITION_HOME)")]
    NoHome(PathBuf),
    /// `init` into a directory that already holds a home.
    #[error(
        "{0} already holds a Coalition home; refusing to overwrite it (choose another --home)"
    )]
    HomeExists(PathBuf),
    /// The config file is not valid.
    #[error("invalid config file {path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// I/O failure.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Paths inside a home directory.
#[derive(Debug, Clone)]
pub struct Home {
    dir: PathBuf,
}

impl Home {
    /// The home at `dir`, or the default location when `None`.
    pub fn new(dir: Option<PathBuf>) -> Self {
        let dir = dir.unwrap_or_else(|| {
            dirs::data_dir()
                .unwrap_or_else(|| PathBuf::from("."))
                .join("coalition")
        });
        Self { dir }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `config.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    /// `key.enc`.
    pub fn key_path(&self) -> PathBuf {
        self.dir.join("key.enc")
    }

    /// `coalition.db`.
    pub fn db_path(&self) -> PathBuf {
        self.dir.join("coalition.db")
    }

    /// Whether any part of a home is present.
    pub fn exists(&self) -> bool {
        self.config_path().exists() || self.key_path().exists() || self.db_path().exists()
    }
}

/// `config.toml`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Who this node speaks for.
    pub organisation: Organisation,
    /// Peer-to-peer settings for `coalition run`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    /// Local HTTP API settings for `coalition run`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<Api>,
}

/// The `[network]` section. Every field is optional.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// libp2p multiaddresses to listen on (default TCP and QUIC on port 7400).
    pub listen: Option<Vec<String>>,
    /// Peers to dial at start and after disconnections (`/ip4/…/tcp/…/p2p/PEERID`, or a
    /// member reachable through a relay: `…/p2p/RELAYID/p2p-circuit/p2p/PEERID`).
    pub bootstrap: Option<Vec<String>>,
    /// Members serving as relays to hold a reservation with, for a node behind NAT
    /// (`/ip4/…/tcp/…/p2p/RELAYID`).
    pub relays: Option<Vec<String>>,
    /// Addresses at which others reach this node directly, e.g. a public address in
    /// front of a NAT that forwards the port (a relay server needs one).
    pub external_addresses: Option<Vec<String>>,
    /// Find peers on the local network with mDNS (default false).
    pub mdns: Option<bool>,
    /// Serve as a relay for members behind NAT (default false).
    pub relay_server: Option<bool>,
    /// Seconds between anti-entropy syncs with each peer (default 30).
    pub sync_interval_secs: Option<u64>,
    /// Seconds a peer may stay connected without a valid certificate (default 10).
    pub hello_timeout_secs: Option<u64>,
}

/// The `[api]` section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Api {
    /// Address of the local HTTP API and dashboard (default 127.0.0.1:7878).
    pub listen: Option<String>,
}

/// The `[organisation]` section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Organisation {
    /// Organisation name.
    pub name: String,
    /// ISO 3166-1 alpha-2 country (Kosovo `XK`).
    pub country: String,
    /// Organisation public key.
    pub key: OrgKey,
}

impl Config {
    /// The resolved network settings.
    pub fn net_config(&self) -> Result<crate::net::NetConfig, ConfigError> {
        let mut c = crate::net::NetConfig::default();
        let n = self.network.clone().unwrap_or_default();
        let invalid = |field: &str, a: &str, why: String| ConfigError::Invalid {
            path: PathBuf::from("config.toml"),
            reason: format!("[network] {field} entry {a:?} {why}"),
        };
        let parse = |field: &str,
                     list: Vec<String>,
                     check: fn(&libp2p::Multiaddr) -> Result<(), String>|
         -> Result<Vec<libp2p::Multiaddr>, ConfigError> {
            list.iter()
                .map(|a| {
                    let addr: libp2p::Multiaddr = a
                        .parse()
                        .map_err(|e| invalid(field, a, format!("is not a multiaddress ({e})")))?;
                    check(&addr).map_err(|why| invalid(field, a, why))?;
                    Ok(addr)
                })
                .collect()
        };
        let direct = |a: &libp2p::Multiaddr| {
            if crate::net::relay::is_circuit(a) {
                Err("may not be a /p2p-circuit address".to_string())
            } else {
                Ok(())
            }
        };
        if let Some(l) = n.listen {
            c.listen = parse("listen", l, |a| {
                if crate::net::relay::is_circuit(a) {
                    Err("is a /p2p-circuit address; list the relay in `relays` instead".into())
                } else {
                    Ok(())
                }
            })?;
        }
        if let Some(b) = n.bootstrap {
            c.bootstrap = parse("bootstrap", b, crate::net::relay::check_bootstrap)?;
        }
        if let Some(r) = n.relays {
            c.relays = parse("relays", r, |a| crate::net::relay::check_relay(a).map(drop))?;
            let mut seen = std::collections::HashSet::new();
            for a in &c.relays {
                let peer = crate::net::relay::target(a).expect("checked");
                if !seen.insert(peer) {
                    return Err(invalid(
                        "relays",
                        &a.to_string(),
                        "names a relay listed before; list one address per relay".into(),
                    ));
                }
            }
        }
        if let Some(e) = n.external_addresses {
            c.external_addresses = parse("external_addresses", e, direct)?;
        }
        c.mdns = n.mdns.unwrap_or(c.mdns);
        c.relay_server = n.relay_server.unwrap_or(c.relay_server);
        if let Some(s) = n.sync_interval_secs {
            c.sync_interval = std::time::Duration::from_secs(s.max(1));
        }
        if let Some(s) = n.hello_timeout_secs {
            c.hello_timeout = std::time::Duration::from_secs(s.max(1));
        }
        Ok(c)
    }

    /// Reads and parses the config of `home`.
    pub fn load(home: &Home) -> Result<Self, ConfigError> {
        let path = home.config_path();
        if !path.exists() {
            return Err(ConfigError::NoHome(home.dir().to_path_buf()));
        }
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Io {
            path: path.clone(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Invalid {
            path,
            reason: e.to_string(),
        })
    }

    /// Replaces the config file of `home` (written to a temporary file, then renamed).
    pub fn save(&self, home: &Home) -> Result<(), ConfigError> {
        let path = home.config_path();
        let tmp = home.dir().join("config.toml.tmp");
        let text = format!(
            "# Coalition node configuration. See deploy/config.example.toml for every option.\n{}",
            toml::to_string_pretty(self).expect("config serialises")
        );
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|source| ConfigError::Io { path, source })
    }

    /// Writes the config as a new file.
    pub fn create(&self, home: &Home) -> Result<(), ConfigError> {
        let path = home.config_path();
        let text = format!(
            "# Coalition node configuration. See deploy/config.example.toml for every option.\n{}",
            toml::to_string_pretty(self).expect("config serialises")
        );
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))
            .map_err(|source| ConfigError::Io { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(network: &str) -> Result<crate::net::NetConfig, ConfigError> {
        let key = crate::identity::Identity::from_seed(&[7; 32])
            .key()
            .to_hex();
        let text = format!(
            "[organisation]\nname = \"Org\"\ncountry = \"RS\"\nkey = \"{key}\"\n\n[network]\n{network}\n"
        );
        let c: Config = toml::from_str(&text).expect("config parses");
        c.net_config()
    }

    fn peer(n: u8) -> String {
        libp2p::identity::Keypair::ed25519_from_bytes([n; 32])
            .expect("key")
            .public()
            .to_peer_id()
            .to_string()
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
