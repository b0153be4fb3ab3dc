//! Resetting PHP-FPM's opcache after a switch, by asking PHP-FPM itself over
//! FastCGI to run `opcache_reset()` from a throwaway script in the state dir
//! (never under the document root). With `$realpath_root` this only frees
//! memory, so it is off by default; failures are reported, never fatal.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::fastcgi::{self, Address};
use crate::layout::Layout;

const TIMEOUT: Duration = Duration::from_secs(10);
const SCRIPT: &str = "<?php\nheader('Content-Type: text/plain');\necho function_exists('opcache_reset') ? (opcache_reset() ? 'reset' : 'disabled') : 'missing';\n";

pub fn reset(layout: &Layout, address: &Address) -> Result<()> {
    let script = layout.state_dir().join(format!(
        "opcache-reset-{}-{}.php",
        std::process::id(),
        jiff::Timestamp::now().as_nanosecond()
    ));
    std::fs::write(&script, SCRIPT).map_err(|e| Error::io("write", &script, e))?;
    let filename = script.display().to_string();
    let state = layout.state_dir().display().to_string();
    let params = [
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("SERVER_SOFTWARE", "zdeploy"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REQUEST_METHOD", "GET"),
        ("SCRIPT_FILENAME", filename.as_str()),
        ("SCRIPT_NAME", "/zdeploy-opcache-reset.php"),
        ("REQUEST_URI", "/zdeploy-opcache-reset.php"),
        ("DOCUMENT_ROOT", state.as_str()),
        ("QUERY_STRING", ""),
        ("CONTENT_LENGTH", "0"),
        ("REMOTE_ADDR", "127.0.0.1"),
    ];
    let response = fastcgi::request(address, &params, TIMEOUT);
    let _ = std::fs::remove_file(&script);
    let response = response.map_err(|e| {
        Error::Server(format!(
            "cannot reach PHP-FPM at {address} to reset opcache: {e}"
        ))
    })?;
    match response.body().trim() {
        "reset" => Ok(()),
        "disabled" => Err(Error::Server(format!(
            "PHP-FPM at {address} has opcache disabled: nothing to reset"
        ))),
        "missing" => Err(Error::Server(format!(
            "PHP-FPM at {address} has no opcache extension loaded"
        ))),
        other => Err(Error::Server(format!(
            "PHP-FPM at {address} did not run the opcache reset: {}{}",
            other.chars().take(200).collect::<String>(),
            String::from_utf8_lossy(&response.stderr)
                .chars()
                .take(200)
                .collect::<String>()
        ))),
    }
}
