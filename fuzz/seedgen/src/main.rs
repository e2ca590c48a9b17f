//! Writes small valid files, made by mmq-core's own writers, as the seed corpora of the
//! fuzz targets: `fuzz/corpus/<target>/<name>`. Every seed is kept under 50 KB (tiny
//! dims, few buckets, few rows). Deterministic: the same files on every run.
use mmq_core::io::{self, quant::quantizer_to_bytes, Tensor};
use mmq_core::model::compress::QuantizeOptions;
use mmq_core::model::dense::assign_offsets;
use mmq_core::model::fusion::{
    train_fusion, train_fusion_with, FusionConfig, FusionMode, FusionModel, FusionRows,
};
use mmq_core::model::loss::LossKind;
use mmq_core::model::sets::{
    train_sets, train_sets_with, Blend, Modality, ModalityKind, ModalityRows, SetConfig, SetFusion,
    SetModel, SetRows,
};
use mmq_core::model::{Head, L2Mode, Model, ModelConfig};
use mmq_core::quant::{Quantizer, Transform};
use mmq_core::text::{Tokenizer, TokenizerConfig};
use mmq_core::train::{self, Dataset, TrainOptions};
use std::path::{Path, PathBuf};

const TEXTS: [&str; 8] = [
    "great phone, love it!",
    "terrible battery #fail",
    "très bon produit 😀",
    "東京の天気は晴れです",
    "awful awful awful",
    "DON'T buy this... ever",
    "ขอบคุณมาก good",
    "ok fine\tnothing special",
];

fn ok(_: &train::Progress) -> bool {
    true
}

fn tok_cfg(bucket: u32) -> TokenizerConfig {
    TokenizerConfig {
        word_ngrams: 2,
        minn: 2,
        maxn: 3,
        bucket,
        ..TokenizerConfig::default()
    }
}

/// `n` rows of text (CSR token ids) with labels `i % 3`.
struct Rows {
    offsets: Vec<usize>,
    tokens: Vec<u32>,
    weights: Vec<f32>,
    label_offsets: Vec<usize>,
    labels: Vec<u32>,
}

impl Rows {
    fn new(tok: &Tokenizer, n: usize, extra: &dyn Fn(usize) -> Vec<u32>) -> Self {
        let mut r = Rows {
            offsets: vec![0],
            tokens: vec![],
            weights: vec![],
            label_offsets: vec![0],
            labels: vec![],
        };
        for i in 0..n {
            r.tokens.extend(tok.tokenize(TEXTS[i % TEXTS.len()]));
            r.tokens.extend(extra(i));
            r.offsets.push(r.tokens.len());
            r.labels.push((i % 3) as u32);
            r.label_offsets.push(r.labels.len());
        }
        r.weights = vec![1.0; r.tokens.len()];
        r
    }
    fn data(&self, weighted: bool) -> Dataset<'_> {
        Dataset {
            offsets: &self.offsets,
            tokens: &self.tokens,
            weights: weighted.then_some(&self.weights[..]),
            label_offsets: &self.label_offsets,
            labels: &self.labels,
        }
    }
}

fn labels() -> Vec<String> {
    vec![
        "__label__pos".into(),
        "__label__neg".into(),
        "__label__meh".into(),
    ]
}

/// `n × d` deterministic vectors.
fn vectors(n: usize, d: usize) -> Vec<f32> {
    (0..n * d)
        .map(|i| ((i * 7919 % 101) as f32 / 50.0) - 1.0)
        .collect()
}

fn quantizer(rspq: bool, transform: Transform) -> Quantizer {
    let (d, m, k) = (6, 2, 4);
    let mut q = if rspq {
        Quantizer::rspq(d, m, Some(4), k, 3).unwrap()
    } else {
        Quantizer::pq(d, m, k, 3).unwrap()
    };
    q.set_transform(transform).unwrap();
    q.fit(&vectors(40, d), 40).unwrap();
    q
}

struct Out(PathBuf);

impl Out {
    fn write(&self, target: &str, name: &str, bytes: &[u8]) {
        assert!(
            bytes.len() < 50_000,
            "seed {target}/{name} is {} bytes",
            bytes.len()
        );
        let dir = self.0.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
        println!("{target}/{name}: {} bytes", bytes.len());
    }
}

fn classifiers(out: &Out) {
    let bucket = 200;
    let tok = Tokenizer::new(tok_cfg(bucket)).unwrap();
    let rows = Rows::new(&tok, 24, &|_| vec![]);
    let base = ModelConfig {
        dim: 4,
        epoch: 2,
        tokenizer: tok_cfg(bucket),
        ..ModelConfig::default()
    };
    let variants: [(&str, ModelConfig); 6] = [
        ("softmax", base.clone()),
        (
            "ns",
            ModelConfig {
                loss: LossKind::Ns,
                neg: 2,
                ..base.clone()
            },
        ),
        (
            "hs",
            ModelConfig {
                loss: LossKind::Hs,
                ..base.clone()
            },
        ),
        (
            "ova",
            ModelConfig {
                loss: LossKind::Ova,
                ..base.clone()
            },
        ),
        (
            "linear_idf",
            ModelConfig {
                head: Head::Linear,
                idf: true,
                l2: 0.01,
                l2_mode: L2Mode::Full,
                ..base.clone()
            },
        ),
        (
            "linear_ova",
            ModelConfig {
                head: Head::Linear,
                loss: LossKind::Ova,
                ..base.clone()
            },
        ),
    ];
    for (name, cfg) in variants {
        let linear = cfg.head == Head::Linear;
        let m = train::train(cfg, labels(), &rows.data(linear), &ok).unwrap();
        let b = m.to_bytes().unwrap();
        Model::from_bytes(&b, "seed").unwrap();
        out.write("model_file", &format!("{name}.mmq"), &b);
        out.write("container", &format!("{name}.mmq"), &b);
    }
    // With a validation split: a history and a temperature.
    let valid = Rows::new(&tok, 9, &|_| vec![]);
    let opts = TrainOptions {
        valid: Some(&valid.data(false)),
        patience: Some(2),
        calibrate: true,
        ..Default::default()
    };
    let m = train::train_with(base.clone(), labels(), &rows.data(false), &opts, &ok).unwrap();
    out.write("model_file", "history.mmq", &m.to_bytes().unwrap());
    // Discrete fusion: two dense columns (pq, rspq) whose codes are tokens after the buckets.
    let dense = assign_offsets(
        bucket,
        vec![
            ("image".into(), quantizer(false, Transform::None)),
            ("audio".into(), quantizer(true, Transform::L2)),
        ],
    )
    .unwrap();
    let x = vectors(24, 6);
    let codes: Vec<Vec<u16>> = dense
        .iter()
        .map(|d| d.quantizer.encode(&x, 24).unwrap())
        .collect();
    let drows = Rows::new(&tok, 24, &|i| {
        dense
            .iter()
            .zip(&codes)
            .flat_map(|(d, c)| {
                let m = d.quantizer.m();
                (0..m).map(move |j| d.token(j, c[i * m + j]))
            })
            .collect()
    });
    for (name, cfg) in [
        (
            "dense",
            ModelConfig {
                alpha: 0.5,
                modality_dropout: 0.2,
                ..base.clone()
            },
        ),
        (
            "dense_linear",
            ModelConfig {
                head: Head::Linear,
                ..base.clone()
            },
        ),
    ] {
        let linear = cfg.head == Head::Linear;
        let mut m = train::train(cfg, labels(), &drows.data(linear), &ok).unwrap();
        m.dense = dense.clone();
        let b = m.to_bytes().unwrap();
        Model::from_bytes(&b, "seed").unwrap();
        out.write("model_file", &format!("{name}.mmq"), &b);
    }
    // A composite file (as late/concat fusion writes): members are whole mmq files.
    let text = std::fs::read(out.0.join("model_file/softmax.mmq")).unwrap();
    let head = std::fs::read(out.0.join("model_file/dense.mmq")).unwrap();
    let q = quantizer_to_bytes(&quantizer(false, Transform::None)).unwrap();
    let header =
        serde_json::json!({"kind": "late_fusion", "labels": labels(), "weights": [0.5, 0.5]});
    let packed = io::pack(
        &header,
        &[
            ("text".into(), text),
            ("head.0".into(), head),
            ("quantizer".into(), q),
        ],
    )
    .unwrap();
    out.write("container", "late.mmq", &packed);
    // The raw container with every tensor type.
    let raw = io::to_bytes(
        &serde_json::json!({"kind": "test", "x": [1, 2.5, "s", null, {"a": true}]}),
        &[
            ("f", Tensor::F32(vec![2, 2], vec![1.0, -2.0, 0.5, 3.0])),
            ("u", Tensor::U32(vec![3], vec![1, 2, 3])),
            ("b", Tensor::U8(vec![4], vec![0, 1, 2, 255])),
        ],
    )
    .unwrap();
    out.write("container", "tensors.mmq", &raw);
}

fn fusions(out: &Out) {
    let bucket = 200;
    let tok = Tokenizer::new(tok_cfg(bucket)).unwrap();
    let rows = Rows::new(&tok, 24, &|_| vec![]);
    let dd = 5;
    let dense = vectors(24, dd);
    let present: Vec<bool> = (0..24).map(|i| i % 5 != 0).collect();
    for mode in FusionMode::ALL {
        let cfg = FusionConfig {
            mode,
            dim: 4,
            rank: (mode == FusionMode::Bilinear).then_some(3),
            epoch: 2,
            tokenizer: tok_cfg(bucket),
            dense_name: "image".into(),
            ..FusionConfig::default()
        };
        let m = train_fusion(cfg, labels(), &rows.data(false), &dense, dd, &present, &ok).unwrap();
        let b = m.to_bytes().unwrap();
        FusionModel::from_bytes(&b, "seed").unwrap();
        out.write("fusion_file", &format!("{}.mmq", mode.name()), &b);
        if mode == FusionMode::Gated {
            // quantized: the token rows and the output matrix as codes
            let o = QuantizeOptions {
                qout: true,
                qnorm: true,
                ..Default::default()
            };
            let b = m.quantize(&o).unwrap().to_bytes().unwrap();
            FusionModel::from_bytes(&b, "seed").unwrap();
            out.write("fusion_file", "gated_quantized.mmq", &b);
        }
    }
    // With a validation split: a history and a temperature in the file.
    let train = FusionRows {
        data: rows.data(false),
        dense: &dense,
        present: &present,
    };
    let opts = TrainOptions {
        valid: Some(&train),
        patience: None,
        calibrate: true,
        ..Default::default()
    };
    let cfg = FusionConfig {
        mode: FusionMode::Gated,
        dim: 4,
        epoch: 3,
        tokenizer: tok_cfg(bucket),
        dense_name: "image".into(),
        ..FusionConfig::default()
    };
    let m = train_fusion_with(cfg, labels(), &train, dd, &opts, &ok).unwrap();
    let b = m.to_bytes().unwrap();
    FusionModel::from_bytes(&b, "seed").unwrap();
    out.write("fusion_file", "gated_valid.mmq", &b);
}

fn sets(out: &Out) {
    let bucket = 200;
    let tok = Tokenizer::new(tok_cfg(bucket)).unwrap();
    let q = quantizer(false, Transform::None);
    let n = 80;
    let x = vectors(n, 6);
    let codes = q.encode(&x, n).unwrap();
    let image_ids = q.token_ids(&codes).unwrap();
    // Modalities: text, categorical (brand), dense (image codes, missing on some rows).
    let (mut t_off, mut t_ids) = (vec![0], vec![]);
    let (mut c_off, mut c_ids) = (vec![0], vec![]);
    let (mut d_off, mut d_ids) = (vec![0], vec![]);
    let (mut l_off, mut l_ids) = (vec![0], vec![]);
    for i in 0..n {
        t_ids.extend(tok.tokenize(TEXTS[i % TEXTS.len()]));
        t_off.push(t_ids.len());
        c_ids.push((i % 4) as u32 + 10 * (i % 3) as u32);
        c_off.push(c_ids.len());
        if i % 6 != 0 {
            d_ids.extend_from_slice(&image_ids[i * q.m()..(i + 1) * q.m()]);
        }
        d_off.push(d_ids.len());
        l_ids.push((i % 3) as u32);
        l_off.push(l_ids.len());
    }
    let rows = [
        ModalityRows {
            offsets: &t_off,
            ids: &t_ids,
        },
        ModalityRows {
            offsets: &c_off,
            ids: &c_ids,
        },
        ModalityRows {
            offsets: &d_off,
            ids: &d_ids,
        },
    ];
    let modalities = vec![
        Modality {
            name: "title".into(),
            kind: ModalityKind::Text,
        },
        Modality {
            name: "brand".into(),
            kind: ModalityKind::Categorical,
        },
        Modality {
            name: "image".into(),
            kind: ModalityKind::Dense,
        },
    ];
    let base = SetConfig {
        dim: 4,
        epoch: 2,
        tokenizer: tok_cfg(bucket),
        modalities,
        ..SetConfig::default()
    };
    for (name, cfg) in [
        (
            "bag",
            SetConfig {
                fusion: SetFusion::Bag,
                ..base.clone()
            },
        ),
        ("deepset", base.clone()),
        (
            "attention",
            SetConfig {
                fusion: SetFusion::Attention,
                ..base.clone()
            },
        ),
        (
            "gblend",
            SetConfig {
                blend: Blend::Gblend,
                holdout: 0.4,
                epoch: 3,
                ..base.clone()
            },
        ),
    ] {
        let mut m = train_sets(cfg, labels(), &rows, &l_off, &l_ids, &ok).unwrap();
        m.quantizers[2] = Some(q.clone());
        let b = m.to_bytes().unwrap();
        SetModel::from_bytes(&b, "seed").unwrap();
        out.write("set_file", &format!("{name}.mmq"), &b);
        let b = m
            .quantize(&QuantizeOptions {
                qout: true,
                ..Default::default()
            })
            .unwrap()
            .to_bytes()
            .unwrap();
        SetModel::from_bytes(&b, "seed").unwrap();
        out.write("set_file", &format!("{name}_quantized.mmq"), &b);
    }
    // With a validation split: a history and a temperature in the file.
    let train = SetRows {
        rows: &rows,
        label_offsets: &l_off,
        labels: &l_ids,
    };
    let opts = TrainOptions {
        valid: Some(&train),
        patience: Some(2),
        calibrate: true,
        ..Default::default()
    };
    let cfg = SetConfig {
        fusion: SetFusion::Deepset,
        ..base.clone()
    };
    let mut m = train_sets_with(cfg, labels(), &train, &opts, &ok).unwrap();
    m.quantizers[2] = Some(q.clone());
    let b = m.to_bytes().unwrap();
    SetModel::from_bytes(&b, "seed").unwrap();
    out.write("set_file", "deepset_valid.mmq", &b);
    // The other losses (their config keys; hs rebuilds its tree from the counts).
    for loss in [LossKind::Hs, LossKind::Ns] {
        let cfg = SetConfig {
            fusion: SetFusion::Attention,
            loss,
            neg: 3,
            ..base.clone()
        };
        let mut m = train_sets_with(cfg, labels(), &train, &TrainOptions::default(), &ok).unwrap();
        m.quantizers[2] = Some(q.clone());
        let b = m.to_bytes().unwrap();
        SetModel::from_bytes(&b, "seed").unwrap();
        out.write("set_file", &format!("attention_{}.mmq", loss.name()), &b);
    }
}

fn quantizers(out: &Out) {
    for (name, rspq, t) in [
        ("pq", false, Transform::None),
        ("rspq_l2", true, Transform::L2),
        ("pq_sqrt", false, Transform::Sqrt),
    ] {
        let b = quantizer_to_bytes(&quantizer(rspq, t)).unwrap();
        out.write("quantizer_file", &format!("{name}.mmq"), &b);
    }
}

fn texts(out: &Out) {
    // Tokenizer inputs: 4 config bytes (see fuzz_targets/tokenizer.rs), then the text.
    let cases: [(&[u8; 4], &str); 6] = [
        (b"\x00\x00\x00\x00", "hello world"),
        (b"\x02\x03\x02\x01", "great phone, love it! #fail"),
        (b"\x01\x01\x03\x03", "東京の天気は晴れです ขอบคุณมาก"),
        (
            b"\x03\x00\x00\x0a",
            "DON'T buy... 5€ ok😀ok ?!? http://t.co/x",
        ),
        (
            b"\x04\x02\x05\x0c",
            "Ǆemal ΣΑΣ İstanbul ß\u{0}\u{b}\u{c}tab\there",
        ),
        (b"\x05\x05\x01\x06", "¡¿«»» — … ‘’ “” 。、！"),
    ];
    for (i, (cfg, text)) in cases.iter().enumerate() {
        let mut b = cfg.to_vec();
        b.extend_from_slice(text.as_bytes());
        out.write("tokenizer", &format!("t{i}"), &b);
    }
    let configs = [
        serde_json::to_string(&ModelConfig::default()).unwrap(),
        serde_json::to_string(&ModelConfig {
            head: Head::Linear,
            idf: true,
            ..Default::default()
        })
        .unwrap(),
        serde_json::to_string(&FusionConfig {
            rank: Some(8),
            ..Default::default()
        })
        .unwrap(),
        serde_json::to_string(&SetConfig {
            modalities: vec![Modality {
                name: "t".into(),
                kind: ModalityKind::Text,
            }],
            ..Default::default()
        })
        .unwrap(),
        serde_json::to_string(&tok_cfg(1000)).unwrap(),
        serde_json::to_string(quantizer(true, Transform::L2).params()).unwrap(),
    ];
    for (i, c) in configs.iter().enumerate() {
        out.write("config_json", &format!("c{i}.json"), c.as_bytes());
    }
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus"));
    let out = Out(dir);
    classifiers(&out);
    fusions(&out);
    sets(&out);
    quantizers(&out);
    texts(&out);
}
