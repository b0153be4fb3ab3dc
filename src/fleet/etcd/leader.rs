//! The fleet's one decider: the agent whose lease holds the leader's key.
//! It alone polls the repository and takes the triggers any agent (or the
//! CLI) hands it through etcd; it resolves the commit and the release name
//! once, records the deploy with the live members it waits for, and records
//! commit or abort when their reports say so. Every write it makes holds
//! only while its lease still holds the leader's key, so a leader that lost
//! it changes nothing; a new leader finishes what the record says.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use zdeploy_core::history::now_ms;
use zdeploy_core::release::{release_name, short};
use zdeploy_core::source::Source;

use super::changes::Changes;
use super::decision::{Decision, decide, on_takeover};
use super::part::Part;
use super::records::{
    Committed, DeployRecord, Outcome, Phase, StageReport, TriggerOutcome, TriggerRecord,
};
use super::store::json;
use crate::fleet::settings::BuildOn;

/// How often the leader looks again when nothing changed (stage timeouts,
/// the poll interval).
const TICK: Duration = Duration::from_millis(250);
/// How long an outcome waits in etcd for whoever asked.
const OUTCOME_TTL: Duration = Duration::from_secs(600);
/// Committed releases remembered for rollbacks.
const HISTORY_KEPT: u64 = 100;

/// This host campaigning for, and holding, the fleet's lead.
pub struct Leader<'a> {
    pub part: &'a Part<'a>,
}

/// What the leader keeps between looks.
#[derive(Default)]
struct Lead {
    leading: bool,
    last_poll: Option<Instant>,
    /// A commit whose deploy was aborted: polling does not retry it.
    failed_commit: Option<String>,
}

impl Leader<'_> {
    /// Campaign, and lead while this host holds the key, until this future
    /// is dropped.
    pub async fn serve(&self) {
        let mut lead = Lead::default();
        let mut changes = Changes::of(vec![(self.part.store.keys.all(), true)]);
        loop {
            changes.open(self.part.store).await;
            match self.part.store.campaign(self.part.lease).await {
                Ok(true) => {
                    if !lead.leading {
                        lead.leading = true;
                        (self.part.log)(
                            "info",
                            &format!("{} leads the fleet", self.part.store.name),
                        );
                        self.part.view.lock().expect("member view lock").leader =
                            Some(self.part.store.name.clone());
                        if let Err(e) = self.take_over().await {
                            (self.part.log)("warn", &format!("{e:#}"));
                        }
                    }
                    if let Err(e) = self.look(&mut lead).await {
                        (self.part.log)("warn", &format!("the fleet waits: {e:#}"));
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                Ok(false) => lead.leading = false,
                Err(e) => {
                    lead.leading = false;
                    tracing::debug!(error = %format!("{e:#}"), "campaign failed");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            let wait = if lead.leading {
                TICK
            } else {
                Duration::from_secs(1)
            };
            changes.wait(wait).await;
        }
    }

    /// A deploy the previous leader left undecided is aborted: commit was
    /// never recorded, so no host switched.
    async fn take_over(&self) -> Result<()> {
        let Some((record, _)) = self
            .part
            .store
            .get::<DeployRecord>(&self.part.store.keys.deploy())
            .await?
        else {
            return Ok(());
        };
        if let Some(Decision::Abort(why)) = on_takeover(&record) {
            self.abort(record, why).await?;
        }
        Ok(())
    }

    async fn look(&self, lead: &mut Lead) -> Result<()> {
        let keys = &self.part.store.keys;
        let deploy = self
            .part
            .store
            .get::<DeployRecord>(&keys.deploy())
            .await?
            .map(|(d, _)| d);
        if let Some(record) = deploy.as_ref().filter(|d| d.phase == Phase::Staging) {
            let reports: BTreeMap<String, StageReport> = self
                .part
                .store
                .list(&keys.stage_reports(record.id))
                .await?
                .into_iter()
                .collect();
            let alive: BTreeSet<String> = self
                .part
                .store
                .names(&keys.members())
                .await?
                .into_iter()
                .collect();
            match decide(
                record,
                &reports,
                &alive,
                now_ms(),
                self.part.membership.stage_timeout,
            ) {
                Decision::Wait => {}
                Decision::Commit => self.commit(record.clone()).await?,
                Decision::Abort(why) => {
                    lead.failed_commit = Some(record.commit.clone());
                    self.abort(record.clone(), why).await?
                }
            }
            return Ok(());
        }
        let mut triggers: Vec<TriggerRecord> = self
            .part
            .store
            .list::<TriggerRecord>(&keys.triggers())
            .await?
            .into_iter()
            .map(|(_, t)| t)
            .collect();
        triggers.sort_by_key(|t| (t.at_ms, t.id.clone()));
        if triggers.is_empty() && self.poll_due(lead) {
            lead.last_poll = Some(Instant::now());
            let head = self.remote_head().await?;
            let committed = self.committed().await?;
            let moved = committed.as_ref().is_none_or(|c| c.commit != head);
            if moved && lead.failed_commit.as_deref() != Some(head.as_str()) {
                (self.part.log)(
                    "info",
                    &format!("the remote moved to {}; deploying", short(&head)),
                );
                let poll = TriggerRecord {
                    id: format!("poll-{}", now_ms()),
                    trigger: "poll".into(),
                    force: false,
                    commit: Some(head),
                    rollback: false,
                    release: None,
                    at_ms: now_ms(),
                };
                return self.start(vec![poll], deploy.as_ref()).await;
            }
            return Ok(());
        }
        if triggers.is_empty() {
            return Ok(());
        }
        // A rollback is served alone; deploys asked in a row share one.
        let taken: Vec<TriggerRecord> = if triggers[0].rollback {
            triggers.truncate(1);
            triggers
        } else {
            triggers.into_iter().take_while(|t| !t.rollback).collect()
        };
        if taken.iter().any(|t| t.force || !t.rollback) {
            lead.failed_commit = None;
        }
        self.start(taken, deploy.as_ref()).await
    }

    fn poll_due(&self, lead: &Lead) -> bool {
        let Some(interval) = self.part.config.automation.interval else {
            return false;
        };
        lead.last_poll.is_none_or(|at| at.elapsed() >= interval)
    }

    async fn committed(&self) -> Result<Option<Committed>> {
        Ok(self
            .part
            .store
            .get::<Committed>(&self.part.store.keys.committed())
            .await?
            .map(|(c, _)| c))
    }

    /// The commit the app's ref names on its remote now.
    async fn remote_head(&self) -> Result<String> {
        let Some(Source::Git { url }) = self.part.config.source.clone() else {
            bail!("a fleet in etcd deploys from git");
        };
        let reference = self.part.config.reference.clone();
        let shown = self
            .part
            .config
            .source
            .as_ref()
            .map(Source::shown)
            .unwrap_or_default();
        tokio::task::spawn_blocking(move || {
            zdeploy_core::source::git::remote_head(&url, reference.as_deref(), &shown)
                .map_err(anyhow::Error::from)?
                .with_context(|| match &reference {
                    Some(r) => format!("{shown} has no branch or tag '{r}'"),
                    None => format!("{shown} has no HEAD"),
                })
        })
        .await
        .context("ask the remote")?
    }

    /// Record a deploy for `triggers`, or answer them when there is nothing
    /// to do.
    async fn start(&self, triggers: Vec<TriggerRecord>, last: Option<&DeployRecord>) -> Result<()> {
        let keys = &self.part.store.keys;
        let requests: Vec<String> = triggers.iter().map(|t| t.id.clone()).collect();
        let shown: Vec<&str> = triggers.iter().map(|t| t.trigger.as_str()).collect();
        let trigger = shown.join(", ");
        let committed = self.committed().await?;
        let first = &triggers[0];
        let target = if first.rollback {
            self.rollback_target(first, committed.as_ref()).await
        } else {
            self.deploy_target(&triggers, committed.as_ref()).await
        };
        let consumed: Vec<(String, bool)> = triggers
            .iter()
            .filter(|t| !t.id.starts_with("poll-"))
            .map(|t| (keys.trigger(&t.id), false))
            .collect();
        let (release, commit) = match target {
            Ok(Some(target)) => target,
            Ok(None) => {
                let live = committed.as_ref();
                let outcome = Outcome {
                    deploy: live.map(|c| c.deploy),
                    outcome: TriggerOutcome::Unchanged,
                    release: live.map(|c| c.release.clone()),
                    commit: live.map(|c| c.commit.clone()),
                    error: None,
                };
                return self.answer(&requests, &outcome, Vec::new(), consumed).await;
            }
            Err(e) => {
                let outcome = Outcome {
                    deploy: None,
                    outcome: TriggerOutcome::Failed,
                    release: None,
                    commit: None,
                    error: Some(format!("{e:#}")),
                };
                (self.part.log)("warn", &format!("cannot deploy for {trigger}: {e:#}"));
                return self.answer(&requests, &outcome, Vec::new(), consumed).await;
            }
        };
        let mut members = self.part.store.names(&keys.members()).await?;
        members.sort();
        let leader = self.part.store.name.clone();
        // The named builder while it is alive, else this host.
        let builder = self
            .part
            .membership
            .builder
            .clone()
            .filter(|named| members.contains(named))
            .unwrap_or_else(|| leader.clone());
        let record = DeployRecord {
            id: last.map_or(1, |d| d.id + 1),
            release: release.clone(),
            commit: commit.clone(),
            rollback: first.rollback,
            trigger: trigger.clone(),
            requests,
            members: members.clone(),
            leader,
            builder: Some(builder),
            every_host_builds: self.part.membership.build_on == BuildOn::EveryHost,
            phase: Phase::Staging,
            started_ms: now_ms(),
            decided_ms: None,
            why: None,
        };
        let mut deletes = consumed;
        deletes.push((keys.all_stage_reports(), true));
        deletes.push((keys.all_windows(), true));
        let written = self
            .part
            .store
            .as_leader(
                self.part.lease,
                vec![(keys.deploy(), json(&record), None)],
                deletes,
            )
            .await?;
        if written {
            (self.part.log)(
                "info",
                &format!(
                    "fleet deploy #{}: {} of commit {} on {} ({trigger})",
                    record.id,
                    release,
                    short(&commit),
                    members.join(", ")
                ),
            );
        }
        Ok(())
    }

    /// Release and commit for deploy triggers; `None` when the commit is
    /// committed already and no trigger forces it.
    async fn deploy_target(
        &self,
        triggers: &[TriggerRecord],
        committed: Option<&Committed>,
    ) -> Result<Option<(String, String)>> {
        let commit = match self.remote_head().await {
            Ok(head) => head,
            Err(e) => match triggers.iter().rev().find_map(|t| t.commit.clone()) {
                Some(named) => named,
                None => return Err(e),
            },
        };
        let force = triggers.iter().any(|t| t.force);
        if committed.is_some_and(|c| c.commit == commit) && !force {
            return Ok(None);
        }
        // Names are timestamps of whole seconds, in the order they sort:
        // a new one comes after every name the fleet ever used (a rollback
        // makes an older release live while newer ones stay on disk).
        let keys = &self.part.store.keys;
        let mut used: Vec<String> = self
            .part
            .store
            .list::<Committed>(&keys.history())
            .await?
            .into_iter()
            .map(|(_, c)| c.release)
            .collect();
        if let Some((last, _)) = self.part.store.get::<DeployRecord>(&keys.deploy()).await? {
            used.push(last.release);
        }
        let newest = used.into_iter().max();
        let context = self.part.config.layout.context().to_string();
        let mut release = release_name(&context, jiff::Timestamp::now());
        while newest.as_ref().is_some_and(|n| &release <= n) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            release = release_name(&context, jiff::Timestamp::now());
        }
        Ok(Some((release, commit)))
    }

    /// The release a rollback asks for (by name, or the one committed
    /// before the current), with its commit from the fleet's history.
    async fn rollback_target(
        &self,
        trigger: &TriggerRecord,
        committed: Option<&Committed>,
    ) -> Result<Option<(String, String)>> {
        let history: Vec<Committed> = self
            .part
            .store
            .list::<Committed>(&self.part.store.keys.history())
            .await?
            .into_iter()
            .map(|(_, c)| c)
            .collect();
        let current = committed.map(|c| c.release.as_str());
        let found = match &trigger.release {
            Some(name) => history.iter().rev().find(|c| &c.release == name),
            None => history
                .iter()
                .rev()
                .find(|c| Some(c.release.as_str()) != current),
        };
        let Some(target) = found else {
            match &trigger.release {
                Some(name) => bail!("the fleet never committed a release named {name}"),
                None => bail!("the fleet has no earlier release to roll back to"),
            }
        };
        if Some(target.release.as_str()) == current {
            return Ok(None);
        }
        Ok(Some((target.release.clone(), target.commit.clone())))
    }

    /// Every member staged: switch now. One write records commit, the
    /// committed release, the history entry and the outcomes.
    async fn commit(&self, record: DeployRecord) -> Result<()> {
        let keys = &self.part.store.keys;
        zdeploy_core::failpoint::hit("fleet.commit");
        let at = now_ms();
        let committed = Committed {
            deploy: record.id,
            release: record.release.clone(),
            commit: record.commit.clone(),
            at_ms: at,
        };
        let decided = DeployRecord {
            phase: Phase::Commit,
            decided_ms: Some(at),
            ..record
        };
        let outcome = Outcome {
            deploy: Some(decided.id),
            outcome: TriggerOutcome::Deployed,
            release: Some(decided.release.clone()),
            commit: Some(decided.commit.clone()),
            error: None,
        };
        let mut puts = vec![
            (keys.deploy(), json(&decided), None),
            (keys.committed(), json(&committed), None),
            (keys.history_entry(decided.id), json(&committed), None),
        ];
        let outcome_lease = self.part.store.grant(OUTCOME_TTL).await?;
        for request in &decided.requests {
            puts.push((keys.outcome(request), json(&outcome), Some(outcome_lease)));
        }
        let forgotten = decided
            .id
            .checked_sub(HISTORY_KEPT)
            .map(|old| (keys.history_entry(old), false));
        if self
            .part
            .store
            .as_leader(self.part.lease, puts, forgotten.into_iter().collect())
            .await?
        {
            zdeploy_core::failpoint::hit("fleet.committed");
            (self.part.log)(
                "info",
                &format!(
                    "fleet deploy #{}: commit recorded; every host switches to {}",
                    decided.id, decided.release
                ),
            );
        }
        Ok(())
    }

    async fn abort(&self, record: DeployRecord, why: String) -> Result<()> {
        let keys = &self.part.store.keys;
        let outcome = Outcome {
            deploy: Some(record.id),
            outcome: TriggerOutcome::Aborted,
            release: None,
            commit: Some(record.commit.clone()),
            error: Some(why.clone()),
        };
        let decided = DeployRecord {
            phase: Phase::Abort,
            decided_ms: Some(now_ms()),
            why: Some(why.clone()),
            ..record
        };
        let mut puts = vec![(keys.deploy(), json(&decided), None)];
        let outcome_lease = self.part.store.grant(OUTCOME_TTL).await?;
        for request in &decided.requests {
            puts.push((keys.outcome(request), json(&outcome), Some(outcome_lease)));
        }
        if self
            .part
            .store
            .as_leader(self.part.lease, puts, Vec::new())
            .await?
        {
            (self.part.log)(
                "warn",
                &format!("fleet deploy #{} aborted: {why}", decided.id),
            );
        }
        Ok(())
    }

    /// Answer triggers that need no deploy.
    async fn answer(
        &self,
        requests: &[String],
        outcome: &Outcome,
        mut puts: Vec<(String, Vec<u8>, Option<i64>)>,
        deletes: Vec<(String, bool)>,
    ) -> Result<()> {
        let outcome_lease = self.part.store.grant(OUTCOME_TTL).await?;
        for request in requests {
            puts.push((
                self.part.store.keys.outcome(request),
                json(outcome),
                Some(outcome_lease),
            ));
        }
        self.part
            .store
            .as_leader(self.part.lease, puts, deletes)
            .await?;
        Ok(())
    }
}
