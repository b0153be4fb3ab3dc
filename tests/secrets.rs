//! Secrets stay secret: a password inside the source URL, the webhook
//! secret, the API token and the notification URL never appear in what
//! zdeploy shows or stores — its logs, the history, the dashboard, the API,
//! the metrics, the notifications, error messages.

use std::time::Duration;

use serde_json::json;

use crate::support::Site;
use crate::support::agent::{Agent, sign};
use crate::support::http::Recorder;

const URL_PASSWORD: &str = "Url-Pa55word-7f3a";
const HOOK_SECRET: &str = "Hook-Secret-19be";
const TOKEN: &str = "Api-Token-c0ffee";
const NOTIFY_PATH: &str = "Notify-Path-8d2e";
const SECRETS: [&str; 4] = [URL_PASSWORD, HOOK_SECRET, TOKEN, NOTIFY_PATH];

#[track_caller]
fn assert_no_secret(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what} shows {secret}:\n{text}");
    }
}

#[test]
fn no_secret_reaches_logs_history_dashboard_api_metrics_or_notifications() {
    let site = Site::new();
    std::fs::write(site.path("hook-secret"), HOOK_SECRET).unwrap();
    std::fs::write(site.path("token"), format!("{TOKEN}\n")).unwrap();
    let notified = Recorder::start(&[200]);
    // Nothing listens on port 9: every fetch fails after git saw the URL.
    let source = format!("https://deploy:{URL_PASSWORD}@127.0.0.1:9/acme/app.git");
    let config = format!(
        "[agent]\ntoken_file = \"{}\"\n\n[apps.demo]\nwebroot = \"{}\"\nsource = \"{source}\"\nref = \"main\"\ninterval = \"1s\"\nwebhook_secret_file = \"{}\"\nnotify = {{ url = \"http://{}/hook/{NOTIFY_PATH}\" }}\n",
        site.path("token").display(),
        site.webroot.display(),
        site.path("hook-secret").display(),
        notified.address
    );
    let agent = Agent::start(site.dir.path(), &config);

    // A deploy by the API, one by a signed push, one forged push; polling
    // fails on its own.
    let bearer = format!("Bearer {TOKEN}");
    let json_type = ("Content-Type", "application/json");
    let answer = agent.post(
        "/api/apps/demo/deploy",
        &[json_type, ("Authorization", &bearer)],
        "{}",
    );
    assert_eq!(answer.status, 202, "{}", answer.body);
    agent.wait_idle("demo");
    let body = json!({"ref": "refs/heads/main", "after": "0123"}).to_string();
    let signature = format!("sha256={}", sign(HOOK_SECRET, &body));
    for signature in [signature.as_str(), "sha256=0000"] {
        agent.post(
            "/hooks/demo",
            &[
                ("X-GitHub-Event", "push"),
                ("X-GitHub-Delivery", signature),
                ("X-Hub-Signature-256", signature),
                json_type,
            ],
            &body,
        );
    }
    agent.wait_idle("demo");
    agent.wait_for("a failed poll", Duration::from_secs(20), || {
        agent.app("demo")["poll"]["error"].is_string()
    });
    agent.wait_for("notifications", Duration::from_secs(20), || {
        notified.bodies.lock().unwrap().len() >= 2
    });

    let runs = agent.deployments("demo");
    assert!(runs.len() >= 2, "{runs:?}");
    assert!(runs.iter().all(|d| d["outcome"] == "failed"), "{runs:?}");
    let shown_error = runs[0]["error"].as_str().unwrap();
    assert!(shown_error.contains("***@127.0.0.1"), "{shown_error}");

    let mut seen = vec![
        ("the agent's log", agent.log.lock().unwrap().clone()),
        ("the dashboard", agent.get("/").body),
        ("the app panel", agent.get("/apps/demo/panel").body),
        ("the API", agent.get("/api/apps").body),
        ("the app API", agent.get("/api/apps/demo").body),
        (
            "the releases API",
            agent.get("/api/apps/demo/releases").body,
        ),
        (
            "the deployments API",
            agent.get("/api/apps/demo/deployments").body,
        ),
        ("the metrics", agent.get("/metrics").body),
        (
            "the notifications",
            notified.bodies.lock().unwrap().join("\n"),
        ),
    ];
    for run in &runs {
        let id = run["id"].as_i64().unwrap();
        seen.push((
            "a deployment's log",
            agent.get(&format!("/api/apps/demo/deployments/{id}")).body,
        ));
    }
    let state = site.webroot.join(".zdeploy");
    for entry in walkdir::WalkDir::new(&state)
        .into_iter()
        .filter_map(Result::ok)
    {
        if entry.file_type().is_file() {
            let bytes = std::fs::read(entry.path()).unwrap();
            seen.push(("a state file", String::from_utf8_lossy(&bytes).into_owned()));
        }
    }
    let cli = |command: &str| {
        let out = site.zdeploy(command).run();
        format!("{}{}", out.stdout, out.stderr)
    };
    seen.push(("zdeploy status", cli("status")));
    seen.push(("zdeploy log", cli("log")));
    seen.push(("zdeploy releases", cli("releases")));
    for (what, text) in &seen {
        assert_no_secret(what, text);
    }
    // The places that name the source show it, redacted.
    for (what, text) in &seen[1..5] {
        assert!(text.contains("***@127.0.0.1"), "{what}:\n{text}");
    }
    assert!(
        seen.iter()
            .any(|(what, text)| *what == "a state file" && text.contains("SQLite"))
    );
}
