//! Evaluation: precision and recall at k (fastText's `test` semantics) and per-label scores.
use crate::model::Ranked;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct LabelScore {
    /// Correct predictions of this label.
    pub tp: u64,
    /// Times the label was predicted.
    pub predicted: u64,
    /// Times the label is in the gold set.
    pub gold: u64,
}

impl LabelScore {
    pub fn precision(&self) -> f64 {
        ratio(self.tp, self.predicted)
    }
    pub fn recall(&self) -> f64 {
        ratio(self.tp, self.gold)
    }
    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

#[derive(Clone, Debug, Default)]
pub struct Evaluation {
    pub rows: u64,
    pub predicted: u64,
    pub gold: u64,
    pub correct: u64,
    pub per_label: Vec<LabelScore>,
}

impl Evaluation {
    /// Correct predictions over all predictions (fastText's P@k).
    pub fn precision(&self) -> f64 {
        ratio(self.correct, self.predicted)
    }
    /// Correct predictions over all gold labels (fastText's R@k).
    pub fn recall(&self) -> f64 {
        ratio(self.correct, self.gold)
    }
}

/// Score predictions against gold label sets (CSR: `gold[gold_offsets[i]..gold_offsets[i+1]]`).
pub fn evaluate(
    preds: &[Ranked],
    gold_offsets: &[usize],
    gold: &[u32],
    n_labels: usize,
) -> Evaluation {
    let mut e = Evaluation {
        per_label: vec![LabelScore::default(); n_labels],
        rows: preds.len() as u64,
        ..Default::default()
    };
    for (i, p) in preds.iter().enumerate() {
        let g = &gold[gold_offsets[i]..gold_offsets[i + 1]];
        for &l in g {
            // Gold labels unknown to the model (index >= n_labels) count as misses.
            if let Some(s) = e.per_label.get_mut(l as usize) {
                s.gold += 1;
            }
        }
        e.gold += g.len() as u64;
        for &(l, _) in p {
            e.predicted += 1;
            e.per_label[l as usize].predicted += 1;
            if g.contains(&l) {
                e.correct += 1;
                e.per_label[l as usize].tp += 1;
            }
        }
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_recall_at_k() {
        // Row 0 gold {0,1} predicted [0,2]; row 1 gold {2} predicted [2,1].
        let preds = vec![vec![(0, 0.6), (2, 0.3)], vec![(2, 0.5), (1, 0.4)]];
        let e = evaluate(&preds, &[0, 2, 3], &[0, 1, 2], 3);
        assert_eq!((e.correct, e.predicted, e.gold), (2, 4, 3));
        assert!((e.precision() - 0.5).abs() < 1e-12);
        assert!((e.recall() - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(
            e.per_label[1],
            LabelScore {
                tp: 0,
                predicted: 1,
                gold: 1
            }
        );
        assert_eq!(e.per_label[2].f1(), 2.0 * 0.5 * 1.0 / 1.5);
    }
}
