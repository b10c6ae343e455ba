//! Client certificate checks that rustls does not ship: Go's
//! `RequestClientCert` and `RequireAnyClientCert` (any certificate, no
//! chain verification, but the client must still prove it holds the key),
//! and exporter-toolkit's `client_allowed_sans` (the certificate must carry
//! one of the listed Subject Alternative Names, compared as Go prints them:
//! DNS names, e-mail addresses, IP addresses and URIs).
//!
//! Both act during the handshake, so a refused client gets a TLS alert and
//! never reaches HTTP, as with the peer.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

use rustls::{
    DigitallySignedStruct, DistinguishedName, Error, SignatureScheme,
    client::danger::HandshakeSignatureValid,
    crypto::{
        CryptoProvider, WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature,
    },
    server::danger::{ClientCertVerified, ClientCertVerifier},
};
use rustls_pki_types::{CertificateDer, UnixTime};

/// Accepts any client certificate, checking only the handshake signature
/// made with its key. `mandatory`: refuse clients that send none.
#[derive(Debug)]
pub struct AnyCert {
    algorithms: WebPkiSupportedAlgorithms,
    mandatory: bool,
}

impl AnyCert {
    /// The verifier for `RequestClientCert` (`mandatory` false) or
    /// `RequireAnyClientCert` (true).
    pub fn new(provider: &CryptoProvider, mandatory: bool) -> AnyCert {
        AnyCert {
            algorithms: provider.signature_verification_algorithms,
            mandatory,
        }
    }
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

/// Another verifier, then `client_allowed_sans`.
#[derive(Debug)]
pub struct SanCheck {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: Vec<String>,
}

impl SanCheck {
    /// Wraps `inner`; a certificate must also carry one of `allowed`.
    pub fn new(inner: Arc<dyn ClientCertVerifier>, allowed: Vec<String>) -> SanCheck {
        SanCheck { inner, allowed }
    }
}

impl ClientCertVerifier for SanCheck {
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
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let names = subject_alt_names(end_entity).ok_or(Error::InvalidCertificate(
            rustls::CertificateError::BadEncoding,
        ))?;
        if names.iter().any(|name| self.allowed.contains(name)) {
            Ok(verified)
        } else {
            Err(Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
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

/// One DER element off the front of `input`: (tag, contents).
fn element<'a>(input: &mut &'a [u8]) -> Option<(u8, &'a [u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let octets = usize::from(first & 0x7f);
        if octets == 0 || octets > 4 || rest.len() < octets {
            return None;
        }
        let (bytes, after) = rest.split_at(octets);
        rest = after;
        bytes.iter().fold(0usize, |n, b| (n << 8) | usize::from(*b))
    };
    if rest.len() < len {
        return None;
    }
    let (contents, after) = rest.split_at(len);
    *input = after;
    Some((tag, contents))
}

/// The contents of the element at the front of `input`, which must have
/// `tag`.
fn expect<'a>(input: &mut &'a [u8], tag: u8) -> Option<&'a [u8]> {
    match element(input)? {
        (t, contents) if t == tag => Some(contents),
        _ => None,
    }
}

const SEQUENCE: u8 = 0x30;
/// The OID 2.5.29.17, id-ce-subjectAltName.
const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

/// The Subject Alternative Names of a DER certificate, as Go formats them
/// (`x509.Certificate`'s DNSNames, EmailAddresses, IPAddresses, URIs);
/// `None` when the DER is malformed.
pub fn subject_alt_names(cert: &[u8]) -> Option<Vec<String>> {
    let mut input = cert;
    let mut certificate = expect(&mut input, SEQUENCE)?;
    let mut tbs = expect(&mut certificate, SEQUENCE)?;
    let mut names = Vec::new();
    while !tbs.is_empty() {
        // extensions [3] EXPLICIT, the last field of TBSCertificate.
        let (tag, contents) = element(&mut tbs)?;
        if tag != 0xa3 {
            continue;
        }
        let mut wrapped = contents;
        let mut extensions = expect(&mut wrapped, SEQUENCE)?;
        while !extensions.is_empty() {
            let mut extension = expect(&mut extensions, SEQUENCE)?;
            let oid = expect(&mut extension, 0x06)?;
            let (mut tag, mut value) = element(&mut extension)?;
            if tag == 0x01 {
                // critical BOOLEAN
                (tag, value) = element(&mut extension)?;
            }
            if tag != 0x04 || oid != SUBJECT_ALT_NAME {
                continue;
            }
            let mut general_names = expect(&mut value, SEQUENCE)?;
            while !general_names.is_empty() {
                let (tag, name) = element(&mut general_names)?;
                let text = |bytes: &[u8]| std::str::from_utf8(bytes).ok().map(str::to_string);
                match tag {
                    // rfc822Name, dNSName, uniformResourceIdentifier
                    0x81 | 0x82 | 0x86 => names.push(text(name)?),
                    // iPAddress
                    0x87 => names.push(match name.len() {
                        4 => Ipv4Addr::from(<[u8; 4]>::try_from(name).ok()?).to_string(),
                        16 => {
                            let ip = Ipv6Addr::from(<[u8; 16]>::try_from(name).ok()?);
                            // Go prints IPv4-mapped addresses as IPv4.
                            match ip.to_ipv4_mapped() {
                                Some(v4) => v4.to_string(),
                                None => ip.to_string(),
                            }
                        }
                        _ => return None,
                    }),
                    _ => {}
                }
            }
        }
    }
    Some(names)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// The skeleton of a certificate with these extensions: the fields
    /// before them only need to be well-formed elements.
    fn certificate(extensions: &[Vec<u8>]) -> Vec<u8> {
        let mut tbs = Vec::new();
        tbs.extend(der(0xa0, &der(0x02, &[2])));
        tbs.extend(der(0x02, &[1; 20]));
        for _ in 0..5 {
            tbs.extend(der(SEQUENCE, &[0x05, 0x00]));
        }
        tbs.extend(der(0xa3, &der(SEQUENCE, &extensions.concat())));
        let mut cert = der(SEQUENCE, &tbs);
        cert.extend(der(SEQUENCE, &[0x05, 0x00]));
        cert.extend(der(0x03, &[0, 1, 2]));
        der(SEQUENCE, &cert)
    }

    fn extension(oid: &[u8], critical: bool, value: &[u8]) -> Vec<u8> {
        let mut body = der(0x06, oid);
        if critical {
            body.extend(der(0x01, &[0xff]));
        }
        body.extend(der(0x04, value));
        der(SEQUENCE, &body)
    }

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
            extension(&[0x55, 0x1d, 0x13], true, &der(SEQUENCE, &[])),
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
        let cert = certificate(&[extension(
            SUBJECT_ALT_NAME,
            true,
            &der(SEQUENCE, &der(0x87, &[1, 2, 3])),
        )]);
        assert_eq!(subject_alt_names(&cert), None);
        let whole = certificate(&[extension(
            SUBJECT_ALT_NAME,
            false,
            &der(SEQUENCE, &der(0x82, b"a")),
        )]);
        for cut in 0..whole.len() {
            // Every truncation is malformed somewhere: never a panic.
            let _ = subject_alt_names(&whole[..cut]);
        }
        assert_eq!(subject_alt_names(&[]), None);
        assert_eq!(
            subject_alt_names(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]),
            None
        );
    }
}
