//! The neighbour graph of a round: who masks with whom and who holds whose
//! shares.
//!
//! With the complete graph every participant masks with every other one
//! (Bonawitz et al. 2017). SecAgg+ (Bell et al. 2020, §3) replaces it by a
//! random sparse graph of degree k = O(log n): each participant then does
//! O(log n) key agreements and holds O(log n) shares, and the protocol stays
//! secure and correct with high probability as long as the graph's
//! neighbourhoods are not dominated by colluders or dropouts. Here the graph
//! is the Harary graph H(k, n) (a ring where everyone links to its k/2 nearest
//! members on each side) drawn over a random relabelling of the members, as
//! in Bell et al.'s construction and in Flower's SecAgg+.

use std::collections::{BTreeMap, BTreeSet};

use rand::rngs::ChaCha20Rng;
use rand::{Rng, SeedableRng};

use crate::ParticipantId;

/// Members up to which [`recommended_degree`] gives the complete graph.
pub const COMPLETE_GRAPH_MAX_MEMBERS: usize = 16;

/// Returns the neighbourhood of every member: symmetric, without self loops.
///
/// `degree >= n - 1` gives the complete graph. Otherwise the members (sorted)
/// are shuffled by a Fisher-Yates shuffle driven by ChaCha20(`seed`) onto a
/// ring, and each is linked to its ⌈degree/2⌉ successors and predecessors
/// (an odd degree rounds up to the next even one). Every member then has
/// exactly 2·⌈degree/2⌉ neighbours, or n - 1 when that is not smaller.
///
/// The coordinator draws `seed` after the members are known and sends it with
/// the roster, so that participants and coordinator compute the same graph.
pub fn neighbourhoods(
    members: &BTreeSet<ParticipantId>,
    degree: usize,
    seed: &[u8; 32],
) -> BTreeMap<ParticipantId, BTreeSet<ParticipantId>> {
    let num_members = members.len();
    let half_degree = degree.div_ceil(2);
    if num_members == 0 || 2 * half_degree >= num_members.saturating_sub(1) {
        return members
            .iter()
            .map(|member| {
                let others = members.iter().filter(|other| *other != member).cloned();
                (member.clone(), others.collect())
            })
            .collect();
    }
    let mut ring: Vec<&ParticipantId> = members.iter().collect();
    let mut rng = ChaCha20Rng::from_seed(*seed);
    for index in (1..num_members).rev() {
        let other = uniform_below(&mut rng, index + 1);
        ring.swap(index, other);
    }
    let mut graph: BTreeMap<ParticipantId, BTreeSet<ParticipantId>> = BTreeMap::new();
    for (position, member) in ring.iter().enumerate() {
        let neighbours = graph.entry((*member).clone()).or_default();
        for offset in 1..=half_degree {
            neighbours.insert(ring[(position + offset) % num_members].clone());
            neighbours.insert(ring[(position + num_members - offset) % num_members].clone());
        }
    }
    graph
}

/// Returns a uniform integer in `0..bound` by rejection sampling of 32-bit
/// words, so that every platform and version draws the same graph.
fn uniform_below(rng: &mut ChaCha20Rng, bound: usize) -> usize {
    let bound_u64 = u64::try_from(bound).expect("usize fits in u64");
    let range = 1u64 << 32;
    // Largest multiple of bound that fits in 32 bits: values at or above it are redrawn.
    let limit = range - range % bound_u64;
    loop {
        let value = u64::from(rng.next_u32());
        if value < limit {
            return usize::try_from(value % bound_u64).expect("below bound");
        }
    }
}

/// Returns the neighbourhood size recommended for `num_members` members.
///
/// Up to [`COMPLETE_GRAPH_MAX_MEMBERS`] members the complete graph
/// (degree n - 1): the sparse graph saves little there and the complete graph
/// tolerates the most dropouts. Above, the smallest even k ≥ 3·⌈log2 n⌉,
/// capped at n - 1: e.g. 18 for 40 members, 30 for 1,000, 42 for 10,000.
/// Bell et al. (CCS 2020, Thm 3.6 and Table 2) prove that k = O(log n)
/// suffices and give concrete degrees that depend on the dropout rate, the
/// fraction of colluders and the security parameter; this is a heuristic in
/// that family for small federations with few dropouts, not their bound.
/// Callers with many dropouts or colluders should pick a larger degree.
pub fn recommended_degree(num_members: usize) -> usize {
    let complete_degree = num_members.saturating_sub(1);
    if num_members <= COMPLETE_GRAPH_MAX_MEMBERS {
        return complete_degree;
    }
    let ceil_log2 = usize::try_from(usize::BITS - (num_members - 1).leading_zeros())
        .expect("bit count fits in usize");
    let degree = 3 * ceil_log2;
    let even_degree = degree + degree % 2;
    even_degree.min(complete_degree)
}

/// Returns the Shamir threshold recommended for neighbourhoods of `degree`
/// members: ⌊degree/2⌋ + 1 = ⌈(degree+1)/2⌉, a strict majority of the
/// neighbourhood (at least 1).
///
/// A participant's self-mask seed and mask key can be reconstructed while at
/// least `threshold` of its neighbours reveal, so fewer than half of a
/// neighbourhood may drop (degree - threshold of them); any threshold - 1
/// colluding neighbours (with the coordinator) learn nothing about either
/// secret. Against a semi-honest coordinator, honest participants reveal only
/// one of the two secrets of anyone, so the majority is a margin, not a need:
/// it keeps two disjoint halves of a neighbourhood from each reconstructing a
/// different secret of the same participant.
pub fn recommended_threshold(degree: usize) -> usize {
    degree / 2 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(num_members: usize) -> BTreeSet<ParticipantId> {
        (0..num_members)
            .map(|index| ParticipantId::new(format!("org-{index:03}")).expect("valid id"))
            .collect()
    }

    fn assert_symmetric_without_self_loops(
        graph: &BTreeMap<ParticipantId, BTreeSet<ParticipantId>>,
    ) {
        for (member, neighbours) in graph {
            assert!(
                !neighbours.contains(member),
                "{member} is its own neighbour"
            );
            for neighbour in neighbours {
                assert!(graph[neighbour].contains(member), "{member} - {neighbour}");
            }
        }
    }

    #[test]
    fn a_degree_of_at_least_n_minus_one_gives_the_complete_graph() {
        let all = members(8);
        let graph = neighbourhoods(&all, 7, &[0; 32]);
        assert_eq!(graph.len(), 8);
        assert!(graph.values().all(|neighbours| neighbours.len() == 7));
        assert_symmetric_without_self_loops(&graph);
    }

    #[test]
    fn the_sparse_graph_is_regular_symmetric_and_depends_on_the_seed() {
        let all = members(40);
        let graph = neighbourhoods(&all, 9, &[1; 32]);
        assert_eq!(graph.len(), 40);
        assert!(graph.values().all(|neighbours| neighbours.len() == 10));
        assert_symmetric_without_self_loops(&graph);
        assert_eq!(graph, neighbourhoods(&all, 9, &[1; 32]));
        assert_ne!(graph, neighbourhoods(&all, 9, &[2; 32]));
    }

    #[test]
    fn recommended_degrees_are_complete_for_small_federations_and_logarithmic_above() {
        assert_eq!(recommended_degree(1), 0);
        assert_eq!(recommended_degree(8), 7);
        assert_eq!(recommended_degree(16), 15);
        assert_eq!(recommended_degree(40), 18);
        assert_eq!(recommended_degree(1000), 30);
        assert_eq!(recommended_degree(10_000), 42);
        assert_eq!(recommended_threshold(7), 4);
        assert_eq!(recommended_threshold(18), 10);
    }
}
