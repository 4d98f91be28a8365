//! Measuring a node under attack: a three-member coalition (the target A, an honest
//! member B whose node A dials, and M, a member organisation with no node whose
//! certificates the dishonest member presents), and for each attack, while it runs: the
//! target's peak RSS, how long a record B adds takes to reach A, and the latency of an
//! analyst's API calls to A (`/api/v1/status` and `/api/v1/findings`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use libp2p::identity;

use super::dials::DialFlood;
use super::member::MemberAttack;
use super::Attack;
use crate::node::{toml_list, TestNode};
use crate::{all_examples, bundle_records, found, held, Org};

/// Limits of the target beyond the defaults: the address block after repeated hello
/// timeouts is out of the way, so that strangers from one address keep coming (what
/// saves the node must be the other limits).
const TARGET_LIMITS: &str = "hello_timeouts_per_ip = 1000000";

/// Resident memory of process `pid` in KiB (`VmRSS`), `None` once it is gone.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The coalition under attack.
pub struct Fixture {
    /// The target's organisation.
    pub a: Org,
    /// The honest member.
    pub b: Org,
    /// The organisation of the dishonest member (no node of its own).
    pub m: Org,
    /// The target.
    pub na: TestNode,
    /// The honest member's node.
    pub nb: TestNode,
    examples: Vec<String>,
}

impl Fixture {
    /// Founds the coalition and starts A and B; B's first record has reached A.
    pub fn start() -> Self {
        let (a, b, m) = (
            Org::init("Org A", "RS"),
            Org::init("Org B", "XK"),
            Org::init("Org M", "MK"),
        );
        found("Flooded Coalition", &[&a, &b, &m], 2);
        let nb = b.start_node("b", "");
        let na = a.start_node(
            "a",
            &format!("bootstrap = {}\n{TARGET_LIMITS}", toml_list(&[&nb.tcp])),
        );
        let examples = all_examples()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        let mut fx = Self {
            a,
            b,
            m,
            na,
            nb,
            examples,
        };
        fx.sync_time(Duration::from_secs(120))
            .expect("B's first record reached A");
        fx
    }

    /// How long a record B adds now takes to be held by A, `None` past `bound`.
    pub fn sync_time(&mut self, bound: Duration) -> Option<Duration> {
        let example = self.examples.pop().expect("an example left to add");
        let id = self.b.add_example(&example, "coalition");
        let start = Instant::now();
        while start.elapsed() < bound {
            if held(&self.a).contains(&id) {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// A node certificate of M for a fresh peer id, and that peer's key: what a
    /// dishonest member's node presents.
    pub fn dishonest_member(&self) -> (identity::Keypair, Vec<u8>) {
        let key = identity::Keypair::generate_ed25519();
        let peer = key.public().to_peer_id().to_string();
        let id = self.m.run(["node", "cert", "--peer-id", &peer]).ok().line();
        // Node certificates leave a node only in a backup.
        let bundle = self.m.export(
            "bundle",
            &format!("cert-{peer}.bundle"),
            &["--include-private"],
        );
        let cert = bundle_records(&bundle)
            .into_iter()
            .find(|r| coalition::record::RecordId::of(r).to_hex() == id)
            .expect("the certificate is in M's bundle");
        (key, cert)
    }

    /// Whether the target still runs and its API answers.
    pub fn alive(&self) -> bool {
        rss_kib(self.na.pid()).is_some() && api_call(&self.na.api_url(), "/api/v1/status").is_ok()
    }
}

/// One GET against the API: how long it took.
fn api_call(base: &str, path: &str) -> Result<Duration, String> {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build();
    let t = Instant::now();
    let r = agent
        .get(&format!("{base}{path}"))
        .call()
        .map_err(|e| e.to_string())?;
    if r.status() != 200 {
        return Err(format!("{path}: HTTP {}", r.status()));
    }
    r.into_string().map_err(|e| e.to_string())?;
    Ok(t.elapsed())
}

/// A running attack of any kind.
pub trait Running {
    /// Stops it; what it did.
    fn finish(self: Box<Self>) -> String;
}

impl Running for Attack {
    fn finish(self: Box<Self>) -> String {
        format!("{:?}", self.stop())
    }
}

impl Running for DialFlood {
    fn finish(self: Box<Self>) -> String {
        format!("{:?}", self.stop())
    }
}

impl Running for MemberAttack {
    fn finish(self: Box<Self>) -> String {
        format!("{:?}", self.stop())
    }
}

/// Samples the target's RSS and plays the analyst, until stopped.
struct Probe {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    peak: Arc<Mutex<u64>>,
    latencies: Arc<Mutex<Vec<Duration>>>,
    errors: Arc<Mutex<Vec<String>>>,
}

impl Probe {
    fn start(pid: u32, api: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(Mutex::new(0));
        let latencies = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let (s, p) = (stop.clone(), peak.clone());
        let sampler = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(kib) = rss_kib(pid) {
                    let mut peak = p.lock().unwrap();
                    *peak = (*peak).max(kib);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let (s, l, e) = (stop.clone(), latencies.clone(), errors.clone());
        let analyst = std::thread::spawn(move || {
            let paths = ["/api/v1/status", "/api/v1/findings"];
            let mut i = 0;
            while !s.load(Ordering::Relaxed) {
                match api_call(&api, paths[i % paths.len()]) {
                    Ok(d) => l.lock().unwrap().push(d),
                    Err(err) => e.lock().unwrap().push(err),
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Self {
            stop,
            threads: vec![sampler, analyst],
            peak,
            latencies,
            errors,
        }
    }

    /// Stops; (peak RSS KiB, sorted latencies, errors).
    fn finish(self) -> (u64, Vec<Duration>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().ok();
        }
        let mut l = self.latencies.lock().unwrap().clone();
        l.sort();
        let peak = *self.peak.lock().unwrap();
        let errors = self.errors.lock().unwrap().clone();
        (peak, l, errors)
    }
}

/// What one attack did to the target.
#[derive(Debug, Clone)]
pub struct Figures {
    /// The attack's name.
    pub attack: String,
    /// RSS before the attack, KiB.
    pub rss_before_kib: u64,
    /// Peak RSS during it, KiB.
    pub rss_peak_kib: u64,
    /// How long B's record took to reach A during it (`None`: not within the bound).
    pub sync: Option<Duration>,
    /// Median API latency.
    pub api_p50: Duration,
    /// Slowest API call.
    pub api_max: Duration,
    /// API calls answered.
    pub api_calls: usize,
    /// API calls that failed, and why.
    pub api_errors: Vec<String>,
    /// Whether the target ran and answered once the attack stopped.
    pub alive: bool,
    /// What the adversary did and saw.
    pub adversary: String,
}

impl Figures {
    /// The table's header.
    pub const HEADER: &'static str =
        "| attack | RSS before → peak (MiB) | member sync (s) | API p50 / max (ms) | API calls (errors) |\n|---|---|---|---|---|";

    /// One table row.
    pub fn row(&self) -> String {
        format!(
            "| {} | {:.0} → {:.0} | {} | {:.0} / {:.0} | {} ({}) |",
            self.attack,
            self.rss_before_kib as f64 / 1024.0,
            self.rss_peak_kib as f64 / 1024.0,
            self.sync.map_or("not within bound".into(), |d| format!(
                "{:.2}",
                d.as_secs_f64()
            )),
            self.api_p50.as_secs_f64() * 1000.0,
            self.api_max.as_secs_f64() * 1000.0,
            self.api_calls,
            self.api_errors.len(),
        )
    }
}

/// Runs the attack `start` starts against the fixture's target for at least `hold`;
/// measures while it runs. B's record is added one second into the attack.
pub fn measure(
    fx: &mut Fixture,
    attack: &str,
    hold: Duration,
    sync_bound: Duration,
    start: impl FnOnce(&Fixture) -> Box<dyn Running>,
) -> Figures {
    let pid = fx.na.pid();
    let rss_before_kib = rss_kib(pid).unwrap_or(0);
    let began = Instant::now();
    let running = start(fx);
    let probe = Probe::start(pid, fx.na.api_url());
    // Let the attack get going before the member's record is written.
    std::thread::sleep(Duration::from_secs(1));
    let sync = fx.sync_time(sync_bound);
    if let Some(rest) = hold.checked_sub(began.elapsed()) {
        std::thread::sleep(rest);
    }
    let (rss_peak_kib, latencies, api_errors) = probe.finish();
    let adversary = running.finish();
    let pick = |q: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or(Duration::MAX)
    };
    Figures {
        attack: attack.to_string(),
        rss_before_kib,
        rss_peak_kib,
        sync,
        api_p50: pick(0.5),
        api_max: pick(1.0),
        api_calls: latencies.len(),
        api_errors,
        alive: fx.alive(),
        adversary,
    }
}

/// Starts an attack against the fixture's target.
pub type Start = fn(&Fixture) -> Box<dyn Running>;

/// The attacks, by name.
pub fn attacks() -> Vec<(&'static str, Start)> {
    use super::member::Misdeed;
    fn member(fx: &Fixture, misdeed: Misdeed) -> Box<dyn Running> {
        let (key, cert) = fx.dishonest_member();
        Box::new(MemberAttack::start(&fx.na.tcp, key, Some(cert), misdeed))
    }
    vec![
        ("request flood (member)", |fx| {
            member(fx, Misdeed::RequestFlood)
        }),
        ("never-reading member", |fx| member(fx, Misdeed::NeverRead)),
        ("gossip flood (member, unknown records)", |fx| {
            member(fx, Misdeed::GossipRecords)
        }),
        ("gossip flood (member, junk)", |fx| {
            member(fx, Misdeed::GossipJunk)
        }),
        ("gossip flood (strangers)", |fx| {
            Box::new(MemberAttack::start(
                &fx.na.tcp,
                identity::Keypair::generate_ed25519(),
                None,
                Misdeed::GossipStranger,
            ))
        }),
        ("max+1 and garbage frames (strangers)", |fx| {
            Box::new(Attack::sending(&fx.na.tcp, 4, 0, super::edge_frames))
        }),
        ("request flood and stalled frames (strangers)", |fx| {
            Box::new(Attack::start(&fx.na.tcp, 4, 4))
        }),
        ("1 000 dials (200 addresses)", |fx| {
            Box::new(DialFlood::start(&fx.na.tcp, 1000))
        }),
    ]
}

/// The figure run: a fresh fixture, the member's sync time without an attack, then every
/// attack held for `secs` (the member's bound: `max(secs, 60)` s). Prints the table on
/// stdout (progress and the adversaries' tallies on stderr) and returns the rows. With
/// `FLOOD_ONLY` set, only the attacks whose name contains it.
pub fn figure_run(secs: u64) -> Vec<Figures> {
    let only = std::env::var("FLOOD_ONLY").unwrap_or_default();
    let mut fx = Fixture::start();
    let quiet = fx.sync_time(Duration::from_secs(120));
    eprintln!("member sync without attack: {quiet:?}");
    let mut rows = Vec::new();
    for (name, start) in attacks().into_iter().filter(|(n, _)| n.contains(&only)) {
        let f = measure(
            &mut fx,
            name,
            Duration::from_secs(secs),
            Duration::from_secs(secs.max(60)),
            start,
        );
        eprintln!(
            "{}\n  adversary: {}\n  alive: {}",
            f.row(),
            f.adversary,
            f.alive
        );
        if !f.api_errors.is_empty() {
            eprintln!("  API errors: {:?}", f.api_errors);
        }
        rows.push(f);
    }
    println!(
        "attacks held {secs} s each; member sync without attack: {}",
        quiet.map_or("not within 120 s".into(), |d| format!(
            "{:.2} s",
            d.as_secs_f64()
        ))
    );
    println!("{}", Figures::HEADER);
    for f in &rows {
        println!("{}{}", f.row(), if f.alive { "" } else { " NODE DOWN" });
    }
    fx.na.stop();
    fx.nb.stop();
    rows
}

/// `FLOOD_SECS` from the environment, else `default`.
pub fn flood_secs(default: u64) -> u64 {
    std::env::var("FLOOD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}
