//! Sync from checkpoints with real nodes (issue 17): a node that syncs a long stretch of a
//! member's log takes the records that member's verified checkpoint commits to without
//! verifying each signature before storing them, and verifies them after the sync,
//! before it serves any.
//!
//! M is a member that signs a checkpoint over a record whose signature does not verify
//! (its store altered, as a dishonest operator could). B syncs M's log from M and takes
//! it on the checkpoint's word with the rest, then finds the bad signature, removes the
//! record and says so; C, which syncs only with B, never receives it. Everything else M
//! wrote reaches both, and both stores verify in full.

use std::time::Duration;

use coalition::config::Home;
use coalition::finding::FindingInput;
use coalition::identity::Identity;
use coalition::node::Node;
use coalition::record::RecordId;
use coalition::sample::chain;
use coalition::store::{Store, StoreKey};
use coalition_tests::node::{strip_ansi, toml_list};
use coalition_tests::{eventually, example, found, held, write_bundle, Org, PASSPHRASE};

/// Findings M writes: more than a sync verifies one by one (`VOUCH_MIN_RECORDS`).
const RECORDS: usize = 1_500;
/// The one whose signature M's store alters before M's checkpoint.
const BAD: usize = 700;
/// How long the syncs may take (debug build, two cores).
const SYNCED: Duration = Duration::from_secs(120);

/// `org`'s node log, without colours.
fn log(org: &Org) -> String {
    strip_ansi(&std::fs::read_to_string(org.path("node.log")).unwrap_or_default())
}

#[test]
fn records_taken_on_a_checkpoint_are_served_only_once_their_signatures_verify() {
    let m = Org::init("Border Monitor Tbilisi", "GE");
    let b = Org::init("Safety Forum Prizren", "XK");
    let c = Org::init("Rights Desk Skopje", "MK");
    found("Checkpoint Sync Watch", &[&m, &b, &c], 2);

    // M's findings, signed with its key and imported into its own home; then M's store
    // altered: one finding's signature no longer verifies (its id changes with it).
    let home = Home::new(Some(m.home()));
    let key = Identity::load(&home.key_path(), PASSPHRASE).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (head, epoch) = rt.block_on(async {
        let node = Node::open(home.clone(), &key).await.unwrap();
        let head = node.store().chain_head(&key.key()).await.unwrap();
        let epoch = node.membership().await.unwrap().unwrap().current().epoch;
        drop(node);
        (head.map_or((0, None), |(seq, id)| (seq, Some(id))), epoch)
    });
    let base = FindingInput::parse(
        &std::fs::read(example("01-rs-belgrade-protest-force.json")).unwrap(),
        "01-rs-belgrade-protest-force.json",
    )
    .unwrap()
    .finding;
    let (records, _) = chain(&key, head, RECORDS, epoch, &[base], "observation");
    let bundle = m.path("m.bundle");
    write_bundle(&bundle, &records);
    m.import(&bundle).ok();
    let bad_old = RecordId::of(&records[BAD]);
    let mut bad_bytes = records[BAD].clone();
    let last = bad_bytes.len() - 1;
    bad_bytes[last] ^= 1;
    let bad = RecordId::of(&bad_bytes);
    rt.block_on(async {
        let store = Store::open(&home.db_path(), &StoreKey::of(&key))
            .await
            .unwrap();
        sqlx::query("UPDATE records SET id = ?, bytes = ? WHERE id = ?")
            .bind(bad.0.to_vec())
            .bind(bad_bytes.clone())
            .bind(bad_old.0.to_vec())
            .execute(store.pool())
            .await
            .unwrap();
        sqlx::query("UPDATE findings SET id = ? WHERE id = ?")
            .bind(bad.0.to_vec())
            .bind(bad_old.0.to_vec())
            .execute(store.pool())
            .await
            .unwrap();
        store.close().await;
    });
    // ... and M signs a checkpoint over its log as it now is.
    let checkpoint = m.run(["checkpoint"]).ok().line();

    let _node_m = m.start_node("m", "bootstrap = []\nsync_interval_secs = 2");
    let node_m_tcp = _node_m.tcp.clone();
    let _node_b = b.start_node(
        "b",
        &format!(
            "bootstrap = {}\nsync_interval_secs = 2",
            toml_list(&[&node_m_tcp])
        ),
    );
    let took = eventually(
        "B took M's findings and checked their signatures",
        SYNCED,
        || log(&b).contains("signatures of records taken on checkpoints verified"),
    );
    eprintln!("B synced M's log from its checkpoint {took:?} after it started");
    let good: Vec<String> = records
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != BAD)
        .map(|(_, r)| RecordId::of(r).to_hex())
        .collect();
    let b_holds = held(&b);
    assert!(
        good.iter().all(|id| b_holds.contains(id)),
        "B lacks some of M's findings"
    );
    assert!(b_holds.contains(&checkpoint));
    assert!(
        !b_holds.contains(&bad.to_hex()),
        "B kept the record whose signature fails"
    );
    let text = log(&b);
    let vouched: u64 = text
        .lines()
        .filter(|l| l.contains(" synced"))
        .filter_map(|l| l.split("vouched=").nth(1))
        .filter_map(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    // A first page (at most 4 buckets of 128 seqs) that comes before M's leaves is
    // verified record by record instead of waiting for them (docs/PROTOCOL.md §4.2.1).
    assert!(
        vouched >= RECORDS as u64 - 512,
        "B took {vouched} records on M's checkpoint:\n{text}"
    );
    assert!(text.contains("does not verify: removed"), "{text}");
    assert!(text.contains(&bad.to_hex()), "B's log names the record");

    // C syncs with B alone: everything B verified, never the bad record.
    let node_b_tcp = _node_b.tcp.clone();
    let _node_c = c.start_node(
        "c",
        &format!(
            "bootstrap = {}\nsync_interval_secs = 2",
            toml_list(&[&node_b_tcp])
        ),
    );
    eventually("C holds M's findings through B", SYNCED, || {
        let h = held(&c);
        good.iter().all(|id| h.contains(id))
    });
    assert!(!held(&c).contains(&bad.to_hex()));
    // Both stores verify in full: no record in them fails its signature.
    for org in [&b, &c] {
        org.run(["verify"]).ok();
    }
}
