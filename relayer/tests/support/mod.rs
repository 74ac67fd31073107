//! Test support: a private `redis-server` on a free loopback port, and a `relayer` process.
//!
//! Every test starts its own servers and nothing here touches a Redis someone else started.
//! Processes are killed when their handle drops, which also happens while a failing test
//! unwinds. `redis-server` comes from the system packages (`apt-get install redis-server`).
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port (bound, then released for the server to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A `redis-server` owned by one test, persisting to its own directory (append-only file,
/// fsync on every write) so that a restart after a kill finds the data it had acknowledged.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server with an empty data directory.
    pub fn start() -> Self {
        let mut dir = tempfile::tempdir().expect("temp dir for redis data");
        for _ in 0..5 {
            let mut server = Self {
                child: None,
                port: free_port(),
                dir,
            };
            if server.spawn() {
                return server;
            }
            // NB: another process took the port between our probe and redis binding it.
            dir = std::mem::replace(&mut server.dir, tempfile::tempdir().expect("temp dir"));
        }
        panic!("redis-server did not start (is the redis-server package installed?)");
    }

    fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "yes"])
            .args(["--appendfsync", "always", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server (apt-get install redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                self.child = None;
                return false;
            }
            if self.ping() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        false
    }

    /// Whether the server answers PING.
    pub fn ping(&self) -> bool {
        self.cli(&["PING"]).is_some_and(|out| out.trim() == "PONG")
    }

    /// Runs `redis-cli` against this server; its stdout, or None if it failed.
    pub fn cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .ok()?;
        (out.status.success() && !out.stdout.starts_with(b"Could not connect"))
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// SIGSTOP: the server hangs with connections open, so calls in flight time out instead of
    /// failing fast (a stalled host, a long fork, a network partition).
    pub fn freeze(&self) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .args(["-STOP", &child.id().to_string()])
                .status()
                .expect("run kill -STOP");
            assert!(status.success(), "kill -STOP failed");
        }
    }

    /// SIGKILL: no shutdown save, exactly what a crash leaves behind.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same data directory.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.spawn() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("redis-server did not restart on port {}", self.port);
    }

    /// Sum of `calls=` over `INFO commandstats`, per command.
    pub fn command_calls(&self) -> std::collections::BTreeMap<String, u64> {
        let info = self.cli(&["INFO", "commandstats"]).unwrap_or_default();
        info.lines()
            .filter_map(|l| {
                let rest = l.strip_prefix("cmdstat_")?;
                let (name, stats) = rest.split_once(':')?;
                let calls = stats
                    .split(',')
                    .find_map(|kv| kv.strip_prefix("calls="))?
                    .parse()
                    .ok()?;
                Some((name.to_owned(), calls))
            })
            .collect()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `relayer` process (the crate's binary) configured through `RELAYER_*` variables.
pub struct RelayerProcess {
    child: Option<Child>,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl RelayerProcess {
    /// Starts the relayer on a free port with `env` and waits until `/health` answers.
    pub fn start(env: &[(&str, String)]) -> Self {
        let mut last_log = String::new();
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("temp dir for relayer log");
            let log = dir.path().join("relayer.log");
            let port = free_port();
            let file = std::fs::File::create(&log).expect("log file");
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_relayer"));
            cmd.env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("RELAYER_LISTEN", format!("127.0.0.1:{port}"))
                .env("RELAYER_LOG__FILTER", "warn")
                // NB: these tests drive thousands of orders from one address; rate limiting has
                // its own tests and is switched on per test through `env` where wanted.
                .env("RELAYER_RATE_LIMIT__ENABLED", "false")
                .stdin(Stdio::null())
                .stdout(file.try_clone().expect("log file"))
                .stderr(file);
            for (k, v) in env {
                cmd.env(k, v);
            }
            let mut process = Self {
                child: Some(cmd.spawn().expect("spawn relayer")),
                base: format!("http://127.0.0.1:{port}"),
                log,
                _dir: dir,
            };
            if process.wait_healthy() {
                return process;
            }
            // NB: most likely another process took the port between the probe and the bind.
            process.kill();
            last_log = process.log_text();
        }
        panic!("relayer did not become healthy; its last log:\n{last_log}");
    }

    fn wait_healthy(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr = self.base.trim_start_matches("http://").to_owned();
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                return false;
            }
            if let Ok(mut stream) = std::net::TcpStream::connect(&addr) {
                use std::io::{Read, Write};
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let req =
                    format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
                let mut buf = String::new();
                if stream.write_all(req.as_bytes()).is_ok()
                    && stream.read_to_string(&mut buf).is_ok()
                    && buf.starts_with("HTTP/1.1 200")
                {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        false
    }

    /// What the process logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RelayerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The admin token the relayer processes of these tests run with.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A user of the HTTP API: its address and API key.
#[derive(Debug, Clone)]
pub struct Trader {
    pub user_id: String,
    pub api_key: String,
}

/// A small client of the relayer's HTTP API.
#[derive(Debug, Clone)]
pub struct Api {
    pub http: reqwest::Client,
}

impl Default for Api {
    fn default() -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
        }
    }
}

impl Api {
    /// Creates an API key for `user_id` (admin).
    pub async fn trader(&self, base: &str, user_id: &str) -> Trader {
        let resp = self
            .http
            .post(format!("{base}/admin/api-keys"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&serde_json::json!({ "userId": user_id }))
            .send()
            .await
            .expect("create api key");
        assert_eq!(resp.status(), 201, "create api key");
        let body: serde_json::Value = resp.json().await.expect("json");
        Trader {
            user_id: user_id.to_owned(),
            api_key: body["apiKey"].as_str().expect("apiKey").to_owned(),
        }
    }

    /// Credits `amount` of `asset` (admin).
    pub async fn deposit(&self, base: &str, user_id: &str, asset: &str, amount: u64) {
        let resp = self
            .http
            .post(format!("{base}/admin/deposits"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&serde_json::json!({ "userId": user_id, "asset": asset, "amount": amount.to_string() }))
            .send()
            .await
            .expect("deposit");
        assert_eq!(resp.status(), 200, "deposit");
    }

    /// Places an order; the status and the JSON body.
    pub async fn place(
        &self,
        base: &str,
        trader: &Trader,
        order: &serde_json::Value,
    ) -> reqwest::Result<(u16, serde_json::Value)> {
        let resp = self
            .http
            .post(format!("{base}/v2/orders"))
            .bearer_auth(&trader.api_key)
            .json(order)
            .send()
            .await?;
        let status = resp.status().as_u16();
        let body = resp.json().await.unwrap_or(serde_json::Value::Null);
        Ok((status, body))
    }

    /// GET with the trader's key; the status and the JSON body.
    pub async fn get(&self, url: &str, trader: &Trader) -> (u16, serde_json::Value) {
        let resp = self
            .http
            .get(url)
            .bearer_auth(&trader.api_key)
            .send()
            .await
            .expect("get");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// Status of `/ready`.
    pub async fn ready(&self, base: &str) -> u16 {
        match self.http.get(format!("{base}/ready")).send().await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    }
}

/// A decimal string field of a JSON body as u128.
pub fn num(v: &serde_json::Value) -> u128 {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a decimal string: {v}"))
}

/// `0x` and 40 hex digits made from `n`.
pub fn address(n: usize) -> String {
    format!("0x{:040x}", n + 0xa11ce)
}

/// Every order's state as the relayer reports it, and the balances of every trader; then the
/// invariants that must hold after any traffic: no order over-filled, buyers and sellers of
/// each market filled and paid alike, and collateral and shares equal to the deposits.
pub async fn check_invariants(
    api: &Api,
    base: &str,
    traders: &[Trader],
    orders: &[(String, usize)],
    markets: &[&str],
    collateral_deposited: u128,
    shares_deposited: u128,
) -> Result<(), String> {
    let mut bought: std::collections::BTreeMap<String, (u128, u128)> = Default::default();
    let mut sold: std::collections::BTreeMap<String, (u128, u128)> = Default::default();
    for (id, owner) in orders {
        let (status, o) = api
            .get(&format!("{base}/v2/orders/{id}"), &traders[*owner])
            .await;
        if status == 404 {
            continue; // refused before it reached the book
        }
        if status != 200 {
            return Err(format!("GET order {id}: {status} {o}"));
        }
        let (filled, amount, paid) = (num(&o["filled"]), num(&o["amount"]), num(&o["collateral"]));
        if filled > amount {
            return Err(format!("order {id} over-filled: {o}"));
        }
        let market = o["marketKey"].as_str().unwrap_or_default().to_owned();
        let side = if o["side"] == "buy" {
            &mut bought
        } else {
            &mut sold
        };
        let e = side.entry(market).or_default();
        e.0 += filled;
        e.1 += paid;
    }
    if bought != sold {
        return Err(format!(
            "fills do not pair up: bought (shares, paid) {bought:?} vs sold {sold:?}"
        ));
    }
    let mut collateral = 0u128;
    let mut shares: std::collections::BTreeMap<String, u128> = Default::default();
    for t in traders {
        let (status, b) = api
            .get(&format!("{base}/v2/balances/{}", t.user_id), t)
            .await;
        if status != 200 {
            return Err(format!("GET balances: {status} {b}"));
        }
        collateral += num(&b["collateral"]["available"]) + num(&b["collateral"]["reserved"]);
        for m in markets {
            let s = &b["shares"][*m];
            if !s.is_null() {
                *shares.entry((*m).to_owned()).or_default() +=
                    num(&s["available"]) + num(&s["reserved"]);
            }
        }
    }
    if collateral != collateral_deposited {
        return Err(format!(
            "collateral {collateral} != deposited {collateral_deposited}"
        ));
    }
    for m in markets {
        let got = shares.get(*m).copied().unwrap_or_default();
        if got != shares_deposited {
            return Err(format!(
                "shares of {m}: {got} != deposited {shares_deposited}"
            ));
        }
    }
    Ok(())
}

/// The markets the multi-client tests trade in.
pub const MARKETS: [&str; 2] = ["80002:1", "80002:2"];

/// A pseudo-random order from `seed` (one step of a 64-bit LCG): buy or sell in one of
/// [`MARKETS`], on a narrow grid around 0.5 so that most orders cross, 1 to 40 shares.
pub fn crossing_order(seed: u64, order_id: &str, user_id: &str) -> serde_json::Value {
    let buy = (seed >> 33) & 1 == 0;
    let tick = (seed >> 40) % 9;
    let price = if buy {
        460_000 + tick * 10_000
    } else {
        540_000 - tick * 10_000
    };
    serde_json::json!({
        "orderId": order_id,
        "marketKey": MARKETS[(seed >> 50) as usize % 2],
        "userId": user_id,
        "side": if buy { "buy" } else { "sell" },
        "price": price.to_string(),
        "amount": (1 + (seed >> 20) % 40).to_string(),
    })
}
