//! A large real app deployed the same way: WordPress from Debian's package,
//! committed into a git repository, served by nginx + PHP-FPM with MariaDB,
//! while uploads are written into wp-content/uploads during the deploys.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::git::Repo;
use crate::support::load::{Load, deploys_and_rollbacks, judge, version_parts};
use crate::support::servers::{
    MariaDb, Nginx, PhpFpm, free_port, post_form, request, zdeploy_nginx_config,
};
use crate::support::{Site, Uploader, assert_all_uploads_kept};

const WORDPRESS: &str = "/usr/share/wordpress";

/// A theme whose front page includes two files and a data file named after
/// `version`, printed in the form the load verdict understands.
fn theme(repo: &Repo, version: &str) {
    let dir = repo.work.join("wp-content/themes/zdeploy-test");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("style.css"), "/*\nTheme Name: zdeploy test\n*/\n").unwrap();
    std::fs::write(
        dir.join("index.php"),
        format!(
            "<?php\nrequire __DIR__ . '/a_{version}.php';\nrequire __DIR__ . '/b_{version}.php';\n\
             $data = trim(file_get_contents(__DIR__ . '/data_{version}.txt'));\n\
             echo \"page={version} a=$a b=$b data=$data\";\n"
        ),
    )
    .unwrap();
    version_parts(&dir, &dir, version);
}

fn wp_config(socket: &Path, port: u16) -> String {
    let keys: String = [
        "AUTH_KEY",
        "SECURE_AUTH_KEY",
        "LOGGED_IN_KEY",
        "NONCE_KEY",
        "AUTH_SALT",
        "SECURE_AUTH_SALT",
        "LOGGED_IN_SALT",
        "NONCE_SALT",
    ]
    .iter()
    .map(|k| format!("define('{k}', 'test-{k}');\n"))
    .collect();
    format!(
        "<?php\ndefine('DB_NAME', 'wp');\ndefine('DB_USER', 'wp');\ndefine('DB_PASSWORD', 'wp');\n\
         define('DB_HOST', 'localhost:{}');\ndefine('DB_CHARSET', 'utf8mb4');\ndefine('DB_COLLATE', '');\n{keys}\
         define('WP_DEFAULT_THEME', 'zdeploy-test');\ndefine('WP_HOME', 'http://127.0.0.1:{port}');\n\
         define('WP_SITEURL', 'http://127.0.0.1:{port}');\ndefine('DISABLE_WP_CRON', true);\n\
         define('AUTOMATIC_UPDATER_DISABLED', true);\n$table_prefix = 'wp_';\n\
         if (!defined('ABSPATH')) define('ABSPATH', __DIR__ . '/');\nrequire_once ABSPATH . 'wp-settings.php';\n",
        socket.display()
    )
}

#[test]
fn wordpress_deploys_from_git_under_load_keeping_uploads() {
    let site = Site::new();
    let repo = Repo::new(site.dir.path(), "wordpress");
    // Debian links some libraries from elsewhere: copy them in.
    let status = Command::new("cp")
        .arg("-rL")
        .arg(format!("{WORDPRESS}/."))
        .arg(&repo.work)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "copy {WORDPRESS} (install the wordpress package)"
    );
    let db = MariaDb::start(&site.path("mariadb"));
    let port = free_port();
    std::fs::write(repo.work.join("wp-config.php"), wp_config(&db.socket, port)).unwrap();
    std::fs::create_dir_all(repo.work.join("wp-content/mu-plugins")).unwrap();
    // The load asks for "/" by IP and port; WordPress's canonical redirect
    // would answer 301 instead of the page.
    std::fs::write(
        repo.work
            .join("wp-content/mu-plugins/no-canonical-redirect.php"),
        "<?php remove_action('template_redirect', 'redirect_canonical');\n",
    )
    .unwrap();
    std::fs::create_dir_all(repo.work.join("wp-content/uploads")).unwrap();
    std::fs::write(repo.work.join("wp-content/uploads/.gitkeep"), "").unwrap();
    theme(&repo, "v0");
    repo.commit("WordPress from Debian's package");
    site.deploy(repo.url()).success();
    let files = crate::support::tree(&site.context(), &[]).len();
    assert!(files > 1000, "a large app: {files} entries");

    let fpm = PhpFpm::start(&site.path("fpm"), 4);
    let config = zdeploy_nginx_config(&site, &fpm, port);
    let nginx = Nginx::start(&site.path("nginx"), &config, port);
    let form = "weblog_title=zdeploy&user_name=admin&admin_password=Correct-Horse-9&admin_password2=Correct-Horse-9&pw_weak=1&admin_email=admin%40example.com&blog_public=0";
    let (status, body) = post_form(nginx.port, "/wp-admin/install.php?step=2", form).unwrap();
    assert_eq!(
        status,
        200,
        "{}",
        body.chars().take(500).collect::<String>()
    );
    assert!(
        body.contains("Success"),
        "WordPress installed: {}",
        body.chars().take(500).collect::<String>()
    );
    assert_eq!(
        request(nginx.port, "GET", "/").unwrap(),
        (200, "page=v0 a=v0 b=v0 data=v0".to_string())
    );

    let uploads = site.context().join("wp-content/uploads");
    let uploader = Uploader::start(uploads.clone(), Duration::from_millis(100), 1_000);
    let load = Load::start(nginx.port, 6, false);
    let ops = deploys_and_rollbacks(
        20,
        |version| {
            theme(&repo, version);
            repo.commit(version);
            site.zdeploy("deploy")
                // Deploys take well under a second now: a drain of 1 s let a
                // release be pruned under a WordPress request still running
                // on it when the machine was busy.
                .args(["--keep", "2", "--drain", "10s", "--settle", "200ms", "-q"])
                .arg(repo.url())
                .success();
        },
        || {
            site.zdeploy("rollback")
                .args(["--settle", "200ms", "-q"])
                .success();
        },
    );
    std::thread::sleep(Duration::from_millis(300));
    let (samples, _, _) = load.finish();
    let written = uploader.finish();
    let verdict = judge(&samples, &ops, "v0");
    eprintln!(
        "wordpress: {} requests, {} failed, {} torn, {} stale, {} uploads",
        samples.len(),
        verdict.failed.len(),
        verdict.torn.len(),
        verdict.stale.len(),
        written.len()
    );
    assert!(
        verdict.failed.is_empty(),
        "{:?}",
        &verdict.failed[..verdict.failed.len().min(5)]
    );
    assert!(samples.len() > 100, "the load ran throughout");
    assert!(
        verdict.torn.is_empty(),
        "{:?}",
        &verdict.torn[..verdict.torn.len().min(5)]
    );
    assert!(
        verdict.stale.is_empty(),
        "{:?}",
        &verdict.stale[..verdict.stale.len().min(5)]
    );
    assert_all_uploads_kept(&uploads, &written, 50);
    let (status, _) = request(nginx.port, "GET", "/wp-login.php").unwrap();
    assert_eq!(status, 200, "WordPress itself still works");
}
