//! Hostile input: every bad archive, source, name or webroot is refused with a
//! clear error and a non-zero exit, and the webroot is left exactly as it was.

use crate::support::archive::{self, Item};
use crate::support::{Site, write_files};

/// A site with one good release live and a user file, to prove nothing changes.
fn live_site() -> Site {
    let site = Site::new();
    let app = site.path("good");
    write_files(&app, &[("index.php", "good")]);
    site.deploy(&app).success();
    std::fs::write(site.context().join("user-upload.jpg"), "precious").unwrap();
    site
}

#[track_caller]
fn assert_refused(site: &Site, archive_path: &std::path::Path, code: i32, expected: &str) {
    let before = site.snapshot();
    let out = site.deploy(archive_path).fails_with(code);
    assert!(
        out.stderr.contains(expected),
        "{}: expected '{expected}' in: {}",
        archive_path.display(),
        out.stderr
    );
    assert_eq!(
        out.stderr
            .trim()
            .lines()
            .filter(|l| l.starts_with("error:"))
            .count(),
        1,
        "one error line: {}",
        out.stderr
    );
    assert_eq!(
        site.snapshot(),
        before,
        "{}: the webroot changed",
        archive_path.display()
    );
    assert!(
        !site.webroot.join(".zdeploy/ROOT/trash").exists()
            || std::fs::read_dir(site.webroot.join(".zdeploy/ROOT/trash"))
                .unwrap()
                .next()
                .is_none()
    );
}

#[test]
fn hostile_tar_entries_are_refused() {
    let site = live_site();
    let outside = site.path("escaped");
    let cases: Vec<(&str, Vec<Item<'_>>, &str)> = vec![
        (
            "dotdot.tar",
            vec![
                Item::File("index.php", b"x"),
                Item::File("../escaped", b"evil"),
            ],
            "contains '..'",
        ),
        (
            "deep-dotdot.tar",
            vec![Item::File("a/../../escaped", b"evil")],
            "contains '..'",
        ),
        (
            "absolute.tar",
            vec![Item::File("/tmp/zdeploy-absolute-evil", b"evil")],
            "absolute path",
        ),
        (
            "symlink-out.tar",
            vec![Item::Symlink("etc", "/etc")],
            "outside the release",
        ),
        (
            "symlink-up.tar",
            vec![Item::File("index.php", b"x"), Item::Symlink("up", "../..")],
            "outside the release",
        ),
        (
            "symlink-then-file.tar",
            vec![
                Item::Symlink("sub", "."),
                Item::File("sub/index.php", b"through the link"),
            ],
            "not a folder",
        ),
        (
            "symlink-chain.tar",
            vec![
                Item::Dir("a/"),
                Item::Symlink("root", "a/.."),
                Item::Symlink("esc", "root/../escaped"),
            ],
            "outside the release",
        ),
        (
            "hardlink-out.tar",
            vec![Item::Hardlink("passwd", "/etc/passwd")],
            "outside the release",
        ),
        (
            "hardlink-up.tar",
            vec![Item::Hardlink("x", "../escaped")],
            "outside the release",
        ),
        (
            "hardlink-missing.tar",
            vec![Item::Hardlink("x", "nothing-here")],
            "not an earlier file",
        ),
        (
            "chardev.tar",
            vec![Item::CharDevice("null")],
            "character device",
        ),
        ("fifo.tar", vec![Item::Fifo("pipe")], "named pipe"),
        (
            "duplicate.tar",
            vec![
                Item::File("index.php", b"one"),
                Item::File("index.php", b"two"),
            ],
            "appears twice",
        ),
        (
            "file-then-symlink.tar",
            vec![
                Item::File("index.php", b"one"),
                Item::Symlink("index.php", "/etc/passwd"),
            ],
            "",
        ),
    ];
    for (name, items, expected) in cases {
        let path = site.path(name);
        archive::tar(&path, &items);
        assert_refused(&site, &path, 4, expected);
    }
    assert!(!outside.exists(), "nothing was written outside the release");
    assert!(!std::path::Path::new("/tmp/zdeploy-absolute-evil").exists());
}

#[test]
fn hostile_zip_entries_are_refused() {
    let site = live_site();
    let cases: Vec<(&str, Vec<Item<'_>>, &str)> = vec![
        (
            "dotdot.zip",
            vec![Item::File("../escaped", b"evil")],
            "contains '..'",
        ),
        (
            "absolute.zip",
            vec![Item::File("/tmp/zdeploy-zip-evil", b"evil")],
            "absolute path",
        ),
        (
            "symlink.zip",
            vec![Item::Symlink("etc", "/etc")],
            "outside the release",
        ),
        (
            "symlink-up.zip",
            vec![Item::Symlink("up", "../../..")],
            "outside the release",
        ),
    ];
    for (name, items, expected) in cases {
        let path = site.path(name);
        archive::zip(&path, &items);
        assert_refused(&site, &path, 4, expected);
    }
    assert!(!site.path("escaped").exists());
}

#[test]
fn zip_bombs_stop_at_the_byte_limit_counted_as_written() {
    let site = live_site();
    let bomb = site.path("bomb.zip");
    archive::zip_bomb(&bomb, 64 << 20);
    assert!(
        std::fs::metadata(&bomb).unwrap().len() < 1 << 20,
        "the bomb is small on disk"
    );
    let before = site.snapshot();
    let out = site
        .deploy(&bomb)
        .args(["--max-archive-size", "8MiB"])
        .fails_with(4);
    assert!(
        out.stderr.contains("past the limit of 8388608 bytes"),
        "{}",
        out.stderr
    );
    assert_eq!(site.snapshot(), before);
}

#[test]
fn too_many_entries_are_refused() {
    let site = live_site();
    let path = site.path("many.tar");
    let names: Vec<String> = (0..50).map(|i| format!("f{i}")).collect();
    let items: Vec<Item<'_>> = names.iter().map(|n| Item::File(n, b"x")).collect();
    archive::tar(&path, &items);
    let before = site.snapshot();
    let out = site
        .deploy(&path)
        .args(["--max-archive-entries", "20"])
        .fails_with(4);
    assert!(out.stderr.contains("limit of 20 entries"), "{}", out.stderr);
    assert_eq!(site.snapshot(), before);
}

#[test]
fn corrupt_and_truncated_archives_are_refused() {
    let site = live_site();
    let good = site.path("good.tar.gz");
    let big: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    archive::tar_gz(
        &good,
        &[Item::File("index.php", b"x"), Item::File("big.bin", &big)],
    );
    let bytes = std::fs::read(&good).unwrap();
    let truncated = site.path("truncated.tar.gz");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    assert_refused(&site, &truncated, 4, "corrupt or truncated");

    let garbage = site.path("garbage.zip");
    std::fs::write(&garbage, b"PK\x03\x04 this is not really a zip file at all").unwrap();
    assert_refused(&site, &garbage, 4, "corrupt or truncated");

    let text = site.path("notes.tar");
    std::fs::write(&text, "just some text, not an archive").unwrap();
    assert_refused(&site, &text, 4, "not a zip, tar");

    let zip_good = site.path("good.zip");
    archive::zip(&zip_good, &[Item::File("index.php", b"x")]);
    let zip_bytes = std::fs::read(&zip_good).unwrap();
    let zip_cut = site.path("cut.zip");
    std::fs::write(&zip_cut, &zip_bytes[..zip_bytes.len() - 30]).unwrap();
    assert_refused(&site, &zip_cut, 4, "corrupt or truncated");
}

#[test]
fn bad_webroots_and_contexts_are_refused() {
    let site = Site::new();
    let app = site.path("app");
    write_files(&app, &[("index.php", "x")]);
    let missing = site.path("no-such-webroot");
    let out = crate::support::Zdeploy::new()
        .args(["deploy", "--webroot"])
        .arg(&missing)
        .arg(&app)
        .fails_with(5);
    assert!(out.stderr.contains("does not exist"), "{}", out.stderr);
    assert!(
        !missing.exists(),
        "the webroot is not created behind the user's back"
    );

    let file_webroot = site.path("a-file");
    std::fs::write(&file_webroot, "").unwrap();
    let out = crate::support::Zdeploy::new()
        .args(["deploy", "--webroot"])
        .arg(&file_webroot)
        .arg(&app)
        .fails_with(5);
    assert!(out.stderr.contains("not a folder"), "{}", out.stderr);

    for context in ["a/b", "..", ".hidden", "x..y", ""] {
        let out = site.deploy(&app).args(["--context", context]).fails_with(2);
        assert!(
            out.stderr.contains("invalid context"),
            "{context}: {}",
            out.stderr
        );
    }
    assert!(
        std::fs::read_dir(&site.webroot).unwrap().next().is_none(),
        "nothing was created"
    );
}

#[test]
fn a_webroot_the_user_cannot_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let site = Site::new();
    let app = site.path("app");
    write_files(&app, &[("index.php", "x")]);
    for dir in [site.dir.path(), app.as_path()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&site.webroot, std::fs::Permissions::from_mode(0o555)).unwrap();
    // Root may write anywhere, so run as `nobody` when we are root.
    let mut command = if crate::support::running_as_root() {
        let mut c = std::process::Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            crate::support::BIN,
        ]);
        c
    } else {
        std::process::Command::new(crate::support::BIN)
    };
    let out = command
        .args(["deploy", "--webroot"])
        .arg(&site.webroot)
        .arg(&app)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("not writable"), "{stderr}");
    std::fs::set_permissions(&site.webroot, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(std::fs::read_dir(&site.webroot).unwrap().next().is_none());
}

#[test]
fn a_missing_source_is_refused() {
    let site = live_site();
    let before = site.snapshot();
    let out = site.deploy(site.path("does-not-exist")).fails_with(4);
    assert!(out.stderr.contains("does not exist"), "{}", out.stderr);
    assert_eq!(site.snapshot(), before);
}

#[test]
fn a_ref_for_a_folder_or_archive_is_refused() {
    let site = Site::new();
    let app = site.path("app");
    write_files(&app, &[("index.php", "x")]);
    let out = site.deploy(&app).args(["--ref", "main"]).fails_with(2);
    assert!(
        out.stderr.contains("only applies to git sources"),
        "{}",
        out.stderr
    );
    assert!(site.releases().is_empty());
}

/// The hostile corpus the archive fuzz target starts from
/// (`fuzz/make-hostile-corpus.py`): each archive is refused with one error
/// line, the webroot unchanged, nothing written outside it.
#[test]
fn every_archive_of_the_hostile_corpus_is_refused_and_nothing_changes() {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/archive");
    let mut archives: Vec<_> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    archives.sort();
    assert!(archives.len() >= 20, "{archives:?}");
    let site = live_site();
    for archive in &archives {
        let name = archive.file_name().unwrap().to_string_lossy().into_owned();
        let expected = match name.split('.').next().unwrap() {
            "zip-slip" => "contains '..'",
            "absolute-path" => "absolute path",
            "symlink-escape" => "outside the release",
            "symlink-escape-relative" | "symlink-chain-escape" => "resolves outside the release",
            "symlink-then-file" => "symlink",
            "hardlink-escape" | "hardlink-missing" => "link",
            "char-device" | "block-device" | "fifo" => "which a release may not contain",
            "duplicate-entries" => "appears twice",
            "file-then-dir" => "",
            "zip-bomb" | "tar-bomb" => "limit of 8388608 bytes",
            "oversized-pax-header" => "longer than 3072 bytes",
            "oversized-long-name" => "longer than 255 bytes",
            "truncated" | "garbage" => "",
            other => panic!("no expectation for corpus entry {other}"),
        };
        let before = site.snapshot();
        let out = site
            .deploy(archive)
            .args(["--max-archive-size", "8MiB"])
            .run();
        assert!(
            matches!(out.code, Some(2) | Some(4)),
            "{name}: exit {:?}: {}",
            out.code,
            out.stderr
        );
        assert!(out.stderr.contains(expected), "{name}: {}", out.stderr);
        let errors = out
            .stderr
            .lines()
            .filter(|l| l.starts_with("error:"))
            .count();
        assert_eq!(errors, 1, "{name}: {}", out.stderr);
        assert_eq!(site.snapshot(), before, "{name}: the webroot changed");
        assert!(
            !std::path::Path::new("/tmp/zdeploy-evil.php").exists(),
            "{name}"
        );
        assert!(!site.dir.path().join("evil.php").exists(), "{name}");
    }
}
