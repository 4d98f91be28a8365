//! The node's home directory and its configuration file.
//!
//! A home holds `config.toml`, the encrypted key file `key.enc` and the store
//! `coalition.db`. Resolution order for the home: `--home` flag, then `COALITION_HOME`,
//! then `coalition/` under the user's data directory.
//!
//! The file holds plain settings; the layers that use them resolve and check them
//! (`net::NetConfig::from_config` for `[network]`), so this module depends on none of them.

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

    /// `api.token`: the bearer token the HTTP API requires when it listens on an
    /// address other machines can reach (created by `init`, mode 0600).
    pub fn api_token_path(&self) -> PathBuf {
        self.dir.join("api.token")
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
    /// Seconds between checkpoints of this organisation's own log, signed while `coalition
    /// run` runs and only when it wrote records since the last one (default 86400, a
    /// day; the first one an interval after start).
    pub checkpoint_interval_secs: Option<u64>,
    /// Seconds between witness checks while `coalition run` runs: each member's latest
    /// checkpoint held is cosigned when the records held verify it (default 600).
    pub witness_interval_secs: Option<u64>,
    /// Whether a sync takes the records a member's verified checkpoint commits to without
    /// verifying each one's signature before storing it (verified after the sync, before
    /// they are served; docs/THREAT_MODEL.md "Sync from checkpoints"). Default true;
    /// false verifies every signature before storing, as before checkpoints.
    pub sync_from_checkpoints: Option<bool>,
    /// Seconds a peer may stay connected without a valid certificate (default 10).
    pub hello_timeout_secs: Option<u64>,
    /// Inbound connections one IP address may hold (default 8).
    pub max_connections_per_ip: Option<usize>,
    /// Inbound connections of peers without a verified certificate, in total (default 16).
    pub max_unverified_connections: Option<usize>,
    /// Seconds a peer that let its hello time out is refused (default 300).
    pub hello_timeout_block_secs: Option<u64>,
    /// Hello timeouts from one IP address after which the address is refused for
    /// `hello_timeout_block_secs` (default 3).
    pub hello_timeouts_per_ip: Option<u32>,
    /// A peer's sync requests answered at once (default 4).
    pub max_requests_in_flight_per_peer: Option<u32>,
    /// A peer's sync requests a second, bursts of twice that (default 20).
    pub max_requests_per_second_per_peer: Option<u32>,
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
    /// `[network] sync_from_checkpoints` (default true).
    pub fn sync_from_checkpoints(&self) -> bool {
        self.network
            .as_ref()
            .and_then(|n| n.sync_from_checkpoints)
            .unwrap_or(true)
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

    /// The file's text: a header line, then the TOML.
    fn to_text(&self) -> String {
        format!(
            "# Coalition node configuration. See deploy/config.example.toml for every option.\n{}",
            toml::to_string_pretty(self).expect("config serialises")
        )
    }

    /// Replaces the config file of `home` (written to a temporary file, then renamed).
    pub fn save(&self, home: &Home) -> Result<(), ConfigError> {
        let path = home.config_path();
        let tmp = home.dir().join("config.toml.tmp");
        let text = self.to_text();
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|source| ConfigError::Io { path, source })
    }

    /// Writes the config as a new file.
    pub fn create(&self, home: &Home) -> Result<(), ConfigError> {
        let path = home.config_path();
        let text = self.to_text();
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))
            .map_err(|source| ConfigError::Io { path, source })
    }
}
