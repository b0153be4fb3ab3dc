//! `zdeploy traffic-relay SOCKET`: Apache's piped access log. Each line
//! Apache writes is sent on as one datagram to the app's traffic socket,
//! without waiting: a line nobody reads (the agent is not running) is
//! dropped, so Apache never blocks on its log.

use std::io::BufRead;
use std::os::unix::net::UnixDatagram;
use std::path::Path;

/// Relay stdin to `socket` until Apache closes the pipe.
pub fn relay(socket: &Path) -> anyhow::Result<()> {
    let sender = UnixDatagram::unbound()?;
    sender.set_nonblocking(true)?;
    let stdin = std::io::stdin();
    let mut lines = stdin.lock();
    let mut line = Vec::new();
    loop {
        line.clear();
        if lines.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        // No listener, or its queue is full: the report is dropped.
        let _ = sender.send_to(&line, socket);
    }
}
