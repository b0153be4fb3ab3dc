//! Every key a fleet keeps in etcd, in one place: under
//! `<prefix>/<app>/` the members (each under its host's lease), the leader
//! (under the leader's lease), the deploy being decided, the committed
//! release, each member's stage report and status, triggers handed to the
//! leader, their outcomes, the committed releases in order, the runs of
//! the `once` steps, and the maintenance windows a deploy's members opened.

/// The keys of one app's fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    base: String,
}

impl Keys {
    pub fn new(prefix: &str, app: &str) -> Keys {
        Keys {
            base: format!("{prefix}/{app}"),
        }
    }

    /// Every key of the fleet.
    pub fn all(&self) -> String {
        format!("{}/", self.base)
    }

    pub fn members(&self) -> String {
        format!("{}/members/", self.base)
    }

    pub fn member(&self, host: &str) -> String {
        format!("{}{host}", self.members())
    }

    pub fn leader(&self) -> String {
        format!("{}/leader", self.base)
    }

    /// The deploy being decided, or the last one decided.
    pub fn deploy(&self) -> String {
        format!("{}/deploy", self.base)
    }

    /// The release every host must serve.
    pub fn committed(&self) -> String {
        format!("{}/committed", self.base)
    }

    pub fn stage_reports(&self, deploy: u64) -> String {
        format!("{}/staged/{deploy}/", self.base)
    }

    pub fn stage_report(&self, deploy: u64, host: &str) -> String {
        format!("{}{host}", self.stage_reports(deploy))
    }

    /// Every deploy's stage reports (the leader clears old ones).
    pub fn all_stage_reports(&self) -> String {
        format!("{}/staged/", self.base)
    }

    pub fn statuses(&self) -> String {
        format!("{}/status/", self.base)
    }

    pub fn status(&self, host: &str) -> String {
        format!("{}{host}", self.statuses())
    }

    pub fn triggers(&self) -> String {
        format!("{}/triggers/", self.base)
    }

    pub fn trigger(&self, id: &str) -> String {
        format!("{}{id}", self.triggers())
    }

    pub fn outcome(&self, trigger: &str) -> String {
        format!("{}/outcomes/{trigger}", self.base)
    }

    pub fn history(&self) -> String {
        format!("{}/history/", self.base)
    }

    /// Zero-padded, so the history lists in deploy order.
    pub fn history_entry(&self, deploy: u64) -> String {
        format!("{}{deploy:020}", self.history())
    }

    /// The last run of the `once` steps for `commit`: who, in which deploy,
    /// and how it ended.
    pub fn once_run(&self, commit: &str) -> String {
        format!("{}/once/{commit}", self.base)
    }

    /// Held, under the builder's lease, while the `once` steps for `commit`
    /// run: no second host starts them.
    pub fn once_running(&self, commit: &str) -> String {
        format!("{}/once-running/{commit}", self.base)
    }

    /// Written by a deploy's builder about to run a step that needs a
    /// maintenance window: every member opens its own.
    pub fn window(&self, deploy: u64) -> String {
        format!("{}/windows/{deploy}/asked", self.base)
    }

    /// The members whose window is open for `deploy`.
    pub fn windows_open(&self, deploy: u64) -> String {
        format!("{}/windows/{deploy}/open/", self.base)
    }

    pub fn window_open(&self, deploy: u64, host: &str) -> String {
        format!("{}{host}", self.windows_open(deploy))
    }

    /// Every deploy's window keys (the leader clears old ones).
    pub fn all_windows(&self) -> String {
        format!("{}/windows/", self.base)
    }

    /// What is left of `key` after `prefix` (a member's or host's name).
    pub fn name_in(key: &[u8], prefix: &str) -> Option<String> {
        std::str::from_utf8(key)
            .ok()?
            .strip_prefix(prefix)
            .map(str::to_string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_nest_under_the_prefix_and_app() {
        let keys = Keys::new("/zdeploy", "shop");
        assert_eq!(keys.member("web1"), "/zdeploy/shop/members/web1");
        assert_eq!(keys.stage_report(7, "web2"), "/zdeploy/shop/staged/7/web2");
        assert_eq!(
            keys.history_entry(12),
            "/zdeploy/shop/history/00000000000000000012"
        );
        assert_eq!(
            Keys::name_in(b"/zdeploy/shop/members/web1", &keys.members()),
            Some("web1".into())
        );
        assert_eq!(Keys::name_in(b"/other/web1", &keys.members()), None);
    }
}
