//! Netfilter state the gateway installs in the kernel and removes when it stops: the iptables
//! NFQUEUE chain of `admission = "verified"` ([`nfqueue`]).
//!
//! This module only owns rules and queues; the verdicts' meaning is in `dataplane::admission`.

pub mod nfqueue;

/// Whether process `pid` is alive (in this PID namespace): a rule tagged with a dead pid is a
/// leftover of a gateway that could not clean up (SIGKILL) and may be removed.
pub fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}
