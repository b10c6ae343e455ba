//! `--serve`: the same exposition over HTTP, scanned afresh for each scrape.
//!
//! hyper's HTTP/1 server on a single-threaded tokio runtime; scans run on a
//! thread of their own. What keeps it up under load and abuse:
//! - scrapes share scans (`scrape.rs`), each answered by a scan that started
//!   after the request arrived;
//! - at most [`MAX_CONNECTIONS`] connections (`conns.rs`), each with at most
//!   [`MAX_BUF`] of request buffer (`gate.rs`);
//! - [`HEADER_TIMEOUT`] for the TLS handshake and the request head,
//!   [`WRITE_TIMEOUT`] for a blocked write;
//! - a failed scan answers 500, is logged and counted; the log has a thread
//!   of its own ([`crate::log`]), so a stderr nobody reads never stops serving;
//! - SIGTERM or SIGINT stops accepting, lets answers in flight finish for up
//!   to [`DRAIN_TIMEOUT`], and abandons a scan still running.
//!
//! `--web.config.file` (exporter-toolkit's format) adds TLS, client
//! certificates, basic auth, headers and a rate limit (`live.rs`). Started by
//! systemd with sockets (`activation.rs`), a bare `--serve` serves on those.

mod activation;
mod auth;
mod clientcert;
mod conns;
mod fair;
mod gate;
mod handshake;
mod listen;
mod live;
mod scrape;
mod tls;
mod webconfig;

use std::{
    convert::Infallible,
    net::{IpAddr, TcpListener as StdListener},
    panic::{self, AssertUnwindSafe},
    path::Path,
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError, Weak,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    thread,
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
    sync::oneshot,
};

use conns::{Conns, Slot};
pub use listen::{DEFAULT, ListenAddr};
use scrape::{Outcome, Scraper};

use crate::{
    exposition,
    job::{Job, Notices},
    log::{self, log},
    scan::Scan,
};

/// Most connections served at once, where the file limit allows as many.
pub const MAX_CONNECTIONS: usize = 16 * 1024;
/// Fewest connections served at once, however low the file limit.
const MIN_CONNECTIONS: usize = 16;
/// File descriptors kept for the server's own use beside its connections:
/// listeners, the runtime, the log, the scan (bind scans open one socket per
/// thread at a time).
const RESERVED_FDS: usize = 256;
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

/// Binds `addr` (without one: takes the sockets systemd passed, or binds
/// [`DEFAULT`]), says where on stderr, and serves `job` until SIGTERM or
/// SIGINT, secured by the web config file if one is given. The web config
/// is loaded first: when it is wrong, nothing is bound.
pub fn serve(addr: Option<&ListenAddr>, web_config: Option<&Path>, job: Job) -> anyhow::Result<()> {
    job.plan.check()?;
    let web = web_config.map(live::Live::load).transpose()?.map(Arc::new);
    let listeners = match addr {
        Some(addr) => addr.bind()?,
        None => match activation::listeners()? {
            Some(listeners) => listeners,
            None => ListenAddr::parse(DEFAULT)
                .map_err(anyhow::Error::msg)?
                .bind()?,
        },
    };
    log::to_background().context("cannot start the log writer")?;
    let scans = Arc::new(Scans::start(job)?);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(async {
        let scraper = Scraper::start(move || scans.clone().run());
        run(listeners, scraper, web).await
    });
    // A scan still running (waiting for the bind-scan lock, say) is
    // abandoned with its thread when the process exits.
    runtime.shutdown_background();
    result
}

/// What every connection is served with.
struct Server {
    http: http1::Builder,
    /// Gone once shutdown has begun: `run` alone holds it.
    graceful: Weak<GracefulShutdown>,
    conns: Arc<Conns>,
    scraper: Arc<Scraper>,
    web: Option<Arc<live::Live>>,
}

/// The accept loops, until a signal; then the drain.
async fn run(
    listeners: Vec<StdListener>,
    scraper: Arc<Scraper>,
    web: Option<Arc<live::Live>>,
) -> anyhow::Result<()> {
    let bound: Vec<_> = listeners
        .into_iter()
        .map(TcpListener::from_std)
        .collect::<Result<_, _>>()?;
    let names: Vec<String> = bound
        .iter()
        .map(|l| l.local_addr().map(|a| a.to_string()))
        .collect::<Result<_, _>>()?;
    // Watch the signals before saying we listen: whoever reads that line
    // may stop us at once, and must get a clean exit.
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let scheme = web.as_ref().map(|web| format!("{}; ", web.describe()));
    let cap = connection_cap();
    log!(
        "listening on {} ({}GET / or /metrics; at most {cap} connections)",
        names.join(" and "),
        scheme.unwrap_or_default()
    );

    let graceful = Arc::new(GracefulShutdown::new());
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_BUF)
        .max_headers(64);
    let server = Arc::new(Server {
        http,
        graceful: Arc::downgrade(&graceful),
        conns: Conns::new(cap),
        scraper,
        web,
    });
    let accepting: Vec<_> = bound
        .into_iter()
        .map(|listener| tokio::spawn(accept_loop(listener, server.clone())))
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
    // Connections upgrade `graceful` only for an instant, on this thread.
    let graceful = Arc::into_inner(graceful).context("shutdown is under way twice")?;
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        log!("stopped with answers still in flight");
    }
    Ok(())
}

/// The most connections to serve at once: as many as the file limit
/// allows, once its soft value is raised to the hard one (as Go does), less
/// [`RESERVED_FDS`], within [`MIN_CONNECTIONS`]..=[`MAX_CONNECTIONS`].
fn connection_cap() -> usize {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((mut soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return MIN_CONNECTIONS;
    };
    let wanted = ((MAX_CONNECTIONS + RESERVED_FDS) as u64).min(hard);
    if soft < wanted && setrlimit(Resource::RLIMIT_NOFILE, wanted, hard).is_ok() {
        soft = wanted;
    }
    usize::try_from(soft)
        .unwrap_or(usize::MAX)
        .saturating_sub(RESERVED_FDS)
        .clamp(MIN_CONNECTIONS, MAX_CONNECTIONS)
}

/// Accepts connections on one listener and serves each on its own task.
async fn accept_loop(listener: TcpListener, server: Arc<Server>) {
    let mut last_complaint: Option<Instant> = None;
    loop {
        let (stream, client) = match listener.accept().await {
            Ok((stream, peer)) => (stream, peer.ip()),
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
        // None: every connection is being answered, and closing at once is
        // cheaper than queueing.
        let Some(slot) = server.conns.admit() else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let slot = Arc::new(slot);
        let connection = serve_connection(stream, client, slot.clone(), server.clone());
        tokio::spawn(async move {
            // A new connection may take the slot while this one waits for
            // a request head: then it goes.
            tokio::select! {
                () = connection => {}
                () = slot.evicted() => {}
            }
        });
    }
}

/// Serves one connection: the TLS handshake if any and the first request
/// head, both within [`HEADER_TIMEOUT`] of the accept, then HTTP.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    client: IpAddr,
    slot: Arc<Slot>,
    server: Arc<Server>,
) {
    let deadline = tokio::time::Instant::now() + HEADER_TIMEOUT;
    let mut stream = match &server.web {
        Some(web) => match web.accept(stream, client, HEADER_TIMEOUT).await {
            Some(stream) => stream,
            None => return,
        },
        None => tokio_util::either::Either::Left(stream),
    };
    let head = match tokio::time::timeout_at(deadline, gate::first_head(&mut stream, MAX_BUF)).await
    {
        Ok(Ok(head)) if !head.is_empty() => head,
        // Silent, gone, or too slow: no request to answer.
        _ => return,
    };
    let io = TokioIo::new(gate::Conn::new(head, stream, WRITE_TIMEOUT));
    let Some(watcher) = server.graceful.upgrade().map(|g| g.watcher()) else {
        return;
    };
    let http = server.http.clone();
    let service = service_fn(move |request| {
        let (server, slot) = (server.clone(), slot.clone());
        slot.busy();
        async move {
            let answer = respond(&request, &server.scraper);
            let response = match &server.web {
                Some(web) => web.answer(&request, client, answer).await,
                None => answer.await,
            };
            Ok::<_, Infallible>(response.map(|body| Answer { body, slot }))
        }
    });
    // Errors here are the client's (reset, timeout, garbage): hyper has
    // already answered what could be answered.
    let _ = watcher.watch(http.serve_connection(io, service)).await;
}

/// A response body that marks its connection as waiting for the next
/// request once it is sent (hyper drops it then), so that a connection is
/// never evicted while it is being answered.
struct Answer {
    body: Full<Bytes>,
    slot: Arc<Slot>,
}

impl Drop for Answer {
    fn drop(&mut self) {
        self.slot.waiting();
    }
}

impl hyper::body::Body for Answer {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
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
        Ok(body) => Response::builder()
            .header(CONTENT_TYPE, CONTENT_TYPE_METRICS)
            .body(Full::new(body))
            .expect("a valid header"),
        Err(why) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("scan failed: {why}\n"),
        ),
    }
}

/// A mutex's value, even if a thread panicked holding it: nothing in this
/// server is left half changed.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A plain-text response. hyper leaves the body out for HEAD by itself.
fn plain(status: StatusCode, text: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(text)))
        .expect("a valid header")
}

/// The server's scans: each run on the scan thread, counted, told about
/// on stderr once where there is something to tell, and rendered.
struct Scans {
    job: Arc<Job>,
    notices: Notices,
    /// Sends a scan request (the channel for its result) to the thread.
    thread: mpsc::Sender<oneshot::Sender<anyhow::Result<Scan>>>,
    /// Scans run, for `port_exporter_scans_total`.
    scans: AtomicU64,
    /// Scans failed, for `port_exporter_scan_errors_total`.
    errors: AtomicU64,
}

impl Scans {
    /// Starts the scan thread for `job`.
    fn start(job: Job) -> anyhow::Result<Scans> {
        let job = Arc::new(job);
        let (thread, requests) = mpsc::channel::<oneshot::Sender<anyhow::Result<Scan>>>();
        let scanning = job.clone();
        thread::Builder::new()
            .name("scan".into())
            .spawn(move || {
                for reply in requests {
                    let scanned = panic::catch_unwind(AssertUnwindSafe(|| scanning.plan.run()))
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("the scan panicked")));
                    let _ = reply.send(scanned);
                }
            })
            .context("cannot start the scan thread")?;
        Ok(Scans {
            notices: job.notices(),
            job,
            thread,
            scans: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        })
    }

    /// One scan on the scan thread, rendered with the server's counters.
    async fn run(self: Arc<Self>) -> Outcome {
        let (reply, result) = oneshot::channel();
        // A thread that is gone drops `reply`, sent or not.
        let _ = self.thread.send(reply);
        let scanned = result
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the scan thread is gone")));
        let scans = self.scans.fetch_add(1, Ordering::Relaxed) + 1;
        let scan = scanned.map_err(|err| {
            self.errors.fetch_add(1, Ordering::Relaxed);
            let why = format!("{err:#}");
            log!("scan failed: {why}");
            Arc::<str>::from(why)
        })?;
        self.notices.scanned(&scan);
        let mut body = self.job.render(&scan);
        let errors = self.errors.load(Ordering::Relaxed);
        exposition::counter(&mut body, "port_exporter_scans_total", scans);
        exposition::counter(&mut body, "port_exporter_scan_errors_total", errors);
        Ok(Bytes::from(body))
    }
}
