//! The worker's side of per-source verdicts: asks the service's [`SourceGate`] about a new
//! client and resets a refused one at once (SO_LINGER 0, then close: the client's first read
//! sees ECONNRESET and nothing reaches the back-end). Rate-limited log lines, because a
//! refused peer can cause them.
//!
//! The verdicts themselves are `crate::policy`'s; the kernel's (a netfilter table the control
//! side installs) never reach this file.
//!
//! [`SourceGate`]: crate::policy::SourceGate

use std::net::SocketAddr;
use std::os::fd::BorrowedFd;
use std::time::Instant;

use super::Worker;
use crate::handoff::PublicIndex;
use crate::policy::Held;
use crate::sys;

impl Worker {
    /// The verdict on a new client of `service` from `addr`. `via_proxy`: `addr` is the one a
    /// PROXY header named (call this again once the header of an `accept_proxy` source has
    /// been read). `Ok(held)`: the client is taken; keep `held` with its leg
    /// ([`crate::leg::Leg::hold`]). `Err(())`: it is refused; `fd` has been set to reset on
    /// close, so dropping it sends a RST.
    pub(super) fn admit_source(
        &mut self,
        service: PublicIndex,
        addr: SocketAddr,
        via_proxy: bool,
        fd: BorrowedFd<'_>,
    ) -> Result<Option<Held>, ()> {
        let gate = &self.gates[service.0];
        if gate.is_open() {
            return Ok(None);
        }
        let now = Instant::now();
        match gate.check(addr.ip(), via_proxy, now) {
            Ok(held) => Ok(held),
            Err(refusal) => {
                sys::set_reset_on_close(fd);
                if let Some(also_refused) = self.policy_log.allow(now) {
                    let why = match refusal {
                        crate::policy::Refusal::Listed => "not allowed by allow/deny",
                        crate::policy::Refusal::Limit => "over max_per_source or rate_per_source",
                    };
                    tracing::info!(
                        core = self.id,
                        service = %self.service(service).name,
                        client = %addr,
                        also_refused,
                        "client reset after accept: {why}"
                    );
                }
                Err(())
            }
        }
    }
}
