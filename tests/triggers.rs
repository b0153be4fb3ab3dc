//! A thousand triggers over a minute from the CLI, the API and webhooks at
//! once, with commits pushed throughout: every trigger the agent accepted
//! is served by exactly one deploy (none lost, none run twice, a redelivered
//! webhook not counted again), every CLI deploy runs once, the newest commit
//! is live at the end and the history is consistent.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::agent::{Agent, demo_app, sign};
use crate::support::git::Repo;
use crate::support::{Site, Zdeploy};

const SECRET: &str = "trigger-test-secret";
const WINDOW: Duration = Duration::from_secs(60);

/// The trigger numbers a deployment record says it served: "[trigger 7]"
/// or "[triggers 7-12]".
fn served(trigger: &str) -> Option<(u64, u64)> {
    let inside = trigger.split_once('[')?.1.strip_suffix(']')?;
    let numbers = inside.split_once(' ')?.1;
    Some(match numbers.split_once('-') {
        Some((first, last)) => (first.parse().ok()?, last.parse().ok()?),
        None => (numbers.parse().ok()?, numbers.parse().ok()?),
    })
}

#[test]
fn a_thousand_triggers_in_a_minute_each_served_by_exactly_one_deploy() {
    let site = Site::new();
    let repo = Repo::new(site.dir.path(), "app");
    repo.write("index.php", "v0").commit("v0");
    std::fs::write(site.path("secret"), SECRET).unwrap();
    let config = demo_app(&site.webroot, &repo.url(), &site.path("secret"), "keep = 2");
    let agent = Agent::start(site.dir.path(), &config);

    let done = AtomicBool::new(false);
    let accepted = Mutex::new(BTreeSet::new());
    let (duplicates, cli_deploys, commits) = (Mutex::new(0), Mutex::new(0), Mutex::new(Vec::new()));
    let started = Instant::now();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut n = 1;
            while started.elapsed() < WINDOW {
                let commit = repo
                    .write("index.php", &format!("v{n}"))
                    .commit(&format!("v{n}"));
                commits.lock().unwrap().push(commit);
                n += 1;
                std::thread::sleep(Duration::from_secs(3));
            }
            done.store(true, Ordering::SeqCst);
        });
        for sender in 0..3 {
            let (agent, done, accepted, duplicates) = (&agent, &done, &accepted, &duplicates);
            scope.spawn(move || {
                let mut n = 0;
                while !done.load(Ordering::SeqCst) {
                    let delivery = format!("{sender}-{n}");
                    let body = json!({"ref": "refs/heads/main", "after": delivery}).to_string();
                    let signature = format!("sha256={}", sign(SECRET, &body));
                    // Every tenth delivery comes twice, as providers retry.
                    for _ in 0..if n % 10 == 0 { 2 } else { 1 } {
                        let answer = agent.post(
                            "/hooks/demo",
                            &[
                                ("X-GitHub-Event", "push"),
                                ("X-GitHub-Delivery", &delivery),
                                ("X-Hub-Signature-256", &signature),
                                ("Content-Type", "application/json"),
                            ],
                            &body,
                        );
                        let answer_json = answer.json();
                        match (answer.status, answer_json["status"].as_str()) {
                            (202, Some("queued")) => {
                                let id = answer_json["trigger"].as_u64().unwrap();
                                assert!(accepted.lock().unwrap().insert(id), "trigger {id} twice");
                            }
                            (200, Some("duplicate")) => *duplicates.lock().unwrap() += 1,
                            other => panic!("webhook answered {other:?}: {}", answer.body),
                        }
                    }
                    n += 1;
                    std::thread::sleep(Duration::from_millis(90));
                }
            });
        }
        scope.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                let answer = agent.act("demo", "deploy", "{}");
                assert_eq!(answer.status, 202, "{}", answer.body);
                let id = answer.json()["trigger"].as_u64().unwrap();
                assert!(accepted.lock().unwrap().insert(id), "trigger {id} twice");
                std::thread::sleep(Duration::from_millis(150));
            }
        });
        scope.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                let out = Zdeploy::new()
                    .args(["deploy", "demo", "--wait", "--config"])
                    .arg(&agent.config)
                    .run();
                assert_eq!(out.code, Some(0), "{}", out.stderr);
                *cli_deploys.lock().unwrap() += 1;
                std::thread::sleep(Duration::from_millis(250));
            }
        });
    });
    let accepted = accepted.into_inner().unwrap();
    let (duplicates, cli_deploys) = (
        duplicates.into_inner().unwrap(),
        cli_deploys.into_inner().unwrap(),
    );
    let total = accepted.len() + duplicates + cli_deploys;
    assert!(total >= 1000, "{total} triggers");

    // The last trigger came after the last commit: the newest is live.
    agent.wait_idle("demo");
    let newest = commits.into_inner().unwrap().pop().unwrap();
    assert_eq!(agent.live_commit("demo").as_deref(), Some(newest.as_str()));

    // The whole history, through the CLI (the API pages at 1000).
    let out = site
        .zdeploy("status")
        .args(["--json", "--limit", "1000000"])
        .success();
    let status: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let runs = status["deployments"].as_array().unwrap().clone();
    assert!(
        runs.iter()
            .all(|d| d["outcome"] != "running" && d["finished_ms"].is_number())
    );
    assert!(
        runs.iter()
            .all(|d| ["success", "unchanged"].contains(&d["outcome"].as_str().unwrap())),
        "{runs:?}"
    );
    let ids: Vec<i64> = runs.iter().map(|d| d["id"].as_i64().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] > w[1]),
        "newest first, no id twice"
    );
    let cli_records = runs.iter().filter(|d| d["trigger"] == "cli").count();
    assert_eq!(cli_records, cli_deploys, "every CLI deploy recorded once");

    // Every accepted trigger served by exactly one agent deploy.
    let mut served_ids = BTreeSet::new();
    for run in runs.iter().filter(|d| d["trigger"] != "cli") {
        let trigger = run["trigger"].as_str().unwrap();
        let (first, last) = served(trigger).unwrap_or_else(|| panic!("{trigger}"));
        for id in first..=last {
            assert!(served_ids.insert(id), "trigger {id} served twice");
        }
    }
    // The first deploy of the agent's own (poll-less) start is not ours.
    assert_eq!(served_ids, accepted, "every accepted trigger served");
    eprintln!(
        "{total} triggers ({} accepted by the agent, {duplicates} redeliveries, {cli_deploys} CLI) -> {} deploys",
        accepted.len(),
        runs.len()
    );
}
