//! Redis over TLS for tests: [`TestCa`] (a throw-away CA, generated with `rcgen`, that issues
//! server certificates for `127.0.0.1` and `localhost`) and [`TlsRedisServer`] (a private
//! `redis-server` on a free loopback port that speaks only TLS with such a certificate and
//! requires a password).
//!
//! The server is killed when its handle drops, also while a failing test unwinds. Uses `rcgen`,
//! `tempfile`, [`super::redis::free_port`] and the system's `redis-server` and `redis-cli`
//! (Debian's are built with TLS).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

use super::redis::free_port;

/// A CA of one test: its certificate as a PEM file, and the key to issue with.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// The CA certificate (PEM).
    pub cert_file: PathBuf,
    dir: PathBuf,
}

impl TestCa {
    /// A new CA named `name`, its files in `dir`.
    pub fn generate(dir: &Path, name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("self-signed CA");
        let cert_file = dir.join(format!("{name}.crt"));
        std::fs::write(&cert_file, issuer.pem()).expect("write the CA certificate");
        Self {
            issuer,
            cert_file,
            dir: dir.to_owned(),
        }
    }

    /// A server certificate for `127.0.0.1` and `localhost`: its certificate and key files.
    pub fn issue_server(&self, stem: &str) -> (PathBuf, PathBuf) {
        self.issue(stem, vec![ExtendedKeyUsagePurpose::ServerAuth])
    }

    /// [`TestCa::issue_server`] that may also serve as a client certificate: Redis Cluster
    /// nodes verify each other's certificates on the cluster bus.
    pub fn issue_node(&self, stem: &str) -> (PathBuf, PathBuf) {
        self.issue(
            stem,
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )
    }

    fn issue(&self, stem: &str, usages: Vec<ExtendedKeyUsagePurpose>) -> (PathBuf, PathBuf) {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .expect("server params");
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "redis-test");
        params.distinguished_name = dn;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = usages;
        let key = KeyPair::generate().expect("server key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("sign the server certificate");
        let cert_file = self.dir.join(format!("{stem}.crt"));
        let key_file = self.dir.join(format!("{stem}.key"));
        std::fs::write(&cert_file, cert.pem()).expect("write the server certificate");
        std::fs::write(&key_file, key.serialize_pem()).expect("write the server key");
        (cert_file, key_file)
    }
}

/// A `redis-server` owned by one test that accepts only TLS (no plain port) and requires
/// `password`; no persistence.
pub struct TlsRedisServer {
    child: Option<Child>,
    port: u16,
    password: String,
    /// The CA that signed the server's certificate.
    pub ca: TestCa,
    dir: tempfile::TempDir,
}

impl TlsRedisServer {
    /// Starts a server with a certificate from a new CA, requiring `password`.
    pub fn start(password: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir for redis");
        let ca = TestCa::generate(dir.path(), "redis-test-ca");
        let (cert, key) = ca.issue_server("redis-server");
        let mut server = Self {
            child: None,
            port: 0,
            password: password.to_owned(),
            ca,
            dir,
        };
        for _ in 0..5 {
            server.port = free_port();
            if server.spawn(&cert, &key) {
                return server;
            }
            // NB: another process took the port between our probe and redis binding it.
            server.kill();
        }
        let log = std::fs::read_to_string(server.dir.path().join("redis.log")).unwrap_or_default();
        panic!("redis-server with TLS did not start; its log:\n{log}");
    }

    fn spawn(&mut self, cert: &Path, key: &Path) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &self.port.to_string()])
            .arg("--tls-cert-file")
            .arg(cert)
            .arg("--tls-key-file")
            .arg(key)
            .arg("--tls-ca-cert-file")
            .arg(&self.ca.cert_file)
            .args(["--tls-auth-clients", "no"])
            .args(["--requirepass", &self.password])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no"])
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
        let (port, ca, password) = (self.port, self.ca.cert_file.clone(), self.password.clone());
        super::redis::await_start(&mut self.child, move || {
            let mut cli = Command::new("redis-cli");
            cli.args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "--tls",
                "--cacert",
            ])
            .arg(&ca)
            .env("REDISCLI_AUTH", &password)
            .arg("PING");
            super::redis::run_cli(&mut cli).is_some_and(|out| out.trim() == "PONG")
        })
    }

    /// Runs `redis-cli` over TLS (trusting the server's CA, with the password) against this
    /// server; its stdout, or None if it failed.
    pub fn cli(&self, args: &[&str]) -> Option<String> {
        let mut cli = Command::new("redis-cli");
        cli.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "--tls"])
            .arg("--cacert")
            .arg(&self.ca.cert_file)
            .env("REDISCLI_AUTH", &self.password);
        super::redis::run_cli(cli.args(args))
    }

    /// `rediss://127.0.0.1:<port>/` (no password).
    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}/", self.port)
    }

    /// The TLS port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A directory for the test's other files (removed with the server).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TlsRedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
