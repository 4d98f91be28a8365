//! Length-limited codec for `/coalition/sync/1`: a 4-byte big-endian length, then that
//! many bytes of a prost message. A length over the limit is refused before anything
//! is allocated for it; a length within it is not trusted either (memory grows with the
//! bytes that actually arrive).

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::request_response;
use libp2p::StreamProtocol;

/// Protocol name.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/coalition/sync/1");
/// Largest request frame: 4 MiB.
pub const MAX_REQUEST_BYTES: usize = 4 << 20;
/// Largest response frame: 8 MiB.
pub const MAX_RESPONSE_BYTES: usize = 8 << 20;

/// Bytes set aside for a frame before any of it arrived.
const INITIAL_READ: usize = 64 * 1024;

/// Raw-bytes codec with explicit limits (protobuf decoding happens in the event loop).
#[derive(Debug, Clone, Copy)]
pub struct Codec {
    /// Request limit.
    pub max_request: usize,
    /// Response limit.
    pub max_response: usize,
}

impl Default for Codec {
    fn default() -> Self {
        Self {
            max_request: MAX_REQUEST_BYTES,
            max_response: MAX_RESPONSE_BYTES,
        }
    }
}

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T, limit: usize) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes is over the {limit}-byte limit"),
        ));
    }
    // Grown as bytes arrive, not allocated for the length claimed: a peer that claims
    // 4 MiB and sends a few bytes holds a few bytes of this node's memory, not 4 MiB.
    let mut buf = Vec::with_capacity(len.min(INITIAL_READ));
    io.take(len as u64).read_to_end(&mut buf).await?;
    if buf.len() < len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("frame ended after {} of {len} bytes", buf.len()),
        ));
    }
    Ok(buf)
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    data: &[u8],
    limit: usize,
) -> io::Result<()> {
    if data.len() > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "frame over the limit",
        ));
    }
    io.write_all(&(data.len() as u32).to_be_bytes()).await?;
    io.write_all(data).await?;
    io.flush().await
}

impl request_response::Codec for Codec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        read_frame(io, self.max_request).await
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        read_frame(io, self.max_response).await
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()> {
        write_frame(io, &req, self.max_request).await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()> {
        write_frame(io, &res, self.max_response).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::Cursor;
    use libp2p::request_response::Codec as _;

    #[tokio::test]
    async fn an_oversized_frame_is_refused_before_allocation() {
        // Claims 4 GiB - 1 bytes but carries 3: refused on the length alone.
        let mut io = Cursor::new(vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3]);
        let err = Codec::default()
            .read_request(&PROTOCOL, &mut io)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("over the"));
    }

    #[tokio::test]
    async fn frames_round_trip_and_truncation_is_an_error() {
        let mut buf = Cursor::new(Vec::new());
        let mut c = Codec::default();
        c.write_response(&PROTOCOL, &mut buf, b"hello".to_vec())
            .await
            .unwrap();
        let bytes = buf.into_inner();
        let back = c
            .read_response(&PROTOCOL, &mut Cursor::new(bytes.clone()))
            .await
            .unwrap();
        assert_eq!(back, b"hello");
        let cut = &bytes[..bytes.len() - 1];
        assert!(c
            .read_response(&PROTOCOL, &mut Cursor::new(cut.to_vec()))
            .await
            .is_err());
    }
}
