//! The gRPC listener's transport: plaintext, or TLS (rustls) with certificates re-read when
//! they change, and optional client certificates (mTLS).
//!
//! tonic's own TLS acceptor takes one fixed certificate, so the server accepts connections
//! itself and hands tonic finished [`Conn`]s (`serve_with_incoming`). Each accepted socket is
//! handshaken on its own task with whatever [`rustls::ServerConfig`] is current, so a rotated
//! certificate or CA applies to the next handshake while established connections and their
//! streams go on untouched. A handshake has `tls.handshake_timeout`, and at most
//! [`MAX_HANDSHAKES`] run at once, so slow or half-open sockets cannot pile up.
//!
//! Two choices make failures speak gRPC instead of dropping the connection:
//! - a client certificate's chain is checked after the handshake, once per connection, not
//!   inside it. The handshake still proves the client holds the certificate's key; an
//!   untrusted chain then makes every call on the connection UNAUTHENTICATED (with the reason
//!   in the server's log) where a handshake failure would be an opaque UNAVAILABLE;
//! - a connection whose first byte is not a TLS record is served as plaintext HTTP/2 and marked
//!   [`Transport::PlaintextOnTlsPort`]: health checks answer (the kubelet's gRPC probe speaks
//!   only plaintext) and every other call is UNAUTHENTICATED "TLS required".
//!
//! The connection's [`ConnInfo`] (transport, client identity) reaches every request's
//! extensions through tonic's [`Connected`], where the auth layer reads it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio_rustls::rustls::server::{ServerConfig, WebPkiClientVerifier};
use tokio_rustls::rustls::{self, DistinguishedName, RootCertStore};
use tokio_util::either::Either;
use tonic::transport::server::Connected;

use crate::reload::WatchedFiles;

/// Most TLS handshakes in progress at once; connections beyond are closed at once.
pub const MAX_HANDSHAKES: usize = 1024;

/// Which part of a client certificate names its identity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertIdentity {
    /// The first `spiffe://` URI SAN (SPIFFE/SPIRE, Istio workload certificates).
    #[default]
    Spiffe,
    /// The first DNS SAN.
    Dns,
    /// The subject's common name.
    Cn,
}

/// TLS on the gRPC listener (the `[tls]` section; absent means plaintext).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the server's certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM file of the server's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM file of the CAs whose client certificates are trusted (mTLS); unset asks for none.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// Refuse the handshake of a client that presents no certificate (with `client_ca_file`).
    /// Off, clients may authenticate with a token instead.
    #[serde(default)]
    pub require_client_cert: bool,
    /// Which part of a client certificate is the caller's identity.
    #[serde(default)]
    pub client_identity: CertIdentity,
    /// How often the files are checked for changes.
    #[serde(default = "default_reload_interval", with = "humantime_serde")]
    pub reload_interval: Duration,
    /// Longest a TLS handshake may take.
    #[serde(default = "default_handshake_timeout", with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Serve the admin listener (`/metrics`, `/healthz`) over TLS too, with the same
    /// certificate (scrape and probe it with `https`).
    #[serde(default)]
    pub admin: bool,
}

fn default_reload_interval() -> Duration {
    Duration::from_secs(10)
}

fn default_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}

/// What a connection's client certificate says about the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCert {
    /// No certificate was presented.
    None,
    /// A certificate chaining to the client CA, naming this identity.
    Verified(Arc<str>),
    /// A certificate that does not chain to the client CA or names no identity (the reason,
    /// for the log).
    Refused(Arc<str>),
}

/// How a connection reached the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// Plaintext on a plaintext listener.
    Plaintext,
    /// Plaintext HTTP/2 sent to the TLS listener: only health checks are answered.
    PlaintextOnTlsPort,
    /// TLS, with what the client certificate said.
    Tls(ClientCert),
}

/// What the auth layer knows of a call's connection (in every request's extensions).
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The peer's address.
    pub remote: Option<SocketAddr>,
    /// How it is connected.
    pub transport: Transport,
}

/// The socket: plaintext (left) or TLS (right).
type Io = Either<TcpStream, Box<tokio_rustls::server::TlsStream<TcpStream>>>;

/// An accepted connection, plaintext or TLS, with what is known of its peer.
pub struct Conn {
    io: Io,
    info: ConnInfo,
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The current TLS settings: swapped whole when a file changes.
struct Current {
    server: Arc<ServerConfig>,
    /// The real chain check of client certificates (see the module doc).
    client_chain: Option<Arc<dyn ClientCertVerifier>>,
}

/// The TLS side of the gRPC listener: the current config and the task that reloads it.
pub struct Tls {
    current: RwLock<Arc<Current>>,
    identity: CertIdentity,
    handshake_timeout: Duration,
}

/// The application protocols a listener speaks, for ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocols {
    /// gRPC: HTTP/2 only (gRPC clients insist on `h2`).
    Grpc,
    /// The admin HTTP server: HTTP/2 or HTTP/1.1 (Prometheus, the kubelet's probes, curl).
    Admin,
}

impl Tls {
    /// Loads the certificate, key and client CA (an error stops the server) and starts
    /// following their changes; abort the returned task when the server stops.
    pub fn start(config: &TlsConfig, protocols: Protocols) -> Result<(Arc<Self>, JoinHandle<()>), String> {
        let mut paths = vec![config.cert_file.clone(), config.key_file.clone()];
        // The admin listener asks for no client certificates.
        paths.extend(config.client_ca_file.clone().filter(|_| protocols == Protocols::Grpc));
        let require = config.require_client_cert;
        let parse = move |files: &[Vec<u8>]| {
            build(&files[0], &files[1], files.get(2).map(Vec::as_slice), require, protocols)
        };
        let files = WatchedFiles::new("tls", paths);
        let (first, read) = files.load(&parse)?;
        let tls = Arc::new(Self {
            current: RwLock::new(Arc::new(first)),
            identity: config.client_identity,
            handshake_timeout: config.handshake_timeout,
        });
        let target = tls.clone();
        let task = files.follow(read, config.reload_interval, parse, move |next| {
            *target.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        });
        Ok((tls, task))
    }

    fn current(&self) -> Arc<Current> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Handshakes one accepted socket (see the module doc for plaintext).
    async fn accept(&self, tcp: TcpStream, remote: Option<SocketAddr>) -> std::io::Result<Conn> {
        let mut first = [0u8; 1];
        if tcp.peek(&mut first).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        // 0x16: a TLS handshake record. HTTP/2's preface starts with "PRI".
        if first[0] != 0x16 {
            metrics::counter!("rookery_tls_handshakes_total", "result" => "plaintext").increment(1);
            return Ok(Conn {
                io: Either::Left(tcp),
                info: ConnInfo { remote, transport: Transport::PlaintextOnTlsPort },
            });
        }
        let current = self.current();
        let stream = TlsAcceptor::from(current.server.clone()).accept(tcp).await?;
        let client = match (&current.client_chain, stream.get_ref().1.peer_certificates()) {
            (Some(chain), Some([leaf, intermediates @ ..])) => {
                match chain.verify_client_cert(leaf, intermediates, UnixTime::now()) {
                    Ok(_) => match identity_of(leaf, self.identity) {
                        Ok(identity) => ClientCert::Verified(identity.into()),
                        Err(reason) => ClientCert::Refused(reason.into()),
                    },
                    Err(e) => ClientCert::Refused(format!("client certificate not trusted: {e}").into()),
                }
            }
            _ => ClientCert::None,
        };
        metrics::counter!("rookery_tls_handshakes_total", "result" => "ok").increment(1);
        Ok(Conn {
            io: Either::Right(Box::new(stream)),
            info: ConnInfo { remote, transport: Transport::Tls(client) },
        })
    }
}

/// Builds the rustls config from PEM bytes: TLS 1.2 and 1.3, ALPN for `protocols`, client
/// certificates offered when a CA is given.
fn build(
    cert: &[u8],
    key: &[u8],
    client_ca: Option<&[u8]>,
    require_client_cert: bool,
    protocols: Protocols,
) -> Result<Current, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate file: {e}"))?;
    if chain.is_empty() {
        return Err("certificate file holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("key file: {e}"))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let (builder, client_chain) = match client_ca {
        None => (builder.with_no_client_auth(), None),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca) {
                roots
                    .add(cert.map_err(|e| format!("client CA file: {e}"))?)
                    .map_err(|e| format!("client CA file: {e}"))?;
            }
            if roots.is_empty() {
                return Err("client CA file holds no certificate".into());
            }
            let chain = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| format!("client CA file: {e}"))?;
            let verifier =
                Arc::new(ChainCheckedLater { chain: chain.clone(), mandatory: require_client_cert });
            (builder.with_client_cert_verifier(verifier), Some(chain))
        }
    };
    let mut server = builder.with_single_cert(chain, key).map_err(|e| format!("certificate and key: {e}"))?;
    server.alpn_protocols = match protocols {
        Protocols::Grpc => vec![b"h2".to_vec()],
        Protocols::Admin => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
    };
    Ok(Current { server: Arc::new(server), client_chain })
}

/// The handshake's client-certificate verifier: checks the handshake signature (the client
/// holds the key) and leaves the chain to [`Tls::accept`], so an untrusted certificate is an
/// UNAUTHENTICATED call rather than a failed handshake.
#[derive(Debug)]
struct ChainCheckedLater {
    chain: Arc<dyn ClientCertVerifier>,
    mandatory: bool,
}

impl ClientCertVerifier for ChainCheckedLater {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.chain.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

/// The identity a verified client certificate names.
fn identity_of(leaf: &CertificateDer<'_>, from: CertIdentity) -> Result<String, String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) =
        X509Certificate::from_der(leaf).map_err(|e| format!("client certificate unreadable: {e}"))?;
    let sans = cert.subject_alternative_name().ok().flatten().map(|san| san.value.general_names.clone());
    let found = match from {
        CertIdentity::Spiffe => sans.into_iter().flatten().find_map(|name| match name {
            GeneralName::URI(uri) if uri.starts_with("spiffe://") => Some(uri.to_owned()),
            _ => None,
        }),
        CertIdentity::Dns => sans.into_iter().flatten().find_map(|name| match name {
            GeneralName::DNSName(dns) => Some(dns.to_owned()),
            _ => None,
        }),
        CertIdentity::Cn => {
            cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_owned)
        }
    };
    found.ok_or_else(|| format!("client certificate names no {from:?} identity"))
}

/// The stream of connections tonic serves: plaintext straight from the listener, or TLS
/// handshaken on a task each.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<Tls>>,
) -> Pin<Box<dyn Stream<Item = std::io::Result<Conn>> + Send>> {
    let (sender, receiver) = mpsc::channel(64);
    tokio::spawn(accept_loop(listener, tls, sender));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(receiver))
}

/// Accepts until tonic drops the stream (shutdown), which closes the listening socket.
async fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<Tls>>,
    sender: mpsc::Sender<std::io::Result<Conn>>,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let accepted = tokio::select! {
            () = sender.closed() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &tls else {
            let conn = Conn {
                io: Either::Left(tcp),
                info: ConnInfo { remote: Some(remote), transport: Transport::Plaintext },
            };
            if sender.send(Ok(conn)).await.is_err() {
                return;
            }
            continue;
        };
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            metrics::counter!("rookery_tls_handshakes_total", "result" => "refused").increment(1);
            continue;
        };
        let (tls, sender) = (tls.clone(), sender.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(tls.handshake_timeout, tls.accept(tcp, Some(remote))).await {
                Ok(Ok(conn)) => {
                    let _ = sender.send(Ok(conn)).await;
                }
                Ok(Err(e)) => {
                    metrics::counter!("rookery_tls_handshakes_total", "result" => "failed").increment(1);
                    tracing::debug!(%remote, error = %e, "TLS handshake failed");
                }
                Err(_) => {
                    metrics::counter!("rookery_tls_handshakes_total", "result" => "timeout").increment(1);
                    tracing::debug!(%remote, "TLS handshake timed out");
                }
            }
        });
    }
}

/// The admin listener over TLS, for `axum::serve`: the connections of [`incoming`], with
/// plaintext ones closed (an `http://` scrape of an `https` port gets no answer).
pub struct AdminListener {
    incoming: Pin<Box<dyn Stream<Item = std::io::Result<Conn>> + Send>>,
    addr: SocketAddr,
}

impl AdminListener {
    /// Serves `listener` with `tls`.
    pub fn new(listener: TcpListener, tls: Arc<Tls>) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        Ok(Self { incoming: incoming(listener, Some(tls)), addr })
    }
}

impl axum::serve::Listener for AdminListener {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        use futures::StreamExt;
        loop {
            match self.incoming.next().await {
                Some(Ok(conn)) if conn.info.transport != Transport::PlaintextOnTlsPort => {
                    let remote = conn.info.remote.unwrap_or(self.addr);
                    return (conn, remote);
                }
                Some(_) => continue,
                // The accept loop ended: nothing more will come.
                None => std::future::pending().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.addr)
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    use super::*;

    fn leaf(cn: &str, sans: Vec<SanType>) -> CertificateDer<'static> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = sans;
        params.distinguished_name.push(DnType::CommonName, cn);
        params.self_signed(&KeyPair::generate().unwrap()).unwrap().der().clone()
    }

    #[test]
    fn each_kind_of_identity_is_read_from_its_own_field() {
        let cert = leaf(
            "billing-worker",
            vec![
                SanType::DnsName("worker.billing.svc".try_into().unwrap()),
                SanType::URI("https://not-spiffe.example".try_into().unwrap()),
                SanType::URI("spiffe://prod.example/ns/billing/sa/worker".try_into().unwrap()),
            ],
        );
        assert_eq!(
            identity_of(&cert, CertIdentity::Spiffe).unwrap(),
            "spiffe://prod.example/ns/billing/sa/worker"
        );
        assert_eq!(identity_of(&cert, CertIdentity::Dns).unwrap(), "worker.billing.svc");
        assert_eq!(identity_of(&cert, CertIdentity::Cn).unwrap(), "billing-worker");
        let bare = leaf("only-a-cn", vec![]);
        assert!(identity_of(&bare, CertIdentity::Spiffe).is_err());
        assert!(identity_of(&bare, CertIdentity::Dns).is_err());
    }

    #[test]
    fn a_bad_key_or_certificate_file_is_refused_with_its_name() {
        let pair = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".into()]).unwrap().self_signed(&pair).unwrap();
        let (cert, key) = (cert.pem(), pair.serialize_pem());
        assert!(build(cert.as_bytes(), key.as_bytes(), None, false, Protocols::Grpc).is_ok());
        let error = build(b"", key.as_bytes(), None, false, Protocols::Grpc).err().unwrap();
        assert!(error.contains("certificate file"), "{error}");
        let error = build(cert.as_bytes(), b"nonsense", None, false, Protocols::Grpc).err().unwrap();
        assert!(error.contains("key file"), "{error}");
        let error = build(cert.as_bytes(), key.as_bytes(), Some(b""), false, Protocols::Grpc).err().unwrap();
        assert!(error.contains("client CA"), "{error}");
    }
}
