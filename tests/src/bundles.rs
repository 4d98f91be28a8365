//! Reading and writing bundles with the library's own types, for tests that craft what
//! a hostile or broken peer would send.

use std::io::Write;
use std::path::Path;

use coalition::bundle::{self, Reader};
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
