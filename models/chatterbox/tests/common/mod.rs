//! Fixture loading shared by the parity tests.
#![allow(dead_code)]

pub mod t3;
pub mod torch_save;

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::VarBuilder;

/// The fixture directory: `FERROVOX_CHATTERBOX_FIXTURES`, else this crate's `tests/fixtures`.
pub fn fixtures() -> PathBuf {
    std::env::var_os("FERROVOX_CHATTERBOX_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"))
}

/// The device the tests run on: `FERROVOX_TEST_DEVICE` (`cpu`, the default, or `cuda`). CUDA
/// runs in plain f32 (no TF32) so the CPU bounds hold there too.
pub fn device() -> Device {
    static DEVICE: std::sync::OnceLock<Device> = std::sync::OnceLock::new();
    DEVICE
        .get_or_init(|| match std::env::var("FERROVOX_TEST_DEVICE").as_deref() {
            Err(_) | Ok("cpu") => Device::Cpu,
            Ok("cuda") => Device::new_cuda(0).expect("FERROVOX_TEST_DEVICE=cuda: no CUDA device"),
            Ok(other) => panic!("FERROVOX_TEST_DEVICE={other}: expected cpu or cuda"),
        })
        .clone()
}

/// Every tensor of a fixture file (weights, inputs, outputs) and its `config` metadata.
pub struct Fixture {
    pub tensors: HashMap<String, Tensor>,
    pub config: serde_json::Value,
}

impl Fixture {
    pub fn load(name: &str) -> Self {
        let path = fixtures().join(format!("{name}.safetensors"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let config = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get("config"))
            .map(|c| serde_json::from_str(c).unwrap())
            .unwrap_or(serde_json::Value::Null);
        let tensors = candle_core::safetensors::load_buffer(&bytes, &device()).unwrap();
        Self { tensors, config }
    }

    /// A tensor by name, as f32 unless it holds ids.
    pub fn get(&self, name: &str) -> Tensor {
        self.tensors
            .get(name)
            .unwrap_or_else(|| panic!("fixture has no `{name}`"))
            .clone()
    }

    /// A VarBuilder over every tensor (weights are under their upstream keys).
    pub fn vb(&self) -> VarBuilder<'static> {
        VarBuilder::from_tensors(self.tensors.clone(), DType::F32, &device())
    }

    /// A VarBuilder over the tensors of several fixtures at once (the e2e test).
    pub fn vb_of(fixtures: &[&Fixture]) -> VarBuilder<'static> {
        let mut all = HashMap::new();
        for f in fixtures {
            all.extend(f.tensors.clone());
        }
        VarBuilder::from_tensors(all, DType::F32, &device())
    }
}

/// Largest absolute difference, as f32 (shapes must agree).
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    ferrovox_kernels::compare::max_abs_diff(a, b).expect("comparable tensors")
}

/// S3Gen's audio of `tokens` in `reference` under an end-to-end fixture's recorded draws
/// (`s3gen.noise.cfm`, `s3gen.noise.phase_rand`, `s3gen.noise.sine`).
pub fn s3gen_replayed(
    s3gen: &ferrovox_chatterbox::S3Gen,
    tokens: &[u32],
    reference: &ferrovox_chatterbox::SpeakerReference,
    fx: &Fixture,
) -> Tensor {
    let mut source = ferrovox_chatterbox::RecordedSourceNoise {
        phase_rand: fx.get("s3gen.noise.phase_rand"),
        sine: fx.get("s3gen.noise.sine"),
    };
    s3gen
        .inference(
            tokens,
            reference,
            ferrovox_chatterbox::S3GenNoise {
                cfm: fx.get("s3gen.noise.cfm"),
                source: &mut source,
            },
        )
        .unwrap()
}

/// The small S3Gen of the fixtures (weights from `encoder`, `cfm` and `hift`) and the e2e
/// fixture's speaker reference, as `s3gen_parity.rs` builds them.
pub fn small_s3gen() -> (
    ferrovox_chatterbox::S3Gen,
    ferrovox_chatterbox::SpeakerReference,
    Fixture,
) {
    use ferrovox_chatterbox::{FlowConfig, HiftConfig, S3Gen, S3GenConfig, SpeakerReference};
    fn from<T: serde::de::DeserializeOwned>(v: &serde_json::Value) -> T {
        serde_json::from_value(v.clone()).unwrap()
    }
    let (enc, cfm, hift) = (
        Fixture::load("encoder"),
        Fixture::load("cfm"),
        Fixture::load("hift"),
    );
    let mut flow: FlowConfig = from(&enc.config["flow"]);
    flow.encoder = from(&enc.config["encoder"]);
    flow.encoder.num_up_blocks = enc.config["encoder_swapped_parts"]["up_encoders"]
        .as_u64()
        .unwrap() as usize;
    flow.estimator = from(&cfm.config["estimator"]);
    let mut h = hift.config["hift"].clone();
    h["f0_predictor"] = hift.config["f0_predictor"].clone();
    let cfg = S3GenConfig {
        flow,
        hift: from::<HiftConfig>(&h),
    };
    let model = S3Gen::new(&cfg, Fixture::vb_of(&[&enc, &cfm, &hift])).unwrap();
    let e2e = Fixture::load("s3gen_e2e");
    let reference = SpeakerReference {
        prompt_tokens: ids(&e2e.get("in.prompt_tokens")),
        prompt_feat: e2e.get("in.prompt_feat"),
        xvector: e2e.get("in.xvector"),
    };
    (model, reference, e2e)
}

/// Token ids of an integer tensor.
pub fn ids(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::U32)
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// `n` pseudo-random speech tokens below `vocab` (a fixed LCG: the same ids on every run).
pub fn random_tokens(n: usize, vocab: u32, seed: u64) -> Vec<u32> {
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 33) % vocab as u64) as u32
        })
        .collect()
}

/// How far `got` is from `want`: (max |diff|, relative L2 ‖got − want‖ / ‖want‖, SNR in dB).
pub fn compare(got: &[f32], want: &[f32]) -> (f32, f64, f64) {
    assert_eq!(got.len(), want.len(), "lengths differ");
    let mut max = 0f32;
    let (mut err, mut power) = (0f64, 0f64);
    for (&g, &w) in got.iter().zip(want) {
        max = max.max((g - w).abs());
        err += ((g - w) as f64).powi(2);
        power += (w as f64).powi(2);
    }
    let rel = (err / power.max(1e-30)).sqrt();
    (max, rel, -20.0 * rel.max(1e-30).log10())
}

/// Mean |difference| of the log-mels (ln units, S3Gen's own 24 kHz front end) of two clips.
pub fn log_mel_distance(a: &[f32], b: &[f32]) -> f64 {
    let mel = ferrovox_audio::MelSpectrogram::s3gen().unwrap();
    let (a, b) = (mel.compute(a).unwrap(), mel.compute(b).unwrap());
    let sum: f64 = a
        .values
        .iter()
        .zip(&b.values)
        .map(|(x, y)| (x - y).abs() as f64)
        .sum();
    sum / a.values.len() as f64
}

/// Every tensor's shape in a released-size key manifest (`t3_full_keys.json`,
/// `s3gen_full_keys.json`, `ve_full_keys.json`: written by upstream's own classes).
pub fn full_size_shapes(name: &str) -> HashMap<String, Vec<usize>> {
    let path = fixtures().join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let manifest: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    manifest["tensors"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                serde_json::from_value(v["shape"].clone()).unwrap(),
            )
        })
        .collect()
}

/// A VarBuilder on `device` over a manifest: each read must name a tensor of it at its shape
/// (else the build fails naming it) and gets zeros (calloc'd pages on the CPU, never touched);
/// the names read are recorded.
pub fn manifest_vb(
    shapes: &HashMap<String, Vec<usize>>,
    device: &Device,
) -> (
    VarBuilder<'static>,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    let read = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let backend = Manifest {
        shapes: shapes.clone(),
        read: read.clone(),
    };
    (
        VarBuilder::from_backend(Box::new(backend), DType::F32, device.clone()),
        read,
    )
}

struct Manifest {
    shapes: HashMap<String, Vec<usize>>,
    read: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl candle_nn::var_builder::SimpleBackend for Manifest {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let Some(shape) = self.shapes.get(name) else {
            candle_core::bail!("the released checkpoint has no `{name}`");
        };
        if shape.as_slice() != s.dims() {
            candle_core::bail!(
                "`{name}` is {shape:?} in the released checkpoint, read as {:?}",
                s.dims()
            );
        }
        self.read.lock().unwrap().push(name.to_string());
        Tensor::zeros(s, dtype, dev)
    }
    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let shape = self
            .shapes
            .get(name)
            .ok_or_else(|| candle_core::Error::Msg(format!("no `{name}`")))?;
        self.read.lock().unwrap().push(name.to_string());
        Tensor::zeros(shape.as_slice(), dtype, dev)
    }
    fn contains_tensor(&self, name: &str) -> bool {
        self.shapes.contains_key(name)
    }
}

/// The closed-form clip the cloning and tokenizer generators write as a formula rather than as
/// samples: a voiced tone whose pitch glides sinusoidally, with syllable-rate amplitude and
/// LCG noise, rounded to 16 bits. [`FormulaClip::samples`] evaluates it in the generators' f64
/// operations and order, so the clip is rebuilt bit for bit.
pub struct FormulaClip {
    pub f0: f64,
    pub f0_depth: f64,
    pub f0_rate: f64,
    pub am_rate: f64,
    pub env_base: f64,
    pub env_depth: f64,
    pub amp: f64,
    pub noise: f64,
    pub harmonics: u64,
    pub seed: u64,
}

impl FormulaClip {
    /// `n` samples at `rate`.
    pub fn samples(&self, n: usize, rate: u32) -> Vec<f32> {
        let two_pi = 2.0 * std::f64::consts::PI;
        let sr = f64::from(rate);
        let mut state = self.seed;
        (0..n)
            .map(|i| {
                let t = i as f64 / sr;
                let phase = two_pi
                    * (self.f0 * t
                        - self.f0_depth / (two_pi * self.f0_rate)
                            * (two_pi * self.f0_rate * t).cos());
                let mut voiced = 0.0;
                for k in 1..=self.harmonics {
                    voiced += (k as f64 * phase).sin() / k as f64;
                }
                let env = self.env_base + self.env_depth * (two_pi * self.am_rate * t).sin();
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let u = (state >> 11) as f64 / 9_007_199_254_740_992.0;
                let x = self.amp * env * voiced + self.noise * (u - 0.5);
                let pcm = (x * 32767.0 + 0.5).floor().clamp(-32768.0, 32767.0);
                pcm as f32 / 32768.0
            })
            .collect()
    }
}
