//! Load for zero-downtime checks: clients that keep PHP busy reading a page
//! whose parts must all come from one version, a client saving data through
//! the app, and the verdict on what they saw.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::servers::request;

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
    std::fs::write(
        root.join(format!("inc/a_{version}.php")),
        format!("<?php $a = '{version}';\n"),
    )
    .unwrap();
    std::fs::write(
        root.join(format!("inc/b_{version}.php")),
        format!("<?php $b = '{version}';\n"),
    )
    .unwrap();
    std::fs::write(
        root.join(format!("data_{version}.txt")),
        format!("{version}\n"),
    )
    .unwrap();
    std::fs::write(
        root.join("save.php"),
        "<?php\n$id = preg_replace('/[^0-9a-z-]/', '', $_GET['id'] ?? '');\n\
         if ($id === '') { http_response_code(400); exit; }\n\
         file_put_contents(__DIR__ . \"/saves/$id.txt\", \"saved $id\");\necho \"ok $id\";\n",
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
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let readers = (0..readers)
            .map(|_| {
                let (stop, samples) = (stop.clone(), samples.clone());
                std::thread::spawn(move || {
                    paced(&stop, READ_EVERY, MAX_READS, |_| {
                        let started = Instant::now();
                        let outcome = request(port, "GET", "/").map_err(|e| e.to_string());
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
    for sample in samples {
        let body = match &sample.outcome {
            Ok((200, body)) => body,
            other => {
                verdict.failed.push(format!("{other:?}"));
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
