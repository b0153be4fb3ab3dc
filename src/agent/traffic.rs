//! The agent listens for what the app's web server served: each request's
//! report arrives as a datagram on the app's traffic socket (the nginx site
//! logs there through syslog, Apache's through `zdeploy traffic-relay`;
//! Caddy's come by UDP to the agent's port, and are handed on). Reports
//! are tallied per release and ten-second bucket in memory and written to
//! the history every few seconds. The web server never waits on it: a
//! datagram nobody reads is simply dropped.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{UdpSocket, UnixDatagram};
use zdeploy_core::history::{History, now_ms};
use zdeploy_core::traffic::{Tallies, bind_socket, parse, parse_caddy, report_line};

use super::SharedAgent;
use super::app::App;

/// How often tallies are written to the history.
const FLUSH_EVERY: Duration = Duration::from_secs(2);
/// How often an app never deployed is looked at again.
const WAIT_FOR_STATE: Duration = Duration::from_secs(5);

/// Listen on the app's traffic socket until the agent stops or the app is
/// dropped.
pub async fn listen(agent: SharedAgent, app: Arc<App>) {
    let config = app.config();
    if config.topology.ssh().is_some() {
        // The controller's webroot is not where the fleet serves.
        return;
    }
    let socket_path = config.layout.traffic_socket();
    // Before the first deploy there is no state folder to listen in.
    while !config.layout.state_dir().is_dir() {
        if !agent.sleep(WAIT_FOR_STATE).await || app.is_removed() {
            return;
        }
    }
    let bound = bind_socket(&socket_path).and_then(|socket| {
        socket.set_nonblocking(true)?;
        UnixDatagram::from_std(socket)
    });
    let socket = match bound {
        Ok(socket) => socket,
        Err(error) => {
            tracing::warn!(app = %app.name, socket = %socket_path.display(), %error,
                "cannot listen for traffic reports; the watch cannot judge releases");
            return;
        }
    };
    let listening = config.layout.traffic_listening();
    if let Err(error) = std::fs::write(&listening, "") {
        tracing::warn!(app = %app.name, file = %listening.display(), %error, "cannot say the agent listens for traffic");
    }
    let webroot = std::fs::canonicalize(config.layout.webroot())
        .unwrap_or_else(|_| config.layout.webroot().to_path_buf());
    let mut tallies = Tallies::default();
    let mut recorder = Recorder {
        app: app.clone(),
        history: None,
    };
    let mut buffer = vec![0u8; 4096];
    let mut flush = tokio::time::interval(FLUSH_EVERY);
    loop {
        tokio::select! {
            _ = agent.stopped() => break,
            _ = flush.tick() => {
                if app.is_removed() {
                    break;
                }
                recorder.write(std::mem::take(&mut tallies)).await;
            }
            received = socket.recv(&mut buffer) => {
                let Ok(length) = received else { continue };
                let Some(served) = std::str::from_utf8(&buffer[..length])
                    .ok()
                    .and_then(|report| parse(report, &webroot))
                else {
                    continue;
                };
                agent.metrics.served(&app.name, served.status, 1);
                tallies.add(served, now_ms());
            }
        }
    }
    recorder.write(tallies).await;
    let _ = std::fs::remove_file(&listening);
    let _ = std::fs::remove_file(&socket_path);
}

/// How often the Caddy relay rereads where each app is served.
const SITES_EVERY: Duration = Duration::from_secs(5);

/// Caddy's reports: its access log sends each request as a UDP datagram to
/// the loopback address at the agent's port (a datagram nobody reads is
/// dropped, and Caddy starts whether or not the agent runs). The root each
/// names is resolved now, which says the release that served it (a
/// request in flight across a switch may be counted to the release after
/// it), and the report is handed on to the socket of the app served there.
pub async fn relay_caddy(agent: SharedAgent) {
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], agent.listen.port()));
    let socket = match UdpSocket::bind(address).await {
        Ok(socket) => socket,
        Err(error) => {
            tracing::warn!(%address, %error, "cannot listen for Caddy's traffic reports; the watch cannot judge releases Caddy serves");
            return;
        }
    };
    let Ok(sender) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let _ = sender.set_nonblocking(true);
    let mut sites = Vec::new();
    let mut sites_read: Option<Instant> = None;
    let mut buffer = vec![0u8; 8192];
    loop {
        let length = tokio::select! {
            _ = agent.stopped() => return,
            received = socket.recv(&mut buffer) => match received {
                Ok(length) => length,
                Err(_) => continue,
            },
        };
        let Some(report) = parse_caddy(&buffer[..length]) else {
            continue;
        };
        if sites_read.is_none_or(|read| read.elapsed() > SITES_EVERY) {
            sites = served_sites(&agent);
            sites_read = Some(Instant::now());
        }
        let Ok(resolved) = std::fs::canonicalize(&report.root) else {
            continue;
        };
        if let Some((_, traffic_socket)) = sites
            .iter()
            .find(|(webroot, _)| resolved.starts_with(webroot))
        {
            let line = report_line(report.status, report.seconds, &resolved);
            // The app's listener is not running, or its queue is full.
            let _ = sender.send_to(line.as_bytes(), traffic_socket);
        }
    }
}

/// Each app this host serves: its resolved webroot and traffic socket,
/// the deepest webroot first.
fn served_sites(agent: &SharedAgent) -> Vec<(PathBuf, PathBuf)> {
    let mut sites: Vec<(PathBuf, PathBuf)> = agent
        .apps()
        .iter()
        .map(|app| app.config())
        .filter(|config| config.topology.ssh().is_none())
        .filter_map(|config| {
            let webroot = std::fs::canonicalize(config.layout.webroot()).ok()?;
            Some((webroot, config.layout.traffic_socket()))
        })
        .collect();
    sites.sort_by_key(|(webroot, _)| std::cmp::Reverse(webroot.components().count()));
    sites
}

/// Writes tallies to the app's history, keeping it open between writes.
struct Recorder {
    app: Arc<App>,
    history: Option<History>,
}

impl Recorder {
    /// Add `tallies` to the history.
    async fn write(&mut self, tallies: Tallies) {
        if tallies.dropped > 0 {
            tracing::warn!(app = %self.app.name, dropped = tallies.dropped, "traffic reports dropped: too many releases at once");
        }
        if tallies.is_empty() {
            return;
        }
        let history = self.history.take();
        let path = self.app.config().layout.history_path();
        let written = tokio::task::spawn_blocking(move || -> zdeploy_core::Result<History> {
            let history = match history {
                Some(history) => history,
                None => History::open(&path)?,
            };
            history.add_traffic(&tallies)?;
            Ok(history)
        })
        .await;
        match written {
            Ok(Ok(history)) => self.history = Some(history),
            Ok(Err(error)) => tracing::warn!(app = %self.app.name, %error, "cannot record traffic"),
            Err(panic) => {
                tracing::error!(app = %self.app.name, %panic, "the traffic writer panicked")
            }
        }
    }
}
