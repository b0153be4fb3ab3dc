//! Notice of changes to a few keys in etcd, for loops that look at the
//! fleet's records again when they change: one watch, opened before the
//! look it guards (so no change between the look and the wait is missed),
//! and opened again whenever it breaks.

use std::time::Duration;

use anyhow::{Context, Result};
use etcd_client::{WatchOptions, WatchStream};

use super::store::Store;

/// How long to pause when etcd cannot be watched now.
const WATCH_RETRY: Duration = Duration::from_millis(500);

pub struct Changes {
    /// Each key, and whether everything under it counts.
    keys: Vec<(String, bool)>,
    stream: Option<WatchStream>,
}

impl Changes {
    pub fn of(keys: Vec<(String, bool)>) -> Self {
        assert!(!keys.is_empty(), "a key to watch");
        Changes { keys, stream: None }
    }

    /// Watch from now on, if not watching already: call before looking.
    pub async fn open(&mut self, store: &Store) {
        if self.stream.is_none() {
            self.stream = self.watch(store).await.ok();
        }
    }

    /// Until one of the keys changes or `limit` passed; a short pause
    /// when there is no watch (etcd could not be reached).
    pub async fn wait(&mut self, limit: Duration) {
        let Some(stream) = self.stream.as_mut() else {
            tokio::time::sleep(limit.min(WATCH_RETRY)).await;
            return;
        };
        if let Ok(Err(_) | Ok(None)) = tokio::time::timeout(limit, stream.message()).await {
            self.stream = None;
        }
    }

    async fn watch(&self, store: &Store) -> Result<WatchStream> {
        let (first, rest) = self.keys.split_first().expect("a key to watch");
        let mut stream = store.watch(&first.0, first.1).await?;
        for (key, prefix) in rest {
            let options = prefix.then(|| WatchOptions::new().with_prefix());
            stream
                .watch(key.as_str(), options)
                .await
                .with_context(|| format!("watch {key} in etcd"))?;
        }
        Ok(stream)
    }
}
