//! What an agent's part in one app's fleet works with, as member and as
//! candidate leader: its etcd client and lease, the app's config and
//! membership, the view it keeps for `/ready` and the dashboard, and where
//! it logs.

use std::sync::{Arc, Mutex};

use super::member::MemberView;
use super::settings::Membership;
use super::store::Store;
use crate::config::AppConfig;

pub struct Part<'a> {
    pub store: &'a Store,
    /// The lease this host is registered (and may lead) under.
    pub lease: i64,
    pub config: Arc<AppConfig>,
    pub membership: &'a Membership,
    /// The agent's bearer token, which other members' agents ask for
    /// before they let this host copy a release.
    pub token: Option<String>,
    pub view: &'a Mutex<MemberView>,
    /// Each line to log, with its level, for the agent's event stream.
    pub log: &'a (dyn Fn(&str, &str) + Sync),
    /// Tell whoever shows the view (the dashboard) that it changed.
    pub changed: &'a (dyn Fn() + Sync),
}

impl Part<'_> {
    /// Change the view, and say so if that changed what it shows.
    pub fn update(&self, change: impl FnOnce(&mut MemberView)) {
        let mut view = self.view.lock().expect("member view lock");
        let before = serde_json::to_value(&*view).ok();
        change(&mut view);
        let changed = serde_json::to_value(&*view).ok() != before;
        drop(view);
        if changed {
            (self.changed)();
        }
    }
}
