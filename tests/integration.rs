//! The integration tests: one binary (ripgrep's layout), each module a
//! concern. They run the built `port_exporter` against real peers: the
//! kernel (`ss -Htln` is the oracle), promtool, node_exporter.

/// Harness: running the binary, the ss oracle, network namespaces, skips.
mod util;

/// Usage errors, --help, --version, exit codes.
mod cli;
/// man/ and completions/ are exactly what --generate prints.
mod generated;
/// Exact listener sets inside fresh network namespaces, for every method.
mod namespace;
/// promtool and node_exporter read what we write.
mod peers;
/// --serve: HTTP answers, coalescing, abuse, shutdown, a Prometheus server.
mod serve;
/// The atomic .prom write: modes, failures, concurrent writers.
mod textfile;
