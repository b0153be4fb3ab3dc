//! User content: files the running app created are carried into every new
//! release; shared paths are linked; deployed files win and the log says so.

use std::path::Path;
use std::time::Duration;

use crate::support::archive::{self, Item};
use crate::support::git::Repo;
use crate::support::{Site, Uploader, assert_all_uploads_kept, versioned_app, write_files};

#[test]
fn user_files_are_carried_for_git_archive_and_folder_sources() {
    let site = Site::new();
    // git
    let repo = Repo::new(site.dir.path(), "app");
    repo.write("index.php", "v1").write("scores/.gitkeep", "");
    repo.commit("c1");
    site.deploy(repo.url()).success();
    std::fs::write(site.context().join("scores/alice.json"), "{\"score\":42}").unwrap();
    std::fs::create_dir_all(site.context().join("uploads/2026/11")).unwrap();
    std::fs::write(site.context().join("uploads/2026/11/cat.jpg"), "meow").unwrap();
    repo.write("index.php", "v2");
    repo.commit("c2");
    site.deploy(repo.url()).success();
    assert_eq!(site.read("index.php"), "v2");
    assert_eq!(site.read("scores/alice.json"), "{\"score\":42}");
    assert_eq!(site.read("uploads/2026/11/cat.jpg"), "meow");

    // then an archive, then a folder: the same user files follow along
    let tarball = site.path("v3.tar.gz");
    archive::tar_gz(
        &tarball,
        &[
            Item::File("index.php", b"v3"),
            Item::File("scores/.gitkeep", b""),
        ],
    );
    site.deploy(&tarball).success();
    assert_eq!(site.read("index.php"), "v3");
    assert_eq!(site.read("scores/alice.json"), "{\"score\":42}");
    let folder = site.path("v4");
    write_files(&folder, &[("index.php", "v4")]);
    site.deploy(&folder).success();
    assert_eq!(site.read("index.php"), "v4");
    assert_eq!(site.read("uploads/2026/11/cat.jpg"), "meow");
    assert_eq!(site.read("scores/alice.json"), "{\"score\":42}");
}

#[test]
fn a_folder_the_new_version_drops_is_gone_unless_users_wrote_into_it() {
    let site = Site::new();
    let app = site.path("app");
    write_files(
        &app,
        &[
            ("index.php", "v1"),
            ("old_feature/page.php", "old"),
            ("old_feature/deep/part.php", "old"),
            ("media/logo.png", "logo"),
        ],
    );
    site.deploy(&app).success();
    std::fs::write(site.context().join("media/upload.jpg"), "user").unwrap();
    std::fs::remove_dir_all(&app).unwrap();
    write_files(&app, &[("index.php", "v2")]);
    site.deploy(&app).success();
    let context = site.context();
    assert!(
        !context.join("old_feature").exists(),
        "a dropped deployed folder does not come back empty"
    );
    assert_eq!(
        site.read("media/upload.jpg"),
        "user",
        "user content in one does"
    );
    assert!(!context.join("media/logo.png").exists());
}

#[test]
fn a_deployed_file_wins_over_a_user_file_and_the_log_says_so() {
    let site = Site::new();
    let app = site.path("app");
    write_files(&app, &[("index.php", "v1")]);
    site.deploy(&app).success();
    std::fs::write(site.context().join("config.php"), "user's own").unwrap();
    write_files(&app, &[("config.php", "deployed")]);
    let out = site.deploy(&app).success();
    assert_eq!(site.read("config.php"), "deployed");
    assert!(
        out.stderr.contains("config.php is shadowed"),
        "{}",
        out.stderr
    );
    let log = site.zdeploy("log").success();
    assert!(
        log.stdout.contains("config.php is shadowed"),
        "{}",
        log.stdout
    );
}

#[test]
fn shared_paths_live_once_and_are_linked_into_every_release() {
    let site = Site::new();
    let app = site.path("app");
    write_files(&app, &[("index.php", "v1"), ("data/saves/.keep", "")]);
    site.deploy(&app).args(["--shared", "data/saves"]).success();
    let link = site.context().join("data/saves");
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    std::fs::write(link.join("slot1.sav"), "progress").unwrap();
    let store = site
        .webroot
        .join(".zdeploy/ROOT/shared/data/saves/slot1.sav");
    assert_eq!(std::fs::read_to_string(&store).unwrap(), "progress");

    write_files(&app, &[("index.php", "v2")]);
    site.deploy(&app).args(["--shared", "data/saves"]).success();
    assert_eq!(site.read("data/saves/slot1.sav"), "progress");
    assert_eq!(
        std::fs::read_link(site.context().join("data/saves")).unwrap(),
        Path::new("../../.zdeploy/ROOT/shared/data/saves")
    );
}

#[test]
fn declaring_a_shared_path_later_moves_existing_user_files_into_it() {
    let site = Site::new();
    let app = site.path("app");
    write_files(&app, &[("index.php", "v1")]);
    site.deploy(&app).success();
    std::fs::create_dir_all(site.context().join("data/saves")).unwrap();
    std::fs::write(site.context().join("data/saves/old.sav"), "old progress").unwrap();
    write_files(&app, &[("index.php", "v2")]);
    site.deploy(&app).args(["--shared", "data/saves"]).success();
    assert_eq!(site.read("data/saves/old.sav"), "old progress");
    assert!(
        std::fs::symlink_metadata(site.context().join("data/saves"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn builds_files_are_deployed_files_not_user_content() {
    let site = Site::new();
    let app = site.path("app");
    write_files(&app, &[("index.php", "v1")]);
    site.deploy(&app)
        .args(["--build", "echo built > built.txt"])
        .success();
    assert_eq!(site.read("built.txt"), "built\n");
    write_files(&app, &[("index.php", "v2")]);
    site.deploy(&app).success();
    assert!(
        !site.context().join("built.txt").exists(),
        "a build output is not carried as user content"
    );
}

/// The headline guarantee: a process keeps writing user files into ROOT while
/// 50 deploys and 10 rollbacks run; every file it wrote is in the live release.
#[test]
fn user_files_written_during_many_deploys_and_rollbacks_are_all_kept() {
    let site = Site::new();
    let app = site.path("app");
    versioned_app(&app, "v0", 5);
    site.deploy(&app).success();

    let uploader = Uploader::start(
        site.context().join("uploads"),
        Duration::from_millis(5),
        5_000,
    );
    let mut rollbacks = 0;
    for i in 1..=50 {
        versioned_app(&app, &format!("v{i}"), 5);
        site.deploy(&app)
            .args(["--settle", "50ms", "--drain", "2s", "--keep", "3"])
            .success();
        if i % 5 == 0 {
            site.zdeploy("rollback")
                .args(["--settle", "50ms"])
                .success();
            rollbacks += 1;
        }
    }
    let written = uploader.finish();
    assert_eq!(rollbacks, 10);
    assert_all_uploads_kept(&site.context().join("uploads"), &written, 100);
}

#[test]
fn writes_into_the_old_release_after_the_switch_are_carried_by_settle() {
    let site = Site::new();
    let app = site.path("app");
    write_files(&app, &[("index.php", "v1")]);
    site.deploy(&app).success();
    write_files(&app, &[("index.php", "v2")]);
    site.deploy_with_requests_in_flight(&app, &[], |old, _| {
        // A request that resolved the old release before the switch writes now.
        std::fs::write(old.join("in-flight.txt"), "late").unwrap();
    });
    assert_eq!(site.read("in-flight.txt"), "late");
}
