//! The network layer's errors, typed so the event loop decides by variant, not by text:
//! whether a refused certificate is the peer's fault ([`CertError::is_violation`]), what a
//! sync failed on ([`SyncError`]), and which protocol breach a peer committed
//! ([`Violation`]). The texts are the ones peers and logs have always seen.

use libp2p::request_response::OutboundFailure;

use crate::charter::NODE_CERT_SCHEMA;
use crate::check::IngestError;
use crate::node::NodeError;
use crate::store::StoreError;

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

impl From<StoreError> for NetError {
    fn from(e: StoreError) -> Self {
        Self::Node(e.into())
    }
}

/// A libp2p setup failure.
pub(super) fn setup(e: impl std::fmt::Display) -> NetError {
    NetError::Setup(e.to_string())
}

/// Why a peer's node certificate was refused. The text goes to the local log; the peer
/// is told a fixed phrase (`event_loop::gate::refusal`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// Not a valid record (signature, encoding or payload schema).
    #[error("certificate does not verify: {0}")]
    DoesNotVerify(IngestError),
    /// A valid record, but not a node certificate.
    #[error("certificate has schema {0}, expected {NODE_CERT_SCHEMA}")]
    WrongSchema(String),
    /// The payload is not JSON.
    #[error("{0}")]
    Payload(#[from] serde_json::Error),
    /// Issued for another libp2p peer id.
    #[error("certificate is for another peer id")]
    OtherPeer,
    /// Past its `expires_at_ms`.
    #[error("certificate expired")]
    Expired,
    /// This node cannot judge membership yet.
    #[error("this node has no coalition charter yet")]
    NoCharter,
    /// Signed under a membership epoch this node has not seen: possibly valid once this
    /// node learns the membership change, so not held against the peer.
    #[error("{0}")]
    UnknownEpoch(String),
    /// Its author was not a member under the epoch it names.
    #[error("{0}")]
    NotMemberThen(String),
    /// Its author is not a member now.
    #[error("organisation {0} is not a current member")]
    NotCurrentMember(String),
}

impl CertError {
    /// Whether presenting this certificate breaks the rules (the peer is blocked), rather
    /// than naming a membership this node has not seen yet (the peer is only
    /// disconnected and tries again later).
    pub fn is_violation(&self) -> bool {
        !matches!(self, Self::UnknownEpoch(_))
    }
}

/// Why a sync this node initiated, or one request of it, failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The event loop has stopped.
    #[error("network stopped")]
    Stopped,
    /// The peer is gone or has not presented a valid certificate.
    #[error("peer is not connected and verified")]
    NotVerified,
    /// The peer's organisation left the membership.
    #[error("peer's organisation is no longer a current member")]
    NotMember,
    /// The request did not reach the peer or got no response.
    #[error(transparent)]
    Outbound(#[from] OutboundFailure),
    /// The response does not decode.
    #[error("malformed response: {0}")]
    Malformed(#[from] prost::DecodeError),
    /// The peer answered with an error.
    #[error("peer refused: {0}")]
    Refused(String),
    /// The response carries nothing.
    #[error("empty response")]
    Empty,
    /// The response is of the wrong kind for the request (named).
    #[error("unexpected response to {0}")]
    Unexpected(&'static str),
    /// Checking or storing what the peer sent failed on this node.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// Reading the holdings failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A peer's breach of the protocol. Each one counts towards
/// `peers::MAX_VIOLATIONS`; the text goes to the log only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// A request that does not decode.
    #[error("malformed sync request")]
    MalformedRequest,
    /// A hello response that is neither a certificate nor an error.
    #[error("malformed hello response")]
    MalformedHello,
    /// Gossip from a peer whose certificate has not verified.
    #[error("gossip before a verified certificate")]
    GossipUnverified,
    /// A gossip message that is not an announcement.
    #[error("malformed announcement")]
    MalformedAnnounce,
    /// A request from an organisation that left the membership.
    #[error("organisation is no longer a current member")]
    NotMember,
    /// A reconcile request over the bucket limit.
    #[error("reconcile with too many buckets")]
    TooManyBuckets,
    /// Pushed records that do not verify or are not addressed to this node (how many
    /// were refused in all).
    #[error("{0} invalid or misaddressed records pushed")]
    BadPush(usize),
    /// Records received in a sync that do not verify.
    #[error("sent records that do not verify")]
    InvalidRecords,
}

/// Whether a record refused at ingest (by the reason the node reports) names a
/// membership epoch this node has not seen. Such a record is not the sender's fault: its
/// membership records may come later. The node reports refusals as text
/// (`ImportReport::failures`), so this is the one place that reads it.
pub(super) fn names_unknown_epoch(reason: &str) -> bool {
    // A membership record over the per-author cap is not the sender's fault either.
    reason.contains("not in this coalition's history")
        || reason.contains(crate::node::GOVERNANCE_CAP_REASON)
}

/// An error with its sources, for logs.
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unknown_epoch_is_not_the_peers_fault() {
        assert!(!CertError::UnknownEpoch("names membership epoch …".into()).is_violation());
        for e in [
            CertError::OtherPeer,
            CertError::Expired,
            CertError::NoCharter,
            CertError::WrongSchema("finding/v1".into()),
            CertError::NotMemberThen("author … was not a member".into()),
            CertError::NotCurrentMember("ab12".into()),
        ] {
            assert!(e.is_violation(), "{e}");
        }
    }

    #[test]
    fn texts_peers_and_logs_see_are_unchanged() {
        assert_eq!(
            CertError::WrongSchema("finding/v1".into()).to_string(),
            "certificate has schema finding/v1, expected node-cert/v1"
        );
        assert_eq!(
            CertError::NotCurrentMember("ab12".into()).to_string(),
            "organisation ab12 is not a current member"
        );
        assert_eq!(
            Violation::BadPush(3).to_string(),
            "3 invalid or misaddressed records pushed"
        );
        assert_eq!(
            SyncError::Refused("busy, retry later".into()).to_string(),
            "peer refused: busy, retry later"
        );
        assert_eq!(
            SyncError::Unexpected("summary").to_string(),
            "unexpected response to summary"
        );
    }

    #[test]
    fn refusals_naming_an_unseen_epoch_are_told_apart() {
        assert!(names_unknown_epoch(
            "names membership epoch 0a1b2c3d4e5f which is not in this coalition's history (made under a membership this node has not seen, or a fork)"
        ));
        assert!(!names_unknown_epoch(
            "author ab12 was not a member under the epoch its record names"
        ));
        assert!(!names_unknown_epoch("signature does not verify"));
    }
}
