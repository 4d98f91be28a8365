//! The sync protocol's two sides and the certificate check, independent of the swarm:
//! the event loop hands requests to these functions and carries their messages.

use std::collections::HashSet;
use std::sync::Arc;

use coalition_proto::v1 as pb;
use libp2p::{gossipsub, PeerId};
use prost::Message;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot, Mutex};

use crate::audience;
use crate::charter::{Membership, NODE_CERT_SCHEMA};
use crate::identity::{Identity, OrgKey};
use crate::node::{CheckedRecords, Node, NodeError};
use crate::now_ms;
use crate::record::{self, RecordId};
use crate::verify::is_membership;

use super::codec::MAX_RESPONSE_BYTES;
use super::event_loop::Command;
use super::index::Index;
use super::sync::{bucket_refs, parse_bucket_refs, SyncSet, BUCKETS_PER_RECONCILE};

/// Certificates are renewed when less than this remains.
const CERT_RENEW_MS: i64 = 7 * 86_400_000;
/// Validity of automatically issued certificates.
const CERT_VALIDITY_MS: i64 = 90 * 86_400_000;
/// Room left in a frame for protobuf overhead.
const FRAME_SLACK: usize = 64 * 1024;
/// Records read from the store at a time while filling a page.
const PAGE_READ: usize = 400;
/// Checked pages that may wait for the writer.
const CHECKED_QUEUE: usize = 2;
/// Records at which the writer stops taking waiting pages into one transaction.
const STORE_BATCH: usize = 8_000;
/// Reconcile rounds per bucket chunk before giving up (a peer that keeps sending).
const MAX_ROUNDS: usize = 10_000;

/// Returns a valid certificate for `peer_id` from the store, issuing one if needed.
pub(super) async fn ensure_certificate(
    node: &Node,
    identity: &Identity,
    peer_id: &PeerId,
) -> Result<Vec<u8>, NodeError> {
    let now = now_ms();
    for r in node
        .store()
        .records_with_schemas(&[NODE_CERT_SCHEMA])
        .await?
        .into_iter()
        .rev()
    {
        if r.author != identity.key() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap_or_default();
        if v["peer_id"] == peer_id.to_string()
            && v["expires_at_ms"].as_i64().unwrap_or(0) > now + CERT_RENEW_MS
            && node.membership().await?.is_none_or(|m| m.judge(&r).is_ok())
        {
            return Ok(r.bytes);
        }
    }
    Ok(node
        .issue_node_cert(identity, &peer_id.to_string(), now + CERT_VALIDITY_MS)
        .await?
        .bytes)
}

/// Checks a peer's certificate: a valid `node-cert/v1` record, for this peer id, not
/// expired, signed by an organisation that is a current member.
pub(super) fn verify_certificate(
    bytes: &[u8],
    peer: &PeerId,
    membership: Option<&Membership>,
) -> Result<(OrgKey, i64), String> {
    let p =
        crate::check::prepare(bytes).map_err(|e| format!("certificate does not verify: {e}"))?;
    if p.record.schema != NODE_CERT_SCHEMA {
        return Err(format!(
            "certificate has schema {}, expected {NODE_CERT_SCHEMA}",
            p.record.schema
        ));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&p.record.payload).map_err(|e| e.to_string())?;
    if v["peer_id"] != peer.to_string() {
        return Err("certificate is for another peer id".into());
    }
    let expires = v["expires_at_ms"].as_i64().unwrap_or(0);
    if expires <= now_ms() {
        return Err("certificate expired".into());
    }
    let m = membership.ok_or("this node has no coalition charter yet")?;
    m.judge(&p.record)?;
    if !m.current().is_member(&p.record.author) {
        return Err(format!(
            "organisation {} is not a current member",
            p.record.author.short()
        ));
    }
    Ok((p.record.author, expires))
}

/// Gossip message id: the announced record id (content-addressed), so the same record
/// announced twice is one message.
pub(super) fn gossip_message_id(m: &gossipsub::Message) -> gossipsub::MessageId {
    match pb::Announce::decode(m.data.as_slice()) {
        Ok(a) if a.id.len() == 32 => gossipsub::MessageId::from(a.id.to_vec()),
        _ => gossipsub::MessageId::from(Sha256::digest(&m.data).to_vec()),
    }
}

/// Counters of one sync run, as seen by the node that initiated it. Bytes are the
/// `/coalition/sync/1` frames (4-byte length prefix included) in both directions;
/// Noise, Yamux, TCP/QUIC overhead and gossip are not counted.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct SyncStats {
    /// Request-response round trips.
    pub round_trips: u64,
    /// Bytes sent (frames).
    pub bytes_sent: u64,
    /// Bytes received (frames).
    pub bytes_received: u64,
    /// Records received and stored.
    pub stored: u64,
    /// Records received and refused.
    pub refused: u64,
    /// Records received that failed verification (a violation by the sender).
    pub invalid: u64,
    /// Records the peer lacks (it pulls them in its own sync).
    pub wanted: u64,
    /// Membership records among those stored.
    pub membership_stored: bool,
}

/// What storing one page of pulled records came to.
#[derive(Debug, Default)]
struct PageOutcome {
    stored: u64,
    refused: u64,
    invalid: u64,
    membership_stored: bool,
}

impl SyncStats {
    fn add(&mut self, page: PageOutcome) {
        self.stored += page.stored;
        self.refused += page.refused;
        self.invalid += page.invalid;
        self.membership_stored |= page.membership_stored;
    }
}

/// A page of pulled records that passed verification, waiting for the writer.
struct CheckedPage {
    records: CheckedRecords,
    /// Membership records of the page, stored during the check.
    membership_stored: bool,
}

/// Verifies one page of records pulled from a peer; membership records in it are
/// stored at once, so the pages after it are judged by them. Records the sync set
/// already lists as held are skipped.
async fn check_page(
    node: &Node,
    index: &Mutex<Index>,
    records: Vec<(RecordId, Vec<u8>)>,
) -> Result<CheckedPage, String> {
    let held: HashSet<RecordId> = {
        let ix = index.lock().await;
        records
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| ix.holds(id))
            .collect()
    };
    let records = node
        .check_from_peer(records, &held)
        .await
        .map_err(|e| e.to_string())?;
    // Nothing of the page but its membership records is stored yet.
    let membership_stored = records.stored() > 0;
    Ok(CheckedPage {
        records,
        membership_stored,
    })
}

/// Stores checked pages (one transaction) and logs what was refused.
async fn store_page(node: &Node, peer: PeerId, page: CheckedPage) -> Result<PageOutcome, String> {
    let report = node
        .store_from_peer(page.records)
        .await
        .map_err(|e| e.to_string())?;
    for f in &report.failures {
        tracing::warn!(%peer, record = f.id.as_deref().unwrap_or("?"), reason = %f.reason, "refused record from peer");
    }
    Ok(PageOutcome {
        stored: report.stored,
        refused: report.failures.len() as u64,
        // A record naming an epoch not seen yet is not the sender's fault: its membership
        // records may come in a later page; the next sync retries.
        invalid: report
            .failures
            .iter()
            .filter(|f| !f.reason.contains("not in this coalition's history"))
            .count() as u64,
        membership_stored: page.membership_stored,
    })
}

struct Client<'a> {
    commands: &'a mpsc::Sender<Command>,
    peer: PeerId,
    stats: SyncStats,
}

impl Client<'_> {
    async fn call(
        &mut self,
        kind: pb::sync_request::Kind,
    ) -> Result<pb::sync_response::Kind, String> {
        let req = pb::SyncRequest { kind: Some(kind) };
        self.stats.bytes_sent += req.encoded_len() as u64 + 4;
        self.stats.round_trips += 1;
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Request {
                peer: self.peer,
                request: req.encode_to_vec(),
                reply: tx,
            })
            .await
            .map_err(|_| "network stopped".to_string())?;
        let bytes = rx.await.map_err(|_| "network stopped".to_string())??;
        self.stats.bytes_received += bytes.len() as u64 + 4;
        // Decoded from a shared buffer, the records are slices of it, not copies.
        let resp = pb::SyncResponse::decode(prost::bytes::Bytes::from(bytes))
            .map_err(|e| format!("malformed response: {e}"))?;
        match resp.kind {
            Some(pb::sync_response::Kind::Error(e)) => Err(format!("peer refused: {}", e.message)),
            Some(k) => Ok(k),
            None => Err("empty response".into()),
        }
    }
}

/// Runs one sync as initiator with `peer` (organisation `peer_org`).
pub(super) async fn drive(
    node: &Node,
    index: &Mutex<Index>,
    commands: &mpsc::Sender<Command>,
    me: OrgKey,
    peer: PeerId,
    peer_org: OrgKey,
) -> Result<SyncStats, String> {
    if !current_member(node, &peer_org).await {
        return Err("peer's organisation is no longer a current member".into());
    }
    let mut client = Client {
        commands,
        peer,
        stats: SyncStats::default(),
    };
    let set = common(node, index, &me, &peer_org).await?;
    let buckets = match client
        .call(pb::sync_request::Kind::Summary(set.summary()))
        .await?
    {
        pb::sync_response::Kind::Buckets(b) => b,
        _ => return Err("unexpected response to summary".into()),
    };
    let todo = set.buckets_to_reconcile(&buckets);
    // Three stages, each running as soon as it has work: fetching pages, verifying them
    // (on the verification threads), and storing them (on the write connection). They
    // pass pages through short queues, so at most seven pages (~56 MB) are in memory and
    // no stage waits for a slower one to finish a page that it does not need. A stage
    // that fails closes its queues, which ends the stages before it; pages already
    // fetched are still verified and stored on their own merits.
    let (page_tx, mut page_rx) = mpsc::channel::<Vec<(RecordId, Vec<u8>)>>(1);
    let (checked_tx, mut checked_rx) = mpsc::channel::<CheckedPage>(CHECKED_QUEUE);
    let fetch = async {
        let pages = page_tx;
        let mut wanted: HashSet<RecordId> = HashSet::new();
        for chunk in todo.chunks(BUCKETS_PER_RECONCILE) {
            let mine: Vec<RecordId> = set.ids_in(chunk);
            // What earlier pages of this chunk brought; records of other chunks lie in
            // other buckets, so the request never carries more ids than the chunk holds.
            let mut received: HashSet<RecordId> = HashSet::new();
            for _ in 0..MAX_ROUNDS {
                let mut ids: Vec<RecordId> = mine.clone();
                ids.extend(received.iter().copied());
                let request = pb::Reconcile {
                    buckets: bucket_refs(chunk),
                    ids: ids.iter().map(|i| i.0.to_vec().into()).collect(),
                };
                let asked = std::time::Instant::now();
                let result = match client
                    .call(pb::sync_request::Kind::Reconcile(request))
                    .await?
                {
                    pb::sync_response::Kind::Result(r) => r,
                    _ => return Err("unexpected response to reconcile".to_string()),
                };
                wanted.extend(
                    result
                        .wanted
                        .iter()
                        .filter_map(|b| RecordId::from_slice(b))
                        .filter(|id| set.contains(id)),
                );
                let records: Vec<(RecordId, Vec<u8>)> = result
                    .records
                    .iter()
                    .map(|b| (RecordId::of(b), b.to_vec()))
                    .collect();
                let count = records.len();
                tracing::debug!(%peer, count, took_us = asked.elapsed().as_micros() as u64, "sync page fetched");
                received.extend(records.iter().map(|(id, _)| *id));
                if count > 0 && pages.send(records).await.is_err() {
                    // Verification or storage failed; their error is the one to report.
                    return Ok(wanted.len() as u64);
                }
                if !result.more || count == 0 {
                    break;
                }
            }
        }
        Ok(wanted.len() as u64)
    };
    let check = async {
        let checked = checked_tx;
        while let Some(records) = page_rx.recv().await {
            let t = std::time::Instant::now();
            let page = check_page(node, index, records).await?;
            tracing::debug!(%peer, took_us = t.elapsed().as_micros() as u64, "sync page checked");
            if checked.send(page).await.is_err() {
                break;
            }
        }
        Ok::<(), String>(())
    };
    let store = async {
        let mut outcome = SyncStats::default();
        while let Some(mut page) = checked_rx.recv().await {
            // Pages that were checked while the last one was being written go into the
            // same transaction: fewer commits, and each commit rewrites the index pages
            // that random record ids touch all over the file.
            while page.records.len() < STORE_BATCH {
                match checked_rx.try_recv() {
                    Ok(next) => {
                        page.records.append(next.records);
                        page.membership_stored |= next.membership_stored;
                    }
                    Err(_) => break,
                }
            }
            let t = std::time::Instant::now();
            outcome.add(store_page(node, peer, page).await?);
            tracing::debug!(%peer, took_us = t.elapsed().as_micros() as u64, "sync page stored");
        }
        Ok::<SyncStats, String>(outcome)
    };
    let (fetched, checked, stored) = tokio::join!(fetch, check, store);
    let stored = stored?;
    checked?;
    // What the responder wants from us it pulls in its own sync (both sides sync when
    // they verify each other and every sync_interval); pushing it as well sent every
    // record of a first sync twice (docs/PROTOCOL.md §4.2).
    client.stats.wanted = fetched?;
    client.stats.stored = stored.stored;
    client.stats.refused = stored.refused;
    client.stats.invalid = stored.invalid;
    client.stats.membership_stored = stored.membership_stored;
    Ok(client.stats)
}

async fn current_member(node: &Node, org: &OrgKey) -> bool {
    matches!(node.membership().await, Ok(Some(m)) if m.current().is_member(org))
}

async fn common(
    node: &Node,
    index: &Mutex<Index>,
    me: &OrgKey,
    peer: &OrgKey,
) -> Result<Arc<SyncSet>, String> {
    let mut ix = index.lock().await;
    ix.refresh(node.store()).await.map_err(|e| e.to_string())?;
    Ok(ix.common(me, peer))
}

fn error(message: impl Into<String>) -> pb::SyncResponse {
    pb::SyncResponse {
        kind: Some(pb::sync_response::Kind::Error(pb::Error {
            message: message.into(),
        })),
    }
}

/// Answers a verified member's sync request. `Err` marks a protocol violation.
pub(super) async fn answer(
    node: &Node,
    index: &Mutex<Index>,
    me: OrgKey,
    peer: PeerId,
    peer_org: OrgKey,
    request: pb::sync_request::Kind,
) -> (pb::SyncResponse, Result<(), String>) {
    use pb::sync_request::Kind;
    // Judge the peer by the membership in the store now, not by what the event loop saw
    // at its last check: a member removed a moment ago gets nothing more.
    if !current_member(node, &peer_org).await {
        return (
            error("not a current member"),
            Err("organisation is no longer a current member".into()),
        );
    }
    match request {
        Kind::Hello(_) => (error("hello already accepted"), Ok(())),
        Kind::Summary(summary) => match common(node, index, &me, &peer_org).await {
            Ok(set) => (
                pb::SyncResponse {
                    kind: Some(pb::sync_response::Kind::Buckets(
                        set.differing_buckets(&summary),
                    )),
                },
                Ok(()),
            ),
            Err(e) => (error(format!("internal error: {e}")), Ok(())),
        },
        Kind::Reconcile(rec) => {
            if rec.buckets.len() > BUCKETS_PER_RECONCILE {
                return (
                    error("too many buckets"),
                    Err("reconcile with too many buckets".into()),
                );
            }
            let set = match common(node, index, &me, &peer_org).await {
                Ok(s) => s,
                Err(e) => return (error(format!("internal error: {e}")), Ok(())),
            };
            let refs = parse_bucket_refs(&rec.buckets);
            let theirs: HashSet<RecordId> = rec
                .ids
                .iter()
                .filter_map(|b| RecordId::from_slice(b))
                .collect();
            let mine = set.ids_in(&refs);
            let mine_set: HashSet<RecordId> = mine.iter().copied().collect();
            let held = index.lock().await;
            let wanted: Vec<_> = theirs
                .iter()
                .filter(|id| !mine_set.contains(id) && !held.holds(id))
                .map(|id| id.0.to_vec().into())
                .collect();
            // Read in storage order (see `Store::bytes_at`).
            let mut to_send: Vec<(i64, RecordId)> = mine
                .into_iter()
                .filter(|id| !theirs.contains(id))
                .filter_map(|id| held.rowid(&id).map(|r| (r, id)))
                .collect();
            drop(held);
            to_send.sort_unstable_by_key(|(rowid, _)| *rowid);
            // Read only about what fits in one page (records are ~1-2 KB; a chunk can
            // hold thousands more than a page carries).
            let mut records = Vec::new();
            let (mut read, mut consumed) = (0, 0);
            for part in to_send.chunks(PAGE_READ) {
                consumed += part.len();
                match node.store().bytes_at(part).await {
                    Ok(r) => {
                        read += r.iter().map(|(_, b)| b.len() + 8).sum::<usize>();
                        records.extend(r.into_iter().map(|(_, b)| b));
                    }
                    Err(e) => return (error(format!("internal error: {e}")), Ok(())),
                }
                // Membership records still go first among what was read; only a chunk
                // larger than a page (thousands of records) is read in parts.
                if read > MAX_RESPONSE_BYTES {
                    break;
                }
            }
            let unread = consumed < to_send.len();
            // Cached: the key is read once per record, not once per comparison.
            records.sort_by_cached_key(|b| !is_membership(b));
            let mut size = 0;
            let mut out = Vec::new();
            let mut more = unread;
            for r in records {
                if size + r.len() + 8 > MAX_RESPONSE_BYTES - FRAME_SLACK {
                    more = true;
                    break;
                }
                size += r.len() + 8;
                out.push(r.into());
            }
            (
                pb::SyncResponse {
                    kind: Some(pb::sync_response::Kind::Result(pb::ReconcileResult {
                        records: out,
                        wanted,
                        more,
                    })),
                },
                Ok(()),
            )
        }
        Kind::Push(push) => {
            let records: Vec<Vec<u8>> = push.records.iter().map(|b| b.to_vec()).collect();
            // Only records this node may receive are accepted from a push: by their own
            // audience, or by a grant from their author (in this push or already held).
            let batch_grants: Vec<(RecordId, OrgKey, record::Audience)> = records
                .iter()
                .filter_map(|b| record::verify(b).ok())
                .filter_map(|g| audience::grant_target(&g).map(|(t, a)| (t, g.author, a)))
                .collect();
            let (ok, bad): (Vec<_>, Vec<_>) = {
                let ix = index.lock().await;
                records.into_iter().partition(|b| {
                    addressed_to(b, &me, |id, author| {
                        batch_grants.iter().any(|(t, a, aud)| {
                            t == id && a == author && audience::reaches(aud, &me)
                        }) || ix.granted_to(id, author, &me)
                    })
                })
            };
            let report = match node.ingest_from_peer(ok).await {
                Ok(r) => r,
                Err(e) => return (error(format!("internal error: {e}")), Ok(())),
            };
            for f in &report.failures {
                tracing::warn!(%peer, record = f.id.as_deref().unwrap_or("?"), reason = %f.reason, "refused pushed record");
            }
            let refused = report.failures.len() + bad.len();
            let invalid = bad.len()
                + report
                    .failures
                    .iter()
                    .filter(|f| !f.reason.contains("not in this coalition's history"))
                    .count();
            let verdict = if invalid > 0 {
                Err(format!("{refused} invalid or misaddressed records pushed"))
            } else {
                Ok(())
            };
            (
                pb::SyncResponse {
                    kind: Some(pb::sync_response::Kind::Ack(pb::PushAck {
                        stored: report.stored as u32,
                        refused: refused as u32,
                    })),
                },
                verdict,
            )
        }
    }
}

/// Whether `me` may receive a pushed record: its author, its own audience, or a grant.
fn addressed_to(bytes: &[u8], me: &OrgKey, granted: impl Fn(&RecordId, &OrgKey) -> bool) -> bool {
    match record::verify(bytes) {
        Ok(r) => audience::entitled(&r.author, &r.audience, me) || granted(&r.id, &r.author),
        // Invalid records are refused (and counted) by ingest.
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::charter::{Member, SignedCharter};
    use crate::config::Home;
    use crate::finding::to_payload;
    use crate::record::{Audience, Draft};

    fn finding() -> Vec<u8> {
        to_payload(&serde_json::json!({
            "title": "Checkpoint stops",
            "summary": "Repeated identity checks of local residents at a temporary checkpoint.",
            "language": "en",
            "occurred": {"start": "2025-10-01", "precision": "month"},
            "location": {"country": "RS"},
            "category": "intimidation_harassment",
            "actors": [{"type": "gendarmerie"}],
            "sources": [{"type": "victim"}],
            "confidence": "medium"
        }))
    }

    /// A node whose charter has two members: itself and `peer`.
    struct TwoMembers {
        _dir: tempfile::TempDir,
        node: Node,
        me: Identity,
        peer: Identity,
        epoch: [u8; 32],
    }

    async fn two_members() -> TwoMembers {
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

    fn draft(epoch: [u8; 32]) -> Draft {
        Draft {
            schema: "finding/v1".into(),
            audience: Audience::Coalition,
            supersedes: None,
            epoch: Some(epoch),
            payload: finding(),
            created_at_ms: 0,
        }
    }

    fn with_ids(records: &[&[u8]]) -> Vec<(RecordId, Vec<u8>)> {
        records
            .iter()
            .map(|b| (RecordId::of(b), b.to_vec()))
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pages_stored_together_keep_each_record_once_and_every_refusal() {
        let TwoMembers {
            _dir,
            node,
            peer,
            epoch,
            ..
        } = two_members().await;
        let r1 = record::sign(&peer, 1, None, draft(epoch));
        let r2 = record::sign(&peer, 2, Some(r1.id), draft(epoch));
        let r3 = record::sign(&peer, 3, Some(r2.id), draft(epoch));
        let mut tampered = r3.bytes.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        node.ingest_from_peer(vec![r1.bytes.clone()]).await.unwrap();
        let before = node.store().count().await.unwrap();
        // Page one: r1 (the caller knows it is held) and r2. Page two: r2 again (held by
        // now, but nobody said so), a tampered record, and r3.
        let held: HashSet<RecordId> = [r1.id].into();
        let mut first = node
            .check_from_peer(with_ids(&[&r1.bytes, &r2.bytes]), &held)
            .await
            .unwrap();
        let second = node
            .check_from_peer(
                with_ids(&[&r2.bytes, &tampered, &r3.bytes]),
                &HashSet::new(),
            )
            .await
            .unwrap();
        first.append(second);
        assert_eq!(first.len(), 3, "r2 twice and r3 passed the checks");
        let report = node.store_from_peer(first).await.unwrap();
        assert_eq!(report.read, 5);
        assert_eq!(report.stored, 2, "r2 and r3, once each");
        assert_eq!(report.duplicates, 2, "r1 skipped, r2's second copy ignored");
        assert_eq!(report.failures.len(), 1);
        assert_eq!(
            report.failures[0].index, 4,
            "the tampered record is the 4th of the two pages"
        );
        assert_eq!(node.store().count().await.unwrap(), before + 2);
        for r in [&r1, &r2, &r3] {
            assert_eq!(node.store().record(&r.id).await.unwrap().bytes, r.bytes);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn forged_tampered_and_garbage_pushes_store_nothing() {
        let TwoMembers {
            _dir,
            node,
            me,
            peer,
            epoch,
        } = two_members().await;
        let draft = || draft(epoch);
        let good = record::sign(&peer, 1, None, draft());
        let mut tampered = good.bytes.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        let forged = record::sign(&Identity::from_seed(&[8; 32]), 1, None, draft());
        let before = node.store().count().await.unwrap();
        let index = Mutex::new(Index::default());
        let from = libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id();
        let push = |records: Vec<Vec<u8>>| {
            pb::sync_request::Kind::Push(pb::Push {
                records: records.into_iter().map(Into::into).collect(),
            })
        };
        let (resp, verdict) = answer(
            &node,
            &index,
            me.key(),
            from,
            peer.key(),
            push(vec![
                tampered,
                forged.bytes.clone(),
                b"garbage".to_vec(),
                vec![0u8; 2 << 20],
            ]),
        )
        .await;
        assert!(verdict.is_err(), "a forged push was not a violation");
        match resp.kind {
            Some(pb::sync_response::Kind::Ack(a)) => assert_eq!((a.stored, a.refused), (0, 4)),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            node.store().count().await.unwrap(),
            before,
            "something from a forged push was stored"
        );
        let (_, verdict) = answer(
            &node,
            &index,
            me.key(),
            from,
            peer.key(),
            push(vec![good.bytes.clone()]),
        )
        .await;
        assert!(verdict.is_ok());
        assert_eq!(node.store().count().await.unwrap(), before + 1);
    }
}
