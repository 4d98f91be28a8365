//! Operators' tools (issue 19): progress bars on a terminal and silence off one, the
//! Prometheus metrics a running node serves at `/metrics`, and `coalition doctor`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use coalition_tests::{coalition_bin, eventually, found, held, toml_list, Org, PASSPHRASE};

const BELGRADE: &str = "01-rs-belgrade-protest-force.json";
const NOVI_SAD: &str = "02-rs-novi-sad-student-detention.json";

/// Runs `coalition ARGS` for `org` under a pseudo-terminal (util-linux `script`), as an
/// operator at a terminal would; what the terminal showed (stdout and stderr together).
fn on_a_terminal(org: &Org, args: &[&str]) -> String {
    let script = Path::new("/usr/bin/script");
    assert!(
        script.exists(),
        "this test needs util-linux `script` to give the command a terminal"
    );
    let mut words = vec![coalition_bin().display().to_string()];
    words.extend(args.iter().map(|a| a.to_string()));
    let line = shlex::try_join(words.iter().map(String::as_str)).expect("quotable");
    let out = Command::new(script)
        .args(["-qec", &line, "/dev/null"])
        .env("COALITION_HOME", org.home())
        .env("COALITION_PASSPHRASE", PASSPHRASE)
        .env_remove("COALITION_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run script");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn long_commands_show_progress_on_a_terminal_and_nothing_more_off_one() {
    let (a, b) = (Org::init("Org A", "RS"), Org::init("Org B", "XK"));
    a.add_example(BELGRADE, "coalition");
    a.add_example(NOVI_SAD, "coalition");
    let bundle = a.path("all.bundle");
    let bundle_arg = bundle.display().to_string();

    // Off a terminal (pipes, as in scripts, logs and these tests): the same output as
    // before progress bars existed, byte for byte.
    let export = a.run(["export", "-o", &bundle_arg]);
    export.ok();
    assert_eq!(export.stdout, "");
    assert_eq!(
        export.stderr,
        format!("wrote 2 records to {bundle_arg}\n"),
        "export added to its stderr"
    );
    let verify = a.run(["verify", &bundle_arg]);
    verify.ok();
    assert_eq!(verify.stderr, "", "verify wrote to stderr off a terminal");
    assert!(verify.stdout.starts_with("OK: all 2 records"));
    let store = a.run(["verify"]);
    store.ok();
    assert_eq!(store.stderr, "");
    let import = b.run(["import", &bundle_arg]);
    import.ok();
    assert_eq!(import.stderr, "", "import wrote to stderr off a terminal");
    assert_eq!(
        import.stdout,
        format!("read 2 records from {bundle_arg}: 2 stored, 0 already held, 0 refused\n")
    );

    // On a terminal: a bar with the count, the rate and the time left, then the summary.
    let shown = on_a_terminal(&a, &["verify", &bundle_arg]);
    assert!(
        shown.contains("verifying") && shown.contains("/2 records") && shown.contains("left)"),
        "no progress bar on a terminal: {shown:?}"
    );
    assert!(shown.contains("OK: all 2 records"), "{shown:?}");
    let shown = on_a_terminal(&b, &["import", &bundle_arg]);
    assert!(
        shown.contains("importing") && shown.contains("/2 records"),
        "{shown:?}"
    );
    let out = a.path("again.bundle").display().to_string();
    let shown = on_a_terminal(&a, &["export", "-o", &out]);
    assert!(
        shown.contains("exporting") && shown.contains("wrote 2 records"),
        "{shown:?}"
    );
}

/// One sample of an OpenMetrics exposition: metric name and its labels.
type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

fn is_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

/// Parses the labels of a sample line (`k="v",…`), strictly.
fn labels(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").expect("label: k=\"v\"");
        assert!(is_name(key), "bad label name {key:?}");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next().expect("unterminated label value");
            match c {
                '\\' => match chars.next().expect("escape").1 {
                    'n' => value.push('\n'),
                    c @ ('\\' | '"') => value.push(c),
                    c => panic!("bad escape \\{c}"),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        assert!(out.insert(key.to_string(), value).is_none(), "label twice");
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    out
}

/// A strict reading of OpenMetrics text (what `prometheus-client` writes and Prometheus
/// scrapes): every line a `# HELP`, `# TYPE`, `# UNIT` or a sample of a declared family,
/// every value a number, `# EOF` last. Returns the samples.
fn parse_openmetrics(text: &str) -> Samples {
    let mut families: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = Samples::new();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "no # EOF at the end");
    assert!(text.ends_with('\n'));
    for line in &lines[..lines.len() - 1] {
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let (kind, name) = (parts.next().unwrap(), parts.next().expect("family name"));
            assert!(is_name(name), "bad family name in {line:?}");
            match kind {
                "TYPE" => {
                    let t = parts.next().expect("type");
                    assert!(
                        ["counter", "gauge", "histogram", "info", "unknown"].contains(&t),
                        "type {t}"
                    );
                    families.insert(name.to_string(), t.to_string());
                }
                "HELP" | "UNIT" => assert!(parts.next().is_some(), "{line:?}"),
                _ => panic!("unknown metadata line {line:?}"),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample: name value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, labels(l.strip_suffix('}').expect("closing brace"))),
            None => (series, BTreeMap::new()),
        };
        assert!(is_name(name), "bad metric name in {line:?}");
        let family = ["_total", "_bucket", "_count", "_sum", "_created", ""]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| families.contains_key(*f)))
            .unwrap_or_else(|| panic!("sample of an undeclared family: {line:?}"));
        assert!(family.starts_with("coalition_"), "{line:?}");
        samples.insert((name.to_string(), labels), value);
    }
    samples
}

/// The value of `name` with exactly `labels`, if present.
fn value(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let l: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples.get(&(name.to_string(), l)).copied()
}

fn scrape(api: &str, host: Option<&str>) -> (u16, String, String) {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();
    let mut req = agent.get(&format!("{api}/metrics"));
    if let Some(h) = host {
        req = req.set("Host", h);
    }
    match req.call() {
        Ok(r) => {
            let ct = r.header("Content-Type").unwrap_or_default().to_string();
            (r.status(), ct, r.into_string().unwrap_or_default())
        }
        Err(ureq::Error::Status(s, r)) => (s, String::new(), r.into_string().unwrap_or_default()),
        Err(e) => panic!("GET /metrics: {e}"),
    }
}

#[test]
fn metrics_of_real_nodes_move_with_a_sync_and_parse_as_openmetrics() {
    let (a, b) = (Org::init("Org A", "RS"), Org::init("Org B", "XK"));
    found("Test Coalition", &[&a, &b], 2);
    let na = a.start_node("a", "");
    let nb = b.start_node("b", &format!("bootstrap = {}", toml_list(&[&na.tcp])));
    let id = a.add_example(BELGRADE, "coalition");
    eventually("B holds A's finding", Duration::from_secs(30), || {
        held(&b).contains(&id)
    });
    let a_short = &a.key()[..12];
    let mut last = String::new();
    eventually(
        "B's metrics show A's records, a sync and a verified peer",
        Duration::from_secs(30),
        || {
            let (status, ct, text) = scrape(&nb.api_url(), None);
            assert_eq!(status, 200, "{text}");
            assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
            let s = parse_openmetrics(&text);
            last = text;
            value(&s, "coalition_records_held", &[("author", a_short)]) >= Some(2.0)
                && value(&s, "coalition_sync_rounds_total", &[("result", "ok")]) >= Some(1.0)
                && value(
                    &s,
                    "coalition_sync_bytes_total",
                    &[("direction", "received")],
                ) > Some(0.0)
                && value(
                    &s,
                    "coalition_peers",
                    &[("relayed", "false"), ("verified", "true")],
                ) == Some(1.0)
                && value(&s, "coalition_last_sync_timestamp_seconds", &[]) > Some(0.0)
        },
    );
    let s = parse_openmetrics(&last);
    assert_eq!(
        value(&s, "coalition_records", &[]),
        Some(held(&b).len() as f64),
        "{last}"
    );
    // The scrapes before this one were timed.
    let (_, _, again) = scrape(&nb.api_url(), None);
    assert!(
        value(
            &parse_openmetrics(&again),
            "coalition_api_request_duration_seconds_count",
            &[("route", "/metrics"), ("status", "2xx")]
        ) >= Some(1.0),
        "{again}"
    );
    assert!(value(&s, "coalition_sync_duration_seconds_count", &[]) >= Some(1.0));
    // A's own view: its records, per author, as held.
    let (_, _, text) = scrape(&na.api_url(), None);
    let sa = parse_openmetrics(&text);
    // B's metric for A's records is what B's own store holds of A's (A may also hold
    // records of its own that B is not entitled to, so A's count is not the measure).
    eventually(
        "B's metrics count all of A's records B holds",
        Duration::from_secs(30),
        || {
            let status = b.run(["status", "--json"]).ok().json();
            let written = status["records_per_author"][a.key()].as_f64();
            let (_, _, text) = scrape(&nb.api_url(), None);
            let on_b = value(
                &parse_openmetrics(&text),
                "coalition_records_held",
                &[("author", a_short)],
            );
            written.is_some() && on_b == written
        },
    );
    assert!(value(&sa, "coalition_records", &[]).is_some());
    // Names, keys in full and content stay out; a foreign Host is refused as on every route.
    for text in [&last, &text] {
        for secret in [
            "Org A",
            "Org B",
            "Test Coalition",
            a.key(),
            b.key(),
            "Belgrade",
        ] {
            assert!(!text.contains(secret), "metrics carry {secret:?}:\n{text}");
        }
    }
    let (status, _, body) = scrape(&nb.api_url(), Some("attacker.example"));
    assert_eq!(status, 421, "{body}");
    assert!(!body.contains("coalition_"));
    na.stop();
    nb.stop();
}

/// Runs `coalition doctor` for `org`; (exit code, stdout).
fn doctor(org: &Org) -> (i32, String) {
    let out = org.run(["doctor", "--timeout", "3"]);
    (out.code, out.stdout.clone())
}

/// The line of `report` for `check` at `level` (`ok  `, `WARN`, `FAIL`), and its fix.
fn finding<'a>(report: &'a str, level: &str, check: &str) -> (&'a str, &'a str) {
    let lines: Vec<&str> = report.lines().collect();
    let i = lines
        .iter()
        .position(|l| l.starts_with(&format!("{level} {check}")))
        .unwrap_or_else(|| panic!("no {level} {check} in:\n{report}"));
    let fix = lines
        .get(i + 1)
        .and_then(|l| l.trim_start().strip_prefix("fix: "))
        .unwrap_or("");
    (lines[i], fix)
}

/// A peer id (of a fixed key) for bootstrap entries.
const SOME_PEER: &str = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";

#[test]
fn doctor_passes_a_healthy_home() {
    let org = Org::init("Org A", "RS");
    org.add_example(BELGRADE, "coalition");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let addr = format!("/ip4/127.0.0.1/tcp/{port}/p2p/{SOME_PEER}");
    org.configure_network(&format!("bootstrap = {}", toml_list(&[&addr])));
    let (code, report) = doctor(&org);
    assert_eq!(code, 0, "{report}");
    for check in ["config", "key", "store", "records", "bootstrap"] {
        finding(&report, "ok  ", check);
    }
    assert!(report.contains("records verify"), "{report}");
    assert!(report.contains(&format!("{addr}: answers")), "{report}");
    assert!(report.ends_with("healthy: nothing to fix\n"), "{report}");
    assert!(
        !report.contains("FAIL") && !report.contains("WARN"),
        "{report}"
    );
}

#[test]
fn doctor_finds_a_damaged_store_and_says_to_restore() {
    let org = Org::init("Org A", "RS");
    org.add_example(BELGRADE, "coalition");
    org.add_example(NOVI_SAD, "coalition");
    let db = org.home().join("coalition.db");
    // Every page into the main file first: a command may exit with its pages still in the
    // write-ahead log, and opening and closing the store checkpoints it.
    let key = coalition::identity::Identity::load(&org.home().join("key.enc"), PASSPHRASE)
        .expect("key file");
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = coalition::store::Store::open(&db, &coalition::store::StoreKey::of(&key))
            .await
            .expect("open the store");
        store.close().await;
    });
    let mut bytes = std::fs::read(&db).unwrap();
    // The store's pages are 16 KiB (docs/FORMATS.md §5).
    const PAGE: usize = 16384;
    assert!(bytes.len() > 3 * PAGE, "{} bytes", bytes.len());
    // Page 1 (the header and schema) stays; the pages after it are overwritten.
    for b in &mut bytes[PAGE..] {
        *b = 0xA5;
    }
    std::fs::write(&db, &bytes).unwrap();
    // Nothing may be read from a write-ahead log instead of the damaged pages.
    for side in ["coalition.db-wal", "coalition.db-shm"] {
        std::fs::remove_file(org.home().join(side)).ok();
    }
    let (code, report) = doctor(&org);
    assert_eq!(code, 1, "{report}");
    let (line, fix) = finding(&report, "FAIL", "store");
    assert!(line.contains("coalition.db"), "{line}");
    assert!(fix.contains("coalition restore"), "{fix}");
    assert!(report.contains("problem(s) to fix"), "{report}");
}

#[test]
fn doctor_finds_a_bad_config_and_names_the_line() {
    let org = Org::init("Org A", "RS");
    let path = org.home().join("config.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        format!("{text}\n[network]\nsync_interval_secs = \"often\"\n"),
    )
    .unwrap();
    let (code, report) = doctor(&org);
    assert_eq!(code, 1, "{report}");
    let (line, fix) = finding(&report, "FAIL", "config");
    assert!(line.contains("sync_interval_secs"), "{line}");
    assert!(fix.contains("config.toml"), "{fix}");
    // The store and key are still checked.
    finding(&report, "ok  ", "store");
    finding(&report, "ok  ", "key");

    let org = Org::init("Org B", "XK");
    org.configure_network(r#"bootstrap = ["127.0.0.1:7400"]"#);
    let (code, report) = doctor(&org);
    assert_eq!(code, 1, "{report}");
    let (line, _) = finding(&report, "FAIL", "config");
    assert!(line.contains("bootstrap"), "{line}");
}

#[test]
fn doctor_finds_an_unreachable_bootstrap_peer() {
    let org = Org::init("Org A", "RS");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("/ip4/127.0.0.1/tcp/{port}/p2p/{SOME_PEER}");
    org.configure_network(&format!("bootstrap = {}", toml_list(&[&addr])));
    let (code, report) = doctor(&org);
    assert_eq!(code, 1, "{report}");
    let (line, fix) = finding(&report, "FAIL", "bootstrap");
    assert!(
        line.contains(&addr) && line.contains("unreachable"),
        "{line}"
    );
    assert!(fix.contains(&format!("TCP {port}")), "{fix}");
}

#[test]
fn doctor_finds_an_expired_certificate_and_says_how_to_renew_it() {
    let org = Org::init("Org A", "RS");
    org.run(["node", "cert", "--peer-id", SOME_PEER, "--days", "0"])
        .ok();
    let (code, report) = doctor(&org);
    assert_eq!(code, 1, "{report}");
    let (line, fix) = finding(&report, "FAIL", "certificate");
    assert!(
        line.contains(SOME_PEER) && line.contains("expired"),
        "{line}"
    );
    assert!(
        fix.contains(&format!("coalition node cert --peer-id {SOME_PEER}")),
        "{fix}"
    );
    org.run(["node", "cert", "--peer-id", SOME_PEER, "--days", "90"])
        .ok();
    let (code, report) = doctor(&org);
    assert_eq!(code, 0, "{report}");
    let (line, _) = finding(&report, "ok  ", "certificate");
    assert!(
        line.contains("valid for 89 more days") || line.contains("valid for 90"),
        "{line}"
    );
}
