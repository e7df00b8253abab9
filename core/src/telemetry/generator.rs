//! The deterministic generator of synthetic flows: benign traffic of an
//! organization's profile and the attack families of its mix.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, LogNormal, Normal};

use super::{BenignProfile, ConnState, FlowRecord, OrgProfile, Protocol, TrafficClass};

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
}
