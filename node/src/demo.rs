//! `coalition demo`: a live coalition on loopback. Four organisations found a charter,
//! each runs its node as a separate `coalition run` process, records findings from
//! `schemas/examples/` with a mix of audiences, and the nodes sync until every node
//! holds exactly what it is entitled to. Then an analyst's view and an auditor's offline
//! verification are printed, and everything is stopped and removed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::audience;
use crate::charter::{GovernanceError, SignedCharter};
use crate::config::{Api, Config, ConfigError, Home, Network};
use crate::finding::FindingInput;
use crate::identity::Identity;
use crate::launch::{Launch, LaunchError, RunningNode};
use crate::node::{Node, NodeError};
use crate::now_ms;
use crate::record::{Audience, RecordId};
use crate::schema::SchemaError;
use crate::store::StoreError;
use crate::verify::{verify_bundle, VerifyError};

const PASSPHRASE: &str = "demo passphrase, not for real use";
const ORGS: [(&str, &str); 4] = [
    ("Civic Watch Belgrade (fictional)", "RS"),
    ("Community Safety Forum Prizren (fictional)", "XK"),
    ("Skopje Oversight Initiative (fictional)", "MK"),
    ("Tbilisi Rights Monitor (fictional)", "GE"),
];
/// How long a node may take to start, and to stop after SIGTERM.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_GRACE: Duration = Duration::from_secs(15);
/// How long the nodes may take to converge.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(90);

/// Why the demo failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DemoError {
    /// A node operation failed.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// A store query failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A demo home's configuration could not be written.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The charter could not be drafted or signed.
    #[error(transparent)]
    Governance(#[from] GovernanceError),
    /// A shipped example is not a valid finding.
    #[error(transparent)]
    Example(#[from] SchemaError),
    /// A bundle could not be verified.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// A node process did not start or stop.
    #[error(transparent)]
    Launch(#[from] LaunchError),
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A node printed no TCP address, so no other node could dial it.
    #[error("the node on {0} printed no TCP listen address")]
    NoTcpAddress(String),
    /// The nodes did not all hold what they are entitled to in time.
    #[error("the nodes did not converge within {} s", .0.as_secs())]
    NotConverged(Duration),
    /// A node received a record outside its audience.
    #[error("node {0} holds records it is not entitled to: audience rules were broken")]
    AudienceBroken(usize),
    /// Verification accepted the tampered bundle or refused the intact one.
    #[error("demo invariant broken: verification did not behave")]
    VerificationMisbehaved,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DemoError + '_ {
    move |source| DemoError::Io {
        path: path.display().to_string(),
        source,
    }
}

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

/// Every `*.json` file in `dir`, sorted by name.
pub fn example_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    Ok(files)
}

/// A demo node process and its TCP address.
struct Running {
    node: RunningNode,
    tcp: String,
}

/// Starts `coalition run` (this very binary) on `home` and waits until it is ready.
fn start_node(home: &Path) -> Result<Running, DemoError> {
    let exe = std::env::current_exe().map_err(io_err(Path::new("the coalition binary")))?;
    let node = tokio::task::block_in_place(|| {
        Launch::new(exe, home)
            .passphrase(PASSPHRASE)
            .ready_within(START_TIMEOUT)
            .start()
    })?;
    let tcp = node
        .tcp_addr()
        .ok_or_else(|| DemoError::NoTcpAddress(home.display().to_string()))?
        .to_string();
    Ok(Running { node, tcp })
}

/// Asks every node to stop, then waits for each (a node still running after
/// [`STOP_GRACE`] is killed).
fn stop(nodes: Vec<Running>) {
    for n in &nodes {
        n.node.terminate().ok();
    }
    tokio::task::block_in_place(|| {
        for mut n in nodes {
            n.node.wait(STOP_GRACE).ok();
        }
    });
}

fn configure(home: &Home, bootstrap: Option<&str>) -> Result<(), DemoError> {
    let mut c = Config::load(home)?;
    c.network = Some(Network {
        listen: Some(vec![
            "/ip4/127.0.0.1/tcp/0".into(),
            "/ip4/127.0.0.1/udp/0/quic-v1".into(),
        ]),
        bootstrap: bootstrap.map(|b| vec![b.to_string()]),
        sync_interval_secs: Some(2),
        ..Default::default()
    });
    c.api = Some(Api {
        listen: Some("127.0.0.1:0".into()),
    });
    c.save(home)?;
    Ok(())
}

/// Runs the demo in `dir` (a temporary directory when `None`). Needs the multi-threaded
/// tokio runtime (the CLI's): node processes are started and stopped in
/// `block_in_place`.
pub async fn run(dir: Option<&Path>) -> Result<(), DemoError> {
    let tmp;
    let root = match dir {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(io_err(d))?;
            d.to_path_buf()
        }
        None => {
            tmp = TempDir::new()?;
            tmp.path.clone()
        }
    };
    println!(
        "== Coalition demo: a live coalition of {} nodes on loopback, in {} ==\n",
        ORGS.len(),
        root.display()
    );

    let mut homes = Vec::new();
    let mut ids: Vec<Identity> = Vec::new();
    let mut nodes = Vec::new();
    println!("1. Four organisations create their identities (keys encrypted at rest):");
    for (i, (name, cc)) in ORGS.iter().enumerate() {
        let home = Home::new(Some(root.join(format!("node{i}-{}", cc.to_lowercase()))));
        let (node, id) = Node::init(home.clone(), name, cc, PASSPHRASE).await?;
        println!("   {} {}", id.key().short(), name);
        homes.push(home);
        ids.push(id);
        nodes.push(node);
    }

    println!("\n2. They found a coalition: a charter every founder signs, threshold 3 of 4.");
    let members = nodes.iter().map(Node::member_card).collect();
    let mut charter = SignedCharter::draft(
        "Western Balkans and Caucasus Oversight Coalition (fictional)",
        3,
        members,
        false,
        now_ms(),
    )?;
    for id in &ids {
        charter.sign(id)?;
    }
    nodes[0].adopt_charter(&ids[0], &charter).await?;
    let founding = root.join("charter.bundle");
    nodes[0].export_bundle(&founding, false, None).await?;
    for n in &nodes[1..] {
        n.import(&founding).await?;
    }
    // Each publishes its encryption key and the others import it, so that findings for
    // chosen members can be sealed for them (a running node publishes its key itself).
    let mut published = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        n.publish_encryption_key(&ids[i]).await?;
        let path = root.join(format!("keys-{i}.bundle"));
        n.export_bundle(&path, false, None).await?;
        published.push(path);
    }
    for (i, n) in nodes.iter().enumerate() {
        for (j, path) in published.iter().enumerate() {
            if i != j {
                n.import(path).await?;
            }
        }
    }
    println!("   Each publishes an encryption key, so findings for chosen members can be sealed.");

    println!("\n3. Each records findings from schemas/examples, with a mix of audiences:");
    let examples = examples_dir();
    let files = example_files(&examples).map_err(io_err(&examples))?;
    let keys: Vec<_> = ids.iter().map(Identity::key).collect();
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    let mut sealed = 0;
    for (i, f) in files.iter().enumerate() {
        let bytes = std::fs::read(f).map_err(io_err(f))?;
        let input = FindingInput::parse(&bytes, &f.display().to_string())?;
        let org = i % nodes.len();
        let audience = match i % 6 {
            5 => Audience::Private,
            4 => Audience::members(vec![keys[(org + 1) % keys.len()]]),
            _ => Audience::Coalition,
        };
        *tally
            .entry(audience.label().replace("members:1", "one chosen member"))
            .or_default() += 1;
        let added = nodes[org].add_finding(&ids[org], &input, audience).await?;
        sealed += usize::from(added.sealed);
    }
    for (aud, n) in &tally {
        println!("   {n:>2} findings shared with {aud}");
    }
    println!(
        "   ({sealed} of them sealed: only the author and the chosen member can read them, every member relays them)"
    );
    println!(
        "   (sensitive details of victims and witnesses stay in private annexes on their node)"
    );

    println!("\n4. Each organisation starts its node as a separate process (`coalition run`);");
    println!(
        "   nodes 1 and 2 know only node 0, node 3 knows only node 2 (so records must be relayed):"
    );
    let mut running = Vec::new();
    configure(&homes[0], None)?;
    running.push(start_node(homes[0].dir())?);
    for (i, home) in homes.iter().enumerate().skip(1) {
        let via = if i == 3 {
            &running[2].tcp
        } else {
            &running[0].tcp
        };
        configure(home, Some(via))?;
        running.push(start_node(home.dir())?);
    }
    for (i, r) in running.iter().enumerate() {
        println!("   node {i}: peer {}", r.node.peer_id().unwrap_or("?"));
    }
    let result = converge_and_report(&root, &homes, &ids).await;
    stop(running);
    for n in nodes {
        n.store().clone().close().await;
    }
    result?;
    println!("\nDemo complete.");
    Ok(())
}

async fn held(home: &Home, id: &Identity) -> Result<BTreeSet<RecordId>, DemoError> {
    let node = Node::open(home.clone(), id).await?;
    let ids = node
        .store()
        .all_records()
        .await?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    node.store().clone().close().await;
    Ok(ids)
}

async fn converge_and_report(
    root: &Path,
    homes: &[Home],
    ids: &[Identity],
) -> Result<(), DemoError> {
    // What each node is entitled to: its own records plus every other record whose
    // audience includes it (a sealed record: every member, which relays it unread).
    let mut expected: Vec<BTreeSet<RecordId>> = vec![BTreeSet::new(); homes.len()];
    for (i, home) in homes.iter().enumerate() {
        let node = Node::open(home.clone(), &ids[i]).await?;
        let all = node.shareable(true, None).await?;
        for r in &all {
            if r.author != ids[i].key() {
                continue;
            }
            let signed = crate::store::reread(&r.id, &r.bytes)?;
            let audience = audience::carried(&signed.schema, &node.effective_audience(r).await?);
            for (j, id) in ids.iter().enumerate() {
                let entitled = j == i
                    || match &audience {
                        Audience::Coalition => true,
                        Audience::Members(m) => m.contains(&id.key()),
                        Audience::Private => false,
                    };
                if entitled {
                    expected[j].insert(r.id);
                }
            }
        }
        node.store().clone().close().await;
    }
    println!("\n5. Waiting until every node holds exactly what it is entitled to…");
    let start = Instant::now();
    loop {
        let mut done = true;
        for (i, home) in homes.iter().enumerate() {
            let have = held(home, &ids[i]).await?;
            if have != expected[i] {
                done = false;
                if !have.is_subset(&expected[i]) {
                    return Err(DemoError::AudienceBroken(i));
                }
            }
        }
        if done {
            break;
        }
        if start.elapsed() > CONVERGE_TIMEOUT {
            return Err(DemoError::NotConverged(CONVERGE_TIMEOUT));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    println!("   converged in {:.1} s:", start.elapsed().as_secs_f64());
    for (i, e) in expected.iter().enumerate() {
        let node = Node::open(homes[i].clone(), &ids[i]).await?;
        let unread = node.store().unopened_sealed(None).await?.len();
        node.store().clone().close().await;
        println!(
            "   node {i} ({}) holds {} records, {unread} of them sealed for others (relayed, unread)",
            ORGS[i].1,
            e.len()
        );
    }

    println!("\n6. What the analyst at node 1 sees (current findings by country and category):");
    let analyst = Node::open(homes[1].clone(), &ids[1]).await?;
    let rows = analyst.store().findings(false).await?;
    let mut by: BTreeMap<(String, String), usize> = BTreeMap::new();
    for r in &rows {
        *by.entry((r.country.clone(), r.category.clone()))
            .or_default() += 1;
    }
    for ((c, cat), n) in &by {
        println!("   {c}  {cat:<30} {n}");
    }
    println!(
        "   total {} findings from {} organisations",
        rows.len(),
        rows.iter().map(|r| r.author).collect::<BTreeSet<_>>().len()
    );

    let bundle = root.join("coalition.bundle");
    let n = analyst.export_bundle(&bundle, false, None).await?;
    analyst.store().clone().close().await;
    let v = verify_bundle(&bundle)?;
    println!("\n7. An auditor verifies node 1's coalition bundle offline ({n} records):");
    println!(
        "   {} of {} records verify (ed25519 signatures, schemas, membership under each record's epoch); {} authors; {} failures",
        v.valid,
        v.checked,
        v.authors.len(),
        v.failures.len()
    );
    let tampered = root.join("tampered.bundle");
    let mut bytes = std::fs::read(&bundle).map_err(io_err(&bundle))?;
    let at = bytes.len() * 2 / 3;
    bytes[at] ^= 0x01;
    std::fs::write(&tampered, &bytes).map_err(io_err(&tampered))?;
    let t = verify_bundle(&tampered)?;
    println!(
        "   a copy with one flipped bit fails: {}",
        t.failures
            .first()
            .map(|f| format!("record #{}: {}", f.index, f.reason))
            .unwrap_or_default()
    );
    if !v.ok() || t.ok() {
        return Err(DemoError::VerificationMisbehaved);
    }
    Ok(())
}

struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new() -> Result<Self, DemoError> {
        let path = std::env::temp_dir().join(format!(
            "coalition-demo-{}-{}",
            std::process::id(),
            now_ms()
        ));
        std::fs::create_dir_all(&path).map_err(io_err(&path))?;
        Ok(Self { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.path).ok();
    }
}
