//! Certificates for the TLS tests and benchmarks, made by openssl (which
//! `.ci/run` installs).

use std::{path::PathBuf, process::Command};

/// Certificates made with openssl in a directory of their own: a CA, a
/// server certificate for localhost and 127.0.0.1, client certificates
/// with and without the allowed SAN, and one from another CA.
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// Makes everything (the tests that use it need openssl).
    pub fn new() -> Pki {
        let pki = Pki {
            dir: super::system::open_tempdir(),
        };
        pki.ca("ca");
        pki.ca("other-ca");
        pki.leaf(
            "server",
            "ca",
            "localhost",
            "DNS:localhost,IP:127.0.0.1",
            "serverAuth",
        );
        pki.leaf(
            "client",
            "ca",
            "prometheus",
            "DNS:prometheus.example",
            "clientAuth",
        );
        pki.leaf(
            "stranger",
            "ca",
            "stranger",
            "DNS:stranger.example",
            "clientAuth",
        );
        pki.leaf(
            "foreign",
            "other-ca",
            "prometheus",
            "DNS:prometheus.example",
            "clientAuth",
        );
        pki
    }

    /// The path of `name` in the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs openssl with `args` in the directory.
    pub fn openssl(&self, args: &[&str]) {
        super::system::succeed(
            Command::new("openssl")
                .args(args)
                .current_dir(self.dir.path()),
        );
    }

    /// A self-signed CA: NAME.pem, NAME.key.
    pub fn ca(&self, name: &str) {
        self.self_signed_with(
            name,
            &[
                "basicConstraints=critical,CA:TRUE",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
    }

    /// A self-signed certificate NAME.pem (key NAME.key) as `openssl req
    /// -x509` makes one by default (`CA:TRUE`), with the SAN `san`: what
    /// exporter-toolkit's test data lists as its own client CA.
    pub fn self_signed(&self, name: &str, san: &str) {
        self.self_signed_with(name, &[&format!("subjectAltName={san}")]);
    }

    /// `openssl req -x509` for NAME.pem and NAME.key (P-256, two days,
    /// CN=NAME), with these `-addext` extensions.
    fn self_signed_with(&self, name: &str, extensions: &[&str]) {
        let (key, pem, subject) = (
            format!("{name}.key"),
            format!("{name}.pem"),
            format!("/CN={name}"),
        );
        let mut args = vec![
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &pem,
            "-days",
            "2",
            "-subj",
            &subject,
        ];
        for extension in extensions {
            args.extend(["-addext", extension]);
        }
        self.openssl(&args);
    }

    /// A P-256 certificate NAME.pem (key NAME.key) signed by CA.
    pub fn leaf(&self, name: &str, ca: &str, cn: &str, san: &str, usage: &str) {
        self.openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={cn}"),
        ]);
        std::fs::write(
            self.path(&format!("{name}.ext")),
            format!(
                "subjectAltName={san}\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n\
                 keyUsage=digitalSignature\n"
            ),
        )
        .unwrap();
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &format!("{name}.pem"),
            "-extfile",
            &format!("{name}.ext"),
        ]);
    }

    /// Writes `web.yml` (paths in it are relative to the directory).
    pub fn config(&self, text: &str) -> PathBuf {
        let path = self.path("web.yml");
        std::fs::write(&path, text).unwrap();
        path
    }
}
