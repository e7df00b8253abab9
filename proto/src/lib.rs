//! The gRPC protocol of fedshield, package `fedshield.v1`.
//!
//! - `v1`: messages, the `Federation` client and server, generated from
//!   `fedshield/v1/federation.proto` at build time (no `protoc` needed).
//! - [`convert`]: every conversion between wire messages and domain types.
//! - [`download`]: downloading a model version (participants, detectors).
//! - [`tls`]: TLS and mutual TLS (rustls, *ring*): PEM loading, server and
//!   client configurations, the TLS accept loop, peer identity, and a small CA.
//! - [`https_connection`]: serving one HTTPS connection with request-header
//!   deadlines (the coordinator's download endpoint).
//! - [`metrics_http`]: the plain-HTTP `/metrics` listener of coordinators and
//!   participants, for a Prometheus scraper on a private network.
//!
//! Chunk messages carry model parameters and private updates, so their `Debug`
//! output shows only sizes.

pub mod convert;
pub mod download;
pub mod https_connection;
pub mod metrics_http;
pub mod tls;

/// Largest HTTP/2 frame a participant and a coordinator accept (the
/// `SETTINGS_MAX_FRAME_SIZE` they advertise), so that each 64 KiB chunk of a
/// model download or an update travels as one DATA frame instead of four of
/// the default 16 KiB. Measured with `fedshield bench rounds --tls` on 2
/// cores, rounds of 32 participants × 10M parameters took ~11% less time
/// with it on downloads (docs/BENCHMARKS.md).
pub const HTTP2_MAX_FRAME_BYTES: u32 = 64 * 1024;

/// Generated code for package `fedshield.v1`.
pub mod v1 {
    #![allow(clippy::doc_lazy_continuation, clippy::large_enum_variant)]
    tonic::include_proto!("fedshield.v1");

    use std::fmt;

    impl fmt::Debug for UpdateChunk {
        fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            match &self.payload {
                Some(update_chunk::Payload::Header(header)) => {
                    formatter.debug_tuple("UpdateChunk").field(header).finish()
                }
                Some(update_chunk::Payload::Data(data)) => {
                    write!(formatter, "UpdateChunk(data: {} bytes)", data.len())
                }
                None => write!(formatter, "UpdateChunk(empty)"),
            }
        }
    }

    impl fmt::Debug for update_chunk::Payload {
        fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                update_chunk::Payload::Header(header) => header.fmt(formatter),
                update_chunk::Payload::Data(data) => {
                    write!(formatter, "data: {} bytes", data.len())
                }
            }
        }
    }

    impl fmt::Debug for ModelChunk {
        fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            match &self.payload {
                Some(model_chunk::Payload::Header(header)) => {
                    formatter.debug_tuple("ModelChunk").field(header).finish()
                }
                Some(model_chunk::Payload::Data(data)) => {
                    write!(formatter, "ModelChunk(data: {} bytes)", data.len())
                }
                None => write!(formatter, "ModelChunk(empty)"),
            }
        }
    }

    impl fmt::Debug for model_chunk::Payload {
        fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                model_chunk::Payload::Header(header) => header.fmt(formatter),
                model_chunk::Payload::Data(data) => write!(formatter, "data: {} bytes", data.len()),
            }
        }
    }
    impl fmt::Debug for MaskedUpdateChunk {
        fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            match &self.payload {
                Some(masked_update_chunk::Payload::Header(header)) => formatter
                    .debug_tuple("MaskedUpdateChunk")
                    .field(header)
                    .finish(),
                Some(masked_update_chunk::Payload::Data(data)) => {
                    write!(formatter, "MaskedUpdateChunk(data: {} bytes)", data.len())
                }
                None => write!(formatter, "MaskedUpdateChunk(empty)"),
            }
        }
    }

    impl fmt::Debug for masked_update_chunk::Payload {
        fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                masked_update_chunk::Payload::Header(header) => header.fmt(formatter),
                masked_update_chunk::Payload::Data(data) => {
                    write!(formatter, "data: {} bytes", data.len())
                }
            }
        }
    }

    /// A revealed share is part of a secret: its bytes are never printed.
    impl fmt::Debug for RevealedShare {
        fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter
                .debug_struct("RevealedShare")
                .field("owner", &self.owner)
                .field("kind", &self.kind)
                .field("x", &self.x)
                .finish_non_exhaustive()
        }
    }
}
