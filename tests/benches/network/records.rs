//! The benchmark's coalition and records: founding it through the library, signing
//! chains of findings in-process, and the raw `verify_strict` rate they are compared to.

use std::path::Path;
use std::time::Duration;

use coalition::charter::{Member, SignedCharter};
use coalition::config::Home;
use coalition::identity::Identity;
use coalition::node::Node;
use coalition::now_ms;
use serde_json::Value;

use super::PASSPHRASE;

pub(super) struct Org {
    pub(super) home: Home,
    pub(super) id: Identity,
}

/// Founds a coalition of `orgs` (each gets a home and a node) plus `authors` (members
/// without a node); every home holds the charter. Returns the founding epoch.
pub(super) async fn found(
    root: &Path,
    orgs: &[(String, &str)],
    authors: &[Identity],
) -> (Vec<Org>, [u8; 32]) {
    let mut out = Vec::new();
    let mut nodes = Vec::new();
    for (i, (name, cc)) in orgs.iter().enumerate() {
        let home = Home::new(Some(root.join(format!("node{i}"))));
        let (node, id) = Node::init(home.clone(), name, cc, PASSPHRASE)
            .await
            .expect("init");
        nodes.push(node);
        out.push(Org { home, id });
    }
    let mut members: Vec<Member> = nodes.iter().map(Node::member_card).collect();
    for (i, a) in authors.iter().enumerate() {
        members.push(Member {
            organisation: format!("Field office {i} (fictional)"),
            country: "RS".into(),
            key: a.key(),
        });
    }
    let threshold = members.len() as u32 / 2 + 1;
    let mut charter = SignedCharter::draft(
        "Network Benchmark Coalition (fictional)",
        threshold,
        members,
        false,
        now_ms(),
    )
    .expect("draft");
    for o in &out {
        charter.sign(&o.id).expect("sign");
    }
    for a in authors {
        charter.sign(a).expect("sign");
    }
    nodes[0]
        .adopt_charter(&out[0].id, &charter)
        .await
        .expect("adopt");
    let founding = root.join("charter.bundle");
    nodes[0]
        .export_bundle(&founding, false, None)
        .await
        .expect("export");
    for n in &nodes[1..] {
        n.import(&founding).await.expect("import charter");
    }
    let epoch = nodes[0]
        .membership()
        .await
        .expect("membership")
        .expect("charter")
        .current()
        .epoch;
    for n in nodes {
        n.store().clone().close().await;
    }
    (out, epoch)
}

/// The shipped example findings, without their `sensitive` part.
pub(super) fn examples() -> Vec<Value> {
    let dir = coalition_tests::examples_dir();
    coalition::sample::example_findings(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

/// Chain head of an author: last seq and id.
pub(super) use coalition::sample::{chain, Head};

// ---- raw verify rate (as node/benches/import.rs) ----------------------------------------

pub(super) fn verify_rate(records: &[Vec<u8>], min: Duration) -> (f64, usize) {
    let (calls, took, avg) = coalition::sample::raw_verify(records, min);
    (calls as f64 / took.as_secs_f64(), avg)
}
