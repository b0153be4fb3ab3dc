//! The agent's dashboard in headless Chromium: deploy with the button,
//! watch the live log and the new release go live, roll back with a button,
//! and see the page follow. Screenshots land in target/tmp/dashboard-*.png.

use std::path::PathBuf;
use std::time::Duration;

use crate::support::Site;
use crate::support::agent::Agent;
use crate::support::browser::Browser;
use crate::support::git::Repo;

const LIVE: &str = "#app-demo .live-release";
const WAIT: Duration = Duration::from_secs(30);

fn artifact(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name)
}

#[test]
fn the_dashboard_deploys_streams_the_log_and_rolls_back_with_its_buttons() {
    let site = Site::new();
    let repo = Repo::new(site.dir.path(), "app");
    let first_commit = repo
        .write("index.php", "<?php echo 'v1';")
        .commit("First version of the shop");
    let agent = Agent::start(
        site.dir.path(),
        &format!(
            "[apps.demo]\nwebroot = \"{}\"\nsource = \"{}\"\nref = \"main\"\nsettle = \"0s\"\nbuild = [\"sleep 1\"]\n",
            site.webroot.display(),
            repo.url()
        ),
    );
    let browser = Browser::start(1200, 900);
    browser.open(&agent.url("/"));
    assert_eq!(browser.text(LIVE).as_deref(), Some("nothing deployed yet"));
    assert_eq!(browser.eval("return document.title"), "zdeploy");

    // Deploy: the live log streams, then the panel shows the new release.
    browser.click("#app-demo button[data-action=deploy]");
    browser.wait_until("the log to stream", WAIT, |b| {
        b.text("#app-demo .log pre")
            .is_some_and(|log| log.contains("build: running sleep 1"))
    });
    browser.wait_until("the release to go live", WAIT, |b| {
        b.text(LIVE).is_some_and(|t| t.starts_with("ROOT_"))
    });
    let first = browser.text(LIVE).unwrap();
    assert_eq!(first, site.live_release());
    assert_eq!(
        browser.text("#app-demo .live-commit").unwrap(),
        &first_commit[..12]
    );
    assert!(
        browser
            .text("#app-demo .live .message")
            .unwrap()
            .contains("First version of the shop (Test Author)")
    );
    browser.wait_until("the log to end", WAIT, |b| {
        b.text("#app-demo .log pre")
            .is_some_and(|log| log.contains("finished: success"))
    });

    // A second version, deployed the same way.
    repo.write("index.php", "<?php echo 'v2';")
        .commit("Second version");
    std::thread::sleep(Duration::from_secs(1)); // release names have 1 s resolution
    browser.click("#app-demo button[data-action=deploy]");
    browser.wait_until("the second release", WAIT, |b| {
        b.text(LIVE)
            .is_some_and(|t| t.starts_with("ROOT_") && t != first)
    });
    assert_eq!(site.read("index.php"), "<?php echo 'v2';");
    browser.wait_until("the history to list both", WAIT, |b| {
        b.eval("return document.querySelectorAll('#app-demo table.history tbody tr').length")
            .as_u64()
            >= Some(2)
    });

    // The chart: what each release served, as the web server reports it to
    // the agent's traffic socket (here the reports are sent by hand).
    let socket = site.webroot.join(".zdeploy/ROOT/traffic.sock");
    let deadline = std::time::Instant::now() + WAIT;
    while !socket.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the agent never listened for traffic"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let sender = std::os::unix::net::UnixDatagram::unbound().unwrap();
    let live = site.webroot.join(site.live_release());
    for n in 0..40 {
        let status = if n % 8 == 0 { 500 } else { 200 };
        let report = format!(
            "<190>zdeploy: zdeploy1 {status} 0.0{n:02} {}",
            live.display()
        );
        sender.send_to(report.as_bytes(), &socket).unwrap();
    }
    browser.wait_until("the chart to draw the reports", WAIT, |b| {
        b.open(&agent.url("/"));
        b.eval("const c = document.querySelector('#app-demo figure.traffic canvas'); return c && c.dataset.buckets ? Number(c.dataset.buckets) : 0")
            .as_u64()
            >= Some(1)
    });
    assert_eq!(
        browser.eval("return document.querySelector('#app-demo figure.traffic').hidden"),
        false
    );
    assert!(
        browser
            .eval("return Number(document.querySelector('#app-demo figure.traffic canvas').dataset.marks)")
            .as_u64()
            >= Some(2),
        "both switches are marked"
    );
    assert!(
        browser
            .text("#app-demo figure.traffic figcaption")
            .unwrap()
            .contains(&site.live_release())
    );
    browser.eval("document.querySelector('#app-demo figure.traffic').scrollIntoView(); return 1");
    browser.screenshot(&artifact("dashboard-chart.png"));
    browser.eval("window.scrollTo(0, 0); return 1");
    let api = agent.get("/api/apps/demo/traffic?minutes=10").json();
    assert_eq!(
        api["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["requests"].as_u64().unwrap())
            .sum::<u64>(),
        40,
        "{api}"
    );
    assert_eq!(
        api["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["errors"].as_u64().unwrap())
            .sum::<u64>(),
        5,
        "{api}"
    );

    browser.screenshot(&artifact("dashboard-desktop.png"));

    // Roll back with the first release's button (confirming the dialog).
    browser.eval("window.confirm = () => true; return null;");
    browser.click(&format!(
        "#app-demo button[data-action=rollback][data-release='{first}']"
    ));
    browser.wait_until("the rollback to show", WAIT, |b| {
        b.text(LIVE).as_deref() == Some(first.as_str())
    });
    assert_eq!(site.live_release(), first);
    assert_eq!(site.read("index.php"), "<?php echo 'v1';");
    browser.wait_until("the history to show the rollback", WAIT, |b| {
        b.text("#app-demo table.history tbody tr")
            .is_some_and(|row| row.contains("rollback"))
    });

    // Readable on a phone: nothing wider than the screen.
    browser.resize(390, 844);
    let overflow = browser.eval("return document.documentElement.scrollWidth > window.innerWidth");
    assert_eq!(overflow, false, "the page scrolls sideways on a phone");
    browser.screenshot(&artifact("dashboard-phone.png"));
    eprintln!("screenshots: {}", artifact("dashboard-*.png").display());
}
