//! The one conversion of a raw syscall result the other `sys` modules share. It holds no
//! `unsafe` and makes no call itself.

/// A syscall's `ssize_t` result as a byte count, or the `errno` it set.
pub(super) fn cvt(res: libc::ssize_t) -> std::io::Result<usize> {
    if res < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(res as usize)
    }
}
