//! `--serve`: the same exposition over HTTP, scanned afresh for each scrape.
//!
//! Built on hyper's HTTP/1 server and a single-threaded tokio runtime; scans
//! run on a small blocking pool. What keeps it up under load and abuse:
//! - scrapes that arrive while a scan is running share that scan, so 200
//!   simultaneous requests cause one or a few scans, not 200;
//! - at most [`MAX_CONNECTIONS`] connections; beyond that new ones are
//!   closed at once, so memory stays bounded (each holds at most
//!   [`MAX_BUF`] of request buffer);
//! - a request head must arrive within [`HEADER_TIMEOUT`], which also closes
//!   idle keep-alive connections; a write blocked for [`WRITE_TIMEOUT`]
//!   drops the connection;
//! - a failed scan answers 500 with the reason, is logged, and counted in
//!   `port_exporter_scan_errors_total`; the next scrape scans again;
//! - SIGTERM or SIGINT stops accepting, lets answers in flight finish (for
//!   up to [`DRAIN_TIMEOUT`]) and returns.

mod listen;
mod stall;

/// Writes one line to stderr, prefixed with the program name, ignoring
/// failures: `eprintln!` panics when stderr is a closed pipe, and a server
/// must not stop serving because its log reader went away.
macro_rules! log {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "port_exporter: {}", format_args!($($arg)*));
    }};
}

use std::{
    convert::Infallible,
    net::TcpListener as StdListener,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use http_body_util::Full;
use hyper::{
    Method as HttpMethod, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{ALLOW, CONTENT_TYPE, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
};
use tokio::{
    net::TcpListener,
    signal::unix::{SignalKind, signal},
    sync::{OnceCell, Semaphore},
};

pub use listen::{DEFAULT, ListenAddr};

use crate::{exposition, ports::PortSet, scan};

/// Most connections open at once.
pub const MAX_CONNECTIONS: usize = 512;
/// Time allowed for a request head, and for an idle keep-alive connection.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a response may wait for the client to read it.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request buffer per connection; a longer head is refused (431).
pub const MAX_BUF: usize = 16 * 1024;
/// How long shutdown waits for answers in flight.
pub const DRAIN_TIMEOUT: Duration = Duration::from_millis(800);

/// The exposition's content type (Prometheus text format 0.0.4).
const CONTENT_TYPE_METRICS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What to scan and report, as in one-shot mode.
#[derive(Debug)]
pub struct Config {
    /// `--method`.
    pub method: scan::Method,
    /// `--ports` (or all) minus `--exclude`.
    pub selected: PortSet,
    /// `--include-closed`.
    pub include_closed: bool,
    /// Threads of the bind method's pool; `None` for one per CPU.
    pub threads: Option<usize>,
    /// `--verbose`.
    pub verbose: bool,
}

/// Binds `addr`, says where on stderr, and serves until SIGTERM or SIGINT.
pub fn serve(addr: &ListenAddr, config: Config) -> anyhow::Result<()> {
    let listeners = addr.bind()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(2)
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(listeners, Arc::new(Scraper::new(config))))
}

/// The accept loops, until a signal; then the drain.
async fn run(listeners: Vec<StdListener>, scraper: Arc<Scraper>) -> anyhow::Result<()> {
    let mut bound = Vec::new();
    for listener in listeners {
        bound.push(TcpListener::from_std(listener)?);
    }
    let names: Vec<String> = bound
        .iter()
        .map(|l| l.local_addr().map(|a| a.to_string()))
        .collect::<Result<_, _>>()?;
    // Watch the signals before saying we listen: whoever reads that line
    // may stop us at once, and must get a clean exit.
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    log!("listening on {} (GET / or /metrics)", names.join(" and "));

    let graceful = Arc::new(GracefulShutdown::new());
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_BUF)
        .max_headers(64);
    let accepting: Vec<_> = bound
        .into_iter()
        .map(|listener| {
            tokio::spawn(accept_loop(
                listener,
                http.clone(),
                graceful.clone(),
                slots.clone(),
                scraper.clone(),
            ))
        })
        .collect();

    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    for task in &accepting {
        task.abort();
    }
    for task in accepting {
        let _ = task.await;
    }
    // Every task holding a reference has ended, so this cannot fail.
    let graceful = Arc::into_inner(graceful).context("connections still being accepted")?;
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        log!("stopped with answers still in flight");
    }
    Ok(())
}

/// Accepts connections on one listener and serves each on its own task.
async fn accept_loop(
    listener: TcpListener,
    http: http1::Builder,
    graceful: Arc<GracefulShutdown>,
    slots: Arc<Semaphore>,
    scraper: Arc<Scraper>,
) {
    let mut last_complaint: Option<Instant> = None;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(err) => {
                // Out of descriptors or memory, or a connection reset while
                // queued: not the listener's fault. Pause so a persistent
                // EMFILE does not spin, say so at most once a minute, and go on.
                if last_complaint.is_none_or(|at| at.elapsed() > Duration::from_secs(60)) {
                    log!("accept failed: {err}");
                    last_complaint = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Over the cap: closing at once is cheaper than queueing.
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let scraper = scraper.clone();
        let io = TokioIo::new(stall::WriteDeadline::new(stream, WRITE_TIMEOUT));
        let service = service_fn(move |request| {
            let scraper = scraper.clone();
            async move { Ok::<_, Infallible>(respond(&request, &scraper).await) }
        });
        let connection = graceful.watch(http.serve_connection(io, service));
        tokio::spawn(async move {
            // Errors here are the client's (reset, timeout, garbage): hyper
            // has already answered what could be answered.
            let _ = connection.await;
            drop(slot);
        });
    }
}

/// The answer to one request.
async fn respond(request: &Request<Incoming>, scraper: &Arc<Scraper>) -> Response<Full<Bytes>> {
    if !matches!(request.uri().path(), "/" | "/metrics") {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: the metrics are at /metrics and /\n".into(),
        );
    }
    if request.method() != HttpMethod::GET && request.method() != HttpMethod::HEAD {
        let mut response = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed: use GET or HEAD\n".into(),
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match scraper.scrape().await {
        Ok(body) => {
            let mut response = Response::new(Full::new(body));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_METRICS));
            response
        }
        Err(why) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("scan failed: {why}\n"),
        ),
    }
}

/// A plain-text response. hyper leaves the body out for HEAD by itself.
fn plain(status: StatusCode, text: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The outcome of one scan, shared by every request that waited for it.
type Outcome = Result<Bytes, Arc<str>>;

/// Runs scans for requests, one at a time, sharing each with every request
/// that arrives while it runs.
struct Scraper {
    /// What every scan scans and reports.
    config: Config,
    /// The scan in flight, if any. Requests clone the cell and wait on it;
    /// the first to arrive runs the scan. tokio's OnceCell hands the work to
    /// another waiter if that request is dropped (its client went away).
    in_flight: Mutex<Option<Arc<OnceCell<Outcome>>>>,
    /// Scans run, for `port_exporter_scans_total`.
    scans: AtomicU64,
    /// Scans failed, for `port_exporter_scan_errors_total`.
    errors: AtomicU64,
    /// Whether the (verbose) netlink fallback note was given.
    fallback_logged: AtomicBool,
    /// Whether the skipped-ports warning was given.
    skipped_logged: AtomicBool,
}

impl Scraper {
    /// A scraper with no scan run yet.
    fn new(config: Config) -> Scraper {
        Scraper {
            config,
            in_flight: Mutex::new(None),
            scans: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            fallback_logged: AtomicBool::new(false),
            skipped_logged: AtomicBool::new(false),
        }
    }

    /// The exposition from the scan in flight, or from a new one.
    async fn scrape(self: &Arc<Self>) -> Outcome {
        let cell = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert_with(|| Arc::new(OnceCell::new()))
            .clone();
        cell.get_or_init(|| async {
            let outcome = self.scan_and_render().await;
            // Requests from now on start a fresh scan.
            let mut slot = self
                .in_flight
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if slot
                .as_ref()
                .is_some_and(|current| Arc::ptr_eq(current, &cell))
            {
                *slot = None;
            }
            outcome
        })
        .await
        .clone()
    }

    /// One scan on the blocking pool, rendered with the server's counters.
    async fn scan_and_render(self: &Arc<Self>) -> Outcome {
        let this = self.clone();
        let scanned = tokio::task::spawn_blocking(move || {
            scan::scan(
                this.config.method,
                &this.config.selected,
                this.config.threads,
            )
        })
        .await;
        let scans = self.scans.fetch_add(1, Ordering::Relaxed) + 1;
        let result = match scanned {
            Ok(Ok(scan)) => Ok(scan),
            Ok(Err(err)) => Err(format!("{err:#}")),
            Err(join) => Err(format!("the scan panicked: {join}")),
        };
        let scan = match result {
            Ok(scan) => scan,
            Err(why) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                log!("scan failed: {why}");
                return Err(why.into());
            }
        };
        // Said once, and only with --verbose: the answer is exact either way.
        if let Some(why) = &scan.fallback
            && self.config.verbose
            && !self.fallback_logged.swap(true, Ordering::Relaxed)
        {
            log!("{why}");
        }
        // Also once: the skipped ports stay skipped on every scrape, and the
        // metric port_exporter_scan_skipped_ports keeps showing them.
        if let Some(warning) = scan.skipped_warning()
            && !self.skipped_logged.swap(true, Ordering::Relaxed)
        {
            log!("{warning}");
        }
        let mut body =
            exposition::render_scan(&scan, &self.config.selected, self.config.include_closed);
        exposition::counter(
            &mut body,
            "port_exporter_scans_total",
            "Port scans run since the server started.",
            scans,
        );
        exposition::counter(
            &mut body,
            "port_exporter_scan_errors_total",
            "Port scans that failed since the server started.",
            self.errors.load(Ordering::Relaxed),
        );
        Ok(Bytes::from(body))
    }
}
