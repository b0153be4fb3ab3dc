//! The package, as an operator installs it: `scripts/package.sh` builds the
//! `.deb` and the static binary; the `.deb` goes with `apt` into a fresh
//! Debian made by `debootstrap`, where zdeploy runs, `man` finds its pages,
//! the shells find their completions, the unit passes `systemd-analyze
//! verify`, and removing the package leaves every webroot as it was. The
//! static binary runs in a root that holds nothing else.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{running_as_root, tree, write_files};

const PROJECT: &str = env!("CARGO_MANIFEST_DIR");

#[track_caller]
fn run(command: &mut Command) -> String {
    let shown = format!("{command:?}");
    let out = command.output().unwrap_or_else(|e| panic!("{shown}: {e}"));
    assert!(
        out.status.success(),
        "{shown} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fresh Debian root: debootstrap's minimal bookworm, made once per
/// machine into a tarball that is never changed, unpacked anew each time.
fn fresh_debian(into: &Path) {
    let cache = Path::new("/var/cache/zdeploy-tests");
    let tarball = cache.join("bookworm-minbase.tar");
    if !tarball.exists() {
        std::fs::create_dir_all(cache).unwrap();
        let staging = cache.join("bookworm-minbase.partial");
        let _ = std::fs::remove_dir_all(&staging);
        run(Command::new("debootstrap")
            .args(["--variant=minbase", "bookworm"])
            .arg(&staging)
            .arg("http://deb.debian.org/debian"));
        let partial = cache.join("bookworm-minbase.tar.partial");
        run(Command::new("tar")
            .arg("-cf")
            .arg(&partial)
            .arg("-C")
            .arg(&staging)
            .arg("."));
        std::fs::rename(&partial, &tarball).unwrap();
        let _ = std::fs::remove_dir_all(&staging);
    }
    std::fs::create_dir_all(into).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(&tarball)
        .arg("-C")
        .arg(into));
    std::fs::copy("/etc/resolv.conf", into.join("etc/resolv.conf")).unwrap();
}

/// A chroot with /proc mounted, unmounted and removed on drop.
struct Chroot {
    root: PathBuf,
}

impl Chroot {
    fn new(root: PathBuf) -> Self {
        run(Command::new("mount")
            .args(["-t", "proc", "proc"])
            .arg(root.join("proc")));
        Chroot { root }
    }

    #[track_caller]
    fn sh(&self, script: &str) -> String {
        run(Command::new("chroot")
            .arg(&self.root)
            .args(["/bin/sh", "-c", script])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("HOME", "/root"))
    }
}

impl Drop for Chroot {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.root.join("proc"))
            .status();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn built(pattern_dir: &str, prefix: &str, suffix: &str) -> PathBuf {
    let dir = Path::new(PROJECT).join(pattern_dir);
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .find(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with(prefix) && name.ends_with(suffix)
        })
        .unwrap_or_else(|| panic!("no {prefix}*{suffix} in {}", dir.display()))
}

#[test]
fn the_deb_installs_into_a_fresh_debian_and_the_static_binary_runs_without_libc() {
    if !running_as_root() {
        eprintln!("skipped: debootstrap and chroot need root");
        return;
    }
    run(Command::new(Path::new(PROJECT).join("scripts/package.sh")).current_dir(PROJECT));
    let deb = built("target/package", "zdeploy_", ".deb");

    let scratch = tempfile::Builder::new()
        .prefix("zdeploy-package-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let root = scratch.path().join("debian");
    fresh_debian(&root);
    let debian = Chroot::new(root.clone());
    std::fs::copy(&deb, root.join("tmp/zdeploy.deb")).unwrap();
    debian.sh("apt-get update -qq && apt-get install -y -qq --no-install-recommends man-db systemd procps ./tmp/zdeploy.deb");

    let version = debian.sh("zdeploy --version");
    assert!(version.starts_with("zdeploy "), "{version}");
    let page = debian.sh("man -w zdeploy");
    assert_eq!(page.trim(), "/usr/share/man/man1/zdeploy.1.gz");
    let page = debian.sh("man -w zdeploy-deploy");
    assert_eq!(page.trim(), "/usr/share/man/man1/zdeploy-deploy.1.gz");
    let rendered = debian.sh("man zdeploy-deploy 2>/dev/null | head -20");
    assert!(rendered.contains("--webroot"), "{rendered}");
    for completion in [
        "usr/share/bash-completion/completions/zdeploy",
        "usr/share/zsh/vendor-completions/_zdeploy",
        "usr/share/fish/vendor_completions.d/zdeploy.fish",
    ] {
        let text = std::fs::read_to_string(root.join(completion))
            .unwrap_or_else(|e| panic!("{completion}: {e}"));
        assert!(text.contains("zdeploy"), "{completion}");
    }
    let conffiles = debian.sh("dpkg-query --showformat='${Conffiles}' --show zdeploy");
    assert!(
        conffiles.contains("/etc/zdeploy/zdeploy.toml"),
        "{conffiles}"
    );
    let unit = root.join("usr/lib/systemd/system/zdeploy-agent.service");
    assert!(unit.is_file(), "the unit is installed");
    assert!(
        !root
            .join("etc/systemd/system/multi-user.target.wants/zdeploy-agent.service")
            .exists(),
        "the unit is not enabled before a config exists"
    );
    // The unit as systemd reads it on a server that runs systemd (installed
    // above), its binary the packaged one.
    run(Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg("/usr/lib/systemd/system/zdeploy-agent.service"));

    // A site deployed with the packaged zdeploy, then the package removed
    // and purged: the webroot is exactly as it was.
    write_files(&root.join("srv/app"), &[("index.php", "<?php echo 'v1';")]);
    debian.sh(
        "mkdir -p /var/www/webroot && zdeploy deploy --settle 0s --webroot /var/www/webroot /srv/app",
    );
    std::fs::write(root.join("var/www/webroot/ROOT/upload.txt"), "a user's").unwrap();
    let webroot = root.join("var/www/webroot");
    let before = tree(&webroot, &[]);
    debian.sh("apt-get remove -y -qq zdeploy && apt-get purge -y -qq zdeploy");
    assert!(!root.join("usr/bin/zdeploy").exists());
    assert_eq!(
        tree(&webroot, &[]),
        before,
        "removing zdeploy keeps the webroot"
    );
    drop(debian);
    assert_static_binary_runs_alone();
}

/// The static binary the same script built.
fn assert_static_binary_runs_alone() {
    let tarball = built("target/package", "zdeploy-", "-linux-musl.tar.gz");
    let empty = tempfile::Builder::new()
        .prefix("zdeploy-static-")
        .tempdir()
        .unwrap();
    run(Command::new("tar")
        .arg("-xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(empty.path()));
    let entries: Vec<_> = std::fs::read_dir(empty.path()).unwrap().collect();
    assert_eq!(
        entries.len(),
        1,
        "the root holds the binary and nothing else"
    );
    let out = run(Command::new("chroot")
        .arg(empty.path())
        .args(["/zdeploy", "--version"])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"));
    assert!(out.starts_with("zdeploy "), "{out}");
}
