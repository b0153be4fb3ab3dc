//! Where and when the crash and fault tests kill a run: the failpoints of
//! deploys and rollbacks (`ZDEPLOY_FAILPOINT`), and a small random
//! generator whose seed a test prints so a failure replays.

pub const DEPLOY_POINTS: &[&str] = &[
    "recover",
    "resolve",
    "materialize",
    "carry",
    "build",
    "sync",
    "switch",
    "switch.linked",
    "switch.renamed",
    "settle",
    "prune",
];

pub const ROLLBACK_POINTS: &[&str] = &[
    "recover",
    "carry",
    "sync",
    "switch",
    "switch.linked",
    "switch.renamed",
    "settle",
];

/// A linear congruential generator: deterministic for a seed.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}
