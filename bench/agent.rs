//! Benchmark of `zdeploy agent`: idle memory with 1 and 50 apps, CPU per
//! poll cycle for 50 apps (each asks its remote with `git ls-remote`), and
//! push-to-live latency for a one-file change: from sending the webhook to
//! ROOT pointing at the new release, against the same change found by
//! polling every second. Run it with `bench/agent`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::Site;
use support::agent::{Agent, sign};
use support::git::Repo;

const SECRET: &str = "bench-secret";
const PUSHES: usize = 15;

/// Resident memory of `pid`, in KiB.
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// CPU time of `pid` and its waited-for children (git), in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    // utime, stime, cutime, cstime are fields 14-17 (1-based) of the whole line.
    fields[11..15]
        .iter()
        .map(|f| f.parse::<u64>().unwrap())
        .sum()
}

fn ticks_per_second() -> u64 {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(100)
}

fn apps_config(site: &Site, repo: &Repo, count: usize, extra: &str) -> String {
    let mut text = String::new();
    for n in 0..count {
        let webroot = site.path(&format!("web{n}"));
        std::fs::create_dir_all(&webroot).unwrap();
        text.push_str(&format!(
            "[apps.app{n}]\nwebroot = \"{}\"\nsource = \"{}\"\nref = \"main\"\nsettle = \"0s\"\ndrain = \"0s\"\n{extra}\n",
            webroot.display(),
            repo.url()
        ));
    }
    text
}

fn idle_memory(apps: usize) -> f64 {
    let site = Site::new();
    let repo = Repo::new(site.dir.path(), "app");
    repo.write("index.php", "v1").commit("v1");
    let agent = Agent::start(site.dir.path(), &apps_config(&site, &repo, apps, ""));
    std::thread::sleep(Duration::from_secs(2));
    agent.get("/");
    agent.get("/metrics");
    std::thread::sleep(Duration::from_secs(1));
    rss_kib(agent.pid()) as f64 / 1024.0
}

/// CPU ms per poll cycle of 50 apps checking every 2 s, once all are live.
fn poll_cpu(apps: usize) -> (f64, f64) {
    let site = Site::new();
    let repo = Repo::new(site.dir.path(), "app");
    repo.write("index.php", "v1").commit("v1");
    let agent = Agent::start(
        site.dir.path(),
        &apps_config(&site, &repo, apps, "interval = \"2s\""),
    );
    agent.wait_for("every app live", Duration::from_secs(300), || {
        (0..apps).all(|n| agent.live_commit(&format!("app{n}")).is_some())
    });
    std::thread::sleep(Duration::from_secs(3));
    let (ticks, started) = (cpu_ticks(agent.pid()), Instant::now());
    let cycles = 10;
    std::thread::sleep(Duration::from_secs(2 * cycles));
    let used = (cpu_ticks(agent.pid()) - ticks) as f64 / ticks_per_second() as f64;
    let measured_cycles = started.elapsed().as_secs_f64() / 2.0;
    (
        used * 1000.0 / measured_cycles,
        rss_kib(agent.pid()) as f64 / 1024.0,
    )
}

/// Push-to-live times: a one-file commit, then a webhook (or nothing, when
/// polling), until ROOT names a new release.
fn push_to_live(by_webhook: bool) -> Vec<Duration> {
    let site = Site::new();
    let repo = Repo::new(site.dir.path(), "app");
    for n in 0..50 {
        repo.write(&format!("lib/file{n}.php"), &format!("<?php // {n}"));
    }
    repo.write("index.php", "v0").commit("v0");
    std::fs::write(site.path("secret"), SECRET).unwrap();
    let extra = if by_webhook {
        format!(
            "webhook_secret_file = \"{}\"",
            site.path("secret").display()
        )
    } else {
        "interval = \"1s\"".to_string()
    };
    let webroot = site.path("web0");
    let config = apps_config(&site, &repo, 1, &extra).replace(
        &format!("webroot = \"{}\"", webroot.display()),
        &format!("webroot = \"{}\"", site.webroot.display()),
    );
    let agent = Agent::start(site.dir.path(), &config);
    agent.act("app0", "deploy", "{}");
    agent.wait_for("the first deploy", Duration::from_secs(30), || {
        agent.live_commit("app0").is_some()
    });
    let mut times = Vec::new();
    for n in 1..=PUSHES {
        agent.wait_idle("app0");
        // Release names have one-second resolution: start in a fresh second.
        std::thread::sleep(Duration::from_millis(1100));
        let before = site.live_release();
        repo.write("index.php", &format!("v{n}"))
            .commit(&format!("v{n}"));
        let started = Instant::now();
        if by_webhook {
            let body = format!("{{\"ref\":\"main\",\"n\":{n}}}");
            let answer = agent.post(
                "/hooks/app0",
                &[(
                    "X-Zdeploy-Signature",
                    &format!("sha256={}", sign(SECRET, &body)),
                )],
                &body,
            );
            assert_eq!(answer.status, 202, "{}", answer.body);
        }
        while site.live() == Some(before.clone()) {
            std::thread::sleep(Duration::from_millis(2));
            assert!(started.elapsed() < Duration::from_secs(30), "no switch");
        }
        times.push(started.elapsed());
    }
    times
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary(mut times: Vec<Duration>) -> String {
    times.sort();
    let median = times[times.len() / 2];
    let worst = *times.last().unwrap();
    format!("{:.0} ms | {:.0} ms", ms(median), ms(worst))
}

fn main() {
    println!(
        "zdeploy agent, release build, {} cores\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!("| measure | result | goal |\n|---|---|---|");
    println!("| idle RSS, 1 app | {:.1} MiB | < 20 MiB |", idle_memory(1));
    println!(
        "| idle RSS, 50 apps | {:.1} MiB | < 20 MiB |",
        idle_memory(50)
    );
    let (cpu, rss) = poll_cpu(50);
    println!(
        "| CPU per poll cycle, 50 apps (git ls-remote each, file:// remotes) | {cpu:.0} ms | — |"
    );
    println!("| RSS while polling 50 apps | {rss:.1} MiB | — |");
    println!(
        "\n| push to live, one-file change ({PUSHES} pushes) | median | worst |\n|---|---|---|"
    );
    println!(
        "| webhook → ROOT switched | {} |",
        summary(push_to_live(true))
    );
    println!(
        "| polling every 1 s → ROOT switched | {} |",
        summary(push_to_live(false))
    );
}
