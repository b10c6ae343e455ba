//! Client certificate checks that rustls does not ship: Go's
//! `RequestClientCert` and `RequireAnyClientCert` ([`AnyCert`]: any
//! certificate, no chain verification, but the client must prove it holds
//! the key), and around another verifier ([`Checked`]): exporter-toolkit's
//! `client_allowed_sans` (compared as Go prints the names) and Go's
//! acceptance of a self-signed client certificate listed in the client CA
//! file (webpki refuses a CA certificate as an end entity; exporter-toolkit's
//! own test data relies on it). x509-parser reads the fields rustls hides.
//! All act during the handshake, so a refused client gets a TLS alert and
//! never reaches HTTP, as with the peer.

use std::{net::IpAddr, sync::Arc};

use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme,
    client::danger::HandshakeSignatureValid,
    crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature},
    server::danger::{ClientCertVerified, ClientCertVerifier},
};
use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::{
    asn1_rs::Oid,
    extensions::{GeneralName, ParsedExtension},
    oid_registry::{
        OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER, OID_X509_EXT_BASIC_CONSTRAINTS,
        OID_X509_EXT_EXTENDED_KEY_USAGE, OID_X509_EXT_KEY_USAGE, OID_X509_EXT_SUBJECT_ALT_NAME,
        OID_X509_EXT_SUBJECT_KEY_IDENTIFIER,
    },
    prelude::{FromDer, X509Certificate},
};

/// Accepts any client certificate, checking only the handshake signature
/// made with its key: `RequestClientCert`, or with `mandatory` (refuse
/// clients that send none) `RequireAnyClientCert`.
#[derive(Debug)]
pub struct AnyCert {
    pub algorithms: WebPkiSupportedAlgorithms,
    pub mandatory: bool,
}

impl ClientCertVerifier for AnyCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hint: any issuer will do.
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Another verifier, then the checks rustls lacks: a certificate the inner
/// verifier refuses is still accepted when it is byte for byte one of
/// `anchors` (the client CA file's certificates; see [`check_listed_leaf`]),
/// and with `allowed_sans` any certificate must carry one of them.
#[derive(Debug)]
pub struct Checked {
    inner: Arc<dyn ClientCertVerifier>,
    anchors: Vec<CertificateDer<'static>>,
    allowed_sans: Option<Vec<String>>,
}

impl Checked {
    /// `inner` with these checks, or `inner` itself when there is nothing
    /// to check.
    pub fn around(
        inner: Arc<dyn ClientCertVerifier>,
        anchors: Vec<CertificateDer<'static>>,
        allowed_sans: Option<Vec<String>>,
    ) -> Arc<dyn ClientCertVerifier> {
        if anchors.is_empty() && allowed_sans.is_none() {
            return inner;
        }
        Arc::new(Checked {
            inner,
            anchors,
            allowed_sans,
        })
    }
}

impl ClientCertVerifier for Checked {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let listed = || self.anchors.iter().any(|a| a == end_entity);
        let verified = match self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
        {
            Err(_) if listed() => {
                check_listed_leaf(end_entity, now.as_secs())?;
                ClientCertVerified::assertion()
            }
            verified => verified?,
        };
        if let Some(allowed) = &self.allowed_sans {
            let names = subject_alt_names(end_entity)
                .ok_or(Error::InvalidCertificate(CertificateError::BadEncoding))?;
            if !names.iter().any(|name| allowed.contains(name)) {
                return Err(Error::InvalidCertificate(
                    CertificateError::ApplicationVerificationFailure,
                ));
            }
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The extensions [`check_listed_leaf`] knows.
const KNOWN: [Oid<'static>; 6] = [
    OID_X509_EXT_BASIC_CONSTRAINTS,
    OID_X509_EXT_KEY_USAGE,
    OID_X509_EXT_EXTENDED_KEY_USAGE,
    OID_X509_EXT_SUBJECT_ALT_NAME,
    OID_X509_EXT_SUBJECT_KEY_IDENTIFIER,
    OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER,
];

/// The checks of a client certificate trusted because the client CA file
/// lists it (self-signed, `CA:TRUE`, as `openssl req -x509` makes them), at
/// `now` (seconds since the epoch): its validity dates, its extended key
/// usage (clientAuth or any, when present), its key usage
/// (digitalSignature, when present), and no critical extension this check
/// does not know. The handshake signature is checked with its key as for
/// any client.
fn check_listed_leaf(der: &[u8], now: u64) -> Result<(), Error> {
    use CertificateError::*;
    let refused = |why| Err(Error::InvalidCertificate(why));
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return refused(BadEncoding);
    };
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    if now < cert.validity().not_before.timestamp() {
        return refused(NotValidYet);
    }
    if now > cert.validity().not_after.timestamp() {
        return refused(Expired);
    }
    for extension in cert.extensions() {
        let known = KNOWN.contains(&extension.oid);
        let why = match extension.parsed_extension() {
            ParsedExtension::KeyUsage(usage) if !usage.digital_signature() => InvalidPurpose,
            ParsedExtension::ExtendedKeyUsage(usage) if !usage.any && !usage.client_auth => {
                InvalidPurpose
            }
            ParsedExtension::ParseError { .. } if known || extension.critical => BadEncoding,
            _ if extension.critical && !known => ApplicationVerificationFailure,
            _ => continue,
        };
        return refused(why);
    }
    Ok(())
}

/// The Subject Alternative Names of a DER certificate, as Go formats them
/// (`x509.Certificate`'s DNSNames, EmailAddresses, IPAddresses, URIs);
/// `None` when the certificate or one of these names is malformed.
fn subject_alt_names(der: &[u8]) -> Option<Vec<String>> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let mut names = Vec::new();
    for extension in cert.extensions() {
        let general_names = match extension.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => &san.general_names,
            ParsedExtension::ParseError { .. }
                if extension.oid == OID_X509_EXT_SUBJECT_ALT_NAME =>
            {
                return None;
            }
            _ => continue,
        };
        for name in general_names {
            names.push(match name {
                GeneralName::RFC822Name(text)
                | GeneralName::DNSName(text)
                | GeneralName::URI(text) => text.to_string(),
                // Go prints IPv4-mapped addresses as IPv4.
                GeneralName::IPAddress(bytes) => match <[u8; 4]>::try_from(*bytes) {
                    Ok(v4) => IpAddr::from(v4),
                    Err(_) => IpAddr::from(<[u8; 16]>::try_from(*bytes).ok()?),
                }
                .to_canonical()
                .to_string(),
                GeneralName::Invalid(..) => return None,
                _ => continue,
            });
        }
    }
    Some(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEQUENCE: u8 = 0x30;

    /// A DER element with `tag` around `contents`.
    fn der(tag: u8, contents: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        match contents.len() {
            n if n < 0x80 => out.push(n as u8),
            n if n < 0x100 => out.extend([0x81, n as u8]),
            n => out.extend([0x82, (n >> 8) as u8, n as u8]),
        }
        out.extend_from_slice(contents);
        out
    }

    /// An X.509 v3 certificate valid between these UTCTime and
    /// GeneralizedTime texts, with these extensions; an Ed25519 key and
    /// signature of zeroes (nothing here checks signatures).
    fn dated(not_before: &[u8], not_after: &[u8], extensions: &[Vec<u8>]) -> Vec<u8> {
        let ed25519 = der(SEQUENCE, &der(0x06, &[0x2b, 0x65, 0x70]));
        let mut tbs = der(0xa0, &der(0x02, &[2]));
        tbs.extend(der(0x02, &[1; 20]));
        tbs.extend(&ed25519);
        tbs.extend(der(SEQUENCE, &[]));
        let mut validity = der(0x17, not_before);
        validity.extend(der(0x18, not_after));
        tbs.extend(der(SEQUENCE, &validity));
        tbs.extend(der(SEQUENCE, &[]));
        tbs.extend(der(
            SEQUENCE,
            &[ed25519.clone(), der(0x03, &[0; 33])].concat(),
        ));
        if !extensions.is_empty() {
            tbs.extend(der(0xa3, &der(SEQUENCE, &extensions.concat())));
        }
        let mut cert = der(SEQUENCE, &tbs);
        cert.extend(ed25519);
        cert.extend(der(0x03, &[0; 65]));
        der(SEQUENCE, &cert)
    }

    /// Valid from 2020 to 2121.
    fn certificate(extensions: &[Vec<u8>]) -> Vec<u8> {
        dated(b"200101000000Z", b"21210101000000Z", extensions)
    }

    /// An extension of the OID 2.5.29.`last`.
    fn extension(last: u8, critical: bool, value: &[u8]) -> Vec<u8> {
        let mut body = der(0x06, &[0x55, 0x1d, last]);
        if critical {
            body.extend(der(0x01, &[0xff]));
        }
        body.extend(der(0x04, value));
        der(SEQUENCE, &body)
    }

    const SUBJECT_ALT_NAME: u8 = 0x11;
    const BASIC_CONSTRAINTS: u8 = 0x13;

    #[test]
    fn names_of_every_kind_as_go_prints_them() {
        let names = [
            der(0x82, b"prometheus.example"),
            der(0x81, b"ops@example.com"),
            der(0x87, &[127, 0, 0, 1]),
            der(
                0x87,
                &[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            ),
            der(
                0x87,
                &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1],
            ),
            der(0x86, b"spiffe://example/prometheus"),
            der(0xa4, &der(SEQUENCE, &[])),
        ]
        .concat();
        let cert = certificate(&[
            extension(BASIC_CONSTRAINTS, true, &der(SEQUENCE, &[])),
            extension(SUBJECT_ALT_NAME, false, &der(SEQUENCE, &names)),
        ]);
        assert_eq!(
            subject_alt_names(&cert).unwrap(),
            [
                "prometheus.example",
                "ops@example.com",
                "127.0.0.1",
                "2001:db8::1",
                "10.0.0.1",
                "spiffe://example/prometheus"
            ]
        );
    }

    #[test]
    fn no_extension_means_no_names_and_garbage_is_refused() {
        assert_eq!(
            subject_alt_names(&certificate(&[])).unwrap(),
            Vec::<String>::new()
        );
        let san = |name: Vec<u8>| {
            certificate(&[extension(SUBJECT_ALT_NAME, false, &der(SEQUENCE, &name))])
        };
        // An IP address of 3 bytes, a DNS name that is not text, a SAN
        // extension that is not a list: refused as Go refuses them.
        assert_eq!(subject_alt_names(&san(der(0x87, &[1, 2, 3]))), None);
        assert_eq!(subject_alt_names(&san(der(0x82, &[0xff, 0xfe]))), None);
        let not_a_list = certificate(&[extension(SUBJECT_ALT_NAME, false, &[0x05, 0x00])]);
        assert_eq!(subject_alt_names(&not_a_list), None);
        let whole = san(der(0x82, b"a"));
        assert_eq!(subject_alt_names(&whole).unwrap(), ["a"]);
        for cut in 0..whole.len() {
            assert_eq!(subject_alt_names(&whole[..cut]), None, "cut at {cut}");
        }
        assert_eq!(
            subject_alt_names(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]),
            None
        );
    }

    #[test]
    fn a_listed_certificate_is_still_checked() {
        // The handshake in 2026.
        let now = 1_790_000_000;
        let refusal = |c: &[u8], at| check_listed_leaf(c, at).err();
        let invalid = |e| Some(Error::InvalidCertificate(e));
        let ca = extension(BASIC_CONSTRAINTS, true, &der(SEQUENCE, &der(0x01, &[0xff])));
        assert_eq!(refusal(&certificate(std::slice::from_ref(&ca)), now), None);
        // Validity: 2020-01-01T00:00:00Z is 1577836800, both ends included.
        assert_eq!(
            refusal(&certificate(&[]), 1_577_836_799),
            invalid(CertificateError::NotValidYet)
        );
        assert_eq!(refusal(&certificate(&[]), 1_577_836_800), None);
        let until = |end: &[u8]| dated(b"200101000000Z", end, &[]);
        // 2024-02-29T12:00:00Z, a leap day.
        assert_eq!(refusal(&until(b"20240229120000Z"), 1_709_208_000), None);
        assert_eq!(
            refusal(&until(b"20240229120000Z"), 1_709_208_001),
            invalid(CertificateError::Expired)
        );
        assert_eq!(
            refusal(&certificate(&[]), 4_800_000_000),
            invalid(CertificateError::Expired)
        );
        let key_usage = |bits: u8| extension(0x0f, true, &der(0x03, &[1, bits]));
        assert_eq!(refusal(&certificate(&[key_usage(0x80)]), now), None);
        // keyCertSign and cRLSign only: the key may not sign a handshake.
        assert_eq!(
            refusal(&certificate(&[key_usage(0x06)]), now),
            invalid(CertificateError::InvalidPurpose)
        );
        let eku = |purposes: &[&[u8]]| {
            let list: Vec<u8> = purposes.iter().flat_map(|o| der(0x06, o)).collect();
            extension(0x25, false, &der(SEQUENCE, &list))
        };
        let server_auth: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];
        let client_auth: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];
        let any: &[u8] = &[0x55, 0x1d, 0x25, 0x00];
        assert_eq!(
            refusal(&certificate(&[eku(&[server_auth])]), now),
            invalid(CertificateError::InvalidPurpose)
        );
        assert_eq!(
            refusal(&certificate(&[eku(&[server_auth, client_auth])]), now),
            None
        );
        assert_eq!(refusal(&certificate(&[eku(&[any])]), now), None);
        // Name constraints, critical: not understood here, so refused.
        let unknown = |critical| extension(0x1e, critical, &der(SEQUENCE, &[]));
        assert_eq!(
            refusal(&certificate(&[ca.clone(), unknown(true)]), now),
            invalid(CertificateError::ApplicationVerificationFailure)
        );
        assert_eq!(refusal(&certificate(&[ca, unknown(false)]), now), None);
        assert_eq!(
            refusal(&[0x30, 0x00], now),
            invalid(CertificateError::BadEncoding)
        );
    }

    #[test]
    fn checked_asks_the_inner_verifier_then_the_names() {
        let any = Arc::new(AnyCert {
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
            mandatory: true,
        });
        let now = UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_790_000_000));
        let with_name = |name: &[u8]| {
            let names = der(SEQUENCE, &der(0x82, name));
            CertificateDer::from(certificate(&[extension(SUBJECT_ALT_NAME, false, &names)]))
        };
        // Nothing to check: the inner verifier itself.
        let bare = Checked::around(any.clone(), Vec::new(), None);
        assert!(format!("{bare:?}").starts_with("AnyCert"));
        let checked = Checked::around(any, Vec::new(), Some(vec!["a.example".to_string()]));
        assert!(checked.client_auth_mandatory());
        let verify = |cert: &CertificateDer<'_>| checked.verify_client_cert(cert, &[], now).err();
        assert_eq!(verify(&with_name(b"a.example")), None);
        assert_eq!(
            verify(&with_name(b"b.example")),
            Some(Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure
            ))
        );
        assert_eq!(
            verify(&CertificateDer::from(vec![0x30, 0x00])),
            Some(Error::InvalidCertificate(CertificateError::BadEncoding))
        );
    }
}
