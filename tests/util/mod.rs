//! The test kit, shared by the integration tests and the benchmarks: the
//! harness that decides what runs, the binary under test, a running server,
//! HTTP on the wire, reading expositions, the machine (namespaces, the
//! `ss` oracle, waiting for conditions), the scenarios' holders and a zoo
//! of sockets.

pub mod attack;
pub mod bin;
pub mod harness;
pub mod http;
pub mod metrics;
pub mod pki;
pub mod prometheus;
pub mod scenario;
pub mod server;
pub mod system;
pub mod zoo;

pub use attack::{abort, connect_from, slowloris};
pub use bin::{Bin, one_error_line, run, stderr_of, stdout_of};
pub use harness::{Need::*, *};
pub use http::{HttpResponse, basic_auth, exchange, http, parse_http, request};
pub use metrics::*;
pub use server::{ANSWER_LIMIT, Server};
pub use system::*;
