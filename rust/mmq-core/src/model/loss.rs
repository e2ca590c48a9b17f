//! Output layers and their losses: softmax, negative sampling, hierarchical softmax and
//! one-vs-all, as in fastText (`src/loss.cc`).
use rand::Rng;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LossKind {
    Softmax,
    Ns,
    Hs,
    Ova,
}

impl LossKind {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "softmax" => Some(Self::Softmax),
            "ns" => Some(Self::Ns),
            "hs" => Some(Self::Hs),
            "ova" | "one-vs-all" => Some(Self::Ova),
            _ => None,
        }
    }
    pub fn name(&self) -> &'static str {
        match self {
            Self::Softmax => "softmax",
            Self::Ns => "ns",
            Self::Hs => "hs",
            Self::Ova => "ova",
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_that_would_overflow_the_tree_are_refused() {
        use super::check_counts;
        assert!(check_counts(&[3, 2, 1]).is_ok());
        assert!(check_counts(&[(1 << 63) - 1, 1]).is_err());
        assert!(check_counts(&[1 << 62, 1 << 62, 1 << 62]).is_err());
        assert!(check_counts(&[u64::MAX, 1]).is_err());
    }
}

#[inline]
pub fn sigmoid(x: f32) -> f32 {
    if x < -30.0 {
        0.0
    } else if x > 30.0 {
        1.0
    } else {
        1.0 / (1.0 + (-x).exp())
    }
}

/// fastText's sigmoid at prediction for ns and ova (`Loss::sigmoid`): a table of 513
/// values over [-8, 8], 0 below and 1 above.
pub fn table_sigmoid(x: f32) -> f32 {
    const MAX: f32 = 8.0;
    const SIZE: usize = 512;
    static TABLE: std::sync::OnceLock<Vec<f32>> = std::sync::OnceLock::new();
    let t = TABLE.get_or_init(|| {
        (0..=SIZE)
            .map(|i| {
                let x = (i as f32 * 2.0 * MAX) / SIZE as f32 - MAX;
                (1.0 / (1.0 + (-x).exp() as f64)) as f32
            })
            .collect()
    });
    if x < -MAX {
        0.0
    } else if x > MAX {
        1.0
    } else {
        t[(((x + MAX) * SIZE as f32 / MAX / 2.0) as usize).min(SIZE)]
    }
}

/// fastText's logarithm of a probability at prediction (`std_log`): `ln(p + 1e-5)`.
#[inline]
pub fn ft_log(p: f32) -> f32 {
    (p as f64 + 1e-5).ln() as f32
}

/// The log-probability fastText's hierarchical softmax gives the branch `right` (code 1)
/// or left of an inner node of score `x` (`HierarchicalSoftmaxLoss::dfs`).
#[inline]
pub fn ft_branch(x: f32, right: bool) -> f32 {
    let f = (1.0 / (1.0 + (-x).exp() as f64)) as f32;
    if right {
        ft_log(f)
    } else {
        (1.0 - f as f64 + 1e-5).ln() as f32
    }
}

#[inline]
pub fn safe_ln(x: f32) -> f32 {
    (x + 1e-5).ln()
}

/// The largest total of label counts: the Huffman tree's inner-node counts (at most the
/// total) stay below its sentinel (`u64::MAX / 4`) and never overflow.
pub const MAX_COUNT_TOTAL: u64 = u64::MAX / 8;

/// Label counts a [`Tree`] can be built from: their sum (checked) is at most
/// [`MAX_COUNT_TOTAL`].
pub fn check_counts(counts: &[u64]) -> crate::error::Result<()> {
    match counts.iter().try_fold(0u64, |a, &c| a.checked_add(c)) {
        Some(t) if t <= MAX_COUNT_TOTAL => Ok(()),
        _ => Err(crate::error::MmqError::InvalidInput(format!(
            "label counts sum to more than {MAX_COUNT_TOTAL}"
        ))),
    }
}

/// Huffman tree over label counts (fastText's `HierarchicalSoftmaxLoss::buildTree`).
/// Nodes `0..n` are leaves ("slots", labels sorted by decreasing count), `n..2n-1` inner
/// nodes; inner node `i` owns output row `i - n`.
#[derive(Clone, Debug, Default)]
pub struct Tree {
    pub n: usize,
    pub left: Vec<usize>,
    pub right: Vec<usize>,
    /// Label of each leaf slot.
    pub slot_label: Vec<u32>,
    /// For each label: output rows of the inner nodes on its path, and the branch codes.
    pub paths: Vec<Vec<u32>>,
    pub codes: Vec<Vec<bool>>,
}

impl Tree {
    pub fn build(counts: &[u64]) -> Self {
        let n = counts.len();
        let total = 2 * n - 1;
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| counts[b].cmp(&counts[a]).then(a.cmp(&b)));
        let mut count = vec![u64::MAX / 4; total];
        for (s, &l) in order.iter().enumerate() {
            count[s] = counts[l].min(u64::MAX / 4 - 1);
        }
        let (mut parent, mut binary) = (vec![usize::MAX; total], vec![false; total]);
        let (mut left, mut right) = (vec![0usize; total], vec![0usize; total]);
        let (mut leaf, mut node) = (n as i64 - 1, n);
        for i in n..total {
            let mut pick = [0usize; 2];
            for p in pick.iter_mut() {
                if leaf >= 0 && count[leaf as usize] < count[node] {
                    *p = leaf as usize;
                    leaf -= 1;
                } else {
                    *p = node;
                    node += 1;
                }
            }
            left[i] = pick[0];
            right[i] = pick[1];
            // Below the sentinel of unbuilt nodes whatever the counts (a sum that reached
            // it would let an unbuilt node be picked, making a cycle).
            count[i] = count[pick[0]]
                .saturating_add(count[pick[1]])
                .min(u64::MAX / 4 - 1);
            parent[pick[0]] = i;
            parent[pick[1]] = i;
            binary[pick[1]] = true;
        }
        let mut paths = vec![Vec::new(); n];
        let mut codes = vec![Vec::new(); n];
        for (slot, &label) in order.iter().enumerate() {
            let mut cur = slot;
            while parent[cur] != usize::MAX {
                paths[label].push((parent[cur] - n) as u32);
                codes[label].push(binary[cur]);
                cur = parent[cur];
            }
        }
        Tree {
            n,
            left,
            right,
            slot_label: order.iter().map(|&l| l as u32).collect(),
            paths,
            codes,
        }
    }

    pub fn root(&self) -> usize {
        2 * self.n - 2
    }
}

/// Negative-sampling table: labels repeated in proportion to sqrt(count).
pub fn negatives_table(counts: &[u64], rng: &mut impl Rng) -> Vec<u32> {
    const SIZE: f64 = 10_000_000.0;
    let z: f64 = counts.iter().map(|&c| (c as f64).sqrt()).sum();
    let mut t = Vec::new();
    for (i, &c) in counts.iter().enumerate() {
        let reps = ((c as f64).sqrt() * SIZE / z / 100.0).ceil() as usize;
        t.extend(std::iter::repeat_n(i as u32, reps.max(1)));
    }
    // Fisher-Yates shuffle.
    for i in (1..t.len()).rev() {
        let j = rng.random_range(0..=i);
        t.swap(i, j);
    }
    t
}
