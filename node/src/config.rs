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
