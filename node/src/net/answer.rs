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
/// Leaves a leaf page holds at most (~4 MB of ids and seqs).
pub(super) const LEAVES_PER_PAGE: usize = 100_000;
/// Bytes a leaf takes in a page, at most: a 32-byte id with its tag and length, and a
/// seq of up to 2^53 as a varint.
const LEAF_BYTES: usize = 34 + 8;
/// Bytes a record takes in a response beyond its own (protobuf tag and length).
const RECORD_OVERHEAD: usize = 8;

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
            Err(e) => internal(&peer, e),
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
                Err(e) => return internal(&peer, e),
            };
            let refs = parse_bucket_refs(&rec.buckets);
            let theirs: HashSet<RecordId> = rec
                .ids
                .iter()
                .filter_map(|b| RecordId::from_slice(b))
                .collect();
            let mine = set.ids_in(&refs);
            let mine_set: HashSet<RecordId> = mine.iter().copied().collect();
            // What the peer holds and this node does not share with it: judged on the
            // common set alone, so that naming an id this node holds outside it (a
            // private record, one for another member) gets the same answer as naming an
            // id it never saw.
            let wanted: Vec<_> = theirs
                .iter()
                .filter(|id| !mine_set.contains(id))
                .map(|id| id.0.to_vec().into())
                .collect();
            // Budget by bytes before reading: the index knows each record's size, so
            // only the records that fit one page are read, once each.
            let held = index.lock().await;
            let to_send: Vec<Planned> = mine
                .into_iter()
                .filter(|id| !theirs.contains(id))
                .filter_map(|id| {
                    held.planned(&id).map(|(rowid, size, membership)| Planned {
                        rowid,
                        id,
                        size: size as usize,
                        membership,
                    })
                })
                .collect();
            drop(held);
            let (page, more) = plan_page(to_send, MAX_RESPONSE_BYTES - FRAME_SLACK);
            let mut records = match node.store().bytes_at(&page).await {
                Ok(r) => r,
                Err(e) => return internal(&peer, e),
            };
            // Membership records first (the page holds all of them that fit, before any
            // other record); cached: the key is read once per record.
            records.sort_by_cached_key(|(_, b)| !is_membership(b));
            let out = records.into_iter().map(|(_, b)| b.into()).collect();
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
        Kind::Leaves(leaves) => {
            let Ok(author) = OrgKey::from_bytes(&leaves.author) else {
                return (
                    error_response("leaves: not an organisation key"),
                    Err(Violation::MalformedRequest),
                );
            };
            match leaf_page(node, index, &me, &peer_org, &peer, &author, leaves.after).await {
                Ok(page) => (
                    pb::SyncResponse {
                        kind: Some(pb::sync_response::Kind::LeafPage(page)),
                    },
                    Ok(()),
                ),
                Err(e) => internal(&peer, e),
            }
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
                Err(e) => return internal(&peer, e),
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

/// One page of `author`'s leaves after seq `after` among the records both this node and
/// `peer_org` may hold (the same common set a reconcile answers from, so a leaf page tells
/// nothing a reconcile would not), with the author's checkpoints among them whose
/// signatures this node verified. A page holds at most [`LEAVES_PER_PAGE`] leaves and fits
/// a response with its checkpoints.
async fn leaf_page(
    node: &Node,
    index: &Mutex<Index>,
    me: &OrgKey,
    peer_org: &OrgKey,
    peer: &PeerId,
    author: &OrgKey,
    after: u64,
) -> Result<pb::LeafPage, super::error::SyncError> {
    let set = common(node, index, me, peer_org, peer).await?;
    let entries = set.entries_after(author, after);
    let (mut page, mut more) = if entries.len() > LEAVES_PER_PAGE {
        (&entries[..LEAVES_PER_PAGE], true)
    } else {
        (entries, false)
    };
    // Where the checkpoints among the leaves are stored and their sizes, from the index;
    // the page ends where the leaves and checkpoints would not fit a response.
    let checkpoints: std::collections::HashMap<RecordId, (i64, u64)> = {
        let ix = index.lock().await;
        page.iter()
            .filter(|e| ix.is_checkpoint(&e.id))
            .filter_map(|e| {
                ix.planned(&e.id)
                    .map(|(rowid, size, _)| (e.id, (rowid, size)))
            })
            .collect()
    };
    let budget = MAX_RESPONSE_BYTES - FRAME_SLACK;
    let mut used = 0;
    for (i, e) in page.iter().enumerate() {
        used += LEAF_BYTES
            + checkpoints
                .get(&e.id)
                .map_or(0, |(_, size)| *size as usize + RECORD_OVERHEAD);
        if used > budget {
            page = &page[..i];
            more = true;
            break;
        }
    }
    let rows: Vec<(i64, RecordId)> = page
        .iter()
        .filter_map(|e| checkpoints.get(&e.id).map(|(rowid, _)| (*rowid, e.id)))
        .collect();
    // A checkpoint whose signature is still unchecked is not sent (`bytes_at`).
    let checkpoints = node.store().bytes_at(&rows).await?;
    Ok(pb::LeafPage {
        seqs: page.iter().map(|e| e.seq).collect(),
        ids: page.iter().map(|e| e.id.0.to_vec().into()).collect(),
        checkpoints: checkpoints.into_iter().map(|(_, b)| b.into()).collect(),
        more: more && !page.is_empty(),
    })
}

/// A record a sync answer may send, as the index knows it.
#[derive(Debug, Clone, Copy)]
struct Planned {
    rowid: i64,
    id: RecordId,
    size: usize,
    membership: bool,
}

/// The records of one page, by storage position, from what the index knows of each:
/// membership records first, then storage order, as many as fit `budget` bytes; and
/// whether any are left for another page. Nothing is read to decide.
fn plan_page(mut sizes: Vec<Planned>, budget: usize) -> (Vec<(i64, RecordId)>, bool) {
    sizes.sort_unstable_by_key(|p| (!p.membership, p.rowid));
    let mut used = 0;
    let mut page = Vec::new();
    for p in &sizes {
        if used + p.size + RECORD_OVERHEAD > budget {
            break;
        }
        used += p.size + RECORD_OVERHEAD;
        page.push((p.rowid, p.id));
    }
    let more = page.len() < sizes.len();
    (page, more)
}

/// The answer to a request this node could not serve for a reason of its own: the
/// detail goes to the log, the peer is told only that it failed.
fn internal(peer: &PeerId, e: impl std::fmt::Display) -> (pb::SyncResponse, Result<(), Violation>) {
    tracing::warn!(%peer, error = %e, "could not answer a sync request");
    (error_response("internal error; retry later"), Ok(()))
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
            audience::entitled(&r.author, &audience::carried(&r.schema, &r.audience), me)
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_leaf_page_lists_only_the_common_set_and_no_stranger_gets_one() {
        let TwoMembers {
            _dir,
            node,
            me,
            peer,
            ..
        } = two_members().await;
        let input = crate::finding::FindingInput::parse(
            include_bytes!("../../../schemas/examples/03-rs-presevo-checkpoint-harassment.json"),
            "03.json",
        )
        .unwrap();
        let shared = node
            .add_finding(&me, &input, record::Audience::Coalition)
            .await
            .unwrap()
            .finding;
        let private = node
            .add_finding(&me, &input, record::Audience::Private)
            .await
            .unwrap()
            .finding;
        let (checkpoint, _) = node.checkpoint(&me).await.unwrap();
        let index = Mutex::new(Index::default());
        let from = crate::net::test_support::peer_id(3);
        let leaves = |after: u64, author: Vec<u8>| {
            pb::sync_request::Kind::Leaves(pb::Leaves {
                author: author.into(),
                after,
            })
        };
        let me_bytes = me.key().as_bytes().to_vec();
        let (resp, verdict) = answer(
            &node,
            &index,
            me.key(),
            from,
            peer.key(),
            leaves(0, me_bytes.clone()),
        )
        .await;
        assert!(verdict.is_ok());
        let Some(pb::sync_response::Kind::LeafPage(page)) = resp.kind else {
            panic!("no leaf page: {resp:?}");
        };
        let ids: Vec<RecordId> = page
            .ids
            .iter()
            .filter_map(|b| RecordId::from_slice(b))
            .collect();
        assert!(ids.contains(&shared) && ids.contains(&checkpoint.id));
        assert!(
            !ids.contains(&private),
            "a leaf page named a private record"
        );
        assert!(page.seqs.windows(2).all(|w| w[0] < w[1]), "in seq order");
        assert_eq!(page.checkpoints.len(), 1);
        assert_eq!(RecordId::of(&page.checkpoints[0]), checkpoint.id);
        assert!(!page.more);
        // After the checkpoint's seq: nothing.
        let (resp, _) = answer(
            &node,
            &index,
            me.key(),
            from,
            peer.key(),
            leaves(checkpoint.seq, me_bytes.clone()),
        )
        .await;
        assert!(matches!(
            resp.kind,
            Some(pb::sync_response::Kind::LeafPage(p)) if p.ids.is_empty()
        ));
        // A stranger gets nothing; a malformed author is a violation.
        let stranger = Identity::from_seed(&[8; 32]).key();
        let (resp, verdict) =
            answer(&node, &index, me.key(), from, stranger, leaves(0, me_bytes)).await;
        assert_eq!(verdict, Err(Violation::NotMember));
        assert!(matches!(resp.kind, Some(pb::sync_response::Kind::Error(_))));
        let (_, verdict) = answer(
            &node,
            &index,
            me.key(),
            from,
            peer.key(),
            leaves(0, vec![1; 5]),
        )
        .await;
        assert_eq!(verdict, Err(Violation::MalformedRequest));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sealed_record_altered_in_transit_is_a_violation_and_an_intact_one_is_relayed() {
        let TwoMembers {
            _dir,
            node,
            me,
            peer,
            epoch,
        } = two_members().await;
        let payload = crate::finding::to_payload(&serde_json::json!({"title": "sealed"}));
        let author = crate::sealed::Recipient {
            org: peer.key(),
            key: peer.encryption_key(),
        };
        // For this organisation, but with the author's wrap only: this node relays it.
        let sealed = crate::sealed::seal(
            &peer.key(),
            crate::finding::FINDING_SCHEMA,
            &payload,
            &[author],
        )
        .unwrap();
        let good = record::sign(
            &peer,
            1,
            None,
            record::Draft {
                schema: crate::sealed::SEALED_SCHEMA.into(),
                audience: record::Audience::members(vec![me.key()]),
                payload: sealed.payload,
                ..draft(epoch)
            },
        );
        let mut altered = good.bytes.clone();
        let at = altered.len() - 80;
        altered[at] ^= 1;
        let index = Mutex::new(Index::default());
        let from = libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id();
        let push = |records: Vec<Vec<u8>>| {
            pb::sync_request::Kind::Push(pb::Push {
                records: records.into_iter().map(Into::into).collect(),
            })
        };
        let before = node.store().count().await.unwrap();
        let (_, verdict) = answer(
            &node,
            &index,
            me.key(),
            from,
            peer.key(),
            push(vec![altered]),
        )
        .await;
        assert!(
            verdict.is_err(),
            "an altered sealed record was not a violation"
        );
        assert_eq!(node.store().count().await.unwrap(), before);
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
        assert_eq!(
            node.store().count().await.unwrap(),
            before + 1,
            "held to relay"
        );
    }

    fn id(n: u8) -> RecordId {
        RecordId([n; 32])
    }

    #[test]
    fn a_page_is_planned_by_size_before_anything_is_read() {
        // Ten 1 MiB records and a charter stored last: the charter goes first, then as
        // many records as fit the budget, and the rest is left for another page.
        let planned = |rowid: i64, size: usize, membership: bool| Planned {
            rowid,
            id: id(rowid as u8),
            size,
            membership,
        };
        let mut sizes: Vec<_> = (1..=10).map(|i| planned(i, 1 << 20, false)).collect();
        sizes.push(planned(11, 900, true));
        let budget = MAX_RESPONSE_BYTES - FRAME_SLACK;
        let (page, more) = plan_page(sizes, budget);
        assert_eq!(page.first(), Some(&(11, id(11))), "membership first");
        assert_eq!(page.len(), 1 + 7, "{page:?}");
        assert!(more);
        assert_eq!(
            page[1..].iter().map(|(r, _)| *r).collect::<Vec<_>>(),
            (1..=7).collect::<Vec<i64>>()
        );
        let (page, more) = plan_page(vec![planned(1, 100, false)], budget);
        assert_eq!((page.len(), more), (1, false));
        assert_eq!(plan_page(Vec::new(), budget), (Vec::new(), false));
    }

    /// A peer that names an id it learned elsewhere (a private record of this node)
    /// must get the same `wanted` as for an id this node never saw.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wanted_does_not_reveal_records_held_outside_the_common_set() {
        let TwoMembers {
            _dir,
            node,
            me,
            peer,
            epoch,
        } = two_members().await;
        let head = node.store().chain_head(&me.key()).await.unwrap();
        let mut private = draft(epoch);
        private.audience = record::Audience::Private;
        let private = record::sign(
            &me,
            head.map_or(1, |(s, _)| s + 1),
            head.map(|(_, id)| id),
            private,
        );
        let report = node
            .ingest_from_peer(vec![private.bytes.clone()])
            .await
            .unwrap();
        assert_eq!(report.stored, 1, "{:?}", report.failures);
        let mut index = Index::default();
        index.refresh(node.store()).await.unwrap();
        assert!(index.holds(&private.id));
        let index = Mutex::new(index);
        let never_seen = id(42);
        let from = crate::net::test_support::peer_id(3);
        let (resp, verdict) = answer(
            &node,
            &index,
            me.key(),
            from,
            peer.key(),
            pb::sync_request::Kind::Reconcile(pb::Reconcile {
                buckets: Vec::new(),
                ids: vec![private.id.0.to_vec().into(), never_seen.0.to_vec().into()],
            }),
        )
        .await;
        assert!(verdict.is_ok());
        let Some(pb::sync_response::Kind::Result(r)) = resp.kind else {
            panic!("unexpected {resp:?}");
        };
        let wanted: HashSet<RecordId> = r
            .wanted
            .iter()
            .filter_map(|b| RecordId::from_slice(b))
            .collect();
        assert_eq!(
            wanted,
            HashSet::from([private.id, never_seen]),
            "the answer tells a held private record from an unknown id"
        );
        assert!(r.records.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failure_on_this_node_tells_the_peer_no_detail() {
        use sqlx::ConnectOptions;
        let TwoMembers {
            _dir,
            node,
            me,
            peer,
            ..
        } = two_members().await;
        // Break the store under the answer: the holdings read a table that is gone.
        // The store is encrypted: the key file's store key opens it.
        let key = crate::store::StoreKey::of(&me);
        let mut db = crate::store::read_only_options(node.store().path(), &key)
            .read_only(false)
            .connect()
            .await
            .unwrap();
        sqlx::query("DROP TABLE audience_members")
            .execute(&mut db)
            .await
            .unwrap();
        let index = Mutex::new(Index::default());
        let summary = pb::sync_request::Kind::Summary(pb::Summary::default());
        let from = crate::net::test_support::peer_id(1);
        let (resp, _) = answer(&node, &index, me.key(), from, peer.key(), summary).await;
        match resp.kind {
            Some(pb::sync_response::Kind::Error(e)) => {
                assert_eq!(e.message, "internal error; retry later")
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
