//! One worker's side of `admission = "ready"`: it opens and closes its own SO_REUSEPORT
//! listener of each managed group as the door keeper decides (`crate::door`), and re-opens it
//! at once when it parks a prepared connection itself.
//!
//! Closing is `shutdown(SHUT_RD)` after taking what the kernel already accepted (those
//! clients were accepted: they are served as usual); the multishot accept ends with it.
//! Opening is `listen()` and a new multishot accept. This file decides no state: the keeper
//! does; it only applies it.

use std::os::fd::{AsFd, OwnedFd};

use super::{Token, Worker};
use crate::handoff::PublicIndex;
use crate::sys;

/// A worker's view of one listener group's door.
#[derive(Debug, Clone, Copy)]
pub(super) struct GroupDoor {
    /// The listener listens.
    pub(super) open: bool,
    /// A multishot accept is armed on it (its last completion did not end it).
    pub(super) armed: bool,
    /// The keeper's generation last applied.
    pub(super) applied: u64,
}

impl Worker {
    /// Arms the accepts of the groups that start open; managed groups start closed.
    pub(super) fn start_doors(&mut self) -> std::io::Result<()> {
        for group in 0..self.listeners.len() {
            let open = !self.board.managed(group);
            self.doors.push(GroupDoor {
                open,
                armed: false,
                applied: 0,
            });
            if open {
                self.arm_accept(group)?;
            }
        }
        self.apply_doors()
    }

    /// Applies every group door the keeper flipped since the last look.
    pub(super) fn apply_doors(&mut self) -> std::io::Result<()> {
        for group in 0..self.doors.len() {
            if !self.board.managed(group) {
                continue;
            }
            let (generation, open) = self.board.group_door(group);
            if generation == self.doors[group].applied {
                continue;
            }
            self.doors[group].applied = generation;
            if open {
                self.open_door(group)?;
            } else {
                self.close_door(group)?;
            }
        }
        Ok(())
    }

    /// This worker parked a prepared connection of `service`: the service is up from now, so
    /// its listener here opens without waiting for the keeper.
    pub(super) fn door_parked(&mut self, service: PublicIndex) {
        self.board.parked(service);
        let Some(group) = self.groups.iter().position(|g| g.contains(&service)) else {
            return;
        };
        if self.board.managed(group) && !self.doors[group].open {
            // A ring that cannot take the accept fails the next submission too, and the loop
            // stops on that one; nothing more to do here.
            self.open_door(group).ok();
        }
    }

    /// The multishot accept of `group` ended (`c.more` unset): armed again while open.
    pub(super) fn accept_ended(&mut self, group: usize) -> std::io::Result<()> {
        self.doors[group].armed = false;
        if self.doors[group].open && !self.stopping && !self.accept_paused(group) {
            self.arm_accept(group)?;
        }
        Ok(())
    }

    fn open_door(&mut self, group: usize) -> std::io::Result<()> {
        if self.doors[group].open {
            return Ok(());
        }
        if let Err(e) = sys::listen(self.listeners[group].as_fd()) {
            tracing::warn!(core = self.id, group, error = %e,
                "cannot re-open the listener of a service that is up; it stays closed here");
            return Ok(());
        }
        self.doors[group].open = true;
        if !self.doors[group].armed && !self.accept_paused(group) {
            self.arm_accept(group)?;
        }
        Ok(())
    }

    fn close_door(&mut self, group: usize) -> std::io::Result<()> {
        if !self.doors[group].open {
            return Ok(());
        }
        self.doors[group].open = false;
        // Clients the kernel completed a handshake with are accepted: serve them, so that the
        // shutdown below resets none.
        while let Ok((stream, _)) = self.listeners[group].accept() {
            self.on_client(group, OwnedFd::from(stream));
        }
        if let Err(e) = sys::shutdown_read(self.listeners[group].as_fd()) {
            tracing::warn!(core = self.id, group, error = %e,
                "cannot close the listener of a service that is down; it stays open");
            self.doors[group].open = true;
            return Ok(());
        }
        if self.doors[group].armed {
            self.disarm(Token::Accept {
                group: group as u32,
            })?;
        }
        Ok(())
    }
}
