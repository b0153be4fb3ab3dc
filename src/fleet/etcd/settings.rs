//! How an agent joins a fleet whose agents agree through etcd: the
//! `[fleet]` table (the cluster's endpoints, TLS and credentials from files,
//! this host's name, the key prefix), validated once, and each app's
//! `fleet = true`.

use std::path::PathBuf;
use std::time::Duration;

use crate::fleet::settings::BuildOn;

/// Keys of every fleet live under this prefix unless `prefix` says otherwise.
pub const DEFAULT_PREFIX: &str = "/zdeploy";
/// How long a host's registration and the leader's key outlive the agent
/// that holds them: a dead host leaves the members, a dead leader is
/// replaced, within this.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdSettings {
    /// `http(s)://host:port` of each etcd member.
    pub endpoints: Vec<String>,
    /// This host's name among the fleet's members.
    pub name: String,
    pub prefix: String,
    pub tls: Option<TlsFiles>,
    /// User name and the file holding its password.
    pub auth: Option<(String, PathBuf)>,
    pub lease_ttl: Duration,
    /// The URL other members reach this host's agent at (`advertise`);
    /// else its listen address, or the address it reaches etcd from.
    pub advertise: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    /// Client certificate and key, for clusters that ask for one.
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// An app served by a fleet in etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub etcd: EtcdSettings,
    /// How long the leader waits for every live member to stage, and a
    /// member keeps a staged release waiting for the decision.
    pub stage_timeout: Duration,
    /// The member that builds each release and runs the `once` steps
    /// (`builder`); the leader's host when unset or not alive.
    pub builder: Option<String>,
    pub build_on: BuildOn,
}

/// An etcd endpoint as written in the config: `http(s)://host:port`.
pub fn validate_endpoint(endpoint: &str) -> Result<(), String> {
    let rest = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
        .ok_or_else(|| format!("'{endpoint}' is not an http:// or https:// URL"))?;
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("'{endpoint}' has no port (etcd listens on 2379)"))?;
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'));
    if !host_ok || port.parse::<u16>().is_err() {
        return Err(format!("'{endpoint}' is not host:port after the scheme"));
    }
    Ok(())
}

/// An agent's advertised URL: `http(s)://host:port`, nothing after.
pub fn validate_advertise(url: &str) -> Result<(), String> {
    validate_endpoint(url.trim_end_matches('/')).map_err(|_| {
        format!("'{url}' is not an http:// or https:// URL of host:port (the agent's address)")
    })
}

/// A member name: what it is shown as and keyed by.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{name}' is not a host name (letters, digits, '.', '-', '_'; at most 63)"
        ))
    }
}

/// The key prefix: absolute, no trailing slash, nothing a key cannot hold.
pub fn validate_prefix(prefix: &str) -> Result<(), String> {
    let ok = prefix.starts_with('/')
        && !prefix.ends_with('/')
        && !prefix.contains("//")
        && prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{prefix}' is not a key prefix such as /zdeploy (absolute, no trailing '/')"
        ))
    }
}

/// This machine's host name, the default member name.
pub fn host_name() -> Result<String, String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_err(|e| format!("cannot read this host's name ({e}); set fleet.name"))?;
    Ok(name.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_names_and_prefixes_are_checked() {
        for good in [
            "http://10.0.0.5:2379",
            "https://etcd-1.internal:2379",
            "http://[::1]:2379",
        ] {
            assert_eq!(validate_endpoint(good), Ok(()), "{good}");
        }
        for bad in [
            "10.0.0.5:2379",
            "http://10.0.0.5",
            "ftp://x:1",
            "http://a b:1",
            "http://x:99999",
        ] {
            assert!(validate_endpoint(bad).is_err(), "{bad}");
        }
        assert!(validate_name("web-1.dc2").is_ok());
        for bad in ["", "-oProxy", "a/b", "a b", &"x".repeat(64)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        assert!(validate_prefix("/zdeploy/prod").is_ok());
        for bad in ["zdeploy", "/zdeploy/", "/a//b", "/a b"] {
            assert!(validate_prefix(bad).is_err(), "{bad}");
        }
    }
}
