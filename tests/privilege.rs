//! Least privilege: deployed files owned by a configured user and group,
//! only the writable paths writable by the web server's group, build steps
//! run as an unprivileged user (never as root unless allowed), and user
//! files keep their owner when carried.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use crate::support::{Site, tree, write_files};

const NOBODY: u32 = 65534;
const WWW_DATA: u32 = 33;

/// Run `script` with `sh -c` as www-data (no other groups); true on success.
fn as_www_data(script: &str) -> bool {
    std::process::Command::new("setpriv")
        .args([
            "--reuid=33",
            "--regid=33",
            "--clear-groups",
            "sh",
            "-c",
            script,
        ])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// A site the unprivileged users can reach (test folders are 0700).
fn open_site() -> Site {
    let site = Site::new();
    std::fs::set_permissions(site.dir.path(), PermissionsExt::from_mode(0o755)).unwrap();
    site
}

fn app(site: &Site) -> std::path::PathBuf {
    let app = site.path("app");
    write_files(
        &app,
        &[
            ("index.php", "<?php echo 1;"),
            ("lib/a.php", "a"),
            ("data/.keep", ""),
        ],
    );
    app
}

#[test]
fn deployed_files_get_owner_and_group_and_only_writable_paths_are_group_writable() {
    let site = open_site();
    let app = app(&site);
    let flags = [
        "--owner",
        "nobody",
        "--group",
        "www-data",
        "--writable",
        "data",
        "--writable",
        "cache/",
        "--build-user",
        "nobody",
        "--build",
        "id -u > built-by.txt",
    ];
    site.deploy(&app)
        .env_remove("ZDEPLOY_ALLOW_ROOT_BUILD")
        .args(flags)
        .success();
    let root = site.context();
    assert_eq!(site.read("built-by.txt").trim(), NOBODY.to_string());
    for relative in [
        "",
        "index.php",
        "lib",
        "lib/a.php",
        "data",
        "data/.keep",
        "cache",
        "built-by.txt",
    ] {
        let meta = root.join(relative).symlink_metadata().unwrap();
        assert_eq!((meta.uid(), meta.gid()), (NOBODY, WWW_DATA), "{relative}");
    }
    let mode = |relative: &str| root.join(relative).metadata().unwrap().mode() & 0o7777;
    assert_eq!(
        mode("index.php") & 0o020,
        0,
        "deployed files are not group-writable"
    );
    assert_eq!(mode("lib") & 0o020, 0);
    assert_eq!(mode("data"), 0o2775, "writable folders: group rwx + setgid");
    assert_eq!(mode("cache"), 0o2775, "created when missing");
    assert_eq!(mode("data/.keep") & 0o060, 0o060);

    // The web server's user writes where it may, and nowhere else.
    let root_path = root.display();
    assert!(as_www_data(&format!(
        "echo upload > {root_path}/data/upload.txt"
    )));
    assert!(as_www_data(&format!("mkdir {root_path}/cache/2026")));
    assert!(!as_www_data(&format!("echo x > {root_path}/index.php")));
    assert!(!as_www_data(&format!("echo x > {root_path}/new.php")));
    assert!(!as_www_data(&format!("echo x > {root_path}/lib/b.php")));
    site.zdeploy("verify").success();

    // The next deploy carries the uploads with their owner: the app can
    // still change and delete them.
    write_files(&app, &[("index.php", "<?php echo 2;")]);
    site.deploy(&app)
        .env_remove("ZDEPLOY_ALLOW_ROOT_BUILD")
        .args(flags)
        .success();
    let upload = root.join("data/upload.txt").metadata().unwrap();
    assert_eq!((upload.uid(), upload.gid()), (WWW_DATA, WWW_DATA));
    let folder = root.join("cache/2026").metadata().unwrap();
    assert_eq!((folder.uid(), folder.gid()), (WWW_DATA, WWW_DATA));
    assert!(as_www_data(&format!(
        "echo changed > {root_path}/data/upload.txt"
    )));
    assert!(as_www_data(&format!(
        "rm {root_path}/data/upload.txt && rmdir {root_path}/cache/2026"
    )));
    site.zdeploy("verify").success();
}

#[test]
fn build_steps_never_run_as_root_unless_allowed() {
    let site = open_site();
    let app = app(&site);
    let marker = site.path("ran-as-root");
    let build = format!("touch {}", marker.display());
    let out = site
        .deploy(&app)
        .env_remove("ZDEPLOY_ALLOW_ROOT_BUILD")
        .args(["--build", &build])
        .fails_with(2);
    assert!(
        out.stderr.contains("build steps would run as root"),
        "{}",
        out.stderr
    );
    assert!(!marker.exists());
    assert!(site.live().is_none() && site.releases().is_empty());
    // A check before the switch is a command from the config too.
    site.deploy(&app)
        .env_remove("ZDEPLOY_ALLOW_ROOT_BUILD")
        .args(["--health-before", "true"])
        .fails_with(2);

    // Told to, it does: by flag, by config, by environment.
    site.deploy(&app)
        .env_remove("ZDEPLOY_ALLOW_ROOT_BUILD")
        .args(["--build", &build, "--allow-root-build"])
        .success();
    assert!(marker.exists());
    let out = site
        .deploy_by_config(&app, "build = [\"true\"]\nallow_root_build = true")
        .env_remove("ZDEPLOY_ALLOW_ROOT_BUILD")
        .run();
    assert_eq!(out.code, Some(0), "{}", out.stderr);

    // As the build user it cannot write outside the release.
    let outside = site.path("outside");
    let out = site
        .deploy(&app)
        .env_remove("ZDEPLOY_ALLOW_ROOT_BUILD")
        .args(["--force", "--build-user", "nobody", "--build"])
        .arg(format!("touch {}", outside.display()))
        .fails_with(1);
    assert!(out.stderr.contains("Permission denied"), "{}", out.stderr);
    assert!(!outside.exists());

    // Confined to what it writes, it is still the build user, and the
    // folder made for it is its own.
    let out = site
        .deploy_by_config(
            &app,
            "build_user = \"nobody\"\nbuild = [{ run = \"id -un > var/cache/who && mkdir made-here\", writes = [\"var/cache\"] }]",
        )
        .args(["--force", "-v"])
        .env_remove("ZDEPLOY_ALLOW_ROOT_BUILD")
        .fails_with(1);
    assert!(
        out.stderr.contains("(writes var/cache)") && out.stderr.contains("Read-only file system"),
        "{}",
        out.stderr
    );
    let out = site
        .deploy_by_config(
            &app,
            "build_user = \"nobody\"\nbuild = [{ run = \"id -un > var/cache/who\", writes = [\"var/cache\"] }]",
        )
        .arg("--force")
        .env_remove("ZDEPLOY_ALLOW_ROOT_BUILD")
        .run();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(site.read("var/cache/who"), "nobody\n");
}

#[test]
fn bad_privilege_settings_are_refused_before_anything_changes() {
    let site = open_site();
    let app = app(&site);
    let cases: &[(&[&str], &str)] = &[
        (&["--owner", "no-such-user-zd"], "no user 'no-such-user-zd'"),
        (
            &["--group", "no-such-group-zd"],
            "no group 'no-such-group-zd'",
        ),
        (&["--owner=-x"], "not a valid"),
        (&["--build-user", "root"], "is root"),
        (&["--writable", "data"], "set group"),
        (
            &["--group", "www-data", "--writable", "../etc"],
            "without '..'",
        ),
        (
            &["--group", "www-data", "--writable", "/etc"],
            "without '..'",
        ),
    ];
    for (flags, expected) in cases {
        let out = site.deploy(&app).args(*flags).fails_with(2);
        assert!(out.stderr.contains(expected), "{flags:?}: {}", out.stderr);
    }
    let out = site
        .deploy_by_config(&app, "owner = \"no-such-user-zd\"")
        .fails_with(2);
    assert!(
        out.stderr.contains("zdeploy.toml:4: apps.a.owner"),
        "{}",
        out.stderr
    );
    assert!(site.live().is_none() && site.releases().is_empty());
}

#[test]
fn a_writable_path_that_is_a_symlink_in_the_source_is_refused() {
    let site = open_site();
    let app = app(&site);
    std::fs::remove_dir_all(app.join("data")).unwrap();
    // Inside the release, so the source itself is acceptable; made group
    // writable it would open `lib` to the web server.
    std::os::unix::fs::symlink("lib", app.join("data")).unwrap();
    let source = tree(&app, &[]);
    for writable in ["data", "data/sub"] {
        let out = site
            .deploy(&app)
            .args(["--group", "www-data", "--writable", writable])
            .fails_with(1);
        assert!(
            out.stderr.contains("goes through the symlink 'data'"),
            "{}",
            out.stderr
        );
        assert!(site.live().is_none());
        assert!(site.releases().is_empty(), "the partial release is removed");
    }
    assert_eq!(tree(&app, &[]), source, "the source is untouched");
}
