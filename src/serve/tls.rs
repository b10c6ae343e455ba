//! The rustls server configuration for `tls_server_config`.
//!
//! rustls (with the ring provider) does TLS 1.2 and 1.3 with AEAD cipher
//! suites and ECDHE over X25519, P-256 and P-384. Go's crypto/tls, which the
//! peer uses, can also do TLS 1.0 and 1.1, CBC suites, RSA key exchange and
//! P-521. A file that asks for those still starts when something usable
//! remains: what is dropped is returned as one note for the caller to say
//! once. When nothing usable remains, the file is refused.
//!
//! As with Go, `cipher_suites` only chooses among TLS 1.2 suites; TLS 1.3
//! suites are not configurable and are all on.

use std::{fmt, io, path::Path, sync::Arc};

use rustls::{
    RootCertStore, ServerConfig, SupportedCipherSuite,
    crypto::{CryptoProvider, SupportedKxGroup, ring},
    server::{NoClientAuth, WebPkiClientVerifier, danger::ClientCertVerifier},
    version::{TLS12, TLS13},
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use super::{
    clientcert::{AnyCert, Checked},
    webconfig::{ClientAuth, KeyError, Source, TlsSettings, TlsVersion},
};

/// How the certificate, key and CA files are read: `std::fs::read`, or the
/// bytes of a snapshot that the caller has seen settle.
pub type ReadFile<'a> = &'a dyn Fn(&Path) -> io::Result<Vec<u8>>;

/// Go's names of what `tls_server_config` chooses, here and nowhere else:
/// the cipher suites the peer accepts (Go's `tls.CipherSuites()`; Go's
/// insecure ones are unknown to it too) and rustls' suite for each, `None`
/// where rustls has none (CBC, RSA key exchange). As in Go, the TLS 1.3
/// suites are always on.
pub static CIPHER_SUITES: [(&str, Option<SupportedCipherSuite>); 17] = {
    use ring::cipher_suite as cs;
    [
        ("TLS_RSA_WITH_AES_128_CBC_SHA", None),
        ("TLS_RSA_WITH_AES_256_CBC_SHA", None),
        ("TLS_RSA_WITH_AES_128_GCM_SHA256", None),
        ("TLS_RSA_WITH_AES_256_GCM_SHA384", None),
        ("TLS_AES_128_GCM_SHA256", Some(cs::TLS13_AES_128_GCM_SHA256)),
        ("TLS_AES_256_GCM_SHA384", Some(cs::TLS13_AES_256_GCM_SHA384)),
        (
            "TLS_CHACHA20_POLY1305_SHA256",
            Some(cs::TLS13_CHACHA20_POLY1305_SHA256),
        ),
        ("TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", None),
        ("TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", None),
        ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", None),
        ("TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", None),
        (
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            Some(cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256),
        ),
        (
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            Some(cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384),
        ),
        (
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            Some(cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256),
        ),
        (
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            Some(cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384),
        ),
        (
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
            Some(cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256),
        ),
        (
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
            Some(cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256),
        ),
    ]
};

/// The curves the peer accepts, and rustls' key exchange group for each.
pub static CURVES: [(&str, Option<&dyn SupportedKxGroup>); 4] = [
    ("CurveP256", Some(ring::kx_group::SECP256R1)),
    ("CurveP384", Some(ring::kx_group::SECP384R1)),
    ("CurveP521", None),
    ("X25519", Some(ring::kx_group::X25519)),
];

/// The TLS versions the peer accepts (rustls has TLS12 and TLS13).
pub const VERSIONS: [(&str, TlsVersion); 4] = [
    ("TLS10", TlsVersion::Tls10),
    ("TLS11", TlsVersion::Tls11),
    ("TLS12", TlsVersion::Tls12),
    ("TLS13", TlsVersion::Tls13),
];

/// rustls' counterpart of a Go name from one of the tables above.
fn rustls<T: Copy>(table: &[(&str, Option<T>)], go_name: &str) -> Option<T> {
    table.iter().find(|(name, _)| *name == go_name)?.1
}

/// A PEM source and the key that names it in the file (`{inline}_file`, or
/// the inline one).
struct Pem<'a>(&'a Source, String);

impl Pem<'_> {
    fn new<'a>(source: &'a Source, inline: &str) -> Pem<'a> {
        let file = if let Source::File(_) = source {
            "_file"
        } else {
            ""
        };
        Pem(source, format!("tls_server_config.{inline}{file}"))
    }

    /// Where the text comes from, for messages.
    fn origin(&self) -> String {
        match self.0 {
            Source::File(path) => path.display().to_string(),
            Source::Inline(_) => "the inline text".into(),
        }
    }

    fn error(&self, why: impl fmt::Display) -> KeyError {
        KeyError::new(&self.1, format!("{} {why}", self.origin()))
    }

    fn read(&self, read_file: ReadFile) -> Result<Vec<u8>, KeyError> {
        match self.0 {
            Source::Inline(text) => Ok(text.as_bytes().to_vec()),
            Source::File(path) => read_file(path).map_err(|err| {
                KeyError::new(&self.1, format!("cannot read {}: {err}", path.display()))
            }),
        }
    }

    /// Every CERTIFICATE block.
    fn certificates(&self, read_file: ReadFile) -> Result<Vec<CertificateDer<'static>>, KeyError> {
        let certs = CertificateDer::pem_slice_iter(&self.read(read_file)?)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| self.error(format_args!("is not valid PEM: {err}")))?;
        if certs.is_empty() {
            let why = format!("no CERTIFICATE block in {}", self.origin());
            return Err(KeyError::new(&self.1, why));
        }
        Ok(certs)
    }
}

/// Builds the server configuration, and says in one sentence what the file
/// asks for that rustls cannot do, if anything; reads the certificate, key
/// and CA with `read_file`.
pub fn build(
    settings: &TlsSettings,
    read_file: ReadFile,
) -> Result<(Arc<ServerConfig>, Option<String>), KeyError> {
    let mut ignored = Vec::new();

    // Versions: rustls has 1.2 and 1.3 only.
    if settings.max_version < TlsVersion::Tls12 {
        return Err(KeyError::new(
            "tls_server_config.max_version",
            format!(
                "{}: rustls supports only TLS12 and TLS13, so no TLS version is left",
                settings.max_version
            ),
        ));
    }
    if settings.min_version < TlsVersion::Tls12 {
        ignored.push(format!(
            "TLS versions below TLS12 (min_version {})",
            settings.min_version
        ));
    }
    let mut tls12 = settings.min_version <= TlsVersion::Tls12;
    let tls13 = settings.max_version >= TlsVersion::Tls13;

    // Cipher suites: TLS 1.3's always, TLS 1.2's as listed.
    let base = ring::default_provider();
    let (mut suites, all12): (Vec<SupportedCipherSuite>, Vec<_>) =
        base.cipher_suites.iter().partition(|s| s.tls13().is_some());
    match &settings.cipher_suites {
        None => suites.extend(all12),
        Some(names) => {
            let (usable, unusable): (Vec<&str>, Vec<&str>) = names
                .iter()
                .partition(|n| rustls(&CIPHER_SUITES, n).is_some());
            let listed12: Vec<_> = usable
                .iter()
                .filter_map(|n| rustls(&CIPHER_SUITES, n))
                .filter(|suite| suite.tls13().is_none())
                .collect();
            if !unusable.is_empty() {
                ignored.push(format!(
                    "cipher suites {} (CBC or RSA key exchange)",
                    unusable.join(", ")
                ));
            }
            if tls12 && listed12.is_empty() {
                if !tls13 {
                    return Err(KeyError::new(
                        "tls_server_config.cipher_suites",
                        "rustls can use none of these for TLS12 (only ECDHE with AES-GCM or \
                         ChaCha20-Poly1305), and max_version excludes TLS13",
                    ));
                }
                ignored.push("TLS12, for which no listed cipher suite is usable".into());
                tls12 = false;
            }
            suites.extend(listed12);
        }
    }

    // Key exchange groups.
    let kx_groups = match &settings.curve_preferences {
        None => base.kx_groups.clone(),
        Some(names) => {
            let (usable, unusable): (Vec<&str>, Vec<&str>) =
                names.iter().partition(|n| rustls(&CURVES, n).is_some());
            if usable.is_empty() {
                return Err(KeyError::new(
                    "tls_server_config.curve_preferences",
                    format!(
                        "rustls supports none of {} (only X25519, CurveP256 and CurveP384)",
                        unusable.join(", ")
                    ),
                ));
            }
            if !unusable.is_empty() {
                ignored.push(format!("curves {}", unusable.join(", ")));
            }
            usable.iter().filter_map(|n| rustls(&CURVES, n)).collect()
        }
    };
    let provider = Arc::new(CryptoProvider {
        cipher_suites: suites,
        kx_groups,
        ..base
    });

    let cert = Pem::new(&settings.cert, "cert");
    let certs = cert.certificates(read_file)?;
    let pem = Pem::new(&settings.key, "key");
    let key = PrivateKeyDer::from_pem_slice(&pem.read(read_file)?).map_err(|err| {
        let why = "no private key (PKCS#8, PKCS#1 or SEC1 PEM) in";
        KeyError::new(&pem.1, format!("{why} {}: {err}", pem.origin()))
    })?;

    let verifier = client_verifier(settings, &provider, read_file)?;
    let versions: Vec<_> = [(tls13, &TLS13), (tls12, &TLS12)]
        .into_iter()
        .filter_map(|(on, version)| on.then_some(version))
        .collect();
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|err| KeyError::new("tls_server_config", err.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|err| {
            let why = match err {
                rustls::Error::InconsistentKeys(_) => {
                    "the certificate and the private key do not match".to_string()
                }
                other => format!("cannot use this certificate and key: {other}"),
            };
            KeyError::new(cert.1, why)
        })?;
    config.ignore_client_order = settings.prefer_server_cipher_suites;
    // HTTP/1.1 only, whatever http_server_config.http2 says.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let ignored = (!ignored.is_empty()).then(|| {
        let ignored = ignored.join("; ");
        format!("rustls cannot do what the file asks for here, ignoring: {ignored}")
    });
    Ok((Arc::new(config), ignored))
}

/// The client certificate policy of `client_auth_type`, with the checks
/// rustls lacks on top (`client_allowed_sans`, a client CA file's own
/// certificate presented as a client's).
fn client_verifier(
    settings: &TlsSettings,
    provider: &Arc<CryptoProvider>,
    read_file: ReadFile,
) -> Result<Arc<dyn ClientCertVerifier>, KeyError> {
    let (inner, anchors): (Arc<dyn ClientCertVerifier>, _) = match settings.client_auth {
        ClientAuth::NoClientCert => (Arc::new(NoClientAuth), Vec::new()),
        ClientAuth::RequestClientCert | ClientAuth::RequireAnyClientCert => {
            // A CA here is never checked against (the caller says so);
            // like the peer, the file must still be readable.
            if let Some(source) = &settings.client_ca {
                Pem::new(source, "client_ca").read(read_file)?;
            }
            let any = AnyCert {
                algorithms: provider.signature_verification_algorithms,
                mandatory: settings.client_auth == ClientAuth::RequireAnyClientCert,
            };
            (Arc::new(any), Vec::new())
        }
        ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert => {
            let mut roots = RootCertStore::empty();
            let (key, anchors) = match &settings.client_ca {
                Some(source) => {
                    let ca = Pem::new(source, "client_ca");
                    let anchors = ca.certificates(read_file)?;
                    for cert in &anchors {
                        roots.add(cert.clone()).map_err(|err| {
                            ca.error(format_args!("holds an unusable CA certificate: {err}"))
                        })?;
                    }
                    (ca.1, anchors)
                }
                None => {
                    // As Go does without ClientCAs: the system's roots
                    // (SSL_CERT_FILE, SSL_CERT_DIR, else /etc/ssl/certs).
                    let key = "tls_server_config.client_auth_type".to_string();
                    let found = rustls_native_certs::load_native_certs();
                    let (added, _) = roots.add_parsable_certificates(found.certs);
                    if added == 0 {
                        let why = found
                            .errors
                            .first()
                            .map_or("none found".to_string(), ToString::to_string);
                        return Err(KeyError::new(
                            key,
                            format!(
                                "{} without client_ca_file verifies client certificates \
                                 against the system's trusted roots, and none could be read: \
                                 {why}",
                                settings.client_auth
                            ),
                        ));
                    }
                    (key, Vec::new())
                }
            };
            let mut builder =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            if !settings.client_auth.requires() {
                builder = builder.allow_unauthenticated();
            }
            let webpki = builder
                .build()
                .map_err(|err| KeyError::new(key, err.to_string()))?;
            (webpki, anchors)
        }
    };
    let allowed_sans = settings.client_allowed_sans.clone();
    Ok(Checked::around(inner, anchors, allowed_sans))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::webconfig::WebConfig;
    use std::path::Path;

    /// A PEM block whose content is only base64: certificates are parsed
    /// as DER later, together with the key.
    const CERT: &str = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";

    fn settings(extra: &str) -> TlsSettings {
        let text = format!("tls_server_config:\n  cert: x\n  key: y\n{extra}");
        WebConfig::parse(&text, Path::new("/"))
            .unwrap()
            .tls
            .unwrap()
    }

    #[track_caller]
    fn refused(extra: &str, key: &str, needle: &str) {
        let err = match build(&settings(extra), &|p| std::fs::read(p)) {
            Ok(_) => panic!("{extra:?} was accepted"),
            Err(err) => err,
        };
        assert_eq!(err.key, key, "{err}");
        assert!(err.reason.contains(needle), "{err}");
    }

    #[test]
    fn what_leaves_nothing_usable_is_refused_before_reading_files() {
        refused(
            "  min_version: TLS10\n  max_version: TLS11\n",
            "tls_server_config.max_version",
            "no TLS version is left",
        );
        refused(
            "  max_version: TLS12\n  cipher_suites: [TLS_RSA_WITH_AES_128_CBC_SHA, TLS_AES_128_GCM_SHA256]\n",
            "tls_server_config.cipher_suites",
            "none of these",
        );
        refused(
            "  curve_preferences: [CurveP521]\n",
            "tls_server_config.curve_preferences",
            "none of CurveP521",
        );
    }

    #[test]
    fn pem_errors_name_the_key() {
        refused(
            "",
            "tls_server_config.cert",
            "no CERTIFICATE block in the inline text",
        );
        let text = format!(
            "tls_server_config:\n  cert: |\n{}  key: nothing\n",
            CERT.lines()
                .map(|l| format!("    {l}\n"))
                .collect::<String>()
        );
        let tls = WebConfig::parse(&text, Path::new("/"))
            .unwrap()
            .tls
            .unwrap();
        let err = build(&tls, &|p| std::fs::read(p)).err().unwrap();
        assert_eq!(err.key, "tls_server_config.key", "{err}");
        assert!(err.reason.contains("no private key"), "{err}");
        let tls = settings("").clone();
        let tls = TlsSettings {
            cert: Source::File("/nonexistent/cert.pem".into()),
            ..tls
        };
        let err = build(&tls, &|p| std::fs::read(p)).err().unwrap();
        assert_eq!(err.key, "tls_server_config.cert_file");
        assert!(
            err.reason
                .contains("cannot read /nonexistent/cert.pem: No such file"),
            "{err}"
        );
    }
}
