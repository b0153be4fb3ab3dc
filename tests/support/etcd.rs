//! A real etcd cluster for tests: three members (Debian's etcd-server) on
//! loopback, their peers talking over 127.0.0.1, their clients also served
//! on an address the test gave the root namespace's end of a fleet's bridge,
//! so agents inside host namespaces reach them. Members can be killed and
//! started again; everything goes on drop. A cluster may be secured as
//! production ones are: clients over TLS with certificates from a CA made
//! here, and etcd's own users and passwords.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::run_checked;
use super::servers::{Server, free_port, wait_for_port};

pub struct EtcdCluster {
    dir: PathBuf,
    /// The address clients reach besides loopback.
    address: String,
    members: Vec<EtcdMember>,
    /// Clients speak TLS and show a certificate of this CA.
    tls: Option<Certificates>,
    /// etcd's auth is on: the root user's password.
    root_password: Option<String>,
}

/// A CA, a server certificate for loopback and the bridge address, and a
/// client certificate, made with openssl.
#[derive(Clone)]
pub struct Certificates {
    pub ca: PathBuf,
    pub server: (PathBuf, PathBuf),
    pub client: (PathBuf, PathBuf),
}

impl Certificates {
    /// Made under `dir`, the server's valid for 127.0.0.1 and `address`.
    pub fn make(dir: &Path, address: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let openssl =
            |args: &[&str]| run_checked(Command::new("openssl").current_dir(dir).args(args));
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=zdeploy test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        let sign = |name: &str, subject: &str, extension: &str| {
            openssl(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                subject,
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ]);
            std::fs::write(dir.join(format!("{name}.ext")), extension).unwrap();
            openssl(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.pem"),
            ]);
            (
                dir.join(format!("{name}.pem")),
                dir.join(format!("{name}.key")),
            )
        };
        let server = sign(
            "server",
            "/CN=etcd",
            &format!(
                "subjectAltName = IP:127.0.0.1, IP:{address}\nextendedKeyUsage = serverAuth, clientAuth\n"
            ),
        );
        // Its name is no etcd user: only the password gives it rights.
        let client = sign(
            "client",
            "/CN=zdeploy-agent-certificate",
            "extendedKeyUsage = clientAuth\n",
        );
        Certificates {
            ca: dir.join("ca.pem"),
            server,
            client,
        }
    }
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
        Self::start_with(dir, address, None)
    }

    /// As `start`, clients served over TLS with `tls`'s certificates (and
    /// asked for a client certificate) when given.
    pub fn start_with(dir: &Path, address: &str, tls: Option<Certificates>) -> Self {
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
            tls,
            root_password: None,
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
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let clients = format!(
            "{scheme}://127.0.0.1:{p},{scheme}://{address}:{p}",
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
        if let Some(tls) = &self.tls {
            command
                .arg("--cert-file")
                .arg(&tls.server.0)
                .arg("--key-file")
                .arg(&tls.server.1)
                .arg("--trusted-ca-file")
                .arg(&tls.ca)
                .arg("--client-cert-auth");
        }
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

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// The endpoints agents on the fleet's bridge use.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("{}://{}:{}", self.scheme(), self.address, m.client_port))
            .collect()
    }

    /// The endpoints on loopback.
    pub fn local_endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("{}://127.0.0.1:{}", self.scheme(), m.client_port))
            .collect()
    }

    /// etcdctl on the loopback endpoints, as root once auth is on.
    fn etcdctl(&self) -> Command {
        let mut command = Command::new("etcdctl");
        command
            .env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(self.local_endpoints().join(","))
            .args(["--command-timeout", "3s"]);
        if let Some(tls) = &self.tls {
            command
                .arg("--cacert")
                .arg(&tls.ca)
                .arg("--cert")
                .arg(&tls.client.0)
                .arg("--key")
                .arg(&tls.client.1);
        }
        if let Some(password) = &self.root_password {
            command.arg("--user").arg(format!("root:{password}"));
        }
        command
    }

    /// Turn etcd's auth on, with `user`/`password` allowed to read and
    /// write under `prefix` and nothing else.
    pub fn enable_auth(&mut self, user: &str, password: &str, prefix: &str) {
        let root_password = "etcd-root-test-password";
        let run = |args: &[&str]| run_checked(self.etcdctl().args(args));
        run(&["user", "add", &format!("root:{root_password}")]);
        run(&["user", "add", &format!("{user}:{password}")]);
        run(&["role", "add", user]);
        run(&[
            "role",
            "grant-permission",
            user,
            "--prefix=true",
            "readwrite",
            prefix,
        ]);
        run(&["user", "grant-role", user, user]);
        run(&["auth", "enable"]);
        self.root_password = Some(root_password.to_string());
    }

    /// `etcdctl get` of `key` (with `--prefix` when asked) from any member
    /// alive: the values, one per key.
    pub fn get(&self, key: &str, prefix: bool) -> Vec<String> {
        let mut command = self.etcdctl();
        command.args(["get", "--print-value-only", key]);
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
