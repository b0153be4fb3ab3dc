//! The watch and canaries, measured: under load on a front page and a
//! checkout, a release whose checkout fails one request in five while its
//! front page stays green goes live with `--watch`, or as a 10% canary
//! judged as long; how long it serves before it is switched back or
//! aborted, and what share of the run's requests failed. Then a good
//! release through the same watch, and through a canary and its promote:
//! failed requests and p99 against idle, and the share of 1,000 new
//! clients the canary served.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::support::agent::Agent;
use super::support::load::{Load, Sample, percentile, php_app};
use super::support::servers::{Nginx, PhpFpm, free_port, request, zdeploy_nginx_config};
use super::support::{Site, Zdeploy};
use super::{PHP_WORKERS, ms, percent};

/// Clients on each of the two pages.
const READERS_PER_PAGE: usize = 3;
/// Load before the deploy (the previous release's figures) and in all.
const BEFORE: Duration = Duration::from_secs(20);
const RUN: Duration = Duration::from_secs(60);

/// The app: the load tests' page (15 ms of PHP) and a checkout failing one
/// request in `fails_every` (never with 0).
fn app(source: &Path, version: &str, fails_every: u32) {
    php_app(source, version);
    std::fs::write(
        source.join("checkout.php"),
        format!(
            "<?php usleep(5000); if ({fails_every} > 0 && random_int(1, {fails_every}) === 1) {{ http_response_code(500); exit('failed'); }} echo 'checkout';"
        ),
    )
    .unwrap();
}

/// The canary's share in the canary rows.
const CANARY_SHARE: &str = "10%";
/// New clients asked which release serves them while a canary runs.
const NEW_CLIENTS: usize = 1000;

struct Row {
    case: String,
    requests: usize,
    failed: usize,
    /// Switch (or canary start) to switch back (or abort), in seconds.
    served_for: Option<f64>,
    p99_idle: Duration,
    p99_after: Duration,
    /// Of `NEW_CLIENTS` clients, the share the canary served (percent).
    canary_share: Option<f64>,
}

/// The share of `NEW_CLIENTS` new clients (no cookie) the release `version`
/// served, asked one after another for a static file only that release has
/// (so the probe adds no PHP work to the load it measures).
fn new_clients_share(port: u16, version: &str) -> f64 {
    let path = format!("/data_{version}.txt");
    let served = (0..NEW_CLIENTS)
        // Elsewhere the front controller answers.
        .filter(|_| request(port, "GET", &path).is_ok_and(|(_, body)| body.trim() == version))
        .count();
    100.0 * served as f64 / NEW_CLIENTS as f64
}

fn run(bad: bool, canary: bool) -> Row {
    let site = Site::new();
    let source = site.path("app");
    app(&source, "v1", 0);
    let agent = Agent::start(
        site.dir.path(),
        &format!(
            "[apps.shop]\nwebroot = \"{}\"\nsource = \"{}\"\nkeep = 3\nsettle = \"200ms\"\ndrain = \"1s\"\n",
            site.webroot.display(),
            source.display()
        ),
    );
    let zdeploy = |args: &[&str]| Zdeploy::new().arg("--config").arg(&agent.config).args(args);
    zdeploy(&["deploy", "shop", "-q"]).success();
    let fpm = PhpFpm::start(&site.path("fpm"), PHP_WORKERS);
    let port = free_port();
    let _nginx = Nginx::start(
        &site.path("nginx"),
        &zdeploy_nginx_config(&site, &fpm, port),
        port,
    );
    let started = Instant::now();
    let front = Load::start_at(port, "/", READERS_PER_PAGE, false);
    let checkout = Load::start_at(port, "/checkout.php", READERS_PER_PAGE, false);
    std::thread::sleep(BEFORE);
    app(&source, "v2", if bad { 5 } else { 0 });
    let deployed_at = Instant::now();
    let mut args = vec!["deploy", "shop", "--watch", "30s"];
    if canary {
        args.extend(["--canary", CANARY_SHARE]);
    }
    let deploying = zdeploy(&args)
        .command()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let canary_share = (canary && !bad).then(|| {
        let running = site.webroot.join(".zdeploy/ROOT/canary");
        while !running.exists() {
            std::thread::sleep(Duration::from_millis(20));
        }
        new_clients_share(port, "v2")
    });
    let out = deploying.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(if bad { 1 } else { 0 }),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(RUN.saturating_sub(started.elapsed()));
    let mut samples: Vec<Sample> = front.finish().0;
    samples.extend(checkout.finish().0);
    let served_for = bad.then(|| {
        let log = |id: &str| -> serde_json::Value {
            serde_json::from_str(&zdeploy(&["log", "shop", id, "--json"]).success().stdout).unwrap()
        };
        let switched = log("2")["deployment"]["finished_ms"].as_i64().unwrap();
        let back = log("3")["deployment"]["finished_ms"].as_i64().unwrap();
        (back - switched) as f64 / 1000.0
    });
    let failed = samples
        .iter()
        .filter(|s| !matches!(s.outcome, Ok((200, _))))
        .count();
    let requests = samples.len();
    let (idle, after): (Vec<Sample>, Vec<Sample>) =
        samples.into_iter().partition(|s| s.started < deployed_at);
    let how = if canary {
        format!("as a {CANARY_SHARE} canary")
    } else {
        "with the watch".into()
    };
    Row {
        case: if bad {
            format!("checkout fails 1 in 5, front page green, {how}")
        } else {
            format!("a good release, {how}")
        },
        requests,
        failed,
        served_for,
        p99_idle: percentile(&idle, 99.0),
        p99_after: percentile(&after, 99.0),
        canary_share,
    }
}

pub fn table() {
    println!(
        "\nThe watch and canaries: one deploy with `--watch 30s` (and `--canary {CANARY_SHARE}`) in a {} s run ({} s of load before it), {READERS_PER_PAGE} clients on the front page and {READERS_PER_PAGE} on the checkout (each request a new client, without the cookie), {PHP_WORKERS} PHP-FPM workers behind nginx, the agent tallying every request\n",
        RUN.as_secs(),
        BEFORE.as_secs()
    );
    println!(
        "| release | requests | failed | live to switched back s | p99 before ms | p99 after ms | canary's share of {NEW_CLIENTS} new clients |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (bad, canary) in [(true, false), (true, true), (false, false), (false, true)] {
        let row = run(bad, canary);
        println!(
            "| {} | {} | {} ({}) | {} | {} | {} | {} |",
            row.case,
            row.requests,
            row.failed,
            percent(row.failed, row.requests),
            row.served_for
                .map(|s| format!("{s:.1}"))
                .unwrap_or_else(|| "kept".into()),
            ms(row.p99_idle),
            ms(row.p99_after),
            row.canary_share
                .map(|s| format!("{s:.1}%"))
                .unwrap_or_else(|| "—".into()),
        );
    }
}
