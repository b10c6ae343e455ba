//! A Prometheus server of the test's own, on 127.0.0.1:9090 of the
//! current network namespace, scraping every second.

use std::{
    net::TcpStream,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use super::{
    http::http,
    system::{ChildGuard, wait_until},
};

/// A running Prometheus, killed when dropped.
pub struct Prometheus {
    child: ChildGuard,
}

impl Prometheus {
    /// Starts Prometheus with its data in `dir`, scraping every second with
    /// `scrape_configs`, the YAML list of jobs (each item starting `  - `).
    pub fn start(dir: &Path, scrape_configs: &str) -> Prometheus {
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n\
                 {scrape_configs}"
            ),
        )
        .unwrap();
        let child = ChildGuard(
            Command::new("prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg("--web.listen-address=127.0.0.1:9090")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("cannot start prometheus"),
        );
        Prometheus { child }
    }

    /// The body of `GET PATH` of its HTTP API, when it answers 200.
    pub fn get(&self, path: &str) -> Option<String> {
        TcpStream::connect("127.0.0.1:9090").ok()?;
        let response = http("127.0.0.1:9090", "GET", path, Duration::from_secs(10));
        (response.status == 200).then_some(response.body)
    }

    /// The result of an instant query (`query` URL-encoded).
    pub fn query(&self, query: &str) -> Option<String> {
        self.get(&format!("/api/v1/query?query={query}"))
    }

    /// Waits until `ready` gives a value, failing the test if Prometheus
    /// exits or two minutes pass.
    #[track_caller]
    pub fn wait_for<T>(&mut self, what: &str, mut ready: impl FnMut(&Self) -> Option<T>) -> T {
        wait_until(what, Duration::from_secs(120), || {
            assert!(
                self.child.0.try_wait().unwrap().is_none(),
                "prometheus exited"
            );
            ready(self)
        })
    }
}
