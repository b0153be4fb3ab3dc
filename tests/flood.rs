//! The agent under a bounded flood from loopback: forged, malformed and
//! oversized webhooks from several threads, and slow clients holding
//! connections with half-sent headers or trickled bodies. The dashboard
//! keeps answering, a real push still deploys, slow clients are cut off, and
//! memory stays bounded.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::Site;
use crate::support::agent::{Agent, demo_app, sign};
use crate::support::git::Repo;

const SECRET: &str = "flood-test-secret";
const SLOW_CLIENTS: usize = 400;
const FLOOD_THREADS: usize = 6;
const FLOOD_FOR: Duration = Duration::from_secs(12);

/// Peak resident memory of `pid` in KiB.
fn peak_rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// One raw HTTP/1.1 request; the status code, or 0 if the agent hung up.
fn raw_request(port: u16, head: &str, body: &[u8]) -> u16 {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    if stream.write_all(head.as_bytes()).is_err() || stream.write_all(body).is_err() {
        return 0;
    }
    let mut answer = [0; 12];
    match stream.read_exact(&mut answer) {
        Ok(()) => String::from_utf8_lossy(&answer[9..12]).parse().unwrap_or(0),
        Err(_) => 0,
    }
}

fn hook_head(port: u16, length: usize, signature: &str) -> String {
    format!(
        "POST /hooks/demo HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-GitHub-Event: push\r\n\
         X-Hub-Signature-256: {signature}\r\nContent-Type: application/json\r\n\
         Content-Length: {length}\r\nConnection: close\r\n\r\n"
    )
}

#[test]
fn a_flood_of_bad_webhooks_and_slow_clients_neither_blocks_the_dashboard_nor_deploys() {
    let site = Site::new();
    let repo = Repo::new(site.dir.path(), "app");
    repo.write("index.php", "v1").commit("v1");
    std::fs::write(site.path("secret"), SECRET).unwrap();
    let config = demo_app(&site.webroot, &repo.url(), &site.path("secret"), "");
    let agent = Agent::start(site.dir.path(), &config);
    let port: u16 = agent.url("").rsplit(':').next().unwrap().parse().unwrap();
    let idle_rss = peak_rss_kib(agent.pid());

    // Slow clients: half the headers, or all of them and a trickled body.
    let mut slow = Vec::new();
    for n in 0..SLOW_CLIENTS {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let head = if n % 2 == 0 {
            format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Slow: ")
        } else {
            hook_head(port, 100_000, "sha256=00")
        };
        stream.write_all(head.as_bytes()).unwrap();
        slow.push(stream);
    }

    // The flood: forged signatures, garbage, oversized bodies.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let mut flooders = Vec::new();
    for thread in 0..FLOOD_THREADS {
        let (stop, sent) = (stop.clone(), sent.clone());
        flooders.push(std::thread::spawn(move || {
            let mut statuses = std::collections::BTreeMap::new();
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let (body, signature) = match (thread + n) % 3 {
                    0 => (
                        b"{\"ref\":\"refs/heads/main\"}".to_vec(),
                        "sha256=deadbeef".to_string(),
                    ),
                    1 => {
                        let garbage = b"{\"ref\": [[[[".to_vec();
                        let signature = format!("sha256={}", sign(SECRET, "{\"ref\": [[[["));
                        (garbage, signature)
                    }
                    _ => (vec![b'x'; 2 << 20], "sha256=00".to_string()),
                };
                let status = raw_request(port, &hook_head(port, body.len(), &signature), &body);
                *statuses.entry(status).or_insert(0usize) += 1;
                sent.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
            statuses
        }));
    }

    // Meanwhile the dashboard answers and a real push deploys.
    let started = Instant::now();
    let mut dashboard_answers = 0;
    let mut pushed = None;
    while started.elapsed() < FLOOD_FOR {
        let page = agent.get("/");
        assert_eq!(page.status, 200, "the dashboard answers during the flood");
        dashboard_answers += 1;
        if pushed.is_none() && started.elapsed() > Duration::from_secs(2) {
            let commit = repo.write("index.php", "v2").commit("v2");
            let body = format!("{{\"ref\":\"refs/heads/main\",\"after\":\"{commit}\"}}");
            let signature = format!("sha256={}", sign(SECRET, &body));
            let status = raw_request(
                port,
                &hook_head(port, body.len(), &signature),
                body.as_bytes(),
            );
            assert_eq!(status, 202, "a real push is taken during the flood");
            pushed = Some(commit);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    let mut statuses = std::collections::BTreeMap::new();
    for flooder in flooders {
        for (status, count) in flooder.join().unwrap() {
            *statuses.entry(status).or_insert(0) += count;
        }
    }
    let commit = pushed.unwrap();
    agent.wait_for(
        "the pushed commit to go live",
        Duration::from_secs(60),
        || agent.live_commit("demo").as_deref() == Some(commit.as_str()),
    );
    assert_eq!(site.read("index.php"), "v2");

    // Every flooding request was refused for what it was, none deployed.
    let total = sent.load(Ordering::Relaxed);
    eprintln!("flood: {total} requests {statuses:?}, {dashboard_answers} dashboard answers");
    assert!(total > 100, "{total}");
    let refused: usize = [401, 400, 413].iter().filter_map(|s| statuses.get(s)).sum();
    assert!(refused * 10 >= total * 9, "{statuses:?}");
    assert!(
        !statuses.contains_key(&202) && !statuses.contains_key(&500),
        "{statuses:?}"
    );
    let runs = agent.deployments("demo");
    assert_eq!(runs.len(), 1, "only the real push deployed: {runs:?}");

    // Slow clients were cut off instead of being waited on forever.
    for mut stream in slow {
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
        let answer = String::from_utf8_lossy(&rest);
        assert!(
            rest.is_empty()
                || answer.starts_with("HTTP/1.1 408")
                || answer.starts_with("HTTP/1.1 400"),
            "a slow client got: {answer}"
        );
    }

    let peak = peak_rss_kib(agent.pid());
    eprintln!("agent peak RSS: idle {idle_rss} KiB, after the flood {peak} KiB");
    assert!(peak < 128 * 1024, "memory stays bounded: peak {peak} KiB");
}
