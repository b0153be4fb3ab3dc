//! Maintenance windows: while one is open, the sites `zdeploy webserver`
//! writes answer 503 with `Retry-After` and a page, except to allowed
//! addresses and to clients holding the bypass cookie. A window is a folder
//! in the state dir that the web server looks at on every request, so
//! opening and closing one never reloads the server:
//!
//! ```text
//! <state>/maintenance/window -> retry-after-<N>-<id>   (the switch: a symlink)
//! <state>/maintenance/retry-after-<N>-<id>/
//!     page.html          the page served with the 503
//!     retry-after        N, read by Apache
//!     retry-after-<N>    found by Caddy's glob (nginx reads N from the folder's name)
//!     allow/<address>    an allowed address, or an IPv4 prefix: 10, 10.1, 10.1.2
//!     bypass/<secret>    the cookie's secret (the folder cannot be listed)
//!     window.json        who opened it, when, and its history record
//! ```
//!
//! A window is opened by hand (`zdeploy maintenance on`, open until `off`)
//! or by a deploy around a build step that needs one; a deploy closes only
//! its own window, and `recover` closes one a killed deploy left open.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fsx;
use crate::history::{History, now_ms};
use crate::layout::Layout;
use crate::session::Session;

/// The cookie that lets a client through an open window.
pub const BYPASS_COOKIE: &str = "zdeploy_maintenance";

/// Retry-After of a window opened by hand without `--retry-after`.
pub const DEFAULT_RETRY_AFTER: u32 = 60;

/// How long a deploy waits after opening its window before the step runs:
/// requests the web server passed to PHP just before finish on the schema
/// they started with.
pub const IN_FLIGHT_GRACE: std::time::Duration = std::time::Duration::from_millis(300);

/// The largest page a window serves.
const PAGE_LIMIT: u64 = 1 << 20;

const BUILT_IN_PAGE: &str = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>Down for maintenance</title></head>\n<body style=\"font-family: sans-serif; margin: 4em auto; max-width: 36em\">\
<h1>Down for maintenance</h1><p>This site is being updated and will be back shortly. \
Please try again in a moment.</p></body></html>\n";

/// Who opened a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `zdeploy maintenance on`: open until `off`.
    Manual,
    /// A deploy, around its build step that needs a window.
    Deploy(i64),
}

/// An address or IPv4 network let through an open window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowed {
    address: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Allowed {
    type Err = Error;

    /// `ADDRESS` or `IPv4/PREFIX`.
    fn from_str(text: &str) -> Result<Self> {
        let bad = |why: &str| Error::Invalid(format!("--allow {text:?}: {why}"));
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: IpAddr = address
            .parse()
            .map_err(|_| bad("not an IP address (give e.g. 203.0.113.7 or 10.0.0.0/8)"))?;
        let full = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => full,
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= full)
                .ok_or_else(|| bad(&format!("the prefix must be a number from 1 to {full}")))?,
        };
        match address {
            IpAddr::V6(_) if prefix != 128 => Err(bad(
                "IPv6 networks cannot be allowed; give single IPv6 addresses (or IPv4 networks)",
            )),
            IpAddr::V4(_) if prefix == 0 => Err(bad(
                "a /0 network lets every client through: that is maintenance off",
            )),
            IpAddr::V4(v4) => Ok(Allowed {
                address: IpAddr::V4(Ipv4Addr::from(
                    u32::from(v4) & (u32::MAX << (32 - prefix as u32)),
                )),
                prefix,
            }),
            IpAddr::V6(_) => Ok(Allowed { address, prefix }),
        }
    }
}

impl std::fmt::Display for Allowed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.address {
            IpAddr::V4(_) if self.prefix < 32 => write!(f, "{}/{}", self.address, self.prefix),
            address => write!(f, "{address}"),
        }
    }
}

impl Allowed {
    /// The names under `allow/` that cover this network: the web servers
    /// look up a client's address and its first three, two and one octets,
    /// so a prefix between octets becomes the octet prefixes it spans.
    fn file_names(&self) -> Vec<String> {
        let IpAddr::V4(v4) = self.address else {
            return vec![self.address.to_string()];
        };
        let octets = (self.prefix as u32).div_ceil(8);
        let spanned = 1u32 << (octets * 8 - self.prefix as u32);
        let base = u32::from(v4) >> (32 - octets * 8);
        (0..spanned)
            .map(|i| {
                let bytes = ((base + i) << (32 - octets * 8)).to_be_bytes();
                bytes[..octets as usize]
                    .iter()
                    .map(u8::to_string)
                    .collect::<Vec<_>>()
                    .join(".")
            })
            .collect()
    }
}

/// What a window serves.
#[derive(Debug, Clone)]
pub struct Opening {
    pub retry_after: u32,
    pub allow: Vec<Allowed>,
    /// The page's file, already checked to lie inside its release; `None`
    /// serves a short built-in page.
    pub page: Option<PathBuf>,
    pub origin: Origin,
    /// The bypass cookie's secret (a fleet's controller gives every host
    /// the same); `None` makes a new one.
    pub secret: Option<String>,
}

/// An open window, as `window.json` records it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Window {
    pub opened_ms: i64,
    pub retry_after: u32,
    pub allow: Vec<String>,
    /// The deploy that opened it; `None` when opened by hand.
    pub deployment: Option<i64>,
    /// Its row in the history's maintenance windows.
    pub record: i64,
}

impl Window {
    pub fn origin(&self) -> Origin {
        self.deployment.map_or(Origin::Manual, Origin::Deploy)
    }
}

/// A window just opened, and the bypass cookie's secret (shown once).
pub struct Opened {
    pub window: Window,
    pub secret: String,
}

/// A closed window and how long it was open.
#[derive(Debug, Clone)]
pub struct Closed {
    pub window: Window,
    pub seconds: f64,
}

/// A window in the history.
#[derive(Debug, Clone, Serialize)]
pub struct WindowRecord {
    pub id: i64,
    pub deployment: Option<i64>,
    pub opened_ms: i64,
    pub closed_ms: Option<i64>,
    pub closed_by: Option<String>,
    /// How long it was open, once closed.
    pub seconds: Option<f64>,
}

/// The window open now, if any.
pub fn current(layout: &Layout) -> Result<Option<Window>> {
    let path = layout.maintenance_window().join("window.json");
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Invalid(format!("{} is unreadable: {e}", path.display()))),
        Err(e) if fsx::is_missing(&e) => Ok(None),
        Err(e) => Err(Error::io("read", path, e)),
    }
}

/// Open a window; by hand, one open already is replaced with the new
/// settings. A deploy leaves any open window as it is (one by hand, or its
/// own), and gets `None`.
pub fn open(layout: &Layout, history: &History, opening: &Opening) -> Result<Option<Opened>> {
    let _guard = MaintenanceLock::take(layout)?;
    let previous = current(layout)?;
    if matches!(opening.origin, Origin::Deploy(_)) && previous.is_some() {
        return Ok(None);
    }
    let page = match &opening.page {
        Some(path) => read_page(path)?,
        None => BUILT_IN_PAGE.as_bytes().to_vec(),
    };
    let secret = match &opening.secret {
        Some(secret) => {
            validate_secret(secret)?;
            secret.clone()
        }
        None => new_secret()?,
    };
    let dir_name = format!("retry-after-{}-{}", opening.retry_after, random_hex(4)?);
    let root = layout.maintenance_dir();
    let dir = root.join(&dir_name);
    fsx::create_dir_all(&dir.join("allow"))?;
    fsx::create_dir(&dir.join("bypass"))?;
    set_mode(&root, 0o755)?;
    set_mode(&dir, 0o755)?;
    set_mode(&dir.join("allow"), 0o755)?;
    // Searchable, not listable: the web server finds a secret it is given.
    set_mode(&dir.join("bypass"), 0o711)?;
    write_file(&dir.join("page.html"), &page)?;
    write_file(
        &dir.join("retry-after"),
        opening.retry_after.to_string().as_bytes(),
    )?;
    write_file(
        &dir.join(format!("retry-after-{}", opening.retry_after)),
        b"",
    )?;
    for allowed in &opening.allow {
        for name in allowed.file_names() {
            write_file(&dir.join("allow").join(name), b"")?;
        }
    }
    write_file(&dir.join("bypass").join(&secret), b"")?;
    for folder in ["allow", "bypass"] {
        fsx::fsync_dir(&dir.join(folder))?;
    }
    let opened_ms = now_ms();
    let deployment = match opening.origin {
        Origin::Manual => None,
        Origin::Deploy(id) => Some(id),
    };
    let record = history.start_window(deployment, opened_ms)?;
    let window = Window {
        opened_ms,
        retry_after: opening.retry_after,
        allow: opening.allow.iter().map(Allowed::to_string).collect(),
        deployment,
        record,
    };
    write_file(
        &dir.join("window.json"),
        &serde_json::to_vec_pretty(&window).expect("a window serializes"),
    )?;
    // Everything the link leads to is on disk before the link is.
    fsx::fsync_dir(&dir)?;
    let link = root.join(format!(".window-{}", random_hex(4)?));
    fsx::symlink(Path::new(&dir_name), &link)?;
    fsx::rename(&link, &layout.maintenance_window())?;
    fsx::fsync_dir(&root)?;
    if let Some(previous) = previous {
        history.finish_window(previous.record, now_ms(), "replaced")?;
    }
    remove_unused(layout)?;
    Ok(Some(Opened { window, secret }))
}

/// Close the window if one is open and `closes` says this caller may close
/// it; `closed_by` goes into the history.
pub fn close(
    layout: &Layout,
    history: &History,
    closed_by: &str,
    closes: impl Fn(&Window) -> bool,
) -> Result<Option<Closed>> {
    // Nothing open, the common case at every run's end: no lock taken,
    // nothing written.
    if current(layout)?.is_none() {
        return Ok(None);
    }
    let _guard = MaintenanceLock::take(layout)?;
    let Some(window) = current(layout)? else {
        return Ok(None);
    };
    if !closes(&window) {
        return Ok(None);
    }
    fsx::remove_file(&layout.maintenance_window())?;
    fsx::fsync_dir(&layout.maintenance_dir())?;
    let closed_ms = now_ms();
    history.finish_window(window.record, closed_ms, closed_by)?;
    remove_unused(layout)?;
    Ok(Some(Closed {
        seconds: (closed_ms - window.opened_ms) as f64 / 1000.0,
        window,
    }))
}

/// Open `session`'s deploy window serving `page` (the built-in one for
/// `None`) to all but `allow`; false when one is open already (by hand, or
/// by this deploy).
pub fn open_for_deploy(
    session: &Session<'_>,
    page: Option<PathBuf>,
    allow: &[Allowed],
) -> Result<bool> {
    let opening = Opening {
        retry_after: deploy_retry_after(&session.history)?,
        allow: allow.to_vec(),
        page,
        origin: Origin::Deploy(session.id),
        secret: None,
    };
    Ok(open(session.layout, &session.history, &opening)?.is_some())
}

/// Close the window `session`'s deploy opened, if it is still open, and log
/// how long it lasted.
pub fn close_own(session: &Session<'_>, closed_by: &str) -> Result<Option<Closed>> {
    let closed = close(session.layout, &session.history, closed_by, |window| {
        window.deployment == Some(session.id)
    })?;
    if let Some(closed) = &closed {
        session.info(&format!(
            "maintenance: off after {:.1}s ({closed_by})",
            closed.seconds
        ));
    }
    Ok(closed)
}

/// Close `session`'s window right after its switch; were that to fail, the
/// run's end tries again, and the deploy goes on.
pub fn close_after_switch(session: &Session<'_>) {
    if let Err(error) = close_own(session, "switch") {
        session.warn(&format!("maintenance stays on for now: {error}"));
    }
}

/// Close a window a deploy that is no longer running left open (it was
/// killed inside it); `recover` calls this holding the lock.
pub fn close_abandoned(session: &Session<'_>) -> Result<()> {
    let closed = close(session.layout, &session.history, "recover", |window| {
        window.deployment.is_some_and(|d| d != session.id)
    })?;
    if let Some(closed) = closed {
        session.warn(&format!(
            "closed the maintenance window deployment #{} left open {:.1}s ago",
            closed.window.deployment.unwrap_or_default(),
            closed.seconds
        ));
    }
    Ok(())
}

/// Retry-After of a deploy's window: how long the last one lasted, at
/// least 5 s.
pub fn deploy_retry_after(history: &History) -> Result<u32> {
    let last = history.last_closed_window(true)?.and_then(|w| w.seconds);
    Ok(last.map_or(5, |seconds| (seconds.ceil() as u32).max(5)))
}

/// Remove window folders the switch no longer points at.
fn remove_unused(layout: &Layout) -> Result<()> {
    let root = layout.maintenance_dir();
    if !root.is_dir() {
        return Ok(());
    }
    let live = std::fs::read_link(layout.maintenance_window()).ok();
    for entry in fsx::read_dir(&root)? {
        let entry = entry.map_err(|e| Error::io("read", &root, e))?;
        let name = entry.file_name();
        let text = name.to_string_lossy();
        let stale_link = text.starts_with(".window-");
        let unused_dir =
            text.starts_with("retry-after-") && live.as_deref() != Some(Path::new(&name));
        if stale_link {
            fsx::remove_file(&entry.path())?;
        } else if unused_dir {
            fsx::remove_dir_all(&entry.path())?;
        }
    }
    Ok(())
}

fn read_page(path: &Path) -> Result<Vec<u8>> {
    let file = fsx::open(path)?;
    let mut page = Vec::new();
    file.take(PAGE_LIMIT + 1)
        .read_to_end(&mut page)
        .map_err(|e| Error::io("read", path, e))?;
    if page.len() as u64 > PAGE_LIMIT {
        return Err(Error::Invalid(format!(
            "maintenance page {} is larger than {} KiB",
            path.display(),
            PAGE_LIMIT / 1024
        )));
    }
    Ok(page)
}

/// The page `relative` names inside `release`, refused when it is not a
/// regular file there (a `..`, or a symlink leading out of the release).
pub fn page_in_release(release: &Path, relative: &Path) -> Result<PathBuf> {
    let outside = || {
        Error::Invalid(format!(
            "maintenance_page {} is not a file inside the release {}",
            relative.display(),
            release.display()
        ))
    };
    if !fsx::is_safe_relative(relative) {
        return Err(outside());
    }
    let real_release =
        std::fs::canonicalize(release).map_err(|e| Error::io("resolve", release, e))?;
    let page = std::fs::canonicalize(release.join(relative)).map_err(|_| outside())?;
    if !page.starts_with(&real_release) || !page.is_file() {
        return Err(outside());
    }
    Ok(page)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = std::fs::File::create(path).map_err(|e| Error::io("create", path, e))?;
    std::io::Write::write_all(&mut file, bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io("write", path, e))?;
    set_mode(path, 0o644)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io("set permissions of", path, e))
}

/// A new bypass secret: 128 random bits in hex.
pub fn new_secret() -> Result<String> {
    random_hex(16)
}

fn validate_secret(secret: &str) -> Result<()> {
    if secret.len() == 32
        && secret
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        Ok(())
    } else {
        Err(Error::Invalid(
            "a bypass secret is 32 lowercase hex digits".into(),
        ))
    }
}

fn random_hex(bytes: usize) -> Result<String> {
    let mut buffer = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buffer))
        .map_err(|e| Error::io("read", "/dev/urandom", e))?;
    Ok(buffer.iter().map(|b| format!("{b:02x}")).collect())
}

/// Opening and closing take turns (a deploy closing its window while a
/// person opens one by hand).
struct MaintenanceLock {
    _file: std::fs::File,
}

impl MaintenanceLock {
    fn take(layout: &Layout) -> Result<Self> {
        let root = layout.maintenance_dir();
        fsx::create_dir_all(&root)?;
        let path = root.join(".lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("open", &path, e))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| Error::io("lock", &path, e.into()))?;
        Ok(MaintenanceLock { _file: file })
    }
}

impl History {
    fn start_window(&self, deployment: Option<i64>, opened_ms: i64) -> Result<i64> {
        self.conn
            .execute(
                "INSERT INTO maintenance_windows (deployment_id, opened_ms) VALUES (?1, ?2)",
                params![deployment, opened_ms],
            )
            .map_err(|e| self.fail(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    fn finish_window(&self, id: i64, closed_ms: i64, closed_by: &str) -> Result<()> {
        self.conn
            .execute(
                "UPDATE maintenance_windows SET closed_ms = ?2, closed_by = ?3
                 WHERE id = ?1 AND closed_ms IS NULL",
                params![id, closed_ms, closed_by],
            )
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    /// The window a deployment opened, if it opened one.
    pub fn deployment_window(&self, deployment: i64) -> Result<Option<WindowRecord>> {
        self.conn
            .query_row(
                "SELECT id, deployment_id, opened_ms, closed_ms, closed_by FROM maintenance_windows
                 WHERE deployment_id = ?1 ORDER BY id DESC LIMIT 1",
                params![deployment],
                window_from_row,
            )
            .optional()
            .map_err(|e| self.fail(e))
    }

    /// The last window closed (of a deploy, when `of_deploys`).
    pub fn last_closed_window(&self, of_deploys: bool) -> Result<Option<WindowRecord>> {
        self.conn
            .query_row(
                "SELECT id, deployment_id, opened_ms, closed_ms, closed_by FROM maintenance_windows
                 WHERE closed_ms IS NOT NULL AND (?1 = 0 OR deployment_id IS NOT NULL)
                 ORDER BY id DESC LIMIT 1",
                params![of_deploys],
                window_from_row,
            )
            .optional()
            .map_err(|e| self.fail(e))
    }

    /// How many windows closed, and how many seconds they were open.
    pub fn window_totals(&self) -> Result<(u64, f64)> {
        self.conn
            .query_row(
                "SELECT count(*), coalesce(sum(closed_ms - opened_ms), 0) FROM maintenance_windows
                 WHERE closed_ms IS NOT NULL",
                [],
                |row| {
                    Ok((
                        row.get::<_, i64>(0)? as u64,
                        row.get::<_, i64>(1)? as f64 / 1000.0,
                    ))
                },
            )
            .map_err(|e| self.fail(e))
    }
}

fn window_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<WindowRecord> {
    let opened_ms: i64 = row.get(2)?;
    let closed_ms: Option<i64> = row.get(3)?;
    Ok(WindowRecord {
        id: row.get(0)?,
        deployment: row.get(1)?,
        opened_ms,
        closed_ms,
        closed_by: row.get(4)?,
        seconds: closed_ms.map(|closed| (closed - opened_ms) as f64 / 1000.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(text: &str) -> Vec<String> {
        text.parse::<Allowed>().unwrap().file_names()
    }

    #[test]
    fn an_allowed_network_becomes_the_octet_prefixes_it_spans() {
        assert_eq!(names("203.0.113.7"), ["203.0.113.7"]);
        assert_eq!(names("10.0.0.0/8"), ["10"]);
        assert_eq!(names("10.1.0.0/16"), ["10.1"]);
        assert_eq!(
            names("192.168.4.0/22"),
            ["192.168.4", "192.168.5", "192.168.6", "192.168.7"]
        );
        assert_eq!(names("10.1.2.3/24"), ["10.1.2"], "host bits are dropped");
        assert_eq!(names("10.0.0.0/7"), ["10", "11"]);
        assert_eq!(names("10.0.0.4/31"), ["10.0.0.4", "10.0.0.5"]);
        assert_eq!(names("::1"), ["::1"]);
    }

    #[test]
    fn garbage_is_refused_saying_what_is_wrong() {
        for (text, why) in [
            ("", "not an IP address"),
            ("example.org", "not an IP address"),
            ("10.0.0.0/33", "from 1 to 32"),
            ("10.0.0.0/x", "from 1 to 32"),
            ("0.0.0.0/0", "every client"),
            ("2001:db8::/32", "IPv6 networks"),
            ("10.0.0.1/8/8", "from 1 to 32"),
        ] {
            let error = text.parse::<Allowed>().unwrap_err().to_string();
            assert!(error.contains(why), "{text}: {error}");
            assert!(error.contains(&format!("{text:?}")), "{error}");
        }
    }
}
