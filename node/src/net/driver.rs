//! The initiating side of a sync, independent of the swarm: it asks through the event
//! loop ([`Client`]) and stores what the peer sends in pipelined stages (fetch, check,
//! store; `docs/PROTOCOL.md` §4.2). The answering side is `answer`.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use coalition_proto::v1 as pb;
use futures::StreamExt;
use libp2p::PeerId;
use tokio::sync::{mpsc, oneshot, Mutex};

use crate::identity::OrgKey;
use crate::node::{CheckedRecords, Node, Vouched};
use crate::record::RecordId;

use super::client::{Client, Command};
use super::error::{names_unknown_epoch, SyncError};
use super::index::Index;
use super::peers::SyncWith;
use super::status::SyncStats;
use super::sync::{bucket_refs, SyncSet, ToReconcile, BUCKETS_PER_RECONCILE, BUCKET_SPAN};

/// Checked pages that may wait for the writer.
const CHECKED_QUEUE: usize = 2;
/// Records at which the writer stops taking waiting pages into one transaction.
const STORE_BATCH: usize = 8_000;
/// Buckets asked for in a sync's first reconcile request (the rest in chunks of
/// [`BUCKETS_PER_RECONCILE`]).
const FIRST_BUCKETS: usize = 4;
/// Records of a page that arrives before the leaves which the check stage verifies one
/// by one instead of waiting for the leaves (~70 ms on one core here; the first page
/// holds at most `FIRST_BUCKETS * BUCKET_SPAN`).
const FULL_CHECK_BEFORE_LEAVES: usize = FIRST_BUCKETS * BUCKET_SPAN as usize;
/// Reconcile rounds per bucket chunk before giving up (a peer that keeps sending).
const MAX_ROUNDS: usize = 10_000;
/// Records a sync expects from one author below which it does not ask for the author's
/// leaves: the leaves of a long log cost more than verifying a few signatures.
const VOUCH_MIN_RECORDS: u64 = 1024;
/// Leaf pages asked for one author in one sync, at most (1.6 million records, ~110 MB
/// of leaves held at once in the worst case).
const MAX_LEAF_PAGES: usize = 16;
/// Authors whose leaves are asked for at once (so at most twice [`MAX_LEAF_PAGES`] of
/// leaves are held at once). One after another, the four authors of a full sync of
/// 100 000 records took ~0.35 s before the first page could be checked.
const LEAVES_IN_FLIGHT: usize = 2;

/// What storing one page of pulled records came to.
#[derive(Debug, Default)]
struct PageOutcome {
    stored: u64,
    /// Of them, taken on their author's checkpoint.
    vouched: u64,
    refused: u64,
    invalid: u64,
    membership_stored: bool,
}

impl PageOutcome {
    /// Adds this page to a run's figures.
    fn add_to(self, stats: &mut SyncStats) {
        stats.stored += self.stored;
        stats.vouched += self.vouched;
        stats.refused += self.refused;
        stats.invalid += self.invalid;
        stats.membership_stored |= self.membership_stored;
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
    vouched: &Vouched,
    records: Vec<(RecordId, Vec<u8>)>,
) -> Result<CheckedPage, SyncError> {
    let held: HashSet<RecordId> = {
        let ix = index.lock().await;
        records
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| ix.holds(id))
            .collect()
    };
    let records = node.check_from_peer(records, &held, vouched).await?;
    // Nothing of the page but its membership records is stored yet.
    let membership_stored = records.stored() > 0;
    Ok(CheckedPage {
        records,
        membership_stored,
    })
}

/// Stores checked pages (one transaction) and logs what was refused.
async fn store_page(
    node: &Node,
    peer: PeerId,
    page: CheckedPage,
) -> Result<PageOutcome, SyncError> {
    let vouched = page.records.unchecked_len() as u64;
    let report = node.store_from_peer(page.records).await?;
    for f in &report.failures {
        tracing::warn!(%peer, record = f.id.as_deref().unwrap_or("?"), reason = %f.reason, "refused record from peer");
    }
    Ok(PageOutcome {
        stored: report.stored,
        vouched,
        refused: report.failures.len() as u64,
        // A record naming an epoch not seen yet is not the sender's fault: its membership
        // records may come in a later page; the next sync retries.
        invalid: report
            .failures
            .iter()
            .filter(|f| !names_unknown_epoch(&f.reason))
            .count() as u64,
        membership_stored: page.membership_stored,
    })
}

/// The chunks of `todo` that round 2 asks for one after another: [`FIRST_BUCKETS`]
/// pairs, then [`BUCKETS_PER_RECONCILE`] at a time.
fn reconcile_chunks(todo: &[(OrgKey, u64)]) -> impl Iterator<Item = &[(OrgKey, u64)]> {
    let (first, rest) = todo.split_at(todo.len().min(FIRST_BUCKETS));
    std::iter::once(first)
        .chain(rest.chunks(BUCKETS_PER_RECONCILE))
        .filter(|c| !c.is_empty())
}

/// Runs one sync as initiator with `peer` (of organisation `with.org`). Leaves are asked
/// for only if the peer's hello said it answers them (`with.answers_leaves`).
pub(super) async fn drive(
    node: &Node,
    index: &Mutex<Index>,
    commands: &mpsc::Sender<Command>,
    me: OrgKey,
    peer: PeerId,
    with: SyncWith,
) -> Result<SyncStats, SyncError> {
    if !current_member(node, &with.org).await {
        return Err(SyncError::NotMember);
    }
    let mut client = Client::new(commands, peer);
    let set = common(node, index, &me, &with.org, &peer).await?;
    let buckets = match client
        .call(pb::sync_request::Kind::Summary(set.summary()))
        .await?
    {
        pb::sync_response::Kind::Buckets(b) => b,
        _ => return Err(SyncError::Unexpected("summary")),
    };
    let ToReconcile {
        buckets: todo,
        peer_lacks,
    } = set.buckets_to_reconcile(&buckets);
    // The leaves are asked for on clients of their own beside the first pages: the check
    // stage needs what they vouch for, the fetch stage does not, and in a full sync the
    // leaves of every author took a few round trips (~0.3 s for 100 000 records) during
    // which the writer had nothing to do. A stage of its own, so they arrive while the
    // check stage verifies the small first page in full.
    let mut leaves_stats = SyncStats::default();
    let (vouched_tx, vouched_rx) = oneshot::channel::<Vouched>();
    let vouching = async {
        let vouched = if !(node.config().sync_from_checkpoints() && with.answers_leaves) {
            Vouched::new()
        } else {
            match vouch(node, commands, peer, &set, &todo, &mut leaves_stats).await {
                Ok(v) => v,
                // The records are verified one by one, as without checkpoints.
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "no leaves from the peer");
                    Vouched::new()
                }
            }
        };
        let _ = vouched_tx.send(vouched);
    };
    let expected = (todo.len() as u64 * super::sync::BUCKET_SPAN)
        .saturating_sub(set.ids_in(&todo).len() as u64);
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
        // The first request asks for a few buckets only: its page (at most
        // `FIRST_BUCKETS * BUCKET_SPAN` records) comes back, is checked and reaches the
        // writer in a few tens of milliseconds, while the first full page took ~0.3 s
        // (100 000 records on 2 cores) during which the writer had nothing to do.
        for chunk in reconcile_chunks(&todo) {
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
                    _ => return Err(SyncError::Unexpected("reconcile")),
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
        let (mut vouched_rx, mut vouched) = (Some(vouched_rx), None::<Vouched>);
        let none = Vouched::new();
        while let Some(records) = page_rx.recv().await {
            let t = std::time::Instant::now();
            // A page that comes before the leaves is verified record by record if that
            // is quicker than waiting for them (the first page is small); a larger one
            // waits for what the leaves vouch for.
            if let Some(mut rx) = vouched_rx.take() {
                match rx.try_recv() {
                    Ok(v) => vouched = Some(v),
                    Err(oneshot::error::TryRecvError::Empty)
                        if records.len() <= FULL_CHECK_BEFORE_LEAVES =>
                    {
                        vouched_rx = Some(rx)
                    }
                    Err(_) => vouched = Some(rx.await.unwrap_or_default()),
                }
            }
            let page = check_page(node, index, vouched.as_ref().unwrap_or(&none), records).await?;
            tracing::debug!(%peer, took_us = t.elapsed().as_micros() as u64, "sync page checked");
            if checked.send(page).await.is_err() {
                break;
            }
        }
        Ok::<(), SyncError>(())
    };
    let store = async {
        let mut outcome = SyncStats::default();
        let mut progress = crate::metrics::SyncProgress::new(peer, expected);
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
            let received = page.records.len() as u64 + page.records.stored();
            store_page(node, peer, page).await?.add_to(&mut outcome);
            tracing::debug!(%peer, took_us = t.elapsed().as_micros() as u64, "sync page stored");
            progress.advance(received);
        }
        progress.finish();
        Ok::<SyncStats, SyncError>(outcome)
    };
    let ((), fetched, checked, stored) = tokio::join!(vouching, fetch, check, store);
    let stored = stored?;
    checked?;
    // What the responder wants from us it pulls in its own sync (both sides sync when
    // they verify each other and every sync_interval); pushing it as well sent every
    // record of a first sync twice (docs/PROTOCOL.md §4.2).
    client.stats.wanted = fetched? + peer_lacks;
    client.stats.add_traffic(&leaves_stats);
    client.stats.stored = stored.stored;
    client.stats.vouched = stored.vouched;
    client.stats.refused = stored.refused;
    client.stats.invalid = stored.invalid;
    client.stats.membership_stored = stored.membership_stored;
    Ok(client.stats)
}

/// Asks `peer` for the leaves of every author of whom the buckets in `todo` are
/// expected to bring at least [`VOUCH_MIN_RECORDS`] records, from the first of those
/// buckets on (the leaves before it are the ones this node holds: the buckets agree), and
/// returns the records the author's checkpoints among them vouch for
/// ([`Node::vouched`]). [`LEAVES_IN_FLIGHT`] authors at a time, each on a client of its
/// own; their round trips and bytes are added to `stats`. One author's failure fails it
/// all (the sync then verifies every record one by one).
async fn vouch(
    node: &Node,
    commands: &mpsc::Sender<Command>,
    peer: PeerId,
    set: &SyncSet,
    todo: &[(OrgKey, u64)],
    stats: &mut SyncStats,
) -> Result<Vouched, SyncError> {
    let mut by_author: BTreeMap<OrgKey, Vec<(OrgKey, u64)>> = BTreeMap::new();
    for (author, index) in todo {
        by_author
            .entry(*author)
            .or_default()
            .push((*author, *index));
    }
    let results: Vec<(Result<Vouched, SyncError>, SyncStats)> = futures::stream::iter(by_author)
        .map(|(author, buckets)| async move {
            let mut client = Client::new(commands, peer);
            let vouched = vouch_author(node, &mut client, set, author, &buckets).await;
            (vouched, client.stats)
        })
        .buffer_unordered(LEAVES_IN_FLIGHT)
        .collect()
        .await;
    let mut out = Vouched::new();
    for (vouched, s) in results {
        stats.add_traffic(&s);
        out.extend(vouched?);
    }
    Ok(out)
}

/// [`vouch`] for one author's differing `buckets`.
async fn vouch_author(
    node: &Node,
    client: &mut Client<'_>,
    set: &SyncSet,
    author: OrgKey,
    buckets: &[(OrgKey, u64)],
) -> Result<Vouched, SyncError> {
    let held = set.ids_in(buckets).len() as u64;
    let expected = (buckets.len() as u64 * BUCKET_SPAN).saturating_sub(held);
    let Some(first) = buckets.iter().map(|(_, i)| *i).min() else {
        return Ok(Vouched::new());
    };
    if expected < VOUCH_MIN_RECORDS || first == super::sync::EMPTY_AUTHOR {
        return Ok(Vouched::new());
    }
    let from = first.saturating_mul(BUCKET_SPAN).saturating_sub(1);
    // No leaf after the last differing bucket is needed: a peer that sends them is
    // only making this node hold them.
    let last_seq = buckets
        .iter()
        .map(|(_, i)| i.saturating_add(1).saturating_mul(BUCKET_SPAN))
        .max()
        .unwrap_or(0);
    let mut leaves: BTreeMap<u64, RecordId> = set
        .entries_after(&author, 0)
        .iter()
        .take_while(|e| e.seq <= from)
        .map(|e| (e.seq, e.id))
        .collect();
    let mut checkpoints = Vec::new();
    let mut after = from;
    for _ in 0..MAX_LEAF_PAGES {
        let request = pb::Leaves {
            author: author.as_bytes().to_vec().into(),
            after,
        };
        let page = match client.call(pb::sync_request::Kind::Leaves(request)).await? {
            pb::sync_response::Kind::LeafPage(p) => p,
            _ => return Err(SyncError::Unexpected("leaves")),
        };
        if page.seqs.len() != page.ids.len() {
            return Err(SyncError::Unexpected("leaf page"));
        }
        let last = after;
        for (seq, id) in page.seqs.iter().zip(&page.ids) {
            let Some(id) = RecordId::from_slice(id) else {
                return Err(SyncError::Unexpected("leaf page"));
            };
            // In seq order, after the page asked for: anything else is no leaf page.
            if *seq <= after {
                return Err(SyncError::Unexpected("leaf page"));
            }
            if *seq >= last_seq {
                break;
            }
            leaves.insert(*seq, id);
            after = *seq;
        }
        checkpoints.extend(page.checkpoints.into_iter().map(|b| b.to_vec()));
        if !page.more || after == last || after.saturating_add(1) >= last_seq {
            break;
        }
    }
    Ok(node.vouched(author, checkpoints, leaves).await?)
}

/// Whether `org` is a current member by the membership in the store now.
pub(super) async fn current_member(node: &Node, org: &OrgKey) -> bool {
    matches!(node.membership().await, Ok(Some(m)) if m.current().is_member(org))
}

/// The records both `me` and `peer` may hold, after loading what was stored since the
/// index was last refreshed.
pub(super) async fn common(
    node: &Node,
    index: &Mutex<Index>,
    me: &OrgKey,
    peer: &OrgKey,
    peer_id: &PeerId,
) -> Result<Arc<SyncSet>, SyncError> {
    let mut ix = index.lock().await;
    ix.refresh(node.store()).await?;
    Ok(ix.common(me, peer, peer_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::test_support::{draft, two_members, with_ids, TwoMembers};
    use crate::record;

    #[test]
    fn the_first_reconcile_asks_for_a_few_buckets_then_full_chunks() {
        let author = crate::identity::Identity::from_seed(&[3; 32]).key();
        let todo: Vec<(OrgKey, u64)> = (0..200).map(|i| (author, i)).collect();
        let sizes =
            |n: usize| -> Vec<usize> { reconcile_chunks(&todo[..n]).map(<[_]>::len).collect() };
        assert_eq!(sizes(200), [4, 64, 64, 64, 4]);
        assert_eq!(sizes(68), [4, 64]);
        assert_eq!(sizes(3), [3]);
        assert!(sizes(0).is_empty());
        // Every pair once, in order.
        let all: Vec<(OrgKey, u64)> = reconcile_chunks(&todo).flatten().copied().collect();
        assert_eq!(all, todo);
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
            .check_from_peer(with_ids(&[&r1.bytes, &r2.bytes]), &held, &Vouched::new())
            .await
            .unwrap();
        let second = node
            .check_from_peer(
                with_ids(&[&r2.bytes, &tampered, &r3.bytes]),
                &HashSet::new(),
                &Vouched::new(),
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
}
