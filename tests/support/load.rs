//! Load for zero-downtime checks: clients that keep PHP busy reading a page
//! whose parts must all come from one version, a client saving data through
//! the app, and the verdict on what they saw.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::Site;
use super::servers::request;

/// The app's save endpoint: writes `saves/<id>.txt` beside itself.
pub const SAVE_PHP: &str = "<?php\n$id = preg_replace('/[^0-9a-z-]/', '', $_GET['id'] ?? '');\n\
     if ($id === '') { http_response_code(400); exit; }\n\
     file_put_contents(__DIR__ . \"/saves/$id.txt\", \"saved $id\");\necho \"ok $id\";\n";

/// A PHP app whose page includes two PHP files and a data file that must all
/// come from one version; every version names its files differently, so a
/// mixed or half-updated tree fails or shows.
pub fn php_app(root: &Path, version: &str) {
    let _ = std::fs::remove_dir_all(root);
    std::fs::create_dir_all(root.join("inc")).unwrap();
    std::fs::create_dir_all(root.join("saves")).unwrap();
    std::fs::write(root.join("saves/.keep"), "").unwrap();
    std::fs::write(
        root.join("index.php"),
        format!(
            "<?php\nusleep(15000);\nrequire __DIR__ . '/inc/a_{version}.php';\nrequire __DIR__ . '/inc/b_{version}.php';\n\
             $data = trim(file_get_contents(__DIR__ . '/data_{version}.txt'));\n\
             echo \"page={version} a=$a b=$b data=$data\";\n"
        ),
    )
    .unwrap();
    version_parts(&root.join("inc"), root, version);
    std::fs::write(root.join("save.php"), SAVE_PHP).unwrap();
}

/// What a page of `version` is made of: two PHP files that set `$a` and
/// `$b` in `code` and a data file in `data`, each named after the version.
pub fn version_parts(code: &Path, data: &Path, version: &str) {
    std::fs::write(
        code.join(format!("a_{version}.php")),
        format!("<?php $a = '{version}';\n"),
    )
    .unwrap();
    std::fs::write(
        code.join(format!("b_{version}.php")),
        format!("<?php $b = '{version}';\n"),
    )
    .unwrap();
    std::fs::write(
        data.join(format!("data_{version}.txt")),
        format!("{version}\n"),
    )
    .unwrap();
}

/// The version a page shows, or why it is torn.
pub fn page_version(body: &str) -> Result<String, String> {
    let fields: Vec<(&str, &str)> = body
        .split_whitespace()
        .filter_map(|f| f.split_once('='))
        .collect();
    let values: Vec<&str> = fields.iter().map(|(_, v)| *v).collect();
    match values.first() {
        Some(first) if fields.len() == 4 && values.iter().all(|v| v == first) => {
            Ok(first.to_string())
        }
        _ => Err(body.to_string()),
    }
}

pub struct Sample {
    pub started: Instant,
    pub finished: Instant,
    pub outcome: Result<(u16, String), String>,
}

/// One deploy or rollback: when it ran and the version live after it.
pub struct Op {
    pub started: Instant,
    pub finished: Instant,
    pub version: String,
}

/// `count` deploys with a rollback after every fifth, timed for `judge`:
/// `deploy(version)` makes `version` live, `rollback()` goes one back.
pub fn deploys_and_rollbacks(
    count: usize,
    mut deploy: impl FnMut(&str),
    mut rollback: impl FnMut(),
) -> Vec<Op> {
    let mut ops = Vec::new();
    let mut history = vec!["v0".to_string()];
    for i in 1..=count {
        let version = format!("v{i}");
        let started = Instant::now();
        deploy(&version);
        ops.push(Op {
            started,
            finished: Instant::now(),
            version: version.clone(),
        });
        history.push(version);
        if i % 5 == 0 {
            let started = Instant::now();
            rollback();
            history.pop();
            let back = history.last().expect("v0 stays").clone();
            ops.push(Op {
                started,
                finished: Instant::now(),
                version: back,
            });
        }
    }
    ops
}

type Saves = (Vec<String>, Vec<String>);

pub struct Load {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    readers: Vec<JoinHandle<()>>,
    saver: Option<JoinHandle<Saves>>,
}

/// Each reader starts a request every `READ_EVERY`, at most `MAX_READS`
/// of them; the saver one save every `SAVE_EVERY`, at most `MAX_SAVES`. A
/// fixed rate and count: the work a test gives the server, and the user
/// content its deploys carry, do not grow with how fast the machine is.
const READ_EVERY: Duration = Duration::from_millis(20);
const MAX_READS: usize = 20_000;
const SAVE_EVERY: Duration = Duration::from_millis(20);
const MAX_SAVES: usize = 5_000;

/// Run `work` every `every` (never faster, never to catch up) until `stop`
/// or `count` runs.
fn paced(stop: &AtomicBool, every: Duration, count: usize, mut work: impl FnMut(usize)) {
    let mut next = Instant::now();
    for n in 0..count {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        work(n);
        next = (next + every).max(Instant::now());
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
}

impl Load {
    /// `readers` clients requesting `/` at a steady pace, and a saver
    /// posting to `/save.php` when `saver` is set.
    pub fn start(port: u16, readers: usize, saver: bool) -> Self {
        Self::start_at(port, "/", readers, saver)
    }

    /// The same, the readers requesting `path`.
    pub fn start_at(port: u16, path: &'static str, readers: usize, saver: bool) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let readers = (0..readers)
            .map(|_| {
                let (stop, samples) = (stop.clone(), samples.clone());
                std::thread::spawn(move || {
                    paced(&stop, READ_EVERY, MAX_READS, |_| {
                        let started = Instant::now();
                        let outcome = request(port, "GET", path).map_err(|e| e.to_string());
                        let finished = Instant::now();
                        samples.lock().unwrap().push(Sample {
                            started,
                            finished,
                            outcome,
                        });
                    })
                })
            })
            .collect();
        let saver = saver.then(|| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut saved, mut failures) = (Vec::new(), Vec::new());
                paced(&stop, SAVE_EVERY, MAX_SAVES, |n| {
                    let id = format!("save-{n}");
                    match request(port, "POST", &format!("/save.php?id={id}")) {
                        Ok((200, body)) if body == format!("ok {id}") => saved.push(id),
                        other => failures.push(format!("{id}: {other:?}")),
                    }
                });
                (saved, failures)
            })
        });
        Load {
            stop,
            samples,
            readers,
            saver,
        }
    }

    /// Stop the clients; the samples, the saves acknowledged and the saves that failed.
    pub fn finish(self) -> (Vec<Sample>, Vec<String>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for reader in self.readers {
            reader.join().unwrap();
        }
        let (saved, failures) = self.saver.map(|s| s.join().unwrap()).unwrap_or_default();
        let samples = std::mem::take(&mut *self.samples.lock().unwrap());
        (samples, saved, failures)
    }
}

pub struct Verdict {
    pub failed: Vec<String>,
    pub torn: Vec<String>,
    pub stale: Vec<String>,
}

/// Judge every sample: failed (not a 200), torn (parts of several versions)
/// or stale (a version that was not live at any instant of the request).
pub fn judge(samples: &[Sample], ops: &[Op], initial: &str) -> Verdict {
    let mut verdict = Verdict {
        failed: Vec::new(),
        torn: Vec::new(),
        stale: Vec::new(),
    };
    let first = samples.first().map(|s| s.started);
    for sample in samples {
        let body = match &sample.outcome {
            Ok((200, body)) => body,
            other => {
                // When, and during what, for whoever reads the failure.
                let during: Vec<&str> = ops
                    .iter()
                    .filter(|op| op.started < sample.finished && op.finished > sample.started)
                    .map(|op| op.version.as_str())
                    .collect();
                let at = first.map(|t| sample.started - t).unwrap_or_default();
                verdict
                    .failed
                    .push(format!("{other:?} at {at:?} (during {during:?})"));
                continue;
            }
        };
        let version = match page_version(body) {
            Ok(v) => v,
            Err(body) => {
                verdict.torn.push(body);
                continue;
            }
        };
        let done = ops.iter().rev().find(|op| op.finished <= sample.started);
        let mut allowed = vec![
            done.map(|op| op.version.clone())
                .unwrap_or_else(|| initial.to_string()),
        ];
        allowed.extend(
            ops.iter()
                .filter(|op| op.started < sample.finished && op.finished > sample.started)
                .map(|op| op.version.clone()),
        );
        if !allowed.contains(&version) {
            verdict.stale.push(format!("{version} not in {allowed:?}"));
        }
    }
    verdict
}

#[track_caller]
/// No request failed, came back torn or showed a version older than what
/// was live when it started; and the load ran.
pub fn assert_whole(verdict: &Verdict, samples: usize) {
    for (what, found) in [
        ("failed", &verdict.failed),
        ("torn", &verdict.torn),
        ("stale", &verdict.stale),
    ] {
        assert!(
            found.is_empty(),
            "{} {what} requests: {:?}",
            found.len(),
            &found[..found.len().min(5)]
        );
    }
    assert!(samples > 100, "the load ran: {samples} requests");
}

/// The `p`-th percentile (0..=100) of the latencies of successful samples.
pub fn percentile(samples: &[Sample], p: f64) -> Duration {
    let mut latencies: Vec<Duration> = samples
        .iter()
        .filter(|s| matches!(s.outcome, Ok((200, _))))
        .map(|s| s.finished - s.started)
        .collect();
    if latencies.is_empty() {
        return Duration::ZERO;
    }
    latencies.sort();
    let index = ((p / 100.0) * (latencies.len() - 1) as f64).round() as usize;
    latencies[index]
}

/// What a load run saw.
pub struct LoadReport {
    /// Where the app's saves land in the live release.
    saves: PathBuf,
    /// Deploys and rollbacks run, and asked for.
    operations: usize,
    planned: usize,
    requests: usize,
    failed: Vec<String>,
    torn: Vec<String>,
    stale: Vec<String>,
    saved: Vec<String>,
    save_failures: Vec<String>,
    /// Mean time of the first and of the last ten deploys and rollbacks.
    first_ops: Duration,
    last_ops: Duration,
}

impl LoadReport {
    #[track_caller]
    pub fn assert_zero_downtime(&self, served_by: &str) {
        eprintln!(
            "{served_by}: {} deploys and rollbacks, {} requests, {} failed, {} torn, {} stale, {} saves; \
             the first ten took {:?} each, the last ten {:?}",
            self.operations,
            self.requests,
            self.failed.len(),
            self.torn.len(),
            self.stale.len(),
            self.saved.len(),
            self.first_ops,
            self.last_ops,
        );
        let first = |v: &Vec<String>| v.iter().take(5).cloned().collect::<Vec<_>>();
        assert_eq!(
            self.operations, self.planned,
            "every deploy and rollback ran"
        );
        assert!(
            self.requests > 1000,
            "the load ran throughout: {} requests",
            self.requests
        );
        assert!(
            self.failed.is_empty(),
            "{} failed requests, e.g. {:?}",
            self.failed.len(),
            first(&self.failed)
        );
        assert!(
            self.torn.is_empty(),
            "{} torn pages, e.g. {:?}",
            self.torn.len(),
            first(&self.torn)
        );
        assert!(
            self.stale.is_empty(),
            "{} stale pages, e.g. {:?}",
            self.stale.len(),
            first(&self.stale)
        );
        assert!(
            self.save_failures.is_empty(),
            "{} saves failed: {:?}",
            self.save_failures.len(),
            first(&self.save_failures)
        );
        assert!(self.saved.len() > 100, "the saver ran throughout");
        let saves = &self.saves;
        let missing: Vec<_> = self
            .saved
            .iter()
            .filter(|id| {
                std::fs::read_to_string(saves.join(format!("{id}.txt")))
                    .ok()
                    .as_deref()
                    != Some(&format!("saved {id}"))
            })
            .collect();
        assert!(
            missing.is_empty(),
            "{} of {} saves lost or damaged: {:?}",
            missing.len(),
            self.saved.len(),
            &missing[..missing.len().min(10)]
        );
    }
}

/// An app under load: where its source is, how a version of it is written,
/// the URL path readers ask for, and its saves folder inside the release.
pub struct Shape<'a> {
    pub app: &'a Path,
    pub write: fn(&Path, &str),
    pub path: &'static str,
    pub saves: &'static str,
}

impl<'a> Shape<'a> {
    /// `php_app`, served from the release's top folder.
    pub fn plain(app: &'a Path) -> Self {
        Shape {
            app,
            write: php_app,
            path: "/",
            saves: "saves",
        }
    }
}

/// Keep every PHP worker busy (6 readers for 4 workers) and a saver posting,
/// while `deploys` deploys, and a rollback after every fifth, run with keep
/// 2; `extra` goes to every deploy and rollback.
pub fn deploy_under_load(
    site: &Site,
    shape: &Shape<'_>,
    port: u16,
    deploys: usize,
    extra: &[String],
) -> LoadReport {
    // A drain longer than any request takes on a busy machine: a release is
    // pruned only once no request can still be running on it.
    let deploy_args = ["--keep", "2", "--drain", "5s", "--settle", "200ms", "-q"];
    let load = Load::start_at(port, shape.path, 6, true);
    let ops = deploys_and_rollbacks(
        deploys,
        |version| {
            (shape.write)(shape.app, version);
            site.zdeploy("deploy")
                .args(deploy_args)
                .args(extra)
                .arg(shape.app)
                .success();
        },
        || {
            site.zdeploy("rollback")
                .args(["--settle", "200ms", "-q"])
                .args(extra)
                .success();
        },
    );
    std::thread::sleep(Duration::from_millis(300));
    let (samples, saved, save_failures) = load.finish();
    let verdict = judge(&samples, &ops, "v0");
    let mean = |ops: &[Op]| {
        ops.iter()
            .map(|op| op.finished - op.started)
            .sum::<Duration>()
            / ops.len() as u32
    };
    LoadReport {
        saves: site.context().join(shape.saves),
        first_ops: mean(&ops[..10]),
        last_ops: mean(&ops[ops.len() - 10..]),
        operations: ops.len(),
        planned: deploys + deploys / 5,
        requests: samples.len(),
        failed: verdict.failed,
        torn: verdict.torn,
        stale: verdict.stale,
        saved,
        save_failures,
    }
}
