//! Reading and writing bundles with the library's own types, for tests that craft what
//! a hostile or broken peer would send.

use std::io::Write;
use std::path::Path;

use coalition::bundle::{self, Reader};
use coalition::record::RecordId;
use coalition_proto::v1::BundleHeader;

/// The record bytes of a bundle, in order; panics on a damaged one.
pub fn bundle_records(path: &Path) -> Vec<Vec<u8>> {
    let file = std::fs::File::open(path).expect("open bundle");
    Reader::new(std::io::BufReader::new(file))
        .expect("a readable bundle")
        .map(|e| e.expect("an intact record").bytes)
        .collect()
}

/// Writes a well-formed bundle holding `records`.
pub fn write_bundle(path: &Path, records: &[Vec<u8>]) {
    let f = std::fs::File::create(path).expect("create bundle");
    let mut w = std::io::BufWriter::new(f);
    bundle::write(&mut w, BundleHeader::default(), records).expect("write bundle");
    w.flush().expect("write bundle");
}

/// Byte range of record `index` (1-based) inside a bundle file.
pub fn record_span(path: &Path, index: u64) -> std::ops::Range<usize> {
    let file = std::fs::File::open(path).expect("open bundle");
    let entry = Reader::new(std::io::BufReader::new(file))
        .expect("a readable bundle")
        .map(|e| e.expect("an intact record"))
        .find(|e| e.index == index)
        .expect("record present");
    let start = entry.offset as usize + varint(entry.bytes.len() as u64).len();
    start..start + entry.bytes.len()
}

/// The LEB128 varint encoding of `v` (as bundles frame records).
pub fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

/// The hex record id of each record.
pub fn ids(records: &[Vec<u8>]) -> Vec<String> {
    records.iter().map(|r| RecordId::of(r).to_hex()).collect()
}
