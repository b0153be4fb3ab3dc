//! Apps served from a folder of the release (`public = "public"`, as
//! Laravel, Symfony and most PHP frameworks are), with `…/index.php/Page`
//! URLs (PATH_INFO), through the configs `zdeploy webserver nginx|apache|caddy`
//! prints, under load.

use std::path::Path;

use crate::support::load::{SAVE_PHP, Shape, deploy_under_load};
use crate::support::servers::{Apache, Caddy, Nginx, PhpFpm, free_port, request};
use crate::support::{Site, Zdeploy};

/// A framework-shaped app: only `public/` is served; the page's code and
/// data live beside it, out of reach of HTTP. Requested as
/// `/index.php/Main_Page`, the page insists on being handed that PATH_INFO.
fn public_php_app(root: &Path, version: &str) {
    let _ = std::fs::remove_dir_all(root);
    for dir in ["public/saves", "app"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::write(root.join("public/saves/.keep"), "").unwrap();
    std::fs::write(root.join("public/.env"), "SECRET=1\n").unwrap();
    std::fs::write(
        root.join("public/index.php"),
        format!(
            "<?php\nusleep(15000);\n\
             $uri = parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH);\n\
             $expected = str_starts_with($uri, '/index.php/') ? substr($uri, strlen('/index.php')) : '';\n\
             $given = $_SERVER['PATH_INFO'] ?? '';\n\
             if ($given !== $expected) {{ http_response_code(500); echo \"PATH_INFO '$given' for $uri\"; exit; }}\n\
             require __DIR__ . '/../app/a_{version}.php';\n\
             require __DIR__ . '/../app/b_{version}.php';\n\
             $data = trim(file_get_contents(__DIR__ . '/../data_{version}.txt'));\n\
             echo \"page={version} a=$a b=$b data=$data\";\n"
        ),
    )
    .unwrap();
    for part in ["a", "b"] {
        std::fs::write(
            root.join(format!("app/{part}_{version}.php")),
            format!("<?php ${part} = '{version}';\n"),
        )
        .unwrap();
    }
    std::fs::write(
        root.join(format!("data_{version}.txt")),
        format!("{version}\n"),
    )
    .unwrap();
    std::fs::write(root.join("public/save.php"), SAVE_PHP).unwrap();
}

fn shape(app: &Path) -> Shape<'_> {
    Shape {
        app,
        write: public_php_app,
        path: "/index.php/Main_Page",
        saves: "public/saves",
    }
}

/// A site with the public app's v0 live (deployed with `--public public`),
/// PHP-FPM, and the config `zdeploy webserver SERVER` prints for it.
struct Served {
    site: Site,
    app: std::path::PathBuf,
    fpm: PhpFpm,
    port: u16,
}

impl Served {
    fn new() -> Self {
        let site = Site::new();
        // Apache's and Caddy's children may run as another user.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(site.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let app = site.path("app");
        public_php_app(&app, "v0");
        site.deploy(&app).args(["--public", "public"]).success();
        let fpm = PhpFpm::start(&site.path("fpm"), 4);
        Served {
            site,
            app,
            fpm,
            port: free_port(),
        }
    }

    fn config(&self, server: &str) -> String {
        let listen = format!("127.0.0.1:{}", self.port);
        Zdeploy::new()
            .args(["webserver", server, "--public", "public", "--webroot"])
            .arg(&self.site.webroot)
            .args(["--listen", &listen, "--php-fpm"])
            .arg(&self.fpm.socket)
            .success()
            .stdout
    }

    /// What every server must do with this app: serve `public/` only,
    /// hand PHP the PATH_INFO, answer missing scripts and dot-paths itself,
    /// and pass `zdeploy doctor`.
    fn assert_serves_public_only(&self, server: &str) {
        let get = |path: &str| request(self.port, "GET", path).unwrap();
        let live = self.site.read("data_v0.txt");
        assert_eq!(live.trim(), "v0");
        assert_eq!(
            get("/index.php/Main_Page"),
            (200, "page=v0 a=v0 b=v0 data=v0".into()),
            "{server}: PATH_INFO reaches PHP"
        );
        assert_eq!(
            get("/"),
            (200, "page=v0 a=v0 b=v0 data=v0".into()),
            "{server}: the index"
        );
        let (status, body) = get("/missing.php");
        assert_eq!(status, 404, "{server}: a missing script: {body}");
        assert!(
            !body.contains("File not found") && !body.contains("Primary script unknown"),
            "{server}: a missing script never reaches PHP-FPM: {body}"
        );
        for outside in ["/app/a_v0.php", "/data_v0.txt", "/public/index.php"] {
            let (status, body) = get(outside);
            assert!(
                status == 404 || (status == 200 && body.starts_with("page=v0")),
                "{server}: {outside} is outside public/ and not served: {status} {body}"
            );
            assert!(!body.contains("$a ="), "{server}: {outside} leaked source");
        }
        let (status, body) = get("/.env");
        assert!(
            matches!(status, 403 | 404),
            "{server}: dot-files are not served: {status} {body}"
        );
        let doctor = Zdeploy::new()
            .args(["doctor", "--public", "public", "--webroot"])
            .arg(&self.site.webroot)
            .args(["--url", &format!("http://127.0.0.1:{}", self.port)])
            .run();
        assert!(
            doctor.code == Some(0),
            "{server}: doctor passes: {}{}",
            doctor.stdout,
            doctor.stderr
        );
        assert!(
            doctor.stdout.contains("PHP is handed the release path"),
            "{}",
            doctor.stdout
        );
    }

    fn under_load(&self, server: &str) {
        // The serving tests run 100 deploys per web server; with a public
        // folder, 40 show the same for its paths at less of the suite's time.
        deploy_under_load(
            &self.site,
            &shape(&self.app),
            self.port,
            40,
            &["--public".into(), "public".into()],
        )
        .assert_zero_downtime(server);
    }
}

#[test]
fn nginx_serves_a_public_folder_and_path_info_whole_through_deploys_and_rollbacks() {
    let served = Served::new();
    let config = served.config("nginx");
    assert!(config.contains("fastcgi_split_path_info"), "{config}");
    let _nginx = Nginx::start(&served.site.path("nginx"), &config, served.port);
    served.assert_serves_public_only("nginx");
    served.under_load("nginx");
}

#[test]
fn apache_serves_a_public_folder_and_path_info_whole_through_deploys_and_rollbacks() {
    let served = Served::new();
    let config = served.config("apache");
    let _apache = Apache::start(&served.site.path("apache"), &config, served.port);
    served.assert_serves_public_only("Apache");
    served.under_load("Apache");
}

#[test]
fn caddy_serves_a_public_folder_whole_through_deploys_and_rollbacks() {
    let served = Served::new();
    let config = served.config("caddy");
    assert!(config.contains("resolve_root_symlink"), "{config}");
    let _caddy = Caddy::start(&served.site.path("caddy"), &config, served.port);
    served.assert_serves_public_only("Caddy");
    served.under_load("Caddy");
}

#[test]
fn a_release_without_its_public_folder_is_refused_before_the_switch() {
    let site = Site::new();
    let app = site.path("app");
    public_php_app(&app, "v0");
    site.deploy(&app).args(["--public", "public"]).success();
    let before = site.snapshot();

    // The new version forgot public/ (moved to web/): nothing switches.
    public_php_app(&app, "v1");
    std::fs::rename(app.join("public"), app.join("web")).unwrap();
    let failed = site.deploy(&app).args(["--public", "public"]).fails_with(4);
    assert!(
        failed.stderr.contains("has no public/ folder")
            && failed.stderr.contains("public = \"public\""),
        "{}",
        failed.stderr
    );
    assert_eq!(
        site.snapshot(),
        before,
        "the live release and the webroot are untouched"
    );

    // A public folder that a build step points out of the release is
    // refused too (a source's own symlinks out are refused on reading).
    std::fs::remove_dir_all(app.join("web")).unwrap();
    public_php_app(&app, "v1");
    std::fs::remove_dir_all(app.join("public")).unwrap();
    let elsewhere = site.path("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("index.php"), "<?php echo 'not deployed';").unwrap();
    let failed = site
        .deploy(&app)
        .args(["--public", "public", "--build"])
        .arg(format!("ln -s {} public", elsewhere.display()))
        .fails_with(4);
    assert!(
        failed.stderr.contains("leads out of the release"),
        "{}",
        failed.stderr
    );
    assert_eq!(site.snapshot(), before);

    // A public file rather than a folder.
    std::fs::write(app.join("public"), "a file").unwrap();
    let failed = site.deploy(&app).args(["--public", "public"]).fails_with(4);
    assert!(
        failed.stderr.contains("is not a folder"),
        "{}",
        failed.stderr
    );
    assert_eq!(site.snapshot(), before);

    // A symlink inside the release is fine: web/ serves what public/ names.
    std::fs::remove_file(app.join("public")).unwrap();
    public_php_app(&app, "v2");
    std::fs::rename(app.join("public"), app.join("web")).unwrap();
    std::os::unix::fs::symlink("web", app.join("public")).unwrap();
    site.deploy(&app).args(["--public", "public"]).success();
    assert_eq!(site.read("public/save.php").lines().next(), Some("<?php"));
}

#[test]
fn a_rollback_to_a_release_without_the_public_folder_is_refused() {
    let site = Site::new();
    let app = site.path("app");
    // v0 served its top folder; v1 moved to public/.
    crate::support::load::php_app(&app, "v0");
    site.deploy(&app).success();
    let first = site.live_release();
    public_php_app(&app, "v1");
    site.deploy(&app).args(["--public", "public"]).success();
    let live = site.live_release();
    let before = site.snapshot();
    let failed = site
        .zdeploy("rollback")
        .args(["--public", "public", &first])
        .fails_with(4);
    assert!(
        failed
            .stderr
            .contains(&format!("release {first} has no public/ folder")),
        "{}",
        failed.stderr
    );
    assert_eq!(site.live_release(), live);
    assert_eq!(site.snapshot(), before);
}

#[test]
fn a_public_folder_outside_the_release_is_refused_in_config_and_flags() {
    let site = Site::new();
    let app = site.path("app");
    public_php_app(&app, "v0");
    for bad in ["../public", "/var/www", "", "public/../.."] {
        let failed = site.deploy(&app).args(["--public", bad]).fails_with(2);
        assert!(
            failed.stderr.contains("--public: invalid public folder"),
            "{bad}: {}",
            failed.stderr
        );
    }
    let failed = site
        .deploy_by_config(&app, "public = \"../../etc\"")
        .fails_with(2);
    assert!(
        failed
            .stderr
            .contains("zdeploy.toml:4: apps.a.public: invalid public folder '../../etc'"),
        "{}",
        failed.stderr
    );
    assert!(site.live().is_none(), "nothing was deployed");
    // `public/` with a trailing slash means public.
    site.deploy_by_config(&app, "public = \"public/\"")
        .success();
    assert_eq!(site.read("public/.env"), "SECRET=1\n");
}
