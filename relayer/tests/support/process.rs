//! Launchers of the crate's `relayer` binary as a child process: [`RelayerProcess`]
//! (configured through `RELAYER_*` variables on a probed free port, waited on until `/health`
//! answers, its log kept in a file) and [`JsonLogRelayer`] (bound to `127.0.0.1:0`, its address
//! read from its JSON log, for tests that signal the process and watch it exit).
//!
//! A [`RelayerProcess`] can be sent a signal (`kill -STOP`/`-CONT`, to pause it), and SIGKILLed
//! and started again on the same port with the same environment ([`RelayerProcess::restart`]),
//! its log appended to the same file, or asked to stop (`signal("TERM")`, as Kubernetes drains a
//! pod) and waited on until it exits ([`RelayerProcess::wait_exit`]); [`with`] changes one
//! variable of an environment. Both kill the child when their handle drops. Uses
//! [`super::redis::free_port`], `tempfile` and `serde_json`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::redis::free_port;

/// `env` with `key` set to `value` (replacing an earlier value).
pub fn with(
    mut env: Vec<(&'static str, String)>,
    key: &'static str,
    value: &str,
) -> Vec<(&'static str, String)> {
    env.retain(|(k, _)| *k != key);
    env.push((key, value.to_owned()));
    env
}

/// A `relayer` process (the crate's binary) configured through `RELAYER_*` variables.
pub struct RelayerProcess {
    child: Option<Child>,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    port: u16,
    env: Vec<(String, String)>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl RelayerProcess {
    /// Starts the relayer on a free port with `env` and waits until `/health` answers.
    pub fn start(env: &[(&str, String)]) -> Self {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        let mut last_log = String::new();
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("temp dir for relayer log");
            let log = dir.path().join("relayer.log");
            let port = free_port();
            let mut process = Self {
                child: None,
                base: format!("http://127.0.0.1:{port}"),
                port,
                env: env.clone(),
                log,
                _dir: dir,
            };
            if process.spawn() {
                return process;
            }
            // NB: most likely another process took the port between the probe and the bind.
            process.kill();
            last_log = process.log_text();
        }
        panic!("relayer did not become healthy; its last log:\n{last_log}");
    }

    /// [`Self::start`], then waits (at most 30 s) until `/ready` answers 200: the store's
    /// connections are open. `/health` answers before that, and a write sent between the two
    /// fails with 503 (the store is not reached yet), so tests that write at once start here.
    pub fn start_ready(env: &[(&str, String)]) -> Self {
        let mut process = Self::start(env);
        if !process.wait_answers_200("/ready", Duration::from_secs(30)) {
            panic!(
                "relayer on port {} did not become ready (it exited, or 30 s passed); its log:\n{}",
                process.port,
                process.log_text()
            );
        }
        process
    }

    /// Spawns the child on `self.port` (its output appended to the log) and waits until
    /// `/health` answers; false if it did not.
    fn spawn(&mut self) -> bool {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_relayer"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RELAYER_LISTEN", format!("127.0.0.1:{}", self.port))
            .env("RELAYER_LOG__FILTER", "warn")
            // NB: these tests drive thousands of orders from one address; rate limiting has
            // its own tests and is switched on per test through `env` where wanted.
            .env("RELAYER_RATE_LIMIT__ENABLED", "false")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("spawn relayer"));
        self.wait_healthy()
    }

    /// SIGKILLs the process (if it runs) and starts it again on the same port with the same
    /// environment, waiting until `/health` answers; panics with its log if it does not within
    /// a few attempts (the port may linger a moment after the kill).
    pub fn restart(&mut self) {
        self.kill();
        for _ in 0..5 {
            if self.spawn() {
                return;
            }
            self.kill();
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "relayer did not restart on port {}; its log:\n{}",
            self.port,
            self.log_text()
        );
    }

    fn wait_healthy(&mut self) -> bool {
        self.wait_answers_200("/health", Duration::from_secs(20))
    }

    /// Polls `GET path` until it answers 200 (true), the child exits or `within` passes (false).
    fn wait_answers_200(&mut self, path: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                return false;
            }
            if self.answers_200(path) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        false
    }

    /// Whether `GET path` answers 200 (one plain HTTP/1.1 request, 2 s to answer).
    fn answers_200(&self, path: &str) -> bool {
        use std::io::{Read, Write};
        let addr = self.base.trim_start_matches("http://");
        let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        let mut buf = String::new();
        stream.write_all(req.as_bytes()).is_ok()
            && stream.read_to_string(&mut buf).is_ok()
            && buf.starts_with("HTTP/1.1 200")
    }

    /// What the process logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The child's process id, while it runs (to signal it, e.g. `kill -STOP`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `signal` (a `kill` name such as `STOP` or `CONT`) to the child.
    pub fn signal(&self, signal: &str) {
        let pid = self.pid().expect("the relayer is running");
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {pid} failed");
    }

    /// Its exit status, once it has exited (`None` while it runs or after [`Self::kill`]).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("wait on the relayer"))
    }

    /// Waits (polling, at most `deadline`) until the process exits; its exit status and when it
    /// was seen gone. Panics with its log when it is still running then.
    pub async fn wait_exit(&mut self, deadline: Duration) -> (ExitStatus, Instant) {
        let until = Instant::now() + deadline;
        loop {
            if let Some(status) = self.try_wait() {
                return (status, Instant::now());
            }
            assert!(
                Instant::now() < until,
                "the relayer did not exit within {deadline:?}; its log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
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
        // NB: a failing test shows its captured stderr; the relayer's last lines say what it
        // saw (a store error behind a 503, say).
        if std::thread::panicking() {
            let log = self.log_text();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n");
            eprintln!(
                "--- last lines of the relayer on port {}:\n{tail}",
                self.port
            );
        }
    }
}

/// How many lines of its log a [`RelayerProcess`] prints when it drops in a failing test.
const LOG_TAIL: usize = 40;

/// The `relayer` binary started with a cleared environment plus `env`, listening on an
/// ephemeral loopback port that it names in its JSON log.
pub struct JsonLogRelayer {
    child: Child,
    /// `http://<addr>` as the relayer logged it.
    pub base: String,
}

impl JsonLogRelayer {
    /// Starts the binary with `RELAYER_LISTEN=127.0.0.1:0` and JSON logs, and reads the bound
    /// address from its `relayer listening` log line.
    pub fn start(env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_relayer"))
            .env_clear()
            .env("RELAYER_LISTEN", "127.0.0.1:0")
            .env("RELAYER_LOG__FORMAT", "json")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the relayer binary");
        let stdout = child.stdout.take().expect("stdout is piped");
        // NB: owned from here on, so that a panic below still kills the child.
        let mut relayer = Self {
            child,
            base: String::new(),
        };
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("the relayer logs its address before exiting")
                .expect("read a log line");
            let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if event["fields"]["message"] == "relayer listening" {
                break event["fields"]["addr"]
                    .as_str()
                    .expect("addr field")
                    .to_owned();
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        relayer.base = format!("http://{addr}");
        relayer
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("wait on the relayer")
    }
}

impl Drop for JsonLogRelayer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
