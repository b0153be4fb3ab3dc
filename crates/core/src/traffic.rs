//! What the web server served, per release: each request's status and
//! duration, reported by the site `zdeploy webserver` generates (as one
//! `zdeploy1 STATUS SECONDS|MICROSus PATH` line: PATH is the folder or file the
//! server resolved, so it names the release that served it), tallied in
//! ten-second buckets with a log-scale duration histogram and kept in the
//! history: a deploy's figures are requests, 5xx and p50/p95/p99.

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path};

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::history::{DeploymentRecord, History};

/// What starts a report, after whatever the transport put before it (a
/// syslog header).
pub const MARKER: &str = "zdeploy1 ";
/// What starts the `user_id` of a Caddy report. Caddy's access log has no
/// field for the root a request was served from, so the site maps
/// `{http.vars.root}` into that one.
pub const CADDY_ROOT_PREFIX: &str = "zdeploy1:";
/// Requests are counted per bucket of this many milliseconds.
pub const BUCKET_MS: i64 = 10_000;
/// Buckets older than this are dropped.
pub const KEEP_MS: i64 = 7 * 24 * 3600 * 1000;
/// Histogram steps per doubling of the duration: a percentile is known
/// within 9%.
const STEPS_PER_DOUBLING: f64 = 4.0;

/// One request as the web server reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct Served {
    pub status: u16,
    pub micros: u64,
    /// The release's folder name under the webroot.
    pub release: String,
}

/// Read one report for a site whose webroot is `webroot` (as the server
/// resolves it); `None` for anything else, a path outside the webroot
/// included.
pub fn parse(report: &str, webroot: &Path) -> Option<Served> {
    let rest = &report[report.find(MARKER)? + MARKER.len()..];
    let mut fields = rest.trim_end().splitn(3, ' ');
    let status: u16 = fields.next()?.parse().ok()?;
    // Seconds (nginx), or microseconds with their unit (Apache).
    let duration = fields.next()?;
    let seconds: f64 = match duration.strip_suffix("us") {
        Some(micros) => micros.parse::<u64>().ok()? as f64 / 1e6,
        None => duration.parse().ok()?,
    };
    let path = Path::new(fields.next()?);
    if !(100..=599).contains(&status) || !seconds.is_finite() || seconds < 0.0 {
        return None;
    }
    // Not a release: the state folder (a maintenance page), dot-paths.
    let release = match path.strip_prefix(webroot).ok()?.components().next()? {
        Component::Normal(name) => name.to_str().filter(|n| !n.starts_with('.'))?.to_string(),
        _ => return None,
    };
    Some(Served {
        status,
        micros: (seconds * 1e6) as u64,
        release,
    })
}

/// One request from Caddy's JSON access log, before its root is resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct CaddyReport {
    pub status: u16,
    pub seconds: f64,
    /// The root as the site names it: the context symlink, or the canary's
    /// link to its release. Only resolving it says which release served.
    pub root: std::path::PathBuf,
}

/// Read one datagram of Caddy's access log (`status`, `duration` in
/// seconds, `user_id` with the root after `CADDY_ROOT_PREFIX`); `None` for
/// anything else.
pub fn parse_caddy(datagram: &[u8]) -> Option<CaddyReport> {
    #[derive(Deserialize)]
    struct Entry {
        status: u16,
        duration: f64,
        user_id: String,
    }
    let entry: Entry = serde_json::from_slice(datagram).ok()?;
    let root = entry.user_id.strip_prefix(CADDY_ROOT_PREFIX)?;
    if !(100..=599).contains(&entry.status)
        || !entry.duration.is_finite()
        || entry.duration < 0.0
        || !root.starts_with('/')
    {
        return None;
    }
    Some(CaddyReport {
        status: entry.status,
        seconds: entry.duration,
        root: root.into(),
    })
}

/// The report line for a request `seconds` long whose resolved root is
/// `path`, as `parse` reads it.
pub fn report_line(status: u16, seconds: f64, path: &Path) -> String {
    format!("{MARKER}{status} {seconds:.6} {}", path.display())
}

/// The app's traffic socket, bound so every local user may write to it
/// (the web server's workers run as their own user); an old one is
/// replaced.
pub fn bind_socket(path: &Path) -> std::io::Result<std::os::unix::net::UnixDatagram> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let socket = std::os::unix::net::UnixDatagram::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o622))?;
    Ok(socket)
}

/// Tallies held at most between two writes to the history (releases times
/// buckets); reports beyond are counted as dropped, so a flood of made-up
/// release names cannot grow memory.
pub const MAX_TALLIES: usize = 1024;

/// Reports tallied per release and bucket until they are written.
#[derive(Debug, Default)]
pub struct Tallies {
    tallies: HashMap<(String, i64), Tally>,
    /// Reports dropped since the last write (too many tallies at once).
    pub dropped: u64,
}

impl Tallies {
    /// Count `served`, reported at `at_ms`.
    pub fn add(&mut self, served: Served, at_ms: i64) {
        let key = (served.release, bucket_of(at_ms));
        if self.tallies.len() >= MAX_TALLIES && !self.tallies.contains_key(&key) {
            self.dropped += 1;
            return;
        }
        self.tallies
            .entry(key)
            .or_default()
            .add(served.status, served.micros);
    }

    pub fn is_empty(&self) -> bool {
        self.tallies.is_empty()
    }
}

/// Requests counted together: how many, how many 5xx, and their durations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    pub requests: u64,
    pub errors: u64,
    /// Histogram step -> requests.
    steps: BTreeMap<u32, u64>,
}

impl Tally {
    pub fn add(&mut self, status: u16, micros: u64) {
        self.requests += 1;
        if status >= 500 {
            self.errors += 1;
        }
        let step = (STEPS_PER_DOUBLING * (micros.max(1) as f64).log2()).floor() as u32;
        *self.steps.entry(step).or_default() += 1;
    }

    pub fn merge(&mut self, other: &Tally) {
        self.requests += other.requests;
        self.errors += other.errors;
        for (step, count) in &other.steps {
            *self.steps.entry(*step).or_default() += count;
        }
    }

    /// The duration in milliseconds under which `share` (0 to 1) of the
    /// requests took, from the histogram; `None` without requests.
    pub fn percentile_ms(&self, share: f64) -> Option<f64> {
        let total: u64 = self.steps.values().sum();
        if total == 0 {
            return None;
        }
        let wanted = ((share * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (step, count) in &self.steps {
            seen += count;
            if seen >= wanted {
                // The middle of the step, in milliseconds.
                let micros = 2f64.powf((*step as f64 + 0.5) / STEPS_PER_DOUBLING);
                return Some(micros / 1000.0);
            }
        }
        None
    }

    pub fn figures(&self) -> Figures {
        Figures {
            requests: self.requests,
            errors: self.errors,
            p50_ms: self.percentile_ms(0.50),
            p95_ms: self.percentile_ms(0.95),
            p99_ms: self.percentile_ms(0.99),
        }
    }

    /// "step:count,…", as the history keeps it.
    fn encode(&self) -> String {
        self.steps
            .iter()
            .map(|(step, count)| format!("{step}:{count}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn decode(requests: u64, errors: u64, text: &str) -> Tally {
        let steps = text
            .split(',')
            .filter_map(|pair| {
                let (step, count) = pair.split_once(':')?;
                Some((step.parse().ok()?, count.parse().ok()?))
            })
            .collect();
        Tally {
            requests,
            errors,
            steps,
        }
    }
}

/// A release's traffic over some time, as people read it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    pub requests: u64,
    pub errors: u64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl Figures {
    /// "1,234 requests, 3 5xx (0.24%), p50 3 ms, p95 12 ms, p99 40 ms".
    pub fn describe(&self) -> String {
        if self.requests == 0 {
            return "no requests".to_string();
        }
        let ms = |v: Option<f64>| match v {
            Some(v) if v < 10.0 => format!("{v:.1} ms"),
            Some(v) => format!("{v:.0} ms"),
            None => "?".to_string(),
        };
        format!(
            "{} requests, {} 5xx ({:.2}%), p50 {}, p95 {}, p99 {}",
            self.requests,
            self.errors,
            100.0 * self.errors as f64 / self.requests as f64,
            ms(self.p50_ms),
            ms(self.p95_ms),
            ms(self.p99_ms)
        )
    }
}

/// The bucket `at_ms` falls in.
pub fn bucket_of(at_ms: i64) -> i64 {
    at_ms - at_ms.rem_euclid(BUCKET_MS)
}

/// A row's tally, its requests, errors and histogram from column `first` on.
fn tally_from(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Tally> {
    Ok(Tally::decode(
        row.get::<_, i64>(first)? as u64,
        row.get::<_, i64>(first + 1)? as u64,
        &row.get::<_, String>(first + 2)?,
    ))
}

impl History {
    /// Add each tally to its release's bucket, in one transaction, and drop
    /// buckets older than `KEEP_MS`.
    pub fn add_traffic(&self, tallies: &Tallies) -> Result<()> {
        let fail = |e| self.fail(e);
        let transaction = self.conn.unchecked_transaction().map_err(fail)?;
        let mut newest = None;
        for ((release, bucket_ms), tally) in &tallies.tallies {
            let mut total = transaction
                .query_row(
                    "SELECT requests, errors, histogram FROM traffic WHERE release = ?1 AND bucket_ms = ?2",
                    params![release, bucket_ms],
                    |row| tally_from(row, 0),
                )
                .optional()
                .map_err(fail)?
                .unwrap_or_default();
            total.merge(tally);
            transaction
                .execute(
                    "INSERT OR REPLACE INTO traffic (release, bucket_ms, requests, errors, histogram)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![
                        release,
                        bucket_ms,
                        total.requests as i64,
                        total.errors as i64,
                        total.encode()
                    ],
                )
                .map_err(fail)?;
            newest = newest.max(Some(*bucket_ms));
        }
        if let Some(newest) = newest {
            transaction
                .execute(
                    "DELETE FROM traffic WHERE bucket_ms < ?1",
                    params![newest - KEEP_MS],
                )
                .map_err(fail)?;
        }
        transaction.commit().map_err(fail)
    }

    /// What `release` served in the buckets from `from_ms` up to `to_ms`
    /// (now, if unset).
    pub fn traffic(&self, release: &str, from_ms: i64, to_ms: Option<i64>) -> Result<Tally> {
        let mut statement = self
            .conn
            .prepare(
                "SELECT requests, errors, histogram FROM traffic
                 WHERE release = ?1 AND bucket_ms >= ?2 AND bucket_ms < ?3",
            )
            .map_err(|e| self.fail(e))?;
        let rows = statement
            .query_map(
                params![release, bucket_of(from_ms), to_ms.unwrap_or(i64::MAX)],
                |row| tally_from(row, 0),
            )
            .map_err(|e| self.fail(e))?;
        let mut total = Tally::default();
        for row in rows {
            total.merge(&row.map_err(|e| self.fail(e))?);
        }
        Ok(total)
    }
}

/// One release's ten seconds, as a chart draws it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bucket {
    pub release: String,
    pub at_ms: i64,
    pub requests: u64,
    pub errors: u64,
    pub p95_ms: Option<f64>,
}

impl History {
    /// Every release's buckets from `from_ms` on, oldest first.
    pub fn traffic_since(&self, from_ms: i64) -> Result<Vec<Bucket>> {
        let mut statement = self
            .conn
            .prepare(
                "SELECT release, bucket_ms, requests, errors, histogram FROM traffic
                 WHERE bucket_ms >= ?1 ORDER BY bucket_ms, release",
            )
            .map_err(|e| self.fail(e))?;
        let rows = statement
            .query_map(params![bucket_of(from_ms)], |row| {
                let tally = tally_from(row, 2)?;
                Ok(Bucket {
                    release: row.get(0)?,
                    at_ms: row.get(1)?,
                    requests: tally.requests,
                    errors: tally.errors,
                    p95_ms: tally.percentile_ms(0.95),
                })
            })
            .map_err(|e| self.fail(e))?;
        rows.map(|row| row.map_err(|e| self.fail(e))).collect()
    }

    /// What the release `deployment` put live served while it was live:
    /// after a successful run, from its end to the next run that changed
    /// the live release (or now); a failed one's release only during the
    /// run (a switch back). `None` for a run that put nothing live.
    pub fn deployment_traffic(&self, deployment: &DeploymentRecord) -> Result<Option<Figures>> {
        let Some(release) = deployment.release.as_deref() else {
            return Ok(None);
        };
        let (from, to) = match deployment.outcome.as_str() {
            "success" => {
                let Some(from) = deployment.finished_ms else {
                    return Ok(None);
                };
                let next: Option<i64> = self
                    .conn
                    .query_row(
                        "SELECT finished_ms FROM deployments
                         WHERE id > ?1 AND outcome = 'success' AND kind IN ('deploy', 'rollback')
                         ORDER BY id LIMIT 1",
                        params![deployment.id],
                        |row| row.get(0),
                    )
                    .optional()
                    .map_err(|e| self.fail(e))?
                    .flatten();
                (from, next)
            }
            "failed" => (deployment.started_ms, deployment.finished_ms),
            _ => return Ok(None),
        };
        Ok(Some(self.traffic(release, from, to)?.figures()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caddy_report_gives_status_duration_and_the_root_it_names() {
        let report = parse_caddy(
            br#"{"level":"info","ts":1.5,"logger":"http.log.access.log0","msg":"handled request","user_id":"zdeploy1:/var/www/shop/ROOT/public","duration":0.0031,"size":3,"status":503}"#,
        )
        .unwrap();
        assert_eq!(report.status, 503);
        assert_eq!(report.seconds, 0.0031);
        assert_eq!(report.root, Path::new("/var/www/shop/ROOT/public"));
        for hostile in [
            &br#"{"user_id":"alice","duration":0.1,"status":200}"#[..],
            br#"{"user_id":"zdeploy1:relative","duration":0.1,"status":200}"#,
            br#"{"user_id":"zdeploy1:/x","duration":-1,"status":200}"#,
            br#"{"user_id":"zdeploy1:/x","duration":0.1,"status":99}"#,
            br#"{"user_id":"zdeploy1:/x","duration":0.1}"#,
            b"not json",
        ] {
            assert_eq!(parse_caddy(hostile), None);
        }
    }

    #[test]
    fn a_report_names_the_release_under_the_webroot_and_nothing_else() {
        let root = Path::new("/var/www/shop");
        let served = parse(
            "<190>Dec  7 11:20:00 zdeploy: zdeploy1 503 0.250 /var/www/shop/ROOT_20261207-112000/public",
            root,
        )
        .unwrap();
        assert_eq!(served.status, 503);
        assert_eq!(served.micros, 250_000);
        assert_eq!(served.release, "ROOT_20261207-112000");
        assert!(parse("zdeploy1 200 0.001 /etc/passwd", root).is_none());
        assert!(parse("zdeploy1 200 0.001 /var/www/shop/../x", root).is_none());
        assert!(parse("zdeploy1 999 0.001 /var/www/shop/R", root).is_none());
        assert!(parse("zdeploy1 200 -1 /var/www/shop/R", root).is_none());
        assert!(parse("zdeploy1 200 NaN /var/www/shop/R", root).is_none());
        assert!(parse("garbage", root).is_none());
        let apache = parse("zdeploy1 200 1500us /var/www/shop/ROOT_1/index.php\n", root).unwrap();
        assert_eq!((apache.micros, apache.release.as_str()), (1500, "ROOT_1"));
        let line = report_line(502, 0.0125, Path::new("/var/www/shop/ROOT_2/public"));
        let relayed = parse(&line, root).unwrap();
        assert_eq!((relayed.status, relayed.micros), (502, 12_500));
        assert_eq!(relayed.release, "ROOT_2");
        assert!(
            parse(
                "zdeploy1 503 5us /var/www/shop/.zdeploy/ROOT/maintenance/window/page.html",
                root
            )
            .is_none()
        );
    }

    #[test]
    fn percentiles_come_within_a_step_of_the_truth() {
        let mut tally = Tally::default();
        for ms in 1..=1000u64 {
            tally.add(if ms % 100 == 0 { 500 } else { 200 }, ms * 1000);
        }
        assert_eq!(tally.requests, 1000);
        assert_eq!(tally.errors, 10);
        for (share, truth) in [(0.5, 500.0), (0.95, 950.0), (0.99, 990.0)] {
            let found = tally.percentile_ms(share).unwrap();
            assert!(
                (found / truth - 1.0).abs() < 0.1,
                "{share}: {found} vs {truth}"
            );
        }
        let again = Tally::decode(tally.requests, tally.errors, &tally.encode());
        assert_eq!(again, tally);
    }
}
