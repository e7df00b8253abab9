//! Recomputes Community IDs on real sensor output: the Suricata `eve.json`
//! and the Zeek `conn.log.labeled` made from the same pcap (Slips test7), in
//! `../shared/data/telemetry-samples/suricata-zeek-paired-slips-test7`.
//!
//! The sample is required: the tests fail, naming the folder, when it is absent.
//! The expected counts are the ones the sample's README documents, including
//! the 7 IPv6 flows that Suricata hashed with its endpoints swapped (the IPv6
//! address-ordering bug fixed in Suricata after that run).

use std::collections::HashSet;
use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use fedshield_core::telemetry::{FlowTuple, community_id_v1};
use serde_json::Value;
use sha1::{Digest, Sha1};

const SAMPLE_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/data/telemetry-samples/suricata-zeek-paired-slips-test7"
);

/// The Community ID seed the sensors ran with (their default).
const SEED: u16 = 0;

/// Returns the path of a file of the paired sample, failing when it is absent.
fn sample_file(name: &str) -> PathBuf {
    let path = Path::new(SAMPLE_DIR).join(name);
    assert!(
        path.is_file(),
        "the paired Suricata + Zeek sample is required: {} not found",
        path.display()
    );
    path
}

fn read_text(path: &Path) -> String {
    fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("failed to read {}: {error}", path.display()))
}

/// Returns the IP protocol number of an eve `proto` name.
fn eve_proto_number(name: &str) -> Option<u8> {
    match name {
        "ICMP" => Some(1),
        "TCP" => Some(6),
        "UDP" => Some(17),
        "IPv6-ICMP" => Some(58),
        "SCTP" => Some(132),
        _ => None,
    }
}

/// One eve event that carries a `community_id`: its flow and the logged ID.
struct EveFlow {
    line_number: usize,
    event_type: String,
    tuple: FlowTuple,
    logged_id: String,
}

/// Returns a field of an eve event as text, failing with the file and line.
fn text_field<'a>(event: &'a Value, key: &str, location: &str) -> &'a str {
    event[key]
        .as_str()
        .unwrap_or_else(|| panic!("{location}: field `{key}` is missing or not text"))
}

/// Returns a numeric field of an eve event as a port (or ICMP type/code).
fn port_field(event: &Value, key: &str, location: &str) -> u16 {
    event[key]
        .as_u64()
        .and_then(|value| u16::try_from(value).ok())
        .unwrap_or_else(|| panic!("{location}: field `{key}` is missing or not a 16-bit number"))
}

fn address_field(event: &Value, key: &str, location: &str) -> IpAddr {
    let text = text_field(event, key, location);
    text.parse()
        .unwrap_or_else(|error| panic!("{location}: field `{key}` = {text:?}: {error}"))
}

/// Reads every eve event that carries a `community_id`.
fn eve_flows() -> Vec<EveFlow> {
    let path = sample_file("eve.json");
    let text = read_text(&path);
    let mut flows = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line_number = index + 1;
        let location = format!("{}:{line_number}", path.display());
        let event: Value = serde_json::from_str(line)
            .unwrap_or_else(|error| panic!("{location}: invalid JSON: {error}"));
        let Some(logged_id) = event["community_id"].as_str() else {
            continue;
        };
        let proto_name = text_field(&event, "proto", &location);
        let proto = eve_proto_number(proto_name)
            .unwrap_or_else(|| panic!("{location}: unknown proto {proto_name:?}"));
        let (src_port, dst_port) = if proto == 1 || proto == 58 {
            (
                port_field(&event, "icmp_type", &location),
                port_field(&event, "icmp_code", &location),
            )
        } else {
            (
                port_field(&event, "src_port", &location),
                port_field(&event, "dest_port", &location),
            )
        };
        flows.push(EveFlow {
            line_number,
            event_type: text_field(&event, "event_type", &location).to_string(),
            tuple: FlowTuple {
                src: address_field(&event, "src_ip", &location),
                dst: address_field(&event, "dest_ip", &location),
                proto,
                src_port,
                dst_port,
            },
            logged_id: logged_id.to_string(),
        });
    }
    flows
}

/// Returns the Community ID bytes hashed in the order given, with no endpoint
/// ordering and no ICMP mapping: what a sensor that ordered the endpoints
/// wrongly would write.
fn hash_in_given_order(
    first: IpAddr,
    second: IpAddr,
    proto: u8,
    (first_port, second_port): (u16, u16),
) -> String {
    let mut hasher = Sha1::new();
    hasher.update(SEED.to_be_bytes());
    for address in [first, second] {
        match address {
            IpAddr::V4(v4) => hasher.update(v4.octets()),
            IpAddr::V6(v6) => hasher.update(v6.octets()),
        }
    }
    hasher.update([proto, 0]);
    hasher.update(first_port.to_be_bytes());
    hasher.update(second_port.to_be_bytes());
    format!("1:{}", BASE64.encode(hasher.finalize()))
}

/// Returns the ports Suricata hashed after it wrongly put the multicast group
/// first: the flow's ports reversed, or for ICMPv6 the spec's type mapping
/// reversed (router solicitation 133 pairs with advertisement 134; an MLDv2
/// report, 143, has no counterpart and hashes its code, 0).
fn suricata_reversed_ports(tuple: &FlowTuple) -> (u16, u16) {
    match (tuple.proto, tuple.src_port) {
        (58, 133) => (134, 133),
        (58, 143) => (tuple.dst_port, 143),
        (58, other) => panic!("no expected ports for icmpv6 type {other}"),
        _ => (tuple.dst_port, tuple.src_port),
    }
}

fn is_tcp_or_udp(tuple: &FlowTuple) -> bool {
    tuple.proto == 6 || tuple.proto == 17
}

#[test]
fn suricata_ids_match_except_the_documented_ipv6_ordering_bug() {
    let flows = eve_flows();
    assert_eq!(
        flows.len(),
        402,
        "every event but the stats event has an id"
    );
    let mismatches: Vec<&EveFlow> = flows
        .iter()
        .filter(|flow| community_id_v1(&flow.tuple, SEED) != flow.logged_id)
        .collect();

    // Every IPv4 event matches.
    let num_ipv4 = flows.iter().filter(|flow| flow.tuple.src.is_ipv4()).count();
    assert_eq!(num_ipv4, 389);
    let ipv4_mismatches: Vec<usize> = mismatches
        .iter()
        .filter(|flow| flow.tuple.src.is_ipv4())
        .map(|flow| flow.line_number)
        .collect();
    assert_eq!(ipv4_mismatches, Vec::<usize>::new(), "eve.json lines");

    // The README's count: 388 of the 395 TCP/UDP events match, and the 7 that
    // do not are IPv6 mDNS from a link-local address to ff02::fb.
    let num_tcp_udp = flows
        .iter()
        .filter(|flow| is_tcp_or_udp(&flow.tuple))
        .count();
    assert_eq!(num_tcp_udp, 395);
    let mdns_group: IpAddr = "ff02::fb".parse().expect("valid address");
    let tcp_udp_mismatches: Vec<&&EveFlow> = mismatches
        .iter()
        .filter(|flow| is_tcp_or_udp(&flow.tuple))
        .collect();
    assert_eq!(tcp_udp_mismatches.len(), 7);
    for flow in &tcp_udp_mismatches {
        assert_eq!(flow.event_type, "flow", "line {}", flow.line_number);
        assert_eq!(flow.tuple.proto, 17, "line {}", flow.line_number);
        assert_eq!((flow.tuple.src_port, flow.tuple.dst_port), (5353, 5353));
        assert_eq!(flow.tuple.dst, mdns_group, "line {}", flow.line_number);
    }

    // The same bug hits 4 of the 6 ICMPv6 events: those from a link-local
    // address (the 2 from the unspecified address `::` sort first either way).
    let num_icmpv6 = flows.iter().filter(|flow| flow.tuple.proto == 58).count();
    assert_eq!(num_icmpv6, 6);
    let num_icmpv6_mismatches = mismatches
        .iter()
        .filter(|flow| flow.tuple.proto == 58)
        .count();
    assert_eq!(num_icmpv6_mismatches, 4);
    assert_eq!(mismatches.len(), 7 + 4);

    // Each mismatch is the spec's hash with the endpoints swapped: link-local
    // source, multicast destination, and Suricata put the group first.
    for flow in &mismatches {
        let tuple = flow.tuple;
        let is_link_local_to_multicast = matches!(
            (tuple.src, tuple.dst),
            (IpAddr::V6(source), IpAddr::V6(group))
                if source.is_unicast_link_local() && group.is_multicast()
        );
        assert!(
            is_link_local_to_multicast,
            "line {}: {tuple:?}",
            flow.line_number
        );
        let swapped = hash_in_given_order(
            tuple.dst,
            tuple.src,
            tuple.proto,
            suricata_reversed_ports(&tuple),
        );
        assert_eq!(
            swapped, flow.logged_id,
            "line {}: {tuple:?}",
            flow.line_number
        );
    }
}

/// One Zeek TCP or UDP connection: its flow and its label.
struct ZeekConnection {
    tuple: FlowTuple,
    label: String,
}

/// Reads the TCP and UDP rows of the Zeek log, by the columns its `#fields`
/// header names.
fn zeek_tcp_udp_connections() -> Vec<ZeekConnection> {
    let path = sample_file("conn.log.labeled");
    let text = read_text(&path);
    let fields_line = text
        .lines()
        .find(|line| line.starts_with("#fields\t"))
        .unwrap_or_else(|| panic!("{}: no #fields header", path.display()));
    let field_names: Vec<&str> = fields_line.split('\t').skip(1).collect();
    let column = |name: &str| {
        field_names
            .iter()
            .position(|field| *field == name)
            .unwrap_or_else(|| panic!("{}: no column {name:?} in #fields", path.display()))
    };
    let columns = [
        column("id.orig_h"),
        column("id.orig_p"),
        column("id.resp_h"),
        column("id.resp_p"),
        column("proto"),
        column("label"),
    ];
    let mut connections = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.starts_with('#') {
            continue;
        }
        let location = format!("{}:{}", path.display(), index + 1);
        let values: Vec<&str> = line.split('\t').collect();
        let value = |column_index: usize| {
            *values
                .get(column_index)
                .unwrap_or_else(|| panic!("{location}: no column {}", column_index + 1))
        };
        let [orig_h, orig_p, resp_h, resp_p, proto, label] = columns.map(value);
        let proto = match proto {
            "tcp" => 6,
            "udp" => 17,
            _ => continue,
        };
        let parse_address = |text: &str| -> IpAddr {
            text.parse()
                .unwrap_or_else(|error| panic!("{location}: address {text:?}: {error}"))
        };
        let parse_port = |text: &str| -> u16 {
            text.parse()
                .unwrap_or_else(|error| panic!("{location}: port {text:?}: {error}"))
        };
        connections.push(ZeekConnection {
            tuple: FlowTuple {
                src: parse_address(orig_h),
                dst: parse_address(resp_h),
                proto,
                src_port: parse_port(orig_p),
                dst_port: parse_port(resp_p),
            },
            label: label.to_string(),
        });
    }
    connections
}

#[test]
fn zeek_connections_join_suricata_flows_by_community_id() {
    let suricata_flow_ids: HashSet<String> = eve_flows()
        .into_iter()
        .filter(|flow| flow.event_type == "flow")
        .map(|flow| flow.logged_id)
        .collect();
    let connections = zeek_tcp_udp_connections();
    assert_eq!(connections.len(), 360);

    let joined: Vec<&ZeekConnection> = connections
        .iter()
        .filter(|connection| suricata_flow_ids.contains(&community_id_v1(&connection.tuple, SEED)))
        .collect();
    let num_joined_with_label = |label: &str| {
        joined
            .iter()
            .filter(|connection| connection.label == label)
            .count()
    };
    assert_eq!(joined.len(), 349);
    assert_eq!(num_joined_with_label("Malicious"), 305);
    assert_eq!(num_joined_with_label("Benign"), 44);
}
