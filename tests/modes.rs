//! The first deploy over a site deployed by other means, plain mode and the
//! conversions between layouts, and build steps.

use crate::support::{Site, Zdeploy, write_files};

#[test]
fn first_deploy_over_an_existing_site_keeps_its_files() {
    let site = Site::new();
    write_files(
        &site.context(),
        &[
            ("index.php", "legacy"),
            ("legacy-only.php", "old code"),
            ("uploads/photo.jpg", "user photo"),
        ],
    );
    let app = site.path("app");
    write_files(&app, &[("index.php", "new")]);
    let out = site.deploy(&app).success();
    assert!(out.stderr.contains("was a real folder"), "{}", out.stderr);
    let live = site.live_release();
    assert_eq!(site.read("index.php"), "new");
    assert_eq!(
        site.read("uploads/photo.jpg"),
        "user photo",
        "user content carried"
    );
    assert_eq!(
        site.read("legacy-only.php"),
        "old code",
        "files the source lacks are kept"
    );
    let releases = site.releases();
    assert_eq!(releases.len(), 2, "{releases:?}");
    let displaced = releases.iter().find(|r| **r != live).unwrap();
    assert!(
        displaced < &live,
        "the old site sorts before the new release"
    );
    assert_eq!(
        std::fs::read_to_string(site.webroot.join(displaced).join("index.php")).unwrap(),
        "legacy"
    );
    // And it can be rolled back to.
    site.zdeploy("rollback").args(["--settle", "0s"]).success();
    assert_eq!(site.read("index.php"), "legacy");
}

#[test]
fn plain_mode_updates_the_folder_in_place() {
    let site = Site::new();
    let app = site.path("app");
    write_files(&app, &[("index.php", "v1"), ("old.php", "old")]);
    site.deploy(&app).arg("--no-zero-downtime").success();
    let meta = std::fs::symlink_metadata(site.context()).unwrap();
    assert!(
        meta.is_dir() && !meta.file_type().is_symlink(),
        "ROOT is a real folder"
    );
    std::fs::write(site.context().join("upload.txt"), "user").unwrap();

    std::fs::remove_file(app.join("old.php")).unwrap();
    write_files(&app, &[("index.php", "v2")]);
    site.deploy(&app).arg("--no-zero-downtime").success();
    assert_eq!(site.read("index.php"), "v2");
    assert!(
        !site.context().join("old.php").exists(),
        "files removed from the source are removed"
    );
    assert_eq!(site.read("upload.txt"), "user");
    assert!(site.releases().is_empty());
    let out = site.zdeploy("rollback").fails_with(2);
    assert!(out.stderr.contains("plain mode"), "{}", out.stderr);
}

#[test]
fn switching_modes_converts_the_layout_keeping_user_content() {
    let site = Site::new();
    let app = site.path("app");
    write_files(&app, &[("index.php", "v1"), ("dropped.php", "d")]);
    site.deploy(&app).arg("--no-zero-downtime").success();
    std::fs::write(site.context().join("plain-upload.txt"), "from plain").unwrap();

    // plain -> zero downtime
    std::fs::remove_file(app.join("dropped.php")).unwrap();
    write_files(&app, &[("index.php", "v2")]);
    site.deploy(&app).success();
    site.live_release();
    assert_eq!(site.read("index.php"), "v2");
    assert_eq!(site.read("plain-upload.txt"), "from plain");
    assert!(
        !site.context().join("dropped.php").exists(),
        "the plain manifest says dropped.php was deployed, not user content"
    );
    std::fs::write(site.context().join("zd-upload.txt"), "from zd").unwrap();
    write_files(&app, &[("lib.php", "library")]);
    site.deploy(&app).success();
    let release = site.webroot.join(site.live_release());
    let inode = |path: &std::path::Path| {
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path).unwrap())
    };

    // zero downtime -> plain
    write_files(&app, &[("index.php", "v3")]);
    site.deploy(&app).arg("--no-zero-downtime").success();
    let meta = std::fs::symlink_metadata(site.context()).unwrap();
    assert!(meta.is_dir() && !meta.file_type().is_symlink());
    assert_eq!(site.read("index.php"), "v3");
    assert_eq!(site.read("plain-upload.txt"), "from plain");
    assert_eq!(site.read("zd-upload.txt"), "from zd");
    // User content is linked from the release; a deployed file the plain
    // folder kept is a copy, so updating it in place leaves the release be.
    let plain = site.context();
    assert_eq!(
        inode(&plain.join("zd-upload.txt")),
        inode(&release.join("zd-upload.txt"))
    );
    assert_ne!(
        inode(&plain.join("lib.php")),
        inode(&release.join("lib.php"))
    );
    std::fs::write(plain.join("lib.php"), "edited in place").unwrap();
    assert_eq!(
        std::fs::read_to_string(release.join("lib.php")).unwrap(),
        "library"
    );
}

#[test]
fn a_failing_build_removes_the_new_release_and_keeps_the_live_one() {
    let site = Site::new();
    let app = site.path("app");
    write_files(&app, &[("index.php", "v1")]);
    site.deploy(&app).success();
    let before = site.snapshot();
    write_files(&app, &[("index.php", "v2")]);
    let out = site
        .deploy(&app)
        .args([
            "--build",
            "echo half-done > partial.txt",
            "--build",
            "echo 'composer: lock file mismatch' >&2; exit 7",
        ])
        .fails_with(1);
    assert!(out.stderr.contains("exit code 7"), "{}", out.stderr);
    assert!(
        out.stderr.contains("composer: lock file mismatch"),
        "the output is in the error: {}",
        out.stderr
    );
    assert_eq!(site.snapshot(), before);
    assert_eq!(site.read("index.php"), "v1");
}

#[test]
fn a_build_that_times_out_is_killed_with_its_children() {
    let site = Site::new();
    let app = site.path("app");
    write_files(&app, &[("index.php", "v1")]);
    site.deploy(&app).success();
    let before = site.snapshot();
    let marker = site.path("child-survived");
    write_files(&app, &[("index.php", "v2")]);
    let script = format!("(sleep 3; touch {}) & sleep 60", marker.display());
    let started = std::time::Instant::now();
    let out = site
        .deploy(&app)
        .args(["--build", &script, "--build-timeout", "1s"])
        .fails_with(1);
    assert!(out.stderr.contains("timed out"), "{}", out.stderr);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "the timeout was enforced"
    );
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert!(!marker.exists(), "the whole process group was killed");
    assert_eq!(site.snapshot(), before);
}

/// Behind Apache without a real Apache: the map zdeploy keeps current.
fn apache_flags(map: &std::path::Path) -> Vec<String> {
    vec!["--apache-map".into(), map.display().to_string()]
}

/// The release the map names for ROOT.
fn map_names(map: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(map).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("ROOT "))
        .map(str::to_string)
}

#[test]
fn apache_follows_each_switch_and_an_unwritable_map_switches_back() {
    let site = Site::new();
    let app = site.path("app");
    let map = site.path("apache/ROOT.map");
    write_files(&app, &[("index.php", "v1")]);
    site.deploy(&app).args(apache_flags(&map)).success();
    let first = site.live_release();
    assert_eq!(map_names(&map), Some(first.clone()));
    write_files(&app, &[("index.php", "v2")]);
    site.deploy(&app).args(apache_flags(&map)).success();
    assert_eq!(map_names(&map), Some(site.live_release()));
    site.zdeploy("rollback")
        .args(["--settle", "0s"])
        .args(apache_flags(&map))
        .success();
    assert_eq!(
        map_names(&map),
        Some(first.clone()),
        "rollback moves Apache too"
    );
    site.zdeploy("keep")
        .args([&first, "golden"])
        .args(apache_flags(&map))
        .success();
    assert_eq!(
        map_names(&map).as_deref(),
        Some("ROOT_golden"),
        "keep renames it in the map"
    );

    // A map that cannot be written (its folder is a file) switches back.
    let before = site.snapshot();
    let blocked = site.path("blocked");
    std::fs::write(&blocked, "a file, not a folder").unwrap();
    write_files(&app, &[("index.php", "v3")]);
    let out = site
        .deploy(&app)
        .args(apache_flags(&blocked.join("ROOT.map")))
        .fails_with(5);
    assert!(out.stderr.contains("blocked"), "{}", out.stderr);
    assert_eq!(site.live_release(), "ROOT_golden", "switched back");
    assert_eq!(site.snapshot(), before, "the new release was removed");
}

#[test]
fn a_deploy_killed_before_apache_was_told_is_caught_up_by_the_next_run() {
    let site = Site::new();
    let app = site.path("app");
    let map = site.path("ROOT.map");
    write_files(&app, &[("index.php", "v1")]);
    site.deploy(&app).args(apache_flags(&map)).success();
    write_files(&app, &[("index.php", "v2")]);
    let out = site
        .deploy(&app)
        .args(apache_flags(&map))
        .env("ZDEPLOY_FAILPOINT", "switch.renamed")
        .run();
    assert_eq!(out.code, None, "{}", out.stderr);
    let live = site.live_release();
    assert_ne!(
        map_names(&map),
        Some(live.clone()),
        "Apache still on the old release"
    );
    site.zdeploy("prune").args(apache_flags(&map)).success();
    assert_eq!(
        map_names(&map),
        Some(live),
        "recover pointed Apache at the live release"
    );
}

#[test]
fn a_map_made_by_zdeploy_webserver_apache_is_kept_current_without_flags() {
    let site = Site::new();
    let app = site.path("app");
    write_files(&app, &[("index.php", "v1")]);
    let out = Zdeploy::new()
        .args(["webserver", "apache", "--webroot"])
        .arg(&site.webroot)
        .success();
    let map = site.webroot.join(".zdeploy/ROOT/apache.map");
    assert!(
        out.stdout.contains(&format!("txt:{}", map.display())),
        "{}",
        out.stdout
    );
    assert_eq!(map_names(&map), None, "nothing deployed yet");
    site.deploy(&app).success();
    assert_eq!(map_names(&map), Some(site.live_release()));
}

#[test]
fn apache_settings_are_checked() {
    let site = Site::new();
    let app = site.path("app");
    let map = site.path("ROOT.map");
    write_files(&app, &[("index.php", "v1")]);
    let out = site
        .deploy(&app)
        .args(apache_flags(&map))
        .arg("--no-zero-downtime")
        .fails_with(2);
    assert!(
        out.stderr
            .contains("plain mode serves the context folder itself"),
        "{}",
        out.stderr
    );
    let out = site
        .deploy(&app)
        .args(apache_flags(&map))
        .args(["--webserver", "nginx"])
        .fails_with(2);
    assert!(out.stderr.contains("webserver is nginx"), "{}", out.stderr);
    let out = Zdeploy::new()
        .args(["webserver", "apache", "--webroot"])
        .arg(&site.webroot)
        .arg("--apache-map")
        .arg(site.path("a$b.map"))
        .fails_with(2);
    assert!(out.stderr.contains("map path"), "{}", out.stderr);
    let out = site
        .deploy_by_config(&app, "apache = { include = \"/etc/x.conf\" }")
        .fails_with(2);
    assert!(
        out.stderr.contains(":4:") && out.stderr.contains("include"),
        "{}",
        out.stderr
    );
    assert!(site.releases().is_empty());
}
