//! Real web servers for tests: PHP-FPM and nginx started on loopback from
//! temporary configs, their output forwarded with a prefix, killed on drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free port for a server a test starts (nginx cannot report a port it
/// chose). Taken below Linux's ephemeral range (32768 and up), so that no
/// outgoing connection of the busy suite can take it between this answer
/// and the server's bind, nor while a test has the server stopped; never
/// the same twice in one test process.
pub fn free_port() -> u16 {
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7_919) % COUNT;
    loop {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        assert!(n < COUNT, "no free test port left");
        let port = (FIRST + (start + n) % COUNT) as u16;
        if TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return port;
        }
    }
}

/// A child process killed (with its output forwarded) when dropped.
pub struct Server {
    child: Child,
}

impl Server {
    pub fn spawn(name: &'static str, command: &mut Command) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e} (run scripts/test.sh to install it)"));
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    eprintln!("[{name}] {line}");
                }
            });
        }
        Server { child }
    }

    /// The processes it started (a master's workers), by pid.
    pub fn children(&self) -> Vec<u32> {
        let parent = self.child.id();
        let mut children: Vec<u32> = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
                let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
                // The parent is the second field after the command's ")".
                let ppid: u32 = stat
                    .rsplit_once(')')?
                    .1
                    .split_whitespace()
                    .nth(1)?
                    .parse()
                    .ok()?;
                (ppid == parent).then_some(pid)
            })
            .collect();
        children.sort();
        children
    }

    /// SIGKILL it, as a crash would, and reap it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether it still runs (reaping it if it ended).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Server {
    /// SIGTERM first, so a master process (nginx, php-fpm, Apache) takes its
    /// workers down with it; SIGKILL if it lingers.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn running_as_root() -> bool {
    super::running_as_root()
}

pub struct PhpFpm {
    pub socket: PathBuf,
    _server: Server,
}

impl PhpFpm {
    /// PHP-FPM with `workers` static workers on a socket in `dir`.
    pub fn start(dir: &Path, workers: usize) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let socket = dir.join("php-fpm.sock");
        let user = if running_as_root() {
            "user = root\ngroup = root\n"
        } else {
            ""
        };
        let config = format!(
            "[global]\npid = {d}/php-fpm.pid\nerror_log = /proc/self/fd/2\ndaemonize = no\n\n\
             [web]\n{user}listen = {s}\nlisten.mode = 0666\npm = static\npm.max_children = {workers}\n\
             catch_workers_output = yes\nrequest_terminate_timeout = 30s\n",
            d = dir.display(),
            s = socket.display()
        );
        let path = dir.join("php-fpm.conf");
        std::fs::write(&path, config).unwrap();
        let mut command = Command::new(php_fpm_binary());
        command.args(["--nodaemonize", "--fpm-config"]).arg(&path);
        if running_as_root() {
            command.arg("--allow-to-run-as-root");
        }
        let server = Server::spawn("php-fpm", &mut command);
        wait_for(|| socket.exists(), "php-fpm socket");
        PhpFpm {
            socket,
            _server: server,
        }
    }
}

fn php_fpm_binary() -> String {
    for candidate in ["php-fpm8.2", "/usr/sbin/php-fpm8.2", "php-fpm"] {
        if Command::new(candidate)
            .arg("-v")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return candidate.to_string();
        }
    }
    panic!("php-fpm is not installed: run scripts/test.sh");
}

pub struct Nginx {
    pub port: u16,
    _server: Server,
}

impl Nginx {
    /// Its worker processes: a reload would replace them.
    pub fn workers(&self) -> Vec<u32> {
        self._server.children()
    }
}

impl Nginx {
    /// nginx serving `site` (a server block) from a config under `dir`.
    pub fn start(dir: &Path, site: &str, port: u16) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("site.conf"), site).unwrap();
        std::fs::copy("/etc/nginx/fastcgi_params", dir.join("fastcgi_params"))
            .expect("nginx is installed");
        let user = if running_as_root() {
            "user root;\n"
        } else {
            ""
        };
        let d = dir.display();
        let config = format!(
            "{user}daemon off;\nworker_processes 2;\npid {d}/nginx.pid;\nerror_log stderr warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/client_body;\n  fastcgi_temp_path {d}/fastcgi;\n\
             proxy_temp_path {d}/proxy;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             include /etc/nginx/mime.types;\n  include {d}/site.conf;\n}}\n"
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, config).unwrap();
        let server = Server::spawn(
            "nginx",
            Command::new("nginx")
                .arg("-p")
                .arg(dir)
                .arg("-c")
                .arg(&path),
        );
        wait_for(
            || TcpStream::connect(("127.0.0.1", port)).is_ok(),
            "nginx port",
        );
        Nginx {
            port,
            _server: server,
        }
    }
}

#[track_caller]
pub fn wait_for(mut ready: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready() {
        assert!(Instant::now() < deadline, "{what} never became ready");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Wait until something accepts connections at `address` (`host:port`).
pub fn wait_for_port(address: &str, what: &str) {
    let address: std::net::SocketAddr = address.parse().expect("an address");
    wait_for(
        || TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok(),
        what,
    );
}

/// One HTTP/1.0 request (so the body ends at close); returns status and body.
pub fn request(port: u16, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    send(port, method, path, None)
}

/// A form POST; returns status and body.
pub fn post_form(port: u16, path: &str, form: &str) -> std::io::Result<(u16, String)> {
    send(port, "POST", path, Some(form))
}

fn send(port: u16, method: &str, path: &str, form: Option<&str>) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let content_type = if form.is_some() {
        "Content-Type: application/x-www-form-urlencoded\r\n"
    } else {
        ""
    };
    let body = form.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n{content_type}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response: {text:?}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

pub struct Apache {
    pub port: u16,
    _server: Server,
}

impl Apache {
    /// Its child processes: a graceful reload would replace them.
    pub fn workers(&self) -> Vec<u32> {
        self._server.children()
    }
}

impl Apache {
    /// Apache (mpm_event, mod_rewrite, mod_proxy_fcgi) serving `site` (a vhost) on `port`.
    pub fn start(dir: &Path, site: &str, port: u16) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("site.conf"), site).unwrap();
        let d = dir.display();
        let user = if running_as_root() {
            "User www-data\nGroup www-data\n"
        } else {
            ""
        };
        let modules = [
            "mpm_event",
            "authz_core",
            "dir",
            "headers",
            "mime",
            "proxy",
            "proxy_fcgi",
            "rewrite",
        ]
        .iter()
        .map(|m| format!("LoadModule {m}_module /usr/lib/apache2/modules/mod_{m}.so\n"))
        .collect::<String>();
        let config = format!(
            "ServerRoot {d}\nDefaultRuntimeDir {d}\nPidFile {d}/apache.pid\nMutex file:{d} default\n{modules}{user}\
             ServerName localhost\nErrorLog /proc/self/fd/2\nLogLevel warn\nListen 127.0.0.1:{port}\n\
             TypesConfig /etc/mime.types\nInclude {d}/site.conf\n"
        );
        let path = dir.join("apache2.conf");
        std::fs::write(&path, config).unwrap();
        let server = Server::spawn(
            "apache",
            Command::new("apache2")
                .arg("-f")
                .arg(&path)
                .arg("-DFOREGROUND"),
        );
        wait_for(
            || TcpStream::connect(("127.0.0.1", port)).is_ok(),
            "apache port",
        );
        Apache {
            port,
            _server: server,
        }
    }
}

pub struct MariaDb {
    pub socket: PathBuf,
    _server: Server,
}

impl MariaDb {
    /// MariaDB on a socket in `dir`, with database `wp` for user `wp`/`wp`.
    pub fn start(dir: &Path) -> Self {
        let data = dir.join("data");
        std::fs::create_dir_all(&data).unwrap();
        let status = Command::new("mariadb-install-db")
            .args([
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ])
            .arg(format!("--datadir={}", data.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("mariadb-server is installed (scripts/test.sh)");
        assert!(status.success(), "mariadb-install-db failed");
        let socket = dir.join("mariadb.sock");
        let mut command = Command::new("mariadbd");
        command
            .args(["--user=root", "--skip-networking"])
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--pid-file={}", dir.join("mariadb.pid").display()));
        let server = Server::spawn("mariadb", &mut command);
        wait_for(|| socket.exists(), "mariadb socket");
        let sql = "CREATE DATABASE wp; CREATE USER 'wp'@'localhost' IDENTIFIED BY 'wp'; GRANT ALL ON wp.* TO 'wp'@'localhost';";
        let status = Command::new("mariadb")
            .arg("-S")
            .arg(&socket)
            .args(["-u", "root", "-e", sql])
            .status()
            .unwrap();
        assert!(status.success(), "creating the wp database failed");
        MariaDb {
            socket,
            _server: server,
        }
    }
}

/// The site `zdeploy webserver SERVER shop` writes from `config`, on
/// loopback `port`, handing PHP to `fpm`.
pub fn zdeploy_site(config: &Path, server: &str, port: u16, fpm: &PhpFpm) -> String {
    super::Zdeploy::new()
        .arg("--config")
        .arg(config)
        .args(["webserver", server, "shop", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--php-fpm")
        .arg(&fpm.socket)
        .success()
        .stdout
}

/// The nginx site `zdeploy webserver nginx` writes for `site`, on `port`.
pub fn zdeploy_nginx_config(site: &super::Site, fpm: &PhpFpm, port: u16) -> String {
    super::Zdeploy::new()
        .args(["webserver", "nginx", "--webroot"])
        .arg(&site.webroot)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--php-fpm"])
        .arg(&fpm.socket)
        .success()
        .stdout
}

pub struct Caddy {
    pub port: u16,
    _server: Server,
}

impl Caddy {
    /// Caddy serving `site` (a Caddyfile site block), its admin endpoint
    /// off so several can run at once, its state under `dir`.
    pub fn start(dir: &Path, site: &str, port: u16) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join("Caddyfile");
        std::fs::write(&path, format!("{{\n\tadmin off\n}}\n\n{site}")).unwrap();
        let server = Server::spawn(
            "caddy",
            Command::new("caddy")
                .args(["run", "--adapter", "caddyfile", "--config"])
                .arg(&path)
                .env("HOME", dir)
                .env("XDG_DATA_HOME", dir.join("data"))
                .env("XDG_CONFIG_HOME", dir.join("config")),
        );
        wait_for(
            || TcpStream::connect(("127.0.0.1", port)).is_ok(),
            "caddy port",
        );
        Caddy {
            port,
            _server: server,
        }
    }
}
