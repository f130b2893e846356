#![allow(dead_code)]
//! TLS test servers of the test's own: a certificate authority made on the spot, a
//! PostgreSQL cluster with `ssl = on` (initdb + pg_ctl into a temporary directory on a free
//! port), and a TLS terminator in front of RabbitMQ that the test can cut and restore.
//!
//! ```ignore
//! let ca = TestCa::new("test CA");
//! let pg = PgCluster::start(Some(&ca.issue(&["localhost"]))).await;
//! let url = pg.url("sslmode=verify-full&sslrootcert=...");
//! ```

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A certificate and its key, both PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A self-signed CA that issues server certificates.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("self-signed CA");
        Self { cert, key }
    }

    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// Writes the CA certificate to `dir/name` and returns the path.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, self.cert_pem()).expect("write CA certificate");
        path
    }

    /// A server certificate for `names` (DNS names or IP addresses), signed by this CA.
    pub fn issue(&self, names: &[&str]) -> Issued {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, &names[0]);
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("signed leaf");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .expect("address")
        .port()
}

fn pg_bin(program: &str) -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL server binaries not found under {} ({e}); install the postgresql package",
                root.display()
            )
        })
        .flatten()
        .map(|e| e.path())
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|v| v.join("bin").join(program))
        .expect("a PostgreSQL version directory")
}

/// Runs a PostgreSQL tool as the `postgres` user when this process is root (initdb and the
/// server refuse to run as root), as ourselves otherwise.
fn as_postgres(program: &str) -> Command {
    let path = pg_bin(program);
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(path);
        command
    } else {
        Command::new(path)
    }
}

/// Whether this process runs as root (the effective uid in /proc/self/status).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let uids = status.lines().find(|l| l.starts_with("Uid:"))?.to_owned();
            uids.split_whitespace().nth(2).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

fn give_to_postgres(path: &Path) {
    if is_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(path)
            .status()
            .expect("run chown");
        assert!(status.success(), "chown {} to postgres", path.display());
    }
}

/// A PostgreSQL cluster of the test's own on 127.0.0.1, trust authentication, stopped on
/// drop.
pub struct PgCluster {
    dir: tempfile::TempDir,
    pub port: u16,
}

impl PgCluster {
    /// `tls`: the server's certificate and key (`ssl = on`), or `None` for a server
    /// without TLS.
    pub fn start(tls: Option<&Issued>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        give_to_postgres(dir.path());
        let data = dir.path().join("data");
        let out = as_postgres("initdb")
            .args(["--auth=trust", "--username=postgres", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let mut conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\nfsync = off\n",
            dir.path().display()
        );
        if let Some(tls) = tls {
            std::fs::write(data.join("server.crt"), &tls.cert_pem).expect("server.crt");
            std::fs::write(data.join("server.key"), &tls.key_pem).expect("server.key");
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                data.join("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .expect("chmod server.key");
            conf.push_str("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        }
        let auto = data.join("postgresql.auto.conf");
        std::fs::write(&auto, conf).expect("write postgresql.auto.conf");
        give_to_postgres(dir.path());
        let out = as_postgres("pg_ctl")
            .args(["-w", "-t", "30", "-l"])
            .arg(dir.path().join("server.log"))
            .arg("-D")
            .arg(&data)
            .arg("start")
            .output()
            .expect("run pg_ctl start");
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default()
        );
        Self { dir, port }
    }

    /// `postgres://postgres@localhost:PORT/postgres?{query}`.
    pub fn url(&self, query: &str) -> String {
        format!(
            "postgres://postgres@localhost:{}/postgres?{query}",
            self.port
        )
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = as_postgres("pg_ctl")
            .args(["-m", "immediate", "-D"])
            .arg(self.dir.path().join("data"))
            .arg("stop")
            .output();
    }
}

/// Terminates TLS on 127.0.0.1 (a free port) and forwards the plain bytes to `upstream`,
/// as a TLS-enabled RabbitMQ listener would. `cut` closes every connection and refuses
/// new ones until `restore`.
pub struct TlsTerminator {
    pub addr: SocketAddr,
    is_cut: Arc<AtomicBool>,
    cuts: watch::Sender<u64>,
    task: JoinHandle<()>,
}

impl TlsTerminator {
    pub async fn start(upstream: SocketAddr, server: &Issued) -> Self {
        let certs = CertificateDer::pem_slice_iter(server.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("server certificate PEM");
        let key = PrivateKeyDer::from_pem_slice(server.key_pem.as_bytes()).expect("key PEM");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server TLS config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let is_cut = Arc::new(AtomicBool::new(false));
        let cuts = watch::channel(0u64).0;
        let task = tokio::spawn({
            let is_cut = is_cut.clone();
            let cuts = cuts.clone();
            async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        continue;
                    };
                    if is_cut.load(Ordering::SeqCst) {
                        continue;
                    }
                    let acceptor = acceptor.clone();
                    let mut cut = cuts.subscribe();
                    tokio::spawn(async move {
                        let Ok(Ok(mut tls)) =
                            tokio::time::timeout(Duration::from_secs(5), acceptor.accept(client))
                                .await
                        else {
                            return;
                        };
                        let Ok(mut plain) = TcpStream::connect(upstream).await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut tls, &mut plain) => {}
                            _ = cut.changed() => {}
                        }
                    });
                }
            }
        });
        Self {
            addr,
            is_cut,
            cuts,
            task,
        }
    }

    pub fn cut(&self) {
        self.is_cut.store(true, Ordering::SeqCst);
        self.cuts.send_modify(|n| *n += 1);
    }

    pub fn restore(&self) {
        self.is_cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for TlsTerminator {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}
