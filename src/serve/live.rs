//! The web config in force: loaded at start, reloaded when its file or a
//! certificate, key or CA file it names changes, and applied to each
//! connection (the TLS handshake) and each request (rate limit, basic auth,
//! headers) as a layer in front of the handler.
//!
//! The peer re-reads everything for each connection and request. Here the
//! files' modification times, sizes and inodes are compared at most once a
//! second, and everything is re-read only when one of them changed: a
//! rotated certificate is served from the next connection on. A changed
//! file that does not load (say, a new certificate whose key has not been
//! written yet) leaves the configuration in force as it was; the error is
//! said once, and the next change is tried again.

use std::{
    collections::BTreeMap,
    future::Future,
    net::IpAddr,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant, SystemTime},
};

use anyhow::anyhow;
use http_body_util::Full;
use hyper::{
    Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{AUTHORIZATION, HeaderName, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE},
};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use crate::log::log;

use super::{
    auth::{Authenticator, Verdict},
    handshake::Handshakes,
    plain,
    ratelimit::Limiter,
    stream::Stream,
    tls,
    webconfig::WebConfig,
};

/// How often the files are checked for changes, at most.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// What one load of the files produced.
pub struct Active {
    /// TLS, when the file configures it.
    tls: Option<TlsAcceptor>,
    /// `basic_auth_users`; empty: no auth.
    users: BTreeMap<String, String>,
    /// `http_server_config.headers`.
    headers: Vec<(HeaderName, HeaderValue)>,
    /// `rate_limit`.
    limiter: Option<Limiter>,
    /// What rustls cannot do and is ignored, if anything.
    ignored: Option<String>,
}

/// One file's identity and state: a change in any part means a reload.
type Stamp = Option<(SystemTime, u64, u64, u64)>;

/// The web config file and what it loaded.
pub struct Live {
    /// The file given to --web.config.file.
    path: PathBuf,
    /// Basic auth's checker and cache; lives across reloads.
    auth: Authenticator,
    /// TLS handshakes' costly step, off the serving thread.
    handshakes: Handshakes,
    /// What is in force, and when the files were last looked at.
    state: Mutex<State>,
}

/// The mutable part of [`Live`].
struct State {
    active: Arc<Active>,
    /// The files of the last load attempt, with their stamps then.
    stamps: Vec<(PathBuf, Stamp)>,
    checked: Instant,
}

impl Live {
    /// Loads `path`; any error is one line naming the file, the key and the
    /// reason. What rustls cannot do is said on stderr, once.
    pub fn load(path: &Path) -> anyhow::Result<Live> {
        let (active, files) = load(path)?;
        if let Some(note) = &active.ignored {
            log!("web config {}: {note}", path.display());
        }
        Ok(Live {
            path: path.to_path_buf(),
            auth: Authenticator::new(),
            handshakes: Handshakes::new(super::HEADER_TIMEOUT),
            state: Mutex::new(State {
                active: Arc::new(active),
                stamps: stamps(files),
                checked: Instant::now(),
            }),
        })
    }

    /// What the start line says about the server: `https`, basic auth.
    pub fn describe(&self) -> String {
        let active = self.current();
        let mut parts = vec![if active.tls.is_some() {
            "https"
        } else {
            "http"
        }];
        if !active.users.is_empty() {
            parts.push("basic auth");
        }
        parts.join(", ")
    }

    /// The configuration in force, reloaded first if a file changed (looked
    /// at no more than once a second).
    fn current(&self) -> Arc<Active> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.checked.elapsed() < CHECK_EVERY {
            return state.active.clone();
        }
        state.checked = Instant::now();
        let now: Vec<(PathBuf, Stamp)> = stamps(state.stamps.iter().map(|(p, _)| p.clone()));
        if now == state.stamps {
            return state.active.clone();
        }
        match load(&self.path).and_then(|(active, files)| {
            if active.tls.is_some() != state.active.tls.is_some() {
                return Err(anyhow!(
                    "web config {}: TLS cannot be turned on or off while serving; restart",
                    self.path.display()
                ));
            }
            Ok((active, files))
        }) {
            Ok((active, files)) => {
                if active.ignored != state.active.ignored
                    && let Some(note) = &active.ignored
                {
                    log!("web config {}: {note}", self.path.display());
                }
                log!("web config {} reloaded", self.path.display());
                state.active = Arc::new(active);
                state.stamps = stamps(files);
            }
            Err(err) => {
                log!("{err:#}; keeping the configuration in force");
                // Not retried until a file changes again.
                state.stamps = now;
            }
        }
        state.active.clone()
    }

    /// The TLS handshake, if TLS is on, within `limit`: a client that never
    /// finishes it is dropped like one that never sends a request head.
    pub async fn accept(&self, tcp: TcpStream, client: IpAddr, limit: Duration) -> Option<Stream> {
        let active = self.current();
        let Some(acceptor) = &active.tls else {
            return Some(Stream::Plain(tcp));
        };
        let config = acceptor.config().clone();
        let handshake = self.handshakes.accept(config, tcp, client);
        match tokio::time::timeout(limit, handshake).await {
            Ok(Ok(tls)) => Some(Stream::Tls(Box::new(tls))),
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
        let limited = active
            .limiter
            .as_ref()
            .is_some_and(|limiter| !limiter.allow(Instant::now()));
        let verdict = if limited {
            None
        } else if active.users.is_empty() {
            Some(Verdict::Allow)
        } else {
            let authorization = request.headers().get(AUTHORIZATION);
            Some(self.auth.check(&active.users, authorization, client).await)
        };
        let mut response = match verdict {
            None => plain(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests\n".into()),
            // Too many password checks wait: not a refusal, a retry.
            Some(Verdict::Busy) => {
                let mut response =
                    plain(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests\n".into());
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from_static("1"));
                response
            }
            Some(Verdict::Deny) => {
                let mut response = plain(StatusCode::UNAUTHORIZED, "Unauthorized\n".into());
                response
                    .headers_mut()
                    .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
                response
            }
            Some(Verdict::Allow) => handler.await,
        };
        for (name, value) in &active.headers {
            response.headers_mut().insert(name.clone(), value.clone());
        }
        response
    }
}

/// Reads and validates the file and everything it names.
fn load(path: &Path) -> anyhow::Result<(Active, Vec<PathBuf>)> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| anyhow!("cannot read web config {}: {err}", path.display()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let in_error = |err| anyhow!("web config {}: {err}", path.display());
    let config = WebConfig::parse(&text, dir).map_err(in_error)?;
    let mut files = vec![path.to_path_buf()];
    let (tls, ignored) = match &config.tls {
        None => (None, None),
        Some(settings) => {
            let built = tls::build(settings).map_err(in_error)?;
            files.extend(built.files);
            (Some(TlsAcceptor::from(built.config)), built.ignored)
        }
    };
    let active = Active {
        tls,
        users: config.users,
        headers: config.headers,
        limiter: config
            .rate_limit
            .map(|limit| Limiter::new(limit, Instant::now())),
        ignored,
    };
    Ok((active, files))
}

/// Each file with its stamp now.
fn stamps(files: impl IntoIterator<Item = PathBuf>) -> Vec<(PathBuf, Stamp)> {
    files
        .into_iter()
        .map(|path| {
            let stamp = std::fs::metadata(&path).ok().map(|meta| {
                (
                    meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    meta.len(),
                    meta.ino(),
                    meta.dev(),
                )
            });
            (path, stamp)
        })
        .collect()
}
