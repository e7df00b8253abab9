//! The flow record: one network flow as a sensor reports it, its traffic
//! class, and its fields as text or JSON.

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
