//! Network-flow telemetry: the flow record, a synthetic generator with benign
//! profiles and attack families that differ per organization (non-IID), and the
//! fixed featurization of flow records into model inputs.
//!
//! The generator is deterministic for a seed, so tests and demos are
//! reproducible; organizations get different benign profiles and attack mixes,
//! which is what makes federated learning both useful and hard.
//!
//! - `community_id`: the Community ID v1 flow hash that joins flows across sensors.
//! - `flow`: the flow record, its traffic class, its fields as text or JSON.
//! - `profiles`: an organization's benign traffic and attack mix.
//! - `generator`: the deterministic generator of synthetic flows.
//! - `datasets`: the synthetic flows schema and labelled datasets featurized through it.
//! - `files`: writing flows as csv or JSON-lines files.

mod community_id;
mod datasets;
mod files;
mod flow;
mod generator;
mod profiles;

pub use community_id::{FlowTuple, community_id_v1, community_id_v1_digest};
pub use datasets::{
    SYNTHETIC_FLOWS_SCHEMA_TOML, held_out_dataset, num_flow_features, synthetic_dataset,
    synthetic_flows_schema,
};
pub use files::{write_csv, write_jsonl};
pub use flow::{ConnState, FLOW_COLUMNS, FlowRecord, Protocol, TrafficClass};
pub use generator::FlowGenerator;
pub use profiles::{BenignProfile, OrgProfile};
