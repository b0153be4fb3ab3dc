//! Deploying from archives and folders.

use crate::support::archive::{self, Item};
use crate::support::{Site, write_files};

const APP: &[Item<'static>] = &[
    Item::Dir("app/"),
    Item::File("app/index.php", b"<?php echo 'hi';"),
    Item::Dir("app/levels/"),
    Item::File("app/levels/1.json", b"{\"level\":1}"),
    Item::Symlink("app/current-level.json", "levels/1.json"),
];

#[test]
fn every_archive_format_deploys_and_a_single_top_folder_is_unwrapped() {
    type Build = fn(&std::path::Path, &[Item<'_>]);
    let formats: [(&str, Build); 5] = [
        ("app.tar", archive::tar),
        ("app.tar.gz", archive::tar_gz),
        ("app.tgz", archive::tar_gz),
        ("app.tar.zst", archive::tar_zst),
        ("app.zip", archive::zip),
    ];
    for (name, build) in formats {
        let site = Site::new();
        let path = site.path(name);
        build(&path, APP);
        site.deploy(&path).success();
        assert_eq!(site.read("index.php"), "<?php echo 'hi';", "{name}");
        assert_eq!(
            site.read("current-level.json"),
            "{\"level\":1}",
            "{name}: symlink inside works"
        );
        assert!(
            !site.context().join("app").exists(),
            "{name}: top folder unwrapped"
        );
    }
}

#[test]
fn an_archive_with_several_top_entries_is_not_unwrapped() {
    let site = Site::new();
    let path = site.path("flat.tar.gz");
    archive::tar_gz(
        &path,
        &[
            Item::File("index.php", b"x"),
            Item::Dir("app/"),
            Item::File("app/a.php", b"a"),
        ],
    );
    site.deploy(&path).success();
    assert_eq!(site.read("index.php"), "x");
    assert_eq!(site.read("app/a.php"), "a");
}

#[test]
fn the_same_archive_twice_is_recognised_by_content() {
    let site = Site::new();
    let first = site.path("one.zip");
    let second = site.path("two.zip");
    archive::zip(&first, APP);
    archive::zip(&second, APP);
    site.deploy(&first).success();
    let out = site.deploy(&second).success();
    assert!(out.stdout.contains("unchanged"), "{}", out.stdout);
    assert_eq!(
        site.releases().len(),
        1,
        "the unchanged release was not kept"
    );
}

#[test]
fn archives_over_http_are_downloaded() {
    let site = Site::new();
    let served = site.path("served");
    std::fs::create_dir(&served).unwrap();
    archive::tar_gz(&served.join("app.tar.gz"), APP);
    let server = crate::support::http::FileServer::start(&served);
    site.deploy(format!("http://{}/app.tar.gz", server.address))
        .success();
    assert_eq!(site.read("index.php"), "<?php echo 'hi';");
    let out = site
        .deploy(format!("http://{}/missing.tar.gz", server.address))
        .fails_with(4);
    assert!(out.stderr.contains("cannot download"), "{}", out.stderr);
    assert!(out.stderr.contains("404"), "{}", out.stderr);
}

#[test]
fn folders_deploy_without_their_git_folder() {
    let site = Site::new();
    let app = site.path("app");
    write_files(
        &app,
        &[
            ("index.php", "folder"),
            ("css/site.css", "body{}"),
            ("notes.txt", "n"),
        ],
    );
    std::fs::create_dir_all(app.join("nested/.git")).unwrap();
    std::fs::write(app.join("nested/.git/keep"), "nested .git is content").unwrap();
    site.deploy(&app)
        .args(["--source-kind", "folder"])
        .success();
    assert_eq!(site.read("index.php"), "folder");
    assert_eq!(site.read("css/site.css"), "body{}");
    assert!(site.context().join("nested/.git/keep").exists());

    std::fs::create_dir(app.join(".git")).unwrap();
    std::fs::write(app.join(".git/secret"), "x").unwrap();
    std::fs::write(app.join("index.php"), "folder 2").unwrap();
    site.deploy(&app)
        .args(["--source-kind", "folder"])
        .success();
    assert_eq!(site.read("index.php"), "folder 2");
    assert!(
        !site.context().join(".git").exists(),
        "a top-level .git is never deployed"
    );
}

#[test]
fn a_folder_that_contains_the_webroot_is_refused() {
    let site = Site::new();
    let out = site.deploy(site.dir.path()).fails_with(2);
    assert!(
        out.stderr.contains("contains the webroot"),
        "{}",
        out.stderr
    );
    assert!(site.releases().is_empty());
}

#[test]
fn file_modes_are_kept() {
    use std::os::unix::fs::PermissionsExt;
    let site = Site::new();
    let app = site.path("app");
    write_files(&app, &[("bin/run.sh", "#!/bin/sh\n"), ("index.php", "x")]);
    std::fs::set_permissions(
        app.join("bin/run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    site.deploy(&app).success();
    let mode = std::fs::metadata(site.context().join("bin/run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
}
