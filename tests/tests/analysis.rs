//! End to end: `coalition query`, analyst exports, signed reports and the HTTP API, on
//! homes holding the shipped example findings (with a correction, a retraction, a private
//! finding and a bundle imported twice).

#[path = "support/analysis.rs"]
mod support;

use std::path::Path;

use coalition::finding::FindingInput;
use coalition::record::{Audience, RecordId};
use serde_json::Value;
use support::{coalition, coalition_ok, examples, init_home, Api, TestHome};

/// What `fixture` made.
struct Fixture {
    _tmp: tempfile::TempDir,
    home: TestHome,
    corrected_v1: RecordId,
    corrected_v2: RecordId,
    retracted: RecordId,
    private: RecordId,
}

fn example(prefix: &str) -> std::path::PathBuf {
    examples()
        .into_iter()
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .expect("example exists")
}

/// A Serbian organisation's home: examples 01–06 (RS) and 29–32 (GE) shared with the
/// coalition, 07 (XK) private; 01 corrected (14 → 20 affected), 02 retracted.
async fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().expect("tempdir");
    let home = init_home(tmp.path(), "rs-org", "RS").await;
    let mut ids = Vec::new();
    for p in ["01", "02", "03", "04", "05", "06", "29", "30", "31", "32"] {
        ids.push(home.add(&example(p), Audience::Coalition).await);
    }
    let private = home.add(&example("07"), Audience::Private).await;
    let mut v: Value = serde_json::from_slice(&std::fs::read(example("01")).unwrap()).unwrap();
    v["affected"]["count"] = 20.into();
    let input = FindingInput::parse(&serde_json::to_vec(&v).unwrap(), "corrected").unwrap();
    let corrected_v2 = home
        .node
        .correct(&home.identity, &ids[0].to_hex(), &input)
        .await
        .unwrap()
        .finding;
    home.node
        .retract(
            &home.identity,
            &ids[1].to_hex(),
            "duplicate of another report",
        )
        .await
        .unwrap();
    Fixture {
        _tmp: tmp,
        corrected_v1: ids[0],
        corrected_v2,
        retracted: ids[1],
        private,
        home,
    }
}

fn json(home: &Path, args: &[&str]) -> Value {
    serde_json::from_str(&coalition_ok(home, args, 0)).expect("JSON output")
}

fn rows(agg: &Value) -> Vec<(Vec<Value>, i64, i64)> {
    agg["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["keys"].as_array().unwrap().clone(),
                r["findings"].as_i64().unwrap(),
                r["affected"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn queries_count_current_findings_once_and_exports_apply_filters() {
    let f = fixture().await;
    let home = f.home.dir.as_path();
    let by_country = json(home, &["query", "--group-by", "country", "--json"]);
    assert_eq!(
        rows(&by_country),
        vec![
            (vec!["GE".into()], 4, 30),
            (vec!["RS".into()], 5, 20 + 23 + 11 + 9 + 180),
            (vec!["XK".into()], 1, 200),
        ],
        "only latest, non-retracted versions count"
    );
    assert_eq!(by_country["total"]["findings"], 10);

    // Importing our own bundle twice changes nothing.
    let bundle = f.home.dir.join("all.bundle");
    let b = bundle.to_str().unwrap();
    coalition_ok(home, &["export", "-o", b, "--include-private"], 0);
    coalition_ok(home, &["import", b], 0);
    coalition_ok(home, &["import", b], 0);
    assert_eq!(
        json(home, &["query", "--group-by", "country", "--json"]),
        by_country
    );

    // Filters: actor type, dates, full text in several scripts, author.
    let total = |args: &[&str]| -> i64 {
        let mut a = vec!["query", "--json"];
        a.extend_from_slice(args);
        json(home, &a)["total"]["findings"].as_i64().unwrap()
    };
    assert_eq!(total(&["--actor-type", "gendarmerie"]), 2);
    assert_eq!(total(&["--from", "2025-10-01", "--to", "2025-12-31"]), 3);
    assert_eq!(total(&["--search", "batons"]), 2);
    assert_eq!(
        total(&["--search", "batons pepper"]),
        1,
        "every word must occur"
    );
    assert_eq!(total(&["--search", "წყლის"]), 1, "Georgian");
    assert_eq!(total(&["--search", "ucestale"]), 1, "diacritics folded");
    assert_eq!(
        total(&["--search", "ЛЕГИТИМИСАЊЕ"]),
        1,
        "Cyrillic, any case"
    );
    assert_eq!(total(&["--search", "(batons* \""]), 2, "FTS syntax is text");
    let key = f.home.identity.key().to_hex();
    assert_eq!(total(&["--author", &key]), 10);
    let by_actor = json(
        home,
        &[
            "query",
            "--country",
            "RS",
            "--group-by",
            "actor_type",
            "--json",
        ],
    );
    assert_eq!(
        rows(&by_actor)
            .iter()
            .map(|(k, n, _)| (k[0].as_str().unwrap().to_string(), *n))
            .collect::<Vec<_>>(),
        vec![
            ("border_police".to_string(), 1),
            ("gendarmerie".to_string(), 2),
            ("police".to_string(), 3)
        ]
    );
    let bad = coalition(home, &["query", "--category", "riots"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("riots"));

    // The table a person reads, in Georgian.
    let table = coalition_ok(
        home,
        &["query", "--group-by", "country,year", "--lang", "ka"],
        0,
    );
    assert!(table.contains("საქართველო"), "{table}");

    // ACLED-like CSV with HXL, filtered; private findings stay out.
    let csv_path = f.home.dir.join("ge.csv");
    coalition_ok(
        home,
        &[
            "export",
            "--format",
            "csv",
            "--hxl",
            "--country",
            "GE",
            "-o",
            csv_path.to_str().unwrap(),
        ],
        0,
    );
    let text = std::fs::read_to_string(&csv_path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("event_id_cnty,event_date,year,time_precision,event_type"));
    assert!(lines[1].starts_with("#event+code,#date+occurred"));
    assert_eq!(lines.len(), 2 + 4, "{text}");
    assert!(
        text.contains("41.6973"),
        "approximate coordinates kept: {text}"
    );

    let geo_path = f.home.dir.join("all.geojson");
    coalition_ok(
        home,
        &[
            "export",
            "--format",
            "geojson",
            "-o",
            geo_path.to_str().unwrap(),
        ],
        0,
    );
    let geo: Value = serde_json::from_str(&std::fs::read_to_string(&geo_path).unwrap()).unwrap();
    assert_eq!(geo["type"], "FeatureCollection");
    let feats = geo["features"].as_array().unwrap();
    assert_eq!(feats.len(), 9, "current, shareable findings");
    assert!(feats.iter().all(|x| x["id"] != f.private.to_hex()));
    let without: Vec<_> = feats.iter().filter(|x| x["geometry"].is_null()).collect();
    assert_eq!(without.len(), 3, "03, 06 and 30 have no coordinates");
    let tbilisi = feats
        .iter()
        .find(|x| x["properties"]["event_date"] == "2025-03-09")
        .unwrap();
    assert_eq!(tbilisi["geometry"]["coordinates"][0], 44.7985, "[lon, lat]");

    let jl_path = f.home.dir.join("rs.jsonl");
    coalition_ok(
        home,
        &[
            "export",
            "--format",
            "jsonl",
            "--country",
            "RS",
            "-o",
            jl_path.to_str().unwrap(),
        ],
        0,
    );
    assert_eq!(
        std::fs::read_to_string(&jl_path).unwrap().lines().count(),
        5
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reports_verify_against_bundles_and_mismatches_are_named() {
    let f = fixture().await;
    // Reports are judged against a coalition's membership: this organisation founds one
    // of its own.
    let mut charter = coalition::charter::SignedCharter::draft(
        "Solo Coalition",
        1,
        vec![f.home.node.member_card()],
        false,
        1,
    )
    .unwrap();
    charter.sign(&f.home.identity).unwrap();
    f.home
        .node
        .adopt_charter(&f.home.identity, &charter)
        .await
        .unwrap();
    let home = f.home.dir.as_path();
    let dir = f.home.dir.clone();
    let p = |n: &str| dir.join(n).to_str().unwrap().to_string();
    coalition_ok(
        home,
        &[
            "report",
            "--country",
            "RS,GE",
            "--group-by",
            "country,category",
            "-o",
            &p("rs-ge.json"),
        ],
        0,
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(p("rs-ge.json")).unwrap()).unwrap();
    assert_eq!(report["report"]["total"]["findings"], 9);
    assert_eq!(report["report"]["records"].as_array().unwrap().len(), 9);
    assert!(report["report"]["epoch"].is_string());
    assert_eq!(report["report"]["audience"]["kind"], "coalition");
    let ids: Vec<&str> = report["report"]["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(ids.contains(&f.corrected_v2.to_hex().as_str()));
    assert!(!ids.contains(&f.corrected_v1.to_hex().as_str()));
    assert!(!ids.contains(&f.retracted.to_hex().as_str()));

    coalition_ok(home, &["export", "-o", &p("coalition.bundle")], 0);
    let ok = coalition_ok(
        home,
        &["verify-report", &p("rs-ge.json"), &p("coalition.bundle")],
        0,
    );
    assert!(ok.contains("OK"), "{ok}");

    // Tampered numbers: the signature no longer verifies.
    let tampered = std::fs::read_to_string(p("rs-ge.json")).unwrap().replacen(
        "\"findings\": 9",
        "\"findings\": 10",
        1,
    );
    std::fs::write(p("tampered.json"), tampered).unwrap();
    let out = coalition_ok(
        home,
        &["verify-report", &p("tampered.json"), &p("coalition.bundle")],
        1,
    );
    assert!(out.contains("signature: INVALID"), "{out}");

    // A report of everything still does not count (nor name) the private finding.
    coalition_ok(
        home,
        &["report", "--group-by", "country", "-o", &p("all.json")],
        0,
    );
    let all = std::fs::read_to_string(p("all.json")).unwrap();
    assert!(!all.contains(&f.private.to_hex()), "{all}");
    coalition_ok(
        home,
        &["verify-report", &p("all.json"), &p("coalition.bundle")],
        0,
    );

    // A bundle without the latest version of a counted finding cannot reproduce it.
    let records: Vec<Vec<u8>> = coalition_tests::bundle_records(Path::new(&p("coalition.bundle")))
        .into_iter()
        .filter(|r| RecordId::of(r) != f.corrected_v2)
        .collect();
    coalition_tests::write_bundle(Path::new(&p("older.bundle")), &records);
    let out = coalition_ok(
        home,
        &[
            "verify-report",
            "--json",
            &p("all.json"),
            &p("older.bundle"),
        ],
        1,
    );
    let check: Value = serde_json::from_str(&out).unwrap();
    assert!(check["signature_error"].is_null());
    assert!(check["producer_error"].is_null());
    assert_eq!(
        check["missing"],
        serde_json::json!([f.corrected_v2.to_hex()])
    );
    assert_eq!(check["extra"], serde_json::json!([f.corrected_v1.to_hex()]));
    assert_eq!(check["rows_differ"][0]["keys"], serde_json::json!(["RS"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_answers_with_json_and_problem_details_and_stops_on_sigterm() {
    let f = fixture().await;
    let api = Api::start(&f.home.dir);

    let agg = api.json("/api/v1/aggregate?group_by=country&group_by=month&country=GE");
    assert_eq!(agg["total"]["findings"], 4);
    assert_eq!(agg["rows"][0]["keys"], serde_json::json!(["GE", "2025-03"]));

    let first = api.json("/api/v1/findings?country=GE&limit=3");
    assert_eq!(first["items"].as_array().unwrap().len(), 3);
    assert_eq!(first["items"][0]["occurred_start"], "2025-10-03");
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_string();
    let second = api.json(&format!(
        "/api/v1/findings?country=GE&limit=3&cursor={cursor}"
    ));
    assert_eq!(second["items"].as_array().unwrap().len(), 1);
    assert!(second.get("next_cursor").is_none());

    let v2 = api.json(&format!("/api/v1/findings/{}", f.corrected_v2));
    assert_eq!(v2["current"], true);
    assert_eq!(v2["signature"], "valid (ed25519 verify_strict)");
    assert_eq!(v2["audience"]["kind"], "coalition");
    assert_eq!(v2["versions"].as_array().unwrap().len(), 2);
    let v1 = api.json(&format!(
        "/api/v1/findings/{}",
        &f.corrected_v1.to_hex()[..10]
    ));
    assert_eq!(v1["current"], false);
    let gone = api.json(&format!("/api/v1/findings/{}", f.retracted));
    assert_eq!(gone["retracted"], "duplicate of another report");
    assert_eq!(gone["versions"][1]["schema"], "retraction/v1");

    for (path, status) in [
        ("/api/v1/aggregate?category=riots", 400),
        ("/api/v1/findings?limit=9999", 400),
        ("/api/v1/findings?colour=red", 400),
        ("/api/v1/findings/0000000000", 404),
        ("/api/v1/findings/not-hex", 400),
        ("/api/v1/nothing", 404),
    ] {
        let (s, ctype, body) = api.get(path);
        assert_eq!(s, status, "{path}: {body}");
        assert_eq!(ctype, "application/problem+json", "{path}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], status);
        assert!(v["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    let (s, _, _) = api.get_with_host("/api/v1/findings", Some("attacker.example"));
    assert_eq!(s, 421, "DNS rebinding is refused");

    let (s, ctype, html) = api.get("/");
    assert_eq!((s, ctype.as_str()), (200, "text/html"));
    assert!(html.contains("/static/app.js"));
    let (s, _, yaml) = api.get("/api/v1/openapi.yaml");
    assert_eq!(s, 200);
    assert!(yaml.starts_with("openapi: 3.1"));
    let vocab = api.json("/api/v1/vocabularies");
    assert_eq!(
        vocab["vocabularies"]["category"]["labels"]["sq"]["corruption"]
            .as_str()
            .map(|s| !s.is_empty()),
        Some(true)
    );
    assert_eq!(api.terminate(), Some(0), "graceful exit on SIGTERM");
}
