//! A fleet whose uploads live on shared storage, as the README shows: a
//! `shared` path on a network filesystem (sshfs from a storage host, each
//! web host mounting it at the same path), zdeploy's own state left on each
//! host's disk. Uploads made through the balancer on any host are served by
//! every host, through deploys and rollbacks, and none is lost.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::fleet::{app_version, controller, fleet_deploy};
use crate::support::fleet::{Fleet, HostKind};
use crate::support::git::Repo;
use crate::support::load::{Load, deploys_and_rollbacks, judge};

/// GET `path` from a host's own web server; the body when it answers 200.
fn fetch(address: &str, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect((address, 80)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

#[test]
fn uploads_on_shared_storage_are_served_by_every_host_through_deploys_and_rollbacks() {
    let mut fleet = Fleet::start(3);
    let repo = Repo::new(fleet.root.path(), "shop");
    let scratch = fleet.root.path().join("scratch");
    app_version(&repo, &scratch, "v0");
    let config = fleet.config("shop", &repo.bare, "shared = [\"saves\"]\nkeep = 3\n");
    let port = fleet.start_balancer();
    // The storage host: not a web server of the app, only sshd and a folder.
    let storage = fleet.add_host(HostKind::Ssh, |dir| {
        std::fs::create_dir_all(dir.join("uploads")).unwrap();
        Vec::new()
    });
    let storage_address = fleet.hosts[storage].address.clone();
    let p = fleet.path.display().to_string();
    let key = fleet.root.path().join("id_ed25519");
    let known = fleet.root.path().join("known_hosts");
    for host in 0..3 {
        std::fs::create_dir_all(fleet.hosts[host].dir.join("www/.zdeploy/ROOT/shared/saves"))
            .unwrap();
        let mount = format!(
            "sshfs -o allow_other,sftp_server=/usr/lib/openssh/sftp-server,IdentityFile={key},UserKnownHostsFile={known},StrictHostKeyChecking=yes \
             root@{storage_address}:{p}/uploads {p}/www/.zdeploy/ROOT/shared/saves",
            key = key.display(),
            known = known.display(),
        );
        let out = std::process::Command::new("ssh")
            .arg("-F")
            .arg(&fleet.ssh_config)
            .arg(&fleet.hosts[host].address)
            .arg(&mount)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mounting the shared storage on host {host}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    fleet_deploy(&config).success();
    let load = Load::start(port, 2, true);
    std::thread::sleep(Duration::from_millis(300));
    let web_hosts = || fleet.live()[..3].to_vec();
    let ops = deploys_and_rollbacks(
        4,
        |version| {
            app_version(&repo, &scratch, version);
            let out = fleet_deploy(&config).arg("--json").success();
            let result: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
            assert_eq!(
                web_hosts(),
                vec![result["release"].as_str().map(str::to_string); 3]
            );
            // Shared uploads are not user content the hosts differ in.
            assert_eq!(result["user_content_differs"], serde_json::json!([]));
        },
        || {
            controller(&config).args(["rollback", "shop"]).success();
        },
    );
    std::thread::sleep(Duration::from_millis(300));
    let (samples, saved, save_failures) = load.finish();
    let verdict = judge(&samples, &ops, "v0");
    assert!(
        verdict.failed.is_empty(),
        "failed: {:?}",
        &verdict.failed[..verdict.failed.len().min(5)]
    );
    assert!(save_failures.is_empty(), "saves failed: {save_failures:?}");
    assert!(saved.len() > 20, "the saver ran: {}", saved.len());
    // Every upload is on the storage host, and every web host serves it.
    let uploads = fleet.hosts[storage].dir.join("uploads");
    let mut missing = Vec::new();
    for id in &saved {
        if !uploads.join(format!("{id}.txt")).exists() {
            missing.push(format!("{id} (not stored)"));
        }
        for host in 0..3 {
            let body = fetch(&fleet.hosts[host].address, &format!("/saves/{id}.txt"));
            if body.as_deref() != Some(&format!("saved {id}")) {
                missing.push(format!("{id} (not served by host {host})"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} uploads: {:?}",
        missing.len(),
        saved.len(),
        &missing[..missing.len().min(5)]
    );
    // zdeploy's own state stayed on each host's disk.
    for host in 0..3 {
        let history = fleet.hosts[host]
            .dir
            .join("www/.zdeploy/ROOT/history.sqlite");
        assert!(history.is_file());
        assert!(!uploads.join("history.sqlite").exists());
    }
    let status = controller(&config).args(["status", "shop"]).success();
    assert!(
        status.stdout.contains("fleet: every host serves"),
        "{}",
        status.stdout
    );
    assert!(!status.stdout.contains("lacks"), "{}", status.stdout);
}
