//! A fleet's settings: its hosts (`[user@]name[:port]`, as ssh reads them)
//! and how a deploy goes through them.

use std::path::PathBuf;
use std::time::Duration;

/// How long a host keeps a staged release waiting for its switch.
pub const DEFAULT_STAGE_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone)]
pub struct FleetSettings {
    pub hosts: Vec<HostAddress>,
    pub strategy: Strategy,
    pub stage_timeout: Duration,
    /// Hosts staged at once.
    pub parallel: usize,
    /// An ssh config file passed as `ssh -F` (default: the user's own).
    pub ssh_config: Option<PathBuf>,
    /// The zdeploy command on each host.
    pub remote_zdeploy: String,
    /// The host (an index into `hosts`) that builds each release and runs
    /// the `once` steps.
    pub builder: usize,
    pub build_on: BuildOn,
}

/// Where a fleet's releases are built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildOn {
    /// The builder builds; every other host copies its result by digest.
    Builder,
    /// Every host builds from the source itself (`once` steps still run on
    /// the builder only).
    EveryHost,
}

impl BuildOn {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "builder" => Ok(BuildOn::Builder),
            "every-host" => Ok(BuildOn::EveryHost),
            other => Err(format!(
                "unknown build_on '{other}'; use \"builder\" (build once, copy the result) or \"every-host\""
            )),
        }
    }
}

impl FleetSettings {
    /// The words of `zdeploy VERB` on a host.
    pub fn remote(&self, verb: &'static str) -> Vec<&str> {
        let mut words: Vec<&str> = self.remote_zdeploy.split_whitespace().collect();
        words.push(verb);
        words
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Stage on every host, then switch every host within one round trip.
    Atomic,
    /// Stage on every host, then switch batch by batch, each batch's health
    /// checked before the next (`sequential`: batches of one, `delay` apart).
    Rolling {
        batch: Batch,
        wait: Duration,
        on_failure: OnFailure,
    },
}

/// How many hosts switch together in a rolling deploy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batch {
    Count(usize),
    Percent(u8),
}

impl Batch {
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("batch must be a count (2) or a percentage (25%), got '{text}'");
        match text.strip_suffix('%') {
            Some(p) => match p.trim().parse::<u8>() {
                Ok(p @ 1..=100) => Ok(Batch::Percent(p)),
                _ => Err(bad()),
            },
            None => match text.trim().parse::<usize>() {
                Ok(n) if n >= 1 => Ok(Batch::Count(n)),
                _ => Err(bad()),
            },
        }
    }

    /// Hosts per batch in a fleet of `hosts`: at least one.
    pub fn size(self, hosts: usize) -> usize {
        match self {
            Batch::Count(n) => n,
            Batch::Percent(p) => (hosts * p as usize).div_ceil(100),
        }
        .clamp(1, hosts.max(1))
    }
}

/// What a rolling deploy does when a batch fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Switch back every host that switched: the fleet ends where it began.
    Revert,
    /// Leave the switched hosts on the new release and stop.
    Stop,
}

impl OnFailure {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "revert" => Ok(OnFailure::Revert),
            "stop" => Ok(OnFailure::Stop),
            other => Err(format!(
                "on_failure must be \"revert\" or \"stop\", got '{other}'"
            )),
        }
    }
}

/// One host as the user wrote it, checked so ssh can only read it as a
/// destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAddress {
    /// As written: how the host is named in every message.
    pub shown: String,
    pub user: Option<String>,
    pub name: String,
    pub port: Option<u16>,
}

impl HostAddress {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.starts_with('-') {
            return Err(format!(
                "host '{text}' starts with '-', which ssh would read as an option"
            ));
        }
        let (user, rest) = match text.rsplit_once('@') {
            Some((user, rest)) => (Some(user), rest),
            None => (None, text),
        };
        let (name, port) = if let Some(bracketed) = rest.strip_prefix('[') {
            let (name, after) = bracketed
                .split_once(']')
                .ok_or_else(|| format!("host '{text}': '[' without ']'"))?;
            let port = match after {
                "" => None,
                _ => Some(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| format!("host '{text}': expected ':PORT' after ']'"))?,
                ),
            };
            (name, port)
        } else {
            match rest.split_once(':') {
                Some((name, port)) => (name, Some(port)),
                None => (rest, None),
            }
        };
        let port = port
            .map(|p| {
                p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                    format!("host '{text}': port '{p}' is not a number from 1 to 65535")
                })
            })
            .transpose()?;
        let name_ok = !name.is_empty()
            && !name.starts_with('-')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
        if !name_ok {
            return Err(format!(
                "host '{text}': '{name}' is not a host name or address"
            ));
        }
        if let Some(user) = user {
            let user_ok = !user.is_empty()
                && !user.starts_with('-')
                && user
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
            if !user_ok {
                return Err(format!("host '{text}': '{user}' is not a user name"));
            }
        }
        Ok(HostAddress {
            shown: text.to_string(),
            user: user.map(str::to_string),
            name: name.to_string(),
            port,
        })
    }

    /// The destination ssh is given: `[user@]name`.
    pub fn destination(&self) -> String {
        match &self.user {
            Some(user) => format!("{user}@{}", self.name),
            None => self.name.clone(),
        }
    }

    /// An `ssh://` URL of `path` on this host, for git.
    pub fn ssh_url(&self, path: &std::path::Path) -> String {
        let name = if self.name.contains(':') {
            format!("[{}]", self.name)
        } else {
            self.name.clone()
        };
        let user = self
            .user
            .as_ref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        format!("ssh://{user}{name}{port}{}", path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_counts_or_percentages_of_at_least_one_host() {
        assert_eq!(Batch::parse("2").unwrap().size(5), 2);
        assert_eq!(Batch::parse("25%").unwrap().size(5), 2);
        assert_eq!(Batch::parse("1%").unwrap().size(5), 1);
        assert_eq!(Batch::parse("100%").unwrap().size(5), 5);
        assert_eq!(Batch::parse("9").unwrap().size(3), 3);
        for bad in ["0", "0%", "101%", "-1", "two", "", "%"] {
            assert!(Batch::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn hosts_parse_as_ssh_reads_them_and_options_are_refused() {
        let plain = HostAddress::parse("web1.example.com").unwrap();
        assert_eq!((plain.user.as_deref(), plain.port), (None, None));
        let full = HostAddress::parse("deploy@web2.example.com:2222").unwrap();
        assert_eq!(full.destination(), "deploy@web2.example.com");
        assert_eq!(full.port, Some(2222));
        let v6 = HostAddress::parse("[fd00::5]:22").unwrap();
        assert_eq!(v6.name, "fd00::5");
        assert_eq!(
            v6.ssh_url(std::path::Path::new("/srv/m.git")),
            "ssh://[fd00::5]:22/srv/m.git"
        );
        for hostile in [
            "-oProxyCommand=touch /tmp/x",
            "deploy@-oProxyCommand=x",
            "-deploy@web",
            "web1:0",
            "web1:99999",
            "web 1",
            "web1;reboot",
            "",
            "@web1",
        ] {
            assert!(HostAddress::parse(hostile).is_err(), "{hostile} accepted");
        }
    }
}
