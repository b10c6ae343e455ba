//! HTTP as the tests speak it: raw bytes over a TcpStream, so that what the
//! server really sends is what is checked, with no client library between.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

/// An HTTP response, as read off the wire.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    /// The value of header `name` (lower case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The bytes of a `METHOD PATH` request that asks the server to close the
/// connection after answering.
pub fn request(method: &str, path: &str) -> String {
    format!("{method} {path} HTTP/1.1\r\nHost: port_exporter-test\r\nConnection: close\r\n\r\n")
}

/// Sends `method path` to `addr` and reads the whole answer, failing the
/// test if it takes longer than `limit`.
#[track_caller]
pub fn http(addr: &str, method: &str, path: &str, limit: Duration) -> HttpResponse {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_read_timeout(Some(limit)).unwrap();
    stream.write_all(request(method, path).as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("{method} {path} on {addr}: {e}"));
    parse_http(&String::from_utf8(raw).expect("response is UTF-8"))
}

/// Opens a connection to `addr`, sends `bytes`, and reads whatever comes
/// back until the server closes (or `limit` passes). Errors on either side
/// are the point of the callers, so they are not failures here.
pub fn exchange(addr: &str, bytes: &[u8], limit: Duration) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(limit)).unwrap();
    let _ = stream.write_all(bytes);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer
}

/// Parses a complete HTTP/1.1 response (no chunked bodies: we send none).
#[track_caller]
pub fn parse_http(raw: &str) -> HttpResponse {
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {raw:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect(status_line);
    let headers = lines
        .map(|line| {
            let (name, value) = line.split_once(':').expect(line);
            (name.trim().to_ascii_lowercase(), value.trim().to_string())
        })
        .collect();
    HttpResponse {
        status,
        headers,
        body: body.to_string(),
    }
}

/// An `Authorization: Basic` header line (no line end) for `user` and
/// `password`, base64 as RFC 7617 says.
pub fn basic_auth(user: &str, password: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let raw = format!("{user}:{password}");
    let mut encoded = String::new();
    for chunk in raw.as_bytes().chunks(3) {
        let n = chunk.iter().fold(0u32, |n, &b| (n << 8) | u32::from(b)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            encoded.push(if i <= chunk.len() {
                ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char
            } else {
                '='
            });
        }
    }
    format!("Authorization: Basic {encoded}")
}
