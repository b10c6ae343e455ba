//! The integration tests: one binary (ripgrep's layout), each module a
//! concern, run by a harness of our own (`util::harness`) so that a test
//! that cannot run here is reported as ignored with its reason, never as
//! passed. They run the built `port_exporter` against real peers: the
//! kernel (`ss` is the oracle), promtool, node_exporter, Prometheus.

/// The kit: harness, the binary, a server, HTTP, expositions, namespaces.
mod util;

/// --generate rules: promtool checks and unit-tests the alerting rules.
mod alerts;
/// Basic auth against floods of wrong and unknown credentials.
mod auth;
/// Exact under churn: stable listeners in churning hash buckets.
mod churn;
/// Usage errors, --help, --version, exit codes.
mod cli;
/// --netns all with real containers of a Docker engine of the test's own.
mod docker;
/// man/ and completions/ are exactly what --generate prints.
mod generated;
/// The README's install lines on a fresh root.
mod install;
/// Who listens and where: labels, table and JSON against `ss -Htulnpe`.
mod labels;
/// Exact listener sets inside fresh network namespaces, for every method.
mod namespace;
/// --netns all: every namespace against `ss` run inside it.
mod netns;
/// The Debian package under a real systemd; the static musl build.
mod package;
/// promtool and node_exporter read what we write.
mod peers;
/// --serve: HTTP answers, coalescing, abuse, shutdown, a Prometheus server.
mod serve;
/// The atomic .prom write: modes, failures, concurrent writers.
mod textfile;
/// --watch: listeners that open and close, in the JSON stream.
mod watch;
/// --web.config.file: TLS, client certificates, basic auth, rotation,
/// socket activation.
mod webconfig;

fn main() -> std::process::ExitCode {
    // The roles the scenarios run this binary in.
    if let Some(code) = util::scenario::role() {
        return code;
    }
    if let Some(code) = netns::role() {
        return code;
    }
    if let Some(code) = docker::role() {
        return code;
    }
    if let Some(code) = watch::role() {
        return code;
    }
    // Last: it takes any other role for a mistake.
    if let Some(code) = labels::role() {
        return code;
    }
    // The slowest modules first, so that they overlap with the rest.
    util::harness::main(&[
        serve::TESTS,
        package::TESTS,
        webconfig::TESTS,
        auth::TESTS,
        churn::TESTS,
        labels::TESTS,
        netns::TESTS,
        watch::TESTS,
        docker::TESTS,
        namespace::TESTS,
        peers::TESTS,
        textfile::TESTS,
        cli::TESTS,
        generated::TESTS,
        install::TESTS,
        alerts::TESTS,
    ])
}
