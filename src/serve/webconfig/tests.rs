use super::*;

const HASH: &str = "$2y$10$X0h1gDsPszWURQaxFh.zoubFi6DXncSjhoQNJgRrnGs7EsimhC7zG";

fn parse(text: &str) -> Result<WebConfig, String> {
    WebConfig::parse(text, Path::new("/etc/web")).map_err(|e| e.to_string())
}

#[track_caller]
fn refused(text: &str, needles: &[&str]) {
    let err = parse(text).expect_err(text);
    assert!(!err.contains('\n'), "{err}");
    for needle in needles {
        assert!(err.contains(needle), "{text:?}: {err:?} lacks {needle:?}");
    }
}

#[test]
fn an_empty_file_serves_plain_http_without_auth() {
    for text in ["", "\n", "# nothing\n", "---\n", "tls_server_config:\n"] {
        let config = parse(text).unwrap();
        assert!(config.tls.is_none() && config.users.is_empty(), "{text:?}");
        assert!(config.headers.is_empty() && config.rate_limit.is_none());
    }
}

#[test]
fn a_full_file_as_exporter_toolkit_documents_it() {
    let text = format!(
        "tls_server_config:
  cert_file: server.crt
  key_file: /abs/server.key
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: ca/ca.crt
  client_allowed_sans: [prometheus.example, 10.0.0.1]
  min_version: TLS13
  max_version: TLS13
  cipher_suites:
    - TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
    - TLS_AES_128_GCM_SHA256
  curve_preferences: [X25519, CurveP256]
  prefer_server_cipher_suites: false
http_server_config:
  http2: false
  headers:
    X-Frame-Options: deny
    X-Content-Type-Options: nosniff
    Strict-Transport-Security: max-age=31536000
    X-XSS-Protection: ''
basic_auth_users:
  alice: {HASH}
  bob: '$2b$04$abcdefghijklmnopqrstuu8z0w3YyO7T4yE0I2sE0q8kq1zHqP8S.'
rate_limit:
  interval: 1s
  burst: 10
"
    );
    let config = parse(&text).unwrap();
    let tls = config.tls.unwrap();
    assert_eq!(tls.cert, Source::File("/etc/web/server.crt".into()));
    assert_eq!(tls.key, Source::File("/abs/server.key".into()));
    assert_eq!(
        tls.client_ca,
        Some(Source::File("/etc/web/ca/ca.crt".into()))
    );
    assert_eq!(tls.client_auth, ClientAuth::RequireAndVerifyClientCert);
    assert_eq!(
        tls.client_allowed_sans.as_deref(),
        Some(&["prometheus.example".to_string(), "10.0.0.1".to_string()][..])
    );
    assert_eq!(
        (tls.min_version, tls.max_version),
        (TlsVersion::Tls13, TlsVersion::Tls13)
    );
    assert_eq!(
        tls.cipher_suites.as_deref(),
        Some(
            &[
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                "TLS_AES_128_GCM_SHA256"
            ][..]
        )
    );
    assert_eq!(
        tls.curve_preferences.as_deref(),
        Some(&["X25519", "CurveP256"][..])
    );
    assert!(!tls.prefer_server_cipher_suites);
    let headers: Vec<String> = config
        .headers
        .iter()
        .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap()))
        .collect();
    // Blank X-XSS-Protection means unset.
    assert_eq!(
        headers,
        [
            "strict-transport-security: max-age=31536000",
            "x-content-type-options: nosniff",
            "x-frame-options: deny"
        ]
    );
    assert_eq!(config.users.len(), 2);
    assert_eq!(
        config.rate_limit,
        Some(RateLimit {
            interval: Duration::from_secs(1),
            burst: 10
        })
    );
}

#[test]
fn defaults_and_inline_pem() {
    let config =
        parse("tls_server_config:\n  cert: |\n    -----BEGIN CERTIFICATE-----\n  key: k\n")
            .unwrap();
    let tls = config.tls.unwrap();
    assert_eq!(
        tls.cert,
        Source::Inline("-----BEGIN CERTIFICATE-----\n".into())
    );
    assert_eq!(tls.key, Source::Inline("k".into()));
    assert_eq!(
        (tls.min_version, tls.max_version),
        (TlsVersion::Tls12, TlsVersion::Tls13)
    );
    assert_eq!(tls.client_auth, ClientAuth::NoClientCert);
    assert!(tls.prefer_server_cipher_suites);
    assert!(tls.cipher_suites.is_none() && tls.curve_preferences.is_none());
}

#[test]
fn go_yaml_booleans_and_the_legacy_client_auth_name() {
    let config = parse(
            "tls_server_config:\n  cert_file: c\n  key_file: k\n  prefer_server_cipher_suites: no\n  client_auth_type: RequireClientCert\nhttp_server_config:\n  http2: on\n",
        )
        .unwrap();
    let tls = config.tls.unwrap();
    assert!(!tls.prefer_server_cipher_suites);
    assert_eq!(tls.client_auth, ClientAuth::RequireAnyClientCert);
}

#[test]
fn unknown_and_duplicate_keys_are_refused() {
    refused(
        "tls_server_config:\n  cert_fil: x\n",
        &["tls_server_config", "unknown field `cert_fil`"],
    );
    refused(
        "basic_auth_user:\n  a: b\n",
        &["unknown field `basic_auth_user`"],
    );
    refused(
        "http_server_config:\n  header: {}\n",
        &["http_server_config", "unknown field `header`"],
    );
    refused(
        "rate_limit:\n  every: 1s\n",
        &["rate_limit", "unknown field `every`"],
    );
    refused(
        &format!("basic_auth_users:\n  a: {HASH}\n  a: {HASH}\n"),
        &["basic_auth_users", "\"a\" is given twice"],
    );
    refused(
        "tls_server_config:\n  cert_file: [1]\n",
        &["tls_server_config.cert_file", "invalid type"],
    );
    refused(
        "tls_server_config: [1]\n",
        &["tls_server_config", "invalid type"],
    );
    refused("- a\n", &["invalid type"]);
    refused(
        "tls_server_config:\n  cert_file: \"x\n",
        &["found unexpected end of stream"],
    );
    refused(
        "tls_server_config:\n  cert_file: c\n  key_file: k\n  prefer_server_cipher_suites: maybe\n",
        &[
            "tls_server_config.prefer_server_cipher_suites",
            "\"maybe\", expected a boolean",
        ],
    );
}

#[test]
fn tls_errors_name_the_key() {
    let base = "tls_server_config:\n  cert_file: c\n  key_file: k\n";
    refused(
        "tls_server_config:\n  key_file: k\n",
        &["tls_server_config: missing one of cert or cert_file"],
    );
    refused(
        "tls_server_config:\n  cert_file: c\n",
        &["tls_server_config: missing one of key or key_file"],
    );
    refused(
        "tls_server_config:\n  client_auth_type: RequireAndVerifyClientCert\n",
        &["missing one of cert or cert_file"],
    );
    refused(
        &format!("{base}  cert: inline\n"),
        &["tls_server_config.cert_file", "both cert_file and cert"],
    );
    refused(
        &format!("{base}  min_version: TLS14\n"),
        &[
            "tls_server_config.min_version",
            "unknown TLS version \"TLS14\"",
        ],
    );
    refused(
        &format!("{base}  max_version: tls12\n"),
        &["tls_server_config.max_version", "\"tls12\""],
    );
    refused(
        &format!("{base}  min_version: TLS13\n  max_version: TLS12\n"),
        &[
            "tls_server_config.min_version",
            "TLS13 is above max_version TLS12",
        ],
    );
    refused(
        &format!("{base}  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n"),
        &[
            "tls_server_config.cipher_suites",
            "unknown cipher suite \"TLS_RSA_WITH_RC4_128_SHA\"",
        ],
    );
    refused(
        &format!("{base}  curve_preferences: [CurveP256, Curve25519]\n"),
        &[
            "tls_server_config.curve_preferences",
            "unknown curve \"Curve25519\"",
        ],
    );
    refused(
        &format!("{base}  client_auth_type: Always\n"),
        &[
            "tls_server_config.client_auth_type",
            "unknown client auth type \"Always\"",
        ],
    );
}

#[test]
fn tls_keys_without_a_certificate_mean_plain_http_said_once() {
    // As with the peer, which serves plain HTTP then.
    let config =
        parse("tls_server_config:\n  min_version: TLS13\n  client_allowed_sans: [a]\n").unwrap();
    assert!(config.tls.is_none());
    assert_eq!(
        config.notes,
        [
            "tls_server_config.client_allowed_sans, tls_server_config.min_version set, \
              but there is no cert_file or cert: TLS is off (plain HTTP), and they are ignored"
        ]
    );
}

#[test]
fn client_ca_and_client_auth_type_as_the_peer_takes_them() {
    let base = "tls_server_config:\n  cert_file: c\n  key_file: k\n";
    refused(
        &format!("{base}  client_ca_file: ca\n  client_auth_type: NoClientCert\n"),
        &["tls_server_config.client_ca_file", "NoClientCert"],
    );
    refused(
        &format!("{base}  client_ca_file: ca\n"),
        &["client_ca_file", "NoClientCert"],
    );
    refused(
        &format!("{base}  client_ca: pem\n"),
        &["tls_server_config.client_ca:", "NoClientCert"],
    );
    // Accepted, as the peer does, and said.
    for auth in ["RequestClientCert", "RequireAnyClientCert"] {
        let config = parse(&format!(
            "{base}  client_ca_file: ca\n  client_auth_type: {auth}\n"
        ))
        .unwrap();
        assert_eq!(config.notes.len(), 1);
        assert!(
            config.notes[0].contains(&format!(
                "tls_server_config.client_ca_file is only named to clients as a hint: \
                     client_auth_type {auth} never checks"
            )),
            "{:?}",
            config.notes
        );
    }
    for auth in ["RequireAndVerifyClientCert", "VerifyClientCertIfGiven"] {
        let config = parse(&format!("{base}  client_auth_type: {auth}\n")).unwrap();
        assert!(
            config.notes[0].contains("verified against the system's trusted roots"),
            "{:?}",
            config.notes
        );
        let config = parse(&format!(
            "{base}  client_auth_type: {auth}\n  client_ca_file: ca\n"
        ))
        .unwrap();
        assert!(config.notes.is_empty(), "{:?}", config.notes);
    }
    for auth in [
        "NoClientCert",
        "RequestClientCert",
        "VerifyClientCertIfGiven",
    ] {
        let ca = if auth == "VerifyClientCertIfGiven" {
            "  client_ca_file: ca\n"
        } else {
            ""
        };
        refused(
            &format!("{base}  client_auth_type: {auth}\n{ca}  client_allowed_sans: [a]\n"),
            &["tls_server_config.client_allowed_sans", auth],
        );
    }
    parse(&format!(
        "{base}  client_auth_type: RequireAnyClientCert\n  client_allowed_sans: [a]\n"
    ))
    .unwrap();
}

#[test]
fn headers_as_the_peer_allows_them() {
    refused(
        "http_server_config:\n  headers:\n    X-Powered-By: me\n",
        &[
            "http_server_config.headers.X-Powered-By",
            "can not be configured",
        ],
    );
    refused(
        "http_server_config:\n  headers:\n    x-frame-options: deny\n",
        &["headers.x-frame-options", "can not be configured"],
    );
    refused(
        "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
        &["headers.X-Frame-Options", "\"allow\"", "deny or sameorigin"],
    );
    refused(
        "http_server_config:\n  headers:\n    X-Content-Type-Options: sniff\n",
        &["headers.X-Content-Type-Options", "nosniff"],
    );
    refused(
        "http_server_config:\n  headers:\n    Content-Security-Policy: \"a\\nb\"\n",
        &[
            "headers.Content-Security-Policy",
            "not a valid HTTP header value",
        ],
    );
}

#[test]
fn passwords_must_be_bcrypt_hashes() {
    for (hash, needle) in [
        ("secret", "not a bcrypt hash"),
        (
            "$2x$10$X0h1gDsPszWURQaxFh.zoubFi6DXncSjhoQNJgRrnGs7EsimhC7zG",
            "$2a$, $2b$ or $2y$",
        ),
        (
            "$1$10$X0h1gDsPszWURQaxFh.zoubFi6DXncSjhoQNJgRrnGs7EsimhC7zG",
            "start with",
        ),
        (
            "$2y$03$X0h1gDsPszWURQaxFh.zoubFi6DXncSjhoQNJgRrnGs7EsimhC7zG",
            "cost 3 is outside 4-31",
        ),
        (
            "$2y$1a$X0h1gDsPszWURQaxFh.zoubFi6DXncSjhoQNJgRrnGs7EsimhC7zG",
            "not two digits",
        ),
        (
            "$2y$10$X0h1gDsPszWURQaxFh.zoubFi6DXncSjhoQNJgRrnGs7EsimhC7z",
            "60 characters",
        ),
        (
            "$2y$10$X0h1gDsPszWURQaxFh.zoubFi6DXncSjhoQNJgRrnGs7Esimh!7zG",
            "base64",
        ),
    ] {
        let text = format!("basic_auth_users:\n  alice: '{hash}'\n");
        refused(
            &text,
            &["basic_auth_users.alice", needle, "htpasswd -nBC 10"],
        );
        assert!(
            !parse(&text).unwrap_err().contains(hash),
            "the secret was echoed"
        );
    }
    refused(
        &format!("basic_auth_users:\n  'a:b': {HASH}\n"),
        &["basic_auth_users.a:b", "':'"],
    );
    for prefix in ["$2a$", "$2b$", "$2y$"] {
        let hash = HASH.replacen("$2y$", prefix, 1);
        parse(&format!("basic_auth_users:\n  alice: '{hash}'\n")).unwrap();
    }
}

#[test]
fn rate_limits() {
    assert_eq!(
        parse("rate_limit:\n  interval: 0\n  burst: 0\n")
            .unwrap()
            .rate_limit,
        None
    );
    assert_eq!(parse("rate_limit: {}\n").unwrap().rate_limit, None);
    refused(
        "rate_limit:\n  interval: 1s\n",
        &["rate_limit.burst", "at least 1"],
    );
    refused(
        "rate_limit:\n  interval: soon\n  burst: 1\n",
        &["rate_limit.interval", "\"soon\""],
    );
    refused(
        "rate_limit:\n  interval: -1s\n  burst: 1\n",
        &["rate_limit.interval", "negative"],
    );
}

#[test]
fn go_durations() {
    assert_eq!(go_duration("1s"), Ok(Duration::from_secs(1)));
    assert_eq!(go_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(go_duration("1m30s"), Ok(Duration::from_secs(90)));
    assert_eq!(go_duration("1.5h"), Ok(Duration::from_secs(5400)));
    assert_eq!(go_duration("10us"), Ok(Duration::from_micros(10)));
    assert_eq!(go_duration("0"), Ok(Duration::ZERO));
    for bad in ["", "1", "s", "1x", "1s2", "1..5s", "+"] {
        assert!(go_duration(bad).is_err(), "{bad:?}");
    }
}
