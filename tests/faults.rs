//! Fault injection with users writing throughout: deploys and rollbacks
//! killed at every step and at random moments, the disk filling up, the
//! webroot turning read-only, the network to the git remote breaking. After
//! each: ROOT serves a complete release that matches its manifest, every user
//! file written is there, the history says what happened, and the next deploy
//! succeeds.

use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::git::Repo;
use crate::support::kill::{DEPLOY_POINTS, Lcg, ROLLBACK_POINTS};
use crate::support::mount::Mount;
use crate::support::{
    Site, Uploader, assert_all_uploads_kept, assert_complete_version, versioned_app,
};

const FILES: usize = 40;
const TRIALS: usize = 200;

/// Commit what `folder` holds into `repo` and push it (`versioned_app`
/// rebuilds its folder from scratch, which would drop the work tree's .git).
fn commit_folder(repo: &Repo, folder: &std::path::Path, message: &str) {
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(folder.join("."))
        .arg(&repo.work)
        .status()
        .unwrap();
    assert!(copied.success());
    repo.commit(message);
}

/// ROOT holds one complete version and matches its manifest.
#[track_caller]
fn assert_serving_whole(site: &Site, context: &str) {
    assert_complete_version(&site.context(), FILES);
    let out = site.zdeploy("verify").run();
    assert_eq!(out.code, Some(0), "{context}: {}{}", out.stdout, out.stderr);
}

fn deployments(site: &Site) -> Vec<serde_json::Value> {
    let out = site
        .zdeploy("status")
        .args(["--json", "--limit", "100000"])
        .success();
    let status: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    status["deployments"].as_array().unwrap().clone()
}

#[test]
fn two_hundred_kills_at_every_step_and_random_moments_lose_nothing() {
    let site = Site::new();
    let app = site.path("app");
    let repo = Repo::new(site.dir.path(), "app");
    versioned_app(&app, "v0", FILES);
    site.deploy(&app).success();
    let uploader = Uploader::start(
        site.context().join("uploads"),
        Duration::from_millis(40),
        5_000,
    );

    // Measure one deploy to aim the random kills inside one.
    versioned_app(&app, "v-measure", FILES);
    let started = Instant::now();
    site.deploy(&app).args(["--settle", "20ms"]).success();
    let span = started.elapsed().as_micros() as u64 + 1000;
    let seed = std::process::id() as u64;
    let mut random = Lcg(seed);
    let (mut failpoint_kills, mut runs) = (0, 2);

    for trial in 0..TRIALS {
        let rollback = trial % 4 == 3;
        let at_failpoint = trial % 2 == 0;
        let version = format!("v{trial}");
        let source = if trial % 3 == 0 {
            let scratch = site.path("git-version");
            versioned_app(&scratch, &version, FILES);
            commit_folder(&repo, &scratch, &version);
            repo.url()
        } else {
            versioned_app(&app, &version, FILES);
            app.display().to_string()
        };
        let mut command = if rollback {
            site.zdeploy("rollback").args(["--settle", "20ms"])
        } else {
            site.deploy(&source)
                .args(["--settle", "20ms", "--keep", "3", "--drain", "0s"])
                .args(["--build", "true"])
        };
        let point = if rollback {
            ROLLBACK_POINTS[(trial / 4) % ROLLBACK_POINTS.len()]
        } else {
            DEPLOY_POINTS[(trial / 2) % DEPLOY_POINTS.len()]
        };
        if at_failpoint {
            command = command.env("ZDEPLOY_FAILPOINT", point);
        }
        let mut command = command.command();
        command.stdout(Stdio::null()).stderr(Stdio::null());
        let mut child = command.spawn().unwrap();
        runs += 1;
        let status = if at_failpoint {
            child.wait().unwrap()
        } else {
            std::thread::sleep(Duration::from_micros(random.next() % span));
            let _ = child.kill();
            child.wait().unwrap()
        };
        if at_failpoint {
            assert_eq!(status.code(), None, "trial {trial} reached {point}");
            failpoint_kills += 1;
        }
        let context = format!(
            "trial {trial} ({} {}, seed {seed})",
            if rollback { "rollback" } else { "deploy" },
            if at_failpoint { point } else { "at random" }
        );
        assert_serving_whole(&site, &context);

        if trial % 5 == 4 {
            let version = format!("v{trial}-clean");
            versioned_app(&app, &version, FILES);
            site.deploy(&app)
                .args(["--settle", "20ms", "--keep", "3", "--drain", "0s"])
                .success();
            runs += 1;
            assert_eq!(
                assert_complete_version(&site.context(), FILES),
                version,
                "{context}: the next deploy succeeds"
            );
            for release in site.releases() {
                assert_complete_version(&site.webroot.join(release), FILES);
            }
        }
    }

    let written = uploader.finish();
    versioned_app(&app, "final", FILES);
    // An upload that raced a switch can land in the old release after its
    // 20 ms settle; it stays there until that release's last carry, before
    // it is pruned. Keeping only the live release prunes (and carries) them all.
    site.deploy(&app)
        .args(["--settle", "20ms", "--drain", "0s", "--keep", "1"])
        .success();
    runs += 1;
    assert_serving_whole(&site, "final deploy");
    assert_all_uploads_kept(&site.context().join("uploads"), &written, 200);

    // The history: a record for every run that got as far as opening one,
    // none left running, every failpoint kill recorded as interrupted.
    let records = deployments(&site);
    assert!(
        records.len() <= runs,
        "{} records for {runs} runs",
        records.len()
    );
    assert!(
        records.len() >= runs - TRIALS / 2,
        "{} records",
        records.len()
    );
    assert!(
        records.iter().all(|d| d["outcome"] != "running"),
        "a killed run is never left running"
    );
    let interrupted = records
        .iter()
        .filter(|d| d["outcome"] == "interrupted")
        .count();
    assert!(
        interrupted >= failpoint_kills,
        "{interrupted} interrupted, {failpoint_kills} killed at a failpoint"
    );
    eprintln!(
        "{TRIALS} kills (seed {seed}): {} records, {interrupted} interrupted, {} uploads kept",
        records.len(),
        written.len()
    );
}

/// Free bytes on the filesystem holding `path`.
fn free_bytes(path: &std::path::Path) -> u64 {
    let out = std::process::Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn write_random(path: &std::path::Path, bytes: usize) {
    let mut random = Lcg(bytes as u64);
    let data: Vec<u8> = (0..bytes).map(|_| random.next() as u8).collect();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

#[track_caller]
fn assert_last_outcome(site: &Site, outcome: &str) {
    let records = deployments(site);
    assert_eq!(records[0]["outcome"], outcome, "{:#}", records[0]);
}

/// A deploy that ran out of space: refused as a filesystem problem, ROOT
/// whole, the user files as they were, no partial release, on record.
#[track_caller]
fn assert_refused_for_space(
    site: &Site,
    out: &crate::support::Output,
    user_files: &std::collections::BTreeMap<std::path::PathBuf, String>,
    context: &str,
) {
    assert_eq!(out.code, Some(5), "{context}: {}", out.stderr);
    assert!(
        out.stderr.contains("No space left on device"),
        "{}",
        out.stderr
    );
    assert_serving_whole(site, context);
    let uploads = site.context().join("uploads");
    assert_eq!(
        &crate::support::tree(&uploads, &[]),
        user_files,
        "{context}"
    );
    assert_eq!(
        site.releases().len(),
        1,
        "{context}: the partial release is gone"
    );
    assert_last_outcome(site, "failed");
}

#[test]
fn a_full_disk_mid_deploy_fails_cleanly_and_the_next_deploy_succeeds() {
    let mut site = Site::new();
    let small = Mount::tmpfs(&site.path("small"), 24);
    site.move_webroot(small.path.join("webroot"));
    let app = site.path("app");
    versioned_app(&app, "v1", FILES);
    site.deploy(&app).success();
    let uploads = site.context().join("uploads");
    for n in 0..20 {
        write_random(&uploads.join(format!("photo{n}.jpg")), 200_000);
    }
    let user_files = crate::support::tree(&uploads, &[]);
    let free_before = free_bytes(&small.path);

    // A release bigger than the disk: the space runs out while it is written.
    versioned_app(&app, "v2", FILES);
    write_random(&app.join("assets/video.mp4"), 30 << 20);
    let out = site.deploy(&app).arg("--keep").arg("5").run();
    assert_refused_for_space(&site, &out, &user_files, "disk full while materializing");
    assert!(
        free_bytes(&small.path) + (1 << 20) >= free_before,
        "space given back"
    );

    // User content that would not fit twice is carried all the same: it is
    // linked, not copied, and takes no room in the new release.
    std::fs::remove_file(app.join("assets/video.mp4")).unwrap();
    let filler = small.path.join("filler");
    let room = free_bytes(&small.path) as usize;
    write_random(&filler, room.saturating_sub(2 << 20));
    assert!(
        free_bytes(&small.path) < 4 << 20,
        "the user files (several MiB) no longer fit twice"
    );
    site.deploy(&app).success();
    assert_eq!(crate::support::tree(&uploads, &[]), user_files);
    std::fs::remove_file(&filler).unwrap();
    versioned_app(&app, "v3", FILES);
    site.deploy(&app).success();
    assert_eq!(assert_complete_version(&site.context(), FILES), "v3");
    assert_eq!(crate::support::tree(&uploads, &[]), user_files);
    assert_serving_whole(&site, "after the disk has room again");
}

/// Unmounts what a test mounted over `0` when dropped, even on failure.
struct Unmount(std::path::PathBuf);
impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_webroot_turned_read_only_mid_deploy_leaves_root_whole() {
    let site = Site::new();
    let app = site.path("app");
    versioned_app(&app, "v1", FILES);
    site.deploy(&app).success();
    std::fs::write(site.context().join("uploads/user.txt"), "mine").unwrap();

    // The build step stands in for an admin or a failing disk: from then on
    // the webroot is a read-only mount (files already open stay writable).
    versioned_app(&app, "v2", FILES);
    let webroot = site.webroot.display();
    let read_only =
        format!("mount --bind {webroot} {webroot} && mount -o remount,bind,ro {webroot}");
    let bind = Unmount(site.webroot.clone());
    let out = site.deploy(&app).args(["--build", &read_only]).run();
    assert_ne!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr.contains("Read-only file system"),
        "{}",
        out.stderr
    );
    assert_complete_version(&site.context(), FILES);
    assert_eq!(site.read("uploads/user.txt"), "mine");
    drop(bind);
    assert_serving_whole(&site, "after the read-only deploy");

    versioned_app(&app, "v3", FILES);
    site.deploy(&app).success();
    assert_eq!(assert_complete_version(&site.context(), FILES), "v3");
    assert_eq!(site.read("uploads/user.txt"), "mine");
    for release in site.releases() {
        assert_complete_version(&site.webroot.join(release), FILES);
    }
    let records = deployments(&site);
    assert_eq!(records[0]["outcome"], "success");
    assert!(
        ["failed", "interrupted"].contains(&records[1]["outcome"].as_str().unwrap()),
        "the read-only run is on record: {:#}",
        records[1]
    );
}

/// A TCP relay to `target` that passes at most `limit` bytes from the
/// server, then cuts both directions: a network that breaks mid-transfer.
fn breaking_relay(target: u16, limit: usize) -> u16 {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { return };
            let Ok(mut server) = TcpStream::connect(("127.0.0.1", target)) else {
                return;
            };
            let (mut client_in, mut server_out) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || std::io::copy(&mut client_in, &mut server_out));
            std::thread::spawn(move || {
                let mut passed = 0;
                let mut buffer = [0; 8192];
                while passed < limit {
                    let Ok(n) = server.read(&mut buffer) else {
                        break;
                    };
                    let n = n.min(limit - passed);
                    if n == 0 || client.write_all(&buffer[..n]).is_err() {
                        break;
                    }
                    passed += n;
                }
                let _ = client.shutdown(Shutdown::Both);
                let _ = server.shutdown(Shutdown::Both);
            });
        }
    });
    port
}

#[test]
fn the_network_to_the_git_remote_breaking_mid_fetch_changes_nothing() {
    let site = Site::new();
    let repo = Repo::new(site.dir.path(), "app");
    let scratch = site.path("version");
    let commit_version = |version: &str, big: usize| {
        versioned_app(&scratch, version, FILES);
        write_random(&scratch.join("assets/big.bin"), big);
        commit_folder(&repo, &scratch, version);
    };
    commit_version("v1", 1000);

    let port = crate::support::servers::free_port();
    let base = site.dir.path().display().to_string();
    let daemon = std::process::Command::new("git")
        .args([
            "daemon",
            "--reuseaddr",
            "--export-all",
            "--listen=127.0.0.1",
        ])
        .arg(format!("--port={port}"))
        .arg(format!("--base-path={base}"))
        .arg(&base)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let _daemon = KillOnDrop(daemon);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "git daemon did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let through = |relay: u16| format!("git://127.0.0.1:{relay}/app.git");
    let whole = breaking_relay(port, usize::MAX);
    let broken = breaking_relay(port, 256 * 1024);

    site.deploy(through(whole)).success();
    std::fs::write(site.context().join("uploads/user.txt"), "mine").unwrap();
    let before = site.live_release();
    // 8 MiB that does not compress: the fetch is cut a quarter MiB in.
    commit_version("v2", 8 << 20);
    let out = site.deploy(through(broken)).run();
    assert_eq!(out.code, Some(4), "{}", out.stderr);
    assert_eq!(site.live_release(), before);
    assert_serving_whole(&site, "fetch cut");
    assert_eq!(site.releases(), vec![before.clone()]);
    assert_last_outcome(&site, "failed");

    // The cached mirror is still good: the next fetch completes.
    site.deploy(through(whole)).success();
    assert_eq!(assert_complete_version(&site.context(), FILES), "v2");
    assert_eq!(site.read("uploads/user.txt"), "mine");
}

/// Kills a process and everything in its group (git daemon forks a
/// server per connection) when dropped.
struct KillOnDrop(std::process::Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &group])
            .status();
        let _ = self.0.wait();
    }
}
