//! The output layer of the continuous-fusion and set models, for every loss: softmax,
//! ns (the target and `neg` labels drawn from fastText's count^0.5 table), hs (the
//! target's path in the Huffman tree of the label counts) and ova (every label), as the
//! text model trains them. One piece with its forward (probabilities), its training
//! targets (pairs of output row and 0/1 target, each a binary logistic loss) and its
//! temperature, so each model only supplies its fused vector `h` and routes the
//! gradient of `h` back.
use super::fusion::Weights;
use super::loss::{check_counts, safe_ln, sigmoid, LossKind, Tree};
use super::softmax_in_place;
use crate::error::Result;
use crate::train::select::{temper, temper_sigmoid};
use rand::Rng;
use std::sync::Arc;

/// The loss of an output layer over `nl` labels (and its tree for hs).
#[derive(Clone, Debug)]
pub(super) struct Output {
    pub loss: LossKind,
    pub nl: usize,
    /// hs: the tree over the labels (its inner nodes are the output rows).
    pub tree: Option<Arc<Tree>>,
}

impl Output {
    /// hs builds the tree from the label counts (as the text model does; it is never
    /// stored: a loaded model rebuilds it from its stored counts).
    pub fn new(loss: LossKind, counts: &[u64]) -> Result<Self> {
        let tree = if loss == LossKind::Hs {
            check_counts(counts)?;
            Some(Arc::new(Tree::build(counts)))
        } else {
            None
        };
        Ok(Self {
            loss,
            nl: counts.len(),
            tree,
        })
    }

    /// Rows of the output matrix: one per label, or one per inner node of the tree.
    pub fn n_out(&self) -> usize {
        if self.loss == LossKind::Hs {
            self.nl.saturating_sub(1)
        } else {
            self.nl
        }
    }

    /// Whether training needs every label's probability (softmax) rather than the
    /// scores of a few pairs.
    pub fn needs_probs(&self) -> bool {
        self.loss == LossKind::Softmax
    }

    /// Every label's probability from `h` (`w` the output matrix, `b` its 1-row bias if
    /// the model has one): softmax; ns and ova a sigmoid of each score; hs the product
    /// of the branch probabilities on each label's path (`nodes`: scratch).
    pub fn probs<W: Weights>(
        &self,
        w: &W,
        b: Option<&W>,
        h: &[f32],
        q: &mut [f32],
        nodes: &mut Vec<f32>,
    ) {
        let score = |r: usize| w.dot_row(r, h) + b.map_or(0.0, |b| b.at(0, r));
        match self.loss {
            LossKind::Softmax => {
                q.iter_mut().enumerate().for_each(|(l, o)| *o = score(l));
                softmax_in_place(q);
            }
            LossKind::Ns | LossKind::Ova => {
                q.iter_mut()
                    .enumerate()
                    .for_each(|(l, o)| *o = sigmoid(score(l)));
            }
            LossKind::Hs => {
                let tree = self.tree.as_ref().expect("an hs output has a tree");
                nodes.clear();
                nodes.extend((0..self.n_out()).map(score));
                for (l, o) in q.iter_mut().enumerate() {
                    let lp: f32 = tree.paths[l]
                        .iter()
                        .zip(&tree.codes[l])
                        .map(|(&n, &code)| {
                            let s = nodes[n as usize];
                            safe_ln(sigmoid(if code { s } else { -s }))
                        })
                        .sum();
                    *o = lp.exp();
                }
            }
        }
    }

    /// ns / hs / ova: the output rows a row with gold `labels` trains (`target`, one of
    /// them, for ns and hs) and their 0/1 targets, into `out`.
    pub fn pairs(
        &self,
        target: usize,
        labels: &[u32],
        (neg, negatives): (usize, &[u32]),
        rng: &mut impl Rng,
        out: &mut Vec<(u32, f32)>,
    ) {
        out.clear();
        match self.loss {
            LossKind::Ns => {
                out.push((target as u32, 1.0));
                for _ in 0..neg {
                    let n = loop {
                        let c = negatives[rng.random_range(0..negatives.len())];
                        if c as usize != target {
                            break c;
                        }
                    };
                    out.push((n, 0.0));
                }
            }
            LossKind::Hs => {
                let tree = self.tree.as_ref().expect("an hs output has a tree");
                out.extend(
                    tree.paths[target]
                        .iter()
                        .zip(&tree.codes[target])
                        .map(|(&n, &code)| (n, code as u8 as f32)),
                );
            }
            LossKind::Ova => {
                out.extend((0..self.nl as u32).map(|l| (l, labels.contains(&l) as u8 as f32)));
            }
            LossKind::Softmax => {}
        }
    }

    /// Probabilities at temperature `t`: softmax and hs renormalise `p^(1/t)`; ns and
    /// ova, whose labels are independent, divide each score by `t` (as the text model).
    pub fn temper(&self, q: &mut [f32], t: f32) {
        match self.loss {
            LossKind::Ns | LossKind::Ova => temper_sigmoid(q, t),
            _ => temper(q, t),
        }
    }
}

/// The scores of the output rows of `pairs` (into `ps`).
pub(super) fn pair_scores<W: Weights>(
    w: &W,
    b: Option<&W>,
    h: &[f32],
    pairs: &[(u32, f32)],
    ps: &mut Vec<f32>,
) {
    ps.clear();
    ps.extend(
        pairs
            .iter()
            .map(|&(r, _)| w.dot_row(r as usize, h) + b.map_or(0.0, |b| b.at(0, r as usize))),
    );
}

/// The binary logistic losses of the pairs, summed.
pub(super) fn pair_loss(pairs: &[(u32, f32)], ps: &[f32]) -> f32 {
    pairs
        .iter()
        .zip(ps)
        .map(|(&(_, y), &s)| -safe_ln(sigmoid(if y > 0.5 { s } else { -s })))
        .sum()
}

/// The gradient of `scale ×` [`pair_loss`] for each pair's score: `scale · (σ(s) − y)`.
pub(super) fn pair_grads(pairs: &[(u32, f32)], ps: &[f32], scale: f32, out: &mut Vec<f32>) {
    out.clear();
    out.extend(
        pairs
            .iter()
            .zip(ps)
            .map(|(&(_, y), &s)| scale * (sigmoid(s) - y)),
    );
}
