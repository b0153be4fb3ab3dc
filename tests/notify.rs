//! Notifications from every deploy: each format a receiver gets, the JSON
//! one signed as documented, events for success, failure and rollback, and
//! receivers that hang or fail never holding a deploy up.

use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::support::Site;
use crate::support::git::Repo;
use crate::support::http::Recorder;

const SIGNING_SECRET: &str = "n0tify-s1gning-key";

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// The bodies `recorder` got, as JSON.
fn received(recorder: &Recorder) -> Vec<Value> {
    recorder
        .bodies
        .lock()
        .unwrap()
        .iter()
        .map(|b| serde_json::from_str(b).unwrap_or_else(|e| panic!("not JSON ({e}): {b}")))
        .collect()
}

#[test]
fn every_format_hears_each_deploy_signed_and_a_hanging_or_failing_receiver_holds_nothing_up() {
    let site = Site::new();
    let repo = Repo::new(site.dir.path(), "app");
    repo.write("index.php", "<?php echo 'v1';").commit("v1");
    std::fs::write(site.path("signing-key"), format!("{SIGNING_SECRET}\n")).unwrap();
    let json = Recorder::start(&[200]);
    let slack = Recorder::start(&[200]);
    let discord = Recorder::start(&[204]);
    let teams = Recorder::start(&[202]);
    let hangs = Recorder::start(&[0]);
    let fails = Recorder::start(&[500]);
    let all =
        "[\"started\", \"succeeded\", \"failed\", \"switched_back\", \"rolled_back\", \"skipped\"]";
    let target = |recorder: &Recorder, format: &str, extra: &str| {
        format!(
            "  {{ url = \"http://{}/hooks/T0/B0/SECRETPATH\", format = \"{format}\", on = {all}{extra} }},\n",
            recorder.address
        )
    };
    let config = site.path("zdeploy.toml");
    // The hanging and the failing receiver hear the first deploy only: each
    // run that tells them waits out its 5 s grace at exit.
    let write_config = |build: &str, slow_receivers: bool| {
        std::fs::write(
            &config,
            format!(
                "[apps.shop]\nwebroot = \"{}\"\nsource = \"{}\"\nref = \"main\"\nsettle = \"0s\"\ndrain = \"0s\"\nbuild = [{build}]\nnotify = [\n{}{}{}{}{}{}]\n",
                site.webroot.display(),
                repo.url(),
                target(&json, "json", &format!(", secret_file = \"{}\"", site.path("signing-key").display())),
                target(&slack, "slack", ""),
                target(&discord, "discord", ""),
                target(&teams, "teams", ""),
                if slow_receivers { target(&hangs, "json", "") } else { String::new() },
                if slow_receivers { target(&fails, "json", "") } else { String::new() },
            ),
        )
        .unwrap();
    };
    write_config("", true);
    let zdeploy = |args: &[&str]| {
        crate::support::Zdeploy::new()
            .arg("--config")
            .arg(&config)
            .args(args)
    };

    let out = zdeploy(&["deploy", "shop", "--json"]).success();
    let done: Value = serde_json::from_str(&out.stdout).unwrap();
    let release = done["release"].as_str().unwrap().to_string();
    // The hanging receiver still holds the `started` request, yet the deploy
    // ended: its `succeeded` reached every other receiver.
    assert_eq!(
        hangs.bodies.lock().unwrap().len(),
        2,
        "started and succeeded, both hanging"
    );
    let events: Vec<Value> = received(&json);
    assert_eq!(
        events
            .iter()
            .map(|e| e["event"].clone())
            .collect::<Vec<_>>(),
        vec!["started", "succeeded"],
        "{events:?}"
    );
    let succeeded = &events[1];
    assert_eq!(succeeded["app"], "shop");
    assert_eq!(succeeded["release"], release.as_str());
    assert_eq!(succeeded["commit"].as_str().unwrap().len(), 40);
    assert!(succeeded["duration_ms"].as_u64().is_some(), "{succeeded}");
    assert_eq!(
        succeeded["hosts"].as_array().unwrap().len(),
        1,
        "{succeeded}"
    );
    assert!(succeeded["error"].is_null());
    // Signed as documented: HMAC-SHA256 of the raw body under the key.
    let bodies = json.bodies.lock().unwrap().clone();
    let headers = json.headers.lock().unwrap().clone();
    for (body, headers) in bodies.iter().zip(&headers) {
        let mut mac = Hmac::<Sha256>::new_from_slice(SIGNING_SECRET.as_bytes()).unwrap();
        mac.update(body.as_bytes());
        let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(
            header(headers, "x-zdeploy-signature-256"),
            Some(expected.as_str())
        );
        assert_eq!(header(headers, "content-type"), Some("application/json"));
    }
    // Unsigned where no secret is set.
    assert!(
        slack
            .headers
            .lock()
            .unwrap()
            .iter()
            .all(|h| header(h, "x-zdeploy-signature-256").is_none())
    );
    // Each format as its receiver reads it.
    let slack_said = received(&slack);
    assert!(
        slack_said[1]["text"]
            .as_str()
            .unwrap()
            .contains(&format!("shop now serves {release}")),
        "{slack_said:?}"
    );
    let discord_said = received(&discord);
    assert!(
        discord_said[1]["content"]
            .as_str()
            .unwrap()
            .contains("now serves"),
        "{discord_said:?}"
    );
    assert_eq!(discord_said[1]["embeds"][0]["title"], "shop succeeded");
    assert_eq!(
        discord_said[1]["allowed_mentions"]["parse"],
        serde_json::json!([])
    );
    let teams_said = received(&teams);
    let card = &teams_said[1]["attachments"][0];
    assert_eq!(teams_said[1]["type"], "message");
    assert_eq!(
        card["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert_eq!(card["content"]["type"], "AdaptiveCard");
    assert!(
        card["content"]["body"][0]["text"]
            .as_str()
            .unwrap()
            .contains("now serves")
    );
    // The failing receiver was tried again with the same delivery id.
    let tries = fails.headers.lock().unwrap().clone();
    let firsts: Vec<&str> = tries
        .iter()
        .filter_map(|h| header(h, "x-zdeploy-delivery"))
        .collect();
    assert!(firsts.len() >= 3, "retried: {firsts:?}");

    // A failed build: `failed`, with the error.
    repo.write("index.php", "<?php echo 'v2';").commit("v2");
    write_config("\"exit 7\"", false);
    zdeploy(&["deploy", "shop"]).fails_with(1);
    let last = received(&json).pop().unwrap();
    assert_eq!(last["event"], "failed", "{last}");
    assert!(last["error"].as_str().unwrap().contains("exit"), "{last}");
    write_config("", false);
    zdeploy(&["deploy", "shop"]).success();
    // A rollback: `rolled_back` to the first release.
    zdeploy(&["rollback", "shop"]).success();
    let last = received(&json).pop().unwrap();
    assert_eq!(last["event"], "rolled_back", "{last}");
    assert_eq!(last["kind"], "rollback");
    assert_eq!(last["release"], release.as_str());
    // No payload carries the signing key or the webhook URL's path.
    for recorder in [&json, &slack, &discord, &teams, &hangs, &fails] {
        for body in recorder.bodies.lock().unwrap().iter() {
            assert!(
                !body.contains(SIGNING_SECRET) && !body.contains("SECRETPATH"),
                "{body}"
            );
        }
    }

    // Hostile targets are refused when the config is read, with the line.
    for (bad, says) in [
        ("notify = [{ url = \"ftp://x\" }]", "http"),
        (
            "notify = [{ url = \"http://x\", format = \"telegram\" }]",
            "telegram",
        ),
        (
            "notify = [{ url = \"http://x\", on = [\"deployed\"] }]",
            "deployed",
        ),
        (
            "notify = [{ url = \"http://x\", secret_file = \"/nonexistent\" }]",
            "/nonexistent",
        ),
        (
            "notify = [{ url = \"http://x\", colour = \"red\" }]",
            "colour",
        ),
        ("notify = \"http://x\"", "list"),
    ] {
        std::fs::write(
            &config,
            format!(
                "[apps.shop]\nwebroot = \"{}\"\nsource = \"{}\"\n{bad}\n",
                site.webroot.display(),
                repo.url()
            ),
        )
        .unwrap();
        let out = zdeploy(&["deploy", "shop"]).fails_with(2);
        assert!(
            out.stderr.contains("zdeploy.toml:4") && out.stderr.contains(says),
            "{bad}: {}",
            out.stderr
        );
    }
}
