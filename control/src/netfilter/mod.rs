//! Netfilter state the gateway owns on this host: [`nft`] (the per-source verdicts table),
//! [`policy`] (which mechanism enforces each public listener's `allow`/`deny`/limits, and
//! its counters) and [`nfqueue`] (the iptables NFQUEUE chain of `admission = "verified"` and
//! its SYN reader), plus the process checks they need to tell a live owner from a leftover.
//!
//! This module decides no verdict itself: the kernel (the table) or the data plane
//! (`sallyport_dataplane::policy`) does.

pub mod nfqueue;
pub mod nft;
pub mod policy;

/// Whether process `pid` exists (a zombie counts as gone).
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may itself hold ") ".
        Ok(stat) => stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// When process `pid` started (clock ticks since boot, field 22 of `/proc/PID/stat`): with the
/// pid, it names one process even after the pid is reused.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(") ")?;
    // `rest` begins at field 3 (state); field 22 is the 20th from there.
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_has_a_start_time() {
        let me = std::process::id();
        assert!(pid_alive(me));
        assert!(start_time(me).is_some());
        assert_eq!(start_time(me), start_time(me));
        assert!(!pid_alive(u32::MAX - 1));
    }
}
