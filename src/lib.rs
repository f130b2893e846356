//! attune-sensor: the sensor service of the Attune automation platform.
//!
//! This crate is the binary's library half: the adapters behind the ports of
//! `attune-actors` (stores, buses, sensor runtimes), the admin API, the pack loader, the
//! configuration and the wiring that starts it all.

pub mod admin;
mod allocator;
pub mod bus;
pub mod client;
pub mod cluster;
pub mod config;
pub mod instance_lock;
pub mod json_errors;
pub mod malloc_arenas;
pub mod memory_trim;
pub mod metrics;
pub mod outbox_cli;
pub mod pack_limits;
pub mod pack_watch;
pub mod packs;
pub mod retention;
pub mod rule_test;
pub mod runtimes;
pub mod schemas;
pub mod secrets;
pub mod service;
pub mod store;
pub mod trace;
pub mod webhook;
