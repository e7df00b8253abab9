//! The noise in an unmasked secure-aggregation sum has the planned variance:
//! eight participants encode a zero update under a plan with distributed DP
//! (the coordinator's calibration for an organization-level ε), mask it, and
//! the coordinator unmasks the sum. With no signal, the sum is the noise:
//! its per-coordinate variance must be n·σ² (integer units) within five
//! standard errors of the variance estimate, and after decoding, n·σ²/γ²
//! divided by n² (the average), as the DP-SGD noise check does for its
//! Gaussian. A sum without noise must not pass.

use std::collections::{BTreeMap, BTreeSet};

use fedshield_core::ParticipantId;
use fedshield_core::plan::TrainingPlan;
use fedshield_core::privacy::distributed::SecAggEncoding;
use fedshield_core::privacy::{SecureAggregationRequest, secure_aggregation_plan};
use fedshield_core::secagg::{
    ClientRound, RoundSetup, ServerRound, recommended_degree, recommended_threshold,
};
use rand::SeedableRng;
use rand::rngs::ChaCha20Rng;

const NUM_PARTICIPANTS: usize = 8;
const NUM_PARAMS: usize = 40_000;

/// Returns the sum the coordinator unmasks when every participant sends
/// `encoding` of a zero update, centered into i64.
fn unmasked_sum_of_zero_updates(encoding: &SecAggEncoding, seed: u8) -> Vec<i64> {
    let mut rng = ChaCha20Rng::from_seed([seed; 32]);
    let vector_len = encoding.padded_dim();
    let degree = recommended_degree(NUM_PARTICIPANTS);
    let setup = RoundSetup {
        round_id: 7,
        degree,
        threshold: recommended_threshold(degree),
        vector_len,
    };
    let members: BTreeSet<ParticipantId> = (0..NUM_PARTICIPANTS)
        .map(|index| ParticipantId::new(format!("org-{index}")).unwrap())
        .collect();
    let mut server = ServerRound::new(setup.clone(), members.clone(), [seed; 32]);
    let mut clients: BTreeMap<ParticipantId, ClientRound> = BTreeMap::new();
    for member in &members {
        let client = ClientRound::new(member.clone(), setup.clone(), &mut rng);
        server.advertise(member, client.public_keys()).unwrap();
        clients.insert(member.clone(), client);
    }
    let roster = server.close_advertising().unwrap();
    for (member, client) in &mut clients {
        let shares = client.share_keys(&roster, &mut rng).unwrap();
        server.submit_shares(member, shares).unwrap();
    }
    server.close_sharing().unwrap();
    let zero = vec![0.0f32; NUM_PARAMS];
    for (member, client) in &mut clients {
        let mut values = encoding.encode(&zero, &mut rng).unwrap().values;
        client
            .mask_input(server.shares_for(member).unwrap(), &mut values)
            .unwrap();
        server.add_masked_input(member, &values).unwrap();
    }
    let request = server.close_masking().unwrap();
    for (member, client) in &mut clients {
        let shares = client
            .unmask_shares(&request.survivors, &request.dropped)
            .unwrap();
        server.reveal(member, shares).unwrap();
    }
    let unmasked = server.unmask().unwrap();
    assert_eq!(unmasked.survivors.len(), NUM_PARTICIPANTS);
    unmasked
        .sum
        .iter()
        .map(|value| i64::from(*value as i32))
        .collect()
}

/// Returns the plan the coordinator calibrates for an organization-level
/// ε = 8 at δ = 1e-5 over ten rounds of eight participants.
fn calibrated_plan() -> TrainingPlan {
    secure_aggregation_plan(
        TrainingPlan::new(),
        SecureAggregationRequest {
            clip_norm: 100.0,
            org_target: Some((8.0, 1.0, 1e-5)),
            num_rounds: 10,
            max_participants: NUM_PARTICIPANTS as u32,
            min_participants: NUM_PARTICIPANTS as u32,
            num_params: NUM_PARAMS,
        },
    )
    .unwrap()
}

fn variance(values: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let count = values.clone().count() as f64;
    let mean = values.clone().sum::<f64>() / count;
    let variance = values.map(|value| (value - mean).powi(2)).sum::<f64>() / (count - 1.0);
    (mean, variance)
}

#[test]
fn the_unmasked_sum_carries_the_planned_noise_variance() {
    let plan = calibrated_plan();
    let secure = plan.secure_aggregation.clone().unwrap();
    let distributed = secure.distributed_dp.clone().unwrap();
    let encoding = SecAggEncoding::for_plan(&secure, NUM_PARAMS, [3; 32]).unwrap();
    let sum = unmasked_sum_of_zero_updates(&encoding, 11);
    let dim = sum.len() as f64;
    // Integer units: n·σ², each participant's noise independent.
    let planned = NUM_PARTICIPANTS as f64 * distributed.noise_variance;
    let (mean, measured) = variance(sum.iter().map(|value| *value as f64));
    let standard_error = planned * (2.0 / (dim - 1.0)).sqrt();
    println!(
        "planned variance {planned:e}, measured {measured:e} (mean {mean:.1}), standard error {standard_error:e}"
    );
    assert!(
        (measured - planned).abs() <= 5.0 * standard_error,
        "measured noise variance {measured:e}, planned {planned:e} ± {standard_error:e}"
    );
    assert!(mean.abs() <= 5.0 * (planned / dim).sqrt());
    // Decoded: the average's noise per parameter, n·σ²/(γ²·n²), which the
    // orthogonal inverse rotation keeps.
    let wrapped: Vec<u32> = sum.iter().map(|value| *value as u32).collect();
    let average = encoding.decode_average(&wrapped, NUM_PARTICIPANTS).unwrap();
    let planned_average =
        planned / (secure.scale * secure.scale * (NUM_PARTICIPANTS * NUM_PARTICIPANTS) as f64);
    let (_, measured_average) = variance(average.iter().map(|value| f64::from(*value)));
    let average_error = planned_average * (2.0 / (NUM_PARAMS as f64 - 1.0)).sqrt();
    assert!(
        (measured_average - planned_average).abs() <= 5.0 * average_error + 1e-12,
        "decoded noise variance {measured_average:e}, planned {planned_average:e}"
    );
}

#[test]
fn a_sum_without_noise_fails_the_variance_check() {
    let plan = calibrated_plan();
    let secure = plan.secure_aggregation.clone().unwrap();
    let planned = NUM_PARTICIPANTS as f64 * secure.distributed_dp.clone().unwrap().noise_variance;
    let mut silent = SecAggEncoding::for_plan(&secure, NUM_PARAMS, [3; 32]).unwrap();
    silent.noise = None;
    let sum = unmasked_sum_of_zero_updates(&silent, 12);
    let (_, measured) = variance(sum.iter().map(|value| *value as f64));
    let standard_error = planned * (2.0 / (sum.len() as f64 - 1.0)).sqrt();
    assert!(
        (measured - planned).abs() > 5.0 * standard_error,
        "a noiseless sum ({measured:e}) must not look like the planned noise ({planned:e})"
    );
}
