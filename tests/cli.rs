//! The command line itself: help on every command, completions, quiet output.

use crate::support::{Site, Zdeploy, write_files};

#[test]
fn every_command_has_help() {
    for command in [
        "deploy",
        "rollback",
        "releases",
        "status",
        "log",
        "prune",
        "keep",
        "completions",
    ] {
        let out = Zdeploy::new().args([command, "--help"]).success();
        assert!(
            out.stdout.contains("Usage: zdeploy"),
            "{command}: {}",
            out.stdout
        );
    }
    let out = Zdeploy::new().arg("--help").success();
    assert!(out.stdout.contains("Exit codes"), "{}", out.stdout);
}

#[test]
fn completions_are_generated_for_each_shell() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef zdeploy"),
        ("fish", "complete -c zdeploy"),
    ] {
        let out = Zdeploy::new().args(["completions", shell]).success();
        assert!(
            out.stdout.contains(marker),
            "{shell}: {}",
            &out.stdout[..out.stdout.len().min(200)]
        );
        assert!(
            out.stdout.contains("rollback"),
            "{shell} completes subcommands"
        );
    }
}

#[test]
fn quiet_prints_nothing_on_stderr_and_non_terminals_get_plain_lines() {
    let site = Site::new();
    let app = site.path("app");
    write_files(&app, &[("index.php", "x")]);
    let out = site.deploy(&app).arg("-q").success();
    assert_eq!(out.stderr, "", "quiet");
    assert!(out.stdout.contains("ROOT -> ROOT_"), "{}", out.stdout);
    write_files(&app, &[("index.php", "y")]);
    let out = site.deploy(&app).arg("-v").success();
    assert!(out.stderr.contains("[materialize] done"), "{}", out.stderr);
    assert!(
        !out.stderr.contains('\u{1b}'),
        "no terminal escapes when not on a terminal"
    );
}

#[test]
fn on_a_terminal_a_git_deploy_shows_a_bar_with_its_entry_count() {
    let site = Site::new();
    let repo = crate::support::git::Repo::new(site.dir.path(), "app");
    for n in 0..2000 {
        repo.write(&format!("f{n}.txt"), "x");
    }
    repo.commit("v1");
    site.deploy(repo.url()).arg("-q").success();
    repo.write("f0.txt", "y").commit("v2");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // `script` gives the deploy a pseudo-terminal as its stderr.
    let deploy = format!(
        "{} deploy --webroot {} --settle 0s --drain 0s {}",
        crate::support::BIN,
        site.webroot.display(),
        repo.url()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &deploy, "/dev/null"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains("materialize [") && shown.contains("/2000 entries"),
        "{shown}"
    );
}

#[test]
fn deploy_json_output_is_data() {
    let site = Site::new();
    let app = site.path("app");
    write_files(&app, &[("index.php", "x")]);
    let out = site.deploy(&app).arg("--json").success();
    let result: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(result["outcome"], "deployed");
    assert_eq!(result["release"], site.live_release().as_str());
    assert_eq!(result["deployment"], 1);
}

/// Regression: `zdeploy status | head -1` panicked with "failed printing to
/// stdout: Broken pipe" once the reader had gone.
#[test]
fn a_closed_stdout_ends_quietly() {
    let site = Site::new();
    let app = site.path("app");
    write_files(&app, &[("index.php", "x")]);
    site.deploy(&app).success();
    for command in ["status", "releases", "log"] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let mut run = site.zdeploy(command).command();
        let output = run
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{command}: {stderr}");
        assert!(!stderr.contains("panicked"), "{command}: {stderr}");
    }
}

#[test]
fn host_is_refused_by_commands_that_do_not_fan_out() {
    let dir = tempfile::tempdir().unwrap();
    let out = Zdeploy::new()
        .args(["webserver", "nginx", "--webroot"])
        .arg(dir.path())
        .args(["--host", "web1"])
        .fails_with(2);
    assert!(
        out.stderr
            .contains("--host web1: zdeploy webserver prints the site of the host it runs on"),
        "{}",
        out.stderr
    );
}
