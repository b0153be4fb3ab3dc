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

    // Without the agent (killed: its socket is left, unread) and without
    // the socket, nginx serves every request all the same.
    drop(agent);
    for _ in 0..2 {
        for _ in 0..50 {
            let (status, body) = request(port, "GET", "/").unwrap();
            assert_eq!(status, 200, "{body}");
        }
        let _ = std::fs::remove_file(&socket);
    }
    drop(nginx);
}
