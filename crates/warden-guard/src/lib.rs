//! The external fence guard and process helpers shared by Warden's binaries.
//!
//! The guard runs as a process of its own (`warden-guard`), so that a frozen or killed
//! agent still has its primary stopped before the leader lock expires. This crate depends
//! on std and libc only: the guard binary is built from it alone and stays small (its
//! resident set is a fraction of the agent's, see `memory`).

pub mod guard;
pub mod memory;
pub mod process;
