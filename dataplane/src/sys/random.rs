//! Unpredictable values from the kernel (getrandom(2)) for WebSocket keys and masks.
//!
//! Not a general RNG and not for key material: TLS draws its randomness through rustls' own
//! provider.

/// Eight bytes from the kernel's random source (getrandom(2)); WebSocket keys and masks.
pub(crate) fn random_u64() -> u64 {
    let mut value = 0u64;
    // SAFETY: getrandom writes at most 8 bytes into `value`, which lives for the call.
    let n = unsafe { libc::getrandom((&mut value as *mut u64).cast(), 8, 0) };
    if n != 8 {
        // Never expected after boot; fall back to the clock so a key is still unpredictable
        // enough for masking (which only defeats cache poisoning by intermediaries).
        value = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9_7f4a_7c15, |d| d.as_nanos() as u64);
    }
    value
}
