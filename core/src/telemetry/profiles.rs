//! What one organization's telemetry looks like: its benign traffic and its
//! attack mix.

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
    /// Relative frequency of each of [`TrafficClass::ATTACKS`](super::TrafficClass::ATTACKS).
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
