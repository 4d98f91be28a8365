//! Bundles: the file auditors receive (see `docs/FORMATS.md`).
//!
//! Layout: the 8-byte magic `COALBNDL`, a varint-length-prefixed `BundleHeader`
//! (at most [`MAX_HEADER_BYTES`]), then exactly `record_count` varint-length-prefixed
//! `SignedRecord`s (each at most [`MAX_RECORD_BYTES`]), then end of file. Lengths are
//! checked before anything is allocated for them. A damaged record is reported and the
//! records after it remain readable as long as the framing holds.

use std::io::{self, BufRead, Read, Write};

use coalition_proto::v1::BundleHeader;
use prost::Message;

use crate::record::MAX_RECORD_BYTES;

/// File magic.
pub const MAGIC: &[u8; 8] = b"COALBNDL";
/// Bundle format version written and read by this code.
pub const FORMAT_VERSION: u32 = 1;
/// Largest encoded header.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Errors that make a bundle (or the rest of it) unreadable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// I/O failure.
    #[error("cannot read bundle: {0}")]
    Io(#[from] io::Error),
    /// Not a bundle.
    #[error("not a Coalition bundle (the file does not start with {:?}); was it exported with `coalition export --format bundle`?", std::str::from_utf8(MAGIC).unwrap_or_default())]
    BadMagic,
    /// Header damaged or from a newer version.
    #[error("bundle header: {0}")]
    BadHeader(String),
}

/// A framing problem at one record; `fatal` when the records after it cannot be found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    /// 1-based record number.
    pub index: u64,
    /// Byte offset of the record's length prefix.
    pub offset: u64,
    /// What is wrong.
    pub reason: String,
}

/// One entry read from a bundle.
#[derive(Debug)]
pub struct Entry {
    /// 1-based record number.
    pub index: u64,
    /// Byte offset of the record's length prefix.
    pub offset: u64,
    /// The record bytes.
    pub bytes: Vec<u8>,
}

/// Streaming bundle reader.
#[derive(Debug)]
pub struct Reader<R> {
    inner: CountingReader<R>,
    header: BundleHeader,
    next: u64,
    done: bool,
}

#[derive(Debug)]
struct CountingReader<R> {
    inner: R,
    pos: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Reads a protobuf varint; `Ok(None)` at a clean end of input.
fn read_varint<R: Read>(r: &mut R) -> io::Result<Option<u64>> {
    let mut value = 0u64;
    for i in 0..10 {
        let mut b = [0u8; 1];
        if r.read(&mut b)? == 0 {
            return if i == 0 {
                Ok(None)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "length prefix cut short",
                ))
            };
        }
        value |= u64::from(b[0] & 0x7f) << (7 * i);
        if b[0] & 0x80 == 0 {
            return Ok(Some(value));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "length prefix longer than 10 bytes",
    ))
}

fn write_varint<W: Write>(w: &mut W, mut v: u64) -> io::Result<()> {
    let mut buf = [0u8; 10];
    let mut n = 0;
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            buf[n] = byte;
            n += 1;
            break;
        }
        buf[n] = byte | 0x80;
        n += 1;
    }
    w.write_all(&buf[..n])
}

impl<R: BufRead> Reader<R> {
    /// Reads and checks the magic and header.
    pub fn new(inner: R) -> Result<Self, BundleError> {
        let mut inner = CountingReader { inner, pos: 0 };
        let mut magic = [0u8; 8];
        inner
            .read_exact(&mut magic)
            .map_err(|_| BundleError::BadMagic)?;
        if &magic != MAGIC {
            return Err(BundleError::BadMagic);
        }
        let len = read_varint(&mut inner)
            .map_err(|e| BundleError::BadHeader(e.to_string()))?
            .ok_or_else(|| BundleError::BadHeader("file ends before the header".into()))?;
        if len as usize > MAX_HEADER_BYTES {
            return Err(BundleError::BadHeader(format!(
                "header length {len} over the {MAX_HEADER_BYTES}-byte limit"
            )));
        }
        let mut buf = vec![0u8; len as usize];
        inner
            .read_exact(&mut buf)
            .map_err(|_| BundleError::BadHeader("file ends inside the header".into()))?;
        let header = BundleHeader::decode(buf.as_slice())
            .map_err(|e| BundleError::BadHeader(e.to_string()))?;
        if header.format_version != FORMAT_VERSION {
            return Err(BundleError::BadHeader(format!(
                "format version {} (this Coalition reads version {FORMAT_VERSION}; upgrade to read it)",
                header.format_version
            )));
        }
        Ok(Self {
            inner,
            header,
            next: 1,
            done: false,
        })
    }

    /// The header.
    pub fn header(&self) -> &BundleHeader {
        &self.header
    }
}

impl<R: BufRead> Iterator for Reader<R> {
    type Item = Result<Entry, FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let index = self.next;
        let offset = self.inner.pos;
        let fail = |this: &mut Self, reason: String| {
            this.done = true;
            Some(Err(FrameError {
                index,
                offset,
                reason,
            }))
        };
        let declared = self.header.record_count;
        let len = match read_varint(&mut self.inner) {
            Ok(None) if index > declared => return None,
            Ok(None) => {
                return fail(
                    self,
                    format!(
                        "bundle declares {declared} records but ends after {}: it was truncated",
                        index - 1
                    ),
                )
            }
            Ok(Some(_)) if index > declared => {
                return fail(self, format!("data after the {declared} declared records"))
            }
            Ok(Some(len)) => len,
            Err(e) => return fail(self, format!("{e}: the bundle was truncated or damaged")),
        };
        if len as usize > MAX_RECORD_BYTES {
            return fail(
                self,
                format!("declared length {len} is over the {MAX_RECORD_BYTES}-byte record limit; the rest of the bundle cannot be read"),
            );
        }
        let mut bytes = vec![0u8; len as usize];
        if self.inner.read_exact(&mut bytes).is_err() {
            return fail(
                self,
                format!("record cut short (needs {len} bytes): the bundle was truncated"),
            );
        }
        self.next += 1;
        Some(Ok(Entry {
            index,
            offset,
            bytes,
        }))
    }
}

/// Writes a bundle of `records` to `w`.
pub fn write<W: Write>(w: &mut W, mut header: BundleHeader, records: &[Vec<u8>]) -> io::Result<()> {
    header.format_version = FORMAT_VERSION;
    header.record_count = records.len() as u64;
    w.write_all(MAGIC)?;
    let h = header.encode_to_vec();
    write_varint(w, h.len() as u64)?;
    w.write_all(&h)?;
    for r in records {
        write_varint(w, r.len() as u64)?;
        w.write_all(r)?;
    }
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(records: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        write(&mut out, BundleHeader::default(), records).unwrap();
        out
    }

    fn read_all(b: &[u8]) -> (Vec<Vec<u8>>, Vec<FrameError>) {
        let mut ok = Vec::new();
        let mut bad = Vec::new();
        for e in Reader::new(b).unwrap() {
            match e {
                Ok(e) => ok.push(e.bytes),
                Err(e) => bad.push(e),
            }
        }
        (ok, bad)
    }

    #[test]
    fn round_trip() {
        let recs = vec![b"one".to_vec(), vec![], vec![7u8; 300]];
        let (ok, bad) = read_all(&bundle(&recs));
        assert_eq!(ok, recs);
        assert!(bad.is_empty());
    }

    #[test]
    fn every_truncation_is_detected() {
        let b = bundle(&[vec![1u8; 200], vec![2u8; 5]]);
        let header_end = 8
            + 1
            + BundleHeader {
                format_version: 1,
                record_count: 2,
                ..Default::default()
            }
            .encoded_len();
        for cut in header_end..b.len() {
            let (_, bad) = read_all(&b[..cut]);
            assert_eq!(bad.len(), 1, "truncation at {cut} undetected");
        }
    }

    #[test]
    fn oversized_length_is_refused_without_allocating() {
        let mut b = bundle(&[]);
        // Claim one record of 2^40 bytes.
        let mut h = BundleHeader {
            format_version: 1,
            record_count: 1,
            ..Default::default()
        }
        .encode_to_vec();
        b.truncate(8);
        write_varint(&mut b, h.len() as u64).unwrap();
        b.append(&mut h);
        write_varint(&mut b, 1 << 40).unwrap();
        let (_, bad) = read_all(&b);
        assert!(bad[0].reason.contains("over the"), "{:?}", bad);
    }

    #[test]
    fn garbage_is_not_a_bundle() {
        assert!(matches!(
            Reader::new(&b"hello world"[..]),
            Err(BundleError::BadMagic)
        ));
        assert!(matches!(Reader::new(&b""[..]), Err(BundleError::BadMagic)));
    }
}
