//! CPU placement: how many cores this process may use, and pinning a worker thread to one.
//!
//! It does not choose which worker goes where (the configuration and `Dataplane::start` do),
//! and it needs no `unsafe`: `core_affinity` and std make the calls.

/// Pins the calling thread to `core`; false when the core does not exist or pinning failed.
pub(crate) fn pin_current_thread(core: usize) -> bool {
    core_affinity::get_core_ids()
        .and_then(|ids| ids.into_iter().find(|id| id.id == core))
        .map(core_affinity::set_for_current)
        .unwrap_or(false)
}

/// Number of cores this process may run on.
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
