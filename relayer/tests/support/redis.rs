//! A private `redis-server` on a free loopback port, owned by one test, and [`free_port`].
//!
//! Nothing here touches a Redis someone else started. The server is killed when its handle
//! drops, which also happens while a failing test unwinds. `redis-server` comes from the system
//! packages (`apt-get install redis-server`). Uses only std and `tempfile`.

use std::net::TcpListener;
use std::path::Path;
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
        let port = self.port;
        await_start(&mut self.child, || {
            let mut cli = Command::new("redis-cli");
            cli.args(["-h", "127.0.0.1", "-p", &port.to_string(), "PING"]);
            run_cli(&mut cli).is_some_and(|out| out.trim() == "PONG")
        })
    }

    /// Whether the server answers PING.
    pub fn ping(&self) -> bool {
        self.cli(&["PING"]).is_some_and(|out| out.trim() == "PONG")
    }

    /// Runs `redis-cli` against this server; its stdout, or None if it failed.
    pub fn cli(&self, args: &[&str]) -> Option<String> {
        let mut cli = Command::new("redis-cli");
        cli.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        run_cli(cli.args(args))
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

    /// SIGCONT after [`RedisServer::freeze`].
    pub fn thaw(&self) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status()
                .expect("run kill -CONT");
            assert!(status.success(), "kill -CONT failed");
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

/// Waits, at most 10 s, for the server just spawned into `child` to answer `ping`: true once
/// it does; false when the process exited (another process took its port) or never answered
/// (it is then killed and `child` emptied).
pub fn await_start(child: &mut Option<Child>, ping: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(c) = child.as_mut()
            && let Ok(Some(_)) = c.try_wait()
        {
            *child = None;
            return false;
        }
        if ping() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
    false
}

/// Runs a `redis-cli` command; its stdout, or None if it failed or could not connect.
pub fn run_cli(cli: &mut Command) -> Option<String> {
    let out = cli.stdin(Stdio::null()).output().ok()?;
    (out.status.success() && !out.stdout.starts_with(b"Could not connect"))
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}
