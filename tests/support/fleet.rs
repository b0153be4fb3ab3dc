//! Real fleet hosts for tests: each a network namespace on a bridge the test
//! creates, with a mount namespace that shows the host's own folder at one
//! shared path, running its own sshd (keys made here), nginx and PHP-FPM. A
//! load balancer (nginx upstream) on loopback sends requests to them. Every
//! address is one the test made; everything is torn down on drop. Each host
//! has an empty home of its own: root's shell startup on this machine (a
//! pyenv rehash behind a lock a killed session can leave) stays out of the
//! hosts' ssh sessions.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use super::run_checked;
use super::servers::{Nginx, Server, free_port, wait_for, wait_for_port};

pub struct FleetHost {
    /// The host's address, as the controller names it.
    pub address: String,
    /// The host's own folder, seen at `Fleet::path` inside the host.
    pub dir: PathBuf,
    netns: String,
    pub veth: String,
    _server: Server,
    /// Its zdeploy agent, on a host of a fleet in etcd.
    agent: Option<Server>,
}

impl FleetHost {
    /// The path of `inside` (a path under `Fleet::path`) as this host sees it.
    pub fn local(&self, fleet_path: &Path, inside: &Path) -> PathBuf {
        self.dir.join(inside.strip_prefix(fleet_path).unwrap())
    }
}

/// What a host runs besides nginx and PHP-FPM.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum HostKind {
    /// sshd, for a controller to deploy over.
    Ssh,
    /// Nothing yet: its agent is started (and killed) by the test.
    Agent,
}

pub struct Fleet {
    pub root: tempfile::TempDir,
    /// The path every host sees as its own folder.
    pub path: PathBuf,
    pub hosts: Vec<FleetHost>,
    pub ssh_config: PathBuf,
    pub balancer: Option<Nginx>,
    haproxy: Option<Server>,
    bridge: String,
    mounts: Vec<PathBuf>,
    tag: String,
    subnet: String,
    /// The fleet's ssh key.
    key: PathBuf,
    known_hosts: String,
}

fn ip(args: &[&str]) {
    let status = Command::new("ip")
        .args(args)
        .status()
        .expect("run ip (iproute2)");
    assert!(status.success(), "ip {args:?} failed");
}

impl Fleet {
    /// `count` hosts serving `<path>/www` through nginx and PHP-FPM, each
    /// reachable over ssh as root with the fleet's key.
    pub fn start(count: usize) -> Self {
        Self::start_with(count, |_, _| Vec::new())
    }

    /// As `start`, with `prepare(index, folder)` run on each host's folder
    /// before the host starts (to mount a small filesystem there, say); it
    /// returns the mounts it made, undone on drop.
    pub fn start_with(count: usize, mut prepare: impl FnMut(usize, &Path) -> Vec<PathBuf>) -> Self {
        let mut fleet = Fleet::bridge_only();
        for i in 0..count {
            fleet.add_host(HostKind::Ssh, |dir| prepare(i, dir));
        }
        fleet
    }

    /// `count` hosts serving `<path>/www` through nginx and PHP-FPM, their
    /// agents started by `start_agent`.
    pub fn start_agents(count: usize) -> Self {
        let mut fleet = Fleet::bridge_only();
        for _ in 0..count {
            fleet.add_host(HostKind::Agent, |_| Vec::new());
        }
        fleet
    }

    /// The bridge, with no host on it yet.
    fn bridge_only() -> Self {
        static SEQUENCE: AtomicU32 = AtomicU32::new(0);
        let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        sweep_dead_fleets();
        let tag = format!("{}x{}", std::process::id(), n % 100);
        // Test processes run side by side: a subnet is taken under a lock,
        // and only if no bridge holds it yet.
        let lock = std::fs::File::create("/tmp/zdeploy-test-subnets.lock").unwrap();
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
        let taken = String::from_utf8_lossy(
            &Command::new("ip")
                .args(["-o", "-4", "addr"])
                .output()
                .unwrap()
                .stdout,
        )
        .into_owned();
        let subnet = (0..25_000u32)
            .map(|k| {
                let slot = std::process::id() * 7 + n * 131 + k;
                format!("10.{}.{}", 100 + (slot / 250) % 100, slot % 250)
            })
            .find(|subnet| !taken.contains(&format!(" {subnet}.")))
            .expect("a free test subnet");
        let root = tempfile::Builder::new()
            .prefix("zdeploy-fleet")
            .tempdir_in("/tmp")
            .unwrap();
        let path = root.path().join("host");
        std::fs::create_dir_all(&path).unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let key = root.path().join("id_ed25519");
        run_checked(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(&key),
        );
        let bridge = format!("zb{tag}");
        ip(&["link", "add", &bridge, "type", "bridge"]);
        let fleet = Fleet {
            ssh_config: root.path().join("ssh_config"),
            root,
            path,
            hosts: Vec::new(),
            balancer: None,
            haproxy: None,
            bridge: bridge.clone(),
            mounts: Vec::new(),
            tag,
            subnet: subnet.clone(),
            key,
            known_hosts: String::new(),
        };
        ip(&["addr", "add", &format!("{subnet}.1/24"), "dev", &bridge]);
        ip(&["link", "set", &bridge, "up"]);
        drop(lock);
        fleet
    }

    /// The root namespace's address on the fleet's bridge (the test made it).
    pub fn bridge_address(&self) -> String {
        format!("{}.1", self.subnet)
    }

    /// Add a host of `kind`, with `prepare(folder)` run on its folder first
    /// (returning mounts to undo on drop); its index.
    pub fn add_host(
        &mut self,
        kind: HostKind,
        prepare: impl FnOnce(&Path) -> Vec<PathBuf>,
    ) -> usize {
        let (i, tag, path) = (self.hosts.len(), self.tag.clone(), self.path.clone());
        let address = format!("{}.{}", self.subnet, 10 + i);
        let netns = format!("zn{tag}h{i}");
        let veth = format!("zv{tag}h{i}");
        let dir = self.root.path().join(format!("host{i}"));
        for sub in ["www", "bin", "nginx", "php", "ssh"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        if kind == HostKind::Ssh {
            let host_key = dir.join("ssh/host_key");
            run_checked(
                Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                    .arg(&host_key),
            );
            let host_public = std::fs::read_to_string(host_key.with_extension("pub")).unwrap();
            self.known_hosts.push_str(&format!(
                "{address} {}\n",
                host_public
                    .split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
            let public = std::fs::read_to_string(self.key.with_extension("pub")).unwrap();
            std::fs::write(dir.join("ssh/authorized_keys"), public).unwrap();
        }
        write_host_configs(&dir, &path, &address);
        std::os::unix::fs::symlink(super::BIN, dir.join("bin/zdeploy")).unwrap();
        let mounts = prepare(&dir);
        self.mounts.extend(mounts);
        ip(&["netns", "add", &netns]);
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &netns,
        ]);
        ip(&["link", "set", &veth, "master", &self.bridge]);
        ip(&["link", "set", &veth, "up"]);
        ip(&[
            "-n",
            &netns,
            "addr",
            "add",
            &format!("{address}/24"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &netns, "link", "set", "eth0", "up"]);
        ip(&["-n", &netns, "link", "set", "lo", "up"]);
        let p = path.display();
        let main = match kind {
            HostKind::Ssh => format!("exec /usr/sbin/sshd -D -e -f {p}/ssh/sshd_config"),
            HostKind::Agent => "exec sleep infinity".to_string(),
        };
        let script = format!(
            "set -e\nmount --rbind {d} {p}\n\
             mkdir -p {d}/home\nmount --bind {d}/home /root\n\
             nginx -p {p}/nginx -c {p}/nginx/nginx.conf &\n\
             {fpm} --nodaemonize --allow-to-run-as-root --fpm-config {p}/php/php-fpm.conf &\n\
             {main}\n",
            d = dir.display(),
            fpm = php_fpm(),
        );
        let server = Server::spawn("fleet-host", in_host(&netns).arg(script));
        self.hosts.push(FleetHost {
            address: address.clone(),
            dir: dir.clone(),
            netns,
            veth,
            _server: server,
            agent: None,
        });
        let ports: &[u16] = match kind {
            HostKind::Ssh => &[22, 80],
            HostKind::Agent => &[80],
        };
        for port in ports {
            wait_for_port(
                &format!("{address}:{port}"),
                "a fleet host's sshd and nginx",
            );
        }
        wait_for(
            || dir.join("php/php-fpm.sock").exists(),
            "a fleet host's PHP-FPM",
        );
        std::fs::write(self.root.path().join("known_hosts"), &self.known_hosts).unwrap();
        std::fs::write(
            &self.ssh_config,
            format!(
                "Host {subnet}.*\n  User root\n  IdentityFile {key}\n  IdentitiesOnly yes\n  UserKnownHostsFile {known}\n  StrictHostKeyChecking yes\n  GlobalKnownHostsFile /dev/null\n",
                subnet = self.subnet,
                key = self.key.display(),
                known = self.root.path().join("known_hosts").display()
            ),
        )
        .unwrap();
        i
    }

    /// Start host `i`'s agent on `<path>/zdeploy.toml` (its own mount
    /// namespace showing the host's folder, like the host's servers).
    pub fn start_agent(&mut self, i: usize, env: &[(&str, &str)]) {
        let p = self.path.display();
        let host = &mut self.hosts[i];
        let vars: String = env.iter().map(|(k, v)| format!("{k}='{v}' ")).collect();
        let script = format!(
            "set -e\nmount --rbind {d} {p}\nexec env ZDEPLOY_ALLOW_ROOT_BUILD=1 {vars}{bin} agent --config {p}/zdeploy.toml\n",
            d = host.dir.display(),
            bin = super::BIN,
        );
        host.agent = Some(Server::spawn("agent", in_host(&host.netns).arg(script)));
    }

    /// `zdeploy ARGS` run on host `i`, as its operator would there (its
    /// network, its files at the hosts' path): exit status, stdout, stderr.
    pub fn zdeploy_on(&self, i: usize, args: &[&str]) -> (bool, String, String) {
        let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
        let script = format!(
            "set -e\nmount --rbind {d} {p}\nexec {bin} {args}\n",
            d = self.hosts[i].dir.display(),
            p = self.path.display(),
            bin = super::BIN,
            args = quoted.join(" "),
        );
        let out = in_host(&self.hosts[i].netns).arg(script).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// SIGKILL host `i`'s agent, as a crash would.
    pub fn kill_agent(&mut self, i: usize) {
        if let Some(agent) = self.hosts[i].agent.take() {
            agent.kill();
        }
    }

    /// Whether host `i`'s agent process still runs.
    pub fn agent_running(&mut self, i: usize) -> bool {
        self.hosts[i].agent.as_mut().is_some_and(Server::running)
    }

    /// An nginx on loopback that spreads requests over every host.
    pub fn start_balancer(&mut self) -> u16 {
        let port = free_port();
        let upstreams: String = self
            .hosts
            .iter()
            .map(|h| format!("    server {}:80 max_fails=0;\n", h.address))
            .collect();
        let site = format!(
            "upstream fleet {{\n{upstreams}    keepalive 16;\n}}\n\
             server {{\n  listen 127.0.0.1:{port};\n  location / {{\n    proxy_pass http://fleet;\n    proxy_http_version 1.1;\n    proxy_set_header Connection \"\";\n    proxy_next_upstream off;\n  }}\n}}\n"
        );
        self.balancer = Some(Nginx::start(
            &self.root.path().join("balancer"),
            &site,
            port,
        ));
        port
    }

    /// HAProxy on loopback in front of `slots` hosts (those not started yet
    /// included), each in rotation only while its agent's `/ready` on
    /// `agent_port` answers 200: checked every 100 ms, out after 2 failures,
    /// back after 2 successes. As in production, a request whose host cannot
    /// be reached (its link cut) is tried on another.
    pub fn start_ready_balancer(&mut self, slots: usize, agent_port: u16) -> u16 {
        let port = free_port();
        let servers: String = (0..slots)
            .map(|i| {
                format!(
                    "  server h{i} {}.{}:80 check port {agent_port} inter 100ms fall 2 rise 2\n",
                    self.subnet,
                    10 + i
                )
            })
            .collect();
        let dir = self.root.path().join("haproxy");
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("haproxy.cfg");
        std::fs::write(
            &config,
            format!(
                "global\n  maxconn 2000\n\ndefaults\n  mode http\n  timeout connect 500ms\n  timeout client 30s\n  timeout server 10s\n  timeout check 1s\n\n\
                 frontend site\n  bind 127.0.0.1:{port}\n  default_backend fleet\n\n\
                 backend fleet\n  balance roundrobin\n  option httpchk GET /ready\n  http-check expect status 200\n\
                 option redispatch 1\n  retries 3\n  retry-on conn-failure empty-response response-timeout\n  option http-buffer-request\n{servers}"
            ),
        )
        .unwrap();
        let haproxy = if Path::new("/usr/sbin/haproxy").exists() {
            "/usr/sbin/haproxy"
        } else {
            "haproxy"
        };
        self.haproxy = Some(Server::spawn(
            "haproxy",
            Command::new(haproxy).arg("-db").arg("-f").arg(&config),
        ));
        wait_for_port(&format!("127.0.0.1:{port}"), "haproxy");
        // Its servers settle after their first checks.
        let mut in_a_row = 0;
        wait_for(
            || {
                in_a_row = match super::servers::request(port, "GET", "/") {
                    Ok((200, _)) => in_a_row + 1,
                    _ => 0,
                };
                in_a_row >= 25
            },
            "haproxy to keep servers in rotation",
        );
        port
    }

    /// Cut a host's link (its veth goes down), or restore it.
    pub fn set_link(&self, host: usize, up: bool) {
        ip(&[
            "link",
            "set",
            &self.hosts[host].veth,
            if up { "up" } else { "down" },
        ]);
    }

    /// Folders of releases that are neither live nor complete-and-recorded:
    /// what a stopped deploy would leave behind, on each host.
    pub fn leftovers(&self) -> Vec<Vec<String>> {
        let live = self.live();
        self.hosts
            .iter()
            .zip(live)
            .map(|(h, live)| {
                let history = h.dir.join("www/.zdeploy/ROOT/history.sqlite");
                let staged: Vec<String> = if history.exists() {
                    let db = rusqlite::Connection::open(&history).unwrap();
                    let mut query = db
                        .prepare("SELECT name FROM releases WHERE state IN ('staged', 'building')")
                        .unwrap();
                    query
                        .query_map([], |row| row.get::<_, String>(0))
                        .unwrap()
                        .map(Result::unwrap)
                        .filter(|n| Some(n) != live.as_ref())
                        .filter(|n| h.dir.join("www").join(n).exists())
                        .collect()
                } else {
                    Vec::new()
                };
                staged
            })
            .collect()
    }

    /// Processes on a host whose command line contains `pattern`.
    pub fn processes(&self, host: usize, pattern: &str) -> Vec<String> {
        let pids = Command::new("ip")
            .args(["netns", "pids", &self.hosts[host].netns])
            .output()
            .unwrap();
        String::from_utf8_lossy(&pids.stdout)
            .split_whitespace()
            .filter_map(|pid| {
                let line = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
                let line = String::from_utf8_lossy(&line).replace('\0', " ");
                line.contains(pattern).then(|| format!("{pid}: {line}"))
            })
            .collect()
    }

    pub fn addresses(&self) -> Vec<String> {
        self.hosts.iter().map(|h| h.address.clone()).collect()
    }

    /// A config for app `app` deployed to every host from `source`.
    pub fn config(&self, app: &str, source: &Path, extra: &str) -> PathBuf {
        let hosts: Vec<String> = self
            .addresses()
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect();
        let config = self.root.path().join("zdeploy.toml");
        std::fs::write(
            &config,
            format!(
                "[apps.{app}]\nwebroot = \"{p}/www\"\nsource = \"{s}\"\nref = \"main\"\nhosts = [{h}]\n\
                 ssh_config = \"{c}\"\nremote_zdeploy = \"{p}/bin/zdeploy\"\ndrain = \"0s\"\nsettle = \"200ms\"\n{extra}",
                p = self.path.display(),
                s = source.display(),
                h = hosts.join(", "),
                c = self.ssh_config.display(),
            ),
        )
        .unwrap();
        config
    }

    /// A build tool only host `host` has (at `bin/build-assets` of the
    /// hosts' path): it writes a random build id and a fixed tree of 100
    /// generated files, as an asset build would.
    pub fn install_build_tool(&self, host: usize) {
        let bin = self.hosts[host].dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let tool = bin.join("build-assets");
        std::fs::write(
            &tool,
            "#!/bin/sh\nset -e\nmkdir -p build/gen\nhead -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n' > build/id.txt\n\
             for i in $(seq 1 100); do echo \"asset $i\" > build/gen/$i.css; done\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// What each host serves as its build id.
    pub fn build_ids(&self) -> Vec<String> {
        self.hosts
            .iter()
            .zip(&self.live())
            .map(|(h, l)| {
                let path = h
                    .dir
                    .join("www")
                    .join(l.as_ref().unwrap())
                    .join("build/id.txt");
                std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            })
            .collect()
    }

    /// Host `host`'s git mirror holds `commit`.
    pub fn mirror_has(&self, host: usize, commit: &str) -> bool {
        std::process::Command::new("git")
            .arg("--git-dir")
            .arg(self.hosts[host].dir.join("www/.zdeploy/ROOT/git"))
            .args(["cat-file", "-e", &format!("{commit}^{{commit}}")])
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success()
    }

    /// Each host's live release (the target of `<webroot>/ROOT`).
    pub fn live(&self) -> Vec<Option<String>> {
        self.hosts
            .iter()
            .map(|h| {
                std::fs::read_link(h.dir.join("www/ROOT"))
                    .ok()
                    .map(|t| t.to_string_lossy().into_owned())
            })
            .collect()
    }

    /// Each host's release folders, sorted.
    pub fn releases(&self) -> Vec<Vec<String>> {
        self.hosts
            .iter()
            .map(|h| {
                let mut names: Vec<String> = std::fs::read_dir(h.dir.join("www"))
                    .unwrap()
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("ROOT_"))
                    .collect();
                names.sort();
                names
            })
            .collect()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for host in &self.hosts {
            let pids = Command::new("ip")
                .args(["netns", "pids", &host.netns])
                .output();
            if let Ok(pids) = pids {
                for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            }
            let _ = Command::new("ip")
                .args(["netns", "del", &host.netns])
                .status();
            // Usually gone with its namespace already.
            let _ = Command::new("ip")
                .args(["link", "del", &host.veth])
                .stderr(std::process::Stdio::null())
                .status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
        for mount in &self.mounts {
            let _ = Command::new("umount").arg("-l").arg(mount).status();
        }
    }
}

/// `sh -c` inside network namespace `netns` and a mount namespace of its own.
fn in_host(netns: &str) -> Command {
    let mut command = Command::new("ip");
    command.args([
        "netns",
        "exec",
        netns,
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
    ]);
    command
}

/// Remove namespaces and links left by test processes that died without
/// cleaning up (killed by a signal): their names carry the owner's pid.
fn sweep_dead_fleets() {
    let owner_gone = |name: &str, prefix: &str| {
        let Some(rest) = name.strip_prefix(prefix) else {
            return false;
        };
        let Some((pid, _)) = rest.split_once('x') else {
            return false;
        };
        pid.parse::<u32>().is_ok() && !Path::new(&format!("/proc/{pid}")).exists()
    };
    let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
    for line in String::from_utf8_lossy(&list.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if owner_gone(name, "zn") {
            let pids = Command::new("ip")
                .args(["netns", "pids", name])
                .output()
                .unwrap();
            for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
    let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
    for line in String::from_utf8_lossy(&links.stdout).lines() {
        let Some(name) = line.split(": ").nth(1) else {
            continue;
        };
        let name = name.split('@').next().unwrap_or(name);
        if owner_gone(name, "zb") || owner_gone(name, "zv") {
            // A veth may have gone with its namespace meanwhile.
            let _ = Command::new("ip")
                .args(["link", "del", name])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

fn php_fpm() -> &'static str {
    if Path::new("/usr/sbin/php-fpm8.2").exists() {
        "/usr/sbin/php-fpm8.2"
    } else {
        "php-fpm8.2"
    }
}

/// sshd, nginx and PHP-FPM configs of one host; `inside` is the path its
/// folder has inside the host.
fn write_host_configs(dir: &Path, inside: &Path, address: &str) {
    let p = inside.display();
    std::fs::write(
        dir.join("ssh/sshd_config"),
        format!(
            "ListenAddress {address}:22\nHostKey {p}/ssh/host_key\nAuthorizedKeysFile {p}/ssh/authorized_keys\n\
             PidFile {p}/ssh/sshd.pid\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nMaxSessions 64\nMaxStartups 64\n\
             LogLevel ERROR\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("php/php-fpm.conf"),
        format!(
            "[global]\npid = {p}/php/php-fpm.pid\nerror_log = /proc/self/fd/2\ndaemonize = no\n\n\
             [web]\nuser = root\ngroup = root\nlisten = {p}/php/php-fpm.sock\nlisten.mode = 0666\n\
             pm = static\npm.max_children = 4\ncatch_workers_output = yes\n"
        ),
    )
    .unwrap();
    let site = super::Zdeploy::new()
        .args(["webserver", "nginx", "--webroot"])
        .arg(inside.join("www"))
        .args(["--listen", &format!("{address}:80"), "--php-fpm"])
        .arg(inside.join("php/php-fpm.sock"))
        .success()
        .stdout;
    std::fs::write(dir.join("nginx/site.conf"), site).unwrap();
    std::fs::copy(
        "/etc/nginx/fastcgi_params",
        dir.join("nginx/fastcgi_params"),
    )
    .unwrap();
    std::fs::write(
        dir.join("nginx/nginx.conf"),
        format!(
            "user root;\ndaemon off;\nworker_processes 1;\npid {p}/nginx/nginx.pid;\nerror_log stderr warn;\n\
             events {{ worker_connections 512; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {p}/nginx/client_body;\n  fastcgi_temp_path {p}/nginx/fastcgi;\n\
             proxy_temp_path {p}/nginx/proxy;\n  uwsgi_temp_path {p}/nginx/uwsgi;\n  scgi_temp_path {p}/nginx/scgi;\n\
             include /etc/nginx/mime.types;\n  include {p}/nginx/site.conf;\n}}\n"
        ),
    )
    .unwrap();
}
