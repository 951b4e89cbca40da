//! The HTTP client of `httpGet` probes and [`super::PodRunner::http_get`]: one plain HTTP/1.1
//! GET on a connection made inside the pod's network, as the kubelet's prober sends it
//! (`Connection: close`, so the response ends where the connection does).

use std::io;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// A response's status code and body (chunked transfer coding removed).
#[derive(Debug, PartialEq)]
pub(super) struct Response {
    pub status: u16,
    pub body: String,
}

/// Sends `GET path` to `authority` (the `Host` header, `host:port`) with extra `headers`, and
/// reads the whole response.
pub(super) async fn get(
    mut stream: TcpStream,
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> io::Result<Response> {
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    parse(&response)
}

fn parse(response: &[u8]) -> io::Result<Response> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let head_end = find(response, b"\r\n\r\n").ok_or_else(|| invalid("no end of headers"))?;
    let head = String::from_utf8_lossy(&response[..head_end]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid("no status code"))?;
    let chunked = lines.any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("transfer-encoding")
                && value.trim().eq_ignore_ascii_case("chunked")
        })
    });
    let body = &response[head_end + 4..];
    let body = if chunked {
        dechunk(body).ok_or_else(|| invalid("malformed chunked body"))?
    } else {
        body.to_vec()
    };
    Ok(Response {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// The data of a chunked body (RFC 9112, section 7.1); trailers are ignored.
fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = find(rest, b"\r\n")?;
        let line = std::str::from_utf8(&rest[..line_end]).ok()?;
        let size = line.split(';').next()?.trim();
        let size = usize::from_str_radix(size, 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_body() {
        let response = b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        let expected = Response {
            status: 200,
            body: "hello".into(),
        };
        assert_eq!(parse(response).unwrap(), expected);
    }

    #[test]
    fn a_chunked_body() {
        let response = b"HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: Chunked\r\n\r\n\
                         4;ext=1\r\nnot \r\n5\r\nready\r\n0\r\nTrailer: x\r\n\r\n";
        let expected = Response {
            status: 503,
            body: "not ready".into(),
        };
        assert_eq!(parse(response).unwrap(), expected);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse(b"nonsense\r\n\r\n").is_err());
        let truncated = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nff\r\nshort";
        assert!(parse(truncated).is_err());
    }
}
