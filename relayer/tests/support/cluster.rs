//! A private Redis Cluster of six `redis-server` processes (3 masters, 3 replicas) on
//! loopback, owned by one test: started, joined with `redis-cli --cluster create`, and killed
//! when the handle drops (also while a failing test unwinds).
//!
//! A cluster node also listens on its port + 10000 (the cluster bus), so each node's port is
//! chosen with that bus port free and below 65536. `cluster-node-timeout` is short (1 s) so a
//! killed master's replica takes over within a few seconds. [`RedisCluster::start_secured`]
//! starts one that speaks only TLS and requires a password. Uses std, `tempfile`, the sibling
//! `redis` module's `run_cli` and `tls_redis`'s `TestCa`.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::redis::{await_start, run_cli};
use super::tls_redis::TestCa;

/// Milliseconds a node may be unreachable before it is failed over.
pub const NODE_TIMEOUT_MS: u64 = 1_000;

/// One node: its process (absent while killed), port and data directory, and the options
/// of its cluster.
struct Node {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    access: Access,
}

/// TLS and AUTH of a cluster: extra `redis-server` and `redis-cli` arguments.
#[derive(Clone, Default)]
struct Access {
    server: Vec<String>,
    cli: Vec<String>,
    /// Given to `redis-cli` as `REDISCLI_AUTH` (not on its command line).
    password: Option<String>,
    tls: bool,
}

/// A cluster of six nodes on loopback.
pub struct RedisCluster {
    nodes: Vec<Node>,
    access: Access,
}

/// A role in `CLUSTER NODES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node's id.
    pub id: String,
    /// Its port.
    pub port: u16,
    /// Whether it is a master (else a replica).
    pub master: bool,
    /// Whether the cluster sees it as failed.
    pub failed: bool,
    /// The master it replicates, for a replica.
    pub master_id: Option<String>,
    /// The slot ranges it serves, for a master.
    pub slots: Vec<(u16, u16)>,
}

/// A port `p` whose cluster bus port `p + 10000` is free too; both below 65536.
fn free_cluster_port(taken: &[u16]) -> u16 {
    // NB: the kernel's ephemeral range starts at 32768, so ports are drawn below it, where a
    // random start keeps concurrent tests apart; each candidate is bound to see that it is free.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let seed = u64::from(std::process::id()) ^ u64::from(nanos);
    let mut candidate = 15_000 + (seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) as u16 % 15_000;
    for _ in 0..15_000 {
        candidate = if candidate >= 29_999 {
            15_000
        } else {
            candidate + 1
        };
        // NB: neither its port nor its bus port may be another node's port or bus port.
        let clash = |p: u16| taken.iter().any(|&t| p == t || p == t + 10_000);
        if clash(candidate) || clash(candidate + 10_000) {
            continue;
        }
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(candidate) && free(candidate + 10_000) {
            return candidate;
        }
    }
    panic!("no free port pair (p, p + 10000) below 40000");
}

impl Node {
    fn spawn(&mut self) -> bool {
        let port = self.port.to_string();
        let mut server = Command::new("redis-server");
        if self.access.tls {
            server.args(["--port", "0", "--tls-port", &port]);
        } else {
            server.args(["--port", &port]);
        }
        let child = server
            .args(&self.access.server)
            .args(["--bind", "127.0.0.1", "--cluster-enabled", "yes"])
            .args(["--cluster-config-file", "nodes.conf"])
            .arg("--cluster-node-timeout")
            .arg(NODE_TIMEOUT_MS.to_string())
            // NB: no persistence: a restarted node rejoins as a replica (nodes.conf survives)
            // and copies its master's data; the replicas are what keeps acknowledged writes.
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            // NB: a replica's first sync starts at once (the default waits 5 s for others).
            .args(["--repl-diskless-sync-delay", "0"])
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
        let (access, port) = (self.access.clone(), self.port);
        await_start(&mut self.child, move || {
            cli(&access, port, &["PING"]).is_some_and(|o| o.trim() == "PONG")
        })
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `redis-cli -p <port> args…` with the cluster's TLS and password: its stdout, or None.
fn cli(access: &Access, port: u16, args: &[&str]) -> Option<String> {
    // NB: bounded (coreutils' `timeout`): a node that hangs (SIGSTOP) must not hang the test.
    let mut c = Command::new("timeout");
    c.args(["10", "redis-cli"]);
    access.apply(&mut c);
    c.args(["-h", "127.0.0.1", "-p", &port.to_string()]);
    run_cli(c.args(args))
}

impl Access {
    /// The TLS arguments and the password of a `redis-cli` call.
    fn apply(&self, cli: &mut Command) {
        cli.args(&self.cli);
        if let Some(password) = &self.password {
            cli.env("REDISCLI_AUTH", password);
        }
    }
}

impl RedisCluster {
    /// Starts six nodes and joins them into 3 masters with one replica each; returns once
    /// every node reports `cluster_state:ok` and knows all six.
    pub fn start() -> Self {
        Self::start_with(Access::default())
    }

    /// [`RedisCluster::start`], every node speaking only TLS (client, bus and replication
    /// links: a certificate from `ca` for 127.0.0.1) and requiring `password` (replicas
    /// authenticate to their masters with it).
    pub fn start_secured(ca: &TestCa, password: &str) -> Self {
        let (cert, key) = ca.issue_node("cluster-node");
        let path = |p: &std::path::Path| p.display().to_string();
        let tls = [
            "--tls-cert-file".to_owned(),
            path(&cert),
            "--tls-key-file".to_owned(),
            path(&key),
            "--tls-ca-cert-file".to_owned(),
            path(&ca.cert_file),
        ];
        let mut server: Vec<String> = tls.to_vec();
        server.extend(
            [
                "--tls-auth-clients",
                "no",
                "--tls-cluster",
                "yes",
                "--tls-replication",
                "yes",
                "--requirepass",
                password,
                "--masterauth",
                password,
            ]
            .map(str::to_owned),
        );
        let cli = ["--tls", "--cacert", &path(&ca.cert_file)]
            .map(str::to_owned)
            .to_vec();
        Self::start_with(Access {
            server,
            cli,
            password: Some(password.to_owned()),
            tls: true,
        })
    }

    fn start_with(access: Access) -> Self {
        let mut nodes: Vec<Node> = Vec::new();
        let mut attempts = 0;
        while nodes.len() < 6 {
            attempts += 1;
            assert!(
                attempts <= 30,
                "redis-server did not start as a cluster node (is the redis-server package installed, with TLS?)"
            );
            let taken: Vec<u16> = nodes.iter().map(|n| n.port).collect();
            let mut node = Node {
                child: None,
                port: free_cluster_port(&taken),
                dir: tempfile::tempdir().expect("temp dir for a cluster node"),
                access: access.clone(),
            };
            if node.spawn() {
                nodes.push(node);
            }
        }
        let cluster = Self { nodes, access };
        let addrs: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        // NB: `--cluster create` waits without end for nodes that cannot meet (a bus link
        // that fails, say), so it runs under coreutils' `timeout`.
        let mut create = Command::new("timeout");
        create.args(["60", "redis-cli"]);
        cluster.access.apply(&mut create);
        let created = create
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            created.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&created.stdout),
            String::from_utf8_lossy(&created.stderr)
        );
        cluster.wait_healthy(Duration::from_secs(30));
        cluster
    }

    /// Waits until every running node reports `cluster_state:ok` and knows six nodes, and 3
    /// running masters each have their replica online.
    pub fn wait_healthy(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let ok = self.nodes.iter().filter(|n| n.child.is_some()).all(|n| {
                cli(&self.access, n.port, &["CLUSTER", "INFO"]).is_some_and(|info| {
                    info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:6")
                })
            });
            let masters = self.master_ports();
            // NB: a replica still in its first sync confirms no write (WAIT), so healthy
            // means every master has its replica online.
            let replicated = masters.iter().all(|&p| {
                cli(&self.access, p, &["INFO", "replication"]).is_some_and(|info| {
                    info.contains("connected_slaves:1") && info.contains("state=online")
                })
            });
            if ok && masters.len() == 3 && replicated {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not become healthy within {within:?}: {:?}",
                self.nodes_info()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `redis://127.0.0.1:<port>/` (`rediss://` with TLS) of the first running node: a seed.
    pub fn seed_url(&self) -> String {
        let port = self
            .nodes
            .iter()
            .find(|n| n.child.is_some())
            .map_or(0, |n| n.port);
        let scheme = if self.access.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{port}/")
    }

    /// `127.0.0.1:<port>` of every node but the first (extra seeds).
    pub fn other_nodes(&self) -> Vec<String> {
        self.nodes
            .iter()
            .skip(1)
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect()
    }

    /// The nodes as a running node's `CLUSTER NODES` lists them.
    pub fn nodes_info(&self) -> Vec<NodeInfo> {
        let Some(text) = self
            .nodes
            .iter()
            .filter(|n| n.child.is_some())
            .find_map(|n| cli(&self.access, n.port, &["CLUSTER", "NODES"]))
        else {
            return Vec::new();
        };
        text.lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                let (id, addr, flags, master) = (f.first()?, f.get(1)?, f.get(2)?, f.get(3)?);
                let port = addr.split('@').next()?.rsplit(':').next()?.parse().ok()?;
                Some(NodeInfo {
                    id: (*id).to_owned(),
                    port,
                    master: flags.contains("master"),
                    failed: flags.contains("fail") && !flags.contains("fail?"),
                    master_id: (*master != "-").then(|| (*master).to_owned()),
                    // NB: ranges such as `0-5460` or a single slot; `[…]` entries are slots
                    // being migrated, not served.
                    slots: f
                        .iter()
                        .skip(8)
                        .filter(|r| !r.starts_with('['))
                        .filter_map(|r| {
                            let (a, b) = r.split_once('-').unwrap_or((r, r));
                            Some((a.parse().ok()?, b.parse().ok()?))
                        })
                        .collect(),
                })
            })
            .collect()
    }

    /// The ports of the masters the cluster sees as up.
    pub fn master_ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .nodes_info()
            .into_iter()
            .filter(|n| n.master && !n.failed && self.is_running(n.port))
            .map(|n| n.port)
            .collect();
        ports.sort_unstable();
        ports
    }

    fn is_running(&self, port: u16) -> bool {
        self.nodes
            .iter()
            .any(|n| n.port == port && n.child.is_some())
    }

    /// `redis-cli` against the node on `port`.
    pub fn cli(&self, port: u16, args: &[&str]) -> Option<String> {
        cli(&self.access, port, args)
    }

    /// `redis-cli -c` (following MOVED) through a running node: for commands on one key.
    pub fn cli_any(&self, args: &[&str]) -> Option<String> {
        let port = self.nodes.iter().find(|n| n.child.is_some())?.port;
        let mut c = Command::new("timeout");
        c.args(["10", "redis-cli"]);
        self.access.apply(&mut c);
        c.args(["-c", "-h", "127.0.0.1", "-p", &port.to_string()]);
        run_cli(c.args(args))
    }

    /// `CONFIG RESETSTAT` on every running node.
    pub fn reset_stats(&self) {
        for n in self.nodes.iter().filter(|n| n.child.is_some()) {
            cli(&self.access, n.port, &["CONFIG", "RESETSTAT"]).expect("CONFIG RESETSTAT");
        }
    }

    /// The master serving `slot`.
    pub fn owner_of(&self, slot: u16) -> Option<NodeInfo> {
        self.nodes_info().into_iter().find(|n| {
            n.master && !n.failed && n.slots.iter().any(|&(a, b)| (a..=b).contains(&slot))
        })
    }

    /// The port of the replica of the master on `master_port`.
    pub fn replica_of(&self, master_port: u16) -> Option<u16> {
        let nodes = self.nodes_info();
        let master = nodes.iter().find(|n| n.port == master_port)?;
        nodes
            .iter()
            .find(|n| n.master_id.as_deref() == Some(master.id.as_str()))
            .map(|n| n.port)
    }

    /// SIGSTOP of the node on `port` (`signal` `STOP`) or SIGCONT (`CONT`): a node that hangs.
    pub fn signal(&self, port: u16, signal: &str) {
        if let Some(child) = self
            .nodes
            .iter()
            .find(|n| n.port == port)
            .and_then(|n| n.child.as_ref())
        {
            let status = Command::new("kill")
                .args([&format!("-{signal}"), &child.id().to_string()])
                .status()
                .expect("run kill");
            assert!(status.success(), "kill -{signal} failed");
        }
    }

    /// SIGKILL of the node on `port`.
    pub fn kill(&mut self, port: u16) {
        if let Some(n) = self.nodes.iter_mut().find(|n| n.port == port) {
            n.kill();
        }
    }

    /// Starts the killed node on `port` again (same port, same nodes.conf): it rejoins.
    pub fn restart(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node of this cluster");
        node.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !node.spawn() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not restart on port {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The number of keys on each master.
    pub fn keys_per_master(&self) -> BTreeMap<u16, u64> {
        self.master_ports()
            .into_iter()
            .map(|p| {
                let n = cli(&self.access, p, &["DBSIZE"])
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(0);
                (p, n)
            })
            .collect()
    }

    /// `INFO commandstats` summed over the masters: per command, (calls, microseconds).
    pub fn master_command_stats(&self) -> BTreeMap<String, (u64, u64)> {
        let mut total: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for p in self.master_ports() {
            for (name, (calls, usec)) in
                command_stats(&cli(&self.access, p, &["INFO", "commandstats"]).unwrap_or_default())
            {
                let e = total.entry(name).or_default();
                e.0 += calls;
                e.1 += usec;
            }
        }
        total
    }
}

/// Parses `INFO commandstats`: per command, (calls, usec).
pub fn command_stats(info: &str) -> BTreeMap<String, (u64, u64)> {
    info.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("cmdstat_")?;
            let (name, stats) = rest.split_once(':')?;
            let field = |k: &str| -> Option<u64> {
                stats
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(k))?
                    .parse()
                    .ok()
            };
            Some((name.to_owned(), (field("calls=")?, field("usec=")?)))
        })
        .collect()
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.kill();
        }
    }
}
