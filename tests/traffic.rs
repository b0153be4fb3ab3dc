//! zdeploy sees what the web server serves: the generated nginx site reports
//! each request's status, duration and release to the agent, whose figures
//! land in the history for each deploy; with the agent gone, nginx serves
//! on without waiting.

use std::time::Duration;

use crate::support::Site;
use crate::support::agent::Agent;
use crate::support::load::php_app;
use crate::support::servers::{Nginx, PhpFpm, free_port, request, wait_for, zdeploy_nginx_config};

/// `zdeploy log shop N --json`'s traffic.
fn traffic(config: &std::path::Path, deployment: i64) -> serde_json::Value {
    let out = crate::support::Zdeploy::new()
        .arg("--config")
        .arg(config)
        .args(["log", "shop", &deployment.to_string(), "--json"])
        .success();
    serde_json::from_str::<serde_json::Value>(&out.stdout).unwrap()["traffic"].clone()
}

#[test]
fn nginx_reports_every_request_by_release_and_never_waits_for_the_agent() {
    let site = Site::new();
    let source = site.path("app");
    let write_version = |version: &str| {
        php_app(&source, version);
        std::fs::write(
            source.join("fail.php"),
            "<?php http_response_code(500); echo 'broken';",
        )
        .unwrap();
    };
    write_version("v1");
    let agent = Agent::start(
        site.dir.path(),
        &format!(
            "[apps.shop]\nwebroot = \"{}\"\nsource = \"{}\"\nsettle = \"0s\"\ndrain = \"0s\"\n",
            site.webroot.display(),
            source.display()
        ),
    );
    let config = agent.config.clone();
    let deploy = || {
        crate::support::Zdeploy::new()
            .arg("--config")
            .arg(&config)
            .args(["deploy", "shop"])
            .success();
    };
    deploy();
    let socket = site.webroot.join(".zdeploy/ROOT/traffic.sock");
    wait_for(|| socket.exists(), "the agent's traffic socket");
    let fpm = PhpFpm::start(&site.path("fpm"), 2);
    let port = free_port();
    let nginx = Nginx::start(
        &site.path("nginx"),
        &zdeploy_nginx_config(&site, &fpm, port),
        port,
    );
    let hit = |path: &str, count: usize| {
        for _ in 0..count {
            let (status, _) = request(port, "GET", path).unwrap();
            assert!(status == 200 || status == 500, "{path}: {status}");
        }
    };
    hit("/", 30);
    hit("/fail.php", 10);
    agent.wait_for("v1's figures", Duration::from_secs(20), || {
        traffic(&config, 1)["requests"] == 40
    });
    let first = traffic(&config, 1);
    assert_eq!(first["errors"], 10, "{first}");
    // The page sleeps 15 ms: its p50 says so, within the histogram's step.
    let p50 = first["p50_ms"].as_f64().unwrap();
    assert!((12.0..40.0).contains(&p50), "{first}");
    assert!(first["p99_ms"].as_f64().unwrap() >= p50, "{first}");

    // The next release's requests are its own; the first keeps its figures.
    write_version("v2");
    deploy();
    hit("/", 20);
    agent.wait_for("v2's figures", Duration::from_secs(20), || {
        traffic(&config, 2)["requests"] == 20
    });
    assert_eq!(traffic(&config, 2)["errors"], 0);
    assert_eq!(traffic(&config, 1)["requests"], 40);
    let text = crate::support::Zdeploy::new()
        .arg("--config")
        .arg(&config)
        .args(["log", "shop", "2"])
        .success();
    assert!(
        text.stdout
            .contains("traffic while live: 20 requests, 0 5xx"),
        "{}",
        text.stdout
    );

    // The watch: a release that fails one checkout in five behind a green
    // front page is switched back; a good one is kept.
    let checkout = |fails_every: u32| {
        std::fs::write(
            source.join("checkout.php"),
            format!(
                "<?php if ({fails_every} > 0 && random_int(1, {fails_every}) === 1) {{ http_response_code(500); }} echo 'checkout';"
            ),
        )
        .unwrap();
    };
    write_version("v3");
    checkout(0);
    deploy();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut answers = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for path in ["/", "/checkout.php"] {
                    answers.push(
                        request(port, "GET", path)
                            .map(|(status, _)| status)
                            .unwrap_or(0),
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            answers
        })
    };
    std::thread::sleep(Duration::from_secs(3));
    let good = site.live_release();
    std::fs::write(
        &config,
        std::fs::read_to_string(&config).unwrap()
            + "watch = { for = \"8s\", max_error_rate = \"2%\", max_p95 = \"5x\", min_requests = 20 }\n",
    )
    .unwrap();

    write_version("v4");
    checkout(5);
    let zdeploy = |args: &[&str]| {
        crate::support::Zdeploy::new()
            .arg("--config")
            .arg(&config)
            .args(args)
            .run()
    };
    let out = zdeploy(&["deploy", "shop"]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("failed its watch") && out.stderr.contains("5xx"),
        "{}",
        out.stderr
    );
    assert_eq!(site.live_release(), good, "switched back");
    let log = zdeploy(&["log", "shop", "4", "--json"]);
    let log: serde_json::Value = serde_json::from_str(&log.stdout).unwrap();
    assert_eq!(log["watch"]["verdict"], "breached", "{log}");
    assert_eq!(log["deployment"]["outcome"], "failed", "{log}");
    let releases = zdeploy(&["releases", "shop", "--json"]).stdout;
    assert!(
        releases.contains("\"failed\""),
        "the bad release is marked failed: {releases}"
    );
    // A good release is kept.
    write_version("v5");
    checkout(0);
    let out = zdeploy(&["deploy", "shop"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr.contains("watch of") && out.stderr.contains("kept"),
        "{}",
        out.stderr
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answers = load.join().unwrap();
    assert!(
        answers.iter().all(|s| *s == 200 || *s == 500),
        "no request lost: {answers:?}"
    );

    // Without the agent (killed: its socket is left, unread) and without
    // the socket, nginx serves every request all the same, and the watch
    // says it could not judge.
    drop(agent);
    write_version("v6");
    let out = zdeploy(&["deploy", "shop", "--watch", "2s"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr.contains("no request was reported"),
        "{}",
        out.stderr
    );
    for _ in 0..2 {
        for _ in 0..50 {
            let (status, body) = request(port, "GET", "/").unwrap();
            assert_eq!(status, 200, "{body}");
        }
        let _ = std::fs::remove_file(&socket);
    }
    drop(nginx);
}
