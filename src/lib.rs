//! port_exporter: which TCP ports of this machine are open, for Prometheus.
//!
//! The binary (`main.rs`) is a thin dispatcher; the pieces live here so that
//! the benchmarks under `tests/bench/` can time them in-process.

pub mod log;

pub mod cli;
pub(crate) mod exposition;
pub mod generate;
pub(crate) mod job;
pub(crate) mod labels;
pub mod ports;
pub mod scan;
pub mod serve;
pub(crate) mod textfile;
pub(crate) mod views;
pub mod watch;
