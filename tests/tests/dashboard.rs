//! The dashboard in a real browser: headless Chromium driven over WebDriver loads the page
//! from `coalition run --api-only`, switches to Georgian, groups and filters, and reads
//! what a person would see; and on a phone-sized screen (390×844, emulated), checks that
//! the chart and map fit the width without sideways scrolling and that no visible text is
//! smaller than 12 px, saving a screenshot. Skipped (with a message) only when Chromium or chromedriver
//! is missing and `CI` is not set; on CI it must run (.ci/install-browser.sh installs them).

#[path = "support/analysis.rs"]
mod support;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use coalition::record::Audience;
use serde_json::{json, Value};
use support::{examples, init_home, Api};

const CHROMIUM: &str = "/usr/bin/chromium";
const DEADLINE: Duration = Duration::from_secs(30);
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// A phone's screen in CSS pixels (iPhone 12–14).
const PHONE: (u32, u32) = (390, 844);
/// Smallest font size, in CSS pixels as rendered, that counts as readable on a phone.
const MIN_FONT_PX: f64 = 12.0;

fn chromedriver() -> Option<String> {
    ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .map(String::from)
}

/// The screen a browser session emulates.
#[derive(Clone, Copy)]
enum Screen {
    /// A 1280×1000 desktop window.
    Desktop,
    /// A 390×844 phone at 3 device pixels per CSS pixel, with touch (as an iPhone 12–14).
    Phone,
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
    fn start(driver_path: &str, screen: Screen) -> Self {
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
            match screen {
                Screen::Desktop => "--window-size=1280,1000",
                Screen::Phone => "--window-size=390,844",
            },
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let mut chrome = json!({"binary": CHROMIUM, "args": args});
        if let Screen::Phone = screen {
            chrome["mobileEmulation"] = json!({"deviceMetrics":
                {"width": PHONE.0, "height": PHONE.1, "pixelRatio": 3.0, "touch": true}});
        }
        let mut b = Self {
            driver,
            url,
            session: String::new(),
            _profile: profile,
        };
        let v = post(
            &format!("{}/session", b.url),
            json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": chrome}}}),
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

    /// Saves a PNG of the whole page (beyond the viewport) to `path`.
    fn screenshot(&self, path: &Path) {
        let v = self.cmd(
            "goog/cdp/execute",
            json!({"cmd": "Page.captureScreenshot",
                   "params": {"format": "png", "captureBeyondViewport": true}}),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(v["data"].as_str().expect("screenshot data"))
            .expect("screenshot is base64");
        std::fs::write(path, png).expect("write screenshot");
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

/// chromedriver's path, or `None` (after saying why) when the browser is missing and `CI`
/// is not set; on CI a missing browser fails the test.
fn chromedriver_or_skip() -> Option<String> {
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
        return None;
    }
    driver
}

#[tokio::test(flavor = "multi_thread")]
async fn analysts_see_counts_chart_map_and_details_in_georgian() {
    let Some(driver) = chromedriver_or_skip() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let home = init_home(tmp.path(), "analyst-node", "GE").await;
    for p in examples() {
        home.add(&p, Audience::Coalition).await;
    }
    let api = Api::start(&home.dir);
    let browser = Browser::start(&driver, Screen::Desktop);
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

/// What the page measures of itself on a small screen, in CSS pixels.
const PHONE_LAYOUT_JS: &str = r#"
const box = (el) => { const r = el.getBoundingClientRect();
  return { left: r.left, right: r.right, width: r.width, height: r.height }; };
const shown = (el) => { const s = getComputedStyle(el); const r = el.getBoundingClientRect();
  return s.display !== 'none' && s.visibility !== 'hidden' && r.width > 0 && r.height > 0; };
// Text as rendered: an SVG's text is scaled with its viewBox.
const small = [];
const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
for (let n; (n = walk.nextNode());) {
  const el = n.parentElement;
  if (!n.textContent.trim() || !shown(el) || el.closest('[hidden], title, option')) continue;
  let px = parseFloat(getComputedStyle(el).fontSize);
  if (el instanceof SVGElement) px *= Math.abs(el.getScreenCTM().a);
  if (px < arguments[0]) small.push(`${px.toFixed(2)}px: ${n.textContent.trim().slice(0, 40)}`);
}
// Boxes that stick out of the screen (an SVG's own content is clipped to it).
const name = (el) => `${el.tagName.toLowerCase()}${el.id ? '#' + el.id : ''}`;
const outside = [...document.querySelectorAll('body *')]
  .filter((el) => !(el instanceof SVGElement && el.ownerSVGElement) && shown(el))
  .filter((el) => { const r = el.getBoundingClientRect(); return r.left < -0.5 || r.right > innerWidth + 0.5; })
  .map((el) => `${name(el)} (${el.textContent.trim().slice(0, 20)}): right edge at ${Math.round(el.getBoundingClientRect().right)}`);
// Boxes a person would have to scroll sideways inside.
const scrollers = [...document.querySelectorAll('body *')].filter((el) =>
  ['auto', 'scroll'].includes(getComputedStyle(el).overflowX) && el.scrollWidth > el.clientWidth + 1)
  .map(name);
return {
  viewport: window.innerWidth,
  doc_scroll_width: document.documentElement.scrollWidth,
  body_scroll_width: document.body.scrollWidth,
  chart: [...document.querySelectorAll('#chart svg')].filter(shown).map(box),
  map: [...document.querySelectorAll('#map svg')].filter(shown).map(box),
  points: [...document.querySelectorAll('#map circle.point')].map(box),
  small, scrollers, outside,
};
"#;

/// Fails unless the page, as measured by [`PHONE_LAYOUT_JS`] in `lang`, fits a phone's
/// width with its chart, map and points on screen and no text under [`MIN_FONT_PX`].
#[track_caller]
fn assert_fits_phone(lang: &str, m: &Value) {
    let width = f64::from(PHONE.0);
    for key in ["doc_scroll_width", "body_scroll_width"] {
        assert!(
            m[key].as_f64().unwrap() <= width,
            "{lang}: the page is wider than the {width} px screen ({key}); it scrolls sideways: {m}"
        );
    }
    // A mobile browser widens its layout viewport (zooming out) to fit a page too wide.
    assert_eq!(
        m["viewport"], PHONE.0,
        "{lang}: the browser zoomed out to fit the page: {m}"
    );
    assert!(
        m["outside"].as_array().unwrap().is_empty(),
        "{lang}: parts of the page stick out of the {width} px screen: {}",
        m["outside"]
    );
    assert!(
        m["scrollers"].as_array().unwrap().is_empty(),
        "{lang}: parts of the page scroll sideways: {}",
        m["scrollers"]
    );
    let inside = |what: &str, boxes: &Value| {
        let boxes = boxes.as_array().unwrap();
        assert!(!boxes.is_empty(), "{lang}: no visible {what}: {m}");
        for b in boxes {
            let (left, right) = (b["left"].as_f64().unwrap(), b["right"].as_f64().unwrap());
            assert!(
                left >= 0.0 && right <= width && b["width"].as_f64().unwrap() <= width,
                "{lang}: {what} sticks out of the {width} px screen: {b}"
            );
            assert!(
                b["height"].as_f64().unwrap() > 0.0,
                "{lang}: {what} is flat: {b}"
            );
        }
    };
    inside("chart", &m["chart"]);
    inside("map", &m["map"]);
    inside("map point", &m["points"]);
    assert!(
        m["small"].as_array().unwrap().is_empty(),
        "{lang}: text smaller than {MIN_FONT_PX} px on a phone: {}",
        m["small"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn on_a_phone_the_chart_and_map_fit_the_screen_with_readable_text() {
    let Some(driver) = chromedriver_or_skip() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let home = init_home(tmp.path(), "phone-node", "RS").await;
    for p in examples() {
        home.add(&p, Audience::Coalition).await;
    }
    let api = Api::start(&home.dir);
    let browser = Browser::start(&driver, Screen::Phone);
    browser.goto(&format!("{}/", api.base));
    browser.wait_ready();
    // English, then the languages with the longest words and labels.
    for lang in ["en", "ka", "ru"] {
        browser.click(&format!("#lang option[value='{lang}']"));
        browser.wait_until(&format!("the dashboard in {lang}"), || {
            browser.script(&format!(
                "return document.documentElement.lang === '{lang}' \
                 && document.body.dataset.ready === 'yes' \
                 && !!document.querySelector('#chart rect.bar') \
                 && !!document.querySelector('#map circle.point')"
            )) == true
        });
        if lang == "en" {
            // Saved before any assertion, so that a failure can be looked at.
            let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-phone-390x844.png");
            browser.screenshot(&shot);
            eprintln!("the dashboard on a 390x844 phone: {}", shot.display());
        }
        let m = browser.cmd(
            "execute/sync",
            json!({"script": PHONE_LAYOUT_JS, "args": [MIN_FONT_PX]}),
        );
        assert_fits_phone(lang, &m);
    }
}
