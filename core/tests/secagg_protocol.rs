//! End-to-end runs of the SecAgg+ protocol in memory: every phase of the
//! participants and the coordinator, with dropouts at each phase, the
//! refusals of both sides, and what a curious coordinator ends up holding.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use fedshield_core::ParticipantId;
use fedshield_core::secagg::shamir::combine;
use fedshield_core::secagg::{
    ClientRound, MaskSign, Phase, PublicKeys, RevealedShare, Roster, RoundSetup, SecAggError,
    ServerRound, ShareKind, UnmaskRequest, apply_mask, recommended_degree, recommended_threshold,
};
use rand::rngs::ChaCha20Rng;
use rand::{Rng, SeedableRng};
use x25519_dalek::{PublicKey, StaticSecret};

fn participant(index: usize) -> ParticipantId {
    ParticipantId::new(format!("org-{index:02}")).expect("valid test id")
}

/// One round with every participant and the coordinator in memory.
struct Harness {
    server: ServerRound,
    clients: BTreeMap<ParticipantId, ClientRound>,
    inputs: BTreeMap<ParticipantId, Vec<u32>>,
    /// Participants still taking part (not dropped yet).
    alive: BTreeSet<ParticipantId>,
    rng: ChaCha20Rng,
}

impl Harness {
    /// Returns a round where `num_members` participants with random inputs
    /// have advertised their keys.
    fn advertised(
        num_members: usize,
        degree: usize,
        threshold: usize,
        vector_len: usize,
        seed: u8,
    ) -> Self {
        let mut rng = ChaCha20Rng::from_seed([seed; 32]);
        let setup = RoundSetup {
            round_id: 42,
            degree,
            threshold,
            vector_len,
        };
        let members: BTreeSet<ParticipantId> = (0..num_members).map(participant).collect();
        let mut graph_seed = [0u8; 32];
        rng.fill_bytes(&mut graph_seed);
        let mut server = ServerRound::new(setup.clone(), members.clone(), graph_seed);
        let mut clients = BTreeMap::new();
        let mut inputs = BTreeMap::new();
        for member in &members {
            let client = ClientRound::new(member.clone(), setup.clone(), &mut rng);
            server
                .advertise(member, client.public_keys())
                .expect("advertising is accepted");
            let input: Vec<u32> = (0..vector_len).map(|_| rng.next_u32()).collect();
            inputs.insert(member.clone(), input);
            clients.insert(member.clone(), client);
        }
        Harness {
            server,
            clients,
            inputs,
            alive: members,
            rng,
        }
    }

    fn drop_out(&mut self, dropping: &[ParticipantId]) {
        for member in dropping {
            self.alive.remove(member);
        }
    }

    /// Closes advertising; the alive participants not in `dropping` send
    /// their shares; closes sharing.
    fn share(&mut self, dropping: &[ParticipantId]) -> Roster {
        let roster = self
            .server
            .close_advertising()
            .expect("enough members advertised");
        self.drop_out(dropping);
        for member in &self.alive {
            let client = self.clients.get_mut(member).expect("client exists");
            let shares = client
                .share_keys(&roster, &mut self.rng)
                .expect("sharing works");
            self.server
                .submit_shares(member, shares)
                .expect("shares are accepted");
        }
        self.server.close_sharing().expect("enough members shared");
        roster
    }

    /// Closes advertising, lets `choose_dropouts` pick who drops from the
    /// graph, then runs the sharing phase without them.
    fn share_after(
        &mut self,
        choose_dropouts: impl FnOnce(&ServerRound) -> Vec<ParticipantId>,
    ) -> Roster {
        let roster = self
            .server
            .close_advertising()
            .expect("enough members advertised");
        let dropping = choose_dropouts(&self.server);
        self.drop_out(&dropping);
        self.share_alive(&roster);
        roster
    }

    fn share_alive(&mut self, roster: &Roster) {
        for member in &self.alive {
            let client = self.clients.get_mut(member).expect("client exists");
            let shares = client
                .share_keys(roster, &mut self.rng)
                .expect("sharing works");
            self.server
                .submit_shares(member, shares)
                .expect("shares are accepted");
        }
        self.server.close_sharing().expect("enough members shared");
    }

    /// The alive participants not in `dropping` mask their inputs and send
    /// them; closes masking.
    fn mask(&mut self, dropping: &[ParticipantId]) -> UnmaskRequest {
        self.drop_out(dropping);
        // Members the coordinator left out of U2 take no further part.
        let sharers = self.server.sharers();
        self.alive.retain(|member| sharers.contains(member));
        for member in &self.alive {
            let shares = self.server.shares_for(member).expect("member shared");
            let mut masked = self.inputs[member].clone();
            let client = self.clients.get_mut(member).expect("client exists");
            client
                .mask_input(shares, &mut masked)
                .expect("masking works");
            self.server
                .add_masked_input(member, &masked)
                .expect("masked input is accepted");
        }
        self.server.close_masking().expect("enough members masked")
    }

    /// The alive survivors not in `dropping` reveal their shares.
    fn reveal(&mut self, request: &UnmaskRequest, dropping: &[ParticipantId]) {
        self.drop_out(dropping);
        for member in &self.alive {
            let client = self.clients.get_mut(member).expect("client exists");
            let shares = client
                .unmask_shares(&request.survivors, &request.dropped)
                .expect("unmask request is answered");
            self.server
                .reveal(member, shares)
                .expect("shares are accepted");
        }
    }

    fn expected_sum(&self, survivors: &BTreeSet<ParticipantId>) -> Vec<u32> {
        let vector_len = self.inputs.values().next().map_or(0, Vec::len);
        let mut sum = vec![0u32; vector_len];
        for survivor in survivors {
            for (total, value) in sum.iter_mut().zip(&self.inputs[survivor]) {
                *total = total.wrapping_add(*value);
            }
        }
        sum
    }
}

/// Unmasks the round and checks that the result is exactly the wrapping sum
/// of the survivors' inputs.
fn unmask_and_check_sum(harness: Harness, request: &UnmaskRequest) {
    let expected = harness.expected_sum(&request.survivors);
    assert!(harness.server.missing_for_unmask().is_empty());
    let result = harness.server.unmask().expect("unmasking works");
    assert_eq!(result.survivors, request.survivors);
    assert!(
        result.sum == expected,
        "the unmasked sum differs from the survivors' sum"
    );
}

#[test]
fn a_complete_graph_round_of_eight_gives_the_exact_sum() {
    let mut harness = Harness::advertised(8, 7, recommended_threshold(7), 1000, 1);
    harness.share(&[]);
    let request = harness.mask(&[]);
    assert_eq!(request.survivors.len(), 8);
    assert!(request.dropped.is_empty());
    harness.reveal(&request, &[]);
    let counts = harness.server.revealed_share_counts();
    // Every survivor's self-mask seed was revealed by its 7 neighbours.
    assert!(
        counts
            .iter()
            .all(|((_, kind), &count)| *kind == ShareKind::SelfMask && count == 7)
    );
    unmask_and_check_sum(harness, &request);
}

#[test]
fn a_sparse_graph_round_of_forty_gives_the_exact_sum() {
    let degree = recommended_degree(40);
    assert!(degree < 39, "40 members use the sparse graph");
    let mut harness = Harness::advertised(40, degree, recommended_threshold(degree), 1000, 2);
    harness.share(&[]);
    assert_eq!(
        harness
            .server
            .neighbours(&participant(0))
            .map(BTreeSet::len),
        Some(degree)
    );
    let request = harness.mask(&[]);
    harness.reveal(&request, &[]);
    unmask_and_check_sum(harness, &request);
}

#[test]
fn a_sparse_graph_round_survives_dropouts_in_every_phase() {
    let degree = recommended_degree(40);
    let mut harness = Harness::advertised(40, degree, recommended_threshold(degree), 1000, 3);
    harness.share(&[participant(1), participant(2)]);
    let request = harness.mask(&[participant(3), participant(4)]);
    assert_eq!(request.dropped.len(), 2);
    harness.reveal(&request, &[participant(5), participant(6)]);
    unmask_and_check_sum(harness, &request);
}

#[test]
fn dropouts_after_masking_up_to_the_tolerated_number_keep_the_sum_exact() {
    // Complete graph of 8, threshold 4: a survivor that reveals has 7
    // neighbours, so 7 - 4 = 3 others may stay silent.
    let threshold = recommended_threshold(7);
    let num_tolerated = 7 - threshold;
    let silent: Vec<ParticipantId> = (0..num_tolerated).map(participant).collect();
    let mut harness = Harness::advertised(8, 7, threshold, 1000, 4);
    harness.share(&[]);
    let request = harness.mask(&[]);
    harness.reveal(&request, &silent);
    unmask_and_check_sum(harness, &request);
}

#[test]
fn one_dropout_more_than_tolerated_after_masking_makes_unmask_refuse() {
    let threshold = recommended_threshold(7);
    let silent: Vec<ParticipantId> = (0..=7 - threshold).map(participant).collect();
    let mut harness = Harness::advertised(8, 7, threshold, 1000, 5);
    harness.share(&[]);
    let request = harness.mask(&[]);
    harness.reveal(&request, &silent);
    let missing = harness.server.missing_for_unmask();
    // The revealers have one revealing neighbour fewer than the silent ones.
    let revealers: Vec<ParticipantId> = (8 - threshold..8).map(participant).collect();
    assert_eq!(missing, revealers);
    let error = harness.server.unmask().expect_err("too few shares");
    assert!(
        matches!(&error, SecAggError::TooFewShares { owner, kind: ShareKind::SelfMask, num_shares: 3, threshold: 4 } if *owner == revealers[0]),
        "{error}"
    );
    assert!(error.to_string().contains("org-04"), "{error}");
}

#[test]
fn dropouts_after_sharing_have_their_pairwise_masks_removed_through_their_mask_keys() {
    let threshold = recommended_threshold(7);
    let mut harness = Harness::advertised(8, 7, threshold, 1000, 6);
    let roster = harness.share(&[]);
    let dropped = [participant(2), participant(5)];
    let request = harness.mask(&dropped);
    harness.reveal(&request, &[]);
    let counts = harness.server.revealed_share_counts();
    for member in &dropped {
        // Its 7 neighbours minus the other dropped member reveal.
        assert_eq!(counts.get(&(member.clone(), ShareKind::MaskKey)), Some(&6));
        assert_eq!(counts.get(&(member.clone(), ShareKind::SelfMask)), None);
        // The coordinator learns the dropped member's mask key, which is the
        // one it advertised.
        let shares = harness.server.revealed_shares(member, ShareKind::MaskKey);
        let key = combine(&shares, threshold).expect("enough shares");
        let public = PublicKey::from(&StaticSecret::from(key)).to_bytes();
        assert_eq!(public, roster.members[member].mask_public);
    }
    unmask_and_check_sum(harness, &request);
}

#[test]
fn members_that_never_share_are_left_out_of_the_sum() {
    let mut harness = Harness::advertised(8, 7, recommended_threshold(7), 1000, 7);
    harness.share(&[participant(0)]);
    let request = harness.mask(&[]);
    assert!(!request.survivors.contains(&participant(0)));
    assert!(!request.dropped.contains(&participant(0)));
    harness.reveal(&request, &[]);
    unmask_and_check_sum(harness, &request);
}

#[test]
fn a_member_whose_neighbours_mostly_dropped_before_sharing_is_left_out_and_the_round_completes() {
    // Degree 6, threshold 3: a member needs 3 of its 6 neighbours to hold its
    // shares. Four of one member's neighbours never share.
    let mut harness = Harness::advertised(30, 6, 3, 1000, 15);
    let roster = harness.share_after(|server| {
        let thin_member = participant(0);
        let neighbours = server
            .neighbours(&thin_member)
            .expect("advertising closed")
            .clone();
        neighbours.into_iter().take(4).collect()
    });
    assert_eq!(roster.members.len(), 30);
    let sharers = harness.server.sharers();
    assert!(!sharers.contains(&participant(0)));
    for member in &sharers {
        let neighbours = harness.server.neighbours(member).expect("in the graph");
        assert!(neighbours.intersection(&sharers).count() >= 3, "{member}");
    }
    let request = harness.mask(&[]);
    assert!(!request.survivors.contains(&participant(0)));
    assert!(!request.dropped.contains(&participant(0)));
    // Exclusions may cascade along the ring, but only locally.
    assert!(
        request.survivors.len() >= 20,
        "{} survivors",
        request.survivors.len()
    );
    harness.reveal(&request, &[]);
    unmask_and_check_sum(harness, &request);
}

#[test]
fn sharing_closes_only_when_every_member_keeps_threshold_neighbours() {
    // Complete graph of 4 with threshold 3: when one member does not share,
    // the other three have 2 sharing neighbours each, and nobody could be
    // unmasked.
    let mut harness = Harness::advertised(4, 3, 3, 10, 16);
    let roster = harness.server.close_advertising().expect("enough members");
    for index in 0..3 {
        let member = participant(index);
        let client = harness.clients.get_mut(&member).expect("client exists");
        let shares = client
            .share_keys(&roster, &mut harness.rng)
            .expect("sharing works");
        harness
            .server
            .submit_shares(&member, shares)
            .expect("accepted");
    }
    let error = harness.server.close_sharing().expect_err("too few");
    assert!(
        matches!(
            error,
            SecAggError::TooFewSurvivors {
                num_survivors: 0,
                threshold: 4,
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn a_round_with_a_vector_of_100k_elements_gives_the_exact_sum() {
    let mut harness = Harness::advertised(5, 4, recommended_threshold(4), 100_000, 8);
    harness.share(&[]);
    let request = harness.mask(&[participant(4)]);
    harness.reveal(&request, &[]);
    unmask_and_check_sum(harness, &request);
}

/// Returns the chi-square statistic of `counts` against the uniform law.
fn chi_square(counts: &[u64; 256]) -> f64 {
    let total: u64 = counts.iter().sum();
    let expected = total as f64 / 256.0;
    counts
        .iter()
        .map(|&count| {
            let difference = count as f64 - expected;
            difference * difference / expected
        })
        .sum()
}

#[test]
fn a_masked_input_of_zeros_is_uniform_in_its_top_and_low_bytes() {
    let vector_len = 65_536;
    let mut harness = Harness::advertised(4, 3, recommended_threshold(3), vector_len, 9);
    harness.share(&[]);
    let member = participant(1);
    let shares = harness.server.shares_for(&member).expect("member shared");
    let mut masked = vec![0u32; vector_len];
    harness
        .clients
        .get_mut(&member)
        .expect("client exists")
        .mask_input(shares, &mut masked)
        .expect("masking works");
    let mut top_counts = [0u64; 256];
    let mut low_counts = [0u64; 256];
    for value in &masked {
        top_counts[usize::try_from(value >> 24).expect("fits")] += 1;
        low_counts[usize::try_from(value & 0xff).expect("fits")] += 1;
    }
    // 255 degrees of freedom: the 0.1% critical value is 330.5.
    let critical = 330.5;
    let top_statistic = chi_square(&top_counts);
    let low_statistic = chi_square(&low_counts);
    assert!(
        top_statistic < critical,
        "top byte chi-square {top_statistic}"
    );
    assert!(
        low_statistic < critical,
        "low byte chi-square {low_statistic}"
    );
    // A mask that failed to apply would leave zeros: the statistic would be huge.
    let mut unmasked_counts = [0u64; 256];
    unmasked_counts[0] = u64::try_from(vector_len).expect("fits");
    assert!(chi_square(&unmasked_counts) > critical);
}

#[test]
fn the_coordinator_cannot_reconstruct_a_survivors_mask_key() {
    let threshold = recommended_threshold(7);
    let mut harness = Harness::advertised(8, 7, threshold, 1000, 10);
    let roster = harness.share(&[]);
    let request = harness.mask(&[participant(7)]);
    harness.reveal(&request, &[participant(6)]);
    let counts = harness.server.revealed_share_counts();
    for survivor in &request.survivors {
        assert_eq!(counts.get(&(survivor.clone(), ShareKind::MaskKey)), None);
        let mask_key_shares = harness.server.revealed_shares(survivor, ShareKind::MaskKey);
        assert!(mask_key_shares.len() < threshold);
        assert!(combine(&mask_key_shares, threshold).is_err());
        // Combining the self-mask shares it does hold gives b, not the key.
        let self_mask_shares = harness
            .server
            .revealed_shares(survivor, ShareKind::SelfMask);
        assert!(self_mask_shares.len() >= threshold);
        let guess = combine(&self_mask_shares, threshold).expect("enough shares");
        let public = PublicKey::from(&StaticSecret::from(guess)).to_bytes();
        assert_ne!(public, roster.members[survivor].mask_public);
    }
    // And the dropped member's self-mask was never revealed.
    assert_eq!(counts.get(&(participant(7), ShareKind::SelfMask)), None);
    unmask_and_check_sum(harness, &request);
}

#[test]
fn a_client_refuses_overlapping_sets_a_second_answer_and_non_survivorship() {
    let mut harness = Harness::advertised(5, 4, 3, 100, 11);
    harness.share(&[]);
    let request = harness.mask(&[]);
    let member = participant(0);
    let client = harness.clients.get_mut(&member).expect("client exists");
    let mut dropped = request.dropped.clone();
    dropped.insert(participant(3));
    let overlapping = client.unmask_shares(&request.survivors, &dropped);
    assert!(matches!(
        overlapping,
        Err(SecAggError::BothShareKindsRequested { owner }) if owner == participant(3)
    ));
    let mut without_me = request.survivors.clone();
    without_me.remove(&member);
    assert!(matches!(
        client.unmask_shares(&without_me, &request.dropped),
        Err(SecAggError::UnknownParticipant { .. })
    ));
    let too_few: BTreeSet<ParticipantId> = [participant(0), participant(1)].into();
    assert!(matches!(
        client.unmask_shares(&too_few, &BTreeSet::new()),
        Err(SecAggError::TooFewSurvivors { .. })
    ));
    // The refusals left the round answerable; it answers once.
    client
        .unmask_shares(&request.survivors, &request.dropped)
        .expect("a valid request is answered");
    assert!(matches!(
        client.unmask_shares(&request.survivors, &request.dropped),
        Err(SecAggError::WrongPhase {
            expected: Phase::Masking,
            actual: Phase::Finished
        })
    ));
}

#[test]
fn a_client_refuses_shares_not_addressed_to_it_and_tampered_ones() {
    let mut harness = Harness::advertised(5, 4, 3, 100, 12);
    harness.share(&[]);
    let me = participant(0);
    let other = participant(1);
    let my_shares = harness.server.shares_for(&me).expect("member shared");
    let other_shares = harness.server.shares_for(&other).expect("member shared");
    let client = harness.clients.get_mut(&me).expect("client exists");
    let mut input = vec![7u32; 100];

    let misaddressed = other_shares.clone();
    assert!(matches!(
        client.mask_input(misaddressed, &mut input),
        Err(SecAggError::Malformed(_))
    ));
    // Readdressing another member's share does not make it decrypt.
    let mut readdressed = my_shares.clone();
    let target = readdressed
        .iter_mut()
        .find(|share| share.from == participant(2))
        .expect("complete graph");
    let stolen = other_shares
        .iter()
        .find(|share| share.from == participant(2))
        .expect("complete graph");
    target.ciphertext = stolen.ciphertext.clone();
    assert!(matches!(
        client.mask_input(readdressed, &mut input),
        Err(SecAggError::Decryption { .. })
    ));
    let mut tampered = my_shares.clone();
    tampered[1].ciphertext[5] ^= 0x40;
    let tampered_from = tampered[1].from.clone();
    assert!(matches!(
        client.mask_input(tampered, &mut input),
        Err(SecAggError::Decryption { from }) if from == tampered_from
    ));
    let mut duplicated = my_shares.clone();
    duplicated.push(my_shares[0].clone());
    assert!(matches!(
        client.mask_input(duplicated, &mut input),
        Err(SecAggError::Duplicate { .. })
    ));
    let too_few = my_shares[..2].to_vec();
    assert!(matches!(
        client.mask_input(too_few, &mut input),
        Err(SecAggError::TooFewSurvivors { .. })
    ));
    assert!(
        input.iter().all(|&value| value == 7),
        "a refused call left the input alone"
    );
    client
        .mask_input(my_shares, &mut input)
        .expect("the genuine shares work");
    assert!(matches!(
        client.mask_input(Vec::new(), &mut input),
        Err(SecAggError::WrongPhase {
            expected: Phase::Sharing,
            ..
        })
    ));
}

#[test]
fn a_client_refuses_a_roster_without_it_or_with_other_keys() {
    let mut rng = ChaCha20Rng::from_seed([13; 32]);
    let setup = RoundSetup {
        round_id: 1,
        degree: 3,
        threshold: 2,
        vector_len: 10,
    };
    let mut clients: Vec<ClientRound> = (0..4)
        .map(|index| ClientRound::new(participant(index), setup.clone(), &mut rng))
        .collect();
    let members: BTreeMap<ParticipantId, PublicKeys> = clients
        .iter()
        .map(|client| (client.participant().clone(), client.public_keys()))
        .collect();
    let mut without_first = members.clone();
    without_first.remove(&participant(0));
    let roster_without = Roster {
        graph_seed: [0; 32],
        members: without_first,
    };
    assert!(matches!(
        clients[0].share_keys(&roster_without, &mut rng),
        Err(SecAggError::UnknownParticipant { .. })
    ));
    let mut swapped = members.clone();
    let second_keys = members[&participant(1)].clone();
    swapped.insert(participant(0), second_keys);
    let roster_swapped = Roster {
        graph_seed: [0; 32],
        members: swapped,
    };
    assert!(matches!(
        clients[0].share_keys(&roster_swapped, &mut rng),
        Err(SecAggError::Malformed(_))
    ));
    let roster = Roster {
        graph_seed: [0; 32],
        members,
    };
    let shares = clients[0]
        .share_keys(&roster, &mut rng)
        .expect("sharing works");
    assert_eq!(shares.len(), 3);
    assert!(matches!(
        clients[0].share_keys(&roster, &mut rng),
        Err(SecAggError::WrongPhase {
            expected: Phase::Advertising,
            actual: Phase::Sharing
        })
    ));
}

#[test]
fn the_coordinator_refuses_strangers_duplicates_and_wrong_phases() {
    let mut rng = ChaCha20Rng::from_seed([14; 32]);
    let setup = RoundSetup {
        round_id: 3,
        degree: 3,
        threshold: 2,
        vector_len: 10,
    };
    let selected: BTreeSet<ParticipantId> = (0..4).map(participant).collect();
    let mut server = ServerRound::new(setup.clone(), selected, [9; 32]);
    let mut clients: BTreeMap<ParticipantId, ClientRound> = (0..4)
        .map(|index| {
            (
                participant(index),
                ClientRound::new(participant(index), setup.clone(), &mut rng),
            )
        })
        .collect();
    let stranger = ClientRound::new(participant(9), setup.clone(), &mut rng);
    assert!(matches!(
        server.advertise(&participant(9), stranger.public_keys()),
        Err(SecAggError::UnknownParticipant { .. })
    ));
    assert!(matches!(
        server.submit_shares(&participant(0), Vec::new()),
        Err(SecAggError::WrongPhase {
            expected: Phase::Sharing,
            actual: Phase::Advertising
        })
    ));
    server
        .advertise(&participant(0), clients[&participant(0)].public_keys())
        .expect("accepted");
    assert!(matches!(
        server.advertise(&participant(0), clients[&participant(0)].public_keys()),
        Err(SecAggError::Duplicate {
            phase: Phase::Advertising,
            ..
        })
    ));
    // A key already used by another member is refused.
    assert!(matches!(
        server.advertise(&participant(1), clients[&participant(0)].public_keys()),
        Err(SecAggError::Malformed(_))
    ));
    let low_order = PublicKeys {
        cipher_public: [0; 32],
        mask_public: clients[&participant(1)].public_keys().mask_public,
    };
    assert!(matches!(
        server.advertise(&participant(1), low_order),
        Err(SecAggError::LowOrderKey { .. })
    ));
    server
        .advertise(&participant(1), clients[&participant(1)].public_keys())
        .expect("accepted");
    assert!(matches!(
        server.close_advertising(),
        Err(SecAggError::TooFewSurvivors { .. })
    ));
    for index in 2..4 {
        server
            .advertise(
                &participant(index),
                clients[&participant(index)].public_keys(),
            )
            .expect("accepted");
    }
    let roster = server.close_advertising().expect("enough members");
    let mut all_shares = BTreeMap::new();
    for (member, client) in &mut clients {
        all_shares.insert(
            member.clone(),
            client.share_keys(&roster, &mut rng).expect("sharing works"),
        );
    }
    let first_shares = all_shares[&participant(0)].clone();
    assert!(matches!(
        server.submit_shares(&participant(0), first_shares[..2].to_vec()),
        Err(SecAggError::Malformed(_))
    ));
    let mut oversized = first_shares.clone();
    oversized[0].ciphertext.push(0);
    assert!(matches!(
        server.submit_shares(&participant(0), oversized),
        Err(SecAggError::Malformed(_))
    ));
    assert!(matches!(
        server.submit_shares(&participant(1), first_shares.clone()),
        Err(SecAggError::Malformed(_))
    ));
    for (member, shares) in &all_shares {
        server
            .submit_shares(member, shares.clone())
            .expect("accepted");
    }
    assert!(matches!(
        server.submit_shares(&participant(0), first_shares),
        Err(SecAggError::Duplicate {
            phase: Phase::Sharing,
            ..
        })
    ));
    server.close_sharing().expect("enough sharers");
    assert!(matches!(
        server.shares_for(&participant(9)),
        Err(SecAggError::UnknownParticipant { .. })
    ));
    for (member, client) in &mut clients {
        let mut input = vec![1u32; 10];
        client
            .mask_input(server.shares_for(member).expect("shared"), &mut input)
            .expect("masking works");
        if *member != participant(3) {
            server.add_masked_input(member, &input).expect("accepted");
        }
    }
    assert!(matches!(
        server.add_masked_input(&participant(0), &[0; 10]),
        Err(SecAggError::Duplicate {
            phase: Phase::Masking,
            ..
        })
    ));
    assert!(matches!(
        server.add_masked_input(&participant(3), &[0; 9]),
        Err(SecAggError::Malformed(_))
    ));
    let request = server.close_masking().expect("enough survivors");
    assert!(matches!(
        server.close_masking(),
        Err(SecAggError::WrongPhase {
            expected: Phase::Masking,
            actual: Phase::Unmasking
        })
    ));
    assert!(request.dropped.contains(&participant(3)));
    let mut revealed: BTreeMap<ParticipantId, Vec<RevealedShare>> = BTreeMap::new();
    for member in &request.survivors {
        let client = clients.get_mut(member).expect("client exists");
        revealed.insert(
            member.clone(),
            client
                .unmask_shares(&request.survivors, &request.dropped)
                .expect("answered"),
        );
    }
    // A share of the other kind than requested is refused: a survivor's
    // mask key share would unmask its input.
    let mut wrong_kind = revealed[&participant(0)].clone();
    let survivor_share = wrong_kind
        .iter_mut()
        .find(|share| share.owner == participant(1))
        .expect("neighbour share");
    survivor_share.kind = ShareKind::MaskKey;
    assert!(matches!(
        server.reveal(&participant(0), wrong_kind),
        Err(SecAggError::WrongShareKind {
            expected: ShareKind::SelfMask,
            actual: ShareKind::MaskKey,
            ..
        })
    ));
    assert!(matches!(
        server.reveal(&participant(3), Vec::new()),
        Err(SecAggError::UnknownParticipant { .. })
    ));
    for (member, shares) in &revealed {
        server.reveal(member, shares.clone()).expect("accepted");
    }
    assert!(matches!(
        server.reveal(&participant(0), revealed[&participant(0)].clone()),
        Err(SecAggError::Duplicate {
            phase: Phase::Unmasking,
            ..
        })
    ));
    let result = server.unmask().expect("unmasking works");
    assert_eq!(result.sum, vec![3u32; 10]);
}

#[test]
#[ignore = "timing: run with --release -- --ignored"]
fn mask_expansion_of_one_million_words_takes_a_few_milliseconds() {
    let mut vector = vec![0u32; 1_000_000];
    apply_mask(&mut vector, &[1; 32], MaskSign::Add);
    let num_runs = 20;
    let started = Instant::now();
    for run in 0..num_runs {
        apply_mask(&mut vector, &[run; 32], MaskSign::Add);
    }
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0 / f64::from(num_runs);
    println!("apply_mask of 1,000,000 u32: {elapsed_ms:.2} ms per call");
}
