//! One function per fuzz target: each feeds arbitrary bytes to a decoder that reads
//! input someone else wrote (a peer, a bundle's author, an operator's file, an HTTP
//! client), then to what the node does with the decoded value. Any input may be refused;
//! none may panic, overflow (fuzz builds keep debug assertions), hang or exhaust memory.
//!
//! `fuzz/fuzz_targets/*.rs` (cargo-fuzz, nightly) call these, and so does the stable
//! test `fuzz_regressions`, which replays every input kept under `fuzz/regressions/`:
//! a crash found once stays fixed. [`TARGETS`] names them for both.

use std::io::Cursor;
use std::sync::OnceLock;

use coalition_proto::v1::{self as pb, SignedRecord};
use futures::executor::block_on;
use libp2p::request_response::Codec as _;
use prost::Message;

use crate::audience;
use crate::charter::{
    Change, Member, Membership, SignedCharter, APPROVAL_SCHEMA, CHARTER_SCHEMA, NODE_CERT_SCHEMA,
    PROPOSAL_SCHEMA,
};
use crate::check;
use crate::finding::{
    FindingIndex, FindingInput, ANNEX_SCHEMA, FINDING_SCHEMA, GRANT_SCHEMA, RETRACTION_SCHEMA,
};
use crate::identity::{Identity, OrgKey};
use crate::net::codec::{Codec, PROTOCOL};
use crate::net::sync::{parse_bucket_refs, Entry, SyncSet};
use crate::record::{self, Audience, Draft, Record, RecordId};
use crate::sealed;

/// A target's body: any bytes in, no panic out.
pub type Target = fn(&[u8]);

/// Every target: its name (the file under `fuzz/fuzz_targets/` and the folder under
/// `fuzz/regressions/`) and the function it runs.
pub const TARGETS: &[(&str, Target)] = &[
    ("record_envelope", record_envelope),
    ("record_body", record_body),
    ("record_payload", record_payload),
    ("bundle", bundle),
    ("sync_request", sync_request),
    ("sync_response", sync_response),
    ("gossip_announce", gossip_announce),
    ("finding_input", finding_input),
    ("charter_document", charter_document),
    ("config_toml", config_toml),
    ("api_query", api_query),
    ("sealed_open", sealed_open),
];

/// The fixed world the targets judge records against: five organisations with seeds
/// 1..=5, a charter (threshold 3) signed by all of them, and its membership.
struct World {
    orgs: Vec<Identity>,
    charter: Record,
    membership: Membership,
    set: SyncSet,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let orgs: Vec<Identity> = (1..=5u8).map(|i| Identity::from_seed(&[i; 32])).collect();
        let members = orgs
            .iter()
            .enumerate()
            .map(|(i, o)| Member {
                organisation: format!("Org {i}"),
                country: "RS".into(),
                key: o.key(),
            })
            .collect();
        let mut sc = SignedCharter::draft("Fuzz Watch", 3, members, false, 0)
            .expect("the fixed charter is valid");
        for o in &orgs {
            sc.sign(o).expect("every fixed organisation is a founder");
        }
        let payload = serde_json::to_vec(&sc).expect("a charter serialises");
        let charter = sign(&orgs[0], 1, None, CHARTER_SCHEMA, None, payload);
        let membership = Membership::fold(std::slice::from_ref(&charter), None)
            .expect("the fixed charter folds")
            .expect("the fixed charter is adopted");
        let set = SyncSet::new((1..=40u64).map(|seq| Entry {
            author: orgs[(seq % 5) as usize].key(),
            seq,
            id: RecordId::of(&seq.to_be_bytes()),
        }));
        World {
            orgs,
            charter,
            membership,
            set,
        }
    })
}

fn sign(
    by: &Identity,
    seq: u64,
    prev: Option<RecordId>,
    schema: &str,
    epoch: Option<[u8; 32]>,
    payload: Vec<u8>,
) -> Record {
    let draft = Draft {
        schema: schema.into(),
        audience: Audience::Coalition,
        supersedes: None,
        epoch,
        payload,
        created_at_ms: 1,
    };
    record::sign(by, seq, prev, draft)
}

/// What a node does with record bytes from a peer or a bundle: the door check, then,
/// for records that pass, the membership judgement, the fold, grants and annexes.
fn ingest(bytes: &[u8]) {
    let _ = record::schema_of(bytes);
    let noncanonical = record::noncanonical_body(bytes);
    // The check's verdict on the body comes from its own decoding: it must agree with
    // the standalone one on every input that verifies.
    if let Ok((_, verdict)) = record::verify_noting_body(bytes) {
        assert_eq!(verdict, noncanonical, "two verdicts on one body");
    }
    let _ = crate::verify::is_membership(bytes);
    let Ok(prepared) = check::prepare(bytes) else {
        return;
    };
    let w = world();
    let r = &prepared.record;
    let _ = w.membership.judge(r);
    let _ = audience::grant_target(r);
    let _ = audience::effective(r, std::iter::empty());
    let _ = r.audience.to_json();
    let records = [w.charter.clone(), r.clone()];
    let _ = Membership::fold(&records, None);
    if r.schema == NODE_CERT_SCHEMA {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&r.payload) {
            let _ = v["expires_at_ms"].as_i64();
        }
    }
}

/// The signed envelope as received: decoding, canonical form, signature, then ingest.
pub fn record_envelope(data: &[u8]) {
    ingest(data);
}

/// A record body signed by a member: past the signature, every field of the body is
/// the input.
pub fn record_body(data: &[u8]) {
    let w = world();
    let signature = w.orgs[1].sign(&signing_message(data));
    let bytes = SignedRecord {
        body: data.to_vec().into(),
        signature: signature.to_vec().into(),
    }
    .encode_to_vec();
    ingest(&bytes);
}

fn signing_message(body: &[u8]) -> Vec<u8> {
    [record::SIGNING_PREFIX, body].concat()
}

/// Each record kind's payload, in a well-formed body signed by a member at the current
/// epoch: the first byte picks the schema, the rest is the payload.
pub fn record_payload(data: &[u8]) {
    const SCHEMAS: [&str; 11] = [
        FINDING_SCHEMA,
        ANNEX_SCHEMA,
        RETRACTION_SCHEMA,
        GRANT_SCHEMA,
        CHARTER_SCHEMA,
        PROPOSAL_SCHEMA,
        APPROVAL_SCHEMA,
        NODE_CERT_SCHEMA,
        "vocab/v1",
        sealed::SEALED_SCHEMA,
        sealed::ENCRYPTION_KEY_SCHEMA,
    ];
    let Some((&pick, payload)) = data.split_first() else {
        return;
    };
    let w = world();
    let schema = SCHEMAS[pick as usize % SCHEMAS.len()];
    let epoch = (pick & 0x80 != 0).then(|| w.membership.current().epoch);
    let r = sign(&w.orgs[2], 1, None, schema, epoch, payload.to_vec());
    ingest(&r.bytes);
}

/// The fixed organisations of [`sealed_open`]'s records: the author (index into the
/// world's organisations) and the two members it seals for.
const SEALED_AUTHOR: usize = 2;
const SEALED_MEMBERS: [usize; 2] = [0, 3];

/// The author and members of [`sealed_open`]'s records, with their encryption keys.
fn sealed_recipients() -> Vec<sealed::Recipient> {
    let w = world();
    std::iter::once(SEALED_AUTHOR)
        .chain(SEALED_MEMBERS)
        .map(|i| sealed::Recipient {
            org: w.orgs[i].key(),
            key: w.orgs[i].encryption_key(),
        })
        .collect()
}

/// `payload` as the `sealed/v1` payload of a record signed by the sealed author at the
/// current epoch, for the sealed members.
fn sealed_record(payload: &[u8]) -> Record {
    let w = world();
    let draft = Draft {
        schema: sealed::SEALED_SCHEMA.into(),
        audience: Audience::members(SEALED_MEMBERS.iter().map(|&i| w.orgs[i].key()).collect()),
        supersedes: None,
        epoch: Some(w.membership.current().epoch),
        payload: payload.to_vec(),
        created_at_ms: 1,
    };
    record::sign(&w.orgs[SEALED_AUTHOR], 1, None, draft)
}

/// A sealed record's envelope (`sealed/v1` payload) in a body signed by a member for two
/// chosen members: the door check, then what a recipient runs on arrival: the HPKE
/// unwrap, the content decryption, the inner content and its schema check.
pub fn sealed_open(data: &[u8]) {
    let w = world();
    let r = sealed_record(data);
    ingest(&r.bytes);
    for reader in [SEALED_MEMBERS[0], SEALED_AUTHOR].map(|i| &w.orgs[i]) {
        if let Ok(opened) = sealed::open(&r, &reader.key(), reader.encryption_secrets()) {
            let _ = check::prepare_opened(r.clone(), &opened.schema, &opened.payload);
        }
    }
}

/// Bundle reading: magic, header, length-prefixed records, each ingested.
pub fn bundle(data: &[u8]) {
    let Ok(reader) = crate::bundle::Reader::new(Cursor::new(data)) else {
        return;
    };
    let _ = reader.header().record_count;
    for e in reader.take(64).flatten() {
        ingest(&e.bytes);
    }
}

/// Reads one frame as the sync codec does, with the given limit.
fn frame(data: &[u8], request: bool) -> Option<Vec<u8>> {
    let mut codec = Codec::default();
    let mut io = futures::io::Cursor::new(data);
    if request {
        block_on(codec.read_request(&PROTOCOL, &mut io)).ok()
    } else {
        block_on(codec.read_response(&PROTOCOL, &mut io)).ok()
    }
}

fn buckets(b: &pb::Buckets) {
    let w = world();
    let pairs = w.set.buckets_to_reconcile(b).buckets;
    let _ = w.set.ids_in(&pairs);
    let _ = w.set.ids_in(&parse_bucket_refs(&b.buckets));
}

/// A sync request frame from a peer: codec, `SyncRequest`, and the pure part of the
/// answer (bucket comparison, id lookups, record checks).
pub fn sync_request(data: &[u8]) {
    let Some(bytes) = frame(data, true) else {
        return;
    };
    let Some(kind) = pb::SyncRequest::decode(bytes.as_slice())
        .ok()
        .and_then(|r| r.kind)
    else {
        return;
    };
    let w = world();
    use pb::sync_request::Kind;
    match kind {
        Kind::Hello(h) => ingest(&h.certificate),
        Kind::Summary(s) => buckets(&w.set.differing_buckets(&s)),
        Kind::Reconcile(r) => {
            let _ = w.set.ids_in(&parse_bucket_refs(&r.buckets));
            for id in &r.ids {
                if let Some(id) = RecordId::from_slice(id) {
                    let _ = w.set.contains(&id);
                }
            }
        }
        Kind::Push(p) => p.records.iter().take(64).for_each(|r| ingest(r)),
        Kind::Leaves(l) => {
            if let Ok(author) = OrgKey::from_bytes(&l.author) {
                let _ = w.set.entries_after(&author, l.after).len();
            }
        }
    }
}

/// A sync response frame from a peer: codec, `SyncResponse`, and what the initiator
/// does with it.
pub fn sync_response(data: &[u8]) {
    let Some(bytes) = frame(data, false) else {
        return;
    };
    let Some(kind) = pb::SyncResponse::decode(bytes.as_slice())
        .ok()
        .and_then(|r| r.kind)
    else {
        return;
    };
    use pb::sync_response::Kind;
    match kind {
        Kind::Hello(h) => ingest(&h.certificate),
        Kind::Buckets(b) => buckets(&b),
        Kind::Result(r) => {
            r.records.iter().take(64).for_each(|r| ingest(r));
            let _ = r.wanted.iter().filter_map(|id| RecordId::from_slice(id));
        }
        Kind::Ack(a) => {
            let _ = a.stored.saturating_add(a.refused);
        }
        Kind::Error(e) => {
            let _ = e.message.chars().take(200).collect::<String>();
        }
        Kind::LeafPage(p) => leaf_page(&p),
    }
}

/// What the initiator does with a leaf page: every checkpoint in it through the full
/// check, then the head recomputed from the leaves (`Node::vouched` without the store).
fn leaf_page(page: &pb::LeafPage) {
    let leaves: std::collections::BTreeMap<u64, RecordId> = page
        .seqs
        .iter()
        .zip(&page.ids)
        .filter_map(|(s, id)| Some((*s, RecordId::from_slice(id)?)))
        .collect();
    for bytes in page.checkpoints.iter().take(8) {
        if let Ok(p) = check::prepare(bytes) {
            if let Some(c) =
                crate::merkle::Checkpoint::of_record(&p.record.schema, &p.record.payload)
            {
                let _ = crate::merkle::vouched(&c, &leaves);
            }
        }
    }
}

/// A gossip announcement.
pub fn gossip_announce(data: &[u8]) {
    if let Ok(a) = pb::Announce::decode(data) {
        let _ = RecordId::from_slice(&a.id);
        let _ = OrgKey::from_bytes(&a.author);
    }
}

/// An operator's finding input document, through schema validation and column
/// extraction.
pub fn finding_input(data: &[u8]) {
    let Ok(input) = FindingInput::parse(data, "fuzz.json") else {
        return;
    };
    let _ = FindingIndex::extract(&input.finding);
    let payload = crate::finding::to_payload(&input.finding);
    let r = sign(&world().orgs[3], 1, None, FINDING_SCHEMA, None, payload);
    if r.bytes.len() <= record::MAX_RECORD_BYTES {
        check::prepare(&r.bytes).expect("a finding accepted as input is accepted at ingest");
    }
}

/// Charter drafts, member cards and proposed changes, as `coalition charter` reads them.
pub fn charter_document(data: &[u8]) {
    if let Ok(sc) = serde_json::from_slice::<SignedCharter>(data) {
        let _ = sc.check();
        let _ = sc.missing();
        let _ = sc.charter.validate();
        let _ = sc.charter.id();
    }
    let _ = serde_json::from_slice::<Member>(data);
    if let Ok(change) = serde_json::from_slice::<Change>(data) {
        let _ = change.to_string();
        let _ = world()
            .membership
            .current()
            .apply(&change, &RecordId::of(data));
    }
}

/// The node's `config.toml`, and the network settings derived from it.
pub fn config_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = toml::from_str::<crate::config::Config>(text) else {
        return;
    };
    let _ = crate::net::NetConfig::from_config(&config);
    let written = toml::to_string_pretty(&config).expect("a parsed config serialises");
    toml::from_str::<crate::config::Config>(&written).expect("a written config parses");
}

/// API query strings, as the HTTP API's extractor and query parser read them.
pub fn api_query(data: &[u8]) {
    let Ok(qs) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(uri) = format!("/api/v1/findings?{qs}").parse::<axum::http::Uri>() else {
        return;
    };
    let Ok(axum::extract::Query(pairs)) =
        axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&uri)
    else {
        return;
    };
    if let Ok(r) = crate::query::Request::from_pairs(&pairs) {
        let _ = r.query.normalised();
    }
}

/// A `sealed/v1` payload of a finding for [`sealed_recipients`]. Sealing is randomised
/// (content key, HPKE ephemeral keys), so unlike the other seeds this one differs at each
/// call; `seeds_are_current` checks that the kept one still opens instead.
fn sealed_seed(finding_payload: &[u8]) -> Vec<u8> {
    let w = world();
    sealed::seal(
        &w.orgs[SEALED_AUTHOR].key(),
        FINDING_SCHEMA,
        finding_payload,
        &sealed_recipients(),
    )
    .expect("the fixed organisations' keys are usable")
    .payload
}

fn framed(message: &[u8]) -> Vec<u8> {
    [&(message.len() as u32).to_be_bytes()[..], message].concat()
}

/// Valid inputs to start each target from (`fuzz/seeds/<target>/`, written by the test
/// `seeds_are_current` when `COALITION_WRITE_FUZZ_SEEDS=1`): a fuzzer finds deep paths
/// faster from a well-formed record, bundle or frame than from nothing.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let w = world();
    let example = include_bytes!("../../schemas/examples/01-rs-belgrade-protest-force.json");
    let input = FindingInput::parse(example, "example").expect("the shipped example is valid");
    let finding_payload = crate::finding::to_payload(&input.finding);
    let finding = sign(
        &w.orgs[3],
        1,
        None,
        FINDING_SCHEMA,
        None,
        finding_payload.clone(),
    );
    let records = vec![w.charter.bytes.clone(), finding.bytes.clone()];
    let body = |r: &Record| {
        SignedRecord::decode(r.bytes.as_slice())
            .expect("a signed record decodes")
            .body
            .to_vec()
    };
    let change = Change::Threshold {
        threshold: 4,
        low_threshold_acknowledged: false,
    };
    let proposal = serde_json::to_vec(&serde_json::json!({ "change": &change })).unwrap();
    let mut bundle = Vec::new();
    let header = pb::BundleHeader {
        record_count: records.len() as u64,
        ..Default::default()
    };
    crate::bundle::write(&mut bundle, header, &records).expect("writing to memory");
    let summary = w.set.summary();
    let buckets = w.set.differing_buckets(&pb::Summary::default());
    let request = |kind| framed(&pb::SyncRequest { kind: Some(kind) }.encode_to_vec());
    let response = |kind| framed(&pb::SyncResponse { kind: Some(kind) }.encode_to_vec());
    use pb::{sync_request as rq, sync_response as rs};
    let hello = pb::Hello {
        certificate: w.charter.bytes.clone().into(),
        ..Default::default()
    };
    let member = serde_json::to_vec(w.membership.current().members.values().next().unwrap());
    vec![
        ("record_envelope", w.charter.bytes.clone()),
        ("record_envelope", finding.bytes.clone()),
        ("record_body", body(&w.charter)),
        ("record_body", body(&finding)),
        ("record_payload", [&[0u8][..], &finding_payload].concat()),
        ("record_payload", [&[0x85u8][..], &proposal].concat()),
        ("bundle", bundle),
        ("sync_request", request(rq::Kind::Hello(hello.clone()))),
        ("sync_request", request(rq::Kind::Summary(summary))),
        (
            "sync_request",
            request(rq::Kind::Push(pb::Push {
                records: records.iter().map(|r| r.clone().into()).collect(),
            })),
        ),
        ("sync_response", response(rs::Kind::Hello(hello))),
        ("sync_response", response(rs::Kind::Buckets(buckets))),
        (
            "sync_response",
            response(rs::Kind::Result(pb::ReconcileResult {
                records: records.iter().map(|r| r.clone().into()).collect(),
                wanted: vec![finding.id.0.to_vec().into()],
                more: true,
            })),
        ),
        (
            "gossip_announce",
            pb::Announce {
                id: finding.id.0.to_vec().into(),
                author: finding.author.as_bytes().to_vec().into(),
                seq: 1,
            }
            .encode_to_vec(),
        ),
        ("finding_input", example.to_vec()),
        ("sealed_open", sealed_seed(&finding_payload)),
        ("charter_document", w.charter.payload.clone()),
        ("charter_document", member.unwrap()),
        ("charter_document", serde_json::to_vec(&change).unwrap()),
        (
            "config_toml",
            include_bytes!("../../deploy/config.example.toml").to_vec(),
        ),
        (
            "api_query",
            b"country=RS,XK&category=detention&group_by=month&limit=10".to_vec(),
        ),
        (
            "api_query",
            format!(
                "author={}&from=2024-01-01&to=2024-12-31&q=police",
                finding.author.to_hex()
            )
            .into_bytes(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fixed world is consistent: its records pass every check the targets apply.
    #[test]
    fn the_fixed_world_is_valid() {
        let w = world();
        assert!(check::prepare(&w.charter.bytes).is_ok());
        assert_eq!(w.membership.current().members.len(), 5);
    }

    /// Replays every input kept under `fuzz/regressions/<target>/`: each made a target
    /// crash once. Fails, naming the file, if any of them crashes again; fails too on a
    /// folder or a `fuzz_targets/` file that names no target, so none is silently skipped.
    #[test]
    fn fuzz_regressions() {
        let fuzz = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
        let known = |name: &str| TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f);
        for (name, _) in TARGETS {
            let file = fuzz.join("fuzz_targets").join(format!("{name}.rs"));
            assert!(file.is_file(), "{} is missing", file.display());
        }
        for e in std::fs::read_dir(fuzz.join("fuzz_targets")).unwrap() {
            let path = e.unwrap().path();
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            assert!(
                known(&stem).is_some(),
                "{} is not in TARGETS",
                path.display()
            );
        }
        let mut replayed = 0;
        let mut failed = Vec::new();
        for dir in std::fs::read_dir(fuzz.join("regressions")).unwrap() {
            let dir = dir.unwrap().path();
            if !dir.is_dir() {
                continue;
            }
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            let f = known(&name).unwrap_or_else(|| panic!("{} names no target", dir.display()));
            for input in std::fs::read_dir(&dir).unwrap() {
                let path = input.unwrap().path();
                let bytes = std::fs::read(&path).unwrap();
                replayed += 1;
                if std::panic::catch_unwind(|| f(&bytes)).is_err() {
                    failed.push(path.display().to_string());
                }
            }
        }
        assert!(
            failed.is_empty(),
            "fuzz regressions crash again: {failed:?}"
        );
        eprintln!("{replayed} fuzz regression inputs replayed");
    }

    /// The seeds in `fuzz/seeds/` are what [`seeds`] makes (rewritten with
    /// `COALITION_WRITE_FUZZ_SEEDS=1`), so they stay valid as formats change.
    #[test]
    fn seeds_are_current() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
        let write = std::env::var_os("COALITION_WRITE_FUZZ_SEEDS").is_some();
        let mut n: std::collections::BTreeMap<&str, usize> = Default::default();
        for (target, bytes) in seeds() {
            let i = n.entry(target).or_default();
            *i += 1;
            let path = dir.join(target).join(format!("seed-{i}"));
            if write {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &bytes).unwrap();
            }
            // Seeds carry the current time nowhere, so they are reproducible, except the
            // sealed one (fresh keys at each sealing): it must still open and check.
            let kept = std::fs::read(&path).unwrap_or_default();
            let current = if target == "sealed_open" {
                sealed_seed_opens(&kept)
            } else {
                kept == bytes
            };
            assert!(
                current,
                "{} is stale: rerun with COALITION_WRITE_FUZZ_SEEDS=1",
                path.display()
            );
            let f = TARGETS.iter().find(|(n, _)| *n == target).unwrap().1;
            f(&bytes);
        }
    }

    /// Whether `payload` is a sealed finding every fixed recipient opens and checks, and
    /// an organisation outside its audience cannot open.
    fn sealed_seed_opens(payload: &[u8]) -> bool {
        let w = world();
        let r = sealed_record(payload);
        check::prepare(&r.bytes).is_ok()
            && sealed_recipients().iter().all(|recipient| {
                let o = w.orgs.iter().find(|o| o.key() == recipient.org).unwrap();
                sealed::open(&r, &o.key(), o.encryption_secrets()).is_ok_and(|opened| {
                    check::prepare_opened(r.clone(), &opened.schema, &opened.payload)
                        .is_ok_and(|p| p.finding.is_some())
                })
            })
            && sealed::open(&r, &w.orgs[1].key(), w.orgs[1].encryption_secrets()).is_err()
    }

    /// Every target runs on a few ordinary inputs.
    #[test]
    fn every_target_accepts_ordinary_inputs() {
        for (_, f) in TARGETS {
            for input in [&b""[..], b"\0", b"{}", &world().charter.bytes] {
                f(input);
            }
        }
    }
}
