//! Any bytes as an archive (tar, tar.gz, tar.zst or zip, by content): the
//! extraction succeeds or refuses, and never writes outside the release or
//! leaves a symlink there that leads out.

#![no_main]

use libfuzzer_sys::fuzz_target;
use zdeploy_core::history::History;
use zdeploy_core::manifest::Manifest;
use zdeploy_core::source::archive::extract;
use zdeploy_core::source::extract::Limits;

thread_local! {
    /// Manifests live in a history: one in memory serves every input.
    static HISTORY: History = History::open(std::path::Path::new(":memory:")).unwrap();
}

fuzz_target!(|data: &[u8]| {
    let scratch = tempfile::tempdir().unwrap();
    let archive = scratch.path().join("input");
    std::fs::write(&archive, data).unwrap();
    let release = scratch.path().join("release");
    std::fs::create_dir(&release).unwrap();
    let limits = Limits {
        max_bytes: 16 << 20,
        max_entries: 10_000,
    };
    let extracted = HISTORY.with(|history| {
        let manifest = Manifest::create(history, "fuzz").unwrap();
        extract(&archive, &release, limits, &manifest, None, &mut |_, _| {})
    });

    let mut beside: Vec<_> = std::fs::read_dir(scratch.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    beside.sort();
    assert_eq!(beside, ["input", "release"], "written outside the release");
    if extracted.is_ok() {
        let root = release.canonicalize().unwrap();
        for entry in walkdir(&release) {
            if let Ok(target) = entry.canonicalize() {
                assert!(target.starts_with(&root), "{} leads out", entry.display());
            }
        }
    }
});

fn walkdir(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            found.extend(walkdir(&path));
        }
        found.push(path);
    }
    found
}
