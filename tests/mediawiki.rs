//! MediaWiki as a user deploys it: Debian's package copied as a folder
//! source, `preset = "mediawiki"`, installed by its own
//! `maintenance/install.php` on SQLite (it writes LocalSettings.php through
//! the preset's link into the shared folder), served by nginx + PHP-FPM from
//! `zdeploy webserver nginx`. Under load, 12 deploys and 2 rollbacks run
//! while a user edits pages and uploads images through its API; every
//! request is whole and every acknowledged save is still there.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::load::{Load, assert_whole, deploys_and_rollbacks, judge, version_parts};
use crate::support::servers::{Nginx, PhpFpm, free_port, request, zdeploy_nginx_config};
use crate::support::{Site, Zdeploy};

const MEDIAWIKI: &str = "/usr/share/mediawiki";
/// Deploys under load (a rollback after every fifth): each one copies and
/// updates a 23,500-file release, so a dozen keep the suite's time in bounds.
const DEPLOYS: usize = 12;
/// Debian's links to its own /var/lib and /etc copies, not part of the app.
const PACKAGE_LINKS: [&str; 4] = ["extensions", "config", "images", "LocalSettings.php"];
const ADMIN: &str = "Admin";
const PASSWORD: &str = "Correct-Horse-Battery-9";
const CLIENT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/support/mediawiki_client.py"
);

/// A probe in the release, loaded by LocalSettings.php: with `?probe`, the
/// page MediaWiki routed to (from PATH_INFO) answers with two PHP files
/// and a data file of `version`, in the form the load verdict reads.
fn probe(source: &Path, version: &str) {
    let dir = source.join("zdeploy");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        source.join("zdeploy-probe.php"),
        format!(
            "<?php\n$wgHooks['BeforeInitialize'][] = function ($title, $unused, $output, $user, $request) {{\n\
             \x20   if ($request->getVal('probe') === null) {{ return; }}\n\
             \x20   require __DIR__ . '/zdeploy/a_{version}.php';\n\
             \x20   require __DIR__ . '/zdeploy/b_{version}.php';\n\
             \x20   $data = trim(file_get_contents(__DIR__ . '/zdeploy/data_{version}.txt'));\n\
             \x20   $routed = $title->getPrefixedDBkey();\n\
             \x20   $page = $routed === 'Main_Page' ? '{version}' : \"routed-to-$routed\";\n\
             \x20   header('Content-Type: text/plain');\n\
             \x20   echo \"page=$page a=$a b=$b data=$data\";\n\
             \x20   exit;\n}};\n"
        ),
    )
    .unwrap();
    version_parts(&dir, &dir, version);
}

/// Debian's MediaWiki as an app folder: hard links to the package's files
/// where the filesystem allows (nothing writes them), its links left out.
fn mediawiki_source(site: &Site) -> std::path::PathBuf {
    let source = site.path("mediawiki");
    let copied = |flags: &str| {
        Command::new("cp")
            .arg(flags)
            .arg(format!("{MEDIAWIKI}/."))
            .arg(&source)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !copied("-al") {
        let _ = std::fs::remove_dir_all(&source);
        assert!(
            copied("-a"),
            "copy {MEDIAWIKI} (scripts/test.sh installs the mediawiki package)"
        );
    }
    for link in PACKAGE_LINKS {
        std::fs::remove_file(source.join(link)).unwrap();
    }
    std::fs::create_dir(source.join("extensions")).unwrap();
    source
}

fn inode(path: &Path) -> u64 {
    std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path).unwrap())
}

#[test]
fn mediawiki_keeps_its_pages_and_uploads_through_deploys_under_load() {
    let site = Site::new();
    let source = mediawiki_source(&site);
    probe(&source, "v0");
    let config = site.path("zdeploy.toml");
    std::fs::write(
        &config,
        format!(
            "[apps.wiki]\npreset = \"mediawiki\"\nwebroot = \"{}\"\nsource = \"{}\"\n\
             keep = 2\ndrain = \"10s\"\nsettle = \"200ms\"\nallow_root_build = true\n",
            site.webroot.display(),
            source.display()
        ),
    )
    .unwrap();
    let deploy = || {
        Zdeploy::new()
            .args(["deploy", "-v", "--config"])
            .arg(&config)
            .success()
            .stderr
    };
    let log = deploy();
    assert!(
        log.contains(
            "skipped php maintenance/update.php --quick (the release has no LocalSettings.php)"
        ),
        "{log}"
    );

    // Its own installer, in the live release, writes LocalSettings.php
    // through the link into the shared folder.
    let port = free_port();
    let data = site.path("wiki-data");
    let out = Command::new("php")
        .args(["maintenance/install.php", "--dbtype", "sqlite", "--dbpath"])
        .arg(&data)
        .args(["--dbname", "wiki", "--server"])
        .arg(format!("http://127.0.0.1:{port}"))
        .args(["--scriptpath", "", "--lang", "en", "--pass", PASSWORD])
        .args(["zdeploy wiki", ADMIN])
        .current_dir(site.context())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "install.php: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let settings = site.webroot.join(".zdeploy/ROOT/shared/LocalSettings.php");
    let mut text = std::fs::read_to_string(&settings).expect("written into the shared folder");
    text += "$wgEnableUploads = true;\n$wgArticlePath = \"/index.php/$1\";\n\
             $wgUsePathInfo = true;\nrequire_once \"$IP/zdeploy-probe.php\";\n";
    std::fs::write(&settings, text).unwrap();

    // The first update after the install migrates the schema; SQLite
    // refuses concurrent writers meanwhile, so it runs before the users come.
    probe(&source, "v0-updated");
    let log = deploy();
    assert!(
        log.contains("build: running php maintenance/update.php --quick (writes cache)"),
        "{log}"
    );
    probe(&source, "v0");
    deploy();

    let fpm = PhpFpm::start(&site.path("fpm"), 4);
    let nginx = Nginx::start(
        &site.path("nginx"),
        &zdeploy_nginx_config(&site, &fpm, port),
        port,
    );
    let probe_path = "/index.php/Main_Page?probe=1";
    assert_eq!(
        request(port, "GET", probe_path).unwrap(),
        (200, "page=v0 a=v0 b=v0 data=v0".to_string())
    );
    let (status, page) = request(port, "GET", "/index.php/Main_Page").unwrap();
    assert!(
        status == 200 && page.contains("MediaWiki has been installed"),
        "{status}: {}",
        page.chars().take(500).collect::<String>()
    );

    // A user saving pages and images through the API, and readers.
    let stop = site.path("stop-client");
    let mut client = Command::new("python3")
        .args([
            CLIENT,
            "write",
            &port.to_string(),
            ADMIN,
            PASSWORD,
            "400",
            "150",
        ])
        .arg(&stop)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let client_out = client.stdout.take().unwrap();
    let acknowledged = std::thread::spawn(move || {
        BufReader::new(client_out)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });
    let load = Load::start_at(port, probe_path, 2, false);
    let previous = std::cell::RefCell::new(site.webroot.join(site.live_release()));
    let linked_deploys = std::cell::Cell::new(0);
    let started = std::time::Instant::now();
    let ops = deploys_and_rollbacks(
        DEPLOYS,
        |version| {
            probe(&source, version);
            let log = deploy();
            assert!(
                log.contains("build: running php maintenance/update.php --quick (writes cache)"),
                "{log}"
            );
            // The updater said what it writes: MediaWiki's code stays hard
            // links to the live release's.
            let live = site.webroot.join(site.live_release());
            let file = "includes/MediaWiki.php";
            if inode(&live.join(file)) == inode(&previous.borrow().join(file)) {
                linked_deploys.set(linked_deploys.get() + 1);
            }
            *previous.borrow_mut() = live;
        },
        || {
            Zdeploy::new()
                .args(["rollback", "-q", "--config"])
                .arg(&config)
                .success();
            *previous.borrow_mut() = site.webroot.join(site.live_release());
        },
    );
    eprintln!("mediawiki: deploys took {:?}", started.elapsed());
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (samples, _, _) = load.finish();
    std::fs::write(&stop, "").unwrap();
    assert!(client.wait().unwrap().success());
    let lines = acknowledged.join().unwrap();
    let errors: Vec<&String> = lines.iter().filter(|l| l.starts_with("error")).collect();
    let saves: Vec<&String> = lines.iter().filter(|l| !l.starts_with("error")).collect();

    let verdict = judge(&samples, &ops, "v0");
    eprintln!(
        "mediawiki: {} requests, {} failed, {} torn, {} stale; {} saves acknowledged, {} refused",
        samples.len(),
        verdict.failed.len(),
        verdict.torn.len(),
        verdict.stale.len(),
        saves.len(),
        errors.len()
    );
    assert_whole(&verdict, samples.len());
    assert!(errors.is_empty(), "the API refused saves: {errors:?}");
    assert!(
        saves.iter().filter(|l| l.starts_with("file")).count() > 20,
        "images were uploaded throughout: {}",
        saves.len()
    );
    assert_eq!(
        linked_deploys.get(),
        DEPLOYS,
        "every deploy shared MediaWiki's files"
    );

    // Every acknowledged page and image is still there, served.
    let ack_file = site.path("acknowledged");
    let ack_text: String = saves.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&ack_file, ack_text).unwrap();
    let verifying = std::time::Instant::now();
    let out = Command::new("python3")
        .args([CLIENT, "verify", &port.to_string()])
        .arg(&ack_file)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !report.contains("missing"),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("verified"), "{report}");
    eprintln!("mediawiki: {report} in {:?}", verifying.elapsed());
    drop(nginx);
}
