//! `--web.config.file`: exporter-toolkit's web configuration file
//! (docs/web-configuration.md there), parsed and validated, so that a file
//! written for node_exporter works here unchanged. Parsing is strict as the
//! peer's (`yaml.UnmarshalStrict`): unknown and duplicate keys are errors.
//! Every error names the key and the reason; the caller adds the file.
//! Relative paths resolve against the file's directory. Reading the
//! certificates and building the TLS configuration is `tls.rs`'s job.

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
    time::Duration,
};

use hyper::header::{HeaderName, HeaderValue};
use serde::Deserialize;

use super::tls::{CIPHER_SUITES, CURVES, VERSIONS};

mod go;
use go::{StrictMap, go_duration, yaml11_bool};

/// What a web config file asks for, validated.
#[derive(Debug, Default)]
pub struct WebConfig {
    /// TLS, if `tls_server_config` configures it.
    pub tls: Option<TlsSettings>,
    /// `http_server_config.headers`: added to every response.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// `basic_auth_users`: user name to bcrypt hash. Empty: no basic auth.
    pub users: BTreeMap<String, String>,
    /// `rate_limit`, when its interval is not zero.
    pub rate_limit: Option<RateLimit>,
    /// What the file asks for that means less than it may seem (said once
    /// on stderr, the file still starts as it does with the peer).
    pub notes: Vec<String>,
}

/// `tls_server_config`, with paths made absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// `cert_file` or `cert`.
    pub cert: Source,
    /// `key_file` or `key`.
    pub key: Source,
    /// `client_ca_file` or `client_ca`.
    pub client_ca: Option<Source>,
    pub client_auth: ClientAuth,
    /// `client_allowed_sans`: a client certificate must carry one of these.
    pub client_allowed_sans: Option<Vec<String>>,
    /// `min_version` (default TLS12).
    pub min_version: TlsVersion,
    /// `max_version` (default TLS13).
    pub max_version: TlsVersion,
    /// `cipher_suites` by their Go names, in preference order; `None`: all.
    pub cipher_suites: Option<Vec<&'static str>>,
    pub curve_preferences: Option<Vec<&'static str>>,
    /// `prefer_server_cipher_suites` (default true).
    pub prefer_server_cipher_suites: bool,
}

/// PEM text given in a file or inline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A path, absolute once parsed.
    File(PathBuf),
    /// The PEM text itself.
    Inline(String),
}

/// `client_auth_type`: Go's `tls.ClientAuthType` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Never ask for a client certificate (the default).
    NoClientCert,
    /// Ask, accept any certificate or none.
    RequestClientCert,
    /// Require a certificate, verify nothing about it.
    RequireAnyClientCert,
    /// Ask; verify a certificate if one is sent.
    VerifyClientCertIfGiven,
    /// Require a certificate signed by the client CA.
    RequireAndVerifyClientCert,
}

impl ClientAuth {
    /// The names the peer accepts, including its legacy alias.
    const NAMES: &'static str = "NoClientCert, RequestClientCert, RequireAnyClientCert, \
                                 VerifyClientCertIfGiven or RequireAndVerifyClientCert";

    /// Parses a Go name; `""` is the default.
    fn parse(name: &str) -> Option<ClientAuth> {
        Some(match name {
            "" | "NoClientCert" => ClientAuth::NoClientCert,
            "RequestClientCert" => ClientAuth::RequestClientCert,
            // "RequireClientCert" is the peer's old spelling, still accepted.
            "RequireAnyClientCert" | "RequireClientCert" => ClientAuth::RequireAnyClientCert,
            "VerifyClientCertIfGiven" => ClientAuth::VerifyClientCertIfGiven,
            "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerifyClientCert,
            _ => return None,
        })
    }

    /// Whether a client certificate is checked against the client CA.
    pub fn verifies(self) -> bool {
        matches!(
            self,
            ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert
        )
    }

    /// Whether the handshake fails without a client certificate.
    pub fn requires(self) -> bool {
        matches!(
            self,
            ClientAuth::RequireAnyClientCert | ClientAuth::RequireAndVerifyClientCert
        )
    }
}

impl fmt::Display for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A TLS version as the file names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls10,
    Tls11,
    Tls12,
    Tls13,
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The file's name, from the table the parser reads it with.
        let (name, _) = VERSIONS
            .iter()
            .find(|(_, v)| v == self)
            .expect("in VERSIONS");
        f.write_str(name)
    }
}

/// `rate_limit`: a token bucket shared by all requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// One request's worth of tokens comes back every `interval`.
    pub interval: Duration,
    /// Requests allowed at once when the bucket is full.
    pub burst: u32,
}

/// A validation error: the key (dotted path) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    /// Such as `tls_server_config.cipher_suites`.
    pub key: String,
    pub reason: String,
}

impl KeyError {
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> KeyError {
        KeyError {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "{}: {}", self.key, self.reason)
        }
    }
}

/// The file as written: every key optional, unknown ones refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    tls_server_config: Option<RawTls>,
    http_server_config: Option<RawHttp>,
    basic_auth_users: Option<StrictMap>,
    rate_limit: Option<RawRateLimit>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Option<String>,
    key: Option<String>,
    client_ca: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    client_auth_type: Option<String>,
    client_ca_file: Option<String>,
    client_allowed_sans: Option<Vec<String>>,
    min_version: Option<String>,
    max_version: Option<String>,
    cipher_suites: Option<Vec<String>>,
    curve_preferences: Option<Vec<String>>,
    #[serde(default, deserialize_with = "yaml11_bool")]
    prefer_server_cipher_suites: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    #[serde(default, deserialize_with = "yaml11_bool")]
    http2: Option<bool>,
    headers: Option<StrictMap>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    interval: Option<String>,
    burst: Option<i64>,
}

/// The headers the peer lets a file set, with the values it allows (`None`:
/// any value).
const HEADERS: &[(&str, Option<&[&str]>)] = &[
    ("Strict-Transport-Security", None),
    ("X-Content-Type-Options", Some(&["nosniff"])),
    ("X-Frame-Options", Some(&["deny", "sameorigin"])),
    ("X-XSS-Protection", None),
    ("Content-Security-Policy", None),
];

impl WebConfig {
    /// Parses and validates the text of a web config file found in `dir`.
    pub fn parse(text: &str, dir: &Path) -> Result<WebConfig, KeyError> {
        // An empty file (or one with only comments) is a valid, empty config.
        let raw: RawConfig = if text.lines().all(|l| {
            let l = l.trim();
            l.is_empty() || l.starts_with('#') || l == "---"
        }) {
            RawConfig::default()
        } else {
            // serde_norway's message already starts with the key path
            // (`tls_server_config.cert_file: invalid type...`).
            serde_norway::from_str(text)
                .map_err(|err| KeyError::new("", err.to_string().replace('\n', " ")))?
        };
        let mut config = WebConfig::default();
        if let Some(tls) = raw.tls_server_config {
            config.tls = tls_settings(tls, dir, &mut config.notes)?;
        }
        if let Some(http) = raw.http_server_config {
            // http2 is accepted for compatibility: we serve HTTP/1.1 only.
            let _ = http.http2;
            config.headers = headers(http.headers.unwrap_or_default().0)?;
        }
        if let Some(StrictMap(users)) = raw.basic_auth_users {
            for (user, hash) in &users {
                let key = format!("basic_auth_users.{user}");
                if user.contains(':') {
                    return Err(KeyError::new(
                        key,
                        "a user name cannot contain ':' (basic auth could never send it)",
                    ));
                }
                check_bcrypt(hash).map_err(|why| KeyError::new(key, why))?;
            }
            config.users = users;
        }
        config.rate_limit = raw.rate_limit.map(rate_limit).transpose()?.flatten();
        Ok(config)
    }
}

/// Validates `tls_server_config`; `None` when it configures nothing, which
/// the peer takes as plain HTTP.
fn tls_settings(
    raw: RawTls,
    dir: &Path,
    notes: &mut Vec<String>,
) -> Result<Option<TlsSettings>, KeyError> {
    const K: &str = "tls_server_config";
    let key = |name: &str| format!("{K}.{name}");
    let set = |value: &Option<String>| value.as_deref().filter(|v| !v.is_empty()).is_some();
    let sources = [&raw.cert, &raw.key, &raw.cert_file, &raw.key_file];
    let auth = [&raw.client_ca, &raw.client_ca_file, &raw.client_auth_type];
    if !sources.into_iter().chain(auth).any(set) {
        // Other keys without any certificate: the peer serves plain HTTP
        // and ignores them; so do we, but not silently.
        let stray = [
            ("client_allowed_sans", raw.client_allowed_sans.is_some()),
            ("min_version", set(&raw.min_version)),
            ("max_version", set(&raw.max_version)),
            ("cipher_suites", raw.cipher_suites.is_some()),
            ("curve_preferences", raw.curve_preferences.is_some()),
            (
                "prefer_server_cipher_suites",
                raw.prefer_server_cipher_suites.is_some(),
            ),
        ];
        let named: Vec<String> = stray
            .iter()
            .filter(|(_, present)| *present)
            .map(|(name, _)| key(name))
            .collect();
        if !named.is_empty() {
            let they = if named.len() > 1 { "they are" } else { "it is" };
            notes.push(format!(
                "{} set, but there is no cert_file or cert: TLS is off (plain HTTP), \
                 and {they} ignored",
                named.join(", "),
            ));
        }
        return Ok(None);
    }
    let cert = source(dir, "cert", raw.cert_file, raw.cert)?
        .ok_or_else(|| KeyError::new(K, "missing one of cert or cert_file"))?;
    let private = source(dir, "key", raw.key_file, raw.key)?
        .ok_or_else(|| KeyError::new(K, "missing one of key or key_file"))?;
    let client_ca = source(dir, "client_ca", raw.client_ca_file, raw.client_ca)?;
    let auth_name = raw.client_auth_type.unwrap_or_default();
    let client_auth = ClientAuth::parse(&auth_name).ok_or_else(|| {
        KeyError::new(
            key("client_auth_type"),
            format!(
                "unknown client auth type {auth_name:?}; expected {}",
                ClientAuth::NAMES
            ),
        )
    })?;
    let ca_key = match &client_ca {
        Some(Source::Inline(_)) => key("client_ca"),
        _ => key("client_ca_file"),
    };
    match (&client_ca, client_auth) {
        (Some(_), ClientAuth::NoClientCert) => {
            return Err(KeyError::new(
                ca_key,
                "a client CA is configured with client_auth_type NoClientCert, which never \
                 asks for a client certificate; use RequireAndVerifyClientCert (or \
                 VerifyClientCertIfGiven)",
            ));
        }
        (Some(_), auth) if !auth.verifies() => notes.push(format!(
            "{ca_key} is only named to clients as a hint: client_auth_type {auth} never \
             checks a certificate against it (RequireAndVerifyClientCert does)"
        )),
        (None, auth) if auth.verifies() => notes.push(format!(
            "client_auth_type {auth} without client_ca_file: client certificates are \
             verified against the system's trusted roots"
        )),
        _ => {}
    }
    if raw.client_allowed_sans.is_some() && !client_auth.requires() {
        return Err(KeyError::new(
            key("client_allowed_sans"),
            format!(
                "needs client_auth_type RequireAnyClientCert or RequireAndVerifyClientCert, \
                 not {client_auth}: a client could connect without a certificate"
            ),
        ));
    }
    let version = |name: &str, value: Option<String>, default| match value.as_deref() {
        None | Some("") => Ok(default),
        Some(text) => VERSIONS
            .iter()
            .find(|(n, _)| *n == text)
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                KeyError::new(
                    key(name),
                    format!("unknown TLS version {text:?}; expected TLS10, TLS11, TLS12 or TLS13"),
                )
            }),
    };
    let min_given = set(&raw.min_version);
    let min_version = version("min_version", raw.min_version, TlsVersion::Tls12)?;
    let max_version = version("max_version", raw.max_version, TlsVersion::Tls13)?;
    if min_version > max_version {
        return Err(if min_given {
            KeyError::new(
                key("min_version"),
                format!("{min_version} is above max_version {max_version}"),
            )
        } else {
            KeyError::new(
                key("max_version"),
                format!("{max_version} is below min_version {min_version} (the default)"),
            )
        });
    }
    Ok(Some(TlsSettings {
        cert,
        key: private,
        client_ca,
        client_auth,
        client_allowed_sans: raw.client_allowed_sans,
        min_version,
        max_version,
        cipher_suites: names(
            "cipher_suites",
            raw.cipher_suites,
            &CIPHER_SUITES,
            "cipher suite",
        )?,
        curve_preferences: names("curve_preferences", raw.curve_preferences, &CURVES, "curve")?,
        prefer_server_cipher_suites: raw.prefer_server_cipher_suites.unwrap_or(true),
    }))
}

/// One of the keys `{inline_key}_file` and `{inline_key}`; both at once is
/// ambiguous.
fn source(
    dir: &Path,
    inline_key: &str,
    file: Option<String>,
    inline: Option<String>,
) -> Result<Option<Source>, KeyError> {
    let file = file.filter(|f| !f.is_empty());
    match (file, inline.filter(|i| !i.is_empty())) {
        (Some(_), Some(_)) => Err(KeyError::new(
            format!("tls_server_config.{inline_key}_file"),
            format!("both {inline_key}_file and {inline_key} are set; keep one"),
        )),
        (Some(file), None) => Ok(Some(Source::File(dir.join(file)))),
        (None, Some(text)) => Ok(Some(Source::Inline(text))),
        (None, None) => Ok(None),
    }
}

/// Checks the Go names of `tls_server_config.{key}` against a table of
/// `tls.rs`; `None` when absent or empty.
fn names<T>(
    key: &str,
    given: Option<Vec<String>>,
    known: &[(&'static str, T)],
    what: &str,
) -> Result<Option<Vec<&'static str>>, KeyError> {
    let Some(given) = given.filter(|given| !given.is_empty()) else {
        return Ok(None);
    };
    let known: Vec<&'static str> = known.iter().map(|(name, _)| *name).collect();
    let find = |name: &String| {
        known.iter().copied().find(|k| k == name).ok_or_else(|| {
            KeyError::new(
                format!("tls_server_config.{key}"),
                format!("unknown {what} {name:?}; known: {}", known.join(", ")),
            )
        })
    };
    given.iter().map(find).collect::<Result<_, _>>().map(Some)
}

/// `http_server_config.headers`, checked as the peer checks them. Blank
/// values mean unset.
fn headers(given: BTreeMap<String, String>) -> Result<Vec<(HeaderName, HeaderValue)>, KeyError> {
    let mut out = Vec::new();
    for (name, value) in given {
        let key = format!("http_server_config.headers.{name}");
        let Some((_, allowed)) = HEADERS.iter().find(|(n, _)| *n == name) else {
            let names: Vec<&str> = HEADERS.iter().map(|(n, _)| *n).collect();
            return Err(KeyError::new(
                key,
                format!(
                    "this header can not be configured; only {}",
                    names.join(", ")
                ),
            ));
        };
        if value.is_empty() {
            continue;
        }
        if let Some(allowed) = allowed
            && !allowed.contains(&value.as_str())
        {
            return Err(KeyError::new(
                key,
                format!("invalid value {value:?}; expected {}", allowed.join(" or ")),
            ));
        }
        let header_value = HeaderValue::from_str(&value)
            .map_err(|_| KeyError::new(&key, "the value is not a valid HTTP header value"))?;
        let header_name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| KeyError::new(&key, "not a valid HTTP header name"))?;
        out.push((header_name, header_value));
    }
    Ok(out)
}

/// Whether `hash` is a bcrypt hash the peer and we can check: `$2a$`,
/// `$2b$` or `$2y$`, a two-digit cost of 4 to 31, then 53 characters of
/// bcrypt's base64. The hash itself is never echoed: it is a secret.
pub fn check_bcrypt(hash: &str) -> Result<(), String> {
    const HOW: &str = "make one with: htpasswd -nBC 10 \"\" | tr -d ':\\n'";
    if !matches!(
        hash.as_bytes(),
        [b'$', b'2', b'a' | b'b' | b'y', b'$', _, _, b'$', ..]
    ) {
        return Err(format!(
            "not a bcrypt hash (it must start with $2a$, $2b$ or $2y$ and a cost, \
             such as $2y$10$); {HOW}"
        ));
    }
    let cost: u32 = hash[4..6]
        .parse()
        .map_err(|_| format!("not a bcrypt hash: the cost is not two digits; {HOW}"))?;
    if !(4..=31).contains(&cost) {
        return Err(format!("bcrypt cost {cost} is outside 4-31; {HOW}"));
    }
    if hash.len() != 60 || hash.parse::<bcrypt::HashParts>().is_err() {
        return Err(format!(
            "not a bcrypt hash: expected 60 characters, the last 53 in bcrypt's base64; {HOW}"
        ));
    }
    Ok(())
}

/// `rate_limit`: disabled when the interval is zero or absent.
fn rate_limit(raw: RawRateLimit) -> Result<Option<RateLimit>, KeyError> {
    let interval = match raw.interval.as_deref() {
        None | Some("") => Duration::ZERO,
        Some(text) => go_duration(text).map_err(|why| KeyError::new("rate_limit.interval", why))?,
    };
    if interval.is_zero() {
        return Ok(None);
    }
    let burst = raw.burst.unwrap_or(0);
    if burst < 1 {
        return Err(KeyError::new(
            "rate_limit.burst",
            "must be at least 1 when interval is set (0 would refuse every request)",
        ));
    }
    Ok(Some(RateLimit {
        interval,
        burst: u32::try_from(burst).unwrap_or(u32::MAX),
    }))
}

#[cfg(test)]
mod tests;
