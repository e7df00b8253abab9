//! Community ID version 1: a flow hash that every sensor computes the same way,
//! so that a Zeek connection, a Suricata flow and a Suricata alert about the
//! same traffic can be joined without comparing timestamps.
//!
//! The value is `"1:"` followed by the base64 of a SHA-1 over, in order:
//! the seed (2 bytes, network order), the two addresses (4 or 16 bytes each),
//! the IP protocol number (1 byte), one zero padding byte and, for protocols
//! with ports, the two ports (2 bytes each, network order). The endpoints are
//! ordered so that both directions of a flow hash the same: the smaller
//! address first, and on equal addresses the smaller port first. ICMP and
//! ICMPv6 have no ports; their type and code stand in for them, and a message
//! type with a reply type (echo request and reply, for example) uses the
//! reply type as its second "port", so a request and its reply land in the
//! same flow. Other ICMP types are one-way: their endpoints are never swapped.
//!
//! Specification: <https://github.com/corelight/community-id-spec>.

use std::net::IpAddr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha1::{Digest, Sha1};

/// IP protocol numbers the hash treats specially.
const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_ICMPV6: u8 = 58;
const PROTO_SCTP: u8 = 132;

/// ICMP (IPv4) message types that have a counterpart, as (type, counterpart
/// type); each pair is listed in both directions.
const ICMP_COUNTERPARTS: [(u16, u16); 10] = [
    (8, 0),   // echo request → echo reply
    (0, 8),   // echo reply → echo request
    (13, 14), // timestamp → timestamp reply
    (14, 13),
    (15, 16), // information request → information reply
    (16, 15),
    (10, 9), // router solicitation → router advertisement
    (9, 10),
    (17, 18), // address mask request → address mask reply
    (18, 17),
];

/// ICMPv6 message types that have a counterpart, as (type, counterpart type).
const ICMPV6_COUNTERPARTS: [(u16, u16); 12] = [
    (128, 129), // echo request → echo reply
    (129, 128),
    (130, 131), // multicast listener query → report
    (131, 130),
    (133, 134), // router solicitation → router advertisement
    (134, 133),
    (135, 136), // neighbor solicitation → neighbor advertisement
    (136, 135),
    (139, 140), // who-are-you request → reply
    (140, 139),
    (144, 145), // home agent address discovery request → reply
    (145, 144),
];

/// One direction of a flow: the input of [`community_id_v1`].
///
/// For ICMP and ICMPv6, `src_port` holds the message type and `dst_port` the
/// message code, as sensors log them. For protocols other than TCP, UDP,
/// SCTP, ICMP and ICMPv6 the ports are not part of the hash and are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowTuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// The IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6, 132 SCTP, …).
    pub proto: u8,
    pub src_port: u16,
    pub dst_port: u16,
}

/// One endpoint of the flow: its address and its port (or ICMP "port").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Endpoint {
    address: IpAddr,
    port: u16,
}

/// Returns the Community ID v1 of a flow, `"1:<base64 of the sha1>"`, for the
/// given seed (0 unless the sensors were configured otherwise).
///
/// Both directions of a flow give the same value. A tuple mixing an IPv4 and
/// an IPv6 address cannot come from a packet; it is hashed IPv4 side first.
pub fn community_id_v1(flow: &FlowTuple, seed: u16) -> String {
    format!("1:{}", BASE64.encode(community_id_v1_digest(flow, seed)))
}

/// Returns the SHA-1 digest behind [`community_id_v1`], before base64.
pub fn community_id_v1_digest(flow: &FlowTuple, seed: u16) -> [u8; 20] {
    let (first, second) = ordered_endpoints(flow);
    let mut hasher = Sha1::new();
    hasher.update(seed.to_be_bytes());
    update_with_address(&mut hasher, first.address);
    update_with_address(&mut hasher, second.address);
    hasher.update([flow.proto, 0]);
    if has_ports(flow.proto) {
        hasher.update(first.port.to_be_bytes());
        hasher.update(second.port.to_be_bytes());
    }
    hasher.finalize().into()
}

/// Returns the two endpoints in hashing order: the smaller address first,
/// then the smaller port; one-way ICMP messages keep their direction.
fn ordered_endpoints(flow: &FlowTuple) -> (Endpoint, Endpoint) {
    let (src_port, dst_port, is_one_way) = match flow.proto {
        PROTO_ICMP => icmp_port_equivalents(&ICMP_COUNTERPARTS, flow.src_port, flow.dst_port),
        PROTO_ICMPV6 => icmp_port_equivalents(&ICMPV6_COUNTERPARTS, flow.src_port, flow.dst_port),
        _ => (flow.src_port, flow.dst_port, false),
    };
    let src = Endpoint {
        address: flow.src,
        port: src_port,
    };
    let dst = Endpoint {
        address: flow.dst,
        port: dst_port,
    };
    if is_one_way || is_ordered(&src, &dst, has_ports(flow.proto)) {
        (src, dst)
    } else {
        (dst, src)
    }
}

/// Returns whether `src` already comes first: a smaller address, or an equal
/// address and (when the protocol has ports) a smaller port.
fn is_ordered(src: &Endpoint, dst: &Endpoint, with_ports: bool) -> bool {
    address_bytes_lt(src.address, dst.address)
        || (src.address == dst.address && with_ports && src.port < dst.port)
}

/// Compares addresses as the bytes that are hashed (network order).
fn address_bytes_lt(left: IpAddr, right: IpAddr) -> bool {
    match (left, right) {
        (IpAddr::V4(left), IpAddr::V4(right)) => left.octets() < right.octets(),
        (IpAddr::V6(left), IpAddr::V6(right)) => left.octets() < right.octets(),
        // Never seen in one packet; keep any fixed order so hashing stays total.
        (IpAddr::V4(_), IpAddr::V6(_)) => true,
        (IpAddr::V6(_), IpAddr::V4(_)) => false,
    }
}

/// Maps an ICMP type and code to the "ports" the hash uses: a type with a
/// counterpart becomes (type, counterpart type); any other type is one-way
/// and becomes (type, code).
fn icmp_port_equivalents(
    counterparts: &[(u16, u16)],
    message_type: u16,
    code: u16,
) -> (u16, u16, bool) {
    match counterparts
        .iter()
        .find(|(request_type, _)| *request_type == message_type)
    {
        Some(&(_, counterpart_type)) => (message_type, counterpart_type, false),
        None => (message_type, code, true),
    }
}

/// Returns whether the protocol's ports (or ICMP type and code) are hashed.
fn has_ports(proto: u8) -> bool {
    matches!(
        proto,
        PROTO_TCP | PROTO_UDP | PROTO_SCTP | PROTO_ICMP | PROTO_ICMPV6
    )
}

fn update_with_address(hasher: &mut Sha1, address: IpAddr) {
    match address {
        IpAddr::V4(v4) => hasher.update(v4.octets()),
        IpAddr::V6(v6) => hasher.update(v6.octets()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A published test vector: (proto, src, dst, src port, dst port, expected).
    /// `None` ports mark protocols without ports.
    type Vector = (
        u8,
        &'static str,
        &'static str,
        Option<u16>,
        Option<u16>,
        &'static str,
    );

    /// A test vector's flow: (proto, src, dst, src port, dst port).
    type Tuple = (u8, &'static str, &'static str, Option<u16>, Option<u16>);

    fn tuple_of(vector: &Vector) -> FlowTuple {
        let (proto, src, dst, src_port, dst_port, _) = *vector;
        FlowTuple {
            src: src.parse().expect("test vector addresses are valid"),
            dst: dst.parse().expect("test vector addresses are valid"),
            proto,
            src_port: src_port.unwrap_or(0),
            dst_port: dst_port.unwrap_or(0),
        }
    }

    fn assert_vectors_base64(vectors: &[Vector], seed: u16) {
        for vector in vectors {
            assert_eq!(
                community_id_v1(&tuple_of(vector), seed),
                vector.5,
                "{vector:?}, seed {seed}"
            );
        }
    }

    fn assert_vectors_hex(vectors: &[Vector], seed: u16) {
        for vector in vectors {
            let hex_id = format!(
                "1:{}",
                hex::encode(community_id_v1_digest(&tuple_of(vector), seed))
            );
            assert_eq!(hex_id, vector.5, "{vector:?}, seed {seed}");
        }
    }

    const FE80_A: &str = "fe80:0001:0203:0405:0607:0809:0A0B:0C0D";
    const FE80_B: &str = "fe80:1011:1213:1415:1617:1819:1A1B:1C1D";

    /// The spec's sample tuples (baseline README tables), in table order.
    fn table_tuples() -> [Tuple; 16] {
        [
            (6, "1.2.3.4", "5.6.7.8", Some(1122), Some(3344)),
            (6, "5.6.7.8", "1.2.3.4", Some(3344), Some(1122)),
            (17, "1.2.3.4", "5.6.7.8", Some(1122), Some(3344)),
            (17, "5.6.7.8", "1.2.3.4", Some(3344), Some(1122)),
            (132, "1.2.3.4", "5.6.7.8", Some(1122), Some(3344)),
            (132, "5.6.7.8", "1.2.3.4", Some(3344), Some(1122)),
            (1, "1.2.3.4", "5.6.7.8", Some(8), Some(0)),
            (1, "5.6.7.8", "1.2.3.4", Some(0), Some(0)),
            (1, "1.2.3.4", "5.6.7.8", Some(11), Some(0)),
            (58, FE80_A, FE80_B, Some(128), Some(0)),
            (58, FE80_B, FE80_A, Some(129), Some(0)),
            (58, FE80_A, FE80_B, Some(146), Some(0)),
            (46, "1.2.3.4", "5.6.7.8", None, None),
            (46, "5.6.7.8", "1.2.3.4", None, None),
            (46, FE80_A, FE80_B, None, None),
            (46, FE80_B, FE80_A, None, None),
        ]
    }

    /// Pairs each tuple with its expected Community ID, in order.
    fn with_expected<const N: usize>(tuples: [Tuple; N], ids: [&'static str; N]) -> Vec<Vector> {
        tuples
            .into_iter()
            .zip(ids)
            .map(|((proto, src, dst, src_port, dst_port), id)| {
                (proto, src, dst, src_port, dst_port, id)
            })
            .collect()
    }

    #[test]
    fn spec_table_with_default_seed_matches() {
        let vectors = with_expected(
            table_tuples(),
            [
                "1:wCb3OG7yAFWelaUydu0D+125CLM=",
                "1:wCb3OG7yAFWelaUydu0D+125CLM=",
                "1:0Mu9InQx6z4ZiCZM/7HXi2WMhOg=",
                "1:0Mu9InQx6z4ZiCZM/7HXi2WMhOg=",
                "1:EKt4MsxuyaE6mL+hmrEkQ9csDD8=",
                "1:EKt4MsxuyaE6mL+hmrEkQ9csDD8=",
                "1:crodRHL2FEsHjbv3UkRrfbs4bZ0=",
                "1:crodRHL2FEsHjbv3UkRrfbs4bZ0=",
                "1:f/YiSyWqczrTgfUCZlBUnvHRcPk=",
                "1:0bf7hyMJUwt3fMED7z8LIfRpBeo=",
                "1:0bf7hyMJUwt3fMED7z8LIfRpBeo=",
                "1:fYC8+pz24E+EhANP1EZhpX0Dw10=",
                "1:ikv3kmf89luf73WPz1jOs49S768=",
                "1:ikv3kmf89luf73WPz1jOs49S768=",
                "1:wQ/2mwrnXP4lmJcHdGL5ePjR+e0=",
                "1:wQ/2mwrnXP4lmJcHdGL5ePjR+e0=",
            ],
        );
        assert_vectors_base64(&vectors, 0);
    }

    #[test]
    fn spec_table_with_seed_one_matches() {
        let vectors = with_expected(
            table_tuples(),
            [
                "1:HhA1B+6CoLbiKPEs5nhNYN4XWfk=",
                "1:HhA1B+6CoLbiKPEs5nhNYN4XWfk=",
                "1:OShq+iKDAMVouh/4bMxB9Sz4amw=",
                "1:OShq+iKDAMVouh/4bMxB9Sz4amw=",
                "1:uitchpn5MMGAQKBJh7bIr/bAr7s=",
                "1:uitchpn5MMGAQKBJh7bIr/bAr7s=",
                "1:9pr4ZGTICiuZoIh90RRYE2RyXpU=",
                "1:9pr4ZGTICiuZoIh90RRYE2RyXpU=",
                "1:1DD7cWGC/Yg91YGsQeni8du3pIA=",
                "1:IO27GQzPuCtNnwFvjWALMHu5tJE=",
                "1:IO27GQzPuCtNnwFvjWALMHu5tJE=",
                "1:Cv4IKJe56BNkF0MBW2YxQ3Nwc3s=",
                "1:/buhqeOmaRCopOZFy9HnoJd5XW8=",
                "1:/buhqeOmaRCopOZFy9HnoJd5XW8=",
                "1:j6EyyfBzL4vWKHFXgUqb5Az3OxM=",
                "1:j6EyyfBzL4vWKHFXgUqb5Az3OxM=",
            ],
        );
        assert_vectors_base64(&vectors, 1);
    }

    #[test]
    fn spec_table_without_base64_matches_the_digest() {
        let vectors = with_expected(
            table_tuples(),
            [
                "1:c026f7386ef200559e95a53276ed03fb5db908b3",
                "1:c026f7386ef200559e95a53276ed03fb5db908b3",
                "1:d0cbbd227431eb3e1988264cffb1d78b658c84e8",
                "1:d0cbbd227431eb3e1988264cffb1d78b658c84e8",
                "1:10ab7832cc6ec9a13a98bfa19ab12443d72c0c3f",
                "1:10ab7832cc6ec9a13a98bfa19ab12443d72c0c3f",
                "1:72ba1d4472f6144b078dbbf752446b7dbb386d9d",
                "1:72ba1d4472f6144b078dbbf752446b7dbb386d9d",
                "1:7ff6224b25aa733ad381f5026650549ef1d170f9",
                "1:d1b7fb872309530b777cc103ef3f0b21f46905ea",
                "1:d1b7fb872309530b777cc103ef3f0b21f46905ea",
                "1:7d80bcfa9cf6e04f8484034fd44661a57d03c35d",
                "1:8a4bf79267fcf65b9fef758fcf58ceb38f52efaf",
                "1:8a4bf79267fcf65b9fef758fcf58ceb38f52efaf",
                "1:c10ff69b0ae75cfe259897077462f978f8d1f9ed",
                "1:c10ff69b0ae75cfe259897077462f978f8d1f9ed",
            ],
        );
        assert_vectors_hex(&vectors, 0);
    }

    /// The spec's flows taken from its sample pcaps (baseline JSON files), in
    /// file order, without their expected values.
    fn pcap_tuples() -> [Tuple; 23] {
        const LINK_A: &str = "fe80::200:86ff:fe05:80da";
        const LINK_B: &str = "fe80::260:97ff:fe07:69ea";
        const HOST_3FFE: &str = "3ffe:507:0:1:200:86ff:fe05:80da";
        const V6_SRC: &str = "2001:470:e5bf:dead:4957:2174:e82c:4887";
        const V6_DST: &str = "2607:f8b0:400c:c03::1a";
        [
            (58, LINK_A, LINK_B, Some(135), Some(136)),
            (58, LINK_B, LINK_A, Some(136), Some(135)),
            (58, LINK_B, LINK_A, Some(135), Some(136)),
            (58, LINK_A, LINK_B, Some(136), Some(135)),
            (58, "3ffe:501:1800:2345::2", HOST_3FFE, Some(3), Some(0)),
            (
                58,
                "3ffe:501:410:0:2c0:dfff:fe47:33e",
                HOST_3FFE,
                Some(1),
                Some(4),
            ),
            (58, HOST_3FFE, "3ffe:501:0:1001::2", Some(128), Some(129)),
            (58, "3ffe:501:0:1001::2", HOST_3FFE, Some(129), Some(128)),
            (58, LINK_A, "ff02::2", Some(133), Some(134)),
            (58, LINK_B, "ff02::1", Some(134), Some(133)),
            (1, "192.168.0.89", "192.168.0.1", Some(8), Some(0)),
            (1, "192.168.0.1", "192.168.0.89", Some(0), Some(8)),
            (1, "10.0.0.1", "10.0.0.2", Some(11), Some(0)),
            (6, V6_SRC, V6_DST, Some(63943), Some(25)),
            (6, V6_DST, V6_SRC, Some(25), Some(63943)),
            (132, "192.168.170.8", "192.168.170.56", Some(7), Some(7)),
            (132, "192.168.170.56", "192.168.170.8", Some(7), Some(7)),
            (6, "128.232.110.120", "66.35.250.204", Some(34855), Some(80)),
            (6, "66.35.250.204", "128.232.110.120", Some(80), Some(34855)),
            (17, "192.168.1.52", "8.8.8.8", Some(54585), Some(53)),
            (17, "8.8.8.8", "192.168.1.52", Some(53), Some(54585)),
            (46, "10.1.12.1", "10.1.12.2", None, None),
            (46, "10.1.12.2", "10.1.12.1", None, None),
        ]
    }

    #[test]
    fn spec_pcap_flows_with_default_seed_match() {
        let vectors = with_expected(
            pcap_tuples(),
            [
                "1:dGHyGvjMfljg6Bppwm3bg0LO8TY=",
                "1:dGHyGvjMfljg6Bppwm3bg0LO8TY=",
                "1:zavyT/cezQr1fmImYCwYnMXbgck=",
                "1:zavyT/cezQr1fmImYCwYnMXbgck=",
                "1:2ObVBgIn28oZvibYZhZMBgh7WdQ=",
                "1:hLZd0XGWojozrvxqE0dWB1iM6R0=",
                "1:+TW+HtLHvV1xnGhV1lv7XoJrqQg=",
                "1:+TW+HtLHvV1xnGhV1lv7XoJrqQg=",
                "1:hO+sN4H+MG5MY/8hIrXPqc4ZQz0=",
                "1:pkvHqCL88/tg1k4cPigmZXUtL00=",
                "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=",
                "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=",
                "1:YHxtAirCG//0OzkcVAukqKQN9xM=",
                "1:/qFaeAR+gFe1KYjMzVDsMv+wgU4=",
                "1:/qFaeAR+gFe1KYjMzVDsMv+wgU4=",
                "1:MP2EtRCAUIZvTw6MxJHLV7N7JDs=",
                "1:MP2EtRCAUIZvTw6MxJHLV7N7JDs=",
                "1:LQU9qZlK+B5F3KDmev6m5PMibrg=",
                "1:LQU9qZlK+B5F3KDmev6m5PMibrg=",
                "1:d/FP5EW3wiY1vCndhwleRRKHowQ=",
                "1:d/FP5EW3wiY1vCndhwleRRKHowQ=",
                "1:KHlLkgoJW7ifUTyTSgyVfkFHzKw=",
                "1:KHlLkgoJW7ifUTyTSgyVfkFHzKw=",
            ],
        );
        assert_vectors_base64(&vectors, 0);
    }

    #[test]
    fn spec_pcap_flows_with_seed_one_match() {
        let vectors = with_expected(
            pcap_tuples(),
            [
                "1:kHa1FhMYIT6Ym2Vm2AOtoOARDzY=",
                "1:kHa1FhMYIT6Ym2Vm2AOtoOARDzY=",
                "1:2hSqmsDZ2kdcY9kbiUzOEBic0iM=",
                "1:2hSqmsDZ2kdcY9kbiUzOEBic0iM=",
                "1:lVEtCZpYu84Xqaa++3lXFyuu2n4=",
                "1:W8MHwXpWzpoSTD+cGcaJr4u0ys8=",
                "1:GfZxjAkDk2MkegpBYHV6tadtFXQ=",
                "1:GfZxjAkDk2MkegpBYHV6tadtFXQ=",
                "1:L7Ka0ZMYu+J3bL4ulW2PrqyXNo8=",
                "1:K/ee5UCqAMAQXDorP5nSa2CGLjc=",
                "1:03g6IloqVBdcZlPyX8r0hgoE7kA=",
                "1:03g6IloqVBdcZlPyX8r0hgoE7kA=",
                "1:XjUibYHaafLQ3pxQeiMI8g25q20=",
                "1:eJYTW6AOzFLlSUoESovMjnu7rMw=",
                "1:eJYTW6AOzFLlSUoESovMjnu7rMw=",
                "1:5w3ZRjeKBzqT3zsaEECDGjUbYeg=",
                "1:5w3ZRjeKBzqT3zsaEECDGjUbYeg=",
                "1:3V71V58M3Ksw/yuFALMcW0LAHvc=",
                "1:3V71V58M3Ksw/yuFALMcW0LAHvc=",
                "1:Q9We8WO3piVF8yEQBNJF4uiSVrI=",
                "1:Q9We8WO3piVF8yEQBNJF4uiSVrI=",
                "1:rYir8gphR31noO9iDRQmF/BteEI=",
                "1:rYir8gphR31noO9iDRQmF/BteEI=",
            ],
        );
        assert_vectors_base64(&vectors, 1);
    }

    #[test]
    fn ports_of_protocols_without_ports_are_ignored() {
        let without_ports = FlowTuple {
            src: "10.1.12.1".parse().expect("valid address"),
            dst: "10.1.12.2".parse().expect("valid address"),
            proto: 46,
            src_port: 0,
            dst_port: 0,
        };
        let with_stray_ports = FlowTuple {
            src_port: 1234,
            dst_port: 80,
            ..without_ports
        };
        assert_eq!(
            community_id_v1(&without_ports, 0),
            community_id_v1(&with_stray_ports, 0)
        );
    }

    #[test]
    fn one_way_icmp_keeps_its_direction() {
        let time_exceeded = FlowTuple {
            src: "10.0.0.2".parse().expect("valid address"),
            dst: "10.0.0.1".parse().expect("valid address"),
            proto: PROTO_ICMP,
            src_port: 11,
            dst_port: 0,
        };
        let reversed = FlowTuple {
            src: time_exceeded.dst,
            dst: time_exceeded.src,
            ..time_exceeded
        };
        assert_ne!(
            community_id_v1(&time_exceeded, 0),
            community_id_v1(&reversed, 0)
        );
    }
}
