//! Releases built from the live one: unchanged deployed files are shared
//! (same inode on ext4, a clone on an XFS image the test mounts), only changed ones are
//! written as new inodes, and the live release never changes because a
//! newer one was built.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use crate::support::archive::{Item, tar_gz};
use crate::support::git::Repo;
use crate::support::mount::Mount;
use crate::support::{Site, Zdeploy, tree};

/// (inode, content) of every file under `root`.
fn inodes(root: &Path) -> BTreeMap<String, (u64, String)> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let relative = e.path().strip_prefix(root).unwrap().display().to_string();
            let meta = e.metadata().unwrap();
            let content = std::fs::read_to_string(e.path()).unwrap_or_default();
            (relative, (meta.ino(), content))
        })
        .collect()
}

fn repo_with_files(site: &Site, count: usize) -> Repo {
    let repo = Repo::new(site.dir.path(), "app");
    for n in 0..count {
        repo.write(&format!("lib/part{n}.php"), &format!("<?php // part {n}\n"));
    }
    repo.write("config.json", "{\"version\": 1}")
        .write("index.php", "<?php echo 'v1';");
    repo.commit("v1");
    repo
}

/// Deploy and wait out the one-second release name resolution.
fn deploy(site: &Site, source: &str, extra: &[&str]) -> String {
    std::thread::sleep(Duration::from_millis(1100));
    site.deploy(source)
        .args(["--drain", "0s", "--keep", "10"])
        .args(extra)
        .success()
        .stderr
}

#[test]
fn a_one_file_change_shares_every_other_file_and_never_touches_the_live_release() {
    let site = Site::new();
    let repo = repo_with_files(&site, 100);
    deploy(&site, &repo.url(), &[]);
    let first = site.live_release();
    let before = inodes(&site.webroot.join(&first));

    repo.write("index.php", "<?php echo 'v2';").commit("v2");
    let log = deploy(&site, &repo.url(), &["-v"]);
    assert!(log.contains("shared 101 unchanged files"), "{log}");
    let second = site.live_release();
    let after = inodes(&site.webroot.join(&second));

    assert_eq!(
        inodes(&site.webroot.join(&first)),
        before,
        "the live release kept every inode and every byte"
    );
    for (path, (inode, content)) in &after {
        let (old_inode, old_content) = &before[path];
        if path == "index.php" {
            assert_ne!(inode, old_inode, "a changed file is a new inode");
            assert_eq!(content, "<?php echo 'v2';");
            assert_eq!(old_content, "<?php echo 'v1';");
        } else {
            assert_eq!(inode, old_inode, "{path} is shared");
            assert_eq!(content, old_content);
        }
    }

    // Disk use: each release owns only what it does not share.
    let out = site.zdeploy("releases").arg("--json").success();
    let list: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    for release in list.as_array().unwrap() {
        let (size, own) = (
            release["size"].as_u64().unwrap(),
            release["own"].as_u64().unwrap(),
        );
        assert_eq!(own, "<?php echo 'v1';".len() as u64, "{release}");
        assert!(size > 20 * own, "{release}");
    }
    let out = site.zdeploy("releases").success();
    assert!(out.stdout.contains("2 releases take"), "{}", out.stdout);
}

/// Size in bytes of a `human_size` figure such as "1.3 MiB".
fn parse_size(text: &str) -> f64 {
    let (number, unit) = text.trim().split_once(' ').unwrap();
    let scale = match unit {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        other => panic!("unit {other}"),
    };
    number.parse::<f64>().unwrap() * scale
}

#[test]
fn with_reflinks_shared_files_are_clones_an_in_place_write_cannot_leak_through() {
    let mut site = Site::new();
    let xfs = Mount::xfs(&site.path("xfs"), 300);
    site.move_webroot(xfs.path.join("webroot"));
    let repo = Repo::new(site.dir.path(), "app");
    let padding = "x".repeat(64 * 1024);
    for n in 0..20 {
        repo.write(
            &format!("lib/part{n}.php"),
            &format!("<?php // {n}\n{padding}"),
        );
    }
    repo.write("index.php", "<?php echo 'v1';").commit("v1");
    deploy(&site, &repo.url(), &[]);
    let first = site.webroot.join(site.live_release());
    let before = inodes(&first);

    repo.write("index.php", "<?php echo 'v2';").commit("v2");
    let log = deploy(&site, &repo.url(), &["-v"]);
    assert!(
        log.contains("shared 20 unchanged files") && log.contains("by reflink"),
        "{log}"
    );
    let second = site.webroot.join(site.live_release());
    for (path, (inode, content)) in inodes(&second) {
        let (old_inode, old_content) = &before[&path];
        assert_ne!(inode, *old_inode, "{path}: a clone is its own inode");
        assert_eq!(std::fs::metadata(second.join(&path)).unwrap().nlink(), 1);
        if path != "index.php" {
            assert_eq!(&content, old_content);
        }
    }

    // Disk use: blocks the clones share count once.
    let out = site.zdeploy("releases").arg("--json").success();
    let list: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    for release in list.as_array().unwrap() {
        assert_eq!(release["own"], "<?php echo 'v1';".len(), "{release}");
        assert!(release["size"].as_u64().unwrap() > 20 * 64 * 1024);
    }
    let out = site.zdeploy("releases").success();
    let total = out.stdout.split(" take ").nth(1).unwrap();
    let total = parse_size(total.split(" on disk").next().unwrap());
    assert!(
        total < 1.2 * 20.0 * 64.0 * 1024.0,
        "two releases take about one: {}",
        out.stdout
    );

    // The app writes into a deployed file in place: the older release,
    // the rollback target, keeps its bytes.
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(second.join("lib/part3.php"))
        .unwrap();
    file.write_all(b"<?php // changed in place").unwrap();
    drop(file);
    assert_eq!(inodes(&first), before);
}

#[test]
fn files_the_app_rewrote_and_build_outputs_are_written_fresh_not_shared() {
    let site = Site::new();
    let repo = repo_with_files(&site, 10);
    deploy(&site, &repo.url(), &[]);
    let first = site.webroot.join(site.live_release());
    // The running app rewrites a deployed file in place.
    std::fs::write(
        first.join("config.json"),
        "{\"version\": 1, \"edited\": true}",
    )
    .unwrap();
    let edited_inode = std::fs::metadata(first.join("config.json")).unwrap().ino();

    repo.write("index.php", "<?php echo 'v2';").commit("v2");
    deploy(&site, &repo.url(), &[]);
    let second = site.webroot.join(site.live_release());
    assert_eq!(
        std::fs::read_to_string(second.join("config.json")).unwrap(),
        "{\"version\": 1}",
        "the deployed version wins, written fresh"
    );
    assert_ne!(
        std::fs::metadata(second.join("config.json")).unwrap().ino(),
        edited_inode
    );
    assert_eq!(
        std::fs::read_to_string(first.join("config.json")).unwrap(),
        "{\"version\": 1, \"edited\": true}",
        "the old release keeps what the app wrote"
    );

    // A build step that does not say what it writes may write anywhere:
    // every file shared by hard link gets a copy of its own before it runs.
    repo.write("index.php", "<?php echo 'v3';").commit("v3");
    let log = deploy(
        &site,
        &repo.url(),
        &["-v", "--build", "echo built >> lib/part0.php"],
    );
    assert!(
        log.contains("copies of their own before echo built") || log.contains("by reflink"),
        "{log}"
    );
    let third = site.webroot.join(site.live_release());
    assert_eq!(
        std::fs::read_to_string(second.join("lib/part0.php")).unwrap(),
        "<?php // part 0\n",
        "the build's in-place append did not reach the live release"
    );
    assert_eq!(
        std::fs::read_to_string(third.join("lib/part0.php")).unwrap(),
        "<?php // part 0\nbuilt\n"
    );
}

#[test]
fn a_folder_of_the_live_release_swapped_for_a_symlink_is_never_followed() {
    let site = Site::new();
    let repo = repo_with_files(&site, 3);
    deploy(&site, &repo.url(), &[]);
    let live = site.webroot.join(site.live_release());
    // Outside the release: a file the app must not get into a release.
    let outside = site.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("part0.php"), "<?php // secret\n").unwrap();
    let old = std::fs::metadata(live.join("lib/part0.php"))
        .unwrap()
        .modified()
        .unwrap();
    std::fs::File::options()
        .write(true)
        .open(outside.join("part0.php"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    std::fs::rename(live.join("lib"), site.path("lib-moved")).unwrap();
    std::os::unix::fs::symlink(&outside, live.join("lib")).unwrap();

    repo.write("index.php", "<?php echo 'v2';").commit("v2");
    deploy(&site, &repo.url(), &[]);
    let new = site.webroot.join(site.live_release());
    assert_eq!(
        std::fs::read_to_string(new.join("lib/part0.php")).unwrap(),
        "<?php // part 0\n"
    );
    assert_ne!(
        std::fs::metadata(new.join("lib/part0.php")).unwrap().ino(),
        std::fs::metadata(outside.join("part0.php")).unwrap().ino()
    );
}

#[test]
fn archives_and_folders_share_what_the_live_release_already_has() {
    let site = Site::new();
    let mut files: Vec<(String, String)> = (0..50)
        .map(|n| (format!("app/lib/{n}.php"), format!("<?php // {n}\n")))
        .collect();
    files.push(("app/index.php".into(), "v1".into()));
    fn pairs(files: &[(String, String)]) -> Vec<Item<'_>> {
        files
            .iter()
            .map(|(p, c)| Item::File(p.as_str(), c.as_bytes()))
            .collect()
    }
    let v1 = site.path("v1.tar.gz");
    tar_gz(&v1, &pairs(&files));
    deploy(&site, v1.to_str().unwrap(), &[]);
    let first = site.webroot.join(site.live_release());
    files.last_mut().unwrap().1 = "v2".into();
    let v2 = site.path("v2.tar.gz");
    tar_gz(&v2, &pairs(&files));
    let log = deploy(&site, v2.to_str().unwrap(), &["-v"]);
    assert!(log.contains("shared 50 unchanged files"), "{log}");
    assert_eq!(site.read("index.php"), "v2");
    assert_eq!(
        std::fs::read_to_string(first.join("index.php")).unwrap(),
        "v1"
    );

    // A folder source the same way.
    let folder = site.path("folder");
    for (path, content) in &files {
        let full = folder.join(path.trim_start_matches("app/"));
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, content).unwrap();
    }
    std::fs::write(folder.join("index.php"), "v3").unwrap();
    let log = deploy(&site, folder.to_str().unwrap(), &["-v"]);
    assert!(log.contains("shared 50 unchanged files"), "{log}");
    assert_eq!(
        tree(&site.webroot.join(site.live_release()), &[]).len(),
        tree(&folder, &[]).len()
    );
}

#[test]
fn export_ignore_is_honoured_with_or_without_a_live_release() {
    let site = Site::new();
    let repo = repo_with_files(&site, 3);
    repo.write(".gitattributes", "tests export-ignore\n")
        .write("tests/secret-fixture.txt", "not for the web")
        .commit("with tests");
    deploy(&site, &repo.url(), &[]);
    repo.write("index.php", "<?php echo 'v2';").commit("v2");
    deploy(&site, &repo.url(), &[]);
    assert!(
        !site.context().join("tests").exists(),
        "export-ignore applies"
    );
    assert_eq!(site.read("index.php"), "<?php echo 'v2';");
}

#[test]
fn a_dependency_folder_is_reused_while_its_lock_file_is_unchanged_and_its_build_step_skipped() {
    let site = Site::new();
    let repo = repo_with_files(&site, 3);
    repo.write("composer.lock", "{\"packages\": [\"a\"]}")
        .commit("lock");
    let runs = site.path("build-runs");
    let install = format!(
        "mkdir -p vendor/acme && echo 'lib a' > vendor/acme/a.php && echo run >> {}",
        runs.display()
    );
    let config = site.path("zdeploy.toml");
    std::fs::write(
        &config,
        format!(
            "[apps.a]\nwebroot = \"{}\"\nsource = \"{}\"\nsettle = \"0s\"\ndrain = \"0s\"\nkeep = 10\n\
             reuse = [{{ path = \"vendor\", key = \"composer.lock\" }}]\n\
             build = [{{ run = \"{install}\", unless_reused = \"vendor\" }}, \"echo always > built.txt\"]\n",
            site.webroot.display(),
            repo.url()
        ),
    )
    .unwrap();
    let deploy = || {
        std::thread::sleep(Duration::from_millis(1100));
        Zdeploy::new()
            .args(["deploy", "-v", "--config"])
            .arg(&config)
            .success()
            .stderr
    };
    let build_runs = || {
        std::fs::read_to_string(&runs)
            .unwrap_or_default()
            .lines()
            .count()
    };
    deploy();
    assert_eq!(build_runs(), 1);
    let first = site.webroot.join(site.live_release());

    repo.write("index.php", "<?php echo 'v2';")
        .commit("code only");
    let log = deploy();
    assert!(log.contains("reuse: vendor unchanged"), "{log}");
    assert!(log.contains("build: skipped"), "{log}");
    assert_eq!(build_runs(), 1, "the install step was skipped");
    assert_eq!(site.read("vendor/acme/a.php"), "lib a\n");
    assert_eq!(site.read("built.txt"), "always\n", "other steps still run");
    assert_eq!(site.read("index.php"), "<?php echo 'v2';");
    assert_eq!(
        std::fs::read_to_string(first.join("vendor/acme/a.php")).unwrap(),
        "lib a\n"
    );

    // The app (or a person) edits the live vendor/: it is rebuilt, not reused.
    std::fs::write(site.context().join("vendor/acme/a.php"), "patched\n").unwrap();
    repo.write("index.php", "<?php echo 'v3';").commit("v3");
    let log = deploy();
    assert!(log.contains("changed in the live release"), "{log}");
    assert_eq!(build_runs(), 2);
    assert_eq!(site.read("vendor/acme/a.php"), "lib a\n");

    // A new lock file: the install runs.
    repo.write("composer.lock", "{\"packages\": [\"a\", \"b\"]}")
        .commit("new lock");
    let log = deploy();
    assert!(log.contains("composer.lock changed"), "{log}");
    assert_eq!(build_runs(), 3);

    // A step naming no reuse path is refused where it is written.
    std::fs::write(
        &config,
        format!(
            "[apps.a]\nwebroot = \"{}\"\nsource = \"{}\"\nbuild = [{{ run = \"true\", unless_reused = \"node_modules\" }}]\n",
            site.webroot.display(),
            repo.url()
        ),
    )
    .unwrap();
    let out = Zdeploy::new()
        .args(["deploy", "--config"])
        .arg(&config)
        .fails_with(2);
    assert!(
        out.stderr.contains(":4: apps.a.build") && out.stderr.contains("node_modules"),
        "{}",
        out.stderr
    );
}

#[test]
fn max_disk_prunes_the_oldest_releases_but_never_the_live_or_previous_one() {
    let site = Site::new();
    let app = site.path("app");
    for n in 0..4 {
        // Each release has 64 KiB of its own.
        std::fs::create_dir_all(&app).unwrap();
        std::fs::write(app.join("data.bin"), vec![n as u8; 64 * 1024]).unwrap();
        std::fs::write(app.join("index.php"), format!("v{n}")).unwrap();
        let log = deploy(
            &site,
            app.to_str().unwrap(),
            &["--max-disk", "100KiB", "-v"],
        );
        if n >= 2 {
            assert!(log.contains("over max_disk"), "{log}");
        }
    }
    let names = site.releases();
    assert_eq!(names.len(), 2, "live and previous stay: {names:?}");
    assert_eq!(site.read("index.php"), "v3");
    let out = site
        .zdeploy("prune")
        .args(["--max-disk", "1KiB", "--drain", "0s"])
        .success();
    assert!(out.stderr.contains("none can go"), "{}", out.stderr);
    assert_eq!(site.releases(), names, "still live and previous");
    let out = site
        .zdeploy("prune")
        .args(["--max-disk", "lots"])
        .fails_with(2);
    assert!(out.stderr.contains("--max-disk"), "{}", out.stderr);
}

/// Peak resident memory (KiB) of one deploy of `source`, zdeploy alone
/// (the git processes it runs are not counted), sampled while it runs.
fn deploy_peak_kib(site: &Site, source: &str) -> u64 {
    std::thread::sleep(Duration::from_millis(1100));
    let mut child = site
        .deploy(source)
        .args(["--drain", "0s", "--settle", "0s", "-q"])
        .command()
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut peak = 0;
    loop {
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()));
        let high_water = status.ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        });
        peak = peak.max(high_water.unwrap_or(0));
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "deploy of {source} failed");
            return peak;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// First deploy and a one-file change of a tree of `files` files in
/// folders of 25: the two peaks.
fn peaks_for_tree(files: usize) -> (u64, u64) {
    let site = Site::new();
    let repo = Repo::new(site.dir.path(), "app");
    for n in 0..files {
        let folder = n / 25;
        repo.write(
            &format!("vendor/pkg{}/dir{folder}/file{n}.php", folder / 20),
            &format!("<?php // {n}\n"),
        );
    }
    repo.write("index.php", "<?php echo 'v1';").commit("v1");
    let first = deploy_peak_kib(&site, &repo.url());
    repo.write("index.php", "<?php echo 'v2';").commit("v2");
    let one_file = deploy_peak_kib(&site, &repo.url());
    assert_eq!(site.read("index.php"), "<?php echo 'v2';");
    (first, one_file)
}

#[test]
fn memory_stays_flat_as_the_tree_grows_a_hundredfold() {
    let (small_first, small_one) = peaks_for_tree(400);
    let (big_first, big_one) = peaks_for_tree(40_000);
    eprintln!(
        "peak RSS, KiB: 400 files: first {small_first}, one file {small_one}; \
         40,000 files: first {big_first}, one file {big_one}"
    );
    // Whole-tree maps cost ~700 bytes a file: 26 MiB more for this tree.
    // Streaming leaves buffers of fixed size (SQLite's page cache fills to
    // its 2 MiB cap as the history grows).
    const ALLOWED_GROWTH_KIB: u64 = 6 * 1024;
    assert!(
        big_one < small_one + ALLOWED_GROWTH_KIB,
        "a one-file deploy grew from {small_one} KiB to {big_one} KiB"
    );
    assert!(
        big_first < small_first + ALLOWED_GROWTH_KIB,
        "a first deploy grew from {small_first} KiB to {big_first} KiB"
    );
}

#[test]
fn build_steps_that_say_what_they_write_keep_hard_links_and_cannot_write_elsewhere() {
    let site = Site::new();
    let repo = repo_with_files(&site, 50);
    repo.write("composer.lock", "{\"packages\": [\"a\"]}")
        .commit("lock");
    let config = site.path("zdeploy.toml");
    let write_config = |build: &str, check: &str| {
        std::fs::write(
            &config,
            format!(
                "[apps.a]\nwebroot = \"{}\"\nsource = \"{}\"\nsettle = \"0s\"\ndrain = \"0s\"\nkeep = 10\n\
                 reuse = [{{ path = \"vendor\", key = \"composer.lock\" }}]\n\
                 build = [\n  {{ run = \"mkdir -p vendor/acme && echo 'lib a' > vendor/acme/a.php\", unless_reused = \"vendor\", writes = [\"vendor\"] }},\n  \
                 {{ run = \"echo cached > var/cache/c.txt\", writes = [\"var/cache\"] }},\n  {build}\n]\n{check}",
                site.webroot.display(),
                repo.url()
            ),
        )
        .unwrap();
    };
    let deploy = |code: i32| {
        std::thread::sleep(Duration::from_millis(1100));
        let run = Zdeploy::new()
            .args(["deploy", "-v", "--config"])
            .arg(&config);
        if code == 0 {
            run.success().stderr
        } else {
            run.fails_with(code).stderr
        }
    };
    write_config("", "");
    deploy(0);
    let first = site.webroot.join(site.live_release());
    assert_eq!(
        site.read("var/cache/c.txt"),
        "cached\n",
        "var/cache was made"
    );

    repo.write("index.php", "<?php echo 'v2';").commit("v2");
    let log = deploy(0);
    assert!(log.contains("(writes var/cache)"), "{log}");
    let second = site.webroot.join(site.live_release());
    let (old, new) = (inodes(&first), inodes(&second));
    for file in ["lib/part7.php", "config.json", "vendor/acme/a.php"] {
        assert_eq!(
            old[file].0, new[file].0,
            "{file} is the live release's inode"
        );
    }
    assert_ne!(old["index.php"].0, new["index.php"].0);
    assert!(log.contains("by hardlink"), "{log}");

    // A step that writes a file it did not list: refused by the kernel,
    // before the live release could change.
    write_config(
        "{ run = \"echo leaked >> lib/part7.php\", writes = [\"var/cache\"] }",
        "",
    );
    repo.write("index.php", "<?php echo 'v3';").commit("v3");
    let releases = tree(&site.webroot, &[".zdeploy"]);
    let err = deploy(1);
    assert!(
        err.contains("Read-only file system") && err.contains("its `writes` names only var/cache"),
        "{err}"
    );
    assert_eq!(
        tree(&site.webroot, &[".zdeploy"]),
        releases,
        "nothing left behind"
    );
    assert_eq!(site.read("lib/part7.php"), "<?php // part 7\n");

    // Listed, an in-place append gets a copy of its own first: the live
    // release keeps its file.
    write_config(
        "{ run = \"echo appended >> lib/part7.php\", writes = [\"lib\"] }",
        "",
    );
    let log = deploy(0);
    assert!(
        log.contains("copies of their own before echo appended"),
        "{log}"
    );
    let third = site.webroot.join(site.live_release());
    assert_eq!(
        std::fs::read_to_string(second.join("lib/part7.php")).unwrap(),
        "<?php // part 7\n"
    );
    assert_eq!(
        std::fs::read_to_string(third.join("lib/part7.php")).unwrap(),
        "<?php // part 7\nappended\n"
    );
    let (old, new) = (inodes(&second), inodes(&third));
    assert_eq!(
        old["config.json"].0, new["config.json"].0,
        "outside lib/, links stay"
    );
    assert_ne!(old["lib/part8.php"].0, new["lib/part8.php"].0);

    // A check before the switch reads the release; it cannot write it.
    write_config(
        "",
        "health = { before = \"echo checked >> config.json\" }\n",
    );
    repo.write("index.php", "<?php echo 'v4';").commit("v4");
    let err = deploy(1);
    assert!(err.contains("Read-only file system"), "{err}");
    assert_eq!(site.read("config.json"), "{\"version\": 1}");
}
