//! Governance records from keys with no standing: one member (or a bundle it hands out)
//! carrying thousands of approvals signed by throwaway keys must not make every node store,
//! re-verify and pass them on, and must not break the bundles honest nodes export.

use std::time::Duration;

use coalition::check;
use coalition::identity::Identity;
use coalition::record::{self, Audience, Draft, Record};
use coalition::store::{Store, StoreKey};
use coalition_tests::bundles::{bundle_records, write_bundle};
use coalition_tests::{eventually, found, held, verify_offline, Org, PASSPHRASE};

/// The epoch A's newest records name (A adds a finding and exports a bundle).
fn current_epoch(a: &Org) -> [u8; 32] {
    a.add_example("01-rs-belgrade-protest-force.json", "coalition");
    let bundle = a.export("bundle", "epoch.bundle", &[]);
    bundle_records(&bundle)
        .iter()
        .filter_map(|b| record::verify(b).ok())
        .filter(|r| r.schema == "finding/v1")
        .find_map(|r| r.epoch)
        .expect("a finding naming the current epoch")
}

/// `n` approvals at `epoch`, each signed by a fresh throwaway key.
fn junk_approvals(epoch: [u8; 32], n: u32) -> Vec<Record> {
    (0..n)
        .map(|i| {
            let mut seed = [0x5a; 32];
            seed[..4].copy_from_slice(&i.to_le_bytes());
            record::sign(
                &Identity::from_seed(&seed),
                1,
                None,
                Draft {
                    schema: "approval/v1".into(),
                    audience: Audience::Coalition,
                    supersedes: None,
                    epoch: Some(epoch),
                    payload: format!("{{\"proposal\":\"{}\"}}", "ab".repeat(32)).into_bytes(),
                    created_at_ms: 1,
                },
            )
        })
        .collect()
}

#[test]
fn an_import_refuses_approvals_from_throwaway_keys_and_exports_still_verify() {
    let (a, b) = (Org::init("Org A", "RS"), Org::init("Org B", "XK"));
    found("Abuse Coalition", &[&a, &b], 2);
    let epoch = current_epoch(&a);
    let mut records = bundle_records(&a.export("bundle", "a.bundle", &[]));
    let junk = junk_approvals(epoch, 300);
    records.extend(junk.iter().map(|r| r.bytes.clone()));
    let bundle = a.path("with-junk.bundle");
    write_bundle(&bundle, &records);

    let before = held(&b);
    let out = b.import(&bundle);
    let report = out.json();
    let failures = report["failures"].as_array().expect("failures listed");
    assert_eq!(failures.len(), 300, "{}", out.all());
    for f in failures {
        let reason = f["reason"].as_str().unwrap();
        assert!(
            reason.contains("was not a member under the epoch"),
            "unclear refusal: {reason}"
        );
    }
    let now = held(&b);
    for r in &junk {
        assert!(
            !now.contains(&r.id.to_hex()),
            "a throwaway approval was stored"
        );
    }
    assert!(now.len() > before.len(), "A's own records were imported");

    // What B exports verifies: nothing B stored is refused by an auditor.
    let (verify, v) = verify_offline(&b.export("bundle", "b.bundle", &[]));
    assert_eq!(verify.code, 0, "{}", verify.all());
    assert!(v["failures"].as_array().unwrap().is_empty(), "{v}");
}

#[test]
fn a_member_serving_throwaway_approvals_is_banned_and_nothing_of_it_is_stored() {
    let (a, b) = (Org::init("Org A", "RS"), Org::init("Org B", "XK"));
    found("Abuse Coalition", &[&a, &b], 2);
    let epoch = current_epoch(&a);
    let junk = junk_approvals(epoch, 50);
    // B's node holds them, as an old node (that stored any signed approval) would: written
    // straight into its store, past the node's checks.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let identity = Identity::load(&b.home().join("key.enc"), PASSPHRASE).unwrap();
        let store = Store::open(&b.home().join("coalition.db"), &StoreKey::of(&identity))
            .await
            .unwrap();
        let prepared: Vec<_> = junk
            .iter()
            .map(|r| check::prepare(&r.bytes).unwrap())
            .collect();
        store.insert(&prepared).await.unwrap();
        store.close().await;
    });

    let node_a = a.start_node("a", "");
    let node_b = b.start_node("b", &format!("bootstrap = [{:?}]", node_a.tcp));
    let log = a.path("node.log");
    eventually(
        "A bans B for serving approvals from throwaway keys",
        Duration::from_secs(90),
        || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .any(|l| l.contains("too many protocol violations") && l.contains(&node_b.peer))
        },
    );
    let a_holds = held(&a);
    for r in &junk {
        assert!(
            !a_holds.contains(&r.id.to_hex()),
            "A stored a throwaway approval"
        );
    }
    drop((node_a, node_b));
}
