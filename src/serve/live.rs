//! The web config in force: loaded at start, reloaded when its file or a
//! certificate, key or CA file it names changes, and applied to each
//! connection (the TLS handshake) and request (rate limit, basic auth,
//! headers) in front of the handler.
//!
//! The peer re-reads everything for each connection and request. Here a
//! thread looks at the files' stamps (times, size, inode, device) every
//! [`POLL`], and reloads only what has settled and does not open the
//! server up:
//!
//! - **Settled:** on a changed stamp, the file and every file its text names
//!   are read (stamps first; a named file that does not exist yet is watched
//!   too), again every [`POLL`], until two readings at least [`SETTLE`]
//!   apart are the same, stamps and bytes; the second one's bytes are used.
//!   A file rewritten in place is seen half written by one reading, not by
//!   two that far apart with the same ctime: each write moves it.
//! - **Fail closed:** what does not load keeps the configuration in force
//!   and says why once. So does a change that would weaken access, which
//!   waits for a restart: basic auth off, TLS off (or on), a
//!   `client_auth_type` that no longer requires or verifies a certificate,
//!   `client_allowed_sans` dropped. Users, hashes, certificates, keys, CAs,
//!   allowed SANs, headers and the rate limit change freely.

use std::{
    collections::BTreeMap,
    future::Future,
    io,
    net::IpAddr,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, Weak},
    time::{Duration, Instant},
};

use anyhow::anyhow;
use http_body_util::Full;
use hyper::{
    Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{AUTHORIZATION, HeaderName, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE},
};
use rustls::ServerConfig;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;

use crate::log::log;

use super::{
    auth::{Authenticator, Verdict},
    fair::Fair,
    handshake, lock, plain, tls,
    webconfig::{ClientAuth, RateLimit, Source, WebConfig},
};

/// How often the watcher looks at the files' stamps.
const POLL: Duration = Duration::from_millis(250);
/// How long a changed file must read the same before it is used.
const SETTLE: Duration = Duration::from_millis(500);

/// What one load of the files produced.
pub struct Active {
    tls: Option<Arc<ServerConfig>>,
    /// `basic_auth_users`; empty: no auth.
    users: BTreeMap<String, String>,
    headers: Vec<(HeaderName, HeaderValue)>,
    limiter: Option<Limiter>,
    /// What the file asks for that rustls cannot do, or that means less
    /// than it may seem, if anything: said once.
    ignored: Option<String>,
    /// How much the config asks of a client, to refuse a weaker reload.
    access: Access,
}

/// What a config requires of a client before it gets an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Access {
    tls: bool,
    client_auth: ClientAuth,
    allowed_sans: bool,
    basic_auth: bool,
}

impl Access {
    /// Why `next` would let in a client that `self` keeps out (or, for TLS
    /// on, break every client), if it would: one clause per difference.
    fn weakened_by(self, next: Access) -> Option<String> {
        let mut why = Vec::new();
        if self.tls != next.tls {
            let now = if self.tls { "off" } else { "on" };
            why.push(format!("TLS would be turned {now}"));
        }
        if self.basic_auth && !next.basic_auth {
            why.push("basic auth would be turned off (no basic_auth_users)".into());
        }
        if self.tls && next.tls {
            let (old, new) = (self.client_auth, next.client_auth);
            if old.requires() && !new.requires() {
                why.push(format!(
                    "client_auth_type {new} would no longer require a client certificate \
                     ({old} does)"
                ));
            } else if old.verifies() && !new.verifies() {
                why.push(format!(
                    "client_auth_type {new} would no longer verify client certificates \
                     ({old} does)"
                ));
            }
            if self.allowed_sans && !next.allowed_sans {
                why.push("client_allowed_sans would be removed".into());
            }
        }
        (!why.is_empty()).then(|| why.join("; "))
    }
}

/// One file's identity and state, taken before it is read: a change in any
/// part means it was written, replaced or touched.
type Stamp = Option<(i64, i64, i64, i64, u64, u64, u64)>;

/// The stamp of `path` now; `None` when it cannot be looked at.
fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
        m.size(),
        m.ino(),
        m.dev(),
    ))
}

/// One file as read: its stamp (taken first) and its bytes, or the error.
#[derive(Debug, PartialEq, Eq)]
struct FileRead {
    path: PathBuf,
    stamp: Stamp,
    bytes: Result<Vec<u8>, (io::ErrorKind, String)>,
}

impl FileRead {
    fn take(path: &Path) -> FileRead {
        FileRead {
            path: path.to_path_buf(),
            stamp: stamp(path),
            bytes: std::fs::read(path).map_err(|err| (err.kind(), err.to_string())),
        }
    }
}

/// The web config file (first) and every file its text names, as read once.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot(Vec<FileRead>);

impl Snapshot {
    /// Reads `path`, then each certificate, key and CA file it names.
    fn take(path: &Path) -> Snapshot {
        let first = FileRead::take(path);
        let mut files = Vec::new();
        if let Ok(bytes) = &first.bytes
            && let Ok(text) = std::str::from_utf8(bytes)
            && let Ok(config) = WebConfig::parse(text, dir_of(path))
            && let Some(settings) = &config.tls
        {
            for source in [&settings.cert, &settings.key]
                .into_iter()
                .chain(&settings.client_ca)
            {
                if let Source::File(named) = source
                    && !files.iter().any(|f: &FileRead| f.path == *named)
                {
                    files.push(FileRead::take(named));
                }
            }
        }
        files.insert(0, first);
        Snapshot(files)
    }

    /// The files and their stamps as the snapshot saw them.
    fn stamps(&self) -> Vec<(PathBuf, Stamp)> {
        self.0.iter().map(|f| (f.path.clone(), f.stamp)).collect()
    }

    /// Whether the files hold the same bytes as in `other`.
    fn same_bytes(&self, other: &Snapshot) -> bool {
        let same = |(a, b): (&FileRead, &FileRead)| a.path == b.path && a.bytes == b.bytes;
        self.0.len() == other.0.len() && self.0.iter().zip(&other.0).all(same)
    }

    /// The bytes read of `path`, as `std::fs::read` would have given them.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        match self.0.iter().find(|f| f.path == path).map(|f| &f.bytes) {
            Some(Ok(bytes)) => Ok(bytes.clone()),
            Some(Err((kind, text))) => Err(io::Error::new(*kind, text.clone())),
            // Not named when the snapshot was taken: cannot happen, since
            // the same text is parsed again.
            None => std::fs::read(path),
        }
    }
}

/// The directory relative paths in the file resolve against.
fn dir_of(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

/// The configuration in force and the snapshot it was built from.
struct InForce {
    active: Arc<Active>,
    snapshot: Snapshot,
}

/// An accepted connection: plain TCP, or TLS over it (boxed: rustls' state
/// is large, plain connections need not carry its size).
pub type Stream = Either<TcpStream, Box<TlsStream<TcpStream>>>;

/// The web config file and what it loaded.
pub struct Live {
    /// Basic auth's checker and cache; lives across reloads.
    auth: Authenticator,
    /// TLS handshakes' costly step, off the serving thread.
    handshakes: Arc<Fair>,
    /// What is in force; the watcher thread replaces it.
    in_force: Arc<Mutex<InForce>>,
}

impl Live {
    /// Loads `path`; any error is one line naming the file, the key and the
    /// reason. What rustls cannot do is said on stderr, once. Starts the
    /// thread that watches the files for as long as the `Live` exists.
    pub fn load(path: &Path) -> anyhow::Result<Live> {
        let snapshot = Snapshot::take(path);
        let active = build(path, &snapshot)?;
        if let Some(note) = &active.ignored {
            log!("web config {}: {note}", path.display());
        }
        let in_force = Arc::new(Mutex::new(InForce {
            active: Arc::new(active),
            snapshot,
        }));
        let watched = Arc::downgrade(&in_force);
        let watched_path = path.to_path_buf();
        std::thread::Builder::new()
            .name("web-config".into())
            .spawn(move || watch(&watched_path, &watched))
            .map_err(|err| anyhow!("cannot start the web config watcher: {err}"))?;
        Ok(Live {
            auth: Authenticator::new(),
            handshakes: handshake::queue(super::HEADER_TIMEOUT),
            in_force,
        })
    }

    /// What the start line says about the server: `https`, basic auth.
    pub fn describe(&self) -> String {
        let active = self.current();
        let scheme = active.tls.as_ref().map_or("http", |_| "https");
        let auth = (!active.users.is_empty()).then_some(", basic auth");
        format!("{scheme}{}", auth.unwrap_or_default())
    }

    /// The configuration in force.
    fn current(&self) -> Arc<Active> {
        lock(&self.in_force).active.clone()
    }

    /// The TLS handshake, if TLS is on, within `limit`: a client that never
    /// finishes it is dropped like one that never sends a request head.
    pub async fn accept(&self, tcp: TcpStream, client: IpAddr, limit: Duration) -> Option<Stream> {
        let active = self.current();
        let Some(config) = &active.tls else {
            return Some(Either::Left(tcp));
        };
        let handshake = handshake::accept(&self.handshakes, config.clone(), tcp, client);
        match tokio::time::timeout(limit, handshake).await {
            Ok(Ok(tls)) => Some(Either::Right(Box::new(tls))),
            // Refused certificates, garbage, timeouts: the client's fault,
            // and the client has been told by an alert where possible.
            _ => None,
        }
    }

    /// The rate limit, basic auth and headers around `handler`'s answer to
    /// a request from `client`.
    pub async fn answer(
        &self,
        request: &Request<Incoming>,
        client: IpAddr,
        handler: impl Future<Output = Response<Full<Bytes>>>,
    ) -> Response<Full<Bytes>> {
        let active = self.current();
        // OK: the handler answers.
        let (status, header) = if active
            .limiter
            .as_ref()
            .is_some_and(|limiter| !limiter.allow(Instant::now()))
        {
            (StatusCode::TOO_MANY_REQUESTS, None)
        } else if active.users.is_empty() {
            (StatusCode::OK, None)
        } else {
            let authorization = request.headers().get(AUTHORIZATION);
            match self.auth.check(&active.users, authorization, client).await {
                Verdict::Allow => (StatusCode::OK, None),
                Verdict::Deny => (StatusCode::UNAUTHORIZED, Some((WWW_AUTHENTICATE, "Basic"))),
                // Too many password checks wait: not a refusal, a retry.
                Verdict::Busy => (StatusCode::TOO_MANY_REQUESTS, Some((RETRY_AFTER, "1"))),
            }
        };
        let mut response = if status == StatusCode::OK {
            handler.await
        } else {
            let reason = status.canonical_reason().unwrap_or_default();
            plain(status, format!("{reason}\n"))
        };
        let header = header.map(|(name, value)| (name, HeaderValue::from_static(value)));
        for (name, value) in header.into_iter().chain(active.headers.iter().cloned()) {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

/// `rate_limit`: one token bucket for all requests, as exporter-toolkit's
/// (Go's `rate.NewLimiter(rate.Every(interval), burst)`): it starts full
/// with `burst` tokens and gains one every `interval`; a request that finds
/// it empty is answered 429.
pub struct Limiter {
    limit: RateLimit,
    /// Tokens left, and when that was computed.
    state: Mutex<(f64, Instant)>,
}

impl Limiter {
    /// A full bucket.
    pub fn new(limit: RateLimit, now: Instant) -> Limiter {
        let state = Mutex::new((f64::from(limit.burst), now));
        Limiter { limit, state }
    }

    /// Takes a token if there is one.
    pub fn allow(&self, now: Instant) -> bool {
        let mut state = lock(&self.state);
        let (tokens, since) = *state;
        let gained =
            now.saturating_duration_since(since).as_secs_f64() / self.limit.interval.as_secs_f64();
        let tokens = (tokens + gained).min(f64::from(self.limit.burst));
        let allowed = tokens >= 1.0;
        *state = (if allowed { tokens - 1.0 } else { tokens }, now);
        allowed
    }
}

/// Watches the files until the `Live` is gone: see the module's text.
fn watch(path: &Path, in_force: &Weak<Mutex<InForce>>) {
    let Some(mut seen) = in_force.upgrade().map(|f| lock(&f).snapshot.stamps()) else {
        return;
    };
    // A changed reading, and since when it has read the same.
    let mut candidate: Option<(Instant, Snapshot)> = None;
    loop {
        std::thread::sleep(POLL);
        let Some(in_force) = in_force.upgrade() else {
            return;
        };
        if candidate.is_none() && seen.iter().all(|(p, s)| stamp(p) == *s) {
            continue;
        }
        let now = Snapshot::take(path);
        match &candidate {
            Some((since, previous)) if *previous == now => {
                if since.elapsed() >= SETTLE {
                    candidate = None;
                    seen = now.stamps();
                    decide(path, &in_force, now);
                }
            }
            _ => candidate = Some((Instant::now(), now)),
        }
    }
}

/// Applies a settled reading, or says why it keeps the config in force.
/// Only this thread replaces what is in force, so the lock is not held
/// while the new config is built.
fn decide(path: &Path, in_force: &Mutex<InForce>, next: Snapshot) {
    let current = {
        let mut in_force = lock(in_force);
        if next.same_bytes(&in_force.snapshot) {
            // Touched, or put back as it was: nothing to do.
            in_force.snapshot = next;
            return;
        }
        in_force.active.clone()
    };
    let active = match build(path, &next) {
        Ok(active) => active,
        Err(err) => {
            log!("{err:#}; keeping the configuration in force");
            return;
        }
    };
    if let Some(why) = current.access.weakened_by(active.access) {
        log!(
            "web config {}: not applied while serving: {why}; restart port_exporter to apply \
             it; keeping the configuration in force",
            path.display()
        );
        return;
    }
    if active.ignored != current.ignored
        && let Some(note) = &active.ignored
    {
        log!("web config {}: {note}", path.display());
    }
    log!("web config {} reloaded", path.display());
    *lock(in_force) = InForce {
        active: Arc::new(active),
        snapshot: next,
    };
}

/// Validates a snapshot of the file and everything it names.
fn build(path: &Path, snapshot: &Snapshot) -> anyhow::Result<Active> {
    let bytes = snapshot.0[0]
        .bytes
        .as_ref()
        .map_err(|(_, err)| anyhow!("cannot read web config {}: {err}", path.display()))?;
    let in_error = |err| anyhow!("web config {}: {err}", path.display());
    let text = std::str::from_utf8(bytes)
        .map_err(|_| anyhow!("web config {}: not UTF-8 text", path.display()))?;
    let config = WebConfig::parse(text, dir_of(path)).map_err(in_error)?;
    let settings = config.tls.as_ref();
    let built = settings
        .map(|settings| tls::build(settings, &|p| snapshot.read(p)))
        .transpose()
        .map_err(in_error)?;
    let mut notes = config.notes.clone();
    notes.extend(built.as_ref().and_then(|(_, ignored)| ignored.clone()));
    let ignored = (!notes.is_empty()).then(|| notes.join("; "));
    let access = Access {
        tls: settings.is_some(),
        client_auth: settings.map_or(ClientAuth::NoClientCert, |t| t.client_auth),
        allowed_sans: settings.is_some_and(|t| t.client_allowed_sans.is_some()),
        basic_auth: !config.users.is_empty(),
    };
    Ok(Active {
        tls: built.map(|(config, _)| config),
        users: config.users,
        headers: config.headers,
        limiter: config
            .rate_limit
            .map(|limit| Limiter::new(limit, Instant::now())),
        ignored,
        access,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(tls: bool, client_auth: ClientAuth, allowed_sans: bool, basic_auth: bool) -> Access {
        Access {
            tls,
            client_auth,
            allowed_sans,
            basic_auth,
        }
    }

    #[test]
    fn what_weakens_access() {
        use ClientAuth::*;
        let full = access(true, RequireAndVerifyClientCert, true, true);
        let weaker = [
            (
                access(false, NoClientCert, false, true),
                "TLS would be turned off",
            ),
            (
                access(true, RequireAndVerifyClientCert, true, false),
                "basic auth would be turned off",
            ),
            (
                access(true, VerifyClientCertIfGiven, true, true),
                "VerifyClientCertIfGiven would no longer require",
            ),
            (
                access(true, RequireAnyClientCert, true, true),
                "RequireAnyClientCert would no longer verify",
            ),
            (
                access(true, RequireAndVerifyClientCert, false, true),
                "client_allowed_sans would be removed",
            ),
        ];
        for (next, needle) in weaker {
            let why = full.weakened_by(next).unwrap_or_default();
            assert!(why.contains(needle), "{next:?}: {why:?}");
        }
        // Everything at once: every clause, one line.
        let why = full
            .weakened_by(access(true, NoClientCert, false, false))
            .unwrap();
        assert_eq!(why.matches("; ").count(), 2, "{why}");
        // Equal or stronger: applied.
        let plain = access(false, NoClientCert, false, false);
        assert_eq!(
            plain.weakened_by(access(false, NoClientCert, false, true)),
            None
        );
        assert_eq!(full.weakened_by(full), None);
        let any = access(true, RequireAnyClientCert, false, true);
        assert_eq!(any.weakened_by(full), None);
        let request = access(true, RequestClientCert, false, false);
        assert_eq!(
            request.weakened_by(access(true, NoClientCert, false, false)),
            None
        );
        // TLS turned on breaks every plain client: a restart too.
        assert!(
            plain
                .weakened_by(access(true, NoClientCert, false, false))
                .is_some()
        );
    }

    #[test]
    fn a_burst_then_one_per_interval() {
        let start = Instant::now();
        let limiter = Limiter::new(
            RateLimit {
                interval: Duration::from_millis(100),
                burst: 3,
            },
            start,
        );
        assert!((0..3).all(|_| limiter.allow(start)));
        assert!(!limiter.allow(start));
        let later = start + Duration::from_millis(150);
        assert!(limiter.allow(later));
        assert!(!limiter.allow(later));
        // Idle for long: the bucket holds no more than the burst.
        let much_later = start + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| limiter.allow(much_later)).count(), 3);
    }
}
