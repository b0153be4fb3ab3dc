//! How an app is deployed, chosen once when its config is loaded: on this
//! host alone, by a controller over OpenSSH to its hosts, by agents that
//! agree through etcd, or as one host's part of a fleet run on the orders
//! of its controller or leader. Commands match on it; nothing past loading
//! asks again.

use crate::fleet::etcd::settings::Membership;
use crate::fleet::settings::FleetSettings;

#[derive(Debug, Clone)]
pub enum Topology {
    /// This host alone.
    OneHost,
    /// `hosts = [...]`: a controller deploys to every host over ssh.
    Ssh(FleetSettings),
    /// `fleet = true`: the agents of every host agree through etcd.
    Etcd(Membership),
    /// One host's part of a fleet run: the config names a fleet, and this
    /// process works on this host only.
    OnOrders,
}

/// Who reads a config: whoever runs zdeploy (a fleet's config then fans
/// out), or a fleet host doing its part of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Operator,
    FleetHost,
}

impl Topology {
    /// The ssh fleet's settings, for code that only concerns one.
    pub fn ssh(&self) -> Option<&FleetSettings> {
        match self {
            Topology::Ssh(fleet) => Some(fleet),
            _ => None,
        }
    }

    /// This process deploys a fleet as a whole (over ssh, or through etcd),
    /// not one host (alone, or its part of a fleet's run).
    pub fn is_fleet(&self) -> bool {
        matches!(self, Topology::Ssh(_) | Topology::Etcd(_))
    }

    /// The etcd fleet's settings, for code that only concerns one.
    pub fn etcd(&self) -> Option<&Membership> {
        match self {
            Topology::Etcd(membership) => Some(membership),
            _ => None,
        }
    }
}
