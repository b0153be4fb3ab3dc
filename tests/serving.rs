//! Zero downtime under load, measured against real nginx and PHP-FPM serving
//! the config `zdeploy webserver nginx` writes.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::load::{Shape, deploy_under_load, php_app};
use crate::support::servers::{
    Apache, Nginx, PhpFpm, free_port, post_form, request, zdeploy_nginx_config,
};
use crate::support::{Site, Zdeploy};

#[test]
fn nginx_and_php_fpm_serve_every_request_whole_through_deploys_and_rollbacks() {
    let site = Site::new();
    let app = site.path("app");
    php_app(&app, "v0");
    site.deploy(&app).success();
    let fpm = PhpFpm::start(&site.path("fpm"), 4);
    let port = free_port();
    let config = zdeploy_nginx_config(&site, &fpm, port);
    assert!(
        config.contains("$realpath_root$fastcgi_script_name"),
        "{config}"
    );
    let nginx = Nginx::start(&site.path("nginx"), &config, port);
    assert_eq!(
        request(nginx.port, "GET", "/").unwrap(),
        (200, "page=v0 a=v0 b=v0 data=v0".to_string())
    );
    deploy_under_load(&site, &Shape::plain(&app), nginx.port, 100, &[])
        .assert_zero_downtime("nginx");
}

#[test]
fn apache_and_php_fpm_serve_every_request_whole_through_deploys_and_rollbacks() {
    let site = Site::new();
    // Apache's children run as www-data and must reach the webroot.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(site.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let app = site.path("app");
    php_app(&app, "v0");
    site.deploy(&app).success();
    let fpm = PhpFpm::start(&site.path("fpm"), 4);
    let port = free_port();
    // As a new user would: print the vhost (which writes the map for the
    // live release), start Apache with it, then deploy with no extra flags.
    let config = Zdeploy::new()
        .args(["webserver", "apache", "--webroot"])
        .arg(&site.webroot)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--php-fpm"])
        .arg(&fpm.socket)
        .success()
        .stdout;
    let map = site.webroot.join(".zdeploy/ROOT/apache.map");
    assert!(
        config.contains(&format!("txt:{}", map.display())),
        "{config}"
    );
    let apache = Apache::start(&site.path("apache"), &config, port);
    assert_eq!(
        request(apache.port, "GET", "/").unwrap(),
        (200, "page=v0 a=v0 b=v0 data=v0".to_string())
    );
    deploy_under_load(&site, &Shape::plain(&app), apache.port, 100, &[])
        .assert_zero_downtime("Apache");
    let map_text = std::fs::read_to_string(&map).unwrap();
    assert!(
        map_text.contains(&format!("ROOT {}\n", site.live_release())),
        "the map names the live release: {map_text}"
    );
}

#[test]
fn webserver_refuses_values_nginx_would_misread() {
    let site = Site::new();
    for (flag, value) in [
        ("--listen", "80; include /etc/passwd"),
        ("--server-name", "a$b"),
        ("--php-fpm", "/run/x.sock;"),
    ] {
        let out = Zdeploy::new()
            .args(["webserver", "nginx", "--webroot"])
            .arg(&site.webroot)
            .args([flag, value])
            .fails_with(2);
        assert!(
            out.stderr.contains("nginx would misread"),
            "{flag}: {}",
            out.stderr
        );
    }
    let odd = site.path("web$root");
    std::fs::create_dir(&odd).unwrap();
    let out = Zdeploy::new()
        .args(["webserver", "nginx", "--webroot"])
        .arg(&odd)
        .fails_with(2);
    assert!(out.stderr.contains("webroot"), "{}", out.stderr);
}

/// The bundled example, served for real: a high score saved through the game's
/// API survives a deploy that adds a level.
#[test]
fn the_bubble_shooter_example_keeps_its_high_scores_across_deploys() {
    let site = Site::new();
    let app = site.path("bubble-shooter");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/bubble-shooter");
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(&example)
        .arg(&app)
        .status()
        .unwrap();
    assert!(status.success());
    site.deploy(&app).success();

    let fpm = PhpFpm::start(&site.path("fpm"), 2);
    let port = free_port();
    let config = zdeploy_nginx_config(&site, &fpm, port);
    let nginx = Nginx::start(&site.path("nginx"), &config, port);
    let (status, page) = request(nginx.port, "GET", "/").unwrap();
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("01-meadow") && !page.contains("04-glacier"),
        "{page}"
    );
    let (status, body) = request(nginx.port, "POST", "/api/scores.php?x=1").unwrap();
    assert_eq!(status, 400, "a score without a name is refused: {body}");
    let (status, saved) = post_form(
        nginx.port,
        "/api/scores.php",
        "name=Alice&score=4200&level=01-meadow",
    )
    .unwrap();
    assert_eq!(status, 201, "{saved}");
    assert!(saved.contains("\"Alice\""), "{saved}");

    std::fs::write(
        app.join("levels/04-glacier.json"),
        r#"{"name": "Glacier", "rows": ["BBBB"]}"#,
    )
    .unwrap();
    site.deploy(&app).success();
    let (_, page) = request(nginx.port, "GET", "/").unwrap();
    assert!(
        page.contains("04-glacier"),
        "the new level is served: {page}"
    );
    let (status, scores) = request(nginx.port, "GET", "/api/scores.php").unwrap();
    assert_eq!(status, 200);
    assert!(
        scores.contains("\"Alice\"") && scores.contains("4200"),
        "{scores}"
    );
    let (status, _) = request(nginx.port, "GET", "/.zdeploy/ROOT/history.sqlite").unwrap();
    assert!(
        matches!(status, 403 | 404),
        "the state dir is never served: {status}"
    );
}

#[test]
fn opcache_is_reset_over_fastcgi_after_a_switch() {
    let site = Site::new();
    let app = site.path("app");
    let status_page = "<?php\n$s = opcache_get_status(false);\necho json_encode(['enabled' => $s !== false && $s['opcache_enabled'], 'manual_restarts' => $s ? $s['opcache_statistics']['manual_restarts'] : -1]);\n";
    crate::support::write_files(
        &app,
        &[
            ("index.php", "<?php echo 'v1';"),
            ("status.php", status_page),
        ],
    );
    site.deploy(&app).success();
    let fpm = PhpFpm::start(&site.path("fpm"), 2);
    let port = free_port();
    let config = zdeploy_nginx_config(&site, &fpm, port);
    let nginx = Nginx::start(&site.path("nginx"), &config, port);
    let restarts = || -> i64 {
        let (status, body) = request(nginx.port, "GET", "/status.php").unwrap();
        assert_eq!(status, 200, "{body}");
        let value: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|_| panic!("{body}"));
        assert_eq!(value["enabled"], true, "php-fpm runs with opcache: {body}");
        value["manual_restarts"].as_i64().unwrap()
    };
    let before = restarts();
    crate::support::write_files(&app, &[("index.php", "<?php echo 'v1b';")]);
    site.deploy(&app).success();
    assert_eq!(
        restarts(),
        before,
        "without --opcache-reset nothing resets it"
    );
    crate::support::write_files(&app, &[("index.php", "<?php echo 'v2';")]);
    let out = site
        .deploy(&app)
        .arg("--opcache-reset")
        .arg(&fpm.socket)
        .success();
    assert!(
        out.stderr.contains("reset PHP-FPM's opcache"),
        "{}",
        out.stderr
    );
    // The reset takes effect when no script runs; a request or two later.
    let deadline = Instant::now() + Duration::from_secs(10);
    while restarts() <= before {
        assert!(
            Instant::now() < deadline,
            "opcache statistics never showed the reset"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        std::fs::read_dir(site.webroot.join(".zdeploy/ROOT"))
            .unwrap()
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().starts_with("opcache-reset")),
        "the throwaway script is removed"
    );

    // An unreachable PHP-FPM is reported, never fatal to a switched deploy.
    crate::support::write_files(&app, &[("index.php", "<?php echo 'v3';")]);
    let out = site
        .deploy(&app)
        .args(["--opcache-reset", "127.0.0.1:1"])
        .success();
    assert!(
        out.stderr.contains("cannot reach PHP-FPM at 127.0.0.1:1"),
        "{}",
        out.stderr
    );
    assert_eq!(
        request(nginx.port, "GET", "/").unwrap(),
        (200, "v3".to_string())
    );
}

/// Start nginx for `site` from `zdeploy webserver nginx`, edited by `edit`.
fn nginx_for(site: &Site, fpm: &PhpFpm, edit: impl Fn(String) -> String) -> Nginx {
    let port = free_port();
    let config = zdeploy_nginx_config(site, fpm, port);
    Nginx::start(&site.path(&format!("nginx-{port}")), &edit(config), port)
}

fn doctor(site: &Site, nginx: &Nginx, drain: &str) -> crate::support::Output {
    site.zdeploy("doctor")
        .args([
            "--url",
            &format!("http://127.0.0.1:{}/", nginx.port),
            "--drain",
            drain,
        ])
        .run()
}

#[test]
fn doctor_passes_the_generated_config_and_names_what_breaks_zero_downtime() {
    let site = Site::new();
    let app = site.path("app");
    php_app(&app, "v1");
    site.deploy(&app).success();
    let fpm = PhpFpm::start(&site.path("fpm"), 2);

    let good = nginx_for(&site, &fpm, |c| c);
    let out = doctor(&site, &good, "60s");
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("ok      [php-path] PHP is handed the release path"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("[exposure] old releases and the state dir are not served"),
        "{}",
        out.stdout
    );
    let probes = std::fs::read_dir(site.context())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("zdeploy-probe"))
        .count();
    assert_eq!(probes, 0, "the probe is removed");

    let out = doctor(&site, &good, "5s");
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    assert!(
        out.stdout.contains("PROBLEM [drain]") && out.stdout.contains("max_execution_time"),
        "{}",
        out.stdout
    );

    let usual = nginx_for(&site, &fpm, |c| {
        c.replace("$realpath_root", "$document_root")
    });
    let out = doctor(&site, &usual, "60s");
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("PROBLEM [php-path] PHP is handed the symlinked path"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("fastcgi_param SCRIPT_FILENAME $realpath_root$fastcgi_script_name"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("PROBLEM [document-root]"),
        "{}",
        out.stdout
    );

    let webroot = site.webroot.display().to_string();
    let exposed = nginx_for(&site, &fpm, |c| {
        c.replace(
            &format!("root \"{webroot}/ROOT\""),
            &format!("root \"{webroot}\""),
        )
    });
    let out = doctor(&site, &exposed, "60s");
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    assert!(out.stdout.contains("PROBLEM [exposure]"), "{}", out.stdout);

    let live = site.live_release();
    std::fs::write(
        site.context().join("config.php"),
        format!("<?php\n$cache = '{webroot}/{live}/cache';\n"),
    )
    .unwrap();
    let out = doctor(&site, &good, "60s");
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    assert!(
        out.stdout.contains("PROBLEM [hard-coded]") && out.stdout.contains("config.php:2"),
        "{}",
        out.stdout
    );
}
