//! Fault injection for the crash tests: `ZDEPLOY_FAILPOINT=<point>` makes the
//! process SIGKILL itself when it reaches `<point>` (a step name, or a finer
//! point such as `switch.exchanged`); `<point>:pause` makes it announce the
//! point on stderr and sleep, so a test can kill it there from outside.

use std::sync::OnceLock;
use std::time::Duration;

const VARIABLE: &str = "ZDEPLOY_FAILPOINT";

fn configured() -> Option<&'static (String, bool)> {
    static POINT: OnceLock<Option<(String, bool)>> = OnceLock::new();
    POINT
        .get_or_init(|| {
            let value = std::env::var(VARIABLE).ok()?;
            Some(match value.strip_suffix(":pause") {
                Some(point) => (point.to_string(), true),
                None => (value, false),
            })
        })
        .as_ref()
}

/// Mark a point a test may stop the process at.
pub fn hit(point: &str) {
    let Some((wanted, pause)) = configured() else {
        return;
    };
    if wanted != point {
        return;
    }
    if *pause {
        eprintln!("zdeploy: paused at failpoint {point}");
        std::thread::sleep(Duration::from_secs(3600));
    }
    let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
}
