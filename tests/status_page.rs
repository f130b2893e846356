//! The live status page in a real browser: headless Chromium driven through ChromeDriver
//! (Debian's `chromium` and `chromium-driver`; `.ci/run` installs them) with the
//! `fantoccini` WebDriver client. The page asks for the token, shows the running timer
//! sensor, and its restart button raises the sensor's restart count.
//!
//! `ATTUNE_SCREENSHOT=path.png` saves what the browser shows at the end (the README's
//! screenshot is made that way).

mod support {
    pub mod service;
}

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use support::service::{TestService, fixture};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const WAIT: Duration = Duration::from_secs(20);

/// ChromeDriver on a free loopback port, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_driver() -> Driver {
    for program in [CHROMIUM, CHROMEDRIVER] {
        assert!(
            std::path::Path::new(program).exists(),
            "{program} is missing: install Debian's chromium and chromium-driver \
             (apt-get install -y chromium chromium-driver; .ci/run does it)"
        );
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

async fn browser(driver: &Driver) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".to_owned(),
        json!({
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,900"],
        }),
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(capabilities.clone())
            .connect(&driver.url)
            .await
        {
            Ok(client) => return client,
            Err(error) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no browser session: {error}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn click(client: &Client, css: &str) {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

/// The text of `css` inside the row of `sensor`, once it satisfies `done`.
async fn cell_until(
    client: &Client,
    sensor: &str,
    css: &str,
    done: impl Fn(&str) -> bool,
) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    let selector = format!("tr[data-sensor='{sensor}'] {css}");
    loop {
        // The table is redrawn every two seconds, so an element can go stale between
        // finding and reading it: read again.
        if let Ok(cell) = client.find(Locator::Css(&selector)).await
            && let Ok(text) = cell.text().await
            && done(&text)
        {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{selector} never matched; page: {}",
            client.source().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_asks_for_the_token_shows_the_timer_and_restarts_it() {
    let svc = TestService::builder()
        .autoload(fixture("timer"))
        .token("page-t0ken")
        .start()
        .await;
    let driver = start_driver();
    let client = browser(&driver).await;
    client.goto(&svc.base_url()).await.expect("open the page");

    // Nothing shows without the token: the page asks for it.
    let token = client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Id("token"))
        .await
        .expect("token prompt");
    let deadline = tokio::time::Instant::now() + WAIT;
    while !token.is_displayed().await.unwrap_or(false) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the prompt never showed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        client.find(Locator::Css("tr[data-sensor]")).await.is_err(),
        "no sensor is shown before the token"
    );
    token.send_keys("wrong").await.expect("type");
    click(&client, "#login-submit").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let error = client
            .find(Locator::Id("login-error"))
            .await
            .expect("error line")
            .text()
            .await
            .unwrap_or_default();
        if error.contains("refused") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a wrong token was not refused"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    token.clear().await.expect("clear");
    token.send_keys("page-t0ken").await.expect("type");
    click(&client, "#login-submit").await;

    // The running timer, and its restart button.
    cell_until(&client, "timer.every_second", ".state", |s| s == "running").await;
    let before: u32 = cell_until(&client, "timer.every_second", ".restarts", |s| {
        s.parse::<u32>().is_ok()
    })
    .await
    .parse()
    .expect("a count");
    click(
        &client,
        "tr[data-sensor='timer.every_second'] button[data-action='restart']",
    )
    .await;
    cell_until(&client, "timer.every_second", ".restarts", |s| {
        s.parse::<u32>().is_ok_and(|n| n > before)
    })
    .await;
    cell_until(&client, "timer.every_second", ".events", |s| {
        s.parse::<u32>().is_ok_and(|n| n > 0)
    })
    .await;

    // The filter narrows the table.
    client
        .find(Locator::Id("filter"))
        .await
        .expect("filter box")
        .send_keys("no-such-sensor")
        .await
        .expect("type");
    let deadline = tokio::time::Instant::now() + WAIT;
    while client.find(Locator::Css("tr[data-sensor]")).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the filter hid nothing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Clearing a field fires no input event; empty it the way a user's edit would.
    client
        .execute(
            "const f = document.getElementById('filter'); f.value = ''; \
             f.dispatchEvent(new Event('input'));",
            vec![],
        )
        .await
        .expect("empty the filter");

    if let Ok(path) = std::env::var("ATTUNE_SCREENSHOT") {
        cell_until(&client, "timer.every_second", ".state", |s| s == "running").await;
        // One click on an event shows its payload in the screenshot.
        if let Ok(event) = client.find(Locator::Css("#events li")).await {
            let _ = event.click().await;
        }
        let png = client.screenshot().await.expect("screenshot");
        std::fs::write(&path, png).expect("write screenshot");
    }
    client.close().await.expect("close the browser");
    svc.shutdown().await;
}
