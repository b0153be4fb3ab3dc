//! A real `zdeploy agent` process on a loopback port, and an HTTP client to
//! talk to it the way GitHub, a browser or curl would.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;

use super::BIN;
use super::servers::free_port;

pub struct Agent {
    pub port: u16,
    pub config: PathBuf,
    child: Option<Child>,
    /// Everything the agent wrote on stderr so far.
    pub log: Arc<Mutex<String>>,
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl From<Result<ureq::http::Response<ureq::Body>, ureq::Error>> for Answer {
    /// A failed connection is status 0 with the error as the body.
    fn from(result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Self {
        match result {
            Ok(mut response) => Answer {
                status: response.status().as_u16(),
                body: response.body_mut().read_to_string().unwrap_or_default(),
            },
            Err(e) => Answer {
                status: 0,
                body: e.to_string(),
            },
        }
    }
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// GET (no body) or POST `url` with `headers`, on any address.
pub fn call(url: &str, headers: &[(&str, &str)], body: Option<&str>) -> Answer {
    match body {
        None => {
            let mut request = client().get(url);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            Answer::from(request.call())
        }
        Some(body) => {
            let mut request = client().post(url);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            Answer::from(request.send(body))
        }
    }
}

fn client() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// `[apps.demo]`: `source` on `main` into `webroot`, no settle or drain,
/// webhooks signed with the secret in `secret_file`, then `extra` keys.
pub fn demo_app(webroot: &Path, source: &str, secret_file: &Path, extra: &str) -> String {
    format!(
        "[apps.demo]\nwebroot = \"{}\"\nsource = \"{source}\"\nref = \"main\"\nsettle = \"0s\"\ndrain = \"0s\"\nwebhook_secret_file = \"{}\"\n{extra}\n",
        webroot.display(),
        secret_file.display()
    )
}

/// HMAC-SHA256 of `body` in hex, as the providers sign.
pub fn sign(secret: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

impl Agent {
    /// Write `config` (a TOML text whose `[agent]` table this adds, with a
    /// free port) to `dir/zdeploy.toml` and start the agent on it.
    pub fn start(dir: &Path, config: &str) -> Self {
        let port = free_port();
        let text = if config.contains("[agent]") {
            config.replace(
                "[agent]",
                &format!("[agent]\nlisten = \"127.0.0.1:{port}\""),
            )
        } else {
            format!("[agent]\nlisten = \"127.0.0.1:{port}\"\n\n{config}")
        };
        let path = dir.join("zdeploy.toml");
        std::fs::write(&path, text).unwrap();
        Self::start_with(&path, port, &[])
    }

    pub fn start_with(config: &Path, port: u16, args: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args(["agent", "--config"])
            .arg(config)
            .args(args)
            .env_remove("ZDEPLOY_CONFIG")
            .env("ZDEPLOY_ALLOW_ROOT_BUILD", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start zdeploy agent");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[agent] {line}");
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let agent = Agent {
            port,
            config: config.to_path_buf(),
            child: Some(child),
            log,
        };
        agent.wait_for("the agent to listen", Duration::from_secs(30), || {
            agent.get("/healthz").status == 200
        });
        agent
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn get(&self, path: &str) -> Answer {
        Answer::from(client().get(&self.url(path)).call())
    }

    /// POST `body` with `headers`.
    pub fn post(&self, path: &str, headers: &[(&str, &str)], body: impl AsRef<[u8]>) -> Answer {
        let mut request = client().post(&self.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        Answer::from(request.send(body.as_ref()))
    }

    /// POST over a bare connection: the status code, read even when the
    /// agent answered and hung up before the whole body was sent (a client
    /// library then reports only its broken pipe); 0 if there is none.
    pub fn post_raw(&self, path: &str, headers: &[(&str, &str)], body: &str) -> u16 {
        use std::io::Write;
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.port,
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let _ = stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(body.as_bytes()));
        let mut answer = [0; 12];
        match stream.read_exact(&mut answer) {
            Ok(()) => String::from_utf8_lossy(&answer[9..12]).parse().unwrap_or(0),
            Err(_) => 0,
        }
    }

    /// An API action with a JSON body.
    pub fn act(&self, app: &str, action: &str, body: &str) -> Answer {
        self.post(
            &format!("/api/apps/{app}/{action}"),
            &[("Content-Type", "application/json")],
            body,
        )
    }

    pub fn app(&self, name: &str) -> Value {
        self.get(&format!("/api/apps/{name}")).json()
    }

    pub fn deployments(&self, app: &str) -> Vec<Value> {
        self.get(&format!("/api/apps/{app}/deployments?limit=1000"))
            .json()
            .as_array()
            .unwrap()
            .clone()
    }

    /// Wait until nothing runs or is queued for `app`.
    pub fn wait_idle(&self, app: &str) {
        self.wait_for(
            &format!("{app} to be idle"),
            Duration::from_secs(120),
            || {
                let app = self.app(app);
                app["running"].is_null() && app["pending"].is_null()
            },
        );
    }

    pub fn live_commit(&self, app: &str) -> Option<String> {
        self.app(app)["live"]["commit"].as_str().map(str::to_string)
    }

    #[track_caller]
    pub fn wait_for(&self, what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
        let started = Instant::now();
        while !ready() {
            assert!(
                started.elapsed() < limit,
                "timed out waiting for {what}; agent log:\n{}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Wait for the process to exit; its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let started = Instant::now();
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status.code();
            }
            assert!(
                started.elapsed() < limit,
                "the agent did not exit within {limit:?}; log:\n{}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Read one server-sent event stream to its end.
    pub fn read_stream(&self, path: &str) -> String {
        let mut response = client().get(&self.url(path)).call().unwrap();
        let mut text = String::new();
        response
            .body_mut()
            .as_reader()
            .read_to_string(&mut text)
            .unwrap();
        text
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
