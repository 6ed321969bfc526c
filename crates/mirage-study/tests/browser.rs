//! End to end in a real headless browser: Debian's Chromium, driven through
//! chromedriver. The page loads, the keyboard shortcuts work, and the votes land in
//! the database. Skipped, with a message, only where Chromium is not installed
//! (`scripts/setup-study-browser.sh` installs it).

mod common;

use common::server;
use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::key::Key;
use fantoccini::{ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use mirage_study::store::Store;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn find(env: &str, candidates: &[&str]) -> Option<PathBuf> {
    if let Ok(p) = std::env::var(env) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    candidates.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// Ends chromedriver when the test ends, however it ends.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_chromedriver(path: &Path) -> (Driver, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(path)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", path.display()));
    let driver = Driver(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "chromedriver did not listen on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (driver, port)
}

async fn press(client: &fantoccini::Client, key: char) {
    let keys = KeyActions::new("keyboard".into())
        .then(KeyAction::Down { value: key })
        .then(KeyAction::Up { value: key });
    client.perform_actions(keys).await.unwrap();
}

async fn body_attr(client: &fantoccini::Client, name: &str) -> String {
    let body = client.find(Locator::Css("body")).await.unwrap();
    body.attr(name).await.unwrap().unwrap_or_default()
}

/// Waits for a selector to match. Generous, because on a loaded 2-core machine
/// Chromium alone has taken over a minute to start and render.
async fn wait_for(client: &fantoccini::Client, css: &str) {
    client
        .wait()
        .at_most(Duration::from_secs(60))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("waiting for {css}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyboard_votes_from_headless_chromium_land_in_the_database() {
    let Some(chromium) = find(
        "CHROMIUM",
        &["chromium", "chromium-browser", "google-chrome"],
    ) else {
        println!(
            "SKIPPED: Chromium not found (set CHROMIUM or run scripts/setup-study-browser.sh); \
             the browser test did not run"
        );
        return;
    };
    let chromedriver = find("CHROMEDRIVER", &["chromedriver"]).unwrap_or_else(|| {
        panic!(
            "Chromium is at {} but chromedriver is missing: install chromium-driver \
             (scripts/setup-study-browser.sh)",
            chromium.display()
        )
    });
    let t = server(2).await;
    let (_driver, port) = start_chromedriver(&chromedriver);
    let profile = tempfile::tempdir().unwrap();
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": chromium,
            // As root in a container Chromium needs --no-sandbox; the network flags keep
            // it from calling home on a closed network.
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1280,1000",
                format!("--user-data-dir={}", profile.path().display()),
            ]
        }),
    );
    let client = ClientBuilder::new(HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a WebDriver session in headless Chromium");

    let page = format!("http://{}/study/{}", t.server.addr, t.study);
    client.goto(&page).await.unwrap();
    // The instructions come first; votes are ignored while they show.
    wait_for(&client, "body.instructions").await;
    wait_for(&client, "body[data-state=ready]").await;
    press(&client, Key::Left.into()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        body_attr(&client, "data-votes").await,
        "0",
        "a key under the instructions must not vote"
    );
    press(&client, Key::Enter.into()).await;
    wait_for(&client, "body:not(.instructions)").await;

    // O hides and shows the original; Z and a click zoom.
    press(&client, 'o').await;
    wait_for(&client, "body.hide-original").await;
    press(&client, 'o').await;
    wait_for(&client, "body:not(.hide-original)").await;
    press(&client, 'z').await;
    wait_for(&client, "body.zoomed").await;
    press(&client, 'z').await;
    wait_for(&client, "body:not(.zoomed)").await;
    client
        .find(Locator::Id("image-b"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(&client, "body.zoomed").await;
    let zoom_x = client
        .execute(
            "return document.body.style.getPropertyValue('--zoom-x')",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        zoom_x.as_str().is_some_and(|x| x.ends_with('%')),
        "{zoom_x:?}"
    );

    // ← votes for A, then B (the key) votes for B.
    press(&client, Key::Left.into()).await;
    wait_for(&client, "body[data-votes='1'][data-state=ready]").await;
    assert!(
        !body_attr(&client, "class").await.contains("zoomed"),
        "a new pair starts unzoomed"
    );
    press(&client, 'b').await;
    wait_for(&client, "body[data-votes='2'][data-state=ready]").await;

    let votes = Store::open(&t.db, i64::MAX)
        .unwrap()
        .votes(&t.study)
        .unwrap();
    assert_eq!(votes.len(), 2);
    assert_eq!(
        (votes[0].choice.as_str(), votes[1].choice.as_str()),
        ("a", "b")
    );
    assert_eq!(votes[0].winner, votes[0].shown_a);
    assert_eq!(votes[1].winner, votes[1].shown_b);
    let rater = votes[0].rater.clone().expect("the page sends its rater id");
    assert!(rater.starts_with("r-"));
    assert_eq!(votes[1].rater.as_ref(), Some(&rater));

    // The results page renders the scores the votes produced.
    client
        .goto(&format!(
            "http://{}/study/{}/results",
            t.server.addr, t.study
        ))
        .await
        .unwrap();
    wait_for(&client, "#scores tbody tr:nth-child(2)").await;
    wait_for(&client, "#plot svg circle").await;

    client.close().await.unwrap();
    t.server.stop().await.unwrap();
}
