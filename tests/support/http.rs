//! A minimal HTTP/1.1 client over TCP with `Connection: close`, bounded by a timeout: the
//! kubelet's readiness probe, the load generators and the scrapes of `/metrics` use it.
//!
//! Uses tokio only.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one `GET` may take, connect to last byte.
const TIMEOUT: Duration = Duration::from_secs(2);

/// One exchange: `method path` on `addr` with `headers` and `body` (`Content-Length` added when
/// there is a body or the method is not `GET`), within `timeout`; the status code and the whole
/// response as text (head and body).
pub async fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> anyhow::Result<(u16, String)> {
    tokio::time::timeout(timeout, async {
        let mut s = TcpStream::connect(addr).await?;
        let mut head =
            format!("{method} {path} HTTP/1.1\r\nHost: relayer\r\nConnection: close\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if !body.is_empty() || method != "GET" {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).await?;
        s.write_all(body).await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let status: u16 = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no status line in {text:?}"))?;
        Ok((status, text))
    })
    .await
    .map_err(|_| anyhow::anyhow!("{method} {path} from {addr}: no answer within {timeout:?}"))?
}

/// The body of a whole response `text`; a chunked body (which this client does not decode) is
/// an error.
pub fn body_of(text: &str) -> anyhow::Result<&str> {
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no end of headers in {text:?}"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    anyhow::ensure!(!chunked, "chunked body (not decoded here): {head}");
    Ok(body)
}

/// `GET path` from `addr`: the status code and the whole response as text (head and body).
pub async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    exchange(addr, "GET", path, &[], b"", TIMEOUT).await
}

/// The body of a `200 OK` answer to `GET path`; any other status, or a chunked body, is an
/// error.
pub async fn get_body(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let (status, text) = get(addr, path).await?;
    anyhow::ensure!(status == 200, "GET {path} from {addr}: HTTP {status}");
    body_of(&text)
        .map(str::to_owned)
        .map_err(|e| anyhow::anyhow!("GET {path} from {addr}: {e}"))
}
