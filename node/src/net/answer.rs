//! The answering side of a sync, independent of the swarm: the event loop hands a
//! verified member's request to [`answer`] (in a task of its own) and sends the response
//! it returns. Every audience decision goes through `crate::audience` (directly, or
//! through the holdings [`Index`]).

use std::collections::HashSet;

use coalition_proto::v1 as pb;
use libp2p::PeerId;
use tokio::sync::Mutex;

use crate::audience;
use crate::identity::OrgKey;
use crate::node::Node;
use crate::record::{self, RecordId};
use crate::verify::is_membership;

use super::codec::MAX_RESPONSE_BYTES;
use super::driver::{common, current_member};
use super::error::{names_unknown_epoch, Violation};
use super::index::Index;
use super::sync::{parse_bucket_refs, BUCKETS_PER_RECONCILE};

/// Room left in a frame for protobuf overhead.
const FRAME_SLACK: usize = 64 * 1024;
/// Records read from the store at a time while filling a page.
const PAGE_READ: usize = 400;

/// An error response; `message` is what the peer is told.
pub(super) fn error_response(message: impl Into<String>) -> pb::SyncResponse {
    pb::SyncResponse {
        kind: Some(pb::sync_response::Kind::Error(pb::Error {
            message: message.into(),
        })),
    }
}

/// Answers a verified member's sync request. `Err` marks a protocol violation (the
/// response is sent all the same).
pub(super) async fn answer(
    node: &Node,
    index: &Mutex<Index>,
    me: OrgKey,
    peer: PeerId,
    peer_org: OrgKey,
    request: pb::sync_request::Kind,
) -> (pb::SyncResponse, Result<(), Violation>) {
    use pb::sync_request::Kind;
    // Judge the peer by the membership in the store now, not by what the event loop saw
    // at its last check: a member removed a moment ago gets nothing more.
    if !current_member(node, &peer_org).await {
        return (
            error_response("not a current member"),
            Err(Violation::NotMember),
        );
    }
    match request {
        Kind::Hello(_) => (error_response("hello already accepted"), Ok(())),
        Kind::Summary(summary) => match common(node, index, &me, &peer_org, &peer).await {
            Ok(set) => (
                pb::SyncResponse {
                    kind: Some(pb::sync_response::Kind::Buckets(
                        set.differing_buckets(&summary),
                    )),
                },
                Ok(()),
            ),
            Err(e) => (error_response(format!("internal error: {e}")), Ok(())),
        },
        Kind::Reconcile(rec) => {
            if rec.buckets.len() > BUCKETS_PER_RECONCILE {
                return (
                    error_response("too many buckets"),
                    Err(Violation::TooManyBuckets),
                );
            }
            let set = match common(node, index, &me, &peer_org, &peer).await {
                Ok(s) => s,
                Err(e) => return (error_response(format!("internal error: {e}")), Ok(())),
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
                    Err(e) => return (error_response(format!("internal error: {e}")), Ok(())),
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
                    addressed_to(b, &me, &peer_org, |id, author| {
                        batch_grants.iter().any(|(t, a, aud)| {
                            t == id && a == author && audience::reaches(aud, &me)
                        }) || ix.granted_to(id, author, &me)
                    })
                })
            };
            let report = match node.ingest_from_peer(ok).await {
                Ok(r) => r,
                Err(e) => return (error_response(format!("internal error: {e}")), Ok(())),
            };
            for f in &report.failures {
                tracing::warn!(%peer, record = f.id.as_deref().unwrap_or("?"), reason = %f.reason, "refused pushed record");
            }
            let refused = report.failures.len() + bad.len();
            let invalid = bad.len()
                + report
                    .failures
                    .iter()
                    .filter(|f| !names_unknown_epoch(&f.reason))
                    .count();
            let verdict = if invalid > 0 {
                Err(Violation::BadPush(refused))
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
fn addressed_to(
    bytes: &[u8],
    me: &OrgKey,
    peer_org: &OrgKey,
    granted: impl Fn(&RecordId, &OrgKey) -> bool,
) -> bool {
    match record::verify(bytes) {
        Ok(r) => {
            audience::entitled(&r.author, &r.audience, me)
                || audience::from_own_organisation(&r.author, me, peer_org)
                || granted(&r.id, &r.author)
        }
        // Invalid records are refused (and counted) by ingest.
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::net::test_support::{draft, two_members, TwoMembers};

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
