//! `zdeploy agent` as a real process on a loopback port with real git
//! repositories: polling, webhooks of every provider, bursts of triggers,
//! the health gate, notifications, signals and the API's guards.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::agent::{Agent, demo_app, sign};
use crate::support::git::Repo;
use crate::support::http::{FileServer, Recorder};
use crate::support::servers::free_port;
use crate::support::{Site, Zdeploy};

pub(crate) const SECRET: &str = "webhook-secret-for-tests";

/// A site with a repo on `main` holding one commit, and the app's config.
struct Setup {
    site: Site,
    repo: Repo,
}

impl Setup {
    fn new() -> Self {
        let site = Site::new();
        let repo = Repo::new(site.dir.path(), "app");
        repo.write("index.php", "<?php echo 'v1';")
            .commit("first version");
        std::fs::write(site.path("secret"), format!("{SECRET}\n")).unwrap();
        Setup { site, repo }
    }

    /// `[apps.demo]` for this site plus `extra` keys.
    fn app_config(&self, extra: &str) -> String {
        demo_app(
            &self.site.webroot,
            &self.repo.url(),
            &self.site.path("secret"),
            extra,
        )
    }

    fn start(&self, extra: &str) -> Agent {
        Agent::start(self.site.dir.path(), &self.app_config(extra))
    }

    fn read_live(&self, file: &str) -> String {
        self.site.read(file)
    }
}

pub(crate) fn github_push(
    agent: &Agent,
    reference: &str,
    delivery: &str,
) -> crate::support::agent::Answer {
    let body = json!({"ref": reference, "after": "0123", "repository": {"default_branch": "main"}})
        .to_string();
    let signature = format!("sha256={}", sign(SECRET, &body));
    agent.post(
        "/hooks/demo",
        &[
            ("X-GitHub-Event", "push"),
            ("X-GitHub-Delivery", delivery),
            ("X-Hub-Signature-256", &signature),
            ("Content-Type", "application/json"),
        ],
        &body,
    )
}

fn successes(agent: &Agent) -> usize {
    agent
        .deployments("demo")
        .iter()
        .filter(|d| d["kind"] == "deploy" && d["outcome"] == "success")
        .count()
}

#[test]
fn a_push_to_the_watched_branch_goes_live_within_the_interval_and_other_branches_do_nothing() {
    let setup = Setup::new();
    let agent = setup.start("interval = \"1s\"");
    agent.wait_for("the first deploy", Duration::from_secs(30), || {
        agent.live_commit("demo").is_some()
    });
    assert_eq!(setup.read_live("index.php"), "<?php echo 'v1';");

    let pushed = Instant::now();
    let commit = setup
        .repo
        .write("index.php", "<?php echo 'v2';")
        .commit("second version");
    agent.wait_for("the push to go live", Duration::from_secs(10), || {
        agent.live_commit("demo").as_deref() == Some(commit.as_str())
    });
    eprintln!("push to live: {:?}", pushed.elapsed());
    assert_eq!(setup.read_live("index.php"), "<?php echo 'v2';");
    let app = agent.app("demo");
    assert_eq!(app["live"]["message"], "second version (Test Author)");

    setup.repo.checkout_new_branch("feature");
    setup
        .repo
        .write("index.php", "<?php echo 'feature';")
        .commit("work in progress");
    let runs = agent.deployments("demo").len();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(agent.deployments("demo").len(), runs, "nothing ran");
    assert_eq!(agent.live_commit("demo").as_deref(), Some(commit.as_str()));
    assert_eq!(setup.read_live("index.php"), "<?php echo 'v2';");
}

#[test]
fn a_failing_remote_is_retried_with_backoff_and_shown() {
    let setup = Setup::new();
    let agent = setup.start("interval = \"1s\"");
    agent.wait_for("the first deploy", Duration::from_secs(30), || {
        agent.live_commit("demo").is_some()
    });
    let moved = setup.site.path("moved.git");
    std::fs::rename(&setup.repo.bare, &moved).unwrap();
    agent.wait_for("a poll error", Duration::from_secs(10), || {
        agent.app("demo")["poll"]["failures"].as_u64() >= Some(2)
    });
    let app = agent.app("demo");
    assert!(
        app["poll"]["error"]
            .as_str()
            .unwrap()
            .contains("cannot ask"),
        "{app}"
    );
    let page = agent.get("/").body;
    assert!(
        page.contains("Last check of the remote failed"),
        "the dashboard shows it"
    );
    let metrics = agent.get("/metrics").body;
    assert!(
        metrics.contains("zdeploy_poll_errors_total{app=\"demo\"}"),
        "{metrics}"
    );
    // Back off: the interval doubles per failure, so fewer checks than seconds.
    let failures = |agent: &Agent| agent.app("demo")["poll"]["failures"].as_u64().unwrap();
    let before = failures(&agent);
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        failures(&agent) - before <= 2,
        "backed off: {before} -> {}",
        failures(&agent)
    );

    std::fs::rename(&moved, &setup.repo.bare).unwrap();
    let commit = setup
        .repo
        .write("index.php", "<?php echo 'v2';")
        .commit("v2");
    agent.wait_for("recovery", Duration::from_secs(40), || {
        agent.live_commit("demo").as_deref() == Some(commit.as_str())
    });
    assert!(agent.app("demo")["poll"]["error"].is_null());
}

/// A provider's name, the headers it sends and the body it signs.
type Delivery = (&'static str, Vec<(String, String)>, String);

/// Signed deliveries of each provider, with bodies from `body_for`.
fn deliveries(body_for: &dyn Fn(&str) -> String) -> Vec<Delivery> {
    let github = body_for("github");
    let gitlab = body_for("gitlab");
    let gitea = body_for("gitea");
    let bitbucket = body_for("bitbucket");
    let generic = body_for("generic");
    let h = |pairs: &[(&str, String)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect::<Vec<_>>()
    };
    vec![
        (
            "github",
            h(&[
                ("X-GitHub-Event", "push".into()),
                ("X-GitHub-Delivery", "gh-1".into()),
                (
                    "X-Hub-Signature-256",
                    format!("sha256={}", sign(SECRET, &github)),
                ),
            ]),
            github,
        ),
        (
            "gitlab",
            h(&[
                ("X-Gitlab-Event", "Push Hook".into()),
                ("X-Gitlab-Event-UUID", "gl-1".into()),
                ("X-Gitlab-Token", SECRET.into()),
            ]),
            gitlab,
        ),
        (
            "gitea",
            h(&[
                ("X-Gitea-Event", "push".into()),
                ("X-Gitea-Delivery", "gt-1".into()),
                ("X-Gitea-Signature", sign(SECRET, &gitea)),
            ]),
            gitea,
        ),
        (
            "bitbucket",
            h(&[
                ("X-Event-Key", "repo:push".into()),
                ("X-Request-UUID", "bb-1".into()),
                (
                    "X-Hub-Signature",
                    format!("sha256={}", sign(SECRET, &bitbucket)),
                ),
            ]),
            bitbucket,
        ),
        (
            "generic",
            h(&[
                ("X-Zdeploy-Delivery", "zd-1".into()),
                (
                    "X-Zdeploy-Signature",
                    format!("sha256={}", sign(SECRET, &generic)),
                ),
            ]),
            generic,
        ),
    ]
}

fn push_body(provider: &str, branch: &str) -> String {
    match provider {
        "bitbucket" => json!({"push": {"changes": [{"new": {"type": "branch", "name": branch, "target": {"hash": "0123"}}}]}}).to_string(),
        "generic" => json!({"ref": branch}).to_string(),
        _ => json!({"ref": format!("refs/heads/{branch}"), "after": "0123"}).to_string(),
    }
}

fn send(agent: &Agent, headers: &[(String, String)], body: &str) -> crate::support::agent::Answer {
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    agent.post("/hooks/demo", &headers, body)
}

#[test]
fn webhooks_of_every_provider_are_verified_before_anything_is_deployed() {
    let setup = Setup::new();
    let agent = setup.start("");
    let mut expected_live = None;
    for (provider, headers, body) in deliveries(&|p| push_body(p, "main")) {
        // Wrong signature, then missing: refused, nothing runs.
        let runs = agent.deployments("demo").len();
        let mut forged = headers.clone();
        for (name, value) in forged.iter_mut() {
            if name.contains("Signature") || name.contains("Token") {
                *value = if value.starts_with("sha256=") {
                    format!("sha256={}", sign("wrong", &body))
                } else if name.contains("Token") {
                    "wrong".into()
                } else {
                    sign("wrong", &body)
                };
            }
        }
        let answer = send(&agent, &forged, &body);
        assert_eq!(answer.status, 401, "{provider} forged: {}", answer.body);
        let unsigned: Vec<_> = headers
            .iter()
            .filter(|(n, _)| !n.contains("Signature") && !n.contains("Token"))
            .cloned()
            .collect();
        let answer = send(&agent, &unsigned, &body);
        assert_eq!(answer.status, 401, "{provider} unsigned: {}", answer.body);
        assert_eq!(
            agent.deployments("demo").len(),
            runs,
            "{provider}: nothing ran"
        );

        // Signed: queued and deployed.
        let commit = setup
            .repo
            .write("index.php", &format!("<?php echo '{provider}';"))
            .commit(&format!("for {provider}"));
        let answer = send(&agent, &headers, &body);
        assert_eq!(answer.status, 202, "{provider}: {}", answer.body);
        assert_eq!(answer.json()["status"], "queued", "{provider}");
        agent.wait_idle("demo");
        agent.wait_for("the deploy", Duration::from_secs(30), || {
            agent.live_commit("demo").as_deref() == Some(commit.as_str())
        });
        assert_eq!(
            setup.read_live("index.php"),
            format!("<?php echo '{provider}';")
        );

        // The same delivery again is ignored.
        let runs = agent.deployments("demo").len();
        let answer = send(&agent, &headers, &body);
        assert_eq!(answer.status, 200, "{provider} repeated: {}", answer.body);
        assert_eq!(answer.json()["status"], "duplicate");
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            agent.deployments("demo").len(),
            runs,
            "{provider}: a repeat runs nothing"
        );
        expected_live = Some(commit);
    }

    // A push to another branch is answered and ignored.
    for (provider, mut headers, body) in deliveries(&|p| push_body(p, "feature")) {
        for (name, value) in headers.iter_mut() {
            if name.contains("Delivery") || name.contains("UUID") {
                value.push_str("-other");
            }
        }
        let answer = send(&agent, &headers, &body);
        assert_eq!(answer.status, 202, "{provider}: {}", answer.body);
        assert_eq!(answer.json()["status"], "ignored", "{provider}");
        assert!(
            answer.json()["reason"]
                .as_str()
                .unwrap()
                .contains("feature")
        );
    }

    // Pings are answered.
    let ping = json!({"zen": "hi"}).to_string();
    let answer = agent.post(
        "/hooks/demo",
        &[
            ("X-GitHub-Event", "ping"),
            ("X-GitHub-Delivery", "ping-1"),
            (
                "X-Hub-Signature-256",
                &format!("sha256={}", sign(SECRET, &ping)),
            ),
        ],
        &ping,
    );
    assert_eq!(
        (answer.status, answer.json()["status"].clone()),
        (200, json!("pong"))
    );

    // Too big: 413 before anything reads it.
    let huge = "x".repeat(2 * 1024 * 1024);
    let status = agent.post_raw(
        "/hooks/demo",
        &[(
            "X-Hub-Signature-256",
            &format!("sha256={}", sign(SECRET, &huge)),
        )],
        &huge,
    );
    assert_eq!(status, 413);

    // Malformed JSON with a good signature: 400; unknown app: 404.
    let garbage = "{not json";
    let answer = agent.post(
        "/hooks/demo",
        &[("X-Zdeploy-Signature", &sign(SECRET, garbage))],
        garbage,
    );
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert_eq!(agent.post("/hooks/nope", &[], "").status, 404);

    agent.wait_idle("demo");
    assert_eq!(
        agent.live_commit("demo"),
        expected_live,
        "no refused request deployed"
    );
    let metrics = agent.get("/metrics").body;
    assert!(
        metrics
            .contains("zdeploy_webhook_rejections_total{app=\"demo\",reason=\"bad_signature\"} 5")
            && metrics.contains(
                "zdeploy_webhook_rejections_total{app=\"demo\",reason=\"missing_signature\"} 5"
            ),
        "{metrics}"
    );
    let log = agent.log.lock().unwrap().clone();
    assert!(log.contains("webhook refused"), "rejections are logged");
    assert!(!log.contains(SECRET), "the secret never reaches the log");
}

#[test]
fn fifty_triggers_at_once_end_in_at_most_two_deploys_with_the_newest_commit_live() {
    let setup = Setup::new();
    let agent = setup.start("build = [\"sleep 1\"]");
    assert_eq!(agent.act("demo", "deploy", "{}").status, 202);
    agent.wait_for("the first deploy", Duration::from_secs(60), || {
        agent.live_commit("demo").is_some()
    });
    agent.wait_idle("demo");
    let before = successes(&agent);
    let newest = setup
        .repo
        .write("index.php", "<?php echo 'newest';")
        .commit("newest");
    let config = agent.config.clone();
    std::thread::scope(|scope| {
        for n in 0..50 {
            let (agent, config) = (&agent, &config);
            scope.spawn(move || match n % 5 {
                0 | 1 => {
                    let answer = github_push(agent, "refs/heads/main", &format!("burst-{n}"));
                    assert_eq!(answer.status, 202, "{}", answer.body);
                }
                2 | 3 => {
                    let answer = agent.act("demo", "deploy", "{}");
                    assert_eq!(answer.status, 202, "{}", answer.body);
                }
                _ => {
                    // The CLI beside the agent: it deploys, or finds the lock held.
                    let out = Zdeploy::new()
                        .args(["deploy", "demo", "--config"])
                        .arg(config)
                        .run();
                    assert!(matches!(out.code, Some(0) | Some(3)), "{}", out.stderr);
                }
            });
        }
    });
    agent.wait_idle("demo");
    let deployed = successes(&agent) - before;
    assert!((1..=2).contains(&deployed), "{deployed} deploys ran");
    assert_eq!(agent.live_commit("demo").as_deref(), Some(newest.as_str()));
    assert_eq!(setup.read_live("index.php"), "<?php echo 'newest';");
    let runs = agent.deployments("demo");
    assert!(
        runs.iter()
            .all(|d| d["outcome"] != "running" && d["finished_ms"].is_number()),
        "every run finished: {runs:?}"
    );
    let releases = agent.get("/api/apps/demo/releases").json();
    let live: Vec<_> = releases
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["live"] == true)
        .collect();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0]["commit"], newest.as_str());
    assert!(
        releases
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["state"] == "complete"),
        "{releases}"
    );
}

#[test]
fn a_release_whose_health_url_fails_is_rolled_back_by_the_agent_and_notified() {
    let setup = Setup::new();
    setup.repo.write("healthz.txt", "ok").commit("healthy");
    let server = FileServer::start(&setup.site.webroot);
    let notified = Recorder::start(&[500, 200]);
    let agent = setup.start(&format!(
        "health = {{ url = \"http://{}/ROOT/healthz.txt\", timeout = \"2s\" }}\nnotify = {{ url = \"http://{}/hook/T0/SECRETPATH\" }}",
        server.address, notified.address
    ));
    agent.act("demo", "deploy", "{}");
    agent.wait_for("the first deploy", Duration::from_secs(30), || {
        agent.live_commit("demo").is_some()
    });
    agent.wait_idle("demo");
    let good = agent.app("demo")["live"]["release"]
        .as_str()
        .unwrap()
        .to_string();
    setup
        .repo
        .remove("healthz.txt")
        .commit("breaks the health check");
    agent.act("demo", "deploy", "{}");
    agent.wait_idle("demo");
    let app = agent.app("demo");
    assert_eq!(
        app["live"]["release"],
        good.as_str(),
        "switched back: {app}"
    );
    let last = &agent.deployments("demo")[0];
    assert_eq!(last["outcome"], "failed");
    assert!(
        last["error"]
            .as_str()
            .unwrap()
            .contains(&format!("switched back to {good}")),
        "{last}"
    );
    let releases = agent.get("/api/apps/demo/releases").json();
    assert!(
        releases
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["state"] == "failed"),
        "the bad release is marked failed: {releases}"
    );
    // One success and one failure, each sent (the first try answered 500).
    agent.wait_for("notifications", Duration::from_secs(20), || {
        notified.bodies.lock().unwrap().len() >= 3
    });
    let bodies = notified.bodies.lock().unwrap().clone();
    let messages: Vec<serde_json::Value> = bodies
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .collect();
    assert!(
        messages.iter().any(
            |m| m["event"] == "succeeded" && m["text"].as_str().unwrap().contains("now serves")
        )
    );
    assert!(
        messages.iter().any(|m| m["event"] == "switched_back"
            && m["text"].as_str().unwrap().contains("switched back"))
    );
    let log = agent.log.lock().unwrap().clone();
    assert!(
        !log.contains("SECRETPATH"),
        "notify URLs are not logged whole"
    );
}

#[test]
fn sigterm_lets_a_running_deploy_finish_or_abandons_it_with_root_whole() {
    let setup = Setup::new();
    // A deploy that finishes within the timeout completes, then the agent exits.
    let mut agent = setup.start("build = [\"sleep 2\"]\n[agent]\nshutdown_timeout = \"60s\"");
    agent.act("demo", "deploy", "{}");
    agent.wait_for("the deploy to run", Duration::from_secs(30), || {
        !agent.app("demo")["running"].is_null()
    });
    agent.signal("TERM");
    assert_eq!(agent.wait_exit(Duration::from_secs(60)), Some(0));
    assert_eq!(
        setup.read_live("index.php"),
        "<?php echo 'v1';",
        "it finished"
    );
    drop(agent);

    // One that outlasts the timeout is abandoned; ROOT stays whole.
    setup
        .repo
        .write("index.php", "<?php echo 'v2';")
        .commit("v2");
    let live_before = setup.site.live_release();
    let mut agent = setup.start("build = [\"sleep 30\"]\n[agent]\nshutdown_timeout = \"1s\"");
    agent.act("demo", "deploy", "{}");
    agent.wait_for("the build to run", Duration::from_secs(30), || {
        agent.log.lock().unwrap().contains("deploy starting")
            && std::fs::read_dir(&setup.site.webroot).unwrap().count() > 3
    });
    agent.signal("TERM");
    assert_eq!(agent.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(agent.log.lock().unwrap().contains("abandoning it"));
    assert_eq!(
        setup.site.live_release(),
        live_before,
        "ROOT still serves the old release"
    );
    assert_eq!(setup.read_live("index.php"), "<?php echo 'v1';");
    // The next run cleans up and deploys.
    let out = Zdeploy::new()
        .args(["deploy", "demo", "--config"])
        .arg(&agent.config)
        .args(["--build", "true"])
        .success();
    assert!(
        out.stderr.contains("interrupted") || out.stderr.contains("removed"),
        "{}",
        out.stderr
    );
    assert_eq!(setup.read_live("index.php"), "<?php echo 'v2';");
}

#[test]
fn sighup_rereads_the_config() {
    let setup = Setup::new();
    let agent = setup.start("");
    assert!(agent.app("demo")["interval_s"].is_null());
    let text = std::fs::read_to_string(&agent.config).unwrap();
    let second = setup.site.path("second");
    std::fs::create_dir_all(&second).unwrap();
    std::fs::write(
        &agent.config,
        format!(
            "{}interval = \"1s\"\n\n[apps.second]\nwebroot = \"{}\"\nsource = \"{}\"\n",
            text,
            second.display(),
            setup.repo.url()
        ),
    )
    .unwrap();
    agent.signal("HUP");
    agent.wait_for("the new config", Duration::from_secs(10), || {
        agent.get("/api/apps/second").status == 200
    });
    agent.wait_for("the interval to deploy", Duration::from_secs(30), || {
        agent.live_commit("demo").is_some()
    });
    // A broken config is refused and the running one kept.
    std::fs::write(&agent.config, "[apps.demo\n").unwrap();
    agent.signal("HUP");
    agent.wait_for("the refusal", Duration::from_secs(10), || {
        agent.log.lock().unwrap().contains("config not reloaded")
    });
    assert_eq!(agent.get("/api/apps/second").status, 200);
}

#[test]
fn api_actions_need_the_token_and_json_and_the_agent_refuses_to_listen_openly_without_one() {
    let setup = Setup::new();
    std::fs::write(setup.site.path("token"), "s3cret-token\n").unwrap();
    let agent = setup.start(&format!(
        "[agent]\ntoken_file = \"{}\"",
        setup.site.path("token").display()
    ));
    let json = ("Content-Type", "application/json");
    let answer = agent.post("/api/apps/demo/deploy", &[json], "{}");
    assert_eq!(answer.status, 401, "{}", answer.body);
    let answer = agent.post(
        "/api/apps/demo/deploy",
        &[json, ("Authorization", "Bearer wrong")],
        "{}",
    );
    assert_eq!(answer.status, 401);
    let answer = agent.post(
        "/api/apps/demo/deploy",
        &[("Authorization", "Bearer s3cret-token")],
        "{}",
    );
    assert_eq!(
        answer.status, 415,
        "a form post is refused: {}",
        answer.body
    );
    let answer = agent.post(
        "/api/apps/demo/deploy",
        &[json, ("Authorization", "Bearer s3cret-token")],
        "{\"force\": \"yes\"}",
    );
    assert_eq!(answer.status, 400, "{}", answer.body);
    let answer = agent.post(
        "/api/apps/demo/deploy",
        &[json, ("Authorization", "Bearer s3cret-token")],
        "{}",
    );
    assert_eq!(answer.status, 202, "{}", answer.body);
    agent.wait_for("the deploy", Duration::from_secs(30), || {
        agent.live_commit("demo").is_some()
    });
    // Reads need no token.
    assert_eq!(agent.get("/api/apps").status, 200);
    assert_eq!(agent.get("/api/apps/nope").status, 404);

    // Without a token, only loopback; a config problem exits 2 and says where.
    let config = setup.site.path("open.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nlisten = \"0.0.0.0:{}\"\n\n{}",
            free_port(),
            setup.app_config("")
        ),
    )
    .unwrap();
    let out = Zdeploy::new()
        .args(["agent", "--config"])
        .arg(&config)
        .fails_with(2);
    assert!(
        out.stderr.contains("open.toml:2: agent.listen") && out.stderr.contains("token_file"),
        "{}",
        out.stderr
    );
    std::fs::write(&config, setup.app_config("interval = \"soon\"")).unwrap();
    let out = Zdeploy::new()
        .args(["agent", "--check", "--config"])
        .arg(&config)
        .fails_with(2);
    assert!(out.stderr.contains("apps.demo.interval"), "{}", out.stderr);
    // A secret from the environment: required to be there.
    let from_env = setup
        .app_config("")
        .replace("webhook_secret_file", "webhook_secret_env")
        .replace(
            &setup.site.path("secret").display().to_string(),
            "ZDEPLOY_TEST_SECRET",
        );
    std::fs::write(&config, &from_env).unwrap();
    let out = Zdeploy::new()
        .args(["agent", "--check", "--config"])
        .arg(&config)
        .fails_with(2);
    assert!(
        out.stderr.contains("ZDEPLOY_TEST_SECRET is not set"),
        "{}",
        out.stderr
    );
    Zdeploy::new()
        .args(["agent", "--check", "--config"])
        .arg(&config)
        .env("ZDEPLOY_TEST_SECRET", "from-env")
        .success();
    std::fs::write(&config, setup.app_config("interval = \"5m\"")).unwrap();
    let out = Zdeploy::new()
        .args(["agent", "--check", "--config"])
        .arg(&config)
        .success();
    assert!(
        out.stdout.contains("demo:") && out.stdout.contains("interval 5m"),
        "{}",
        out.stdout
    );
}

#[test]
fn the_api_streams_a_running_deploy_log_and_rolls_back() {
    let setup = Setup::new();
    let agent = setup.start("build = [\"echo building; sleep 2\"]");
    agent.act("demo", "deploy", "{}");
    agent.wait_idle("demo");
    setup
        .repo
        .write("index.php", "<?php echo 'v2';")
        .commit("v2");
    agent.act("demo", "deploy", "{}");
    agent.wait_for("the deploy to start", Duration::from_secs(30), || {
        agent.app("demo")["running"]["deployment"].is_number()
    });
    let id = agent.app("demo")["running"]["deployment"].as_i64().unwrap();
    let stream = agent.read_stream(&format!("/api/apps/demo/deployments/{id}/log"));
    assert!(stream.contains("event: log"), "{stream}");
    assert!(stream.contains("now serves"), "{stream}");
    assert!(
        stream.trim_end().ends_with('}') && stream.contains("event: finished"),
        "{stream}"
    );
    let detail = agent
        .get(&format!("/api/apps/demo/deployments/{id}"))
        .json();
    assert_eq!(detail["deployment"]["outcome"], "success");
    assert!(
        detail["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "switch")
    );
    assert_eq!(setup.read_live("index.php"), "<?php echo 'v2';");

    let answer = agent.act("demo", "rollback", "{}");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(setup.read_live("index.php"), "<?php echo 'v1';");
    let answer = agent.act("demo", "rollback", "{\"release\": \"ROOT_nope\"}");
    assert_eq!(answer.status, 422, "{}", answer.body);
    let answer = agent.act("demo", "keep", "{\"release\": \"nope\"}");
    assert_eq!(answer.status, 400, "{}", answer.body);
    let metrics = agent.get("/metrics").body;
    assert!(
        metrics.contains("zdeploy_runs_total{app=\"demo\",kind=\"deploy\",outcome=\"success\"}")
            && metrics.contains(
                "zdeploy_runs_total{app=\"demo\",kind=\"rollback\",outcome=\"success\"} 1"
            )
            && metrics.contains(
                "zdeploy_runs_total{app=\"demo\",kind=\"rollback\",outcome=\"failed\"} 1"
            ),
        "{metrics}"
    );
    assert!(
        metrics.contains("zdeploy_live_release_age_seconds{app=\"demo\"}"),
        "{metrics}"
    );

    // A maintenance window shows in the API, the dashboard and the metrics.
    let maintenance = |switch: &str| {
        Zdeploy::new()
            .arg("--config")
            .arg(&agent.config)
            .args(["maintenance", switch, "demo"])
            .success()
    };
    maintenance("on");
    let app = agent.app("demo");
    assert!(
        app["maintenance"]["described"]
            .as_str()
            .is_some_and(|d| d.contains("maintenance: ON since") && d.contains("by hand")),
        "{app}"
    );
    let panel = agent.get("/apps/demo/panel").body;
    assert!(
        panel.contains("badge warn\">maintenance") && panel.contains("maintenance: ON since"),
        "{panel}"
    );
    let metrics = agent.get("/metrics").body;
    assert!(
        metrics.contains("zdeploy_maintenance_on{app=\"demo\"} 1"),
        "{metrics}"
    );
    maintenance("off");
    assert!(agent.app("demo")["maintenance"].is_null());
    assert!(agent.app("demo")["last_maintenance_window"]["seconds"].is_number());
    let metrics = agent.get("/metrics").body;
    assert!(
        metrics.contains("zdeploy_maintenance_on{app=\"demo\"} 0")
            && metrics.contains("zdeploy_maintenance_seconds_count{app=\"demo\"} 1"),
        "{metrics}"
    );
}

#[test]
fn the_systemd_unit_starts_checks_and_stops_the_agent_as_written() {
    let setup = Setup::new();
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/dist/zdeploy-agent.service"
    ))
    .unwrap();
    let command = |key: &str| -> Vec<String> {
        let line = unit
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("{key} in the unit"));
        let words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        assert_eq!(words[0], "/usr/bin/zdeploy", "the path the .deb installs");
        assert!(words.contains(&"/etc/zdeploy/zdeploy.toml".to_string()));
        words[1..].to_vec()
    };
    let port = free_port();
    let config = setup.site.path("zdeploy.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nlisten = \"127.0.0.1:{port}\"\n\n{}",
            setup.app_config("")
        ),
    )
    .unwrap();
    let with_config = |args: Vec<String>| -> Vec<String> {
        args.into_iter()
            .map(|a| {
                if a == "/etc/zdeploy/zdeploy.toml" {
                    config.display().to_string()
                } else {
                    a
                }
            })
            .collect()
    };
    Zdeploy::new()
        .args(with_config(command("ExecStartPre")))
        .success();
    let start = with_config(command("ExecStart"));
    assert_eq!(&start[..3], ["agent", "--config", config.to_str().unwrap()]);
    let mut agent = Agent::start_with(
        &config,
        port,
        &start[3..].iter().map(String::as_str).collect::<Vec<_>>(),
    );
    agent.act("demo", "deploy", "{}");
    // ROOT names the release before the run ends (settle, prune): wait for
    // the line the run writes last.
    agent.wait_for("the deploy", Duration::from_secs(30), || {
        let finished = agent.log.lock().unwrap().contains("deploy finished");
        finished && agent.live_commit("demo").is_some()
    });
    let log = agent.log.lock().unwrap().clone();
    let line = log.lines().find(|l| l.contains("deploy finished")).unwrap();
    let entry: serde_json::Value =
        serde_json::from_str(line).expect("--log-format json writes JSON lines");
    assert_eq!(entry["app"], "demo");
    assert!(
        unit.contains("ExecReload=/bin/kill -HUP $MAINPID") && unit.contains("KillSignal=SIGTERM")
    );
    agent.signal("HUP");
    agent.wait_for("the reload", Duration::from_secs(10), || {
        agent.log.lock().unwrap().contains("config reloaded")
    });
    agent.signal("TERM");
    assert_eq!(agent.wait_exit(Duration::from_secs(30)), Some(0));
}

#[test]
fn polling_does_not_retry_a_commit_whose_deploy_failed() {
    let setup = Setup::new();
    setup.repo.write("ok", "").commit("buildable");
    let agent = setup.start("interval = \"1s\"\nbuild = [\"test -f ok\"]");
    agent.wait_for("the first deploy", Duration::from_secs(30), || {
        agent.live_commit("demo").is_some()
    });
    let good = agent.live_commit("demo");
    setup.repo.remove("ok").commit("breaks the build");
    agent.wait_for("the failed deploy", Duration::from_secs(15), || {
        agent
            .deployments("demo")
            .iter()
            .any(|d| d["outcome"] == "failed")
    });
    std::thread::sleep(Duration::from_secs(4));
    let failed = agent
        .deployments("demo")
        .iter()
        .filter(|d| d["outcome"] == "failed")
        .count();
    assert_eq!(failed, 1, "the broken commit was tried once");
    assert_eq!(agent.live_commit("demo"), good);
    let fixed = setup.repo.write("ok", "").commit("fixes the build");
    agent.wait_for("the fix to go live", Duration::from_secs(15), || {
        agent.live_commit("demo").as_deref() == Some(fixed.as_str())
    });
}
