//! A minimal FastCGI client (one request per connection, responder role),
//! enough to ask PHP-FPM itself to run a script: zdeploy uses it to reset
//! opcache after a switch without any PHP helper tool.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

const VERSION: u8 = 1;
const BEGIN_REQUEST: u8 = 1;
const END_REQUEST: u8 = 3;
const PARAMS: u8 = 4;
const STDIN: u8 = 5;
const STDOUT: u8 = 6;
const STDERR: u8 = 7;
const RESPONDER: u16 = 1;
const REQUEST_ID: u16 = 1;
const MAX_CONTENT: usize = 65_535;

/// Where PHP-FPM listens: a socket path, or host:port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Unix(PathBuf),
    Tcp(String),
}

impl Address {
    pub fn parse(text: &str) -> Address {
        match text.strip_prefix("unix:") {
            Some(path) => Address::Unix(PathBuf::from(path)),
            None if text.starts_with('/') => Address::Unix(PathBuf::from(text)),
            None => Address::Tcp(text.to_string()),
        }
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
            Address::Tcp(addr) => f.write_str(addr),
        }
    }
}

#[derive(Debug, Default)]
pub struct Response {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub app_status: u32,
}

impl Response {
    /// The body after the CGI headers.
    pub fn body(&self) -> String {
        let text = String::from_utf8_lossy(&self.stdout);
        match text.split_once("\r\n\r\n") {
            Some((_, body)) => body.to_string(),
            None => text.into_owned(),
        }
    }
}

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

fn connect(address: &Address, timeout: Duration) -> io::Result<Box<dyn Stream>> {
    Ok(match address {
        Address::Unix(path) => {
            let stream = UnixStream::connect(path)?;
            stream.set_read_timeout(Some(timeout))?;
            stream.set_write_timeout(Some(timeout))?;
            Box::new(stream)
        }
        Address::Tcp(addr) => {
            let stream = TcpStream::connect(addr)?;
            stream.set_read_timeout(Some(timeout))?;
            stream.set_write_timeout(Some(timeout))?;
            Box::new(stream)
        }
    })
}

fn record(kind: u8, content: &[u8]) -> Vec<u8> {
    let padding = (8 - content.len() % 8) % 8;
    let mut out = Vec::with_capacity(8 + content.len() + padding);
    out.push(VERSION);
    out.push(kind);
    out.extend_from_slice(&REQUEST_ID.to_be_bytes());
    out.extend_from_slice(&(content.len() as u16).to_be_bytes());
    out.push(padding as u8);
    out.push(0);
    out.extend_from_slice(content);
    out.resize(out.len() + padding, 0);
    out
}

fn encode_length(out: &mut Vec<u8>, length: usize) {
    if length < 128 {
        out.push(length as u8);
    } else {
        out.extend_from_slice(&((length as u32) | 0x8000_0000).to_be_bytes());
    }
}

/// The name-value pairs of a PARAMS stream.
pub fn encode_params(params: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in params {
        encode_length(&mut out, name.len());
        encode_length(&mut out, value.len());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// Send one request with `params` and no body; collect the response.
pub fn request(
    address: &Address,
    params: &[(&str, &str)],
    timeout: Duration,
) -> io::Result<Response> {
    let mut stream = connect(address, timeout)?;
    let mut message = Vec::new();
    let mut begin = RESPONDER.to_be_bytes().to_vec();
    begin.extend_from_slice(&[0; 6]);
    message.extend(record(BEGIN_REQUEST, &begin));
    for chunk in encode_params(params).chunks(MAX_CONTENT) {
        message.extend(record(PARAMS, chunk));
    }
    message.extend(record(PARAMS, &[]));
    message.extend(record(STDIN, &[]));
    stream.write_all(&message)?;
    let mut response = Response::default();
    loop {
        let mut header = [0u8; 8];
        stream.read_exact(&mut header)?;
        let length = u16::from_be_bytes([header[4], header[5]]) as usize;
        let mut content = vec![0u8; length + header[6] as usize];
        stream.read_exact(&mut content)?;
        content.truncate(length);
        match header[1] {
            STDOUT => response.stdout.extend_from_slice(&content),
            STDERR => response.stderr.extend_from_slice(&content),
            END_REQUEST if content.len() >= 4 => {
                response.app_status =
                    u32::from_be_bytes([content[0], content[1], content[2], content[3]]);
                return Ok(response);
            }
            END_REQUEST => return Err(io::Error::other("short END_REQUEST record")),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_params_are_encoded_as_the_spec_says() {
        assert_eq!(record(STDIN, &[]), vec![1, 5, 0, 1, 0, 0, 0, 0]);
        assert_eq!(
            record(PARAMS, b"abc"),
            vec![1, 4, 0, 1, 0, 3, 5, 0, b'a', b'b', b'c', 0, 0, 0, 0, 0]
        );
        let long = "x".repeat(200);
        let encoded = encode_params(&[("A", "b"), ("LONG", &long)]);
        assert_eq!(&encoded[..4], &[1, 1, b'A', b'b']);
        assert_eq!(&encoded[4..9], &[4, 0x80, 0, 0, 200]);
        assert_eq!(
            Address::parse("/run/php.sock"),
            Address::Unix("/run/php.sock".into())
        );
        assert_eq!(
            Address::parse("unix:/run/php.sock"),
            Address::Unix("/run/php.sock".into())
        );
        assert_eq!(
            Address::parse("127.0.0.1:9000"),
            Address::Tcp("127.0.0.1:9000".into())
        );
    }
}
