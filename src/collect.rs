//! A host's traffic reports collected for a while without the agent: a
//! fleet host that runs no agent still records what its web server served,
//! so the controller can judge its canary. Where the agent listens already,
//! this only waits for it to have written the window's reports.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use zdeploy_core::history::{History, now_ms};
use zdeploy_core::layout::Layout;
use zdeploy_core::traffic::{Tallies, bind_socket, parse};

/// How often what was collected is written to the history (as the agent).
const FLUSH_EVERY: Duration = Duration::from_secs(2);
/// How long a window waits on the agent's last write.
const AGENT_FLUSH: Duration = Duration::from_millis(2500);

/// Record the reports the site sends for `duration`, into the history.
pub fn record_for(layout: &Layout, duration: Duration) -> Result<()> {
    let socket_path = layout.traffic_socket();
    let agent_listens = UnixDatagram::unbound()
        .and_then(|probe| probe.connect(&socket_path))
        .is_ok();
    if agent_listens {
        std::thread::sleep(duration + AGENT_FLUSH);
        return Ok(());
    }
    let listening = Listening { layout };
    let socket = bind_socket(&socket_path)
        .with_context(|| format!("listen on {}", socket_path.display()))?;
    std::fs::write(layout.traffic_listening(), "")?;
    let webroot =
        std::fs::canonicalize(layout.webroot()).unwrap_or_else(|_| layout.webroot().to_path_buf());
    let history = History::open(&layout.history_path())?;
    let deadline = Instant::now() + duration;
    let mut flushed = Instant::now();
    let mut tallies = Tallies::default();
    let mut buffer = vec![0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        socket.set_read_timeout(Some(left.min(FLUSH_EVERY)))?;
        if let Ok(length) = socket.recv(&mut buffer)
            && let Some(served) = std::str::from_utf8(&buffer[..length])
                .ok()
                .and_then(|report| parse(report, &webroot))
        {
            tallies.add(served, now_ms());
        }
        if flushed.elapsed() >= FLUSH_EVERY {
            history.add_traffic(&std::mem::take(&mut tallies))?;
            flushed = Instant::now();
        }
    }
    history.add_traffic(&tallies)?;
    drop(listening);
    Ok(())
}

/// While collecting: the marker the site tests, and the socket; both go
/// when collecting ends, however it ends.
struct Listening<'a> {
    layout: &'a Layout,
}

impl Drop for Listening<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.layout.traffic_listening());
        let _ = std::fs::remove_file(self.layout.traffic_socket());
    }
}
