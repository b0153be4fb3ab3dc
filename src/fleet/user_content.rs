//! User content that differs between a fleet's hosts: uploads land on the
//! host that took the request, so hosts that serve one release can still
//! serve different files. Each host lists the user files its last carry
//! placed (no extra walk); equal digests mean equal lists, and where they
//! differ the lists name the files a host holds that another lacks.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;
use zdeploy_core::user_content::{UserContentSummary, parse_list};

use crate::config::AppConfig;
use crate::fleet::parallel::on_each;
use crate::fleet::ssh::Connection;

/// How many paths a message names per host.
const SAMPLE: usize = 3;

/// A host holding user files some other host lacks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Divergence {
    pub host: String,
    pub files: usize,
    /// A few of them.
    pub sample: Vec<PathBuf>,
}

/// Whether the hosts' summaries (one per host, `None` when a host has no
/// list of its live release) say their user content may differ.
pub fn may_differ(summaries: &[Option<UserContentSummary>]) -> bool {
    let digests: Vec<Option<&str>> = summaries
        .iter()
        .map(|s| s.as_ref().map(|s| s.digest.as_str()))
        .collect();
    digests.iter().all(Option::is_some) && digests.iter().any(|d| *d != digests[0])
}

/// Each host (name, its user files) holding files another host lacks.
pub fn divergences(lists: &[(String, Vec<PathBuf>)]) -> Vec<Divergence> {
    let sets: Vec<BTreeSet<&PathBuf>> = lists.iter().map(|(_, l)| l.iter().collect()).collect();
    lists
        .iter()
        .enumerate()
        .filter_map(|(i, (host, list))| {
            let lacked: Vec<&PathBuf> = list
                .iter()
                .filter(|path| {
                    sets.iter()
                        .enumerate()
                        .any(|(j, other)| j != i && !other.contains(path))
                })
                .collect();
            (!lacked.is_empty()).then(|| Divergence {
                host: host.clone(),
                files: lacked.len(),
                sample: lacked
                    .iter()
                    .take(SAMPLE)
                    .map(|p| p.to_path_buf())
                    .collect(),
            })
        })
        .collect()
}

/// One line for people.
pub fn describe(divergences: &[Divergence]) -> String {
    let hosts: Vec<String> = divergences
        .iter()
        .map(|d| {
            let sample: Vec<String> = d.sample.iter().map(|p| p.display().to_string()).collect();
            format!(
                "{} holds {} user file{} another host lacks ({}{})",
                d.host,
                d.files,
                if d.files == 1 { "" } else { "s" },
                sample.join(", "),
                if d.files > d.sample.len() {
                    ", …"
                } else {
                    ""
                }
            )
        })
        .collect();
    format!(
        "user content differs between hosts: {}; uploads land on whichever host took the request, so keep them on shared storage (README: Fleets)",
        hosts.join("; ")
    )
}

/// Read each host's list of user files over its connection.
pub fn fetch_lists(
    app: &AppConfig,
    connections: &[&Connection],
) -> Result<Vec<(String, Vec<PathBuf>)>> {
    let list = app.layout.user_content_list().display().to_string();
    on_each(connections, |connection| {
        let output = connection
            .command(&["cat", "--", &list])
            .stdin(std::process::Stdio::null())
            .output()?;
        if !output.status.success() {
            anyhow::bail!(
                "{}: cannot read {list}: {}",
                connection.host.shown,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok((connection.host.shown.clone(), parse_list(&output.stdout)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    type HostList = (String, Vec<PathBuf>);
    /// Each host's list, and the hosts named with how many files.
    type Case = (Vec<HostList>, Vec<(&'static str, usize)>);

    fn host(name: &str, paths: &[&str]) -> HostList {
        (name.into(), paths.iter().map(PathBuf::from).collect())
    }

    #[test]
    fn hosts_holding_files_another_lacks_are_named() {
        let cases: Vec<Case> = vec![
            (vec![host("a", &["x", "y"]), host("b", &["x", "y"])], vec![]),
            (
                vec![host("a", &["x", "y"]), host("b", &["x"])],
                vec![("a", 1)],
            ),
            (
                vec![
                    host("a", &["x", "y"]),
                    host("b", &["x", "z"]),
                    host("c", &["x", "y", "z"]),
                ],
                vec![("a", 1), ("b", 1), ("c", 2)],
            ),
            (
                vec![host("a", &[]), host("b", &["u1", "u2", "u3", "u4"])],
                vec![("b", 4)],
            ),
        ];
        for (lists, expected) in cases {
            let found: Vec<(String, usize)> = divergences(&lists)
                .into_iter()
                .map(|d| (d.host, d.files))
                .collect();
            let expected: Vec<(String, usize)> = expected
                .into_iter()
                .map(|(h, n)| (h.to_string(), n))
                .collect();
            assert_eq!(found, expected, "{lists:?}");
        }
        let named = divergences(&[host("a", &[]), host("b", &["u1", "u2", "u3", "u4"])]);
        assert_eq!(named[0].sample.len(), SAMPLE);
        assert!(
            describe(&named).contains("b holds 4 user files another host lacks (u1, u2, u3, …)")
        );
    }

    #[test]
    fn summaries_differ_only_when_every_host_has_one() {
        let summary = |digest: &str| {
            Some(UserContentSummary {
                release: "R".into(),
                files: 1,
                digest: digest.into(),
                at_ms: 0,
            })
        };
        assert!(!may_differ(&[summary("a"), summary("a")]));
        assert!(may_differ(&[summary("a"), summary("b")]));
        assert!(!may_differ(&[summary("a"), None]));
    }
}
