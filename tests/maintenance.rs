//! Maintenance windows, through nginx, Apache and Caddy serving one webroot
//! under load with the sites `zdeploy webserver` writes: by hand (503 with
//! Retry-After and the app's page; allowed addresses and the bypass cookie
//! reach the app; no server reloaded), around a deploy's migration only
//! when one is pending, and closed on every path a deploy can end.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::load::{Load, Sample, page_version, php_app};
use crate::support::servers::{
    Apache, Caddy, Nginx, PhpFpm, free_port, request, wait_for, zdeploy_nginx_config,
};
use crate::support::{Site, Zdeploy};

/// What the app's maintenance page says.
const PAGE: &str = "Back in a minute: the shop is being upgraded";

/// One webroot served by nginx, Apache and Caddy at once, all through one
/// PHP-FPM.
struct Served {
    site: Site,
    config: PathBuf,
    db: PathBuf,
    _fpm: PhpFpm,
    nginx: Nginx,
    apache: Apache,
    _caddy: Caddy,
    caddy_port: u16,
}

impl Served {
    /// The app at v0 deployed with `app_keys`, then the three servers.
    fn start(app_keys: &str) -> Served {
        let site = Site::new();
        // Apache's children run as www-data and must reach the webroot.
        std::fs::set_permissions(site.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let db = site.path("db");
        std::fs::create_dir(&db).unwrap();
        let config = site.path("zdeploy.toml");
        std::fs::write(
            &config,
            format!(
                "[apps.shop]\nwebroot = \"{}\"\nsource = \"{}\"\nsettle = \"0s\"\n\
                 maintenance_page = \"maintenance.html\"\n{}\n",
                site.webroot.display(),
                site.path("app").display(),
                app_keys.replace("{db}", &db.display().to_string())
            ),
        )
        .unwrap();
        let served_app = |version: &str, schema: &str| app(&site.path("app"), version, schema);
        served_app("v0", "schema 1");
        zdeploy(&config, &["deploy", "shop"]).success();
        let fpm = PhpFpm::start(&site.path("fpm"), 4);
        let port = free_port();
        let nginx = Nginx::start(
            &site.path("nginx"),
            &zdeploy_nginx_config(&site, &fpm, port),
            port,
        );
        let site_for = |server: &str, port: u16| {
            zdeploy(&config, &["webserver", server, "shop"])
                .args(["--listen", &format!("127.0.0.1:{port}"), "--php-fpm"])
                .arg(&fpm.socket)
                .success()
                .stdout
        };
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
        Served {
            site,
            config,
            db,
            _fpm: fpm,
            nginx,
            apache,
            _caddy: caddy,
            caddy_port,
        }
    }

    /// Each server's name and port.
    fn ports(&self) -> [(&'static str, u16); 3] {
        [
            ("nginx", self.nginx.port),
            ("Apache", self.apache.port),
            ("Caddy", self.caddy_port),
        ]
    }

    fn zdeploy(&self, args: &[&str]) -> Zdeploy {
        zdeploy(&self.config, args)
    }

    /// Change the app's config: each `(from, to)` replaced in its text.
    fn edit_config(&self, edits: &[(&str, &str)]) {
        let mut text = std::fs::read_to_string(&self.config).unwrap();
        for (from, to) in edits {
            assert!(text.contains(from), "{from} is not in {text}");
            text = text.replace(from, to);
        }
        std::fs::write(&self.config, text).unwrap();
    }

    /// Make `version` (with `schema`) the app's source.
    fn app(&self, version: &str, schema: &str) {
        app(&self.site.path("app"), version, schema);
    }

    /// Every server answers a whole page of `version`.
    #[track_caller]
    fn assert_every_server_serves(&self, version: &str) {
        for (server, port) in self.ports() {
            let page = request(port, "GET", "/").unwrap();
            assert_eq!(
                (page.0, page_version(&page.1)),
                (200, Ok(version.to_string())),
                "{server}"
            );
        }
    }

    /// One reader on each server.
    fn load(&self) -> Vec<(&'static str, Load)> {
        self.ports()
            .into_iter()
            .map(|(server, port)| (server, Load::start(port, 1, false)))
            .collect()
    }

    /// The servers' worker processes, which a reload would replace.
    fn workers(&self) -> (Vec<u32>, Vec<u32>) {
        (self.nginx.workers(), self.apache.workers())
    }
}

fn zdeploy(config: &Path, args: &[&str]) -> Zdeploy {
    Zdeploy::new().arg("--config").arg(config).args(args)
}

/// The PHP app of the load tests at `version`, with a maintenance page and
/// a `schema` file its migration step copies into the "database".
fn app(root: &Path, version: &str, schema: &str) {
    php_app(root, version);
    std::fs::write(
        root.join("maintenance.html"),
        format!("<!doctype html><h1>{PAGE}</h1>\n"),
    )
    .unwrap();
    std::fs::write(root.join("schema"), schema).unwrap();
}

/// A response as curl saw it: status, headers (lowercased names) and body.
struct Fetched {
    status: u16,
    head: String,
    body: String,
}

impl Fetched {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// `curl` from `source` (a loopback address), with `cookie` when given.
fn fetch(port: u16, method: &str, source: &str, cookie: Option<&str>) -> Fetched {
    let mut command = Command::new("curl");
    command
        .args([
            "-s",
            "-D",
            "-",
            "--max-time",
            "20",
            "-X",
            method,
            "--interface",
            source,
        ])
        .arg(format!("http://127.0.0.1:{port}/"));
    if let Some(cookie) = cookie {
        command.args(["-b", cookie]);
    }
    let output = command
        .output()
        .expect("curl is installed (scripts/test.sh)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Fetched {
        status: head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// What a sample was: a whole page of one version, the maintenance page
/// with 503, or a failure to report.
#[derive(Debug, PartialEq)]
enum Seen {
    Page(String),
    Maintenance,
    Failed(String),
}

fn seen(sample: &Sample) -> Seen {
    match &sample.outcome {
        Ok((200, body)) => match page_version(body) {
            Ok(version) => Seen::Page(version),
            Err(torn) => Seen::Failed(format!("torn page: {torn}")),
        },
        Ok((503, body)) if body.contains(PAGE) => Seen::Maintenance,
        other => Seen::Failed(format!("{other:?}")),
    }
}

/// Every sample a whole page or the maintenance page; the 503s counted.
#[track_caller]
fn assert_pages_or_maintenance(server: &str, samples: &[Sample]) -> usize {
    let failed: Vec<String> = samples
        .iter()
        .filter_map(|s| match seen(s) {
            Seen::Failed(why) => Some(why),
            _ => None,
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{server}: {} of {} requests failed or were torn, e.g. {:?}",
        failed.len(),
        samples.len(),
        &failed[..failed.len().min(3)]
    );
    samples
        .iter()
        .filter(|s| seen(s) == Seen::Maintenance)
        .count()
}

/// The secret in `zdeploy maintenance on`'s output.
fn bypass_cookie(stdout: &str) -> String {
    let start = stdout
        .find("zdeploy_maintenance=")
        .unwrap_or_else(|| panic!("no cookie in {stdout}"));
    stdout[start..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect()
}

#[test]
fn maintenance_by_hand_answers_503_under_load_on_nginx_apache_and_caddy_without_a_reload() {
    let served = Served::start("");
    let workers = served.workers();
    let load = served.load();
    std::thread::sleep(Duration::from_millis(500));
    let on_started = Instant::now();
    let on = served
        .zdeploy(&[
            "maintenance",
            "on",
            "shop",
            "--retry-after",
            "7",
            "--allow",
            "127.0.0.2",
            "--allow",
            "10.0.0.0/8",
        ])
        .success();
    let on_finished = Instant::now();
    assert!(
        on.stdout
            .contains("Retry-After 7s, except from 127.0.0.2, 10.0.0.0/8"),
        "{}",
        on.stdout
    );
    let cookie = bypass_cookie(&on.stdout);
    std::thread::sleep(Duration::from_millis(700));
    for (server, port) in served.ports() {
        let denied = fetch(port, "GET", "127.0.0.1", None);
        assert_eq!(denied.status, 503, "{server}: {}", denied.head);
        assert_eq!(
            denied.header("Retry-After"),
            Some("7"),
            "{server}: {}",
            denied.head
        );
        assert!(denied.body.contains(PAGE), "{server}: {}", denied.body);
        let posted = fetch(port, "POST", "127.0.0.1", None);
        assert_eq!(posted.status, 503, "{server}: a form post too");
        let allowed = fetch(port, "GET", "127.0.0.2", None);
        assert_eq!(
            (allowed.status, page_version(&allowed.body)),
            (200, Ok("v0".to_string())),
            "{server}: an allowed address reaches the app"
        );
        let bypassed = fetch(port, "GET", "127.0.0.1", Some(&cookie));
        assert_eq!(
            (bypassed.status, page_version(&bypassed.body)),
            (200, Ok("v0".to_string())),
            "{server}: the cookie reaches the app"
        );
        let forged = fetch(
            port,
            "GET",
            "127.0.0.1",
            Some("zdeploy_maintenance=../allow"),
        );
        assert_eq!(forged.status, 503, "{server}: a forged cookie does not");
    }
    let status = served.zdeploy(&["status", "shop"]).success().stdout;
    assert!(
        status.contains("maintenance: ON since") && status.contains("by hand"),
        "{status}"
    );
    let off_started = Instant::now();
    let off = served.zdeploy(&["maintenance", "off", "shop"]).success();
    let off_finished = Instant::now();
    assert!(
        off.stdout.contains("maintenance off for ROOT after"),
        "{}",
        off.stdout
    );
    std::thread::sleep(Duration::from_millis(500));
    for (server, load) in load {
        let (samples, _, _) = load.finish();
        let in_window = assert_pages_or_maintenance(server, &samples);
        assert!(in_window > 0, "{server}: no request saw the window");
        for sample in &samples {
            let outside = sample.finished < on_started || sample.started > off_finished;
            let inside = sample.started > on_finished && sample.finished < off_started;
            let seen = seen(sample);
            assert!(
                !(outside && seen == Seen::Maintenance),
                "{server}: a 503 outside the window"
            );
            assert!(
                !(inside && seen != Seen::Maintenance),
                "{server}: the app answered inside the window: {seen:?}"
            );
        }
    }
    // A reload replaces every worker. Apache may add children under load,
    // and retire one (or restart its piped log) when the machine is busy:
    // one of its first children still serving shows there was no reload.
    let (nginx_workers, apache_workers) = served.workers();
    assert_eq!(nginx_workers, workers.0, "nginx was not reloaded");
    assert!(
        workers.1.iter().any(|pid| apache_workers.contains(pid)),
        "Apache was reloaded: none of its children {:?} still serve (now {apache_workers:?})",
        workers.1
    );
    for (server, port) in served.ports() {
        assert_eq!(request(port, "GET", "/").unwrap().0, 200, "{server}");
    }
    let status = served
        .zdeploy(&["status", "shop", "--json"])
        .success()
        .stdout;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert!(status["maintenance"].is_null(), "{status}");

    // Hostile input changes nothing.
    let window = served.site.webroot.join(".zdeploy/ROOT/maintenance/window");
    for (args, says) in [
        (&["--allow", "example.org"][..], "not an IP address"),
        (&["--allow", "10.0.0.0/33"][..], "from 1 to 32"),
        (&["--allow", "2001:db8::/32"][..], "IPv6 networks"),
        (&["--retry-after", "0"][..], "give 1 to 86400 seconds"),
    ] {
        let refused = served
            .zdeploy(&["maintenance", "on", "shop"])
            .args(args)
            .fails_with(2);
        assert!(
            refused.stderr.contains(says),
            "{args:?}: {}",
            refused.stderr
        );
        assert!(!window.exists(), "{args:?} opened a window");
    }
    // A page that leads out of the release is refused, nothing opened.
    let live = served.site.context();
    std::fs::remove_file(live.join("maintenance.html")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", live.join("maintenance.html")).unwrap();
    let refused = served.zdeploy(&["maintenance", "on", "shop"]).fails_with(2);
    assert!(
        refused.stderr.contains("is not a file inside the release"),
        "{}",
        refused.stderr
    );
    assert!(!window.exists());
}

/// The migration of the app's config: copies the release's schema into the
/// "database" only when they differ, inside a window; `{db}` is the
/// database folder.
const MIGRATION: &str = "build = [{ run = \"sleep 2 && cp schema {db}/schema\", once = true, \
     maintenance = true, when = \"! cmp -s schema {db}/schema\" }]";

#[test]
fn a_deploy_opens_a_window_only_for_a_pending_migration_and_closes_it_on_every_path() {
    let served = Served::start(&format!("{MIGRATION}\nmaintenance_allow = [\"127.0.0.2\"]"));
    let db_schema = served.db.join("schema");
    assert_eq!(std::fs::read_to_string(&db_schema).unwrap(), "schema 1");

    // Nothing pending: no window, not one 503.
    let load = served.load();
    served.app("v1", "schema 1");
    let deployed = served.zdeploy(&["deploy", "shop"]).success();
    for (server, load) in load {
        let (samples, _, _) = load.finish();
        assert_eq!(assert_pages_or_maintenance(server, &samples), 0, "{server}");
    }
    let log = served.zdeploy(&["log", "shop", "--json"]).success().stdout;
    let log: serde_json::Value = serde_json::from_str(&log).unwrap();
    assert!(log["maintenance_window"].is_null(), "{log}");
    let lines = log["log"].to_string();
    assert!(
        lines.contains("says there is nothing to do"),
        "{}",
        deployed.stderr
    );

    // A pending migration: a window as long as the step and the switch,
    // only the maintenance page in it, the new release after it.
    let load = served.load();
    served.app("v2", "schema 2");
    served.zdeploy(&["deploy", "shop"]).success();
    std::thread::sleep(Duration::from_millis(300));
    for (server, load) in load {
        let (samples, _, _) = load.finish();
        assert!(
            assert_pages_or_maintenance(server, &samples) > 0,
            "{server}: no request saw the window"
        );
        let last = samples.last().map(seen);
        assert_eq!(last, Some(Seen::Page("v2".into())), "{server}");
    }
    assert_eq!(std::fs::read_to_string(&db_schema).unwrap(), "schema 2");
    let log = served.zdeploy(&["log", "shop", "--json"]).success().stdout;
    let log: serde_json::Value = serde_json::from_str(&log).unwrap();
    let window = &log["maintenance_window"];
    assert_eq!(window["closed_by"], "switch", "{log}");
    assert!(
        window["seconds"].as_f64().unwrap() >= 2.0,
        "the window holds the 2 s step: {window}"
    );
    let text_log = served.zdeploy(&["log", "shop"]).success().stdout;
    assert!(text_log.contains("maintenance window: "), "{text_log}");

    // The migration fails inside its window: maintenance off, v2 live.
    let live = served.site.live_release();
    served.edit_config(&[("cp schema", "false && cp schema")]);
    served.app("v3", "schema 3");
    let failed = served.zdeploy(&["deploy", "shop"]).fails_with(1);
    assert!(failed.stderr.contains("build step"), "{}", failed.stderr);
    assert_eq!(served.site.live_release(), live);
    served.assert_every_server_serves("v2");
    let log = served.zdeploy(&["log", "shop", "--json"]).success().stdout;
    let log: serde_json::Value = serde_json::from_str(&log).unwrap();
    assert_eq!(log["maintenance_window"]["closed_by"], "failure", "{log}");

    // Killed inside its window: the window stays until the next run's
    // recover, status and doctor name it, and v2 stays live.
    served.edit_config(&[("sleep 2 && false && cp schema", "sleep 60 && cp schema")]);
    let mut deploy = served
        .zdeploy(&["deploy", "shop"])
        .command()
        .spawn()
        .unwrap();
    let window = served.site.webroot.join(".zdeploy/ROOT/maintenance/window");
    wait_for(|| window.exists(), "the deploy's window");
    deploy.kill().unwrap();
    deploy.wait().unwrap();
    let _ = Command::new("pkill")
        .args(["-9", "-f", &served.db.display().to_string()])
        .status();
    for (server, port) in served.ports() {
        assert_eq!(request(port, "GET", "/").unwrap().0, 503, "{server}");
        let allowed = fetch(port, "GET", "127.0.0.2", None);
        assert_eq!(
            (allowed.status, page_version(&allowed.body)),
            (200, Ok("v2".to_string())),
            "{server}: maintenance_allow reaches the app through a deploy's window"
        );
    }
    let status = served.zdeploy(&["status", "shop"]).success().stdout;
    assert!(status.contains("LEFT OPEN by deployment #"), "{status}");
    let doctor = served
        .zdeploy(&["doctor", "shop", "--url"])
        .arg(format!("http://127.0.0.1:{}/", served.nginx.port))
        .fails_with(1);
    assert!(
        doctor.stdout.contains("LEFT OPEN"),
        "{}{}",
        doctor.stdout,
        doctor.stderr
    );
    let pruned = served.zdeploy(&["prune", "shop"]).success();
    assert!(
        pruned
            .stderr
            .contains("closed the maintenance window deployment #"),
        "{}",
        pruned.stderr
    );
    assert!(!window.exists());
    assert_eq!(served.site.live_release(), live);
    served.assert_every_server_serves("v2");

    // A `when` that hangs is bounded by build_timeout; no window opens.
    served.edit_config(&[
        ("when = \"! cmp -s", "when = \"sleep 60; ! cmp -s"),
        ("settle = \"0s\"", "settle = \"0s\"\nbuild_timeout = \"2s\""),
    ]);
    let hung = served.zdeploy(&["deploy", "shop"]).fails_with(1);
    assert!(
        hung.stderr.contains("the `when` of build step") && hung.stderr.contains("timed out"),
        "{}",
        hung.stderr
    );
    assert!(!window.exists());
    assert_eq!(served.site.live_release(), live);

    // Rolling back past the migration says the schema stays.
    let rolled = served.zdeploy(&["rollback", "shop"]).success();
    assert!(
        rolled
            .stderr
            .contains("is older than the schema step 'sleep 2 && cp schema"),
        "{}",
        rolled.stderr
    );
}
