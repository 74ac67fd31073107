//! [`RedisStore`]: a real `redis-server` with `--requirepass`, owned by one test, that the
//! pods of the network-namespace backend share: it listens on 127.0.0.1 and on the host's
//! source address towards the pods ([`super::netns::host_address`], the only address a pod
//! routes back to), never on 0.0.0.0. Killed when dropped, also while a failing test unwinds.
//!
//! `redis-server` comes from the system packages (`apt-get install redis-server`). Uses std,
//! `hex` and [`crate::support::ControlPlane`] (its work directory) only.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::ControlPlane;

/// A random secret value: 32 hex digits from the kernel's random source.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    hex::encode(bytes)
}

/// A `redis-server` with a password, on `address` and 127.0.0.1.
pub struct RedisStore {
    child: Child,
    /// Where the pods reach it.
    pub addr: SocketAddr,
    /// Its `requirepass`.
    pub password: String,
    dir: PathBuf,
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl RedisStore {
    /// Starts a server on a free port of `address` (and the same port on 127.0.0.1) with a
    /// fresh random password; `name` names its directory under the control plane's work
    /// directory.
    pub fn start(address: Ipv4Addr, name: &str) -> Self {
        let password = random_secret();
        let dir = ControlPlane::shared()
            .work_dir()
            .join(format!("redis-{name}"));
        std::fs::create_dir_all(&dir).expect("redis directory");
        for _ in 0..5 {
            // NB: a port free on both addresses, released for the server to take.
            let port = TcpListener::bind((address, 0))
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("a free port on the host address");
            if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_err() {
                continue;
            }
            let child = Command::new("redis-server")
                .args(["--bind", &format!("{address} 127.0.0.1")])
                .args(["--port", &port.to_string()])
                .args(["--requirepass", &password])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .arg("--dir")
                .arg(&dir)
                .arg("--logfile")
                .arg(dir.join("redis.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-server (apt-get install redis-server)");
            let mut store = Self {
                child,
                addr: SocketAddr::new(address.into(), port),
                password: password.clone(),
                dir: dir.clone(),
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = store.child.try_wait() {
                    break; // lost the port to someone else: try another
                }
                if store
                    .command(&["PING"])
                    .is_ok_and(|a| a.starts_with("+PONG"))
                {
                    return store;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!(
            "redis-server did not start on {address} (see {})",
            dir.join("redis.log").display()
        );
    }

    /// `redis://<addr>/0`, without credentials (the password travels separately).
    pub fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }

    /// One command on a fresh connection to 127.0.0.1 after `AUTH`: the raw answer (RESP).
    pub fn command(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, self.addr.port()))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut out = resp(&["AUTH", &self.password]);
        out.extend(resp(args));
        s.write_all(&out)?;
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        // The AUTH answer, then the command's (first line is enough for what tests ask).
        while answer.iter().filter(|b| **b == b'\n').count() < 2 {
            let n = s.read(&mut buf)?;
            anyhow::ensure!(n > 0, "redis closed the connection");
            answer.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&answer).into_owned();
        let (auth, rest) = text
            .split_once("\r\n")
            .ok_or_else(|| anyhow::anyhow!("no AUTH answer in {text:?}"))?;
        anyhow::ensure!(auth == "+OK", "AUTH refused: {auth}");
        Ok(rest.to_owned())
    }

    /// Whether a connection without the password is refused (`NOAUTH`).
    pub fn refuses_without_password(&self) -> bool {
        let Ok(mut s) = TcpStream::connect((Ipv4Addr::LOCALHOST, self.addr.port())) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(&resp(&["GET", "x"])).is_err() {
            return false;
        }
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).contains("NOAUTH")
    }

    /// Its log file.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }
}

fn resp(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend(format!("${}\r\n{a}\r\n", a.len()).into_bytes());
    }
    out
}
