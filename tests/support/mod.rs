//! Test support: run the built binary like a user, and build real fixtures
//! (git repositories, archives, folders, webroots) at test time.

#![allow(dead_code)]

pub mod agent;
pub mod archive;
pub mod browser;
pub mod etcd;
pub mod fleet;
pub mod git;
pub mod http;
pub mod kill;
pub mod load;
pub mod mount;
pub mod servers;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub use tempfile::TempDir;

pub const BIN: &str = env!("CARGO_BIN_EXE_zdeploy");

/// One invocation of `zdeploy`, in the style of just's `Test`.
pub struct Zdeploy {
    command: Command,
    shown: Vec<String>,
}

pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Zdeploy {
    pub fn new() -> Self {
        let mut command = Command::new(BIN);
        command
            .env_remove("ZDEPLOY_CONFIG")
            .env_remove("ZDEPLOY_FAILPOINT")
            // The tests run as root; the refusal has its own tests.
            .env("ZDEPLOY_ALLOW_ROOT_BUILD", "1")
            .stdin(Stdio::null());
        Zdeploy {
            command,
            shown: vec!["zdeploy".into()],
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.shown.push(arg.as_ref().to_string_lossy().into_owned());
        self.command.arg(arg);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for arg in args {
            self = self.arg(arg);
        }
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        self.command.env(key, value);
        self
    }

    pub fn env_remove(mut self, key: &str) -> Self {
        self.command.env_remove(key);
        self
    }

    pub fn current_dir(mut self, dir: &Path) -> Self {
        self.command.current_dir(dir);
        self
    }

    pub fn command(self) -> Command {
        self.command
    }

    pub fn run(mut self) -> Output {
        let output = self.command.output().expect("run zdeploy");
        Output {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    #[track_caller]
    pub fn success(self) -> Output {
        let shown = self.shown.join(" ");
        let output = self.run();
        assert_eq!(
            output.code,
            Some(0),
            "`{shown}` failed\nstdout:\n{}\nstderr:\n{}",
            output.stdout,
            output.stderr
        );
        output
    }

    #[track_caller]
    pub fn fails_with(self, code: i32) -> Output {
        let shown = self.shown.join(" ");
        let output = self.run();
        assert_eq!(
            output.code,
            Some(code),
            "`{shown}` should exit {code}\nstdout:\n{}\nstderr:\n{}",
            output.stdout,
            output.stderr
        );
        output
    }
}

/// A webroot in a temporary folder, plus room for sources beside it.
pub struct Site {
    pub dir: TempDir,
    pub webroot: PathBuf,
}

impl Site {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("zdeploy-test-")
            .tempdir()
            .expect("tempdir");
        let webroot = dir.path().join("webroot");
        std::fs::create_dir(&webroot).unwrap();
        Site { dir, webroot }
    }

    /// The same site with its webroot at `webroot` (created): on a
    /// filesystem the test mounted, say.
    pub fn move_webroot(&mut self, webroot: PathBuf) {
        std::fs::create_dir_all(&webroot).unwrap();
        self.webroot = webroot;
    }

    /// A path beside the webroot for fixtures.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `zdeploy <command> --webroot <webroot>`.
    pub fn zdeploy(&self, command: &str) -> Zdeploy {
        Zdeploy::new()
            .arg(command)
            .arg("--webroot")
            .arg(&self.webroot)
    }

    /// `zdeploy deploy --config F` where F holds app `a` deploying `source`
    /// into this site, then `extra` (keys of the app, line 4 on).
    pub fn deploy_by_config(&self, source: &Path, extra: &str) -> Zdeploy {
        let config = self.path("zdeploy.toml");
        let text = format!(
            "[apps.a]\nwebroot = \"{}\"\nsource = \"{}\"\n{extra}\n",
            self.webroot.display(),
            source.display()
        );
        std::fs::write(&config, text).unwrap();
        Zdeploy::new().args(["deploy", "--config"]).arg(config)
    }

    /// A deploy with no settle wait, for fast tests.
    pub fn deploy(&self, source: impl AsRef<OsStr>) -> Zdeploy {
        self.zdeploy("deploy").args(["--settle", "0s"]).arg(source)
    }

    pub fn context(&self) -> PathBuf {
        self.webroot.join("ROOT")
    }

    /// The release `ROOT` points to.
    pub fn live(&self) -> Option<String> {
        std::fs::read_link(self.context())
            .ok()
            .map(|t| t.to_string_lossy().into_owned())
    }

    #[track_caller]
    pub fn live_release(&self) -> String {
        self.live().expect("ROOT is a symlink to a release")
    }

    /// Deploy `source` with a settle of a few seconds and, once ROOT names
    /// the new release, call `in_flight` with the old release's folder (as
    /// a request still running on it would see it) and the new one's.
    #[track_caller]
    pub fn deploy_with_requests_in_flight(
        &self,
        source: &Path,
        extra: &[&str],
        in_flight: impl FnOnce(&Path, &Path),
    ) {
        let old = self.live_release();
        let mut deploy = self
            .zdeploy("deploy")
            .args(["--settle", "3s"])
            .args(extra)
            .arg(source)
            .command();
        deploy.stdout(Stdio::null()).stderr(Stdio::null());
        let mut child = deploy.spawn().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while self.live().as_deref() == Some(old.as_str()) {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("the switch never happened");
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        in_flight(
            &self.webroot.join(&old),
            &self.webroot.join(self.live_release()),
        );
        assert!(child.wait().unwrap().success(), "the deploy failed");
    }

    /// Release folders (`ROOT_*`), sorted.
    pub fn releases(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.webroot)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("ROOT_"))
            .collect();
        names.sort();
        names
    }

    /// Everything in the webroot except the state folder, as (path, content)
    /// with symlink targets: to assert that a failed command changed nothing.
    pub fn snapshot(&self) -> BTreeMap<PathBuf, String> {
        tree(&self.webroot, &[".zdeploy"])
    }

    pub fn read(&self, relative: &str) -> String {
        std::fs::read_to_string(self.context().join(relative))
            .unwrap_or_else(|e| panic!("read ROOT/{relative}: {e}"))
    }
}

/// A map of every entry under `root` to its content (files), target
/// (symlinks) or "<dir>", skipping top-level names in `skip`.
pub fn tree(root: &Path, skip: &[&str]) -> BTreeMap<PathBuf, String> {
    let mut map = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let relative = path.strip_prefix(root).unwrap().to_path_buf();
            if dir == root && skip.iter().any(|s| entry.file_name() == *s) {
                continue;
            }
            let file_type = entry.file_type().unwrap();
            let value = if file_type.is_symlink() {
                format!("-> {}", std::fs::read_link(&path).unwrap().display())
            } else if file_type.is_dir() {
                stack.push(path.clone());
                "<dir>".to_string()
            } else {
                String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned()
            };
            map.insert(relative, value);
        }
    }
    map
}

/// Write files (path -> content) under `root`, creating folders.
pub fn write_files(root: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        let full = root.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(&full, content).unwrap();
    }
}

/// An app folder with `count` PHP files that all name `version`, so a mixed
/// or half-written release shows.
pub fn versioned_app(root: &Path, version: &str, count: usize) {
    let _ = std::fs::remove_dir_all(root);
    std::fs::create_dir_all(root.join("lib")).unwrap();
    std::fs::create_dir_all(root.join("uploads")).unwrap();
    std::fs::write(root.join("uploads/.keep"), "").unwrap();
    std::fs::write(root.join("VERSION"), version).unwrap();
    for i in 0..count {
        std::fs::write(
            root.join(format!("lib/part{i}.php")),
            format!("<?php // {version} part {i}\n"),
        )
        .unwrap();
    }
}

/// Assert that `release` holds exactly one complete version of
/// `versioned_app`, and return it.
#[track_caller]
pub fn assert_complete_version(release: &Path, count: usize) -> String {
    let version = std::fs::read_to_string(release.join("VERSION"))
        .unwrap_or_else(|e| panic!("{}: no VERSION: {e}", release.display()));
    for i in 0..count {
        let part = std::fs::read_to_string(release.join(format!("lib/part{i}.php")))
            .unwrap_or_else(|e| panic!("{}: part {i} missing: {e}", release.display()));
        assert_eq!(
            part,
            format!("<?php // {version} part {i}\n"),
            "{} part {i}",
            release.display()
        );
    }
    version
}

/// The release-name pattern of the seed: `<context>_YYYY.MM.DD-hh.mm.ss`.
pub fn is_release_name(name: &str) -> bool {
    let Some(stamp) = name.strip_prefix("ROOT_") else {
        return false;
    };
    let bytes = stamp.as_bytes();
    stamp.len() == 19
        && bytes.iter().enumerate().all(|(i, b)| match i {
            4 | 7 | 13 | 16 => *b == b'.',
            10 => *b == b'-',
            _ => b.is_ascii_digit(),
        })
}

pub fn running_as_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A stand-in for an app's users: writes a new file into `dir` (through the
/// context symlink, as the app would) every `every`, until finished.
pub struct Uploader {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(String, String)>>,
}

impl Uploader {
    /// Write a file every `every`, `at_most` of them (a fixed count, so the
    /// user content a test's deploys carry does not grow with the machine's
    /// speed), until stopped.
    pub fn start(dir: PathBuf, every: std::time::Duration, at_most: usize) -> Self {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut written = Vec::new();
            for n in 0..at_most {
                if stopping.load(Ordering::Relaxed) {
                    break;
                }
                let (name, content) = (format!("upload-{n:06}.txt"), format!("content {n}"));
                // A write that fails (never expected) is not counted as written.
                if std::fs::write(dir.join(&name), &content).is_ok() {
                    written.push((name, content));
                }
                std::thread::sleep(every);
            }
            written
        });
        Uploader { stop, thread }
    }

    /// Stop and return every (name, content) written.
    pub fn finish(self) -> Vec<(String, String)> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// Assert that every file an `Uploader` wrote is in `dir`, intact.
#[track_caller]
pub fn assert_all_uploads_kept(dir: &Path, written: &[(String, String)], at_least: usize) {
    assert!(
        written.len() > at_least,
        "the uploader ran throughout ({} files)",
        written.len()
    );
    let lost: Vec<&String> = written
        .iter()
        .filter(|(name, content)| {
            std::fs::read_to_string(dir.join(name)).ok().as_ref() != Some(content)
        })
        .map(|(name, _)| name)
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} uploads lost or damaged: {:?}",
        lost.len(),
        written.len(),
        &lost[..lost.len().min(10)]
    );
}

/// Run `command`, failing the test with its error output unless it
/// succeeds.
#[track_caller]
pub fn run_checked(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
