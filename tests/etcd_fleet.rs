//! Fleets whose agents agree through etcd: a 3-member etcd cluster on
//! loopback, hosts made of network namespaces (each with its own agent,
//! nginx, PHP-FPM and webroot), and HAProxy in front that keeps a host in
//! rotation only while its agent's `/ready` answers 200. Pushes arrive as
//! signed webhooks at any agent; nothing but the agents deploys.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::Zdeploy;
use crate::support::agent::{Answer, call, sign};
use crate::support::browser::Browser;
use crate::support::etcd::{Certificates, EtcdCluster};
use crate::support::fleet::{Fleet, HostKind};
use crate::support::git::Repo;
use crate::support::load::{Load, Op, assert_whole, judge, php_app};

const APP: &str = "shop";
const AGENT_PORT: u16 = 9470;
const TOKEN: &str = "etcd-fleet-test-token";
const SECRET: &str = "etcd-fleet-test-secret";
const ETCD_PASSWORD: &str = "etcd-agent-test-password";

struct EtcdFleet {
    fleet: Fleet,
    etcd: EtcdCluster,
    /// Lines of each host's `[fleet]` table besides the endpoints and name.
    fleet_table: String,
    repo: Repo,
    scratch: PathBuf,
    /// Pushes so far, for webhook delivery ids.
    pushes: usize,
}

impl EtcdFleet {
    /// `hosts` hosts, their agents started, and version v0 committed on
    /// every one of them.
    /// Host 1 has a build tool (`../../bin/build-assets` from a release);
    /// the others have none.
    fn start(hosts: usize, extra: &str) -> Self {
        let fleet = Fleet::start_agents(hosts);
        fleet.install_build_tool(1);
        let etcd = EtcdCluster::start(&fleet.root.path().join("etcd"), &fleet.bridge_address());
        Self::start_on(fleet, etcd, String::new(), extra)
    }

    /// As `start`, with etcd as production runs it: clients over TLS with
    /// a certificate, and etcd's auth on; the agents have the CA, their
    /// certificate and a user whose password is in a file.
    fn start_secured(hosts: usize) -> Self {
        let fleet = Fleet::start_agents(hosts);
        let tls = fleet.root.path().join("tls");
        let certificates = Certificates::make(&tls, &fleet.bridge_address());
        let mut etcd = EtcdCluster::start_with(
            &fleet.root.path().join("etcd"),
            &fleet.bridge_address(),
            Some(certificates.clone()),
        );
        etcd.enable_auth("zdeploy", ETCD_PASSWORD, &format!("/zdeploy/{APP}/"));
        std::fs::write(tls.join("etcd.password"), format!("{ETCD_PASSWORD}\n")).unwrap();
        let fleet_table = format!(
            "ca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n\
             user = \"zdeploy\"\npassword_file = \"{}\"\n",
            certificates.ca.display(),
            certificates.client.0.display(),
            certificates.client.1.display(),
            tls.join("etcd.password").display(),
        );
        Self::start_on(fleet, etcd, fleet_table, "")
    }

    fn start_on(fleet: Fleet, etcd: EtcdCluster, fleet_table: String, extra: &str) -> Self {
        let hosts = fleet.hosts.len();
        let repo = Repo::new(fleet.root.path(), APP);
        let scratch = fleet.root.path().join("scratch");
        php_app(&scratch, "v0");
        repo.commit_tree_of(&scratch);
        let mut this = EtcdFleet {
            fleet,
            etcd,
            fleet_table,
            repo,
            scratch,
            pushes: 0,
        };
        for i in 0..hosts {
            this.configure(i, extra);
            this.fleet.start_agent(i, &[]);
        }
        // Every member registered, so the first deploy waits for each.
        eventually("every member to register", Duration::from_secs(60), || {
            this.etcd
                .get(&format!("/zdeploy/{APP}/members/"), true)
                .len()
                == hosts
        });
        let v0 = this.push_to(0, None);
        this.wait_all_on(&v0, (0..hosts).collect(), Duration::from_secs(60));
        this
    }

    fn configure(&self, i: usize, extra: &str) {
        let p = self.fleet.path.display();
        let endpoints: Vec<String> = self
            .etcd
            .endpoints()
            .iter()
            .map(|e| format!("\"{e}\""))
            .collect();
        let dir = &self.fleet.hosts[i].dir;
        std::fs::write(dir.join("token"), TOKEN).unwrap();
        std::fs::write(dir.join("secret"), SECRET).unwrap();
        std::fs::write(
            dir.join("zdeploy.toml"),
            format!(
                "[agent]\nlisten = \"{address}:{AGENT_PORT}\"\ntoken_file = \"{p}/token\"\n\n\
                 [fleet]\netcd = [{endpoints}]\nname = \"h{i}\"\nlease_ttl = \"3s\"\n{fleet_table}\n\
                 [apps.{APP}]\nwebroot = \"{p}/www\"\nsource = \"{source}\"\nref = \"main\"\nfleet = true\n\
                 keep = 3\ndrain = \"5s\"\nsettle = \"200ms\"\nstage_timeout = \"20s\"\n\
                 webhook_secret_file = \"{p}/secret\"\n{extra}",
                address = self.fleet.hosts[i].address,
                endpoints = endpoints.join(", "),
                source = self.repo.bare.display(),
                fleet_table = self.fleet_table,
            ),
        )
        .unwrap();
    }

    fn agent_url(&self, i: usize, path: &str) -> String {
        format!("http://{}:{AGENT_PORT}{path}", self.fleet.hosts[i].address)
    }

    /// Host `i`'s `/ready` status (0: no answer).
    fn ready(&self, i: usize) -> u16 {
        call(&self.agent_url(i, "/ready"), &[], None).status
    }

    /// Host `i`'s view of the fleet.
    fn view(&self, i: usize) -> Value {
        let answer = call(&self.agent_url(i, &format!("/api/apps/{APP}")), &[], None);
        answer.json()["etcd_fleet"]["view"].clone()
    }

    /// Commit `version` (or what `scratch` holds) and send the push webhook
    /// to host `to`'s agent; the commit.
    fn push_to(&mut self, to: usize, version: Option<&str>) -> String {
        if let Some(version) = version {
            php_app(&self.scratch, version);
        }
        let commit = self.repo.commit_tree_of(&self.scratch);
        self.pushes += 1;
        let body = serde_json::json!({
            "ref": "refs/heads/main",
            "after": commit,
            "repository": {"default_branch": "main"},
        })
        .to_string();
        let signature = format!("sha256={}", sign(SECRET, &body));
        let delivery = format!("push-{}", self.pushes);
        let answer = call(
            &self.agent_url(to, &format!("/hooks/{APP}")),
            &[
                ("X-GitHub-Event", "push"),
                ("X-GitHub-Delivery", &delivery),
                ("X-Hub-Signature-256", &signature),
                ("Content-Type", "application/json"),
            ],
            Some(&body),
        );
        assert_eq!(answer.status, 202, "the webhook: {}", answer.body);
        commit
    }

    /// The fleet's committed release and commit, as etcd holds them.
    fn committed(&self) -> Option<(String, String, u64)> {
        let values = self.etcd.get(&format!("/zdeploy/{APP}/committed"), false);
        let value: Value = serde_json::from_str(values.first()?).ok()?;
        Some((
            value["release"].as_str()?.to_string(),
            value["commit"].as_str()?.to_string(),
            value["deploy"].as_u64()?,
        ))
    }

    /// The host whose agent leads.
    fn leader(&self) -> Option<usize> {
        let name = self.etcd.get(&format!("/zdeploy/{APP}/leader"), false);
        name.first()?.strip_prefix('h')?.parse().ok()
    }

    /// The deploy record's id and phase.
    fn deploy_record(&self) -> Option<(u64, String)> {
        let values = self.etcd.get(&format!("/zdeploy/{APP}/deploy"), false);
        let value: Value = serde_json::from_str(values.first()?).ok()?;
        Some((value["id"].as_u64()?, value["phase"].as_str()?.to_string()))
    }

    /// Wait until `commit` is committed and `hosts` all serve its release;
    /// the release.
    #[track_caller]
    fn wait_all_on(&self, commit: &str, hosts: Vec<usize>, limit: Duration) -> String {
        let mut release = String::new();
        eventually(&format!("{commit} live on hosts {hosts:?}"), limit, || {
            let Some((committed, committed_commit, _)) = self.committed() else {
                return false;
            };
            if committed_commit != commit {
                return false;
            }
            release = committed.clone();
            let live = self.fleet.live();
            hosts
                .iter()
                .all(|&i| live[i].as_deref() == Some(committed.as_str()))
        });
        release
    }
}

#[track_caller]
fn eventually(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

/// Every save some host acknowledged is in that host's live release.
#[track_caller]
fn assert_saves_kept(fleet: &Fleet, saved: &[String]) {
    let live = fleet.live();
    let missing: Vec<&String> = saved
        .iter()
        .filter(|id| {
            !fleet.hosts.iter().zip(&live).any(|(h, live)| {
                live.as_ref().is_some_and(|l| {
                    h.dir
                        .join("www")
                        .join(l)
                        .join(format!("saves/{id}.txt"))
                        .exists()
                })
            })
        })
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} saves lost: {:?}",
        missing.len(),
        saved.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(saved.len() > 50, "the saver ran: {}", saved.len());
}

#[test]
fn every_push_switches_every_host_together_under_load_and_rollbacks_go_through_the_record() {
    // Only h1 has the build tool, and builds: the others copy its bytes.
    // A migration: it runs on the builder only, once per deploy.
    let mut cluster = EtcdFleet::start(
        3,
        "builder = \"h1\"\n\
         build = [\"../../bin/build-assets\", { run = \"echo $ZDEPLOY_RELEASE >> ../../once.log\", once = true, writes = [] }]\n\
         allow_root_build = true\n",
    );
    let port = cluster.fleet.start_ready_balancer(3, AGENT_PORT);
    let load = Load::start(port, 4, true);
    std::thread::sleep(Duration::from_millis(300));
    let mut ops: Vec<Op> = Vec::new();
    let mut history = vec![("v0".to_string(), cluster.committed().unwrap().0)];
    let mut skews = Vec::new();
    let mut push_to_live = Vec::new();
    for n in 1..=20 {
        let version = format!("v{n}");
        let started = Instant::now();
        let commit = cluster.push_to(n % 3, Some(&version));
        let release = cluster.wait_all_on(&commit, vec![0, 1, 2], Duration::from_secs(60));
        push_to_live.push(started.elapsed().as_millis());
        ops.push(Op {
            started,
            finished: Instant::now(),
            version: version.clone(),
        });
        let ids = cluster.fleet.build_ids();
        assert!(
            ids.iter().all(|id| *id == ids[0]),
            "one build everywhere: {ids:?}"
        );
        assert!(
            cluster.fleet.mirror_has(1, &commit)
                && !cluster.fleet.mirror_has(0, &commit)
                && !cluster.fleet.mirror_has(2, &commit),
            "only the builder fetched {commit}"
        );
        history.push((version, release));
        eventually("the skew to be known", Duration::from_secs(10), || {
            cluster.view(0)["skew_ms"].as_i64().is_some()
        });
        skews.push(cluster.view(0)["skew_ms"].as_i64().unwrap());
        if n % 5 == 0 {
            // A rollback is a deploy of the release before, by name.
            history.pop();
            let (version, release) = history.last().unwrap().clone();
            let started = Instant::now();
            let answer = call(
                &cluster.agent_url((n + 1) % 3, &format!("/api/apps/{APP}/rollback")),
                &[
                    ("Authorization", &format!("Bearer {TOKEN}")),
                    ("Content-Type", "application/json"),
                ],
                Some(&serde_json::json!({ "release": release }).to_string()),
            );
            assert_eq!(answer.status, 200, "rollback: {}", answer.body);
            eventually(
                "the rollback on every host",
                Duration::from_secs(60),
                || cluster.fleet.live() == vec![Some(release.clone()); 3],
            );
            ops.push(Op {
                started,
                finished: Instant::now(),
                version,
            });
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let (samples, saved, save_failures) = load.finish();
    let verdict = judge(&samples, &ops, "v0");
    eprintln!(
        "etcd fleet: {} requests, {} saves; push to live (ms): {push_to_live:?}; skew (ms): {skews:?}",
        samples.len(),
        saved.len()
    );
    assert_whole(&verdict, samples.len());
    assert!(save_failures.is_empty(), "saves failed: {save_failures:?}");
    assert_saves_kept(&cluster.fleet, &saved);
    // Each host's view agrees on the fleet.
    for i in 0..3 {
        let view = cluster.view(i);
        assert_eq!(view["members"].as_array().unwrap().len(), 3, "{view}");
        assert!(view["leader"].is_string(), "{view}");
        assert_eq!(cluster.ready(i), 200);
    }
    assert_eq!(cluster.fleet.leftovers(), vec![Vec::<String>::new(); 3]);
    let once_runs: Vec<Vec<String>> = cluster
        .fleet
        .hosts
        .iter()
        .map(|h| {
            std::fs::read_to_string(h.dir.join("once.log"))
                .unwrap_or_default()
                .lines()
                .map(str::to_string)
                .collect()
        })
        .collect();
    let ran: Vec<&Vec<String>> = once_runs.iter().filter(|l| !l.is_empty()).collect();
    assert!(
        once_runs[0].is_empty() && once_runs[2].is_empty(),
        "the migration ran on the builder only: {once_runs:?}"
    );
    let mut releases = ran[0].clone();
    releases.sort();
    releases.dedup();
    assert_eq!(
        releases.len(),
        ran[0].len(),
        "a release migrated twice: {once_runs:?}"
    );
    assert_eq!(
        ran[0].len(),
        21,
        "v0 and 20 pushes each migrated once: {once_runs:?}"
    );

    // The CLI shows the fleet from etcd and asks its leader for deploys.
    let config = cluster.fleet.hosts[0].dir.join("zdeploy.toml");
    let config_inside = format!("{}/zdeploy.toml", cluster.fleet.path.display());
    let cli = |args: &[&str]| {
        Zdeploy::new()
            .args(args)
            .arg("--config")
            .arg(&config)
            .success()
    };
    let status = cli(&["status", APP]).stdout;
    assert!(
        status.contains("3 members") && status.contains("committed: ROOT_"),
        "{status}"
    );
    let state: Value = serde_json::from_str(&cli(&["status", APP, "--json"]).stdout).unwrap();
    assert_eq!(state["members"].as_array().unwrap().len(), 3, "{state}");
    assert!(state["skew_ms"].is_i64(), "{state}");
    php_app(&cluster.scratch, "v21");
    let commit = cluster.repo.commit_tree_of(&cluster.scratch);
    let deployed = cli(&["deploy", APP]).stdout;
    assert!(deployed.contains("the fleet -> ROOT_"), "{deployed}");
    let v21 = cluster.wait_all_on(&commit, vec![0, 1, 2], Duration::from_secs(60));
    // The saves landed on whichever host took them, and no path is shared:
    // status and doctor (on a member) name the members holding saves the
    // others lack, as of each one's last deploy.
    let on_h2 = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--config", &config_inside]);
        cluster.fleet.zdeploy_on(2, &all)
    };
    eventually(
        "every member's status of the deploy",
        Duration::from_secs(10),
        || {
            let (_, out, _) = on_h2(&["status", APP, "--json"]);
            let state: Value = serde_json::from_str(&out).unwrap();
            (0..3)
                .all(|i| state["hosts"][format!("h{i}")]["user_content"]["release"] == v21.as_str())
        },
    );
    let (_, out, _) = on_h2(&["status", APP, "--json"]);
    let state: Value = serde_json::from_str(&out).unwrap();
    let differs = state["user_content_differs"].as_array().unwrap();
    assert!(!differs.is_empty(), "{state}");
    let named = differs[0]["host"].as_str().unwrap().to_string();
    let (healthy, doctor, _) = on_h2(&["doctor", APP]);
    assert!(
        !healthy
            && doctor.contains(&format!(
                "PROBLEM user content differs between hosts: {named} holds"
            )),
        "{doctor}"
    );
    let unchanged = cli(&["deploy", APP]).stdout;
    assert!(unchanged.contains("unchanged"), "{unchanged}");
    let rolled: Value = serde_json::from_str(&cli(&["rollback", APP, "--json"]).stdout).unwrap();
    let back = rolled["release"].as_str().unwrap().to_string();
    assert_ne!(back, v21);
    eventually(
        "the CLI's rollback on every host",
        Duration::from_secs(60),
        || cluster.fleet.live() == vec![Some(back.clone()); 3],
    );

    // On any member, the commands that look after a host run on every
    // member, through its agent.
    let on_h2 = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--config", &config_inside]);
        let (ok, stdout, stderr) = cluster.fleet.zdeploy_on(2, &all);
        assert!(ok, "{args:?}: {stdout}\n{stderr}");
        stdout
    };
    let releases = on_h2(&["releases", APP]);
    let live = cluster.fleet.live();
    for i in 0..3 {
        assert!(releases.contains(&format!("== h{i} ==")), "{releases}");
    }
    assert!(releases.contains(live[0].as_ref().unwrap()), "{releases}");
    let verified = on_h2(&["verify", APP]);
    assert!(
        verified.contains("one release digest on every host"),
        "{verified}"
    );
    let log: Value = serde_json::from_str(&on_h2(&["log", APP, "--json"])).unwrap();
    assert_eq!(log["hosts"].as_array().unwrap().len(), 3, "{log}");
    // Copying a release from an agent needs the fleet's token, a release
    // the host holds, and names only files of its manifest.
    let live = cluster.fleet.live()[1].clone().unwrap();
    let url = |release: &str, what: &str| {
        cluster.agent_url(1, &format!("/api/apps/{APP}/releases/{release}/{what}"))
    };
    let bearer = format!("Bearer {TOKEN}");
    let auth = [("Authorization", bearer.as_str())];
    for headers in [&[][..], &[("Authorization", "Bearer wrong")][..]] {
        let refused = call(&url(&live, "manifest"), headers, None);
        assert_eq!(refused.status, 401, "{}", refused.body);
        let refused = call(&url(&live, "files"), headers, Some("index.php\0"));
        assert_eq!(refused.status, 401, "{}", refused.body);
    }
    let run = cluster.agent_url(1, &format!("/api/apps/{APP}/run"));
    let json = ("Content-Type", "application/json");
    let refused = call(&run, &[json], Some(r#"{"args":["releases"]}"#));
    assert_eq!(refused.status, 401, "{}", refused.body);
    for bad in [r#"{"args":["deploy"]}"#, r#"{"args":[]}"#, "[1,2]"] {
        let refused = call(&run, &[auth[0], json], Some(bad));
        assert_eq!(refused.status, 400, "{bad}: {}", refused.body);
    }
    let manifest = call(&url(&live, "manifest"), &auth, None);
    assert_eq!(manifest.status, 200, "{}", manifest.body);
    assert!(manifest.body.contains("\0index.php\0"), "{}", manifest.body);
    let unknown = call(&url("ROOT_1999.01.01-00.00.00", "manifest"), &auth, None);
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    for bad in [
        "../../zdeploy.toml\0",
        "/etc/passwd\0",
        "inc\0",
        "no-such-file.php\0",
        "index.php",
    ] {
        let refused = call(&url(&live, "files"), &auth, Some(bad));
        assert_eq!(refused.status, 400, "{bad:?}: {}", refused.body);
    }
    let files = call(&url(&live, "files"), &auth, Some("index.php\0save.php\0"));
    assert_eq!(files.status, 200, "{}", files.body);
    assert!(
        files.body.contains("index.php") && files.body.contains("save.php"),
        "a tar of both"
    );

    // Metrics and the dashboard show it too.
    let metrics = call(&cluster.agent_url(1, "/metrics"), &[], None).body;
    for line in [
        format!("zdeploy_fleet_ready{{app=\"{APP}\"}} 1"),
        format!("zdeploy_fleet_members{{app=\"{APP}\"}} 3"),
        format!("zdeploy_fleet_etcd_connected{{app=\"{APP}\"}} 1"),
    ] {
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
    let leaders: usize = (0..3)
        .map(|i| {
            let metrics = call(&cluster.agent_url(i, "/metrics"), &[], None).body;
            usize::from(metrics.contains(&format!("zdeploy_fleet_leader{{app=\"{APP}\"}} 1")))
        })
        .sum();
    assert_eq!(leaders, 1, "one leader");
    let page = call(&cluster.agent_url(2, "/"), &[], None).body;
    assert!(
        page.contains("Fleet (etcd)") && page.contains(&back),
        "{}",
        &page[..page.len().min(2000)]
    );

    // Maintenance by hand from a member's shell switches every member.
    let status_of = |host: &str| {
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "10",
            ])
            .arg(format!("http://{host}/"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let addresses: Vec<String> = cluster
        .fleet
        .hosts
        .iter()
        .map(|h| h.address.clone())
        .collect();
    let on = on_h2(&["maintenance", "on", APP]);
    assert!(on.contains("maintenance on for 3 of 3 hosts"), "{on}");
    for address in &addresses {
        assert_eq!(status_of(address), "503", "{address}");
    }
    on_h2(&["maintenance", "off", APP]);
    for address in &addresses {
        assert_eq!(status_of(address), "200", "{address}");
    }
    // An exact commit is refused here, saying so, with nothing started.
    let (ok, _, stderr) = cluster.fleet.zdeploy_on(
        2,
        &[
            "deploy",
            APP,
            "--commit",
            "deadbeefdeadbeef",
            "--config",
            &config_inside,
        ],
    );
    assert!(!ok && stderr.contains("not supported yet"), "{stderr}");
    // A migration that needs a window: the builder's step sees every
    // member answer 503 (the copying members opened theirs first).
    let asks = addresses
        .iter()
        .map(|a| format!("curl -s -o /dev/null -w '%{{http_code}} ' http://{a}/"))
        .collect::<Vec<_>>()
        .join("; ");
    let windowed = format!(
        "builder = \"h1\"\n\
         build = [\"../../bin/build-assets\", {{ run = \"test \\\"$({asks})\\\" = '503 503 503 ' && echo $ZDEPLOY_RELEASE >> ../../once.log\", once = true, writes = [], maintenance = true }}]\n\
         allow_root_build = true\n"
    );
    for i in 0..3 {
        cluster.configure(i, &windowed);
    }
    restart_agents(&mut cluster, None);
    let once_log = cluster.fleet.hosts[1].dir.join("once.log");
    let ran = std::fs::read_to_string(&once_log).unwrap().lines().count();
    let commit = cluster.push_to(0, Some("windowed"));
    cluster.wait_all_on(&commit, vec![0, 1, 2], Duration::from_secs(60));
    assert_eq!(
        std::fs::read_to_string(&once_log).unwrap().lines().count(),
        ran + 1,
        "the migration ran once, with every member in maintenance"
    );
    for address in &addresses {
        assert_eq!(status_of(address), "200", "{address}");
    }
}

/// Restart every agent, each with `failpoint` (or none), one after the
/// other as an operator would: the next once the last is ready again.
fn restart_agents(cluster: &mut EtcdFleet, failpoint: Option<&str>) {
    for i in 0..cluster.fleet.hosts.len() {
        cluster.fleet.kill_agent(i);
        match failpoint {
            Some(point) => cluster
                .fleet
                .start_agent(i, &[("ZDEPLOY_FAILPOINT", point)]),
            None => cluster.fleet.start_agent(i, &[]),
        }
        eventually(
            "the restarted agent to be ready",
            Duration::from_secs(30),
            || cluster.ready(i) == 200,
        );
    }
}

/// The host whose agent died (its failpoint killed it).
fn dead_agent(cluster: &mut EtcdFleet) -> usize {
    let mut dead = None;
    eventually(
        "the leader's agent to die at its failpoint",
        Duration::from_secs(60),
        || {
            dead = (0..3).find(|&i| !cluster.fleet.agent_running(i));
            dead.is_some()
        },
    );
    dead.unwrap()
}

#[test]
fn a_leader_killed_before_or_after_recording_commit_is_replaced_and_the_record_decides() {
    // A migration, on the leader's host (the builder when none is named).
    let mut cluster = EtcdFleet::start(
        3,
        "build = [{ run = \"echo $ZDEPLOY_RELEASE >> ../../once.log\", once = true, writes = [] }]\n\
         allow_root_build = true\n",
    );
    let v0 = cluster.committed().unwrap();
    let port = cluster.fleet.start_ready_balancer(3, AGENT_PORT);
    let load = Load::start(port, 4, true);

    // Killed right before recording commit: the next leader aborts; no
    // host switched, and every staged release goes.
    restart_agents(&mut cluster, Some("fleet.commit"));
    let aborted = cluster.push_to(0, Some("v1"));
    let dead = dead_agent(&mut cluster);
    eventually("the new leader to abort", Duration::from_secs(30), || {
        cluster
            .deploy_record()
            .is_some_and(|(id, phase)| id == v0.2 + 1 && phase == "abort")
    });
    assert_eq!(cluster.committed().unwrap(), v0, "nothing was committed");
    // Its migration was recorded in etcd before it ran, and shows it was
    // cut off: the next deploy of the commit says so.
    let once = cluster
        .etcd
        .get(&format!("/zdeploy/{APP}/once/{aborted}"), false);
    let once: Value = serde_json::from_str(&once[0]).unwrap();
    assert_eq!(once["host"], format!("h{dead}"), "{once}");
    assert!(once["ok"].is_null(), "{once}");
    assert!(
        cluster
            .etcd
            .get(&format!("/zdeploy/{APP}/once-running/"), true)
            .is_empty(),
        "the running mark went with the dead host's lease"
    );
    assert_eq!(cluster.fleet.live(), vec![Some(v0.0.clone()); 3]);
    eventually(
        "staged releases to be removed",
        Duration::from_secs(30),
        || {
            (0..3)
                .filter(|&i| i != dead)
                .all(|i| cluster.fleet.leftovers()[i].is_empty())
        },
    );

    // Killed right after recording it: the others switch on what the
    // record says; the killed host catches up when its agent is back.
    restart_agents(&mut cluster, Some("fleet.committed"));
    let started = Instant::now();
    let commit = cluster.push_to(1, None);
    let dead = dead_agent(&mut cluster);
    let died = Instant::now();
    let alive: Vec<usize> = (0..3).filter(|&i| i != dead).collect();
    let v1 = cluster.wait_all_on(&commit, alive, Duration::from_secs(60));
    // Its web server still serves the old release until the balancer sees
    // its agent is gone (two failed checks 100 ms apart).
    std::thread::sleep(Duration::from_secs(1).saturating_sub(died.elapsed()));
    let ops = vec![Op {
        started,
        finished: Instant::now(),
        version: "v1".into(),
    }];
    cluster.fleet.kill_agent(dead);
    cluster.fleet.start_agent(dead, &[]);
    cluster.wait_all_on(&commit, vec![0, 1, 2], Duration::from_secs(60));
    eventually("every host ready", Duration::from_secs(30), || {
        (0..3).all(|i| cluster.ready(i) == 200)
    });
    assert_eq!(cluster.fleet.live(), vec![Some(v1.clone()); 3]);
    eventually(
        "no staged release left anywhere",
        Duration::from_secs(30),
        || cluster.fleet.leftovers() == vec![Vec::<String>::new(); 3],
    );
    std::thread::sleep(Duration::from_millis(300));
    let (samples, saved, save_failures) = load.finish();
    assert_whole(&judge(&samples, &ops, "v0"), samples.len());
    assert!(save_failures.is_empty(), "saves failed: {save_failures:?}");
    assert_saves_kept(&cluster.fleet, &saved);
    // Each release migrated at most once, whichever host led.
    let mut migrated: Vec<String> = cluster
        .fleet
        .hosts
        .iter()
        .flat_map(|h| {
            std::fs::read_to_string(h.dir.join("once.log"))
                .unwrap_or_default()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    let runs = migrated.len();
    migrated.sort();
    migrated.dedup();
    assert_eq!(
        migrated.len(),
        runs,
        "a release migrated twice: {migrated:?}"
    );
    assert!(
        migrated.iter().any(|path| path.ends_with(&v1)),
        "{v1} in {migrated:?}"
    );
}

/// A build step that sleeps as long as the host's `stage-seconds` file says
/// (1 s without one): each host has its own file at the same path, and
/// builds every release itself (none copies the builder's).
const TIMED_BUILD: &str = "build = [{ run = \"sleep $(cat ../../stage-seconds 2>/dev/null || echo 1)\", writes = [] }]\n\
     allow_root_build = true\nbuild_on = \"every-host\"\n";

#[test]
fn cut_off_hosts_catch_up_out_of_rotation_new_hosts_join_and_etcd_losses_only_delay() {
    let mut cluster = EtcdFleet::start(3, TIMED_BUILD);
    let port = cluster.fleet.start_ready_balancer(4, AGENT_PORT);
    let load = Load::start(port, 4, true);
    let mut ops: Vec<Op> = Vec::new();

    // A host's link is cut right after it reported its release staged, while
    // the others still stage (not the leader's: a leader that is gone
    // aborts): its lease runs out, the others commit; back, it is out of
    // rotation until it has caught up, though it had that very release
    // staged before it was cut off.
    let leader = cluster.leader().expect("a leader");
    let cut = (leader + 1) % 3;
    let others: Vec<usize> = (0..3).filter(|&i| i != cut).collect();
    let host_dirs: Vec<PathBuf> = cluster.fleet.hosts.iter().map(|h| h.dir.clone()).collect();
    let stage_seconds = |i: usize, seconds: &str| {
        std::fs::write(host_dirs[i].join("stage-seconds"), seconds).unwrap();
    };
    stage_seconds(cut, "0");
    for &i in &others {
        stage_seconds(i, "3");
    }
    let started = Instant::now();
    let v1 = cluster.push_to(leader, Some("v1"));
    eventually(
        "the host to be cut off to report staged",
        Duration::from_secs(30),
        || {
            let Some((id, phase)) = cluster.deploy_record() else {
                return false;
            };
            phase == "staging"
                && !cluster
                    .etcd
                    .get(&format!("/zdeploy/{APP}/staged/{id}/h{cut}"), false)
                    .is_empty()
        },
    );
    cluster.fleet.set_link(cut, false);
    // Catching up takes a while, so that a wrong answer would be seen.
    stage_seconds(cut, "2");
    cluster.wait_all_on(&v1, others.clone(), Duration::from_secs(60));
    ops.push(Op {
        started,
        finished: Instant::now(),
        version: "v1".into(),
    });
    std::thread::sleep(Duration::from_secs(1));
    cluster.fleet.set_link(cut, true);
    let mut answers = Vec::new();
    eventually(
        "the cut-off host to catch up",
        Duration::from_secs(60),
        || {
            let ready = cluster.ready(cut);
            answers.push(ready);
            let live = cluster.fleet.live();
            let caught_up = live[cut] == live[others[0]];
            if !caught_up {
                assert_ne!(ready, 200, "ready while behind: {live:?}");
            }
            caught_up && ready == 200
        },
    );
    assert!(answers.contains(&503), "behind, it said so: {answers:?}");
    for i in 0..3 {
        stage_seconds(i, "1");
    }

    // A new host joins and serves the committed release with no deploy.
    let deploys_before = cluster.deploy_record().unwrap().0;
    let new = cluster.fleet.add_host(HostKind::Agent, |_| Vec::new());
    cluster.configure(new, TIMED_BUILD);
    cluster.fleet.start_agent(new, &[]);
    eventually(
        "the new host to serve the committed release",
        Duration::from_secs(60),
        || cluster.fleet.live()[new] == cluster.fleet.live()[0] && cluster.ready(new) == 200,
    );
    assert_eq!(
        cluster.deploy_record().unwrap().0,
        deploys_before,
        "no deploy ran for it"
    );

    // One etcd member killed: deploys go on.
    cluster.etcd.kill_member(2);
    let started = Instant::now();
    let v2 = cluster.push_to(1, Some("v2"));
    cluster.wait_all_on(&v2, vec![0, 1, 2, 3], Duration::from_secs(60));
    ops.push(Op {
        started,
        finished: Instant::now(),
        version: "v2".into(),
    });

    // Two killed: no quorum. The push waits; every host keeps serving and
    // stays in rotation; when they return, the fleet resumes.
    cluster.etcd.kill_member(1);
    let v2_release = cluster.fleet.live()[0].clone();
    let started = Instant::now();
    php_app(&cluster.scratch, "v3");
    let v3 = cluster.repo.commit_tree_of(&cluster.scratch);
    // The webhook is taken (queued); the deploy waits for etcd.
    cluster.pushes += 1;
    let body = serde_json::json!({"ref": "refs/heads/main", "after": v3}).to_string();
    let signature = format!("sha256={}", sign(SECRET, &body));
    let answer: Answer = call(
        &cluster.agent_url(2, &format!("/hooks/{APP}")),
        &[
            ("X-GitHub-Event", "push"),
            ("X-GitHub-Delivery", "no-quorum"),
            ("X-Hub-Signature-256", &signature),
            ("Content-Type", "application/json"),
        ],
        Some(&body),
    );
    assert_eq!(answer.status, 202, "{}", answer.body);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        cluster.fleet.live(),
        vec![v2_release.clone(); 4],
        "nothing moved"
    );
    let answers: Vec<Answer> = (0..4)
        .map(|i| call(&cluster.agent_url(i, "/ready"), &[], None))
        .collect();
    assert!(
        answers.iter().all(|a| a.status == 200),
        "every host stays in rotation: {answers:?}"
    );
    cluster.etcd.start_member(1);
    cluster.etcd.start_member(2);
    cluster.wait_all_on(&v3, vec![0, 1, 2, 3], Duration::from_secs(90));
    ops.push(Op {
        started,
        finished: Instant::now(),
        version: "v3".into(),
    });

    std::thread::sleep(Duration::from_millis(500));
    let (samples, saved, save_failures) = load.finish();
    let verdict = judge(&samples, &ops, "v0");
    eprintln!(
        "etcd fleet faults: {} requests, {} saves",
        samples.len(),
        saved.len()
    );
    assert_whole(&verdict, samples.len());
    assert!(save_failures.is_empty(), "saves failed: {save_failures:?}");
    assert_saves_kept(&cluster.fleet, &saved);
}

#[test]
fn agents_reach_etcd_over_tls_as_their_user_and_a_wrong_password_is_named() {
    // Three hosts join a cluster that asks for client certificates and a
    // password; start() has committed v0 through it.
    let mut cluster = EtcdFleet::start_secured(3);
    // Host 0's dashboard, open in a browser, follows the fleet's deploy
    // though the push went to another host.
    let browser = Browser::start(1200, 900);
    browser.open(&cluster.agent_url(0, "/"));
    let committed_shown = |b: &Browser| {
        b.text(&format!("#app-{APP} .fleet-committed"))
            .unwrap_or_default()
    };
    let v0 = cluster.committed().unwrap().0;
    assert_eq!(committed_shown(&browser), v0);
    let v1 = cluster.push_to(1, Some("v1"));
    let v1_release = cluster.wait_all_on(&v1, vec![0, 1, 2], Duration::from_secs(60));
    for i in 0..3 {
        assert_eq!(cluster.ready(i), 200, "host {i}");
    }
    browser.wait_until(
        "the dashboard to show the new release",
        Duration::from_secs(10),
        |b| {
            committed_shown(b) == v1_release
                && b.text(&format!("#app-{APP} .live-release")).as_deref()
                    == Some(v1_release.as_str())
        },
    );
    let config = cluster.fleet.hosts[0].dir.join("zdeploy.toml");
    let status = Zdeploy::new()
        .args(["status", APP, "--config"])
        .arg(&config)
        .success()
        .stdout;
    assert!(
        status.contains("3 members") && status.contains("committed: ROOT_"),
        "{status}"
    );

    // A host with a wrong password never joins, says why, and stays out
    // of rotation; the fleet goes on without it.
    let wrong = cluster.fleet.add_host(HostKind::Agent, |_| Vec::new());
    cluster.configure(wrong, "");
    let dir = cluster.fleet.hosts[wrong].dir.clone();
    std::fs::write(dir.join("wrong.password"), "not-the-password\n").unwrap();
    let text = std::fs::read_to_string(dir.join("zdeploy.toml")).unwrap();
    let password_line = text
        .lines()
        .find(|l| l.starts_with("password_file"))
        .unwrap()
        .to_string();
    let text = text.replace(
        &password_line,
        &format!(
            "password_file = \"{}/wrong.password\"",
            cluster.fleet.path.display()
        ),
    );
    std::fs::write(dir.join("zdeploy.toml"), text).unwrap();
    cluster.fleet.start_agent(wrong, &[]);
    let mut error = String::new();
    eventually(
        "the host with a wrong password to say why",
        Duration::from_secs(30),
        || {
            if cluster.ready(wrong) == 0 {
                return false; // not listening yet
            }
            error = cluster.view(wrong)["error"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            !error.is_empty()
        },
    );
    assert!(
        error.contains("refused user 'zdeploy' with the password in")
            && error.contains("wrong.password")
            && error.contains("authentication failed"),
        "{error}"
    );
    assert_eq!(cluster.ready(wrong), 503);
    let v2 = cluster.push_to(2, Some("v2"));
    cluster.wait_all_on(&v2, vec![0, 1, 2], Duration::from_secs(60));
    let members = cluster.etcd.get(&format!("/zdeploy/{APP}/members/"), true);
    assert_eq!(members.len(), 3, "{members:?}");
    assert_eq!(cluster.fleet.live()[wrong], None, "nothing deployed there");
}
