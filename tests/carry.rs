//! User content is carried by hard link: what that must never cost. A file a
//! user deleted stays deleted, a late write into the old release reaches the
//! live one, a file kept open and written in place stays one file, owners,
//! modes and times are kept, and a deploy writes no user bytes.

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use crate::support::mount::Mount;
use crate::support::{Site, write_files};

/// Carry marks have a second of margin for coarse filesystem clocks: user
/// files older than that count as written before the deploy.
fn age_past_the_carry_margin() {
    std::thread::sleep(Duration::from_millis(1_200));
}

fn inode(path: &Path) -> u64 {
    fs::symlink_metadata(path).unwrap().ino()
}

#[test]
fn a_user_file_deleted_in_the_live_release_never_comes_back() {
    let site = Site::new();
    let app = site.path("app");
    write_files(&app, &[("index.php", "v1"), ("uploads/.keep", "")]);
    site.deploy(&app).success();
    for name in ["at-settle", "at-prune", "at-rollback", "kept"] {
        fs::write(site.context().join("uploads").join(name), name).unwrap();
    }
    fs::create_dir(site.context().join("uploads/album")).unwrap();
    fs::write(site.context().join("uploads/album/photo"), "jpeg").unwrap();
    age_past_the_carry_margin();
    write_files(&app, &[("index.php", "v2")]);
    site.deploy(&app).success();

    // At settle: deleted in the new live release while the old one drains.
    write_files(&app, &[("index.php", "v3")]);
    site.deploy_with_requests_in_flight(&app, &[], |_, live| {
        fs::remove_file(live.join("uploads/at-settle")).unwrap();
        fs::remove_dir_all(live.join("uploads/album")).unwrap();
    });
    assert!(!site.context().join("uploads/at-settle").exists());
    assert!(!site.context().join("uploads/album").exists());

    // At a prune's last carry: the releases pruned still hold the file.
    fs::remove_file(site.context().join("uploads/at-prune")).unwrap();
    write_files(&app, &[("index.php", "v4")]);
    let out = site
        .deploy(&app)
        .args(["--keep", "2", "--drain", "0s"])
        .success();
    assert!(out.stderr.contains("pruned"), "{}", out.stderr);
    assert!(!site.context().join("uploads/at-prune").exists());

    // At a rollback: the release rolled back to still holds the file.
    fs::remove_file(site.context().join("uploads/at-rollback")).unwrap();
    let before = site.live_release();
    site.zdeploy("rollback").success();
    assert_ne!(site.live_release(), before);
    assert_eq!(site.read("index.php"), "v3");
    assert!(!site.context().join("uploads/at-rollback").exists());
    assert!(!site.context().join("uploads/at-settle").exists());
    assert!(!site.context().join("uploads/at-prune").exists());
    assert_eq!(site.read("uploads/kept"), "kept");
}

#[test]
fn late_writes_into_the_old_release_reach_the_live_one_however_they_are_made() {
    let site = Site::new();
    let app = site.path("app");
    write_files(&app, &[("index.php", "v1")]);
    site.deploy(&app).success();
    fs::create_dir(site.context().join("data")).unwrap();
    fs::write(site.context().join("data/appended.log"), "one\n").unwrap();
    fs::write(site.context().join("data/in-place.bin"), "aaaaaaaa").unwrap();
    fs::write(site.context().join("data/renamed.json"), "{\"v\":1}").unwrap();
    age_past_the_carry_margin();
    write_files(&app, &[("index.php", "v2")]);
    site.deploy_with_requests_in_flight(&app, &[], |old, _| {
        let data = old.join("data");
        let mut log = fs::OpenOptions::new()
            .append(true)
            .open(data.join("appended.log"))
            .unwrap();
        log.write_all(b"two\n").unwrap();
        let mut bin = fs::OpenOptions::new()
            .write(true)
            .open(data.join("in-place.bin"))
            .unwrap();
        bin.seek(SeekFrom::Start(2)).unwrap();
        bin.write_all(b"BB").unwrap();
        fs::write(data.join(".renamed.json.tmp"), "{\"v\":2}").unwrap();
        fs::rename(data.join(".renamed.json.tmp"), data.join("renamed.json")).unwrap();
        fs::create_dir(data.join("new-folder")).unwrap();
        fs::write(data.join("new-folder/new.txt"), "born late").unwrap();
    });
    assert_eq!(site.read("data/appended.log"), "one\ntwo\n");
    assert_eq!(site.read("data/in-place.bin"), "aaBBaaaa");
    assert_eq!(site.read("data/renamed.json"), "{\"v\":2}");
    assert_eq!(site.read("data/new-folder/new.txt"), "born late");
}

/// A database the app keeps open: every connection, on whichever release it
/// opened the file, writes the one file. A copy per release would leave the
/// rows written through an old connection in a release nobody reads.
#[test]
fn a_database_kept_open_across_deploys_and_a_rollback_loses_no_row() {
    let site = Site::new();
    let app = site.path("app");
    write_files(&app, &[("index.php", "v1")]);
    site.deploy(&app).success();
    let db_path = |site: &Site| site.context().join("app.sqlite");
    let first = rusqlite::Connection::open(db_path(&site)).unwrap();
    first
        .execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE saves (n INTEGER);")
        .unwrap();
    let mut connections = vec![first];
    let mut expected = 0;
    for version in 2..=5 {
        write_files(&app, &[("index.php", &format!("v{version}"))]);
        site.deploy(&app).args(["--settle", "100ms"]).success();
        if version == 4 {
            site.zdeploy("rollback")
                .args(["--settle", "100ms"])
                .success();
        }
        // Every connection opened so far, each on the release it resolved.
        for connection in &connections {
            connection
                .execute("INSERT INTO saves VALUES (?1)", [expected])
                .unwrap();
            expected += 1;
        }
        connections.push(rusqlite::Connection::open(db_path(&site)).unwrap());
    }
    drop(connections);
    let reader = rusqlite::Connection::open(db_path(&site)).unwrap();
    let rows: i64 = reader
        .query_row("SELECT count(*) FROM saves", [], |row| row.get(0))
        .unwrap();
    assert_eq!(rows, expected);
    let check: String = reader
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}

#[test]
fn owner_mode_and_times_are_kept_and_no_user_file_shares_an_inode_with_a_deployed_one() {
    let site = Site::new();
    let app = site.path("app");
    write_files(&app, &[("index.php", "v1"), ("uploads/.keep", "")]);
    site.deploy(&app).success();
    let upload = site.context().join("uploads/cat.jpg");
    fs::write(&upload, "meow").unwrap();
    fs::write(site.context().join("config.php"), "user's own").unwrap();
    std::os::unix::fs::chown(&upload, Some(65534), Some(65534)).unwrap();
    fs::set_permissions(&upload, fs::Permissions::from_mode(0o640)).unwrap();
    let past = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    fs::File::options()
        .write(true)
        .open(&upload)
        .unwrap()
        .set_modified(past)
        .unwrap();
    let before = fs::metadata(&upload).unwrap();
    let old_config = inode(&site.context().join("config.php"));
    // The next source deploys config.php: the deployed file wins and must
    // be a file of its own, not the user's inode.
    write_files(&app, &[("index.php", "v2"), ("config.php", "deployed")]);
    site.deploy(&app).success();

    let after = fs::metadata(site.context().join("uploads/cat.jpg")).unwrap();
    assert_eq!((after.uid(), after.gid()), (65534, 65534));
    assert_eq!(after.mode() & 0o7777, 0o640);
    assert_eq!(after.modified().unwrap(), past);
    assert_eq!(after.ino(), before.ino(), "carried by link, not copied");
    assert_eq!(site.read("config.php"), "deployed");
    assert_ne!(inode(&site.context().join("config.php")), old_config);

    // Every deployed file's inode differs from every user file's.
    // The user files: the upload in both releases, and the user's own
    // config.php that the previous release still holds.
    let live_name = site.live_release();
    let live = site.webroot.join(&live_name);
    let releases = site.releases();
    let previous = releases.iter().find(|r| **r != live_name).unwrap();
    let mut user_inodes: Vec<u64> = releases
        .iter()
        .map(|r| inode(&site.webroot.join(r).join("uploads/cat.jpg")))
        .collect();
    user_inodes.push(inode(&site.webroot.join(previous).join("config.php")));
    let deployed = ["index.php", "config.php", "uploads/.keep"];
    for path in deployed {
        let deployed_inode = inode(&live.join(path));
        assert!(
            !user_inodes.contains(&deployed_inode),
            "{path} shares an inode with a user file"
        );
    }
}

/// A one-file deploy of a site with 20,000 user files writes a small part
/// of their bytes: the filesystem's usage grows by folders and the history,
/// not by a copy of the uploads.
#[test]
fn a_deploy_writes_no_copy_of_the_user_content() {
    let dir = tempfile::tempdir().unwrap();
    let mount = Mount::tmpfs(&dir.path().join("fs"), 1024);
    let mut site = Site::new();
    site.move_webroot(mount.path.join("webroot"));
    let app = site.path("app");
    write_files(&app, &[("index.php", "v1"), ("uploads/.keep", "")]);
    site.deploy(&app).success();
    let chunk = vec![7u8; 8 * 1024];
    for folder in 0..200 {
        let dir = site.context().join(format!("uploads/{folder:03}"));
        fs::create_dir(&dir).unwrap();
        for file in 0..100 {
            fs::write(dir.join(format!("{file:03}.jpg")), &chunk).unwrap();
        }
    }
    let user_bytes = 20_000u64 * chunk.len() as u64;
    age_past_the_carry_margin();
    let used_before = used_bytes(&mount.path);
    write_files(&app, &[("index.php", "v2")]);
    site.deploy(&app).success();
    let added = used_bytes(&mount.path).saturating_sub(used_before);
    assert_eq!(site.read("uploads/199/099.jpg").len(), chunk.len());
    assert!(
        added < user_bytes / 20,
        "the deploy added {added} bytes for {user_bytes} bytes of user content"
    );
    // Each release lists the user content in its size, but none owns it:
    // pruning either frees only its own deployed files.
    let out = site.zdeploy("releases").arg("--json").success();
    let releases: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(releases.len(), 2);
    for release in &releases {
        assert!(release["size"].as_u64().unwrap() >= user_bytes, "{release}");
        assert!(
            release["own"].as_u64().unwrap() < user_bytes / 20,
            "{release}"
        );
    }
}

fn used_bytes(path: &Path) -> u64 {
    let stat = rustix::fs::statvfs(path).unwrap();
    (stat.f_blocks - stat.f_bfree) * stat.f_frsize
}

/// The sync and settle skip folders whose names did not change since the
/// last carry. A writer acting like requests (each resolves ROOT once, then
/// works in that release) creates files across 40 folders, appends to a log
/// in each and replaces a file by rename, throughout 30 deploys: every file,
/// every line and every last version is in the live release at the end.
#[test]
fn no_write_is_missed_when_unchanged_folders_are_skipped() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    const FOLDERS: usize = 40;
    let site = Site::new();
    let app = site.path("app");
    write_files(&app, &[("index.php", "v0")]);
    site.deploy(&app).success();
    for folder in 0..FOLDERS {
        let dir = site.context().join(format!("data/{folder:02}"));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("log"), "").unwrap();
    }
    age_past_the_carry_margin();
    let root = site.context();
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let writer = std::thread::spawn(move || {
        let mut written = 0;
        while !stopping.load(Ordering::Relaxed) && written < 20_000 {
            let release = fs::canonicalize(&root).unwrap();
            let dir = release.join(format!("data/{:02}", written % FOLDERS));
            fs::write(dir.join(format!("file-{written:05}")), written.to_string()).unwrap();
            let mut log = fs::OpenOptions::new()
                .append(true)
                .open(dir.join("log"))
                .unwrap();
            writeln!(log, "{written}").unwrap();
            fs::write(dir.join(".latest.tmp"), written.to_string()).unwrap();
            fs::rename(dir.join(".latest.tmp"), dir.join("latest")).unwrap();
            written += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
        written
    });
    for version in 1..=30 {
        write_files(&app, &[("index.php", &format!("v{version}"))]);
        site.deploy(&app)
            .args(["--settle", "50ms", "--drain", "1s", "--keep", "3"])
            .success();
    }
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();
    // Requests still running on the last old release are carried by its settle:
    // one more deploy, with nothing being written, makes sure of it.
    write_files(&app, &[("index.php", "final")]);
    site.deploy(&app).success();
    assert!(
        written > 200,
        "the writer ran throughout ({written} writes)"
    );
    let mut missing = Vec::new();
    for n in 0..written {
        let dir = site.context().join(format!("data/{:02}", n % FOLDERS));
        if fs::read_to_string(dir.join(format!("file-{n:05}"))).ok() != Some(n.to_string()) {
            missing.push(format!("file-{n:05}"));
        }
    }
    for folder in 0..FOLDERS {
        let dir = site.context().join(format!("data/{folder:02}"));
        let lines: Vec<usize> = fs::read_to_string(dir.join("log"))
            .unwrap()
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
        let expected: Vec<usize> = (folder..written).step_by(FOLDERS).collect();
        if lines != expected {
            missing.push(format!(
                "{folder:02}/log has {} of {} lines",
                lines.len(),
                expected.len()
            ));
        }
        if let Some(last) = expected.last() {
            let latest = fs::read_to_string(dir.join("latest")).unwrap_or_default();
            if latest != last.to_string() {
                missing.push(format!("{folder:02}/latest is {latest:?}, not {last}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{} writes missed of {written}: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
}

/// A rollback changes code, not data: the release rolled back to gets the
/// live release's user content exactly, by link: uploads added since come
/// along, files replaced since keep their new version, a folder a user
/// turned into a file is a file, and nothing is copied.
#[test]
fn a_rollback_brings_the_live_user_content_exactly() {
    let site = Site::new();
    let app = site.path("app");
    write_files(&app, &[("index.php", "v1")]);
    site.deploy(&app).success();
    fs::create_dir(site.context().join("gallery")).unwrap();
    fs::write(site.context().join("gallery/one.jpg"), "one").unwrap();
    fs::write(site.context().join("profile.json"), "{\"v\":1}").unwrap();
    age_past_the_carry_margin();
    write_files(&app, &[("index.php", "v2")]);
    site.deploy(&app).success();

    fs::remove_dir_all(site.context().join("gallery")).unwrap();
    fs::write(site.context().join("gallery"), "now a file").unwrap();
    fs::write(site.context().join(".profile.tmp"), "{\"v\":2}").unwrap();
    fs::rename(
        site.context().join(".profile.tmp"),
        site.context().join("profile.json"),
    )
    .unwrap();
    fs::write(site.context().join("added.txt"), "added").unwrap();
    let live_inodes: Vec<u64> = ["gallery", "profile.json", "added.txt"]
        .iter()
        .map(|p| inode(&site.context().join(p)))
        .collect();

    let out = site.zdeploy("rollback").success();
    assert_eq!(site.read("index.php"), "v1", "{}", out.stderr);
    assert_eq!(site.read("gallery"), "now a file");
    assert_eq!(site.read("profile.json"), "{\"v\":2}");
    assert_eq!(site.read("added.txt"), "added");
    let rolled_back: Vec<u64> = ["gallery", "profile.json", "added.txt"]
        .iter()
        .map(|p| inode(&site.context().join(p)))
        .collect();
    assert_eq!(rolled_back, live_inodes, "linked, not copied");
    assert!(!out.stderr.contains("copied"), "{}", out.stderr);
}
