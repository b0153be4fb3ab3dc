//! A real etcd cluster for tests: three members (Debian's etcd-server) on
//! loopback, their peers talking over 127.0.0.1, their clients also served
//! on an address the test gave the root namespace's end of a fleet's bridge,
//! so agents inside host namespaces reach them. Members can be killed and
//! started again; everything goes on drop.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::servers::{Server, free_port, wait_for_port};

pub struct EtcdCluster {
    dir: PathBuf,
    /// The address clients reach besides loopback.
    address: String,
    members: Vec<EtcdMember>,
}

struct EtcdMember {
    name: String,
    client_port: u16,
    peer_port: u16,
    server: Option<Server>,
}

fn etcd_binary() -> &'static str {
    if Path::new("/usr/bin/etcd").exists() {
        "/usr/bin/etcd"
    } else {
        "etcd"
    }
}

impl EtcdCluster {
    /// Three members with their data under `dir`, clients served on
    /// loopback and on `address`.
    pub fn start(dir: &Path, address: &str) -> Self {
        let members: Vec<EtcdMember> = (0..3)
            .map(|i| EtcdMember {
                name: format!("e{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                server: None,
            })
            .collect();
        let mut cluster = EtcdCluster {
            dir: dir.to_path_buf(),
            address: address.to_string(),
            members,
        };
        for i in 0..3 {
            cluster.start_member(i);
        }
        for i in 0..3 {
            cluster.wait_member(i);
        }
        cluster
    }

    fn initial_cluster(&self) -> String {
        let peers: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect();
        peers.join(",")
    }

    /// Start member `i` (again: its data folder says it belongs).
    pub fn start_member(&mut self, i: usize) {
        let initial = self.initial_cluster();
        let address = self.address.clone();
        let member = &mut self.members[i];
        let data = self.dir.join(&member.name);
        let clients = format!(
            "http://127.0.0.1:{p},http://{address}:{p}",
            p = member.client_port
        );
        let peer = format!("http://127.0.0.1:{}", member.peer_port);
        let mut command = Command::new(etcd_binary());
        command
            .arg("--name")
            .arg(&member.name)
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &clients])
            .args(["--advertise-client-urls", &clients])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "zdeploy-test"])
            .args(["--log-level", "error", "--logger", "zap"])
            // Fast elections: the tests kill members and leaders.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"]);
        member.server = Some(Server::spawn("etcd", &mut command));
    }

    fn wait_member(&self, i: usize) {
        let port = self.members[i].client_port;
        wait_for_port(&format!("127.0.0.1:{port}"), "an etcd member");
    }

    /// SIGKILL member `i`.
    pub fn kill_member(&mut self, i: usize) {
        if let Some(server) = self.members[i].server.take() {
            server.kill();
        }
    }

    /// The endpoints agents on the fleet's bridge use.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("http://{}:{}", self.address, m.client_port))
            .collect()
    }

    /// The endpoints on loopback.
    pub fn local_endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("http://127.0.0.1:{}", m.client_port))
            .collect()
    }

    /// `etcdctl get` of `key` (with `--prefix` when asked) from any member
    /// alive: the values, one per key.
    pub fn get(&self, key: &str, prefix: bool) -> Vec<String> {
        let mut command = Command::new("etcdctl");
        command
            .env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(self.local_endpoints().join(","))
            .args(["--command-timeout", "3s", "get", "--print-value-only", key]);
        if prefix {
            command.arg("--prefix");
        }
        let output = command.output().expect("run etcdctl (etcd-client)");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }
}
