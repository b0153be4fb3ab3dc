//! Benchmark: the same load and deploy schedule, side by side in one run,
//! against zdeploy (nginx and Apache) and the methods users would otherwise
//! pick: rsync into a real ROOT, deleting and replacing ROOT, and a symlink
//! switch served with `$document_root`. Then maintenance windows: a
//! migration step of 2 s whose schema the old release cannot serve, run
//! with a window only when pending (zdeploy), and without one (as deploy
//! tools run migrations before their switch); and windows opened and
//! closed by hand. Then the watch: a release failing one checkout in five
//! behind a green front page, switched back by its traffic. Run it with
//! `bench/zero-downtime`.

#[path = "../tests/support/mod.rs"]
mod support;
#[path = "zero_downtime_watch.rs"]
mod watch;

use std::process::Command;
use std::time::{Duration, Instant};

use support::load::{Load, Op, Sample, judge, page_version, percentile, php_app};
use support::servers::{Apache, Nginx, PhpFpm, free_port, request};
use support::{Site, Zdeploy};

const READERS: usize = 6;
const PHP_WORKERS: usize = 4;
const IDLE: Duration = Duration::from_secs(3);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Method {
    ZdeployNginx,
    ZdeployApache,
    RsyncInPlace,
    DeleteAndReplace,
    SymlinkDocumentRoot,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::ZdeployNginx => "zdeploy + nginx",
            Method::ZdeployApache => "zdeploy + Apache",
            Method::RsyncInPlace => "rsync --delete into ROOT",
            Method::DeleteAndReplace => "delete and replace ROOT",
            Method::SymlinkDocumentRoot => "symlink + $document_root",
        }
    }
}

#[track_caller]
fn sh(command: &str) {
    let status = Command::new("sh")
        .arg("-c")
        .arg(command)
        .status()
        .expect("run sh");
    assert!(status.success(), "`{command}` failed");
}

/// Everything a method needs to deploy and be served.
struct Bench {
    site: Site,
    app: std::path::PathBuf,
    release: usize,
}

impl Bench {
    fn deploy(&mut self, method: Method) {
        let webroot = self.site.webroot.display().to_string();
        let app = self.app.display().to_string();
        match method {
            Method::ZdeployNginx | Method::ZdeployApache => {
                self.site
                    .zdeploy("deploy")
                    .args(["--keep", "2", "--drain", "1s", "--settle", "200ms", "-q"])
                    .arg(&self.app)
                    .success();
            }
            Method::RsyncInPlace => sh(&format!("rsync -a --delete '{app}/' '{webroot}/ROOT/'")),
            Method::DeleteAndReplace => sh(&format!(
                "rm -rf '{webroot}/ROOT' && cp -a '{app}' '{webroot}/ROOT'"
            )),
            Method::SymlinkDocumentRoot => {
                self.release += 1;
                let n = self.release;
                sh(&format!(
                    "cp -a '{app}' '{webroot}/rel{n}' && ln -sfn 'rel{n}' '{webroot}/ROOT.tmp' && mv -T '{webroot}/ROOT.tmp' '{webroot}/ROOT'"
                ));
                if n > 2 {
                    sh(&format!("rm -rf '{webroot}/rel{}'", n - 2));
                }
            }
        }
    }
}

enum Server {
    Nginx(Nginx),
    Apache(Apache),
}

impl Server {
    fn port(&self) -> u16 {
        match self {
            Server::Nginx(n) => n.port,
            Server::Apache(a) => a.port,
        }
    }
}

fn serve(method: Method, bench: &Bench, fpm: &PhpFpm) -> Server {
    let port = free_port();
    let webroot = &bench.site.webroot;
    let listen = format!("127.0.0.1:{port}");
    if method == Method::ZdeployApache {
        let dir = bench.site.path("apache");
        let config = Zdeploy::new()
            .args(["webserver", "apache", "--webroot"])
            .arg(webroot)
            .args(["--listen", &listen, "--php-fpm"])
            .arg(&fpm.socket)
            .success()
            .stdout;
        return Server::Apache(Apache::start(&dir, &config, port));
    }
    let config = Zdeploy::new()
        .args(["webserver", "nginx", "--webroot"])
        .arg(webroot)
        .args(["--listen", &listen, "--php-fpm"])
        .arg(&fpm.socket)
        .success()
        .stdout;
    let config = if method == Method::ZdeployNginx {
        config
    } else {
        config.replace("$realpath_root", "$document_root")
    };
    Server::Nginx(Nginx::start(&bench.site.path("nginx"), &config, port))
}

struct Row {
    method: Method,
    deploys: usize,
    requests: usize,
    failed: usize,
    torn: usize,
    stale: usize,
    idle: (Duration, Duration),
    during: (Duration, Duration),
}

fn run(method: Method, deploys: usize, interval: Duration) -> Row {
    let mut bench = Bench {
        site: Site::new(),
        app: std::path::PathBuf::new(),
        release: 0,
    };
    // Apache's children run as www-data and must reach the webroot.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        bench.site.dir.path(),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    bench.app = bench.site.path("app");
    php_app(&bench.app, "v0");
    let fpm = PhpFpm::start(&bench.site.path("fpm"), PHP_WORKERS);
    if matches!(method, Method::ZdeployNginx | Method::ZdeployApache) {
        bench.site.deploy(&bench.app).arg("-q").success();
    }
    if !matches!(method, Method::ZdeployNginx | Method::ZdeployApache) {
        // The other methods' first deploy puts v0 in place.
        bench.deploy(method);
    }
    let server = serve(method, &bench, &fpm);
    let port = server.port();
    assert_eq!(
        request(port, "GET", "/").map(|(s, _)| s).unwrap_or(0),
        200,
        "{} serves v0",
        method.name()
    );

    let idle = Load::start(port, READERS, false);
    std::thread::sleep(IDLE);
    let (idle_samples, _, _) = idle.finish();

    let load = Load::start(port, READERS, false);
    let mut ops = Vec::new();
    let schedule = Instant::now();
    for i in 1..=deploys {
        // The same schedule for every method: deploy i starts at i intervals.
        let due = schedule + interval * i as u32;
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let version = format!("v{i}");
        php_app(&bench.app, &version);
        let started = Instant::now();
        bench.deploy(method);
        ops.push(Op {
            started,
            finished: Instant::now(),
            version,
        });
    }
    std::thread::sleep(Duration::from_millis(300));
    let (samples, _, _) = load.finish();
    let verdict = judge(&samples, &ops, "v0");
    if std::env::var_os("ZDEPLOY_BENCH_SHOW").is_some() {
        for example in verdict
            .failed
            .iter()
            .chain(&verdict.torn)
            .chain(&verdict.stale)
            .take(3)
        {
            eprintln!(
                "  {}: {}",
                method.name(),
                example.chars().take(300).collect::<String>()
            );
        }
    }
    let latency = |s: &[Sample]| (percentile(s, 50.0), percentile(s, 99.0));
    drop(server);
    Row {
        method,
        deploys,
        requests: samples.len(),
        failed: verdict.failed.len(),
        torn: verdict.torn.len(),
        stale: verdict.stale.len(),
        idle: latency(&idle_samples),
        during: latency(&samples),
    }
}

fn percent(part: usize, whole: usize) -> String {
    if whole == 0 {
        "-".into()
    } else {
        format!("{:.1}%", part as f64 * 100.0 / whole as f64)
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// A maintenance case: how the schema and the migration step are set up.
#[derive(Clone, Copy, PartialEq, Eq)]
enum WindowCase {
    /// The schema never changes: the step's `when` skips it.
    NothingPending,
    /// Every deploy changes the schema: the step runs in a window.
    Pending,
    /// Every deploy changes the schema; the step runs before the switch
    /// with no window, as deploy tools run migrations.
    PendingWithoutWindow,
    /// No deploys: `zdeploy maintenance on`, a second, `off`, a second.
    ByHand,
}

impl WindowCase {
    fn name(self) -> &'static str {
        match self {
            WindowCase::NothingPending => "zdeploy, nothing pending (when skips the step)",
            WindowCase::Pending => "zdeploy, migration pending (maintenance = true)",
            WindowCase::PendingWithoutWindow => "migration before the switch, no window",
            WindowCase::ByHand => "zdeploy maintenance on/off by hand",
        }
    }
}

/// The migration step's length.
const STEP: Duration = Duration::from_secs(2);
const MAINTENANCE_PAGE: &str = "down for maintenance";

/// The load-test app at `version`, whose page fails with 500 unless the
/// "database" holds `schema`: code that meets a schema it was not written
/// for, as after a column is renamed.
fn schema_app(app: &std::path::Path, db: &std::path::Path, version: &str, schema: &str) {
    php_app(app, version);
    let page = std::fs::read_to_string(app.join("index.php")).unwrap();
    std::fs::write(
        app.join("index.php"),
        format!(
            "<?php $s = trim((string) @file_get_contents('{}/schema'));
             if ($s !== '{schema}') {{ http_response_code(500); exit(\"schema $s, expected {schema}\"); }} ?>{page}",
            db.display()
        ),
    )
    .unwrap();
    std::fs::write(app.join("schema"), schema).unwrap();
    std::fs::write(
        app.join("maintenance.html"),
        format!("<h1>{MAINTENANCE_PAGE}</h1>"),
    )
    .unwrap();
}

struct WindowRow {
    case: WindowCase,
    deploys: usize,
    requests: usize,
    whole: usize,
    unavailable: usize,
    failed: usize,
    /// Each deploy's window, in seconds.
    windows: Vec<f64>,
}

fn run_windows(case: WindowCase, deploys: usize, interval: Duration) -> WindowRow {
    let site = Site::new();
    let app = site.path("app");
    let db = site.path("db");
    std::fs::create_dir(&db).unwrap();
    std::fs::write(db.join("schema"), "s0").unwrap();
    // The schema changes first, then the migration works on: the old
    // release fails from the moment it starts.
    let step = format!(
        "cp schema {}/schema && sleep {}",
        db.display(),
        STEP.as_secs()
    );
    let build = match case {
        WindowCase::PendingWithoutWindow => {
            format!("build = [{{ run = \"{step}\", once = true }}]")
        }
        _ => format!(
            "build = [{{ run = \"{step}\", once = true, maintenance = true, when = \"! cmp -s schema {}/schema\" }}]",
            db.display()
        ),
    };
    let config = site.path("zdeploy.toml");
    std::fs::write(
        &config,
        format!(
            "[apps.shop]\nwebroot = \"{}\"\nsource = \"{}\"\nkeep = 2\ndrain = \"1s\"\nsettle = \"200ms\"\n\
             maintenance_page = \"maintenance.html\"\n{build}\n",
            site.webroot.display(),
            app.display()
        ),
    )
    .unwrap();
    let zdeploy = |args: &[&str]| Zdeploy::new().arg("--config").arg(&config).args(args);
    schema_app(&app, &db, "v0", "s0");
    zdeploy(&["deploy", "shop", "-q"]).success();
    let fpm = PhpFpm::start(&site.path("fpm"), PHP_WORKERS);
    let port = free_port();
    let nginx_config = zdeploy(&["webserver", "nginx", "shop"])
        .args(["--listen", &format!("127.0.0.1:{port}"), "--php-fpm"])
        .arg(&fpm.socket)
        .success()
        .stdout;
    let _nginx = Nginx::start(&site.path("nginx"), &nginx_config, port);
    let load = Load::start(port, READERS, false);
    let mut windows = Vec::new();
    let schedule = Instant::now();
    for i in 1..=deploys {
        let due = schedule + interval * i as u32;
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        if case == WindowCase::ByHand {
            zdeploy(&["maintenance", "on", "shop"]).success();
            let opened = Instant::now();
            std::thread::sleep(Duration::from_secs(1));
            zdeploy(&["maintenance", "off", "shop"]).success();
            windows.push(opened.elapsed().as_secs_f64());
            continue;
        }
        let schema = match case {
            WindowCase::NothingPending => "s0".to_string(),
            _ => format!("s{i}"),
        };
        schema_app(&app, &db, &format!("v{i}"), &schema);
        zdeploy(&["deploy", "shop", "-q"]).success();
        let log = zdeploy(&["log", "shop", "--json"]).success().stdout;
        let log: serde_json::Value = serde_json::from_str(&log).unwrap();
        if let Some(seconds) = log["maintenance_window"]["seconds"].as_f64() {
            windows.push(seconds);
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let (samples, _, _) = load.finish();
    let (mut whole, mut unavailable, mut failed) = (0, 0, 0);
    for sample in &samples {
        match &sample.outcome {
            Ok((200, body)) if page_version(body).is_ok() => whole += 1,
            Ok((503, body)) if body.contains(MAINTENANCE_PAGE) => unavailable += 1,
            other => {
                failed += 1;
                if std::env::var_os("ZDEPLOY_BENCH_SHOW").is_some() && failed <= 3 {
                    eprintln!("  {}: {other:?}", case.name());
                }
            }
        }
    }
    WindowRow {
        case,
        deploys,
        requests: samples.len(),
        whole,
        unavailable,
        failed,
        windows,
    }
}

fn windows_table(deploys: usize) {
    println!(
        "\nMaintenance windows: {deploys} deploys (or on/off by hand) per case, one every 6 s, a migration step of {} s whose schema the old release cannot serve, under {READERS} clients on {PHP_WORKERS} PHP-FPM workers behind nginx\n",
        STEP.as_secs()
    );
    println!(
        "| case | deploys | requests | whole pages | 503 maintenance | failed (500, torn, other) | windows | longest window s | longest beyond the step s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for case in [
        WindowCase::NothingPending,
        WindowCase::Pending,
        WindowCase::PendingWithoutWindow,
        WindowCase::ByHand,
    ] {
        let row = run_windows(case, deploys, Duration::from_secs(6));
        let longest = row.windows.iter().copied().fold(0.0, f64::max);
        let beyond = match row.case {
            WindowCase::Pending if !row.windows.is_empty() => {
                format!("{:.2}", longest - STEP.as_secs_f64())
            }
            _ => "-".into(),
        };
        println!(
            "| {} | {} | {} | {} | {} ({}) | {} ({}) | {} | {} | {beyond} |",
            row.case.name(),
            row.deploys,
            row.requests,
            row.whole,
            row.unavailable,
            percent(row.unavailable, row.requests),
            row.failed,
            percent(row.failed, row.requests),
            row.windows.len(),
            if row.windows.is_empty() {
                "-".to_string()
            } else {
                format!("{longest:.2}")
            },
        );
    }
}

fn main() {
    // `cargo bench` passes --bench; our own arguments are method filters.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let deploys: usize = std::env::var("ZDEPLOY_BENCH_DEPLOYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let interval = Duration::from_millis(
        std::env::var("ZDEPLOY_BENCH_INTERVAL_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1500),
    );
    let methods = [
        Method::ZdeployNginx,
        Method::ZdeployApache,
        Method::RsyncInPlace,
        Method::DeleteAndReplace,
        Method::SymlinkDocumentRoot,
    ];
    let wanted =
        |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    if methods.iter().any(|m| wanted(m.name())) {
        println!(
            "{deploys} deploys per method, one every {} ms, under {READERS} clients on {PHP_WORKERS} PHP-FPM workers (page: 15 ms of PHP, 2 includes, 1 data file)\n",
            interval.as_millis()
        );
        println!(
            "| method | deploys | requests | failed | torn | stale | p50 idle ms | p50 deploying ms | p99 idle ms | p99 deploying ms |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|");
    }
    for method in methods {
        if !wanted(method.name()) {
            continue;
        }
        let row = run(method, deploys, interval);
        println!(
            "| {} | {} | {} | {} ({}) | {} ({}) | {} ({}) | {} | {} | {} | {} |",
            row.method.name(),
            row.deploys,
            row.requests,
            row.failed,
            percent(row.failed, row.requests),
            row.torn,
            percent(row.torn, row.requests),
            row.stale,
            percent(row.stale, row.requests),
            ms(row.idle.0),
            ms(row.during.0),
            ms(row.idle.1),
            ms(row.during.1),
        );
    }
    if wanted("maintenance windows") {
        let window_deploys = std::env::var("ZDEPLOY_BENCH_WINDOW_DEPLOYS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10);
        windows_table(window_deploys);
    }
    if wanted("watch") {
        watch::table();
    }
}
