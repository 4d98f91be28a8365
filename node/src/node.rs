//! A node's operations on its home: record, correct, retract, share, export, import,
//! verify. The CLI, the demo and the tests all go through these functions.
//!
//! This file holds the [`Node`] type (an opened home: config and store), its errors and
//! how a home is created and opened. The operations are split by job, each an `impl
//! Node` block in a submodule:
//!
//! | module | job |
//! |---|---|
//! | `authoring` | this organisation's own records: add, correct, retract, share |
//! | `governance` | charter adoption, proposals, approvals, node certificates |
//! | `membership` | the membership folded from the records held |
//! | `ingest` | records from elsewhere: bundle import, sync ingest |
//! | `verification` | re-verifying the store |
//! | `export` | what may leave the node, bundles, atomic writes |
//! | `view` | a record as `finding show` presents it |
//! | `sealing` | encryption keys, sealing for chosen members, opening on arrival |
//!
//! Dependencies between them go one way: `governance` → `authoring` → `membership`,
//! `view`; `ingest` and `verification` → `membership`.

mod authoring;
mod export;
mod governance;
mod ingest;
mod membership;
#[cfg(test)]
mod sealed_tests;
mod sealing;
mod verification;
mod view;
mod vouching;

use std::path::Path;

pub use authoring::Added;
pub use export::write_atomically;
pub use governance::REPLICAS_META;
pub use ingest::{CheckedRecords, ImportReport, GOVERNANCE_CAP, GOVERNANCE_CAP_REASON};
pub use sealing::Unsealable;
pub use verification::Witnessed;
pub use view::RecordView;
pub use vouching::{SignatureCheck, Vouched};

pub use crate::now_ms;
pub use crate::verify::{verify_bundle, verify_bundle_for, Failure, VerifyReport};

use crate::bundle;
use crate::charter::GovernanceError;
use crate::check::IngestError;
use crate::config::{Config, ConfigError, Home, Organisation};
use crate::identity::{Identity, IdentityError, OrgKey};
use crate::store::{Store, StoreError, StoreKey};
use crate::verify::VerifyError;

/// Errors from node operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// Home or config problem.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Key file problem.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// Store problem.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Bundle unreadable.
    #[error(transparent)]
    Bundle(#[from] bundle::BundleError),
    /// Bundle unreadable for verification.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// A record we made does not pass our own checks (a bug or a bad schema).
    #[error("record rejected: {0}")]
    Ingest(#[from] IngestError),
    /// A governance rule was broken.
    #[error(transparent)]
    Governance(#[from] GovernanceError),
    /// The operation is not allowed on this record.
    #[error("{0}")]
    Refused(String),
    /// File I/O.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> NodeError + '_ {
    move |source| NodeError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// An opened home: its config and store.
#[derive(Debug)]
pub struct Node {
    home: Home,
    config: Config,
    store: Store,
    fold_cache: membership::FoldCache,
    /// This organisation's encryption secrets once the key file is unlocked.
    keyring: std::sync::RwLock<Option<std::sync::Arc<sealing::Keyring>>>,
    /// Held while the signatures of records taken on a checkpoint are verified
    /// ([`Node::check_unchecked`]), so that two syncs ending together do not verify the
    /// same records twice.
    unchecked: tokio::sync::Mutex<()>,
}

impl Node {
    /// Creates a new home: config, encrypted key, store. Refuses to touch an existing one.
    pub async fn init(
        home: Home,
        org: &str,
        country: &str,
        passphrase: &str,
    ) -> Result<(Self, Identity), NodeError> {
        if home.exists() {
            return Err(ConfigError::HomeExists(home.dir().to_path_buf()).into());
        }
        let country = country.trim().to_ascii_uppercase();
        if !crate::schema::schemas()
            .vocabulary("country")
            .contains(&country)
        {
            return Err(NodeError::Refused(format!(
                "unknown country code {country:?}: use an ISO 3166-1 alpha-2 code (Kosovo: XK)"
            )));
        }
        if org.trim().is_empty() {
            return Err(NodeError::Refused("--org must not be empty".into()));
        }
        if passphrase.chars().count() < crate::identity::MIN_PASSPHRASE_LEN {
            return Err(IdentityError::WeakPassphrase {
                min: crate::identity::MIN_PASSPHRASE_LEN,
            }
            .into());
        }
        // The home holds the key file, the store and its WAL: its owner only.
        let mut dir = std::fs::DirBuilder::new();
        dir.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut dir, 0o700);
        dir.create(home.dir()).map_err(io_err(home.dir()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(home.dir(), std::fs::Permissions::from_mode(0o700))
                .map_err(io_err(home.dir()))?;
        }
        let identity = Identity::generate();
        identity.save(&home.key_path(), passphrase)?;
        let config = Config {
            organisation: Organisation {
                name: org.trim().to_string(),
                country,
                key: identity.key(),
            },
            network: None,
            api: None,
        };
        config.create(&home)?;
        let store = Store::create(&home.db_path(), &StoreKey::of(&identity)).await?;
        Ok((
            Self {
                home,
                config,
                store,
                fold_cache: Default::default(),
                unchecked: Default::default(),
                keyring: Default::default(),
            },
            identity,
        ))
    }

    /// Opens an existing home with its organisation key, whose store key opens the
    /// encrypted store (see [`Node::unlock_home`] and [`Node::unlock_and_open`]). The
    /// node holds the key's encryption secrets ([`Node::hold_keys`]), so records sealed
    /// for this organisation are opened as they arrive.
    pub async fn open(home: Home, identity: &Identity) -> Result<Self, NodeError> {
        let config = Config::load(&home)?;
        check_key_is_the_organisations(&home, &config, identity)?;
        let store = Store::open(&home.db_path(), &StoreKey::of(identity)).await?;
        let node = Self {
            home,
            config,
            store,
            fold_cache: Default::default(),
            unchecked: Default::default(),
            keyring: Default::default(),
        };
        // Whoever opens the store holds the key file unlocked: sealed records for this
        // organisation open as they arrive, by sync or by `coalition import`.
        node.hold_keys(identity);
        Ok(node)
    }

    /// Opens the key file of `home` with the passphrase (argon2id: a fraction of a
    /// second) and checks it holds the key of the organisation its config names.
    pub fn unlock_home(home: &Home, passphrase: &str) -> Result<Identity, NodeError> {
        let config = Config::load(home)?;
        let id = Identity::load(&home.key_path(), passphrase)?;
        check_key_is_the_organisations(home, &config, &id)?;
        Ok(id)
    }

    /// [`Node::unlock_home`], then [`Node::open`]: the passphrase opens the key file,
    /// and the key file's store key the store.
    pub async fn unlock_and_open(
        home: Home,
        passphrase: &str,
    ) -> Result<(Self, Identity), NodeError> {
        let id = Self::unlock_home(&home, passphrase)?;
        let node = Self::open(home, &id).await?;
        Ok((node, id))
    }

    /// Decrypts the organisation key again (the node is open, so it is this home's).
    pub fn unlock(&self, passphrase: &str) -> Result<Identity, NodeError> {
        let id = Identity::load(&self.home.key_path(), passphrase)?;
        check_key_is_the_organisations(&self.home, &self.config, &id)?;
        self.hold_keys(&id);
        Ok(id)
    }

    /// The home.
    pub fn home(&self) -> &Home {
        &self.home
    }

    /// The config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// This organisation's key.
    pub fn key(&self) -> OrgKey {
        self.config.organisation.key
    }
}

/// Refuses a key file that does not hold the key of the organisation `config` names.
fn check_key_is_the_organisations(
    home: &Home,
    config: &Config,
    id: &Identity,
) -> Result<(), NodeError> {
    if id.key() != config.organisation.key {
        return Err(NodeError::Refused(format!(
            "the key file {} does not belong to the organisation in {}: put back the key.enc that goes with this home (from its backup)",
            home.key_path().display(),
            home.config_path().display()
        )));
    }
    Ok(())
}
