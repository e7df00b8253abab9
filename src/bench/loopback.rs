//! The baseline of `bench rounds`: the time to move a round's bytes over
//! sockets on 127.0.0.1 with nothing else to do. A few connections at once
//! (one per core: more only add kernel buffer memory and make it slower);
//! each first receives its share of the download bytes and then sends its
//! share of the upload bytes, over plain TCP or over mutual TLS with the
//! same kind of certificates and the same rustls provider as the federation.
//! Connections (and TLS handshakes) are set up before the clock starts, as
//! a federation's are before a round.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use fedshield_proto::tls::pki::CertificateAuthority;
use fedshield_proto::tls::rustls::pki_types::ServerName;
use fedshield_proto::tls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use fedshield_proto::tls::tokio_rustls::{TlsAcceptor, TlsConnector};
use fedshield_proto::tls::{
    crypto_provider, load_certificates_pem, load_private_key_pem, server_config_pem,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Barrier;

/// Size of each socket read and write.
const IO_BUFFER_BYTES: usize = 256 * 1024;

/// The TLS configurations of both ends of the baseline.
pub struct LoopbackTls {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

impl LoopbackTls {
    /// Returns server and client configurations with certificates from a CA
    /// made for the run (the client presents one, as participants do).
    ///
    /// # Errors
    /// Certificate or configuration failures.
    pub fn generate() -> Result<Self> {
        let authority = CertificateAuthority::generate("fedshield loopback baseline CA")?;
        let server_certificate = authority.issue_server(
            &["localhost".to_string()],
            &[std::net::IpAddr::from([127, 0, 0, 1])],
            1,
        )?;
        let client_certificate = authority.issue_client("baseline", 1)?;
        let server = server_config_pem(
            &server_certificate.cert_pem,
            &server_certificate.key_pem,
            authority.cert_pem(),
        )?;
        let mut roots = RootCertStore::empty();
        for certificate in load_certificates_pem(authority.cert_pem())? {
            roots
                .add(certificate)
                .context("failed to trust the baseline CA")?;
        }
        let client = ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .context("failed to choose TLS versions")?
            .with_root_certificates(roots)
            .with_client_auth_cert(
                load_certificates_pem(&client_certificate.cert_pem)?,
                load_private_key_pem(&client_certificate.key_pem)?,
            )
            .context("failed to configure the baseline client certificate")?;
        Ok(LoopbackTls {
            server,
            client: Arc::new(client),
        })
    }
}

/// Returns the time for `num_connections` connections to each receive and
/// then send `bytes_each_way` bytes, all at once, over 127.0.0.1.
///
/// # Errors
/// Socket or TLS failures.
pub async fn time_exchange(
    num_connections: usize,
    bytes_each_way: u64,
    tls: Option<&LoopbackTls>,
) -> Result<Duration> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("failed to bind 127.0.0.1:0")?;
    let address = listener.local_addr()?;
    let acceptor = tls.map(|tls| TlsAcceptor::from(tls.server.clone()));
    let server = tokio::spawn(async move {
        let mut connections = Vec::with_capacity(num_connections);
        for _ in 0..num_connections {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            let acceptor = acceptor.clone();
            connections.push(tokio::spawn(async move {
                match acceptor {
                    Some(acceptor) => serve(acceptor.accept(stream).await?, bytes_each_way).await,
                    None => serve(stream, bytes_each_way).await,
                }
            }));
        }
        for connection in connections {
            connection.await??;
        }
        anyhow::Ok(())
    });
    let connector = tls.map(|tls| TlsConnector::from(tls.client.clone()));
    let ready = Arc::new(Barrier::new(num_connections + 1));
    let mut clients = Vec::with_capacity(num_connections);
    for _ in 0..num_connections {
        let connector = connector.clone();
        let ready = ready.clone();
        clients.push(tokio::spawn(async move {
            let stream = TcpStream::connect(address).await?;
            stream.set_nodelay(true)?;
            match connector {
                Some(connector) => {
                    let mut stream = connector
                        .connect(ServerName::try_from("localhost")?, stream)
                        .await?;
                    // Finish the handshake before the clock starts.
                    stream.flush().await?;
                    ready.wait().await;
                    timed_exchange(stream, bytes_each_way).await
                }
                None => {
                    ready.wait().await;
                    timed_exchange(stream, bytes_each_way).await
                }
            }
        }));
    }
    ready.wait().await;
    // Each client notes when it started and finished: this task may be
    // scheduled long after the barrier let the clients go (on a busy
    // machine, after they finished), so its own clock would start late.
    let mut first_started: Option<Instant> = None;
    let mut last_finished: Option<Instant> = None;
    for client in clients {
        let (started, finished) = client.await??;
        first_started = Some(first_started.map_or(started, |first| first.min(started)));
        last_finished = Some(last_finished.map_or(finished, |last| last.max(finished)));
    }
    server.await??;
    Ok(match (first_started, last_finished) {
        (Some(started), Some(finished)) => finished.duration_since(started),
        _ => Duration::ZERO,
    })
}

/// [`exchange`], returning when it started and when it finished.
async fn timed_exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    bytes_each_way: u64,
) -> Result<(Instant, Instant)> {
    let started = Instant::now();
    exchange(stream, bytes_each_way).await?;
    Ok((started, Instant::now()))
}

/// The server's side: wait for the go byte, send, receive, acknowledge.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    bytes_each_way: u64,
) -> Result<()> {
    let mut go = [0u8; 1];
    stream.read_exact(&mut go).await?;
    send(&mut stream, bytes_each_way).await?;
    receive(&mut stream, bytes_each_way).await?;
    stream.write_all(&[1]).await?;
    stream.flush().await?;
    Ok(())
}

/// The client's side: say go, receive, send, wait for the acknowledgement.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    bytes_each_way: u64,
) -> Result<()> {
    stream.write_all(&[0]).await?;
    stream.flush().await?;
    receive(&mut stream, bytes_each_way).await?;
    send(&mut stream, bytes_each_way).await?;
    let mut acknowledgement = [0u8; 1];
    stream.read_exact(&mut acknowledgement).await?;
    Ok(())
}

async fn send<S: AsyncWrite + Unpin>(stream: &mut S, num_bytes: u64) -> Result<()> {
    let buffer = vec![7u8; IO_BUFFER_BYTES];
    let mut remaining = num_bytes;
    while remaining > 0 {
        let length = remaining.min(IO_BUFFER_BYTES as u64) as usize;
        stream.write_all(&buffer[..length]).await?;
        remaining -= length as u64;
    }
    stream.flush().await?;
    Ok(())
}

async fn receive<S: AsyncRead + Unpin>(stream: &mut S, num_bytes: u64) -> Result<()> {
    let mut buffer = vec![0u8; IO_BUFFER_BYTES];
    let mut remaining = num_bytes;
    while remaining > 0 {
        let length = remaining.min(IO_BUFFER_BYTES as u64) as usize;
        let read = stream.read(&mut buffer[..length]).await?;
        if read == 0 {
            anyhow::bail!("connection closed with {remaining} bytes still to come");
        }
        remaining -= read as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_cross_plain_and_tls_connections() {
        let tls = LoopbackTls::generate().unwrap();
        time_exchange(3, 300_000, None).await.unwrap();
        time_exchange(3, 300_000, Some(&tls)).await.unwrap();
    }
}
