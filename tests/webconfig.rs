//! `--serve --web.config.file`: TLS, client certificates, basic auth,
//! headers and rate limits from exporter-toolkit's file format, checked
//! with real peers (curl, openssl, Prometheus) against certificates the
//! tests make with openssl; certificate rotation; systemd socket
//! activation through `systemd-socket-activate`.

use std::{
    io::{BufRead, BufReader, Read},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use crate::util::{
    self, Bin, ChildGuard, Need, Netns, PROMETHEUS, Server, pki::Pki, prometheus::Prometheus, tests,
};

/// The programs these tests use beside the binary, with their packages.
const OPENSSL: Need = Need::Program("openssl", "openssl");
const CURL: Need = Need::Program("curl", "curl");
const SOCKET_ACTIVATE: Need = Need::Program("systemd-socket-activate", "systemd");

tests![
    (
        prometheus_scrapes_over_https_with_basic_auth,
        Netns,
        PROMETHEUS,
        OPENSSL
    ),
    (
        a_silent_tls_client_is_dropped_like_a_slowloris_and_holds_a_slot,
        OPENSSL,
        CURL
    ),
    (certificates_rotate_without_a_restart, OPENSSL, CURL),
    a_reload_never_turns_basic_auth_off,
    a_file_rewritten_in_place_is_applied_only_whole,
    (
        a_reload_never_weakens_client_certificates_or_tls,
        OPENSSL,
        CURL
    ),
    (
        a_certificate_named_before_it_exists_is_used_when_it_appears,
        OPENSSL,
        CURL
    ),
    (client_auth_types_and_allowed_sans, OPENSSL, CURL),
    (exporter_toolkit_style_files, OPENSSL, CURL),
    (https_with_basic_auth_headers_and_inline_pem, OPENSSL, CURL),
    (versions_cipher_suites_and_curves, OPENSSL, CURL),
    (
        each_error_is_one_line_naming_the_file_and_key_and_nothing_is_served,
        OPENSSL
    ),
    (rate_limit_answers_429, OPENSSL, CURL),
    (
        socket_activation_serves_on_the_sockets_systemd_passes,
        Netns,
        SOCKET_ACTIVATE,
        OPENSSL,
        CURL
    ),
    (
        socket_activation_refuses_what_is_not_a_listening_tcp_socket,
        Netns
    ),
];

/// The binary under test.
fn bin() -> PathBuf {
    util::bin::path()
}

/// The TLS part of a config that serves the server certificate.
const TLS: &str = "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n";

/// A bcrypt hash of `password` at cost 4 (fast; the cost does not change
/// what is tested), with the given prefix (`2a`, `2b` or `2y`).
fn hash(password: &str, prefix: &str) -> String {
    let parts = bcrypt::hash_with_result(password, 4).unwrap();
    let version = match prefix {
        "2a" => bcrypt::Version::TwoA,
        "2b" => bcrypt::Version::TwoB,
        _ => bcrypt::Version::TwoY,
    };
    parts.format_for_version(version)
}

/// Starts `port_exporter --serve 127.0.0.1:0 --web.config.file CONFIG`
/// from /, so that relative paths cannot resolve against the cwd.
fn serve(config: &Path) -> Server {
    let mut command = Bin::new()
        .args(["--serve", "127.0.0.1:0", "--web.config.file"])
        .arg(config)
        .command();
    command.current_dir("/");
    Server::spawn(command)
}

/// `https://127.0.0.1:PORT/metrics` of a server.
fn url(server: &Server) -> String {
    format!("https://127.0.0.1:{}/metrics", server.port())
}

/// What curl got: the status (0 when the TLS handshake failed), the
/// response headers (lower-case names), the body and curl's verbose talk.
struct Got {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    verbose: String,
}

impl Got {
    /// The server certificate's subject line of curl's -v output.
    fn subject(&self) -> &str {
        self.verbose
            .lines()
            .find(|l| l.contains("subject:"))
            .unwrap_or_default()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Waits until `server` answers 200 with a certificate whose subject
/// holds `cn`.
fn wait_until_served(pki: &Pki, server: &Server, cn: &str) {
    util::wait_until(
        "the new certificate to be served",
        Duration::from_secs(30),
        || {
            let got = curl(pki, &url(server), &[]);
            assert_eq!(got.status, 200, "{}", got.verbose);
            got.subject().contains(cn).then_some(())
        },
    );
}

/// Runs curl against `url` trusting the test CA, with `extra` arguments
/// (paths relative to the PKI directory).
fn curl(pki: &Pki, url: &str, extra: &[&str]) -> Got {
    let out = Command::new("curl")
        .args([
            "-sS",
            "-v",
            "--max-time",
            "10",
            "--cacert",
            "ca.pem",
            "-D",
            "headers.txt",
        ])
        .args(extra)
        .arg(url)
        .current_dir(pki.path(""))
        .output()
        .expect("cannot run curl");
    let raw = std::fs::read_to_string(pki.path("headers.txt")).unwrap_or_default();
    let _ = std::fs::remove_file(pki.path("headers.txt"));
    let mut lines = raw.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Got {
        status,
        headers,
        body: String::from_utf8_lossy(&out.stdout).into_owned(),
        verbose: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs the binary with a web config and no address to bind but port 0,
/// expecting a failure at start.
fn start_fails(config: &Path) -> Output {
    Command::new(bin())
        .args(["--serve", "127.0.0.1:0", "--web.config.file"])
        .arg(config)
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn https_with_basic_auth_headers_and_inline_pem() {
    let pki = Pki::new();
    let config = format!(
        "{TLS}http_server_config:
  http2: true
  headers:
    Strict-Transport-Security: max-age=31536000
    X-Frame-Options: sameorigin
    X-Content-Type-Options: nosniff
    X-XSS-Protection: 1; mode=block
    Content-Security-Policy: default-src 'none'
basic_auth_users:
  alice: {}
  bob: {}
  carol: {}
",
        hash("alice's secret", "2y"),
        hash("bob's secret", "2b"),
        hash("carol's secret", "2a"),
    );
    let server = serve(&pki.config(&config));
    assert!(
        server
            .start_line
            .contains("(https, basic auth; GET / or /metrics;"),
        "{}",
        server.start_line
    );
    for (user, password) in [
        ("alice", "alice's secret"),
        ("bob", "bob's secret"),
        ("carol", "carol's secret"),
    ] {
        let got = curl(&pki, &url(&server), &["-u", &format!("{user}:{password}")]);
        assert_eq!(got.status, 200, "{user}: {}", got.verbose);
        assert!(
            got.body.contains("port_exporter_build_info"),
            "{}",
            got.body
        );
        assert!(
            got.verbose.contains("ALPN: server accepted http/1.1"),
            "{}",
            got.verbose
        );
    }
    // curl asked for h2 as well: answered in HTTP/1.1.
    let got = curl(
        &pki,
        &url(&server),
        &["--http2", "-u", "alice:alice's secret"],
    );
    assert_eq!(got.status, 200);
    assert!(got.verbose.contains("< HTTP/1.1 200"), "{}", got.verbose);
    let expected_headers = [
        ("strict-transport-security", "max-age=31536000"),
        ("x-frame-options", "sameorigin"),
        ("x-content-type-options", "nosniff"),
        ("x-xss-protection", "1; mode=block"),
        ("content-security-policy", "default-src 'none'"),
    ];
    for (name, value) in expected_headers {
        assert_eq!(got.header(name), Some(value), "{name}");
    }
    // Refusals: all alike, whether the user exists or not.
    let refusals: Vec<Got> = [
        vec![],
        vec!["-u", "alice:wrong"],
        vec!["-u", "alice:bob's secret"],
        vec!["-u", "mallory:alice's secret"],
        vec!["-u", "mallory:wrong"],
        vec!["-H", "Authorization: Bearer x"],
    ]
    .iter()
    .map(|extra| curl(&pki, &url(&server), extra))
    .collect();
    for got in &refusals {
        assert_eq!(got.status, 401, "{}", got.verbose);
        assert_eq!(got.header("www-authenticate"), Some("Basic"));
        assert_eq!(got.body, "Unauthorized\n");
        for (name, value) in expected_headers {
            assert_eq!(got.header(name), Some(value), "{name} on a 401");
        }
        let mut names: Vec<&str> = got
            .headers
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| *n != "date")
            .collect();
        names.sort();
        let mut first: Vec<&str> = refusals[0]
            .headers
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| *n != "date")
            .collect();
        first.sort();
        assert_eq!(names, first);
    }
    // Plain HTTP to the TLS port gets no HTTP answer.
    let got = curl(&pki, &url(&server).replace("https", "http"), &[]);
    assert_eq!(got.status, 0);

    // The same certificate and key inline, in a config in another place.
    let indent = |file: &str| {
        std::fs::read_to_string(pki.path(file))
            .unwrap()
            .lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    };
    let inline = format!(
        "tls_server_config:\n  cert: |\n{}  key: |\n{}",
        indent("server.pem"),
        indent("server.key")
    );
    let elsewhere = util::open_tempdir();
    let path = elsewhere.path().join("inline.yml");
    std::fs::write(&path, inline).unwrap();
    let server = serve(&path);
    assert_eq!(curl(&pki, &url(&server), &[]).status, 200);
}

fn client_auth_types_and_allowed_sans() {
    let pki = Pki::new();
    let cert = |name: &'static str| -> Vec<String> {
        vec![
            "--cert".into(),
            format!("{name}.pem"),
            "--key".into(),
            format!("{name}.key"),
        ]
    };
    // (client_auth_type, extra config, [no cert, client, stranger, foreign])
    let cases: [(&str, &str, [bool; 4]); 7] = [
        ("NoClientCert", "", [true, true, true, true]),
        ("RequestClientCert", "", [true, true, true, true]),
        ("RequireAnyClientCert", "", [false, true, true, true]),
        (
            "VerifyClientCertIfGiven",
            "  client_ca_file: ca.pem\n",
            [true, true, true, false],
        ),
        (
            "RequireAndVerifyClientCert",
            "  client_ca_file: ca.pem\n",
            [false, true, true, false],
        ),
        (
            "RequireAndVerifyClientCert",
            "  client_ca_file: ca.pem\n  client_allowed_sans: [prometheus.example]\n",
            [false, true, false, false],
        ),
        (
            "RequireAnyClientCert",
            "  client_allowed_sans: [other.example, prometheus.example]\n",
            [false, true, false, true],
        ),
    ];
    for (auth, extra, expected) in cases {
        let config = format!("{TLS}  client_auth_type: {auth}\n{extra}");
        let server = serve(&pki.config(&config));
        let clients: [Vec<String>; 4] = [vec![], cert("client"), cert("stranger"), cert("foreign")];
        for (client, expect) in clients.iter().zip(expected) {
            let args: Vec<&str> = client.iter().map(String::as_str).collect();
            // TLS 1.2 as well as 1.3: refusals come at different moments.
            for version in [&["--tls-max", "1.2"][..], &["--tlsv1.3"]] {
                let got = curl(&pki, &url(&server), &[&args[..], version].concat());
                assert_eq!(
                    got.status == 200,
                    expect,
                    "{auth} {extra:?} with {args:?} {version:?}: {}",
                    got.verbose
                );
            }
        }
    }
}

/// Runs each file of tests/webconfig/ (its README says how).
fn exporter_toolkit_style_files() {
    let pki = Pki::new();
    pki.self_signed("selfsigned", "DNS:selfsigned.example");
    pki.self_signed("selfsigned2", "DNS:selfsigned2.example");
    let both = ["selfsigned.pem", "selfsigned2.pem"]
        .map(|f| std::fs::read_to_string(pki.path(f)).unwrap())
        .concat();
    std::fs::write(pki.path("selfsigned-both.pem"), both).unwrap();
    let alice = hash("alice-pw", "2y");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/webconfig");
    let mut ran = [0, 0];
    for (n, kind) in ["good", "bad"].into_iter().enumerate() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures.join(kind))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        files.sort();
        for file in files {
            let name = format!("{kind}/{}", file.file_name().unwrap().to_string_lossy());
            let text = std::fs::read_to_string(&file)
                .unwrap()
                .replace("@ALICE@", &alice);
            let path = pki.config(&text);
            let header = |prefix: &str| -> Vec<String> {
                text.lines()
                    .filter_map(|l| l.strip_prefix(prefix))
                    .map(str::to_string)
                    .collect()
            };
            ran[n] += 1;
            if kind == "bad" {
                let [expected] = &header("# error ")[..] else {
                    panic!("{name}: no single '# error KEY | REASON' line");
                };
                let (key, reason) = expected.split_once(" | ").unwrap();
                let out = start_fails(&path);
                let stderr = util::stderr_of(&out);
                assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
                assert_eq!(stderr.lines().count(), 1, "{name}: {stderr}");
                let prefix = format!("port_exporter: web config {}: {key}", path.display());
                assert!(stderr.starts_with(prefix.trim_end()), "{name}: {stderr}");
                assert!(stderr.contains(reason), "{name}: {stderr} lacks {reason}");
                continue;
            }
            let server = serve(&path);
            let curls = header("# curl ");
            assert!(!curls.is_empty(), "{name}: no '# curl' line");
            for line in curls {
                let (command, status) = line.rsplit_once(" -> ").unwrap();
                let mut words = command.split_whitespace();
                let scheme = words.next().unwrap();
                let args: Vec<&str> = words.collect();
                let url = format!("{scheme}://127.0.0.1:{}/metrics", server.port());
                let got = curl(&pki, &url, &args);
                assert_eq!(
                    got.status.to_string(),
                    status,
                    "{name}: curl {line}\n{}\n{}",
                    got.verbose,
                    server.log()
                );
            }
            let says = header("# says ");
            let log = server.log();
            for text in &says {
                assert!(log.contains(text.as_str()), "{name}: {log} lacks {text}");
            }
            assert_eq!(log.lines().count(), says.len().min(1), "{name}: {log}");
        }
    }
    assert!(ran[0] >= 10 && ran[1] >= 19, "{ran:?}");
}

fn versions_cipher_suites_and_curves() {
    let pki = Pki::new();
    let server = serve(&pki.config(&format!("{TLS}  min_version: TLS13\n")));
    assert_eq!(curl(&pki, &url(&server), &["--tlsv1.3"]).status, 200);
    assert_eq!(curl(&pki, &url(&server), &["--tls-max", "1.2"]).status, 0);

    let server = serve(&pki.config(&format!(
        "{TLS}  max_version: TLS12\n  cipher_suites:
    - TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
    - TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
  curve_preferences: [CurveP384]
"
    )));
    assert_eq!(curl(&pki, &url(&server), &["--tlsv1.3"]).status, 0);
    let got = curl(
        &pki,
        &url(&server),
        &["--ciphers", "ECDHE-ECDSA-CHACHA20-POLY1305"],
    );
    assert_eq!(got.status, 0, "a suite not listed was accepted");
    // In TLS 1.2 the groups a client offers also bound the curve of an
    // ECDSA certificate (P-256 here), so P-256 is always offered.
    assert_eq!(
        curl(&pki, &url(&server), &["--curves", "X25519:P-256"]).status,
        0
    );
    let got = curl(&pki, &url(&server), &["--curves", "P-384:P-256"]);
    assert_eq!(got.status, 200, "{}", got.verbose);
    // prefer_server_cipher_suites defaults to true: the server's order.
    let both = [
        "--ciphers",
        "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384",
    ];
    let got = curl(&pki, &url(&server), &both);
    assert!(
        got.verbose
            .contains("TLSv1.2 / ECDHE-ECDSA-AES256-GCM-SHA384"),
        "{}",
        got.verbose
    );
    let server = serve(&pki.config(&format!(
        "{TLS}  max_version: TLS12\n  prefer_server_cipher_suites: false\n  cipher_suites:
    - TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
    - TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
"
    )));
    let got = curl(&pki, &url(&server), &both);
    assert!(
        got.verbose
            .contains("TLSv1.2 / ECDHE-ECDSA-AES128-GCM-SHA256"),
        "{}",
        got.verbose
    );

    // What rustls cannot do is said once, and the rest is served.
    let server = serve(&pki.config(&format!(
        "{TLS}  min_version: TLS10\n  cipher_suites:
    - TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA
    - TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
  curve_preferences: [CurveP521, CurveP256]
"
    )));
    let log = server.log();
    assert_eq!(log.lines().count(), 1, "{log}");
    let note = log.lines().next().unwrap();
    for needle in [
        "web.yml: rustls cannot do what the file asks for here, ignoring:",
        "min_version TLS10",
        "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
        "curves CurveP521",
    ] {
        assert!(note.contains(needle), "{note}");
    }
    assert_eq!(
        curl(
            &pki,
            &url(&server),
            &["--tls-max", "1.2", "--curves", "P-256"]
        )
        .status,
        200
    );
    assert_eq!(curl(&pki, &url(&server), &["--tls-max", "1.1"]).status, 0);
}

fn each_error_is_one_line_naming_the_file_and_key_and_nothing_is_served() {
    let pki = Pki::new();
    // The file is written afresh for each case; paths resolve against it.
    let cases: Vec<(String, &str, &str)> = vec![
        (
            "tls_server_config:\n  cert_file: server.pem\n  keyfile: server.key\n".into(),
            "tls_server_config",
            "unknown field `keyfile`",
        ),
        (
            "basic_auth:\n  a: b\n".into(),
            "",
            "unknown field `basic_auth`",
        ),
        (
            format!("{TLS}  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n"),
            "tls_server_config.cipher_suites",
            "unknown cipher suite \"TLS_RSA_WITH_RC4_128_SHA\"",
        ),
        (
            format!("{TLS}  curve_preferences: [P256]\n"),
            "tls_server_config.curve_preferences",
            "unknown curve \"P256\"",
        ),
        (
            format!("{TLS}  min_version: TLS1.2\n"),
            "tls_server_config.min_version",
            "unknown TLS version \"TLS1.2\"",
        ),
        (
            format!("{TLS}  client_ca_file: ca.pem\n"),
            "tls_server_config.client_ca_file",
            "client_auth_type NoClientCert, which never asks for a client certificate",
        ),
        (
            format!(
                "{TLS}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: x.pem\n"
            ),
            "tls_server_config.client_ca_file",
            "x.pem: No such file or directory",
        ),
        (
            format!("{TLS}  client_auth_type: NoClientCert\n  client_allowed_sans: [x]\n"),
            "tls_server_config.client_allowed_sans",
            "needs client_auth_type",
        ),
        (
            "basic_auth_users:\n  alice: hunter2\n".into(),
            "basic_auth_users.alice",
            "not a bcrypt hash",
        ),
        (
            "tls_server_config:\n  cert_file: missing.pem\n  key_file: server.key\n".into(),
            "tls_server_config.cert_file",
            "missing.pem: No such file or directory",
        ),
        (
            "tls_server_config:\n  cert_file: server.pem\n  key_file: client.key\n".into(),
            "tls_server_config.cert_file",
            "the certificate and the private key do not match",
        ),
        (
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server.pem\n".into(),
            "tls_server_config.key_file",
            "no private key",
        ),
        (
            "tls_server_config:\n  cert_file: server.key\n  key_file: server.key\n".into(),
            "tls_server_config.cert_file",
            "no CERTIFICATE block",
        ),
        (
            format!(
                "{TLS}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: server.key\n"
            ),
            "tls_server_config.client_ca_file",
            "no CERTIFICATE block",
        ),
        (
            format!("{TLS}  min_version: TLS10\n  max_version: TLS11\n"),
            "tls_server_config.max_version",
            "no TLS version is left",
        ),
        (
            format!("{TLS}  max_version: TLS11\n"),
            "tls_server_config.max_version",
            "TLS11 is below min_version TLS12 (the default)",
        ),
        (
            format!("{TLS}  curve_preferences: [CurveP521]\n"),
            "tls_server_config.curve_preferences",
            "rustls supports none of CurveP521",
        ),
        (
            "http_server_config:\n  headers:\n    Server: me\n".into(),
            "http_server_config.headers.Server",
            "can not be configured",
        ),
        (
            "http_server_config:\n  headers:\n    X-Frame-Options: allow-from\n".into(),
            "http_server_config.headers.X-Frame-Options",
            "deny or sameorigin",
        ),
    ];
    for (text, key, reason) in &cases {
        let path = pki.config(text);
        let out = start_fails(&path);
        let stderr = util::stderr_of(&out);
        assert_eq!(out.status.code(), Some(1), "{text}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{text}: {stderr}");
        let prefix = format!("port_exporter: web config {}: {key}", path.display());
        assert!(stderr.starts_with(&prefix), "{text}: {stderr}");
        assert!(stderr.contains(reason), "{text}: {stderr} lacks {reason}");
        assert!(!stderr.contains("listening"), "{stderr}");
    }
    // The file itself missing or unreadable.
    for path in [pki.path("nope.yml"), pki.path(".")] {
        let out = start_fails(&path);
        let stderr = util::stderr_of(&out);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with(&format!(
                "port_exporter: cannot read web config {}: ",
                path.display()
            )),
            "{stderr}"
        );
    }
    // Without --serve it is a usage error.
    let out = util::run(["--web.config.file", "web.yml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        util::stderr_of(&out).contains("--serve"),
        "{}",
        util::stderr_of(&out)
    );
    // A refused file binds nothing: the port stays free for someone else.
    let free = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap().to_string();
    drop(free);
    let out = Command::new(bin())
        .args(["--serve", &addr, "--web.config.file"])
        .arg(pki.config("basic_auth_users:\n  a: b\n"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    TcpListener::bind(&addr).expect("the port was taken");
}

fn rate_limit_answers_429() {
    let pki = Pki::new();
    let server = serve(&pki.config(&format!("{TLS}rate_limit:\n  interval: 1h\n  burst: 2\n")));
    let statuses: Vec<u16> = (0..4)
        .map(|_| curl(&pki, &url(&server), &[]).status)
        .collect();
    assert_eq!(statuses, [200, 200, 429, 429]);
}

fn certificates_rotate_without_a_restart() {
    let pki = Pki::new();
    let server = serve(&pki.config(TLS));
    let got = curl(&pki, &url(&server), &[]);
    assert_eq!(got.status, 200);
    assert!(got.subject().contains("CN=localhost"), "{}", got.verbose);

    // A key that does not match (as when a rotation is half done): the
    // old pair keeps being served and the error is said once.
    std::fs::copy(pki.path("client.key"), pki.path("server.key")).unwrap();
    let log = server.log_when("the mismatch to be said", |log| {
        let _ = curl(&pki, &url(&server), &[]);
        log.contains("keeping the configuration in force")
    });
    assert!(
        log.contains(
            "tls_server_config.cert_file: the certificate and the private key do not match; keeping"
        ),
        "{log}"
    );
    let got = curl(&pki, &url(&server), &[]);
    assert_eq!(got.status, 200);
    assert!(got.subject().contains("CN=localhost"), "{}", got.verbose);

    // The new certificate arrives: served from a new connection on.
    pki.leaf(
        "next",
        "ca",
        "localhost-next",
        "DNS:localhost,IP:127.0.0.1",
        "serverAuth",
    );
    std::fs::copy(pki.path("next.key"), pki.path("server.key")).unwrap();
    std::fs::copy(pki.path("next.pem"), pki.path("server.pem")).unwrap();
    wait_until_served(&pki, &server, "CN=localhost-next");
    let log = server.log_when("the reload to be said", |log| log.contains("reloaded"));
    assert_eq!(log.matches("do not match").count(), 1, "{log}");
    assert!(log.contains("web.yml reloaded"), "{log}");

    // Users change the same way.
    std::fs::write(
        pki.path("web.yml"),
        format!("{TLS}basic_auth_users:\n  alice: {}\n", hash("pw", "2y")),
    )
    .unwrap();
    util::wait_until("the new users to apply", Duration::from_secs(30), || {
        (curl(&pki, &url(&server), &[]).status == 401).then_some(())
    });
    assert_eq!(curl(&pki, &url(&server), &["-u", "alice:pw"]).status, 200);
}

/// The status of a plain HTTP GET /metrics, with `authorization` (the
/// base64 of `user:password`) if given.
fn status(server: &Server, authorization: Option<&str>) -> u16 {
    let auth = authorization
        .map(|a| format!("Authorization: Basic {a}\r\n"))
        .unwrap_or_default();
    let request = format!("GET /metrics HTTP/1.1\r\nHost: t\r\n{auth}Connection: close\r\n\r\n");
    let answer = util::exchange(&server.addr, request.as_bytes(), util::ANSWER_LIMIT);
    util::parse_http(&String::from_utf8_lossy(&answer)).status
}

/// `alice:alice-pw` and `bob:bob-pw` in base64.
const ALICE: &str = "YWxpY2U6YWxpY2UtcHc=";
const BOB: &str = "Ym9iOmJvYi1wdw==";

/// How many times the server has refused a reload until a restart.
fn refusals(log: &str) -> usize {
    log.matches("restart port_exporter to apply it").count()
}

fn a_reload_never_turns_basic_auth_off() {
    let dir = util::open_tempdir();
    let path = dir.path().join("web.yml");
    let alice = format!("basic_auth_users:\n  alice: {}\n", hash("alice-pw", "2y"));
    std::fs::write(&path, &alice).unwrap();
    let server = serve(&path);
    assert_eq!(status(&server, None), 401);
    // Each of these is a valid file at start (no auth), but applied while
    // serving it would let everyone in.
    let weaker = [
        "",
        "# basic_auth_users:\n#   alice: x\n",
        "basic_auth_users:\n",
        "basic_auth_users: {}\n",
        "http_server_config:\n  headers:\n    X-Frame-Options: deny\n",
    ];
    for (n, text) in weaker.iter().enumerate() {
        std::fs::write(&path, text).unwrap();
        let log = server.log_when("the reload to be refused", |log| refusals(log) > n);
        let line = log.lines().rfind(|l| l.contains("restart")).unwrap();
        assert!(
            line.contains("not applied while serving: basic auth would be turned off"),
            "{text:?}: {line}"
        );
        assert_eq!(status(&server, None), 401, "{text:?}");
        assert_eq!(status(&server, Some(ALICE)), 200, "{text:?}");
    }
    assert!(!server.log().contains("reloaded"), "{}", server.log());
    // Users change freely: bob comes, alice goes.
    std::fs::write(
        &path,
        format!("basic_auth_users:\n  bob: {}\n", hash("bob-pw", "2b")),
    )
    .unwrap();
    server.log_when("the new users to apply", |log| log.contains("reloaded"));
    assert_eq!(status(&server, Some(BOB)), 200);
    assert_eq!(status(&server, Some(ALICE)), 401);
    assert_eq!(status(&server, None), 401);
    assert_eq!(refusals(&server.log()), weaker.len(), "{}", server.log());
}

fn a_file_rewritten_in_place_is_applied_only_whole() {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = util::open_tempdir();
    let path = dir.path().join("web.yml");
    let head = format!("basic_auth_users:\n  alice: {}\n", hash("alice-pw", "2y"));
    let tail = format!("  bob: {}\n", hash("bob-pw", "2y"));
    std::fs::write(&path, format!("{head}{tail}")).unwrap();
    let server = serve(&path);
    assert_eq!(status(&server, Some(BOB)), 200);
    // Clients ask in a loop: nobody without credentials may get in, and
    // bob may never be refused.
    let stop = AtomicBool::new(false);
    let (asked, wrong) = thread::scope(|scope| {
        let client = scope.spawn(|| {
            let (mut asked, mut wrong) = (0, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                for (who, auth, expected) in [("nobody", None, 401), ("bob", Some(BOB), 200)] {
                    let got = status(&server, auth);
                    asked += 1;
                    if got != expected {
                        wrong.push(format!("{who} got {got}"));
                    }
                }
            }
            (asked, wrong)
        });
        // The same file rewritten in place, as `cat web.yml.new > web.yml`
        // or an editor does: truncated, then written in two parts. The
        // pauses are the slow writer being modelled, not waits for the
        // server; the old code checked once a second, so six seconds of
        // this caught it half-written with near certainty.
        let deadline = Instant::now() + Duration::from_secs(6);
        while Instant::now() < deadline {
            let mut file = std::fs::File::create(&path).unwrap();
            thread::sleep(Duration::from_millis(20));
            file.write_all(head.as_bytes()).unwrap();
            thread::sleep(Duration::from_millis(20));
            file.write_all(tail.as_bytes()).unwrap();
            drop(file);
            thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::Relaxed);
        client.join().unwrap()
    });
    assert!(asked > 10, "the client asked only {asked} times");
    assert!(
        wrong.is_empty(),
        "{} of {asked} answers were wrong, the first: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    // Whole again, and as it was: nothing to apply, nothing to say.
    let log = server.log();
    assert!(!log.contains("reloaded"), "{log}");
    assert_eq!(status(&server, None), 401);
    assert_eq!(status(&server, Some(BOB)), 200);
}

fn a_reload_never_weakens_client_certificates_or_tls() {
    let pki = Pki::new();
    let users = format!("basic_auth_users:\n  alice: {}\n", hash("alice-pw", "2y"));
    let full = format!("{TLS}  client_auth_type: RequireAnyClientCert\n{users}");
    let server = serve(&pki.config(&full));
    let cert = ["--cert", "client.pem", "--key", "client.key"];
    let alice = ["-u", "alice:alice-pw"];
    let check = |what: &str| {
        assert_eq!(curl(&pki, &url(&server), &alice).status, 0, "{what}");
        assert_eq!(curl(&pki, &url(&server), &cert).status, 401, "{what}");
        let got = curl(&pki, &url(&server), &[&cert[..], &alice].concat());
        assert_eq!(got.status, 200, "{what}: {}", got.verbose);
    };
    check("at start");
    // The TLS part alone: what a half-written file or a mistake looks like.
    std::fs::write(pki.path("web.yml"), TLS).unwrap();
    let log = server.log_when("the reload to be refused", |log| refusals(log) == 1);
    for needle in [
        "client_auth_type NoClientCert would no longer require a client certificate \
         (RequireAnyClientCert does)",
        "basic auth would be turned off",
    ] {
        assert!(log.contains(needle), "{log}");
    }
    check("after the TLS part alone");
    // Plain HTTP with the same users: TLS off waits for a restart too.
    std::fs::write(pki.path("web.yml"), &users).unwrap();
    let log = server.log_when("the reload to be refused", |log| refusals(log) == 2);
    assert!(log.contains("TLS would be turned off"), "{log}");
    check("after TLS off");
    // Stronger: verified, with allowed SANs. Applied.
    let verified_tls =
        format!("{TLS}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n");
    let verified = format!("{verified_tls}{users}");
    let sans = "  client_allowed_sans: [prometheus.example]\n";
    std::fs::write(pki.path("web.yml"), format!("{verified_tls}{sans}{users}")).unwrap();
    server.log_when("the reload", |log| log.contains("reloaded"));
    check("verified");
    let stranger = ["--cert", "stranger.pem", "--key", "stranger.key"];
    assert_eq!(
        curl(&pki, &url(&server), &[&stranger[..], &alice].concat()).status,
        0
    );
    // Then weaker again, one step at a time: each refused.
    for (n, (text, needle)) in [
        (verified.clone(), "client_allowed_sans would be removed"),
        (
            format!("{TLS}  client_auth_type: RequireAnyClientCert\n{sans}{users}"),
            "client_auth_type RequireAnyClientCert would no longer verify",
        ),
        (
            format!(
                "{TLS}  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: ca.pem\n\
                 {users}"
            ),
            "client_auth_type VerifyClientCertIfGiven would no longer require",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        std::fs::write(pki.path("web.yml"), &text).unwrap();
        let log = server.log_when("the reload to be refused", |log| refusals(log) == 3 + n);
        assert!(log.contains(needle), "{text}: {log}");
        assert_eq!(
            curl(&pki, &url(&server), &[&stranger[..], &alice].concat()).status,
            0,
            "{text}"
        );
    }
    assert_eq!(server.log().matches("reloaded").count(), 1);
}

fn a_certificate_named_before_it_exists_is_used_when_it_appears() {
    let pki = Pki::new();
    pki.leaf(
        "made",
        "ca",
        "localhost-next",
        "DNS:localhost,IP:127.0.0.1",
        "serverAuth",
    );
    let server = serve(&pki.config(TLS));
    std::fs::write(
        pki.path("web.yml"),
        "tls_server_config:\n  cert_file: next.pem\n  key_file: next.key\n",
    )
    .unwrap();
    server.log_when("the missing file to be said", |log| {
        log.contains("next.pem: No such file or directory") && log.contains("keeping")
    });
    assert_eq!(curl(&pki, &url(&server), &[]).status, 200);
    // The files appear, the certificate first; web.yml is not touched
    // again.
    for (from, to) in [("made.pem", "next.pem"), ("made.key", "next.key")] {
        std::fs::rename(pki.path(from), pki.path(to)).unwrap();
    }
    wait_until_served(&pki, &server, "CN=localhost-next");
    let log = server.log_when("the reload to be said", |log| log.contains("reloaded"));
    // Each state said once: the certificate missing, and (if the server
    // looked between the two renames) then the key.
    assert_eq!(log.matches("next.pem: No such file").count(), 1, "{log}");
    assert!(log.matches("No such file").count() <= 2, "{log}");
}

fn a_silent_tls_client_is_dropped_like_a_slowloris_and_holds_a_slot() {
    let pki = Pki::new();
    // A cap of 512 connections (a file limit of 768).
    let mut command = Bin::new()
        .fd_limit(768)
        .args(["--serve", "127.0.0.1:0", "--web.config.file"])
        .arg(pki.config(TLS))
        .command();
    command.current_dir("/");
    let server = Server::spawn(command);
    assert_eq!(server.cap(), 512, "{}", server.start_line);
    let opened = Instant::now();
    // 600 connections that never send a ClientHello: each holds a slot
    // like any connection without a request head, so the 88 that came first
    // give way to the last 88.
    let held: Vec<TcpStream> = (0..600)
        .map(|_| TcpStream::connect(&server.addr).unwrap())
        .collect();
    util::wait_until(
        "88 connections to be evicted",
        Duration::from_secs(10),
        || (held.iter().filter(|s| crate::serve::closed(s)).count() >= 88).then_some(()),
    );
    assert!(held[..88].iter().all(crate::serve::closed));
    assert!(!held[88..].iter().any(crate::serve::closed));
    // The others are dropped after the 5 s head timeout.
    for mut stream in held {
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let read = stream.read(&mut [0; 8]);
        assert!(matches!(read, Ok(0)) || read.is_err(), "{read:?}");
    }
    let waited = opened.elapsed();
    assert!(
        waited >= Duration::from_secs(4),
        "silent connections were dropped after {waited:?}, before the head timeout"
    );
}

fn prometheus_scrapes_over_https_with_basic_auth() {
    let pki = Pki::new();
    let config = pki.config(&format!(
        "{TLS}basic_auth_users:\n  prometheus: {}\n",
        // Cost 10, as `htpasswd -nBC 10` makes.
        bcrypt::hash("scrape-secret", 10).unwrap()
    ));
    util::in_netns(|| {
        let _server = Server::spawn({
            let mut command = Command::new(bin());
            command
                .args(["--serve", "127.0.0.1:8443", "--web.config.file"])
                .arg(&config);
            command
        });
        let job = |name: &str, password: &str| {
            format!(
                "  - job_name: {name}
    scheme: https
    tls_config:
      ca_file: {ca}
    basic_auth:
      username: prometheus
      password: {password}
    static_configs:
      - targets: ['localhost:8443']
",
                ca = pki.path("ca.pem").display()
            )
        };
        let mut prometheus = Prometheus::start(
            &pki.path(""),
            &format!("{}{}", job("right", "scrape-secret"), job("wrong", "guess")),
        );
        // The first scrape of each job pays one bcrypt check (cost 10): on
        // a loaded machine that can outlast the 1 s scrape timeout, and the
        // sample is then 0. What must hold: the right password gets in and
        // stays in (the check's result is kept even when Prometheus gave up
        // on the scrape that asked for it), the wrong one never does.
        // Each condition is read from one answer, so no scrape can land
        // between two reads.
        let (first_up, targets) = prometheus.wait_for("the right job to be up", |p| {
            let right = samples(&p.query("up%7Bjob%3D%22right%22%7D%5B1m%5D")?);
            let first_up = right.iter().position(|(_, v)| v == "1")?;
            let targets = p.get("/api/v1/targets")?;
            targets
                .contains("401 Unauthorized")
                .then_some((right[first_up].0, targets))
        });
        let (right, wrong) = prometheus.wait_for("three more scrapes", |p| {
            let right = samples(&p.query("up%7Bjob%3D%22right%22%7D%5B1m%5D")?);
            let wrong = samples(&p.query("up%7Bjob%3D%22wrong%22%7D%5B1m%5D")?);
            let later: Vec<_> = right.into_iter().filter(|(t, _)| *t >= first_up).collect();
            (later.len() >= 4).then_some((later, wrong))
        });
        assert!(
            right.iter().all(|(_, v)| v == "1"),
            "right: {right:?}\n{targets}"
        );
        assert!(
            !wrong.is_empty() && wrong.iter().all(|(_, v)| v == "0"),
            "wrong: {wrong:?}"
        );
        let ports = prometheus.query("instance_open_ports").unwrap();
        assert!(ports.contains("\"port\":\"8443\""), "{ports}");
    });
}

/// The (timestamp, value) samples of the one series in a range query's
/// answer (`"values":[[1796233951.03,"1"],...]`).
fn samples(answer: &str) -> Vec<(f64, String)> {
    let Some((_, values)) = answer.split_once("\"values\":[[") else {
        return Vec::new();
    };
    let values = values.split("]]").next().unwrap_or_default();
    values
        .split("],[")
        .filter_map(|pair| {
            let (time, value) = pair.split_once(',')?;
            Some((time.parse().ok()?, value.trim_matches('"').to_string()))
        })
        .collect()
}

fn socket_activation_serves_on_the_sockets_systemd_passes() {
    let pki = Pki::new();
    let config = pki.config(TLS);
    util::in_netns(|| {
        // Two sockets, HTTPS on both; the program starts at the first
        // connection, which it must then answer.
        let bin = bin();
        let mut command = Command::new("systemd-socket-activate");
        command
            .args(["-l", "127.0.0.1:9443", "-l", "[::1]:9444"])
            .arg(&bin)
            .args(["--serve", "--web.config.file"])
            .arg(&config);
        let mut child = ChildGuard(
            command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let stderr = child.0.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        util::wait_until(
            "systemd-socket-activate to listen",
            Duration::from_secs(30),
            || TcpStream::connect("127.0.0.1:9443").ok().map(drop),
        );
        let got = curl(&pki, "https://127.0.0.1:9443/metrics", &[]);
        assert_eq!(got.status, 200, "{}\n{}", got.verbose, log.lock().unwrap());
        // The exposition sees the two activated listeners and nothing else:
        // the server bound nothing itself.
        assert_eq!(
            util::open_ports(&got.body),
            [9443, 9444].into_iter().collect(),
            "{}",
            got.body
        );
        assert_eq!(util::ss_listeners(), [9443, 9444].into_iter().collect());
        let got = curl(&pki, "https://localhost:9444/metrics", &["-6"]);
        assert_eq!(got.status, 200, "{}", got.verbose);
        let said = log.lock().unwrap().clone();
        assert!(
            said.contains("listening on 127.0.0.1:9443 and [::1]:9444 (https; GET / or /metrics;"),
            "{said}"
        );
        assert!(child.0.try_wait().unwrap().is_none());
    });
}

fn socket_activation_refuses_what_is_not_a_listening_tcp_socket() {
    // LISTEN_PID must be the server's own pid: a shell sets it to its own
    // and then execs the server, which keeps the pid.
    let bin = bin().display().to_string();
    let script = format!("LISTEN_PID=$$ LISTEN_FDS=1 exec {bin} --serve 3</dev/null");
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    let stderr = util::stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr,
        "port_exporter: socket activation: descriptor 3 is /dev/null, not a socket\n"
    );
    let script = format!("LISTEN_PID=$$ LISTEN_FDS=2 exec {bin} --serve 3</dev/null 4>&-");
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    assert!(
        util::stderr_of(&out).contains("descriptor 3 is /dev/null"),
        "{}",
        util::stderr_of(&out)
    );
    // A LISTEN_FDS that cannot be read is an error, not "none": in a
    // namespace of its own and killed at the deadline, since the wrong
    // answer is a server that binds :8000 and runs on.
    util::in_netns(|| {
        let script = format!("LISTEN_PID=$$ LISTEN_FDS=x exec {bin} --serve 3</dev/null");
        let mut child = ChildGuard(
            Command::new("sh")
                .args(["-c", &script])
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let status = util::wait_until("the server to exit", Duration::from_secs(10), || {
            child.0.try_wait().unwrap()
        });
        let mut stderr = String::new();
        child
            .0
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        assert_eq!(status.code(), Some(1), "{stderr}");
        assert_eq!(
            stderr,
            "port_exporter: socket activation: LISTEN_FDS=\"x\" is not a number of descriptors\n"
        );
    });
    // Variables meant for another process are left alone: the default
    // address is bound (checked in a namespace of its own, where :8000 is
    // surely free).
    util::in_netns(|| {
        let mut command = Command::new(&bin);
        command
            .arg("--serve")
            .env("LISTEN_PID", "1")
            .env("LISTEN_FDS", "1");
        let server = Server::spawn(command);
        assert!(server.addr.ends_with(":8000"), "{}", server.addr);
    });
}
