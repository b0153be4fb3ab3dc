//! One deploy at a time per context: a second one fails naming the holder or
//! queues with --wait; a lock left by a killed process blocks nobody.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};

use crate::support::{Site, write_files};

/// Start a deploy that pauses at `point` and return once it is there.
fn paused_deploy(site: &Site, app: &std::path::Path, point: &str) -> Child {
    let mut command = site
        .deploy(app)
        .env("ZDEPLOY_FAILPOINT", format!("{point}:pause"))
        .command();
    command.stderr(Stdio::piped()).stdout(Stdio::null());
    let mut child = command.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    loop {
        let line = lines
            .next()
            .expect("paused deploy printed its pause")
            .unwrap();
        if line.contains("paused at failpoint") {
            break;
        }
    }
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    child
}

#[test]
fn a_second_deploy_fails_at_once_naming_the_holder() {
    let site = Site::new();
    let app = site.path("app");
    write_files(&app, &[("index.php", "v1")]);
    site.deploy(&app).success();
    write_files(&app, &[("index.php", "v2")]);
    let mut holder = paused_deploy(&site, &app, "materialize");
    let out = site.deploy(&app).fails_with(3);
    assert!(
        out.stderr.contains(&format!("pid {}", holder.id())),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("zdeploy deploy ROOT"), "{}", out.stderr);
    assert!(out.stderr.contains("--wait"), "{}", out.stderr);
    let out = site.zdeploy("rollback").fails_with(3);
    assert!(out.stderr.contains("being deployed"), "{}", out.stderr);
    holder.kill().unwrap();
    holder.wait().unwrap();
    // The killed holder's lock is free at once.
    site.deploy(&app).success();
    assert_eq!(site.read("index.php"), "v2");
}

#[test]
fn wait_queues_behind_the_holder() {
    let site = Site::new();
    let app = site.path("app");
    write_files(&app, &[("index.php", "v1")]);
    let mut holder = paused_deploy(&site, &app, "carry");
    let mut queued = site.deploy(&app).arg("--wait").arg("--force").command();
    queued.stdout(Stdio::null()).stderr(Stdio::null());
    let mut queued = queued.spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        queued.try_wait().unwrap().is_none(),
        "the queued deploy waits"
    );
    holder.kill().unwrap();
    holder.wait().unwrap();
    let status = queued.wait().unwrap();
    assert!(status.success());
    assert_eq!(site.read("index.php"), "v1");
    assert_eq!(
        site.releases().len(),
        1,
        "the killed deploy's half-built release was removed"
    );
}
