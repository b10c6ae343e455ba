//! Client certificate checks that rustls does not ship: Go's
//! `RequestClientCert` and `RequireAnyClientCert` (any certificate, no
//! chain verification, but the client must still prove it holds the key),
//! and exporter-toolkit's `client_allowed_sans` (the certificate must carry
//! one of the listed Subject Alternative Names, compared as Go prints them:
//! DNS names, e-mail addresses, IP addresses and URIs).
//!
//! Also Go's acceptance of a self-signed client certificate that is itself
//! listed in the client CA file ([`AnchorAsLeaf`]): webpki refuses a CA
//! certificate as an end entity, Go trusts a certificate found in its root
//! pool. exporter-toolkit's own test data relies on it.
//!
//! All act during the handshake, so a refused client gets a TLS alert and
//! never reaches HTTP, as with the peer.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

use rustls::CertificateError;
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

/// Another verifier (webpki's, against the client CA file), and when it
/// refuses: a certificate byte for byte equal to one of the CA file's own
/// certificates, as `openssl req -x509` makes them (self-signed, `CA:TRUE`),
/// which Go accepts because it finds the certificate itself in its roots.
/// Such a certificate is trusted as listed (it is its own anchor) and still
/// checked: its validity dates at the time of the handshake, its extended
/// key usage (clientAuth or any, when present), its key usage
/// (digitalSignature, when present), and no critical extension this check
/// does not know. The handshake signature is checked with its key as for
/// any client, and `client_allowed_sans` (a [`SanCheck`] around this one)
/// applies as well.
#[derive(Debug)]
pub struct AnchorAsLeaf {
    inner: Arc<dyn ClientCertVerifier>,
    anchors: Vec<CertificateDer<'static>>,
}

impl AnchorAsLeaf {
    /// Wraps `inner`, built from `anchors`.
    pub fn new(inner: Arc<dyn ClientCertVerifier>, anchors: Vec<CertificateDer<'static>>) -> Self {
        AnchorAsLeaf { inner, anchors }
    }
}

impl ClientCertVerifier for AnchorAsLeaf {
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
        let refused = match self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
        {
            Ok(verified) => return Ok(verified),
            Err(err) => err,
        };
        if !self
            .anchors
            .iter()
            .any(|anchor| anchor.as_ref() == end_entity.as_ref())
        {
            return Err(refused);
        }
        check_listed_leaf(end_entity, now.as_secs())?;
        Ok(ClientCertVerified::assertion())
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

/// The OIDs of the extensions [`check_listed_leaf`] knows.
const BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];
const KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x0f];
const EXT_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x25];
const SUBJECT_KEY_ID: &[u8] = &[0x55, 0x1d, 0x0e];
const AUTHORITY_KEY_ID: &[u8] = &[0x55, 0x1d, 0x23];
/// id-kp-clientAuth, 1.3.6.1.5.5.7.3.2.
const CLIENT_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];
/// anyExtendedKeyUsage, 2.5.29.37.0.
const ANY_EKU: &[u8] = &[0x55, 0x1d, 0x25, 0x00];

/// The checks of a listed certificate presented as a client's own (see
/// [`AnchorAsLeaf`]), at `now` (seconds since the epoch).
fn check_listed_leaf(cert: &[u8], now: u64) -> Result<(), Error> {
    let bad = || Error::InvalidCertificate(CertificateError::BadEncoding);
    let (not_before, not_after) = validity(cert).ok_or_else(bad)?;
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    if now < not_before {
        return Err(Error::InvalidCertificate(CertificateError::NotValidYet));
    }
    if now > not_after {
        return Err(Error::InvalidCertificate(CertificateError::Expired));
    }
    let usage = || Error::InvalidCertificate(CertificateError::InvalidPurpose);
    for (oid, critical, value) in extensions(cert).ok_or_else(bad)? {
        match oid {
            KEY_USAGE => {
                // BIT STRING: the unused-bit count, then digitalSignature
                // as the first bit.
                let mut input = value;
                let bits = expect(&mut input, 0x03).ok_or_else(bad)?;
                if bits.get(1).is_none_or(|first| first & 0x80 == 0) {
                    return Err(usage());
                }
            }
            EXT_KEY_USAGE => {
                let mut input = value;
                let mut purposes = expect(&mut input, SEQUENCE).ok_or_else(bad)?;
                let mut allowed = false;
                while !purposes.is_empty() {
                    let purpose = expect(&mut purposes, 0x06).ok_or_else(bad)?;
                    allowed |= purpose == CLIENT_AUTH || purpose == ANY_EKU;
                }
                if !allowed {
                    return Err(usage());
                }
            }
            BASIC_CONSTRAINTS | SUBJECT_ALT_NAME | SUBJECT_KEY_ID | AUTHORITY_KEY_ID => {}
            _ if critical => {
                return Err(Error::InvalidCertificate(
                    CertificateError::ApplicationVerificationFailure,
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The TBSCertificate of a DER certificate.
fn tbs(cert: &[u8]) -> Option<&[u8]> {
    let mut input = cert;
    let mut certificate = expect(&mut input, SEQUENCE)?;
    expect(&mut certificate, SEQUENCE)
}

/// notBefore and notAfter, in seconds since the epoch.
fn validity(cert: &[u8]) -> Option<(i64, i64)> {
    let mut tbs = tbs(cert)?;
    // [0] version (optional), serial, signature algorithm, issuer.
    let (mut tag, _) = element(&mut tbs)?;
    if tag == 0xa0 {
        (tag, _) = element(&mut tbs)?;
    }
    if tag != 0x02 {
        return None;
    }
    expect(&mut tbs, SEQUENCE)?;
    expect(&mut tbs, SEQUENCE)?;
    let mut validity = expect(&mut tbs, SEQUENCE)?;
    let not_before = time(&mut validity)?;
    let not_after = time(&mut validity)?;
    Some((not_before, not_after))
}

/// A UTCTime or GeneralizedTime (`Z` only, as RFC 5280 requires), in
/// seconds since the epoch.
fn time(input: &mut &[u8]) -> Option<i64> {
    let (tag, text) = element(input)?;
    let text = std::str::from_utf8(text).ok()?.strip_suffix('Z')?;
    let (year, rest) = match (tag, text.len()) {
        (0x17, 12) => {
            let yy: i64 = text[..2].parse().ok()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &text[2..])
        }
        (0x18, 14) => (text[..4].parse().ok()?, &text[4..]),
        _ => return None,
    };
    if !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let field = |i: usize| -> i64 { rest[i..i + 2].parse().unwrap_or(0) };
    let (month, day) = (field(0), field(2));
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + field(4) * 3600 + field(6) * 60 + field(8))
}

/// One extension: (OID, critical, extnValue contents).
type Extension<'a> = (&'a [u8], bool, &'a [u8]);

/// The extensions of a DER certificate: (OID, critical, extnValue
/// contents); empty without any, `None` when malformed.
fn extensions(cert: &[u8]) -> Option<Vec<Extension<'_>>> {
    let mut tbs = tbs(cert)?;
    let mut out = Vec::new();
    while !tbs.is_empty() {
        // extensions [3] EXPLICIT, the last field of TBSCertificate.
        let (tag, contents) = element(&mut tbs)?;
        if tag != 0xa3 {
            continue;
        }
        let mut wrapped = contents;
        let mut list = expect(&mut wrapped, SEQUENCE)?;
        while !list.is_empty() {
            let mut extension = expect(&mut list, SEQUENCE)?;
            let oid = expect(&mut extension, 0x06)?;
            let (mut tag, mut value) = element(&mut extension)?;
            let mut critical = false;
            if tag == 0x01 {
                critical = value.first().is_some_and(|b| *b != 0);
                (tag, value) = element(&mut extension)?;
            }
            if tag != 0x04 {
                return None;
            }
            out.push((oid, critical, value));
        }
    }
    Some(out)
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
    let mut names = Vec::new();
    for (oid, _, mut value) in extensions(cert)? {
        if oid != SUBJECT_ALT_NAME {
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

    /// A certificate skeleton with a real validity and these extensions.
    fn dated(not_before: &[u8], not_after: &[u8], extensions: &[Vec<u8>]) -> Vec<u8> {
        let mut tbs = Vec::new();
        tbs.extend(der(0xa0, &der(0x02, &[2])));
        tbs.extend(der(0x02, &[1; 20]));
        tbs.extend(der(SEQUENCE, &[0x05, 0x00]));
        tbs.extend(der(SEQUENCE, &[]));
        let mut validity = der(0x17, not_before);
        validity.extend(der(0x18, not_after));
        tbs.extend(der(SEQUENCE, &validity));
        tbs.extend(der(SEQUENCE, &[]));
        tbs.extend(der(SEQUENCE, &[0x05, 0x00]));
        if !extensions.is_empty() {
            tbs.extend(der(0xa3, &der(SEQUENCE, &extensions.concat())));
        }
        let mut cert = der(SEQUENCE, &tbs);
        cert.extend(der(SEQUENCE, &[0x05, 0x00]));
        cert.extend(der(0x03, &[0, 1, 2]));
        der(SEQUENCE, &cert)
    }

    #[test]
    fn asn1_times() {
        let at = |tag: u8, text: &[u8]| time(&mut &der(tag, text)[..]);
        assert_eq!(at(0x17, b"700101000000Z"), Some(0));
        assert_eq!(at(0x17, b"491231235959Z"), Some(2_524_607_999));
        assert_eq!(at(0x18, b"21210727153218Z"), Some(4_783_073_538));
        assert_eq!(at(0x18, b"20240229120000Z"), Some(1_709_208_000));
        for bad in [
            &b"700101000000"[..],
            b"7001010000Z",
            b"701301000000Z",
            b"70010100000aZ",
        ] {
            assert_eq!(at(0x17, bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_listed_certificate_is_still_checked() {
        // Valid from 2020 to 2121; the handshake in 2026.
        let now = 1_790_000_000;
        let cert = |extensions: &[Vec<u8>]| dated(b"200101000000Z", b"21210101000000Z", extensions);
        let refusal = |c: &[u8], at| check_listed_leaf(c, at).err();
        let invalid = |e| Some(Error::InvalidCertificate(e));
        let ca = extension(BASIC_CONSTRAINTS, true, &der(SEQUENCE, &der(0x01, &[0xff])));
        assert_eq!(refusal(&cert(std::slice::from_ref(&ca)), now), None);
        assert_eq!(
            refusal(&cert(&[]), 1_500_000_000),
            invalid(CertificateError::NotValidYet)
        );
        assert_eq!(
            refusal(&cert(&[]), 4_800_000_000),
            invalid(CertificateError::Expired)
        );
        let key_usage = |bits: u8| extension(KEY_USAGE, true, &der(0x03, &[1, bits]));
        assert_eq!(refusal(&cert(&[key_usage(0x80)]), now), None);
        // keyCertSign and cRLSign only: the key may not sign a handshake.
        assert_eq!(
            refusal(&cert(&[key_usage(0x06)]), now),
            invalid(CertificateError::InvalidPurpose)
        );
        let eku = |oids: &[&[u8]]| {
            let list: Vec<u8> = oids.iter().flat_map(|o| der(0x06, o)).collect();
            extension(EXT_KEY_USAGE, false, &der(SEQUENCE, &list))
        };
        let server_auth: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];
        assert_eq!(
            refusal(&cert(&[eku(&[server_auth])]), now),
            invalid(CertificateError::InvalidPurpose)
        );
        assert_eq!(
            refusal(&cert(&[eku(&[server_auth, CLIENT_AUTH])]), now),
            None
        );
        assert_eq!(refusal(&cert(&[eku(&[ANY_EKU])]), now), None);
        // Name constraints, critical: not understood here, so refused.
        let name_constraints: &[u8] = &[0x55, 0x1d, 0x1e];
        let unknown = |critical| extension(name_constraints, critical, &der(SEQUENCE, &[]));
        assert!(refusal(&cert(&[ca.clone(), unknown(true)]), now).is_some());
        assert_eq!(refusal(&cert(&[ca, unknown(false)]), now), None);
        assert!(refusal(&certificate(&[]), now).is_some());
    }
}
