//! The orchestrated benchmark modes of `sallyport-bench`: each starts an echo back-end and, for
//! every path, the gateways or peer tunnels it needs (see [`crate::topology`]), measures, and
//! stops them again before the next path.
//!
//! Every path is measured right after a `direct` run against the same echo back-end, and its row
//! carries the ratio to that run: on a shared, noisy machine only ratios taken seconds apart are
//! comparable. With `--tls` (bulk, rr) each TLS path is also measured right after a `tls-direct`
//! run (the load against a rustls echo server in this process) and carries that ratio too. The modes return an [`Outcome`] (human text, a JSON document, histograms); writing
//! files and choosing exit codes is the binary's job.

mod admission;
mod bulk;
mod common;
mod cps;
mod fleet;
mod rr;

pub use admission::{
    cps_admission, flood, variant_lines, FloodSpec, VARIANTS as ADMISSION_VARIANTS,
};
pub use bulk::bulk;
pub use common::{
    environment_json, git_commit, resolve_paths, resolve_tls_paths, Common, Outcome, FD_SPARE,
    MAX_PREPARED,
};
pub use cps::cps;
pub use fleet::{fleet, pairs_for, shares, FleetSpec, DEFAULT_PER_PROCESS};
pub use rr::rr;

#[cfg(test)]
mod tests {
    use super::common::*;
    use super::*;
    use crate::topology::PathKind;

    #[test]
    fn shares_split_evenly() {
        assert_eq!(shares(10, 3), vec![4, 3, 3]);
        assert_eq!(shares(200, 2), vec![100, 100]);
        assert_eq!(shares(5, 1), vec![5]);
        assert_eq!(shares(100_000, 6).iter().sum::<usize>(), 100_000);
    }

    #[test]
    fn pairs_follow_the_per_process_cap() {
        assert_eq!(pairs_for(10_000, 18_000), 1);
        assert_eq!(pairs_for(50_000, 18_000), 3);
        assert_eq!(pairs_for(100_000, 18_000), 6);
        assert_eq!(pairs_for(200, 100), 2);
        assert_eq!(pairs_for(201, 100), 3);
    }

    #[test]
    fn resolve_paths_dedups_and_skips_missing_peers() {
        let (paths, _) = resolve_paths(Some(&[
            PathKind::Direct,
            PathKind::Sallyport,
            PathKind::Direct,
        ]));
        assert_eq!(paths, vec![PathKind::Direct, PathKind::Sallyport]);
        let (defaults, _) = resolve_paths(None);
        assert!(defaults.starts_with(&[PathKind::Direct, PathKind::Sallyport]));
        for p in PathKind::ALL {
            let (got, notes) = resolve_paths(Some(&[p]));
            assert_eq!(got.len() + notes.len(), 1);
        }
    }
}
