//! Shared parameter matrices for lock-free (Hogwild) SGD.
//!
//! Hogwild lets every thread read and write the shared weights without locks; the races
//! are part of the algorithm. In Rust a data race through `&mut`/`&` to plain `f32` is
//! undefined behaviour, so the matrix stores each weight in an `AtomicU32` holding the
//! f32 bits and every access is a `Relaxed` load or store. On x86-64 and AArch64 a relaxed
//! load/store of an aligned 32-bit word compiles to a plain `mov`/`ldr`/`str`: the same
//! machine code as fastText's racy C++, with no fences and no read-modify-write, so
//! updates from two threads to the same weight may overwrite each other (as in fastText
//! and the Hogwild paper) but no access is ever undefined. We chose relaxed atomics over
//! `UnsafeCell` + raw pointers because the latter is still a data race under Rust's
//! memory model; atomics make the racy design defined at no cost on these targets.
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

pub struct HogwildMatrix {
    data: Vec<AtomicU32>,
    cols: usize,
}

impl HogwildMatrix {
    /// Takes the weights over without copying them.
    pub fn from_vec(v: Vec<f32>, cols: usize) -> Self {
        let mut v = std::mem::ManuallyDrop::new(v);
        let (ptr, len, cap) = (v.as_mut_ptr(), v.len(), v.capacity());
        // SAFETY: AtomicU32 has the size, alignment and bit validity of u32, hence of
        // f32's bits; the allocation is handed over whole (same capacity, same layout).
        let data = unsafe { Vec::from_raw_parts(ptr as *mut AtomicU32, len, cap) };
        Self { data, cols }
    }

    /// The weights, without copying them.
    pub fn into_vec(self) -> Vec<f32> {
        let mut v = std::mem::ManuallyDrop::new(self.data);
        let (ptr, len, cap) = (v.as_mut_ptr(), v.len(), v.capacity());
        // SAFETY: as in `from_vec`; every bit pattern is a valid f32.
        unsafe { Vec::from_raw_parts(ptr as *mut f32, len, cap) }
    }

    /// A copy of every weight (a checkpoint; call it while no thread is training).
    pub fn snapshot(&self) -> Vec<f32> {
        self.data
            .iter()
            .map(|a| f32::from_bits(a.load(Relaxed)))
            .collect()
    }

    /// Set every weight back to a [`Self::snapshot`] of this matrix.
    pub fn restore(&self, snap: &[f32]) {
        debug_assert_eq!(snap.len(), self.data.len());
        for (a, x) in self.data.iter().zip(snap) {
            a.store(x.to_bits(), Relaxed);
        }
    }

    #[inline]
    fn row(&self, r: usize) -> &[AtomicU32] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }

    /// Asks the CPU to start loading `row(r)` into the cache (a hint; no effect on values).
    /// Training reads a row's dozens of embedding rows at random places of a matrix far
    /// larger than the cache: fetching a few rows ahead overlaps their memory latency.
    #[inline]
    pub fn prefetch_row(&self, r: usize) {
        if let Some(row) = self.data.get(r * self.cols..(r + 1) * self.cols) {
            crate::model::kernels::prefetch(row);
        }
    }

    /// `out += a * row(r)`
    #[inline]
    pub fn add_row_to(&self, r: usize, a: f32, out: &mut [f32]) {
        for (o, w) in out.iter_mut().zip(self.row(r)) {
            *o += a * f32::from_bits(w.load(Relaxed));
        }
    }

    /// `row(r) · v`, over 8 independent partial sums (one serial chain of additions
    /// would wait ~4 cycles per weight).
    #[inline]
    pub fn dot_row(&self, r: usize, v: &[f32]) -> f32 {
        let row = self.row(r);
        let n = row.len().min(v.len());
        let (row, v) = (&row[..n], &v[..n]);
        let (cw, cv) = (row.chunks_exact(8), v.chunks_exact(8));
        let mut tail = 0.0f32;
        for (w, x) in cw.remainder().iter().zip(cv.remainder()) {
            tail += x * f32::from_bits(w.load(Relaxed));
        }
        let mut acc = [0.0f32; 8];
        for (w, x) in cw.zip(cv) {
            for i in 0..8 {
                acc[i] += x[i] * f32::from_bits(w[i].load(Relaxed));
            }
        }
        (acc[0] + acc[4]) + (acc[1] + acc[5]) + (acc[2] + acc[6]) + (acc[3] + acc[7]) + tail
    }

    /// `row(r) += a * v`
    #[inline]
    pub fn add_to_row(&self, r: usize, a: f32, v: &[f32]) {
        for (x, w) in v.iter().zip(self.row(r)) {
            let cur = f32::from_bits(w.load(Relaxed));
            w.store((cur + a * x).to_bits(), Relaxed);
        }
    }

    /// `row(r) · u`, then `row(r) += a * v`, in one pass: each weight is read once and the
    /// dot product sees it before its update.
    #[inline]
    pub fn dot_then_add(&self, r: usize, u: &[f32], a: f32, v: &[f32]) -> f32 {
        let mut s = 0.0f32;
        for ((w, x), y) in self.row(r).iter().zip(u).zip(v) {
            let cur = f32::from_bits(w.load(Relaxed));
            s += x * cur;
            w.store((cur + a * y).to_bits(), Relaxed);
        }
        s
    }

    /// `out += c * row(r)`, then `row(r) += a * v`, in one pass (each weight read once,
    /// `out` gets it before its update).
    #[inline]
    pub fn read_then_add(&self, r: usize, c: f32, out: &mut [f32], a: f32, v: &[f32]) {
        for ((w, o), y) in self.row(r).iter().zip(out.iter_mut()).zip(v) {
            let cur = f32::from_bits(w.load(Relaxed));
            *o += c * cur;
            w.store((cur + a * y).to_bits(), Relaxed);
        }
    }

    /// `row(r)[c]`
    #[inline]
    pub fn at(&self, r: usize, c: usize) -> f32 {
        f32::from_bits(self.data[r * self.cols + c].load(Relaxed))
    }

    /// `row(r)[c] += a`
    #[inline]
    pub fn add_at(&self, r: usize, c: usize, a: f32) {
        let w = &self.data[r * self.cols + c];
        w.store((f32::from_bits(w.load(Relaxed)) + a).to_bits(), Relaxed);
    }

    /// AdaGrad step on `row(r)`: for every column c with `g[c] != 0`, the gradient
    /// `g[c]·v + l2·w` is added to `accum`'s squared sums, then the weight moves by
    /// `-lr · grad / sqrt(sum)`. `accum` has this matrix's shape.
    #[inline]
    pub fn adagrad_row(
        &self,
        accum: &HogwildMatrix,
        r: usize,
        g: &[f32],
        v: f32,
        l2: f32,
        lr: f32,
    ) {
        for ((w, a), &gc) in self.row(r).iter().zip(accum.row(r)).zip(g) {
            if gc == 0.0 {
                continue;
            }
            let cur = f32::from_bits(w.load(Relaxed));
            let grad = gc * v + l2 * cur;
            let sum = f32::from_bits(a.load(Relaxed)) + grad * grad;
            a.store(sum.to_bits(), Relaxed);
            w.store((cur - lr * grad / (sum.sqrt() + 1e-12)).to_bits(), Relaxed);
        }
    }
}
