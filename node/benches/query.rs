//! Analyst query benchmark (issue 5): with COALITION_BENCH_FINDINGS findings (default
//! 1,000,000) in a node's store, times through the HTTP API of a running `coalition run`
//! node an aggregate by country × category × month, a filtered page of 50 findings and a
//! full-text search; times the same aggregate as hand-written SQL on the same file as the
//! floor; and reads the node's peak resident memory (VmHWM).
//!
//! The store is built once and kept under `target/bench-query/` (delete it to rebuild):
//! real records signed by 16 organisations (about 5 % corrected, 1 % retracted), checked
//! and inserted through the same `check::prepare_verified` + `Store::insert` path as an
//! import. Run: `cargo bench -p coalition-node --bench query`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use coalition::check;
use coalition::config::Home;
use coalition::finding::{to_payload, FINDING_SCHEMA, RETRACTION_SCHEMA};
use coalition::identity::Identity;
use coalition::node::Node;
use coalition::query::{self, Dimension, Page, Query};
use coalition::record::{sign, Audience, Draft, Record, RecordId};
use coalition::store::{Store, StoreKey};
use rayon::prelude::*;
use serde_json::{json, Value};

const PASSPHRASE: &str = "benchmark passphrase, not secret";
const AUTHORS: u64 = 16;
const BATCH: usize = 20_000;
const RUNS: usize = 7;

const COUNTRIES: &[(&str, f64, f64, f64, f64)] = &[
    ("RS", 42.3, 46.1, 19.0, 22.9),
    ("XK", 42.0, 43.2, 20.1, 21.7),
    ("MK", 41.0, 42.3, 20.6, 22.9),
    ("ME", 41.9, 43.5, 18.5, 20.3),
    ("AL", 39.7, 42.6, 19.3, 21.0),
    ("BA", 42.6, 45.2, 15.8, 19.6),
    ("GE", 41.1, 43.5, 40.0, 46.6),
];
const CATEGORIES: &[&str] = &[
    "excessive_force",
    "arbitrary_detention",
    "intimidation_harassment",
    "discrimination",
    "ill_treatment",
    "failure_to_investigate",
    "corruption",
    "salw_incident",
    "community_security_relations",
    "positive_engagement",
    "other",
];
const ACTORS: &[&str] = &[
    "police",
    "gendarmerie",
    "military",
    "border_police",
    "intelligence",
    "private_security",
    "international_mission",
    "other",
];
const GROUPS: &[&str] = &[
    "roma",
    "women",
    "youth",
    "children",
    "journalists",
    "human_rights_defenders",
    "migrants_refugees",
    "general_public",
];
/// Words per language: (language tag, words).
const WORDS: &[(&str, &[&str])] = &[
    (
        "en",
        &[
            "police",
            "protest",
            "detention",
            "beaten",
            "checkpoint",
            "journalist",
            "students",
            "border",
            "raid",
            "complaint",
            "threats",
            "station",
            "market",
            "village",
            "bridge",
            "night",
            "search",
            "arrest",
            "officers",
            "crowd",
        ],
    ),
    (
        "sr-Latn",
        &[
            "policija",
            "protest",
            "privođenje",
            "pretučen",
            "kontrola",
            "novinarka",
            "studenti",
            "granica",
            "racija",
            "pritužba",
            "pretnje",
            "stanica",
            "pijaca",
            "selo",
            "most",
            "noću",
            "pretres",
            "hapšenje",
            "službenici",
            "okupljanje",
        ],
    ),
    (
        "sq",
        &[
            "policia",
            "protesta",
            "ndalim",
            "rrahur",
            "kontroll",
            "gazetare",
            "studentët",
            "kufiri",
            "bastisje",
            "ankesë",
            "kërcënime",
            "stacion",
            "tregu",
            "fshat",
            "ura",
            "natën",
            "kontrollim",
            "arrestim",
            "zyrtarë",
            "turmë",
        ],
    ),
    (
        "ka",
        &[
            "პოლიცია",
            "აქცია",
            "დაკავება",
            "ცემა",
            "საგუშაგო",
            "ჟურნალისტი",
            "სტუდენტები",
            "საზღვარი",
            "რეიდი",
            "საჩივარი",
            "მუქარა",
            "განყოფილება",
            "ბაზარი",
            "სოფელი",
            "ხიდი",
            "ღამით",
            "ჩხრეკა",
            "დაპატიმრება",
            "თანამშრომლები",
            "ბრბო",
        ],
    ),
];

/// A small deterministic generator (SplitMix64), so every run builds the same store.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn date(days_since_2020: i64) -> String {
    // Civil from days (Howard Hinnant).
    let z = days_since_2020 + 18_262 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn finding(rng: &mut Rng) -> Value {
    let (cc, la0, la1, lo0, lo1) = COUNTRIES[rng.below(COUNTRIES.len())];
    let (lang, words) = WORDS[rng.below(WORDS.len())];
    let mut pick = |n: usize| -> String {
        (0..n)
            .map(|_| words[rng.below(words.len())])
            .collect::<Vec<_>>()
            .join(" ")
    };
    let title = pick(5);
    let summary = format!("{}. {}.", pick(12), pick(10));
    let mut rng2 = Rng(rng.next());
    let rng = &mut rng2;
    let mut location = json!({"country": cc, "region": format!("Region {}", rng.below(8)),
        "municipality": format!("Municipality {}", rng.below(40))});
    if rng.below(10) < 6 {
        location["coordinates"] = json!({
            "lat": ((la0 + (la1 - la0) * rng.unit()) * 1e4).round() / 1e4,
            "lon": ((lo0 + (lo1 - lo0) * rng.unit()) * 1e4).round() / 1e4,
            "precision": (["exact", "approximate", "municipality"])[rng.below(3)],
        });
    }
    let mut actors = vec![json!({"type": ACTORS[rng.below(ACTORS.len())]})];
    if rng.below(4) == 0 {
        actors.push(json!({"type": ACTORS[rng.below(ACTORS.len())]}));
    }
    let mut groups: Vec<&str> = (0..rng.below(3))
        .map(|_| GROUPS[rng.below(GROUPS.len())])
        .collect();
    groups.sort_unstable();
    groups.dedup();
    json!({
        "title": title,
        "summary": summary,
        "language": lang,
        "occurred": {"start": date(rng.below(6 * 365) as i64), "precision": "day"},
        "location": location,
        "category": CATEGORIES[rng.below(CATEGORIES.len())],
        "actors": actors,
        "affected": {"count": rng.below(60), "groups": groups},
        "sources": [{"type": "own_observation"}],
        "confidence": (["low", "medium", "high"])[rng.below(3)],
    })
}

/// Signs one author's chain of `n` records: findings, some corrections and retractions.
fn author_chain(author: u64, n: usize) -> Vec<Record> {
    let id = Identity::from_seed(&[author as u8 + 1; 32]);
    let mut rng = Rng(author * 7919 + 1);
    let mut out: Vec<Record> = Vec::with_capacity(n);
    let mut heads: Vec<RecordId> = Vec::new();
    let mut prev = None;
    for seq in 1..=n as u64 {
        let roll = rng.below(100);
        let (schema, payload, supersedes) = if roll < 5 && !heads.is_empty() {
            let i = rng.below(heads.len());
            (
                FINDING_SCHEMA,
                finding(&mut rng),
                Some(heads.swap_remove(i)),
            )
        } else if roll < 6 && !heads.is_empty() {
            let i = rng.below(heads.len());
            (
                RETRACTION_SCHEMA,
                json!({"reason": "benchmark retraction"}),
                Some(heads.swap_remove(i)),
            )
        } else {
            (FINDING_SCHEMA, finding(&mut rng), None)
        };
        let r = sign(
            &id,
            seq,
            prev,
            Draft {
                schema: schema.into(),
                audience: Audience::Coalition,
                supersedes,
                epoch: None,
                payload: to_payload(&payload),
                created_at_ms: 1_700_000_000_000 + seq as i64 * 60_000,
            },
        );
        prev = Some(r.id);
        if schema == FINDING_SCHEMA {
            heads.push(r.id);
        }
        out.push(r);
    }
    out
}

async fn build(dir: &Path, n: usize) {
    if dir.exists() {
        std::fs::remove_dir_all(dir).expect("remove stale bench home");
    }
    let t = Instant::now();
    let (node, _) = Node::init(
        Home::new(Some(dir.to_path_buf())),
        "Bench",
        "RS",
        PASSPHRASE,
    )
    .await
    .expect("init");
    let per = n.div_ceil(AUTHORS as usize);
    eprintln!("building {n} records from {AUTHORS} organisations …");
    let chains: Vec<Vec<Record>> = (0..AUTHORS)
        .into_par_iter()
        .map(|a| author_chain(a, per.min(n - (a as usize * per).min(n))))
        .collect();
    eprintln!("  signed in {:.1} s", t.elapsed().as_secs_f64());
    // Interleave authors, as records arrive from many organisations.
    let mut all = Vec::with_capacity(n);
    let longest = chains.iter().map(Vec::len).max().unwrap_or(0);
    for i in 0..longest {
        for c in &chains {
            if let Some(r) = c.get(i) {
                all.push(r.clone());
            }
        }
    }
    drop(chains);
    let store = node.store();
    // Building only: a large page cache on every pooled connection, so the random-key
    // indexes of a big store do not spill to the WAL over and over inside a batch.
    let mut conns = Vec::new();
    for _ in 0..4 {
        let mut c = store.pool().acquire().await.expect("connection");
        sqlx::query("PRAGMA cache_size = -262144")
            .execute(&mut *c)
            .await
            .expect("cache size");
        conns.push(c);
    }
    drop(conns);
    let mut stored = 0;
    for (k, batch) in all.chunks(BATCH).enumerate() {
        let prepared: Vec<_> = batch
            .par_iter()
            .map(|r| check::prepare_verified(r.clone()).expect("valid generated record"))
            .collect();
        store.insert(&prepared).await.expect("insert");
        stored += batch.len();
        if k % 10 == 0 {
            eprintln!(
                "  {stored} / {n} stored, {:.0} s",
                t.elapsed().as_secs_f64()
            );
        }
    }
    sqlx::query("ANALYZE").execute(store.pool()).await.ok();
    node.store().clone().close().await;
    std::fs::write(dir.join("bench-complete"), n.to_string()).expect("marker");
    eprintln!("store built in {:.1} s", t.elapsed().as_secs_f64());
}

/// One HTTP/1.1 GET on a fresh connection: (status, body bytes).
fn get(addr: &str, path: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("read");
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| buf[i + 4..].to_vec())
        .unwrap_or_default();
    (status, body)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn time_ms(mut f: impl FnMut()) -> (f64, f64) {
    let t = Instant::now();
    f();
    let cold = t.elapsed().as_secs_f64() * 1e3;
    let warm = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    (cold, median(warm))
}

fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

const AGG_FLOOR_SQL: &str = "SELECT country, category, substr(occurred_start, 1, 7), COUNT(*), \
    COALESCE(SUM(affected_count), 0) FROM findings WHERE is_head = 1 AND retracted = 0 \
    GROUP BY 1, 2, 3 ORDER BY 1, 2, 3";

fn main() {
    let n: usize = std::env::var("COALITION_BENCH_FINDINGS")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(1_000_000);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/bench-query")
        .join(format!("home-{n}"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let marker = dir.join("bench-complete");
    if std::fs::read_to_string(&marker).ok().as_deref() != Some(n.to_string().as_str()) {
        rt.block_on(build(&dir, n));
    } else {
        eprintln!("reusing the store in {}", dir.display());
    }
    let db = Home::new(Some(dir.clone())).db_path();
    let size_mb = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0) as f64 / 1e6;

    // In-process: the library call and the hand-written floor on the same file.
    let (lib_agg, floor, current) = rt.block_on(async {
        let identity =
            Identity::load(&Home::new(Some(dir.clone())).key_path(), PASSPHRASE).expect("key file");
        let store = Store::open(&db, &StoreKey::of(&identity))
            .await
            .expect("open");
        let reader = store.reader();
        let pool = reader.pool();
        let current: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM findings WHERE is_head = 1 AND retracted = 0")
                .fetch_one(pool)
                .await
                .expect("count");
        let q = Query::default();
        let dims = [Dimension::Country, Dimension::Category, Dimension::Month];
        let mut lib = Vec::new();
        let mut fl = Vec::new();
        for _ in 0..RUNS {
            let t = Instant::now();
            let a = query::aggregate(&reader, &q, &dims)
                .await
                .expect("aggregate");
            lib.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            let rows = sqlx::query(AGG_FLOOR_SQL)
                .fetch_all(pool)
                .await
                .expect("floor");
            fl.push(t.elapsed().as_secs_f64() * 1e3);
            assert_eq!(rows.len(), a.rows.len(), "floor and library agree");
        }
        let page = Page {
            limit: 50,
            cursor: None,
            with_total: false,
        };
        query::findings(&reader, &q, &page).await.expect("page");
        store.close().await;
        (median(lib), median(fl), current)
    });

    // Through the API of a running node, a separate process whose memory we read.
    let mut child = Command::new(env!("CARGO_BIN_EXE_coalition"))
        .arg("--home")
        .arg(&dir)
        .args(["run", "--api-only", "--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start coalition run");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("address line");
    let addr = line
        .trim()
        .strip_prefix("api listening on http://")
        .expect("address")
        .to_string();
    let pid = child.id();
    let idle_kib = vm_hwm_kib(pid);
    let api = |path: &str| -> (f64, f64) {
        time_ms(|| {
            let (status, body) = get(&addr, path);
            assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
        })
    };
    let agg = api("/api/v1/aggregate?group_by=country,category,month");
    let page = api("/api/v1/findings?country=RS&category=excessive_force&limit=50");
    let fts = api("/api/v1/findings?q=checkpoint&limit=50");
    let fts_ka = api("/api/v1/findings?q=%E1%83%AE%E1%83%98%E1%83%93%E1%83%98&country=GE&limit=50");
    let deep = api("/api/v1/findings?limit=50&from=2021-01-01&to=2021-12-31&confidence=high");
    let hwm_kib = vm_hwm_kib(pid);
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .ok();
    let _ = child.wait_timeout_compat(Duration::from_secs(20));

    println!("Coalition query benchmark");
    println!("  records in store        {n} ({current} current findings), {size_mb:.0} MB file");
    println!("  (times in ms: cold first call / median of {RUNS} warm calls)");
    println!(
        "  API aggregate country x category x month  {:>8.1} / {:>8.1}",
        agg.0, agg.1
    );
    println!(
        "  API page of 50, country + category        {:>8.1} / {:>8.1}",
        page.0, page.1
    );
    println!(
        "  API full-text search (en), page of 50     {:>8.1} / {:>8.1}",
        fts.0, fts.1
    );
    println!(
        "  API full-text search (ka) + country       {:>8.1} / {:>8.1}",
        fts_ka.0, fts_ka.1
    );
    println!(
        "  API page of 50, year + confidence          {:>8.1} / {:>8.1}",
        deep.0, deep.1
    );
    println!("  library aggregate (in process)            {lib_agg:>8.1}");
    println!("  hand-written SQL floor (same file)        {floor:>8.1}");
    println!(
        "  ratio API aggregate / floor               {:>8.2}   (library / floor {:.2})",
        agg.1 / floor,
        lib_agg / floor
    );
    println!(
        "  node peak RSS (VmHWM)                     {:>8.1} MiB (after start: {:.1} MiB)",
        hwm_kib as f64 / 1024.0,
        idle_kib as f64 / 1024.0
    );
}

/// `Child::wait` with a deadline, without extra crates.
trait WaitTimeout {
    fn wait_timeout_compat(&mut self, d: Duration) -> Option<std::process::ExitStatus>;
}

impl WaitTimeout for std::process::Child {
    fn wait_timeout_compat(&mut self, d: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + d;
        loop {
            if let Ok(Some(s)) = self.try_wait() {
                return Some(s);
            }
            if Instant::now() > deadline {
                self.kill().ok();
                return self.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
