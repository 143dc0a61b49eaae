//! A small blocking HTTP/1.1 client for the control API, over its Unix
//! socket or TCP: what `espgwctl` and the tests speak. No size cap on
//! answers (a list of 100 000 SAs is paged anyway), chunked bodies decoded,
//! line-by-line reading for the event stream.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

/// Where the API is.
#[derive(Debug, Clone)]
pub enum Endpoint {
    Unix(PathBuf),
    /// `host:port` from an `http://host:port` URL.
    Tcp(String),
}

impl Endpoint {
    /// `unix:/path`, a path starting with `/`, or `http://host:port[/]`.
    pub fn parse(s: &str) -> Result<Endpoint, String> {
        if let Some(p) = s.strip_prefix("unix:") {
            return Ok(Endpoint::Unix(p.into()));
        }
        if s.starts_with('/') {
            return Ok(Endpoint::Unix(s.into()));
        }
        match s.strip_prefix("http://") {
            Some(rest) => {
                let hp = rest.trim_end_matches('/');
                if hp.is_empty() || hp.contains('/') {
                    return Err(format!("{s:?}: give http://HOST:PORT"));
                }
                Ok(Endpoint::Tcp(hp.to_string()))
            }
            None => Err(format!("{s:?} is neither http://HOST:PORT nor a socket path")),
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
            Endpoint::Tcp(h) => write!(f, "http://{h}"),
        }
    }
}

/// An answer: status, content type and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The target of a `Link: <...>; rel="next"` header (the next page).
    pub fn next_page(&self) -> Option<String> {
        let l = self.header("link")?;
        l.split(',').find(|part| part.contains("rel=\"next\"")).and_then(|part| {
            let (_, rest) = part.split_once('<')?;
            Some(rest.split_once('>')?.0.to_string())
        })
    }
}

/// A connection's two halves as one stream.
pub trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// Open a connection with a read/write deadline.
pub fn connect(ep: &Endpoint, timeout: Option<Duration>) -> std::io::Result<Box<dyn Stream>> {
    Ok(match ep {
        Endpoint::Unix(p) => {
            let s = UnixStream::connect(p)?;
            s.set_read_timeout(timeout)?;
            s.set_write_timeout(timeout)?;
            Box::new(s)
        }
        Endpoint::Tcp(h) => {
            let s = TcpStream::connect(h)?;
            s.set_nodelay(true)?;
            s.set_read_timeout(timeout)?;
            s.set_write_timeout(timeout)?;
            Box::new(s)
        }
    })
}

/// The request head for `ep` (Host is the listener's own address on TCP).
fn head(ep: &Endpoint, method: &str, path: &str, token: Option<&str>, body: Option<&[u8]>) -> String {
    let host = match ep {
        Endpoint::Tcp(h) => h.as_str(),
        Endpoint::Unix(_) => "localhost",
    };
    let mut h =
        format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nAccept: application/json\r\n");
    if let Some(t) = token {
        h.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if let Some(b) = body {
        h.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", b.len()));
    }
    h.push_str("\r\n");
    h
}

/// One request, one answer.
pub fn request(
    ep: &Endpoint,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
    timeout: Duration,
) -> std::io::Result<Answer> {
    let mut s = connect(ep, Some(timeout))?;
    s.write_all(head(ep, method, path, token, body).as_bytes())?;
    if let Some(b) = body {
        s.write_all(b)?;
    }
    s.flush()?;
    let mut r = BufReader::new(s);
    let (status, headers) = read_head(&mut r)?;
    let content_type = header(&headers, "content-type").unwrap_or_default();
    let body = if method == "HEAD" { Vec::new() } else { read_body(&mut r, &headers)? };
    Ok(Answer { status, content_type, body, headers })
}

/// Start a streaming request (the event stream): the status, and a reader
/// positioned at the start of the (chunk-decoded) body.
pub fn stream(ep: &Endpoint, path: &str, token: Option<&str>) -> std::io::Result<(u16, Box<dyn BufRead + Send>)> {
    let mut s = connect(ep, None)?;
    s.write_all(head(ep, "GET", path, token, None).as_bytes())?;
    let mut r = BufReader::new(s);
    let (status, headers) = read_head(&mut r)?;
    let chunked = header(&headers, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    if chunked {
        Ok((status, Box::new(BufReader::new(Chunked { inner: r, left: 0, done: false }))))
    } else {
        Ok((status, Box::new(r)))
    }
}

fn bad(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.into())
}

fn read_head(r: &mut impl BufRead) -> std::io::Result<(u16, Vec<(String, String)>)> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| bad(format!("not an HTTP answer: {:?}", line.trim())))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(bad("the answer ended inside its headers"));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    Ok((status, headers))
}

fn header(h: &[(String, String)], name: &str) -> Option<String> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

fn read_body(r: &mut (impl BufRead + Send), headers: &[(String, String)]) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    if header(headers, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        Chunked { inner: r, left: 0, done: false }.read_to_end(&mut body)?;
    } else if let Some(n) = header(headers, "content-length").and_then(|v| v.parse::<u64>().ok()) {
        r.take(n).read_to_end(&mut body)?;
        if body.len() as u64 != n {
            return Err(bad("the answer ended early"));
        }
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok(body)
}

/// A chunked body (RFC 9112 §7.1) as a plain reader.
struct Chunked<R> {
    inner: R,
    left: u64,
    done: bool,
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let mut line = String::new();
            self.inner.read_line(&mut line)?;
            if line.trim().is_empty() {
                // The CRLF after the previous chunk.
                line.clear();
                self.inner.read_line(&mut line)?;
            }
            let size = line.trim().split(';').next().unwrap_or("");
            self.left = u64::from_str_radix(size, 16).map_err(|_| bad(format!("bad chunk size {size:?}")))?;
            if self.left == 0 {
                self.done = true;
                return Ok(0);
            }
        }
        let want = buf.len().min(self.left as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(bad("the answer ended inside a chunk"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert!(matches!(Endpoint::parse("/run/espgw/api.sock"), Ok(Endpoint::Unix(_))));
        assert!(matches!(Endpoint::parse("unix:api.sock"), Ok(Endpoint::Unix(_))));
        assert!(matches!(Endpoint::parse("http://127.0.0.1:9470/"), Ok(Endpoint::Tcp(h)) if h == "127.0.0.1:9470"));
        assert!(Endpoint::parse("https://x").is_err());
        assert!(Endpoint::parse("http://x/api").is_err());
    }

    #[test]
    fn chunked_bodies_decode() {
        let raw = b"4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n";
        let mut out = String::new();
        Chunked { inner: &raw[..], left: 0, done: false }.read_to_string(&mut out).unwrap();
        assert_eq!(out, "Wikipedia");
    }
}
