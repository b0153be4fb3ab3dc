//! Real git repositories for tests: a work tree that pushes to a bare repo
//! served over file://.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Repo {
    pub work: PathBuf,
    pub bare: PathBuf,
}

/// Run git with a fixed identity and no user or system config.
#[track_caller]
pub fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
            "-c",
            "tag.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Test Author")
        .env("GIT_AUTHOR_EMAIL", "author@example.com")
        .env("GIT_COMMITTER_NAME", "Test Author")
        .env("GIT_COMMITTER_EMAIL", "author@example.com")
        .output()
        .expect("run git");
    assert!(
        output.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

impl Repo {
    pub fn new(parent: &Path, name: &str) -> Self {
        let work = parent.join(format!("{name}-work"));
        let bare = parent.join(format!("{name}.git"));
        std::fs::create_dir_all(&work).unwrap();
        git(
            parent,
            &["init", "--quiet", "--bare", bare.to_str().unwrap()],
        );
        git(&work, &["init", "--quiet"]);
        git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
        Repo { work, bare }
    }

    pub fn url(&self) -> String {
        format!("file://{}", self.bare.display())
    }

    pub fn write(&self, path: &str, content: &str) -> &Self {
        let full = self.work.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, content).unwrap();
        self
    }

    pub fn remove(&self, path: &str) -> &Self {
        git(&self.work, &["rm", "--quiet", "-r", path]);
        self
    }

    /// Make the work tree what `dir` holds (its `.git` aside), then commit
    /// and push it; returns the commit id.
    pub fn commit_tree_of(&self, dir: &Path) -> String {
        for entry in std::fs::read_dir(&self.work).unwrap() {
            let entry = entry.unwrap();
            if entry.file_name() != ".git" {
                let path = entry.path();
                if path.is_dir() {
                    std::fs::remove_dir_all(&path).unwrap();
                } else {
                    std::fs::remove_file(&path).unwrap();
                }
            }
        }
        let copied = Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", dir.display()))
            .arg(&self.work)
            .status()
            .unwrap();
        assert!(copied.success());
        self.commit("a version")
    }

    /// Commit everything and push the current branch; returns the commit id.
    pub fn commit(&self, message: &str) -> String {
        git(&self.work, &["add", "-A"]);
        git(
            &self.work,
            &["commit", "--quiet", "--allow-empty", "-m", message],
        );
        let branch = git(&self.work, &["rev-parse", "--abbrev-ref", "HEAD"]);
        git(&self.work, &["push", "--quiet", "origin", &branch]);
        git(&self.work, &["rev-parse", "HEAD"])
    }

    pub fn checkout_new_branch(&self, name: &str) {
        git(&self.work, &["checkout", "--quiet", "-b", name]);
    }

    pub fn checkout(&self, name: &str) {
        git(&self.work, &["checkout", "--quiet", name]);
    }

    pub fn tag(&self, name: &str) {
        git(&self.work, &["tag", name]);
        git(&self.work, &["push", "--quiet", "origin", name]);
    }
}
