//! Setting up an organisation: `init` (a new home), `identity export` (the member card
//! founders exchange) and `node cert` (binding a libp2p peer id to the organisation).

use anyhow::Result;
use clap::{Args, Subcommand};

use super::shared::{open, open_unlocked, out, out_json, passphrase, Outcome};
use crate::config::Home;
use crate::node::Node;

/// `coalition init`
#[derive(Debug, Args)]
pub struct InitCmd {
    /// Organisation name.
    #[arg(long)]
    pub org: String,
    /// ISO 3166-1 alpha-2 country code (Kosovo: XK).
    #[arg(long)]
    pub country: String,
}

/// `coalition identity …`
#[derive(Debug, Subcommand)]
pub enum IdentityCmd {
    /// Print this organisation's member card (name, country, key) as JSON.
    Export,
    /// Make a new encryption key (for records sealed to this organisation) the current
    /// one, keep the old secrets in the key file (records sealed to them still open), and
    /// publish the new key to the coalition. Prints the new publishing record's id.
    RotateEncryptionKey,
}

/// `coalition node …`
#[derive(Debug, Subcommand)]
pub enum NodeCmd {
    /// Issue a certificate binding a libp2p peer id to this organisation.
    Cert {
        /// The node's libp2p peer id.
        #[arg(long)]
        peer_id: String,
        /// Validity in days.
        #[arg(long, default_value_t = 90)]
        days: u32,
    },
    /// Create the HTTP API token (`api.token` in the home, mode 0600) if there is none,
    /// and print its path. The API needs it to listen on a non-loopback address.
    ApiToken,
}

/// Runs `coalition init`.
pub(super) async fn init(home: &Home, cmd: InitCmd) -> Result<Outcome> {
    let p = passphrase(true)?;
    let (node, identity) = Node::init(home.clone(), &cmd.org, &cmd.country, &p).await?;
    crate::api_server::create_token(&home.api_token_path())?;
    eprintln!(
        "Created Coalition home {} for {} ({}).\nKeep the passphrase safe: without it the key cannot be recovered.\nOrganisation key:",
        home.dir().display(),
        node.config().organisation.name,
        node.config().organisation.country
    );
    out(identity.key().to_hex())?;
    Ok(Outcome::Success)
}

/// Runs `coalition identity …`.
pub(super) async fn identity(home: &Home, cmd: IdentityCmd) -> Result<Outcome> {
    match cmd {
        IdentityCmd::Export => {
            let node = open(home).await?;
            out_json(&node.member_card())?;
        }
        IdentityCmd::RotateEncryptionKey => {
            let p = passphrase(false)?;
            let (node, mut identity) = Node::unlock_and_open(home.clone(), &p).await?;
            let id = node.rotate_encryption_key(&mut identity, &p).await?;
            out(id.to_hex())?;
            eprintln!(
                "new encryption key {} is current and published to the coalition; members seal to it once they hold this record (their next sync)",
                identity.encryption_key().short()
            );
        }
    }
    Ok(Outcome::Success)
}

/// Runs `coalition node …`.
pub(super) async fn node(home: &Home, cmd: NodeCmd) -> Result<Outcome> {
    match cmd {
        NodeCmd::Cert { peer_id, days } => {
            let (node, identity) = open_unlocked(home).await?;
            let expires = crate::now_ms() + i64::from(days) * 86_400_000;
            let cert = node.issue_node_cert(&identity, &peer_id, expires).await?;
            out(cert.id.to_hex())?;
            eprintln!("certificate for peer {peer_id} valid for {days} days; it is shared with the coalition like any record");
        }
        NodeCmd::ApiToken => {
            let node = open(home).await?;
            let path = node.home().api_token_path();
            if crate::api_server::read_token(&path)?.is_none() {
                crate::api_server::create_token(&path)?;
                eprintln!("created a new API token");
            }
            out(path.display().to_string())?;
        }
    }
    Ok(Outcome::Success)
}
