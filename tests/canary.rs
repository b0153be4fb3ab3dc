//! Canary releases behind nginx, Apache and Caddy at once, on one webroot:
//! the share of clients a canary serves, each kept on its release by the
//! cookie the site sets (the same bucket seeing the same release through
//! every server), promote and abort under load with no request failed or
//! torn, what users wrote into either release kept by the one that wins,
//! and a canary judged by its real traffic: aborted when it fails, promoted
//! when it serves well. On a fleet of namespaced hosts behind a balancer,
//! one cookie sees one release whichever host answers, and promote and
//! abort end the canary on every host.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::fleet::controller;
use crate::support::agent::Agent;
use crate::support::fleet::Fleet;
use crate::support::git::Repo;
use crate::support::http::Recorder;
use crate::support::load::{page_version, php_app};
use crate::support::servers::{
    Apache, Caddy, Nginx, PhpFpm, free_port, zdeploy_nginx_config, zdeploy_site,
};
use crate::support::{Output, Site, Zdeploy};

const COOKIE: &str = "zdeploy_canary";

/// The app of `version`: the load tests' page (three parts that must agree),
/// a static `version.txt`, the save endpoint, and a page that fails one
/// request in `fails_every` (never with 0).
fn write_version(source: &Path, version: &str, fails_every: u32) {
    php_app(source, version);
    std::fs::write(source.join("version.txt"), version).unwrap();
    std::fs::write(
        source.join("flaky.php"),
        format!(
            "<?php if ({fails_every} > 0 && random_int(1, {fails_every}) === 1) {{ http_response_code(500); }} echo 'flaky';"
        ),
    )
    .unwrap();
}

fn zdeploy(config: &Path, args: &[&str]) -> Output {
    Zdeploy::new().arg("--config").arg(config).args(args).run()
}

/// An answer: status, the bucket a Set-Cookie gave, the body.
struct Answer {
    status: u16,
    new_bucket: Option<String>,
    body: String,
}

/// One HTTP/1.0 GET, with the bucket cookie when given.
fn get(port: u16, path: &str, bucket: Option<&str>) -> Answer {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let cookie = bucket
        .map(|b| format!("Cookie: other=1; {COOKIE}={b}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n{cookie}\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let new_bucket = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        if !name.eq_ignore_ascii_case("set-cookie") {
            return None;
        }
        let value = value.trim().strip_prefix(&format!("{COOKIE}="))?;
        Some(value.split(';').next()?.to_string())
    });
    Answer {
        status,
        new_bucket,
        body: body.to_string(),
    }
}

/// Which version `version.txt` shows to each of the 256 buckets.
fn versions_by_bucket(port: u16) -> BTreeMap<String, String> {
    (0..=255u8)
        .map(|b| {
            let bucket = format!("{b:02x}");
            let answer = get(port, "/version.txt", Some(&bucket));
            assert_eq!(answer.status, 200, "bucket {bucket}: {}", answer.body);
            assert_eq!(answer.new_bucket, None, "a client with a bucket keeps it");
            (bucket, answer.body)
        })
        .collect()
}

/// Three buckets that see `version`.
fn seeing(by_bucket: &BTreeMap<String, String>, version: &str) -> Vec<String> {
    by_bucket
        .iter()
        .filter(|(_, v)| *v == version)
        .map(|(b, _)| b.clone())
        .take(3)
        .collect()
}

/// What one client saw: each answer's version, or why it failed.
type Answers = Vec<Result<String, String>>;

/// Clients, each with its bucket, requesting the page through each server
/// until stopped (a client per bucket and server: servers switch a few
/// microseconds apart); per client, the versions it saw in order.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<(String, std::thread::JoinHandle<Answers>)>,
}

impl Load {
    fn start(ports: &[u16], buckets: &[String]) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for bucket in buckets {
            for port in ports {
                let (stop, bucket, port) = (stop.clone(), bucket.clone(), *port);
                let name = bucket.clone();
                let thread = std::thread::spawn(move || {
                    let mut seen = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let answer = get(port, "/", Some(&bucket));
                        seen.push(match answer.status {
                            200 => page_version(&answer.body).map(|v| format!("{v}@{port}")),
                            status => Err(format!("{port}: {status} {}", answer.body)),
                        });
                        std::thread::sleep(Duration::from_millis(30));
                    }
                    seen
                });
                threads.push((name, thread));
            }
        }
        Load { stop, threads }
    }

    /// Every answer whole; per bucket, through each server, the versions
    /// it saw, each once in the order it first saw them.
    fn stop(self) -> BTreeMap<String, Vec<Vec<String>>> {
        self.stop.store(true, Ordering::Relaxed);
        let mut seen: BTreeMap<String, Vec<Vec<String>>> = BTreeMap::new();
        for (bucket, thread) in self.threads {
            let answers = thread.join().unwrap();
            assert!(answers.len() > 10, "the load ran");
            let mut versions: Vec<String> = Vec::new();
            for answer in answers {
                let version =
                    answer.unwrap_or_else(|e| panic!("bucket {bucket}: failed or torn: {e}"));
                if versions.last() != Some(&version) {
                    assert!(
                        !versions.contains(&version),
                        "bucket {bucket} went back to {version}: {versions:?}"
                    );
                    versions.push(version);
                }
            }
            seen.entry(bucket).or_default().push(versions);
        }
        seen
    }
}

/// Every server showed the clients of `bucket` exactly `expected`, in order.
fn assert_saw(seen: &BTreeMap<String, Vec<Vec<String>>>, bucket: &str, expected: &[&str]) {
    for versions in &seen[bucket] {
        let shown: Vec<&str> = versions
            .iter()
            .map(|v| v.split('@').next().unwrap())
            .collect();
        assert_eq!(shown, expected, "bucket {bucket}: {versions:?}");
    }
}

/// Save `id` as the client of `bucket` would, through `port`.
fn save(port: u16, bucket: &str, id: &str) {
    let answer = get(port, &format!("/save.php?id={id}"), Some(bucket));
    assert_eq!(answer.status, 200, "save {id}: {}", answer.body);
}

fn canary_status(config: &Path) -> serde_json::Value {
    let out = zdeploy(config, &["canary", "status", "shop", "--json"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    serde_json::from_str::<serde_json::Value>(&out.stdout).unwrap()["canary"].clone()
}

#[test]
fn a_canary_serves_its_share_by_cookie_on_every_server_and_promote_and_abort_keep_every_write() {
    let site = Site::new();
    // Apache's children run as www-data and must reach the webroot.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(site.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let source = site.path("app");
    write_version(&source, "v1", 0);
    let told = Recorder::start(&[200]);
    let agent = Agent::start(
        site.dir.path(),
        &format!(
            "[apps.shop]\nwebroot = \"{}\"\nsource = \"{}\"\nsettle = \"0s\"\ndrain = \"0s\"\nkeep = 10\n\
             canary = {{ share = \"25%\", max_error_rate = \"2%\", max_p95 = \"5x\", min_requests = 20 }}\n\
             notify = {{ url = \"http://{}/hook\" }}\n",
            site.webroot.display(),
            source.display(),
            told.address
        ),
    );
    let config: PathBuf = agent.config.clone();
    // With nothing live, the first deploy switches as usual.
    let out = zdeploy(&config, &["deploy", "shop"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stderr.contains("without a canary"), "{}", out.stderr);
    let v1 = site.live_release();
    let fpm = PhpFpm::start(&site.path("fpm"), 6);
    let nginx_port = free_port();
    let nginx = Nginx::start(
        &site.path("nginx"),
        &zdeploy_nginx_config(&site, &fpm, nginx_port),
        nginx_port,
    );
    let site_for = |server: &str, port: u16| zdeploy_site(&config, server, port, &fpm);
    let apache_port = free_port();
    let apache = Apache::start(
        &site.path("apache"),
        &site_for("apache", apache_port),
        apache_port,
    );
    let caddy_port = free_port();
    let caddy = Caddy::start(
        &site.path("caddy"),
        &site_for("caddy", caddy_port),
        caddy_port,
    );
    let servers = [
        ("nginx", nginx_port),
        ("apache", apache_port),
        ("caddy", caddy_port),
    ];
    let ports: Vec<u16> = servers.iter().map(|(_, port)| *port).collect();
    for (server, port) in servers {
        let answer = get(port, "/version.txt", None);
        assert_eq!(answer.body, "v1", "{server}");
        assert_eq!(
            answer.new_bucket, None,
            "{server}: no cookie without a canary"
        );
    }

    // A canary of a quarter of clients.
    write_version(&source, "v2", 0);
    let out = zdeploy(&config, &["deploy", "shop", "--canary", "25%"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("as a canary beside"), "{}", out.stdout);
    assert_eq!(site.live_release(), v1, "nothing switched");
    let canary = canary_status(&config);
    let v2 = canary["release"].as_str().unwrap().to_string();
    assert_eq!(canary["share"]["buckets"], 64, "{canary}");
    let releases = zdeploy(&config, &["releases", "shop", "--json"]).stdout;
    assert!(
        releases.contains(r#""state":"canary""#) || releases.contains(r#""state": "canary""#),
        "{releases}"
    );
    let status = zdeploy(&config, &["status", "shop"]).stdout;
    assert!(
        status.contains(&format!("canary: {v2} serves 25.0%")),
        "{status}"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&agent.get("/api/apps/shop").body).unwrap();
    assert_eq!(
        summary["canary"]["canary"]["release"],
        v2.as_str(),
        "{summary}"
    );
    assert_eq!(summary["canary"]["percent"], 25.0, "{summary}");
    let panel = agent.get("/apps/shop/panel").body;
    assert!(panel.contains(r#"data-action="canary/promote""#), "{panel}");
    // Nothing else goes live meanwhile.
    for args in [&["deploy", "shop"][..], &["rollback", "shop"][..]] {
        let out = zdeploy(&config, args);
        assert_eq!(out.code, Some(3), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains("canary promote"), "{}", out.stderr);
    }

    // Each bucket sees one release, the same through every server, and a
    // quarter of the buckets see the canary.
    let by_bucket = versions_by_bucket(nginx_port);
    assert_eq!(by_bucket.values().filter(|v| *v == "v2").count(), 64);
    assert_eq!(by_bucket.values().filter(|v| *v == "v1").count(), 192);
    for (server, port) in &servers[1..] {
        assert_eq!(versions_by_bucket(*port), by_bucket, "{server}");
    }
    // New clients are given a bucket with their first answer, which that
    // bucket's release served: over 1,200 of them, about a quarter.
    let mut canaried = 0;
    for (server, port) in servers {
        for _ in 0..400 {
            let answer = get(port, "/version.txt", None);
            let bucket = answer
                .new_bucket
                .unwrap_or_else(|| panic!("{server}: a new client gets a bucket"));
            assert_eq!(answer.body, by_bucket[&bucket], "{server}: bucket {bucket}");
            canaried += usize::from(answer.body == "v2");
        }
    }
    let share = 100.0 * canaried as f64 / 1200.0;
    assert!((20.0..30.0).contains(&share), "{share}% of new clients");

    let (in_canary, on_live) = (seeing(&by_bucket, "v2"), seeing(&by_bucket, "v1"));
    let clients: Vec<String> = in_canary.iter().chain(&on_live).cloned().collect();

    // Abort under load: users' saves on either side stay.
    let load = Load::start(&ports, &clients);
    for (server, port) in servers {
        save(port, &in_canary[0], &format!("canary-{server}"));
        save(port, &on_live[0], &format!("live-{server}"));
    }
    std::thread::sleep(Duration::from_secs(1));
    let out = zdeploy(
        &config,
        &["canary", "abort", "shop", "--reason", "seen enough"],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    std::thread::sleep(Duration::from_secs(1));
    let seen = load.stop();
    for bucket in &in_canary {
        assert_saw(&seen, bucket, &["v2", "v1"]);
    }
    for bucket in &on_live {
        assert_saw(&seen, bucket, &["v1"]);
    }
    assert_eq!(site.live_release(), v1);
    for (server, _) in servers {
        for side in ["canary", "live"] {
            assert_eq!(
                site.read(&format!("saves/{side}-{server}.txt")),
                format!("saved {side}-{server}"),
                "after the abort"
            );
        }
    }
    assert!(!site.webroot.join(".zdeploy/ROOT/canary").exists());
    assert_eq!(canary_status(&config), serde_json::Value::Null);
    for port in &ports {
        assert_eq!(get(*port, "/version.txt", None).new_bucket, None);
    }
    let releases = zdeploy(&config, &["releases", "shop", "--json"]).stdout;
    let releases: serde_json::Value = serde_json::from_str(&releases).unwrap();
    let aborted = releases
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == v2.as_str())
        .unwrap_or_else(|| panic!("{v2} is kept: {releases}"));
    assert_eq!(aborted["state"], "failed", "{aborted}");
    let started = zdeploy(&config, &["log", "shop", "2"]).stdout;
    assert!(
        started.contains("canary: ")
            && started.contains("aborted by deployment #")
            && started.contains("(seen enough)"),
        "{started}"
    );

    // Promote under load: the canary's release gets everyone, with what
    // users wrote on either side.
    write_version(&source, "v3", 0);
    let out = zdeploy(&config, &["deploy", "shop", "--canary", "25%"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let by_bucket = versions_by_bucket(caddy_port);
    let (in_canary, on_live) = (seeing(&by_bucket, "v3"), seeing(&by_bucket, "v1"));
    let clients: Vec<String> = in_canary.iter().chain(&on_live).cloned().collect();
    let load = Load::start(&ports, &clients);
    for (server, port) in servers {
        save(port, &in_canary[0], &format!("canary2-{server}"));
        save(port, &on_live[0], &format!("live2-{server}"));
    }
    std::thread::sleep(Duration::from_secs(1));
    // Through the agent's API this time.
    assert_eq!(agent.act("shop", "canary/bogus", "{}").status, 404);
    let promoted = agent.act("shop", "canary/promote", r#"{"reason": "looks good"}"#);
    assert_eq!(promoted.status, 200, "{}", promoted.body);
    std::thread::sleep(Duration::from_secs(1));
    let seen = load.stop();
    for bucket in &in_canary {
        assert_saw(&seen, bucket, &["v3"]);
    }
    for bucket in &on_live {
        assert_saw(&seen, bucket, &["v1", "v3"]);
    }
    assert!(site.read("index.php").contains("v3"));
    for (server, _) in servers {
        for id in ["canary", "live", "canary2", "live2"] {
            assert_eq!(
                site.read(&format!("saves/{id}-{server}.txt")),
                format!("saved {id}-{server}"),
                "after the promote"
            );
        }
    }
    assert!(!site.webroot.join(".zdeploy/ROOT/canary").exists());
    let none = zdeploy(&config, &["canary", "promote", "shop"]);
    assert_eq!(none.code, Some(2), "{}", none.stderr);
    assert!(none.stderr.contains("no canary"), "{}", none.stderr);
    assert_eq!(agent.act("shop", "canary/abort", "{}").status, 422);
    let traffic: serde_json::Value =
        serde_json::from_str(&agent.get("/api/apps/shop/traffic").body).unwrap();
    let marks: Vec<&str> = traffic["marks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["kind"].as_str().unwrap())
        .collect();
    for kind in ["canary", "abort", "promote"] {
        assert!(marks.contains(&kind), "{kind}: {marks:?}");
    }

    // The agent deploys as the app says, as a canary; a newer trigger
    // aborts the canary running first.
    write_version(&source, "v3b", 0);
    let out = zdeploy(&config, &["deploy", "shop", "--canary", "25%"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let replaced = canary_status(&config)["release"]
        .as_str()
        .unwrap()
        .to_string();
    write_version(&source, "v3c", 0);
    assert_eq!(agent.act("shop", "deploy", "{}").status, 202);
    agent.wait_for("the agent's canary", Duration::from_secs(30), || {
        canary_status(&config)["release"]
            .as_str()
            .is_some_and(|r| r != replaced)
    });
    let releases: serde_json::Value =
        serde_json::from_str(&zdeploy(&config, &["releases", "shop", "--json"]).stdout).unwrap();
    let old = releases
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == replaced.as_str())
        .unwrap();
    assert_eq!(old["state"], "failed", "{old}");
    let out = zdeploy(&config, &["canary", "abort", "shop"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);

    // A canary the site never sends anyone to (a site written before
    // canaries) is not promoted untried: here only the live release's
    // requests are reported, by hand to the agent's socket.
    let socket = site.webroot.join(".zdeploy/ROOT/traffic.sock");
    let live = site.live_release();
    let live_path = site.webroot.join(&live);
    let reporting = Arc::new(AtomicBool::new(true));
    let reporter = {
        let (reporting, socket) = (reporting.clone(), socket.clone());
        let line = format!("<190>zdeploy: zdeploy1 200 0.010 {}", live_path.display());
        std::thread::spawn(move || {
            let sender = std::os::unix::net::UnixDatagram::unbound().unwrap();
            while reporting.load(Ordering::Relaxed) {
                let _ = sender.send_to(line.as_bytes(), &socket);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    write_version(&source, "untried", 0);
    let out = zdeploy(
        &config,
        &["deploy", "shop", "--canary", "25%", "--watch", "3s"],
    );
    reporting.store(false, Ordering::Relaxed);
    reporter.join().unwrap();
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("served no request"), "{}", out.stderr);
    assert_eq!(site.live_release(), live, "the live release stays");

    // Judged by its traffic against the live release's: a canary failing
    // one request in three is aborted, a good one promoted.
    let clients: Vec<String> = (0..=255u8)
        .step_by(32)
        .map(|b| format!("{b:02x}"))
        .collect();
    let flaky = |ports: Vec<u16>, buckets: Vec<String>| {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                for bucket in &buckets {
                    for port in &ports {
                        let status = get(*port, "/flaky.php", Some(bucket)).status;
                        assert!(status == 200 || status == 500, "{status}");
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        (stop, thread)
    };
    let (stop, thread) = flaky(ports.clone(), clients.clone());
    let v3 = site.live_release();
    write_version(&source, "v4", 3);
    let out = zdeploy(
        &config,
        &["deploy", "shop", "--canary", "50%", "--watch", "8s"],
    );
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("canary") && out.stderr.contains("5xx"),
        "{}",
        out.stderr
    );
    assert_eq!(site.live_release(), v3);
    write_version(&source, "v5", 0);
    let out = zdeploy(
        &config,
        &[
            "deploy", "shop", "--canary", "50%", "--watch", "3s", "--json",
        ],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let answer: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("one JSON document ({e}): {}", out.stdout));
    assert_eq!(answer["deployed"]["outcome"], "canary", "{answer}");
    assert_eq!(answer["judged"]["ended"]["ending"], "promoted", "{answer}");
    assert!(site.read("index.php").contains("v5"));
    // Told as what they were: a canary is no switch, a promote is, an
    // abort is a switch back.
    let events = told_events(&told);
    for (kind, event) in [
        ("deploy", "succeeded"),
        ("deploy", "canary"),
        ("abort", "switched_back"),
        ("promote", "succeeded"),
    ] {
        assert!(
            events.iter().any(|(k, e, _)| k == kind && e == event),
            "{kind} {event}: {events:?}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    thread.join().unwrap();
    drop((nginx, apache, caddy, agent));
}

/// What the notify target heard: each notice's kind, event and how many
/// hosts it names.
fn told_events(told: &Recorder) -> Vec<(String, String, usize)> {
    told.bodies
        .lock()
        .unwrap()
        .iter()
        .map(|b| {
            let body: serde_json::Value = serde_json::from_str(b).unwrap();
            (
                body["kind"].as_str().unwrap().to_string(),
                body["event"].as_str().unwrap().to_string(),
                body["hosts"].as_array().map_or(0, Vec::len),
            )
        })
        .collect()
}

/// `zdeploy` on the ad hoc webroot of `site`, with no settle or drain.
fn adhoc(site: &Site, args: &[&str], failpoint: Option<&str>) -> Output {
    let mut command = Zdeploy::new()
        .args(args)
        .args(["--webroot"])
        .arg(&site.webroot)
        .args(["--settle", "0s"]);
    if let Some(point) = failpoint {
        command = command.env("ZDEPLOY_FAILPOINT", point);
    }
    command.run()
}

#[test]
fn a_promote_or_abort_killed_at_its_switch_loses_no_write_and_the_next_run_finishes_it() {
    for (action, point) in [("promote", "switch.renamed"), ("abort", "canary.published")] {
        let site = Site::new();
        let source = site.path("app");
        write_version(&source, "v1", 0);
        let app = source.to_str().unwrap();
        assert_eq!(adhoc(&site, &["deploy", app], None).code, Some(0));
        let live = site.live_release();
        write_version(&source, "v2", 0);
        let out = adhoc(&site, &["deploy", app, "--canary", "50%"], None);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        let canary = std::fs::read_dir(&site.webroot)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .find(|n| n.starts_with("ROOT_") && *n != live)
            .unwrap();
        // Users of either side save while both serve.
        for (release, id) in [(&live, "on-live"), (&canary, "on-canary")] {
            std::fs::write(
                site.webroot.join(release).join(format!("saves/{id}.txt")),
                id,
            )
            .unwrap();
        }
        // Frozen: a promote needs --force, an abort does not.
        site.zdeploy("freeze").success();
        if action == "promote" {
            let out = adhoc(&site, &["canary", "promote"], None);
            assert_eq!(out.code, Some(2), "{}", out.stderr);
            assert!(out.stderr.contains("--force"), "{}", out.stderr);
        }
        let out = adhoc(&site, &["canary", action, "--force"], Some(point));
        assert_eq!(
            out.code, None,
            "{action}: killed at {point}: {}",
            out.stderr
        );
        site.zdeploy("unfreeze").success();
        // The next run recovers, and nothing anyone saved is lost.
        write_version(&source, "v3", 0);
        let out = adhoc(&site, &["deploy", app], None);
        assert_eq!(out.code, Some(0), "{action}: {}", out.stderr);
        assert!(!site.webroot.join(".zdeploy/ROOT/canary").exists());
        let out = adhoc(&site, &["prune", "--keep", "1", "--drain", "0s"], None);
        assert_eq!(out.code, Some(0), "{action}: {}", out.stderr);
        assert_eq!(site.releases().len(), 1, "{action}: {:?}", site.releases());
        for id in ["on-live", "on-canary"] {
            assert_eq!(site.read(&format!("saves/{id}.txt")), id, "{action}");
        }
        assert!(site.read("index.php").contains("v3"));
    }
}

#[test]
fn a_deploy_whose_migration_needs_a_window_switches_everyone_instead_of_starting_a_canary() {
    let site = Site::new();
    let source = site.path("app");
    write_version(&source, "v1", 0);
    let config = site.path("zdeploy.toml");
    std::fs::write(
        &config,
        format!(
            "[apps.shop]\nwebroot = \"{}\"\nsource = \"{}\"\nsettle = \"0s\"\n\
             build = [{{ run = \"echo migrated\", maintenance = true }}]\n",
            site.webroot.display(),
            source.display()
        ),
    )
    .unwrap();
    assert_eq!(zdeploy(&config, &["deploy", "shop"]).code, Some(0));
    write_version(&source, "v2", 0);
    let out = zdeploy(&config, &["deploy", "shop", "--canary", "10%"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("switching everyone instead of starting a canary"),
        "{}",
        out.stderr
    );
    assert!(site.read("index.php").contains("v2"));
    assert!(!site.webroot.join(".zdeploy/ROOT/canary").exists());
    assert!(
        !site
            .webroot
            .join(".zdeploy/ROOT/maintenance/window")
            .exists()
    );
}

/// Whether some host's live release holds the save `id`.
fn saved_on_fleet(fleet: &Fleet, id: &str) -> bool {
    let live = fleet.live();
    fleet.hosts.iter().zip(&live).any(|(host, release)| {
        release.as_ref().is_some_and(|release| {
            host.dir
                .join("www")
                .join(release)
                .join(format!("saves/{id}.txt"))
                .exists()
        })
    })
}

/// Which version each bucket sees through the balancer, asked three times:
/// the balancer takes turns, and 256 requests a pass send each bucket to
/// the next host each time, so each bucket is asked of every host.
fn versions_on_every_host(port: u16) -> BTreeMap<String, String> {
    let first = versions_by_bucket(port);
    for _ in 0..2 {
        assert_eq!(
            versions_by_bucket(port),
            first,
            "one cookie sees one release on every host"
        );
    }
    first
}

#[test]
fn a_canary_on_a_fleet_shows_one_cookie_one_release_on_every_host_and_ends_on_every_host() {
    let mut fleet = Fleet::start(3);
    let repo = Repo::new(fleet.root.path(), "shop");
    let scratch = fleet.root.path().join("scratch");
    let commit = |version: &str| {
        write_version(&scratch, version, 0);
        repo.commit_tree_of(&scratch);
    };
    commit("v1");
    let told = Recorder::start(&[200]);
    let config = fleet.config(
        "shop",
        &repo.bare,
        &format!("notify = {{ url = \"http://{}/hook\" }}\n", told.address),
    );
    let deploy = |args: &[&str]| {
        controller(&config)
            .args(["deploy", "shop"])
            .args(args)
            .run()
    };
    assert_eq!(deploy(&[]).code, Some(0));
    let v1 = fleet.live()[0].clone().unwrap();
    let port = fleet.start_balancer();

    // A host that cannot start its canary (a folder where it makes the
    // new canary link) has every other host's canary aborted.
    let state = |host: usize| fleet.hosts[host].dir.join("www/.zdeploy/ROOT");
    let blocker = state(1).join("canary.zdeploy-tmp");
    std::fs::create_dir_all(blocker.join("in-the-way")).unwrap();
    commit("v2");
    let out = deploy(&["--canary", "25%"]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("canary.zdeploy-tmp"), "{}", out.stderr);
    assert_eq!(fleet.live(), vec![Some(v1.clone()); 3], "live unchanged");
    for host in 0..3 {
        let folders: Vec<String> = std::fs::read_dir(state(host))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name == "canary" || name.starts_with("canary-"))
            .collect();
        assert!(folders.is_empty(), "host {host}: {folders:?}");
    }
    assert!(versions_by_bucket(port).values().all(|v| v == "v1"));
    std::fs::remove_dir_all(&blocker).unwrap();

    // The canary starts on every host in place of the switch.
    let out = deploy(&["--canary", "25%"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains("as a canary on 3 hosts"),
        "{}",
        out.stdout
    );
    assert_eq!(fleet.live(), vec![Some(v1.clone()); 3], "live unchanged");
    let status = controller(&config)
        .args(["canary", "status", "shop", "--json"])
        .success();
    let hosts: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    let canaries: Vec<&serde_json::Value> = hosts["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| &h["output"]["canary"])
        .collect();
    assert_eq!(canaries.len(), 3, "{hosts}");
    let v2 = canaries[0]["release"].as_str().unwrap().to_string();
    for canary in &canaries {
        assert_eq!(canary["release"], v2.as_str(), "{hosts}");
        assert_eq!(canary["share"]["buckets"], 64, "{hosts}");
    }
    let out = deploy(&[]);
    assert_eq!(
        out.code,
        Some(3),
        "busy while the canary runs: {}",
        out.stderr
    );
    assert!(out.stderr.contains("canary promote"), "{}", out.stderr);

    let by_bucket = versions_on_every_host(port);
    assert_eq!(by_bucket.values().filter(|v| *v == "v2").count(), 64);
    assert_eq!(by_bucket.values().filter(|v| *v == "v1").count(), 192);
    // A new client's bucket comes from whichever host answered first; every
    // host then serves it that bucket's release.
    for _ in 0..30 {
        let first = get(port, "/version.txt", None);
        let bucket = first.new_bucket.expect("a new client gets a bucket");
        assert_eq!(first.body, by_bucket[&bucket], "bucket {bucket}");
        for _ in 0..3 {
            assert_eq!(get(port, "/version.txt", Some(&bucket)).body, first.body);
        }
    }

    // Abort on every host: the canary's saves come back to the live release.
    let (canary_buckets, live_buckets) = (seeing(&by_bucket, "v2"), seeing(&by_bucket, "v1"));
    for (i, bucket) in canary_buckets.iter().chain(&live_buckets).enumerate() {
        save(port, bucket, &format!("abort-{i}"));
    }
    let out = controller(&config)
        .args(["canary", "abort", "shop", "--reason", "checkout is slow"])
        .run();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout
            .contains(&format!("canary {v2} aborted on 3 hosts")),
        "{}",
        out.stdout
    );
    assert_eq!(fleet.live(), vec![Some(v1.clone()); 3]);
    assert!(versions_on_every_host(port).values().all(|v| v == "v1"));
    assert!(get(port, "/version.txt", None).new_bucket.is_none());
    for i in 0..6 {
        assert!(saved_on_fleet(&fleet, &format!("abort-{i}")), "abort-{i}");
    }

    // A promote cut short (done on one host only) is finished by running it
    // again; saves on either side are in the release that wins.
    commit("v3");
    assert_eq!(deploy(&["--canary", "25%"]).code, Some(0));
    let by_bucket = versions_on_every_host(port);
    let (canary_buckets, live_buckets) = (seeing(&by_bucket, "v3"), seeing(&by_bucket, "v1"));
    assert_eq!(canary_buckets.len(), 3, "{by_bucket:?}");
    for (i, bucket) in canary_buckets.iter().chain(&live_buckets).enumerate() {
        save(port, bucket, &format!("promote-{i}"));
    }
    let webroot = format!("{}/www", fleet.path.display());
    let (ok, _, stderr) = fleet.zdeploy_on(0, &["canary", "promote", "--webroot", &webroot]);
    assert!(ok, "{stderr}");
    let v3 = fleet.live()[0].clone().unwrap();
    assert_ne!(v3, v1);
    assert_eq!(fleet.live()[1], Some(v1.clone()), "only host 0 promoted");
    let out = controller(&config)
        .args(["canary", "promote", "shop"])
        .run();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("already"), "host 0 had: {}", out.stdout);
    assert_eq!(fleet.live(), vec![Some(v3.clone()); 3]);
    assert!(versions_on_every_host(port).values().all(|v| v == "v3"));
    for i in 0..6 {
        assert!(
            saved_on_fleet(&fleet, &format!("promote-{i}")),
            "promote-{i}"
        );
    }
    let out = controller(&config)
        .args(["canary", "promote", "shop"])
        .run();
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("no canary of ROOT is running on any host"),
        "{}",
        out.stderr
    );
    // Naming the release, the hosts are not asked first: each says it
    // promoted that one already.
    let out = controller(&config)
        .args(["canary", "promote", "shop", "--release", &v3])
        .run();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout.matches("already").count(), 3, "{}", out.stdout);

    // Judged by every host's traffic (the hosts run no agent: each collects
    // its own for the window): a canary failing one request in three is
    // aborted on every host, a good one promoted.
    let load = |stop: Arc<AtomicBool>| {
        std::thread::spawn(move || {
            let mut statuses = Vec::new();
            for bucket in (0..=255u8).cycle() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                statuses.push(get(port, "/flaky.php", Some(&format!("{bucket:02x}"))).status);
                std::thread::sleep(Duration::from_millis(15));
            }
            statuses
        })
    };
    // The canary's own limits (a loaded machine's p95 is noisy: this judges
    // errors), in a config beside the first so the controller's state is
    // the same.
    let judged_config = fleet.root.path().join("judged.toml");
    std::fs::write(
        &judged_config,
        std::fs::read_to_string(&config).unwrap()
            + "canary = { share = \"50%\", for = \"4s\", max_p95 = \"50x\" }\n",
    )
    .unwrap();
    let judged = |fails_every: u32, version: &str, code: i32| {
        write_version(&scratch, version, fails_every);
        repo.commit_tree_of(&scratch);
        let stop = Arc::new(AtomicBool::new(false));
        let requests = load(stop.clone());
        let out = controller(&judged_config).args(["deploy", "shop"]).run();
        stop.store(true, Ordering::Relaxed);
        let statuses = requests.join().unwrap();
        assert!(
            statuses.iter().all(|s| *s == 200 || *s == 500),
            "{statuses:?}"
        );
        assert_eq!(out.code, Some(code), "{version}: {}", out.stderr);
        out
    };
    let out = judged(3, "v4", 1);
    assert!(out.stderr.contains("failed on the fleet"), "{}", out.stderr);
    assert!(out.stderr.contains("5xx"), "{}", out.stderr);
    assert_eq!(
        fleet.live(),
        vec![Some(v3.clone()); 3],
        "aborted everywhere"
    );
    let out = judged(0, "v5", 0);
    assert!(out.stdout.contains("promoted on 3 hosts"), "{}", out.stdout);
    let v5 = fleet.live()[0].clone().unwrap();
    assert_ne!(v5, v3);
    assert_eq!(
        fleet.live(),
        vec![Some(v5.clone()); 3],
        "promoted everywhere"
    );

    // The agent as the fleet's controller: its deploy aborts the canary the
    // hosts run (the newest deploy wins) instead of waiting on it.
    write_version(&scratch, "v6", 0);
    repo.commit_tree_of(&scratch);
    assert_eq!(deploy(&["--canary", "25%"]).code, Some(0));
    let dir = fleet.root.path().join("agent");
    std::fs::create_dir_all(&dir).unwrap();
    let agent = Agent::start(&dir, &std::fs::read_to_string(&config).unwrap());
    assert_eq!(agent.act("shop", "deploy", "{}").status, 202);
    agent.wait_for("the agent's fleet deploy", Duration::from_secs(60), || {
        let live = fleet.live();
        live[0].as_ref() != Some(&v5) && live.iter().all(|l| l == &live[0])
    });
    agent.wait_idle("shop");
    let status = controller(&config)
        .args(["canary", "status", "shop", "--json"])
        .success();
    let hosts: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    for host in hosts["hosts"].as_array().unwrap() {
        assert!(host["output"]["canary"].is_null(), "{hosts}");
    }
    assert!(versions_by_bucket(port).values().all(|v| v == "v6"));

    // The controller told each start and end once, for the whole fleet:
    // aborts by hand, by the judge and by the agent's newer deploy, and
    // promotes by hand (twice: once naming the release) and by the judge.
    let events = told_events(&told);
    let count = |kind: &str, event: &str| {
        events
            .iter()
            .filter(|(k, e, hosts)| k == kind && e == event && *hosts == 3)
            .count()
    };
    assert_eq!(count("abort", "switched_back"), 3, "{events:?}");
    assert_eq!(count("promote", "succeeded"), 3, "{events:?}");
    assert!(count("deploy", "canary") >= 4, "{events:?}");
}
