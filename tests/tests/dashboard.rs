//! The dashboard in a real browser: headless Chromium driven over WebDriver loads the page
//! from `coalition run --api-only`, switches to Georgian, groups and filters, and reads
//! what a person would see. Skipped (with a message) only when Chromium or chromedriver
//! is missing and `CI` is not set; on CI it must run (.ci/install-browser.sh installs them).

#[path = "support/analysis.rs"]
mod support;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use coalition::record::Audience;
use serde_json::{json, Value};
use support::{examples, init_home, Api};

const CHROMIUM: &str = "/usr/bin/chromium";
const DEADLINE: Duration = Duration::from_secs(30);
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn chromedriver() -> Option<String> {
    ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .map(String::from)
}

/// A chromedriver process and one browser session, both ended on drop.
struct Browser {
    driver: Child,
    url: String,
    session: String,
    _profile: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn post(url: &str, body: Value) -> Value {
    let resp = match ureq::post(url)
        .timeout(Duration::from_secs(60))
        .send_json(body)
    {
        Ok(r) => r,
        Err(ureq::Error::Status(code, r)) => {
            panic!("POST {url}: {code} {}", r.into_string().unwrap_or_default())
        }
        Err(e) => panic!("POST {url}: {e}"),
    };
    resp.into_json::<Value>().expect("WebDriver JSON")["value"].take()
}

impl Browser {
    fn start(driver_path: &str) -> Self {
        let port = free_port();
        let driver = Command::new(driver_path)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Ok(r) = ureq::get(&format!("{url}/status")).call() {
                let v: Value = r.into_json().unwrap_or_default();
                if v["value"]["ready"] == true {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::tempdir().expect("profile dir");
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,1000",
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let mut b = Self {
            driver,
            url,
            session: String::new(),
            _profile: profile,
        };
        let v = post(
            &format!("{}/session", b.url),
            json!({"capabilities": {"alwaysMatch": {
                "goog:chromeOptions": {"binary": CHROMIUM, "args": args}
            }}}),
        );
        b.session = v["sessionId"].as_str().expect("session id").to_string();
        b
    }

    fn cmd(&self, path: &str, body: Value) -> Value {
        post(
            &format!("{}/session/{}/{path}", self.url, self.session),
            body,
        )
    }

    fn goto(&self, url: &str) {
        self.cmd("url", json!({ "url": url }));
    }

    fn script(&self, js: &str) -> Value {
        self.cmd("execute/sync", json!({"script": js, "args": []}))
    }

    fn find(&self, css: &str) -> String {
        let v = self.cmd("element", json!({"using": "css selector", "value": css}));
        v[ELEMENT].as_str().expect("element id").to_string()
    }

    fn click(&self, css: &str) {
        let id = self.find(css);
        self.cmd(&format!("element/{id}/click"), json!({}));
    }

    /// The element's rendered text, as a person sees it.
    fn text(&self, css: &str) -> String {
        let id = self.find(css);
        let r = ureq::get(&format!(
            "{}/session/{}/element/{id}/text",
            self.url, self.session
        ))
        .call()
        .expect("element text");
        r.into_json::<Value>().expect("JSON")["value"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Waits until the dashboard finished loading what the last change asked for.
    fn wait_ready(&self) {
        self.wait_until("the dashboard to load", || {
            self.script("return document.body.dataset.ready === 'yes'") == true
        });
    }

    fn wait_until(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + DEADLINE;
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The rows of the counts table: each cell's rendered text.
    fn counts(&self) -> Vec<Vec<String>> {
        let v = self.script(
            "return [...document.querySelectorAll('#counts tbody tr')]\
             .map(tr => [...tr.cells].map(td => td.innerText.trim()))",
        );
        serde_json::from_value(v).expect("rows of cells")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            ureq::delete(&format!("{}/session/{}", self.url, self.session))
                .call()
                .ok();
        }
        self.driver.kill().ok();
        self.driver.wait().ok();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn analysts_see_counts_chart_map_and_details_in_georgian() {
    let driver = chromedriver();
    if driver.is_none() || !Path::new(CHROMIUM).is_file() {
        if std::env::var_os("CI").is_some() {
            panic!(
                "CI is set but {CHROMIUM} or chromedriver is missing: run .ci/install-browser.sh"
            );
        }
        eprintln!(
            "SKIPPED dashboard test: {CHROMIUM} or chromedriver not installed (apt-get install chromium chromium-driver)"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let home = init_home(tmp.path(), "analyst-node", "GE").await;
    for p in examples() {
        home.add(&p, Audience::Coalition).await;
    }
    let api = Api::start(&home.dir);
    let browser = Browser::start(&driver.unwrap());
    browser.goto(&format!("{}/", api.base));
    browser.wait_ready();
    assert!(browser.text("h1").contains("Coalition"));

    // Georgian.
    browser.click("#lang option[value='ka']");
    browser.wait_until("Georgian labels", || {
        browser.text("#counts thead").contains("ქვეყანა")
    });
    browser.wait_ready();
    let rows = browser.counts();
    let georgia = rows
        .iter()
        .find(|r| r.first().is_some_and(|c| c.contains("საქართველო")))
        .unwrap_or_else(|| panic!("no row for Georgia in {rows:?}"));
    assert!(
        georgia.ends_with(&["4".to_string(), "30".to_string()]),
        "{georgia:?}"
    );
    assert!(browser.text("#summary").contains("34"), "all 34 findings");

    // Filter on a category and group by security actor.
    browser.click("#f-category option[value='excessive_force']");
    browser.wait_ready();
    browser.click("#g1 option[value='actor_type']");
    browser.wait_ready();
    let rows = browser.counts();
    assert_eq!(
        rows.iter().map(|r| r[0].as_str()).collect::<Vec<_>>(),
        // Police in four findings; gendarmerie in one (Belgrade).
        vec![
            browser.script("return document.querySelector('#f-actor_type option[value=police]').textContent").as_str().unwrap(),
            browser.script("return document.querySelector('#f-actor_type option[value=gendarmerie]').textContent").as_str().unwrap(),
        ],
        "{rows:?}"
    );
    assert_eq!(rows[0][1], "4");
    assert!(browser.text("#summary").contains('4'));

    // The chart has one bar per month between the first and last finding.
    let bars = browser.script("return document.querySelectorAll('#chart rect.bar').length");
    assert!(bars.as_u64().unwrap() >= 4, "{bars}");
    // The map shows points for findings with coordinates.
    let points = browser.script("return document.querySelectorAll('#map circle.point').length");
    assert_eq!(
        points, 4,
        "all four excessive-force findings have coordinates"
    );

    // A finding's detail: author, signature, audience, versions, in Georgian.
    browser.click("#list tbody tr");
    browser.wait_until("the detail panel", || {
        browser.text("#detail-body").contains("ed25519")
    });
    let detail = browser.text("#detail-body");
    for want in [
        "ხელმოწერა",
        "აუდიტორია",
        "მთელი კოალიცია",
        "ვერსიების ისტორია",
        &home.identity.key().to_hex(),
    ] {
        assert!(detail.contains(want), "{want:?} missing from {detail}");
    }
}
