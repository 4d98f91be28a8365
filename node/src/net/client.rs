//! How tasks other than the event loop reach a peer: they send a [`Command`] over the
//! event loop's bounded channel and await a `oneshot` reply. [`Client`] is the sync
//! initiator's side of that: one request, one decoded response, with the byte and
//! round-trip counts of the run.

use coalition_proto::v1 as pb;
use libp2p::PeerId;
use prost::Message;
use tokio::sync::{mpsc, oneshot};

use super::error::SyncError;
use super::status::SyncStats;

/// Requests from other tasks to the event loop.
#[derive(Debug)]
pub enum Command {
    /// Send a sync request to a peer; the reply carries the response frame.
    Request {
        /// The peer.
        peer: PeerId,
        /// Encoded `SyncRequest`.
        request: Vec<u8>,
        /// Where the response goes.
        reply: oneshot::Sender<Result<Vec<u8>, SyncError>>,
    },
    /// Sync with every verified peer now.
    SyncAll,
}

/// The requesting side of one sync run with one peer.
pub(super) struct Client<'a> {
    commands: &'a mpsc::Sender<Command>,
    peer: PeerId,
    /// Round trips and bytes so far.
    pub(super) stats: SyncStats,
}

impl<'a> Client<'a> {
    /// A client for `peer` through the event loop's `commands`.
    pub(super) fn new(commands: &'a mpsc::Sender<Command>, peer: PeerId) -> Self {
        Self {
            commands,
            peer,
            stats: SyncStats::default(),
        }
    }

    /// Sends one request and waits for its response; an error response is an `Err`.
    /// Cancel safe: dropping the future drops the reply receiver, and the event loop
    /// discards the response.
    pub(super) async fn call(
        &mut self,
        kind: pb::sync_request::Kind,
    ) -> Result<pb::sync_response::Kind, SyncError> {
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
            .map_err(|_| SyncError::Stopped)?;
        let bytes = rx.await.map_err(|_| SyncError::Stopped)??;
        self.stats.bytes_received += bytes.len() as u64 + 4;
        // Decoded from a shared buffer, the records are slices of it, not copies.
        let resp = pb::SyncResponse::decode(prost::bytes::Bytes::from(bytes))?;
        match resp.kind {
            Some(pb::sync_response::Kind::Error(e)) => Err(SyncError::Refused(e.message)),
            Some(k) => Ok(k),
            None => Err(SyncError::Empty),
        }
    }
}
