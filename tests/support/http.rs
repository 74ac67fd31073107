//! A minimal HTTP/1.1 `GET` over TCP with `Connection: close`, bounded by a timeout: the
//! kubelet's readiness probe, the load generator and the scrapes of `/metrics` use it.
//!
//! Uses tokio only.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one request may take, connect to last byte.
const TIMEOUT: Duration = Duration::from_secs(2);

/// `GET path` from `addr`: the status code and the whole response as text (head and body).
pub async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    tokio::time::timeout(TIMEOUT, async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: relayer\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
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
    .map_err(|_| anyhow::anyhow!("GET {path} from {addr}: no answer within {TIMEOUT:?}"))?
}

/// The body of a `200 OK` answer to `GET path`; any other status, or a chunked body (which
/// this client does not decode), is an error.
pub async fn get_body(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let (status, text) = get(addr, path).await?;
    anyhow::ensure!(status == 200, "GET {path} from {addr}: HTTP {status}");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("GET {path} from {addr}: no end of headers"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    anyhow::ensure!(!chunked, "GET {path} from {addr}: chunked body");
    Ok(body.to_owned())
}
