//! `wardenctl`: a patronictl-compatible CLI for Warden (and Patroni) clusters.
//!
//! The library part holds the pure renderers so they can be tested byte-for-byte
//! against patronictl's output.

pub mod difflib;
pub mod editcfg;
pub mod members;
pub mod pyfmt;
pub mod render;
pub mod sched;
