//! Fixtures shared by the unit tests of the network layer and the node's ingest.

use libp2p::PeerId;
use tempfile::TempDir;

use crate::charter::{Member, SignedCharter};
use crate::config::Home;
use crate::finding::to_payload;
use crate::identity::Identity;
use crate::node::Node;
use crate::record::{Audience, Draft, RecordId};

/// The libp2p peer id of seed `n`.
pub(super) fn peer_id(n: u8) -> PeerId {
    libp2p::identity::Keypair::ed25519_from_bytes([n; 32])
        .expect("key")
        .public()
        .to_peer_id()
}

/// A node whose charter has two members: itself and `peer`. Bind `_dir` when destructuring:
/// under a `..` pattern the temporary home is deleted at the end of the `let`, and the next
/// store connection fails with "unable to open database file".
pub(crate) struct TwoMembers {
    pub(crate) _dir: TempDir,
    pub(crate) node: Node,
    pub(crate) me: Identity,
    pub(crate) peer: Identity,
    pub(crate) epoch: [u8; 32],
}

/// Founds a two-member coalition in a temporary home.
pub(crate) async fn two_members() -> TwoMembers {
    let dir = tempfile::tempdir().unwrap();
    let (node, me) = Node::init(
        Home::new(Some(dir.path().join("h"))),
        "Org A",
        "RS",
        "passphrase-1",
    )
    .await
    .unwrap();
    let peer = Identity::from_seed(&[3; 32]);
    let members = vec![
        node.member_card(),
        Member {
            organisation: "Org B".into(),
            country: "XK".into(),
            key: peer.key(),
        },
    ];
    let mut sc = SignedCharter::draft("C", 2, members, false, 0).unwrap();
    sc.sign(&me).unwrap();
    sc.sign(&peer).unwrap();
    node.adopt_charter(&me, &sc).await.unwrap();
    let epoch = node.membership().await.unwrap().unwrap().current().epoch;
    TwoMembers {
        _dir: dir,
        node,
        me,
        peer,
        epoch,
    }
}

/// A coalition-wide finding draft under `epoch`.
pub(crate) fn draft(epoch: [u8; 32]) -> Draft {
    Draft {
        schema: "finding/v1".into(),
        audience: Audience::Coalition,
        supersedes: None,
        epoch: Some(epoch),
        payload: to_payload(
            &serde_json::from_str(include_str!(
                "../../../schemas/examples/03-rs-presevo-checkpoint-harassment.json"
            ))
            .unwrap(),
        ),
        created_at_ms: 0,
    }
}

/// Records with their ids, as a page of a sync.
pub(crate) fn with_ids(records: &[&[u8]]) -> Vec<(RecordId, Vec<u8>)> {
    records
        .iter()
        .map(|b| (RecordId::of(b), b.to_vec()))
        .collect()
}
