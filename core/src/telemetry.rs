//! Network-flow telemetry: the flow record, a synthetic generator with benign
//! profiles and attack families that differ per organization (non-IID), and the
//! fixed featurization of flow records into model inputs.
//!
//! The generator is deterministic for a seed, so tests and demos are
//! reproducible; organizations get different benign profiles and attack mixes,
//! which is what makes federated learning both useful and hard.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, LogNormal, Normal};

use std::io::Write;

use crate::data::Dataset;
use crate::schema::{LabelClass, RecordFields, Schema};

/// Transport protocol of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
}

/// How a connection ended, in the style of Zeek's `conn_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// Normal establishment and termination (Zeek `SF`).
    Established,
    /// Connection attempt seen, no reply (`S0`).
    NoReply,
    /// Attempt rejected (`REJ`).
    Rejected,
    /// Established, then reset (`RSTO`/`RSTR`).
    Reset,
}

/// What generated a flow: benign traffic or one attack family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrafficClass {
    Benign,
    PortScan,
    SynFlood,
    BruteForce,
    Exfiltration,
    Beaconing,
}

impl TrafficClass {
    /// The attack families, in a fixed order.
    pub const ATTACKS: [TrafficClass; 5] = [
        TrafficClass::PortScan,
        TrafficClass::SynFlood,
        TrafficClass::BruteForce,
        TrafficClass::Exfiltration,
        TrafficClass::Beaconing,
    ];

    /// Returns the label string of the class.
    pub fn name(self) -> &'static str {
        match self {
            TrafficClass::Benign => "benign",
            TrafficClass::PortScan => "port_scan",
            TrafficClass::SynFlood => "syn_flood",
            TrafficClass::BruteForce => "brute_force",
            TrafficClass::Exfiltration => "exfiltration",
            TrafficClass::Beaconing => "c2_beaconing",
        }
    }
}

/// One network flow as a sensor (Zeek, NetFlow/IPFIX) would report it.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowRecord {
    pub duration_secs: f32,
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub packets_out: u32,
    pub packets_in: u32,
    pub src_port: u16,
    pub dst_port: u16,
    pub protocol: Protocol,
    pub conn_state: ConnState,
    /// TCP flags seen over the flow: S syn, A ack, P push, F fin, R reset; "-" for none.
    pub tcp_flags: &'static str,
    pub failed_auth: u32,
    /// Local hour of day, 0..24.
    pub hour: u8,
    pub class: TrafficClass,
}

/// The kind of benign traffic an organization mostly sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenignProfile {
    /// Web browsing, DNS, daytime.
    Office,
    /// Database and backup traffic, around the clock.
    DataCenter,
    /// SSH, git and builds, long days.
    DevShop,
}

/// What one organization's telemetry looks like.
#[derive(Debug, Clone, PartialEq)]
pub struct OrgProfile {
    pub benign: BenignProfile,
    /// Fraction of flows that are attacks.
    pub attack_fraction: f64,
    /// Relative frequency of each of [`TrafficClass::ATTACKS`].
    pub attack_mix: [f64; 5],
}

impl OrgProfile {
    /// Returns the profile of organization `index`: profiles cycle through the
    /// benign kinds, and each organization sees mostly two attack families
    /// with a trickle of the others, so no organization alone sees everything.
    pub fn for_org(index: usize) -> Self {
        let benign = match index % 3 {
            0 => BenignProfile::Office,
            1 => BenignProfile::DataCenter,
            _ => BenignProfile::DevShop,
        };
        let mut attack_mix = [0.05; 5];
        attack_mix[index % 5] = 1.0;
        attack_mix[(index + 2) % 5] = 0.6;
        OrgProfile {
            benign,
            attack_fraction: 0.2 + 0.05 * (index % 4) as f64,
            attack_mix,
        }
    }

    /// Returns a profile with every attack family equally likely, for held-out sets.
    pub fn balanced() -> Self {
        OrgProfile {
            benign: BenignProfile::Office,
            attack_fraction: 0.3,
            attack_mix: [1.0; 5],
        }
    }
}

/// Deterministic generator of synthetic flows for one organization.
pub struct FlowGenerator {
    profile: OrgProfile,
    rng: StdRng,
}

impl FlowGenerator {
    /// Returns a generator for `profile`, deterministic for `seed`.
    pub fn new(profile: OrgProfile, seed: u64) -> Self {
        FlowGenerator {
            profile,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// Returns the next flow.
    pub fn next_flow(&mut self) -> FlowRecord {
        let mut flow = self.next_flow_without_flags();
        flow.tcp_flags = self.flags_for(flow.protocol, flow.conn_state);
        flow
    }

    fn next_flow_without_flags(&mut self) -> FlowRecord {
        if self
            .rng
            .random_bool(self.profile.attack_fraction.clamp(0.0, 1.0))
        {
            let total: f64 = self.profile.attack_mix.iter().sum();
            let mut pick = self.rng.random_range(0.0..total.max(f64::MIN_POSITIVE));
            for (class, weight) in TrafficClass::ATTACKS.iter().zip(self.profile.attack_mix) {
                if pick < weight {
                    return self.attack(*class);
                }
                pick -= weight;
            }
            self.attack(TrafficClass::Beaconing)
        } else {
            // Held-out and mixed sets draw benign kinds from all profiles.
            let benign = self.profile.benign;
            self.benign(benign)
        }
    }

    /// Returns `count` flows.
    pub fn flows(&mut self, count: usize) -> Vec<FlowRecord> {
        (0..count).map(|_| self.next_flow()).collect()
    }

    fn lognormal(&mut self, mu: f64, sigma: f64) -> f64 {
        LogNormal::new(mu, sigma)
            .expect("generator lognormal parameters are valid")
            .sample(&mut self.rng)
    }

    fn daytime_hour(&mut self) -> u8 {
        let hour: f64 = Normal::new(13.0, 3.0)
            .expect("generator normal parameters are valid")
            .sample(&mut self.rng);
        hour.rem_euclid(24.0) as u8
    }

    fn any_hour(&mut self) -> u8 {
        self.rng.random_range(0..24)
    }

    fn ephemeral_port(&mut self) -> u16 {
        self.rng.random_range(32768..61000)
    }

    fn packets_for(&mut self, bytes: u64, mean_packet_bytes: f64) -> u32 {
        let jitter = self.rng.random_range(0.7..1.3);
        ((bytes as f64 / mean_packet_bytes * jitter).ceil() as u32).max(1)
    }

    fn benign(&mut self, profile: BenignProfile) -> FlowRecord {
        let (dst_port, protocol, bytes_out, bytes_in, duration, hour) = match profile {
            BenignProfile::Office => {
                let dns = self.rng.random_bool(0.25);
                if dns {
                    let out = self.lognormal(4.2, 0.3) as u64;
                    let inbound = self.lognormal(5.0, 0.5) as u64;
                    let hour = self.daytime_hour();
                    (
                        53,
                        Protocol::Udp,
                        out,
                        inbound,
                        self.lognormal(-3.0, 1.0) as f32,
                        hour,
                    )
                } else {
                    let port = if self.rng.random_bool(0.85) { 443 } else { 80 };
                    let out = self.lognormal(7.0, 1.3) as u64;
                    let inbound = self.lognormal(10.0, 2.0) as u64;
                    let hour = self.daytime_hour();
                    (
                        port,
                        Protocol::Tcp,
                        out,
                        inbound,
                        self.lognormal(0.5, 1.5) as f32,
                        hour,
                    )
                }
            }
            BenignProfile::DataCenter => {
                let backup = self.rng.random_bool(0.08);
                if backup {
                    // Nightly backups: large uploads, the benign twin of exfiltration.
                    let out = self.lognormal(17.0, 1.2) as u64;
                    let inbound = self.lognormal(9.0, 1.0) as u64;
                    let hour = self.rng.random_range(0..5);
                    (
                        873,
                        Protocol::Tcp,
                        out,
                        inbound,
                        self.lognormal(5.0, 1.0) as f32,
                        hour,
                    )
                } else {
                    let port = *[5432u16, 3306, 6379, 9200]
                        .get(self.rng.random_range(0..4))
                        .expect("index in range");
                    let out = self.lognormal(8.0, 1.5) as u64;
                    let inbound = self.lognormal(11.0, 2.0) as u64;
                    let hour = self.any_hour();
                    (
                        port,
                        Protocol::Tcp,
                        out,
                        inbound,
                        self.lognormal(-0.5, 1.5) as f32,
                        hour,
                    )
                }
            }
            BenignProfile::DevShop => {
                let roll = self.rng.random_range(0.0..1.0);
                let hour = self.daytime_hour();
                if roll < 0.4 {
                    let out = self.lognormal(9.0, 1.5) as u64;
                    let inbound = self.lognormal(10.0, 1.5) as u64;
                    (
                        22,
                        Protocol::Tcp,
                        out,
                        inbound,
                        self.lognormal(3.0, 1.5) as f32,
                        hour,
                    )
                } else if roll < 0.55 {
                    let out = self.lognormal(4.2, 0.3) as u64;
                    let inbound = self.lognormal(5.0, 0.5) as u64;
                    (
                        53,
                        Protocol::Udp,
                        out,
                        inbound,
                        self.lognormal(-3.0, 1.0) as f32,
                        hour,
                    )
                } else {
                    let out = self.lognormal(7.5, 1.5) as u64;
                    let inbound = self.lognormal(12.0, 2.0) as u64;
                    (
                        443,
                        Protocol::Tcp,
                        out,
                        inbound,
                        self.lognormal(1.0, 1.5) as f32,
                        hour,
                    )
                }
            }
        };
        let conn_state = match self.rng.random_range(0.0..1.0) {
            roll if roll < 0.93 => ConnState::Established,
            roll if roll < 0.96 => ConnState::Reset,
            roll if roll < 0.98 => ConnState::Rejected,
            _ => ConnState::NoReply,
        };
        let failed_auth = if dst_port == 22 && self.rng.random_bool(0.05) {
            self.rng.random_range(1..3)
        } else {
            0
        };
        FlowRecord {
            duration_secs: duration,
            bytes_out,
            bytes_in,
            packets_out: self.packets_for(bytes_out, 600.0),
            packets_in: self.packets_for(bytes_in, 1100.0),
            src_port: self.ephemeral_port(),
            dst_port,
            protocol,
            conn_state,
            tcp_flags: "-",
            failed_auth,
            hour,
            class: TrafficClass::Benign,
        }
    }

    fn attack(&mut self, class: TrafficClass) -> FlowRecord {
        let src_port = self.ephemeral_port();
        let hour = self.any_hour();
        let mut flow = match class {
            TrafficClass::PortScan => {
                let open_port = self.rng.random_bool(0.1);
                FlowRecord {
                    duration_secs: self.lognormal(-5.0, 1.0) as f32,
                    bytes_out: self.rng.random_range(0..80),
                    bytes_in: if open_port {
                        self.rng.random_range(40..200)
                    } else {
                        0
                    },
                    packets_out: self.rng.random_range(1..3),
                    packets_in: u32::from(open_port),
                    src_port,
                    dst_port: self.rng.random_range(1..10000),
                    protocol: if self.rng.random_bool(0.85) {
                        Protocol::Tcp
                    } else {
                        Protocol::Udp
                    },
                    conn_state: if open_port {
                        ConnState::Reset
                    } else if self.rng.random_bool(0.5) {
                        ConnState::Rejected
                    } else {
                        ConnState::NoReply
                    },
                    tcp_flags: "-",
                    failed_auth: 0,
                    hour,
                    class,
                }
            }
            TrafficClass::SynFlood => FlowRecord {
                duration_secs: self.lognormal(-6.0, 1.0) as f32,
                bytes_out: self.rng.random_range(40..130),
                bytes_in: 0,
                packets_out: self.rng.random_range(1..3),
                packets_in: 0,
                src_port: self.rng.random_range(1024..65535),
                dst_port: if self.rng.random_bool(0.7) { 443 } else { 80 },
                protocol: Protocol::Tcp,
                conn_state: ConnState::NoReply,
                tcp_flags: "-",
                failed_auth: 0,
                hour,
                class,
            },
            TrafficClass::BruteForce => {
                let bytes_out = self.lognormal(7.5, 0.6) as u64;
                let bytes_in = self.lognormal(7.8, 0.6) as u64;
                FlowRecord {
                    duration_secs: self.lognormal(1.0, 0.8) as f32,
                    bytes_out,
                    bytes_in,
                    packets_out: self.packets_for(bytes_out, 120.0),
                    packets_in: self.packets_for(bytes_in, 120.0),
                    src_port,
                    dst_port: if self.rng.random_bool(0.6) { 22 } else { 3389 },
                    protocol: Protocol::Tcp,
                    conn_state: if self.rng.random_bool(0.7) {
                        ConnState::Established
                    } else {
                        ConnState::Reset
                    },
                    tcp_flags: "-",
                    failed_auth: self.rng.random_range(1..12),
                    hour,
                    class,
                }
            }
            TrafficClass::Exfiltration => {
                let bytes_out = self.lognormal(16.5, 1.5) as u64;
                let bytes_in = self.lognormal(8.0, 1.0) as u64;
                let dst_port = match self.rng.random_range(0..3) {
                    0 => 443,
                    1 => 53,
                    _ => self.rng.random_range(1024..65535),
                };
                FlowRecord {
                    duration_secs: self.lognormal(4.0, 1.5) as f32,
                    bytes_out,
                    bytes_in,
                    packets_out: self.packets_for(bytes_out, 1200.0),
                    packets_in: self.packets_for(bytes_in, 300.0),
                    src_port,
                    dst_port,
                    protocol: if dst_port == 53 {
                        Protocol::Udp
                    } else {
                        Protocol::Tcp
                    },
                    conn_state: ConnState::Established,
                    tcp_flags: "-",
                    failed_auth: 0,
                    // Mostly at night, when nobody watches.
                    hour: if self.rng.random_bool(0.7) {
                        self.rng.random_range(0..6)
                    } else {
                        hour
                    },
                    class,
                }
            }
            TrafficClass::Beaconing => {
                let bytes_out = self.lognormal(5.8, 0.3) as u64;
                let bytes_in = self.lognormal(5.3, 0.4) as u64;
                FlowRecord {
                    duration_secs: self.lognormal(-1.0, 0.4) as f32,
                    bytes_out,
                    bytes_in,
                    packets_out: self.packets_for(bytes_out, 150.0),
                    packets_in: self.packets_for(bytes_in, 150.0),
                    src_port,
                    dst_port: match self.rng.random_range(0..3) {
                        0 => 443,
                        1 => 8080,
                        _ => 8443,
                    },
                    protocol: Protocol::Tcp,
                    conn_state: ConnState::Established,
                    tcp_flags: "-",
                    failed_auth: 0,
                    hour,
                    class,
                }
            }
            TrafficClass::Benign => return self.benign(BenignProfile::Office),
        };
        flow.duration_secs = flow.duration_secs.max(0.0);
        flow
    }

    /// Returns the TCP flags a sensor would record for a flow's protocol and state.
    fn flags_for(&mut self, protocol: Protocol, conn_state: ConnState) -> &'static str {
        if protocol != Protocol::Tcp {
            return "-";
        }
        match conn_state {
            ConnState::Established if self.rng.random_bool(0.1) => "SA",
            ConnState::Established => "SAPF",
            ConnState::NoReply => "S",
            ConnState::Rejected => "SR",
            ConnState::Reset if self.rng.random_bool(0.5) => "SAR",
            ConnState::Reset => "SAPR",
        }
    }
}

/// The schema of synthetic flows (`schemas/synthetic-flows.toml`).
pub const SYNTHETIC_FLOWS_SCHEMA_TOML: &str = include_str!("../../schemas/synthetic-flows.toml");

/// Column names of synthetic flow files, in order.
pub const FLOW_COLUMNS: [&str; 13] = [
    "duration_secs",
    "bytes_out",
    "bytes_in",
    "packets_out",
    "packets_in",
    "src_port",
    "dst_port",
    "protocol",
    "tcp_flags",
    "conn_state",
    "failed_auth",
    "hour",
    "label",
];

/// Returns the parsed schema of synthetic flows.
pub fn synthetic_flows_schema() -> Schema {
    Schema::from_toml_str(SYNTHETIC_FLOWS_SCHEMA_TOML)
        .expect("the built-in synthetic flows schema is valid")
}

/// Returns the number of model inputs the synthetic flows schema produces.
pub fn num_flow_features() -> usize {
    synthetic_flows_schema().num_features()
}

impl Protocol {
    /// Returns the protocol as written in flow files.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
        }
    }
}

impl ConnState {
    /// Returns the Zeek `conn_state` code.
    pub fn code(self) -> &'static str {
        match self {
            ConnState::Established => "SF",
            ConnState::NoReply => "S0",
            ConnState::Rejected => "REJ",
            ConnState::Reset => "RSTO",
        }
    }
}

impl FlowRecord {
    /// Returns the record's fields as text, in [`FLOW_COLUMNS`] order.
    pub fn fields(&self) -> [String; 13] {
        [
            format!("{:.6}", self.duration_secs),
            self.bytes_out.to_string(),
            self.bytes_in.to_string(),
            self.packets_out.to_string(),
            self.packets_in.to_string(),
            self.src_port.to_string(),
            self.dst_port.to_string(),
            self.protocol.name().to_string(),
            self.tcp_flags.to_string(),
            self.conn_state.code().to_string(),
            self.failed_auth.to_string(),
            self.hour.to_string(),
            self.class.name().to_string(),
        ]
    }

    /// Returns the record as a JSON object (numbers as numbers).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "duration_secs": self.duration_secs,
            "bytes_out": self.bytes_out,
            "bytes_in": self.bytes_in,
            "packets_out": self.packets_out,
            "packets_in": self.packets_in,
            "src_port": self.src_port,
            "dst_port": self.dst_port,
            "protocol": self.protocol.name(),
            "tcp_flags": self.tcp_flags,
            "conn_state": self.conn_state.code(),
            "failed_auth": self.failed_auth,
            "hour": self.hour,
            "label": self.class.name(),
        })
    }
}

/// Writes flows as CSV with a header line.
///
/// # Errors
/// The writer's I/O error.
pub fn write_csv(
    writer: impl Write,
    flows: impl IntoIterator<Item = FlowRecord>,
) -> std::io::Result<()> {
    let mut csv_writer = csv::Writer::from_writer(writer);
    csv_writer.write_record(FLOW_COLUMNS)?;
    for flow in flows {
        csv_writer.write_record(flow.fields())?;
    }
    csv_writer.flush()
}

/// Writes flows as JSON lines.
///
/// # Errors
/// The writer's I/O error.
pub fn write_jsonl(
    mut writer: impl Write,
    flows: impl IntoIterator<Item = FlowRecord>,
) -> std::io::Result<()> {
    for flow in flows {
        serde_json::to_writer(&mut writer, &flow.to_json())?;
        writer.write_all(b"\n")?;
    }
    writer.flush()
}

/// Returns a labelled dataset of `count` synthetic flows featurized through
/// the synthetic flows schema (the same path files written by `fedshield
/// synth` take).
pub fn synthetic_dataset(profile: OrgProfile, count: usize, seed: u64) -> Dataset {
    let schema = synthetic_flows_schema();
    let mut generator = FlowGenerator::new(profile, seed);
    let mut dataset = Dataset::new(schema.num_features());
    let header = csv::StringRecord::from(FLOW_COLUMNS.to_vec());
    let positions = schema
        .header_positions(&header, true)
        .expect("flow columns match the synthetic flows schema");
    let mut features = Vec::with_capacity(schema.num_features());
    for _ in 0..count {
        let record = csv::StringRecord::from(generator.next_flow().fields().to_vec());
        let label = schema
            .featurize_into(
                &RecordFields::CsvWithHeader {
                    record: &record,
                    header: &positions,
                },
                &mut features,
            )
            .expect("generated flows fit their schema")
            .expect("generated flows are labelled");
        let LabelClass::Class(class) = label.class else {
            unreachable!("the synthetic flows schema lists every generated label");
        };
        dataset
            .push_labelled(&features, class, &label.raw_label)
            .expect("the schema's feature count");
    }
    dataset
}

/// Returns a held-out dataset mixing every benign profile and attack family.
pub fn held_out_dataset(count: usize, seed: u64) -> Dataset {
    let mut dataset = Dataset::new(num_flow_features());
    let profiles = [
        BenignProfile::Office,
        BenignProfile::DataCenter,
        BenignProfile::DevShop,
    ];
    for (index, benign) in profiles.into_iter().enumerate() {
        let profile = OrgProfile {
            benign,
            ..OrgProfile::balanced()
        };
        let part = synthetic_dataset(
            profile,
            count / 3 + usize::from(index < count % 3),
            seed.wrapping_add(index as u64),
        );
        dataset.extend(&part).expect("same feature count");
    }
    dataset
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_is_deterministic_per_seed() {
        let first = FlowGenerator::new(OrgProfile::for_org(1), 9).flows(50);
        let second = FlowGenerator::new(OrgProfile::for_org(1), 9).flows(50);
        let other = FlowGenerator::new(OrgProfile::for_org(1), 10).flows(50);
        assert_eq!(first, second);
        assert_ne!(first, other);
    }

    #[test]
    fn organizations_see_different_attack_mixes() {
        let count_class = |org: usize, class: TrafficClass| {
            FlowGenerator::new(OrgProfile::for_org(org), 1)
                .flows(4000)
                .iter()
                .filter(|flow| flow.class == class)
                .count()
        };
        // Org 0 mostly sees port scans, org 1 mostly SYN floods.
        assert!(
            count_class(0, TrafficClass::PortScan) > 3 * count_class(1, TrafficClass::PortScan)
        );
        assert!(
            count_class(1, TrafficClass::SynFlood) > 3 * count_class(0, TrafficClass::SynFlood)
        );
    }

    #[test]
    fn features_are_finite_and_bounded() {
        let dataset = held_out_dataset(3000, 4);
        assert_eq!(dataset.len(), 3000);
        assert!(
            dataset
                .features()
                .iter()
                .all(|value| value.is_finite() && value.abs() <= 5.0)
        );
        let fraction = dataset.attack_fraction();
        assert!((0.2..0.4).contains(&fraction), "attack fraction {fraction}");
    }
}

#[cfg(test)]
mod file_tests {
    use super::*;
    use crate::ingest::{IngestOptions, load_dataset};

    #[test]
    fn written_csv_and_jsonl_load_back_through_the_schema_to_the_same_features() {
        let dir = tempfile::tempdir().unwrap();
        let flows = FlowGenerator::new(OrgProfile::for_org(2), 11).flows(300);
        let csv_path = dir.path().join("flows.csv");
        write_csv(std::fs::File::create(&csv_path).unwrap(), flows.clone()).unwrap();
        let jsonl_path = dir.path().join("flows.jsonl");
        write_jsonl(std::fs::File::create(&jsonl_path).unwrap(), flows).unwrap();
        let schema = synthetic_flows_schema();
        let (from_csv, csv_report) =
            load_dataset(&csv_path, &schema, &IngestOptions::default()).unwrap();
        let (from_jsonl, jsonl_report) =
            load_dataset(&jsonl_path, &schema, &IngestOptions::default()).unwrap();
        assert_eq!(
            (csv_report.skipped.total(), jsonl_report.skipped.total()),
            (0, 0)
        );
        assert_eq!(from_csv.len(), 300);
        assert_eq!(from_csv.labels(), from_jsonl.labels());
        for (a, b) in from_csv.features().iter().zip(from_jsonl.features()) {
            assert!((a - b).abs() < 1e-5);
        }
        let in_memory = synthetic_dataset(OrgProfile::for_org(2), 300, 11);
        assert_eq!(in_memory.classes(), from_csv.classes());
    }
}
