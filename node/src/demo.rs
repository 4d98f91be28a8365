//! `coalition demo`: the main job end to end on the embedded SQLite default. Two
//! organisations record findings from `schemas/examples/` with a mix of audiences, one
//! exports a bundle the other imports, and an auditor verifies the combined bundle
//! offline, then sees a tampered copy rejected.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::cli::example_files;
use crate::config::Home;
use crate::finding::FindingInput;
use crate::node::{verify_bundle, Node};
use crate::record::Audience;

const PASSPHRASE: &str = "demo passphrase, not for real use";

/// Where the shipped examples are: `COALITION_EXAMPLES`, `./schemas/examples`, or the
/// source tree this binary was built from.
pub fn examples_dir() -> PathBuf {
    if let Ok(d) = std::env::var("COALITION_EXAMPLES") {
        return PathBuf::from(d);
    }
    let local = PathBuf::from("schemas/examples");
    if local.is_dir() {
        return local;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/examples")
}

/// Runs the demo in `dir` (a temporary directory when `None`).
pub async fn run(dir: Option<&Path>) -> Result<()> {
    let tmp;
    let root = match dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.to_path_buf()
        }
        None => {
            tmp = tempfile_dir()?;
            tmp.path.clone()
        }
    };
    let files = example_files(&examples_dir())?;
    println!("== Coalition demo in {} ==\n", root.display());

    let (a, ida) = Node::init(
        Home::new(Some(root.join("civic-watch-rs"))),
        "Civic Watch Belgrade (fictional)",
        "RS",
        PASSPHRASE,
    )
    .await?;
    let (b, idb) = Node::init(
        Home::new(Some(root.join("safety-forum-xk"))),
        "Community Safety Forum Prizren (fictional)",
        "XK",
        PASSPHRASE,
    )
    .await?;
    println!("1. Two organisations create their identities (keys encrypted at rest):");
    println!("   A {} {}", a.key(), a.config().organisation.name);
    println!("   B {} {}\n", b.key(), b.config().organisation.name);

    println!("2. Each records findings from schemas/examples (validated, signed, stored):");
    let mut recorded = BTreeMap::new();
    let mut a_findings = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let bytes = std::fs::read(f)?;
        let input = FindingInput::parse(&bytes, &f.display().to_string())?;
        let country = input.finding["location"]["country"]
            .as_str()
            .unwrap_or("")
            .to_string();
        // Org A records the Serbian, Montenegrin and Bosnian cases; B the rest.
        let (node, id) = if ["RS", "ME", "BA"].contains(&country.as_str()) {
            (&a, &ida)
        } else {
            (&b, &idb)
        };
        // Mostly shared with the coalition; every fifth private; every seventh for the
        // other organisation only.
        let other = if std::ptr::eq(node, &a) {
            b.key()
        } else {
            a.key()
        };
        let audience = match i {
            i if i % 5 == 4 => Audience::Private,
            i if i % 7 == 6 => Audience::members(vec![other]),
            _ => Audience::Coalition,
        };
        let added = node.add_finding(id, &input, audience.clone()).await?;
        if std::ptr::eq(node, &a) {
            a_findings.push((added.finding, input.clone()));
        }
        *recorded
            .entry((node.config().organisation.country.clone(), audience.label()))
            .or_insert(0) += 1;
        if added.annex.is_some() {
            *recorded
                .entry((
                    node.config().organisation.country.clone(),
                    "private annex".into(),
                ))
                .or_insert(0) += 1;
        }
    }
    for ((org, aud), n) in &recorded {
        println!("   {org}: {n:>2} {aud}");
    }

    println!("\n3. A corrects one finding and retracts another (records stay immutable):");
    if let [(first, input), (second, _), ..] = a_findings.as_slice() {
        let mut corrected = input.clone();
        corrected.finding["confidence"] = "high".into();
        let c = a.correct(&ida, &first.to_hex(), &corrected).await?;
        println!(
            "   correction {} supersedes {}",
            c.finding.short(),
            first.short()
        );
        let r = a
            .retract(&ida, &second.to_hex(), "duplicate of an earlier report")
            .await?;
        println!("   retraction {} retracts {}", r.short(), second.short());
    }

    let a_bundle = root.join("a-to-b.bundle");
    let n = a.export_bundle(&a_bundle, false, Some(b.key())).await?;
    println!("\n4. A exports {n} records it may share with B (no private records, no annexes)");
    let report = b.import(&a_bundle).await?;
    println!(
        "   B imports: {} stored, {} refused",
        report.stored,
        report.failures.len()
    );

    let audit = root.join("coalition.bundle");
    let n = b.export_bundle(&audit, false, None).await?;
    println!("\n5. B publishes the coalition-wide bundle ({n} records) for auditors");
    let v = verify_bundle(&audit)?;
    println!(
        "   auditor: {} of {} records verify, {} authors, {} failures",
        v.valid,
        v.checked,
        v.authors.len(),
        v.failures.len()
    );

    println!("\n6. What B's analyst sees (current findings, by country and category):");
    let rows = b.store().findings(false).await?;
    let mut by: BTreeMap<(String, String), usize> = BTreeMap::new();
    for r in &rows {
        *by.entry((r.country.clone(), r.category.clone()))
            .or_default() += 1;
    }
    for ((c, cat), n) in &by {
        println!("   {c}  {cat:<30} {n}");
    }
    println!("   total {} findings", rows.len());

    let tampered = root.join("tampered.bundle");
    let mut bytes = std::fs::read(&audit)?;
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&tampered, &bytes)?;
    let t = verify_bundle(&tampered)?;
    println!("\n7. One flipped bit in a copy of the bundle: the auditor's check fails:");
    for f in &t.failures {
        println!("   record #{}: {}", f.index, f.reason);
    }
    anyhow::ensure!(
        v.ok() && !t.ok(),
        "demo invariant broken: verification did not behave"
    );
    println!("\nDemo complete.");
    Ok(())
}

struct TempDir {
    path: PathBuf,
}

impl Drop for TempDir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.path).ok();
    }
}

fn tempfile_dir() -> Result<TempDir> {
    let path = std::env::temp_dir().join(format!(
        "coalition-demo-{}-{}",
        std::process::id(),
        crate::node::now_ms()
    ));
    std::fs::create_dir_all(&path).context("cannot create a temporary directory")?;
    Ok(TempDir { path })
}
