//! Asking a fleet in etcd for a deploy or rollback, from any agent (a
//! webhook it received, the API, its trigger queue) or the CLI: a trigger
//! is written for the leader, and the asker waits for its outcome. Without
//! quorum the trigger cannot be written: the asker keeps trying and says
//! why, and the sites keep serving what they serve.

use std::time::Duration;

use anyhow::{Result, bail};
use zdeploy_core::history::now_ms;

use super::records::{Outcome, TriggerRecord};
use super::store::Store;

/// A trigger nobody took (no leader for this long) leaves etcd by itself.
const TRIGGER_TTL: Duration = Duration::from_secs(3600);
const RETRY: Duration = Duration::from_millis(500);

/// A fresh trigger id: the time, the asker and a counter.
pub fn trigger_id(asker: &str) -> String {
    static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!(
        "{:013}-{asker}-{}-{}",
        now_ms(),
        std::process::id(),
        SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// Hand `trigger` to the leader and wait up to `wait` for its outcome;
/// `on_wait` hears why it is still waiting (once per reason).
pub async fn ask(
    store: &Store,
    trigger: &TriggerRecord,
    wait: Duration,
    on_wait: &(dyn Fn(&str) + Sync),
) -> Result<Outcome> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut said = String::new();
    let mut say = |why: String| {
        if why != said {
            on_wait(&why);
            said = why;
        }
    };
    loop {
        let written = async {
            let lease = store.grant(TRIGGER_TTL).await?;
            store
                .put(&store.keys.trigger(&trigger.id), trigger, Some(lease))
                .await
        }
        .await;
        match written {
            Ok(()) => break,
            Err(e) => say(format!("waiting for etcd to take the request: {e:#}")),
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("etcd did not take the request in time: {said}");
        }
        tokio::time::sleep(RETRY).await;
    }
    let key = store.keys.outcome(&trigger.id);
    loop {
        match store.get::<Outcome>(&key).await {
            Ok(Some((outcome, _))) => return Ok(outcome),
            Ok(None) => match store.leader().await {
                Ok(None) => say("waiting for the fleet to elect a leader".into()),
                Ok(Some(leader)) => say(format!("{leader} leads; waiting for the deploy")),
                Err(e) => say(format!("waiting for etcd: {e:#}")),
            },
            Err(e) => say(format!("waiting for etcd: {e:#}")),
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("no outcome in time ({said}); the request stays with the fleet");
        }
        tokio::time::sleep(RETRY).await;
    }
}
