//! Counters and a duration histogram, rendered in the Prometheus text format
//! at `GET /metrics`. Gauges that the history already knows (live release
//! age) are computed at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Upper bounds of the deploy duration buckets, in seconds.
const DURATION_BUCKETS: [f64; 10] = [0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0];

#[derive(Default)]
struct Histogram {
    counts: [u64; DURATION_BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
struct Inner {
    /// (app, kind, outcome): deploys, and rollback/keep/prune asked by API.
    runs: BTreeMap<(String, String, String), u64>,
    durations: BTreeMap<String, Histogram>,
    poll_errors: BTreeMap<String, u64>,
    webhook_rejections: BTreeMap<(String, String), u64>,
    lock_waits: BTreeMap<String, u64>,
    /// (app, status class "2xx"…): requests the web server reported.
    served: BTreeMap<(String, String), u64>,
    /// (app, verdict): how watches ended.
    watches: BTreeMap<(String, String), u64>,
}

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().expect("metrics lock"))
    }

    /// A finished run; only deploys go into the duration histogram.
    pub fn run_finished(&self, app: &str, kind: &str, outcome: &str, seconds: f64) {
        self.with(|m| {
            *m.runs
                .entry((app.to_string(), kind.to_string(), outcome.to_string()))
                .or_default() += 1;
            if kind != "deploy" {
                return;
            }
            let histogram = m.durations.entry(app.to_string()).or_default();
            for (bound, count) in DURATION_BUCKETS.iter().zip(histogram.counts.iter_mut()) {
                if seconds <= *bound {
                    *count += 1;
                }
            }
            histogram.count += 1;
            histogram.sum += seconds;
        });
    }

    pub fn poll_error(&self, app: &str) {
        self.with(|m| *m.poll_errors.entry(app.to_string()).or_default() += 1);
    }

    pub fn webhook_rejected(&self, app: &str, reason: &str) {
        self.with(|m| {
            *m.webhook_rejections
                .entry((app.to_string(), reason.to_string()))
                .or_default() += 1;
        });
    }

    /// `count` requests of `status` the web server reported for `app`.
    pub fn served(&self, app: &str, status: u16, count: u64) {
        let class = format!("{}xx", status / 100);
        self.with(|m| *m.served.entry((app.to_string(), class)).or_default() += count);
    }

    pub fn watched(&self, app: &str, verdict: &str) {
        self.with(|m| {
            *m.watches
                .entry((app.to_string(), verdict.to_string()))
                .or_default() += 1;
        });
    }

    pub fn lock_waited(&self, app: &str) {
        self.with(|m| *m.lock_waits.entry(app.to_string()).or_default() += 1);
    }

    /// The text format; `live_ages` are (app, seconds since the live release was made).
    pub fn render(
        &self,
        live_ages: &[(String, f64)],
        windows: &[(String, Windows)],
        fleets: &[(String, super::fleet::FleetView)],
        members: &[(String, crate::fleet::etcd::member::MemberView)],
    ) -> String {
        let mut out = String::new();
        self.with(|m| {
            header(&mut out, "zdeploy_runs_total", "counter", "Runs by the agent (deploy; rollback, keep, prune asked through the API), by outcome.");
            for ((app, kind, outcome), n) in &m.runs {
                let _ = writeln!(out, "zdeploy_runs_total{{app=\"{}\",kind=\"{}\",outcome=\"{}\"}} {n}", escape(app), escape(kind), escape(outcome));
            }
            header(&mut out, "zdeploy_deploy_duration_seconds", "histogram", "Time from trigger taken to deploy finished.");
            for (app, h) in &m.durations {
                let app = escape(app);
                for (bound, count) in DURATION_BUCKETS.iter().zip(h.counts) {
                    let _ = writeln!(out, "zdeploy_deploy_duration_seconds_bucket{{app=\"{app}\",le=\"{bound}\"}} {count}");
                }
                let _ = writeln!(out, "zdeploy_deploy_duration_seconds_bucket{{app=\"{app}\",le=\"+Inf\"}} {}", h.count);
                let _ = writeln!(out, "zdeploy_deploy_duration_seconds_sum{{app=\"{app}\"}} {}", h.sum);
                let _ = writeln!(out, "zdeploy_deploy_duration_seconds_count{{app=\"{app}\"}} {}", h.count);
            }
            header(&mut out, "zdeploy_poll_errors_total", "counter", "Failed checks of a remote for new commits.");
            for (app, n) in &m.poll_errors {
                let _ = writeln!(out, "zdeploy_poll_errors_total{{app=\"{}\"}} {n}", escape(app));
            }
            header(&mut out, "zdeploy_webhook_rejections_total", "counter", "Webhook requests refused, by reason.");
            for ((app, reason), n) in &m.webhook_rejections {
                let _ = writeln!(out, "zdeploy_webhook_rejections_total{{app=\"{}\",reason=\"{}\"}} {n}", escape(app), escape(reason));
            }
            header(&mut out, "zdeploy_lock_waits_total", "counter", "Agent runs that waited for another holder of the lock.");
            for (app, n) in &m.lock_waits {
                let _ = writeln!(out, "zdeploy_lock_waits_total{{app=\"{}\"}} {n}", escape(app));
            }
            header(&mut out, "zdeploy_served_requests_total", "counter", "Requests the web server reported serving, by status class.");
            for ((app, class), n) in &m.served {
                let _ = writeln!(out, "zdeploy_served_requests_total{{app=\"{}\",status=\"{class}\"}} {n}", escape(app));
            }
            header(&mut out, "zdeploy_watch_verdicts_total", "counter", "Watches of a new release by how they ended (kept, unjudged, breached, ended).");
            for ((app, verdict), n) in &m.watches {
                let _ = writeln!(out, "zdeploy_watch_verdicts_total{{app=\"{}\",verdict=\"{}\"}} {n}", escape(app), escape(verdict));
            }
        });
        header(
            &mut out,
            "zdeploy_live_release_age_seconds",
            "gauge",
            "Seconds since the live release was made.",
        );
        for (app, age) in live_ages {
            let _ = writeln!(
                out,
                "zdeploy_live_release_age_seconds{{app=\"{}\"}} {age:.0}",
                escape(app)
            );
        }
        header(
            &mut out,
            "zdeploy_maintenance_on",
            "gauge",
            "1 while a maintenance window is open (requests get 503).",
        );
        for (app, windows) in windows {
            let _ = writeln!(
                out,
                "zdeploy_maintenance_on{{app=\"{}\"}} {}",
                escape(app),
                u8::from(windows.open)
            );
        }
        header(
            &mut out,
            "zdeploy_maintenance_seconds",
            "summary",
            "Maintenance windows closed, by hand and by deploys, and how long they were open.",
        );
        for (app, windows) in windows {
            let app = escape(app);
            let _ = writeln!(
                out,
                "zdeploy_maintenance_seconds_sum{{app=\"{app}\"}} {:.3}",
                windows.seconds
            );
            let _ = writeln!(
                out,
                "zdeploy_maintenance_seconds_count{{app=\"{app}\"}} {}",
                windows.count
            );
        }
        header(
            &mut out,
            "zdeploy_fleet_switch_skew_seconds",
            "gauge",
            "Time between the first and the last host's switch in the last fleet deploy.",
        );
        let skews = fleets
            .iter()
            .map(|(app, view)| (app, view.skew_ms))
            .chain(members.iter().map(|(app, view)| (app, view.skew_ms)));
        for (app, skew) in skews {
            if let Some(skew) = skew {
                let _ = writeln!(
                    out,
                    "zdeploy_fleet_switch_skew_seconds{{app=\"{}\"}} {}",
                    escape(app),
                    skew as f64 / 1000.0
                );
            }
        }
        let gauges: [MemberGauge; 4] = [
            (
                "zdeploy_fleet_ready",
                "1 while this host serves its fleet's committed release (what /ready answers).",
                |v| f64::from(u8::from(v.ready())),
            ),
            (
                "zdeploy_fleet_leader",
                "1 while this host's agent leads its fleet in etcd.",
                |v| {
                    f64::from(u8::from(
                        v.leader.is_some() && v.leader.as_deref() == Some(v.name.as_str()),
                    ))
                },
            ),
            (
                "zdeploy_fleet_members",
                "Members of the fleet in etcd (hosts whose lease holds).",
                |v| v.members.len() as f64,
            ),
            (
                "zdeploy_fleet_etcd_connected",
                "1 while this host's agent reaches its fleet's etcd.",
                |v| f64::from(u8::from(v.connected)),
            ),
        ];
        for (name, help, value) in gauges {
            header(&mut out, name, "gauge", help);
            for (app, view) in members {
                let _ = writeln!(out, "{name}{{app=\"{}\"}} {}", escape(app), value(view));
            }
        }
        header(
            &mut out,
            "zdeploy_fleet_host_failures_total",
            "counter",
            "Fleet runs a host failed in, by host.",
        );
        for (app, view) in fleets {
            for (host, state) in &view.hosts {
                let _ = writeln!(
                    out,
                    "zdeploy_fleet_host_failures_total{{app=\"{}\",host=\"{}\"}} {}",
                    escape(app),
                    escape(host),
                    state.failures
                );
            }
        }
        out
    }
}

/// An app's maintenance windows, read from its history at each scrape.
pub struct Windows {
    pub open: bool,
    /// Windows closed so far, and their total length.
    pub count: u64,
    pub seconds: f64,
}

/// A gauge of a fleet member: its name, help and value.
type MemberGauge = (
    &'static str,
    &'static str,
    fn(&crate::fleet::etcd::member::MemberView) -> f64,
);

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value as the text format wants it.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
