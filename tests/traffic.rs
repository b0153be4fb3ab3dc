//! zdeploy sees what the web server serves: the sites `zdeploy webserver`
//! writes for nginx, Apache and Caddy report each request's status, duration and
//! release to the agent, whose figures land in the history for each
//! deploy. The watch switches back a release that fails real traffic
//! behind a green front page and keeps a good one, on each server. With
//! the agent gone, the servers serve on without waiting, and the watch
//! says it could not judge.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::support::agent::Agent;
use crate::support::load::php_app;
use crate::support::servers::{
    Apache, Caddy, Nginx, PhpFpm, free_port, request, wait_for, zdeploy_nginx_config, zdeploy_site,
};
use crate::support::{Output, Site, Zdeploy};

/// The app's source: the load tests' page, a page that always fails, and a
/// checkout that fails one request in `fails_every` (never with 0).
fn write_version(source: &Path, version: &str, fails_every: u32) {
    php_app(source, version);
    std::fs::write(
        source.join("fail.php"),
        "<?php http_response_code(500); echo 'broken';",
    )
    .unwrap();
    std::fs::write(
        source.join("checkout.php"),
        format!(
            "<?php if ({fails_every} > 0 && random_int(1, {fails_every}) === 1) {{ http_response_code(500); }} echo 'checkout';"
        ),
    )
    .unwrap();
}

fn zdeploy(config: &Path, args: &[&str]) -> Output {
    Zdeploy::new().arg("--config").arg(config).args(args).run()
}

/// `zdeploy log shop N --json`.
fn log(config: &Path, deployment: i64) -> serde_json::Value {
    let out = zdeploy(config, &["log", "shop", &deployment.to_string(), "--json"]);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stderr))
}

/// Requests to `/` and `/checkout.php` on `port` until stopped; every
/// answer's status.
struct Load {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<u16>>,
}

impl Load {
    fn start(port: u16) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut answers = Vec::new();
            while !stopping.load(Ordering::Relaxed) {
                for path in ["/", "/checkout.php"] {
                    answers.push(request(port, "GET", path).map_or(0, |(status, _)| status));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            answers
        });
        Load { stop, thread }
    }

    fn stop(self) -> Vec<u16> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// Under load on `port`: a release failing one checkout in five is
/// switched back by the watch, the next good one kept. `next` is the
/// number of the next deployment.
fn watch_on(site: &Site, config: &Path, source: &Path, port: u16, next: &mut i64, server: &str) {
    write_version(source, &format!("{server}-good"), 0);
    assert_eq!(zdeploy(config, &["deploy", "shop"]).code, Some(0));
    *next += 1;
    let load = Load::start(port);
    // The release before is judged by what it served in the window's
    // length before the deploy.
    std::thread::sleep(Duration::from_secs(3));
    let good = site.live_release();
    write_version(source, &format!("{server}-bad"), 5);
    let out = zdeploy(config, &["deploy", "shop", "--watch", "8s"]);
    let bad = *next;
    *next += 2; // the deploy, and the watch's switch back
    assert_eq!(out.code, Some(1), "{server}: {}", out.stderr);
    assert!(
        out.stderr.contains("failed its watch") && out.stderr.contains("5xx"),
        "{server}: {}",
        out.stderr
    );
    assert_eq!(site.live_release(), good, "{server}: switched back");
    let judged = log(config, bad);
    assert_eq!(judged["watch"]["verdict"], "breached", "{server}: {judged}");
    assert_eq!(
        judged["deployment"]["outcome"], "failed",
        "{server}: {judged}"
    );
    write_version(source, &format!("{server}-fixed"), 0);
    let out = zdeploy(config, &["deploy", "shop", "--watch", "3s"]);
    *next += 1;
    assert_eq!(out.code, Some(0), "{server}: {}", out.stderr);
    assert!(
        out.stderr.contains("kept: its traffic"),
        "{server}: {}",
        out.stderr
    );
    let answers = load.stop();
    assert!(
        answers.iter().all(|s| *s == 200 || *s == 500),
        "{server}: every request answered: {answers:?}"
    );
}

#[test]
fn each_server_reports_every_request_by_release_and_the_watch_judges_releases_by_them() {
    let site = Site::new();
    // Apache's children run as www-data and must reach the webroot.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(site.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let source = site.path("app");
    write_version(&source, "v1", 0);
    let agent = Agent::start(
        site.dir.path(),
        &format!(
            "[apps.shop]\nwebroot = \"{}\"\nsource = \"{}\"\nsettle = \"0s\"\ndrain = \"0s\"\n\
             watch = {{ for = \"8s\", max_error_rate = \"2%\", max_p95 = \"5x\", min_requests = 20 }}\n",
            site.webroot.display(),
            source.display()
        ),
    );
    let config: PathBuf = agent.config.clone();
    assert_eq!(
        zdeploy(&config, &["deploy", "shop", "--watch", "1s"]).code,
        Some(0)
    );
    let socket = site.webroot.join(".zdeploy/ROOT/traffic.sock");
    wait_for(|| socket.exists(), "the agent's traffic socket");
    let fpm = PhpFpm::start(&site.path("fpm"), 4);
    let nginx_port = free_port();
    let nginx = Nginx::start(
        &site.path("nginx"),
        &zdeploy_nginx_config(&site, &fpm, nginx_port),
        nginx_port,
    );
    let site_for = |server: &str, port: u16| zdeploy_site(&config, server, port, &fpm);
    let apache_port = free_port();
    let apache_site = site_for("apache", apache_port);
    let apache = Apache::start(&site.path("apache"), &apache_site, apache_port);
    let caddy_port = free_port();
    let caddy_site = site_for("caddy", caddy_port);
    assert!(
        caddy_site.contains(&format!("udp/127.0.0.1:{}", agent.port)),
        "Caddy reports to the agent's port: {caddy_site}"
    );
    let caddy = Caddy::start(&site.path("caddy"), &caddy_site, caddy_port);

    // Figures per release, through each server.
    let hit = |port: u16, path: &str, count: usize| {
        for _ in 0..count {
            let (status, _) = request(port, "GET", path).unwrap();
            assert!(status == 200 || status == 500, "{path}: {status}");
        }
    };
    hit(nginx_port, "/", 20);
    hit(apache_port, "/", 10);
    hit(caddy_port, "/", 10);
    for port in [nginx_port, apache_port, caddy_port] {
        hit(port, "/fail.php", 5);
    }
    agent.wait_for(
        "the first release's figures",
        Duration::from_secs(20),
        || log(&config, 1)["traffic"]["requests"] == 55,
    );
    let first = &log(&config, 1)["traffic"];
    assert_eq!(first["errors"], 15, "{first}");
    // The page sleeps 15 ms: its p50 says so, within the histogram's step.
    let p50 = first["p50_ms"].as_f64().unwrap();
    assert!((12.0..40.0).contains(&p50), "{first}");
    let text = zdeploy(&config, &["log", "shop", "1"]).stdout;
    assert!(
        text.contains("traffic while live: 55 requests, 15 5xx (27.27%)"),
        "{text}"
    );

    let mut next = 2;
    watch_on(&site, &config, &source, nginx_port, &mut next, "nginx");
    watch_on(&site, &config, &source, apache_port, &mut next, "apache");
    watch_on(&site, &config, &source, caddy_port, &mut next, "caddy");
    // The first release keeps its figures.
    assert_eq!(log(&config, 1)["traffic"]["requests"], 55);

    // The agent watches what it deploys (the app's `watch`, 8 s) on a
    // thread of its own: a newer trigger ends the watch, a bad release is
    // switched back.
    let load = Load::start(nginx_port);
    std::thread::sleep(Duration::from_secs(2));
    write_version(&source, "agent-good", 0);
    assert_eq!(agent.act("shop", "deploy", "{}").status, 202);
    agent.wait_for("the agent's deploy", Duration::from_secs(30), || {
        agent.deployments("shop")[0]["id"] == next
            && agent.deployments("shop")[0]["outcome"] == "success"
    });
    let ended = next;
    next += 1;
    write_version(&source, "agent-bad", 5);
    assert_eq!(agent.act("shop", "deploy", "{}").status, 202);
    agent.wait_for("the first watch to end", Duration::from_secs(30), || {
        log(&config, ended)["watch"]["verdict"] == "ended"
    });
    let bad = next;
    agent.wait_for(
        "the agent's watch to switch back",
        Duration::from_secs(40),
        || log(&config, bad)["watch"]["verdict"] == "breached",
    );
    assert_eq!(log(&config, bad)["deployment"]["outcome"], "failed");
    assert!(
        site.read("index.php").contains("agent-good"),
        "the release before is live again"
    );
    let metrics = agent.get("/metrics").body;
    assert!(
        metrics.contains("zdeploy_watch_verdicts_total{app=\"shop\",verdict=\"breached\"} 1"),
        "{metrics}"
    );
    let answers = load.stop();
    assert!(
        answers.iter().all(|s| *s == 200 || *s == 500),
        "{answers:?}"
    );

    // Without the agent (killed: its socket is left, unread), and without
    // the socket, both serve every request all the same; the watch says it
    // could not judge.
    drop(agent);
    for _ in 0..2 {
        hit(nginx_port, "/", 30);
        hit(apache_port, "/", 30);
        hit(caddy_port, "/", 30);
        let _ = std::fs::remove_file(&socket);
    }
    write_version(&source, "unwatched", 0);
    let out = zdeploy(&config, &["deploy", "shop", "--watch", "2s"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr.contains("no request was reported"),
        "{}",
        out.stderr
    );
    drop((nginx, apache, caddy));
}
