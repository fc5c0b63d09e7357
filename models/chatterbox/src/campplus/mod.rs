//! CAMPPlus (upstream `chatterbox.models.s3gen.xvector.CAMPPlus`), S3Gen's speaker encoder:
//! a 16 kHz reference clip to the 192-d x-vector the flow is conditioned on, loading the
//! released `s3gen.safetensors` under its own keys (`speaker_encoder.*`).
//!
//! | module | upstream (`s3gen/xvector.py`) |
//! |---|---|
//! | this one | `CAMPPlus`, `extract_feature` (Kaldi fbank: [`ferrovox_audio::KaldiFbank`]) |
//! | [`fcm`] | `FCM`, `BasicResBlock` |
//! | [`tdnn`] | `TDNNLayer`, `TransitLayer`, `DenseLayer` |
//! | [`cam`] | `CAMLayer`, `CAMDenseTDNNLayer`, `CAMDenseTDNNBlock` |
//! | [`pooling`] | `statistics_pooling`, `StatsPool` |
//! | `batch_norm` | `get_nonlinear`'s BatchNorms, in eval form |
//!
//! Every BatchNorm runs on its running statistics (eval mode), folded into the conv before it
//! where there is one.

mod batch_norm;
pub mod cam;
pub mod fcm;
pub mod pooling;
pub mod tdnn;

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use ferrovox_audio::{FbankConfig, KaldiFbank};
use serde::{Deserialize, Serialize};

use self::batch_norm::BatchNorm;
use self::cam::{BlockSpec, CamDenseTdnnBlock};
use self::fcm::Fcm;
use self::tdnn::{DenseLayer, TdnnLayer, TransitLayer};
use crate::{Error, Result};

/// The key prefix of CAMPPlus in `s3gen.safetensors` (`S3Token2Mel.speaker_encoder`).
pub const PREFIX: &str = "speaker_encoder";

/// CAMPPlus's input rate.
pub const SAMPLE_RATE: u32 = 16_000;

/// The three dense blocks CAMPPlus always builds: (layers, kernel, dilation).
pub const BLOCKS: [BlockSpec; 3] = [
    BlockSpec {
        num_layers: 12,
        kernel: 3,
        dilation: 1,
    },
    BlockSpec {
        num_layers: 24,
        kernel: 3,
        dilation: 2,
    },
    BlockSpec {
        num_layers: 16,
        kernel: 3,
        dilation: 2,
    },
];

/// The TDNN's kernel and stride (`TDNNLayer(channels, init_channels, 5, stride=2)`).
const TDNN_KERNEL: usize = 5;
const TDNN_STRIDE: usize = 2;

/// `CAMPPlus`'s constructor arguments, named as upstream names them so fixture configs
/// deserialize as they are. `Default` is the released model (`S3Token2Mel.__init__` builds
/// `CAMPPlus(memory_efficient=False)`, every size at its default).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct CampPlusConfig {
    /// Mel bins of the fbank features (a multiple of 8: the head halves it three times).
    pub feat_dim: usize,
    pub embedding_size: usize,
    /// Channels each dense layer adds.
    pub growth_rate: usize,
    /// Bottleneck width of a dense layer, in multiples of `growth_rate`.
    pub bn_size: usize,
    /// Channels out of the TDNN.
    pub init_channels: usize,
    /// Width of the 2-D head (`FCM(m_channels=...)`); CAMPPlus always builds `FCM`'s default.
    pub m_channels: usize,
}

impl Default for CampPlusConfig {
    fn default() -> Self {
        Self {
            feat_dim: 80,
            embedding_size: 192,
            growth_rate: 32,
            bn_size: 4,
            init_channels: 128,
            m_channels: 32,
        }
    }
}

impl CampPlusConfig {
    fn validate(&self) -> Result<()> {
        let positive = [
            self.feat_dim,
            self.embedding_size,
            self.growth_rate,
            self.bn_size,
            self.init_channels,
            self.m_channels,
        ];
        if positive.contains(&0) || !self.feat_dim.is_multiple_of(8) {
            return Err(Error::Config(format!(
                "CAMPPlus needs positive sizes and feat_dim a multiple of 8: {self:?}"
            )));
        }
        if self.bn_channels() < 2 {
            return Err(Error::Config(format!(
                "CAMPPlus's bottleneck (bn_size * growth_rate = {}) must be at least 2 wide: \
                 its context mask halves it",
                self.bn_channels()
            )));
        }
        Ok(())
    }

    /// Channels out of the head: `m_channels * feat_dim / 8`.
    pub fn head_channels(&self) -> usize {
        self.m_channels * (self.feat_dim / 8)
    }

    /// A dense layer's bottleneck width.
    pub fn bn_channels(&self) -> usize {
        self.bn_size * self.growth_rate
    }

    /// Channels into each dense block, in order, and out of the last transit layer.
    pub fn block_channels(&self) -> ([usize; 3], usize) {
        let mut into = [0; 3];
        let mut channels = self.init_channels;
        for (slot, block) in into.iter_mut().zip(BLOCKS) {
            *slot = channels;
            channels = (channels + block.num_layers * self.growth_rate) / 2;
        }
        (into, channels)
    }
}

/// `CAMPPlus` with `output_level="segment"`, in eval mode.
#[derive(Debug, Clone)]
pub struct CampPlus {
    cfg: CampPlusConfig,
    fbank: KaldiFbank,
    device: Device,
    head: Fcm,
    tdnn: TdnnLayer,
    blocks: Vec<CamDenseTdnnBlock>,
    transits: Vec<TransitLayer>,
    out_nonlinear: BatchNorm,
    dense: DenseLayer,
}

/// Every stage's output for one batch of features, as [`CampPlus::stages`] computes them.
#[derive(Debug, Clone)]
pub struct CampPlusStages {
    /// `[b, head_channels, t]`, the FCM head.
    pub head: Tensor,
    /// `[b, init_channels, (t - 1) / 2 + 1]`.
    pub tdnn: Tensor,
    /// Each dense block's output (its input and every layer's, concatenated).
    pub blocks: Vec<Tensor>,
    /// Each transit layer's output.
    pub transits: Vec<Tensor>,
    /// `[b, 2 c]`: mean and std over time of `out_nonlinear(transit3)`.
    pub stats: Tensor,
    /// `[b, embedding_size]`.
    pub embedding: Tensor,
}

impl CampPlus {
    /// The fewest samples [`Self::embed`] takes: three fbank frames, which the TDNN's stride
    /// leaves two, the least an unbiased std pools (upstream returns NaN below that, and
    /// fails below one frame).
    pub const MIN_SAMPLES: usize = 400 + 2 * 160;

    /// Builds the model from `vb` at the speaker encoder's own level (`vb.pp(PREFIX)` of an
    /// s3gen checkpoint).
    pub fn new(cfg: &CampPlusConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let fbank = KaldiFbank::new(FbankConfig::with_mel_bins(cfg.feat_dim))
            .map_err(|e| Error::Config(format!("CAMPPlus's fbank: {e}")))?;
        let head = Fcm::new(vb.pp("head"), cfg.m_channels)?;
        let xv = vb.pp("xvector");
        let tdnn = TdnnLayer::new(
            xv.pp("tdnn"),
            cfg.head_channels(),
            cfg.init_channels,
            TDNN_KERNEL,
            TDNN_STRIDE,
        )?;
        let (into, out) = cfg.block_channels();
        let mut blocks = Vec::with_capacity(3);
        let mut transits = Vec::with_capacity(3);
        for (i, (spec, cin)) in BLOCKS.iter().zip(into).enumerate() {
            blocks.push(CamDenseTdnnBlock::new(
                xv.pp(format!("block{}", i + 1)),
                *spec,
                cin,
                cfg.growth_rate,
                cfg.bn_channels(),
            )?);
            let grown = cin + spec.num_layers * cfg.growth_rate;
            transits.push(TransitLayer::new(
                xv.pp(format!("transit{}", i + 1)),
                grown,
                grown / 2,
            )?);
        }
        Ok(Self {
            cfg: cfg.clone(),
            fbank,
            device: vb.device().clone(),
            head,
            tdnn,
            blocks,
            transits,
            out_nonlinear: BatchNorm::new(&xv.pp("out_nonlinear.batchnorm"), out, true)?,
            dense: DenseLayer::new(xv.pp("dense"), 2 * out, cfg.embedding_size)?,
        })
    }

    pub fn config(&self) -> &CampPlusConfig {
        &self.cfg
    }

    /// The x-vector `[1, embedding_size]` of a mono 16 kHz clip: `inference` of a one-clip
    /// batch, as `S3Token2Mel.embed_ref` calls it. An empty, non-finite or too short clip
    /// (below [`Self::MIN_SAMPLES`]) is an [`Error::Input`].
    pub fn embed(&self, wav_16k: &[f32]) -> Result<Tensor> {
        self.forward(&self.features(wav_16k)?)
    }

    /// `extract_feature` of one clip: its Kaldi fbank (`num_mel_bins = feat_dim`) minus the
    /// fbank's mean over frames, `[1, frames, feat_dim]`.
    pub fn features(&self, wav_16k: &[f32]) -> Result<Tensor> {
        if wav_16k.is_empty() {
            return Err(Error::Input("the speaker reference is empty".into()));
        }
        if let Some(i) = wav_16k.iter().position(|x| !x.is_finite()) {
            return Err(Error::Input(format!(
                "the speaker reference has a non-finite sample ({}) at {i}",
                wav_16k[i]
            )));
        }
        let window = self.fbank.window_size();
        if wav_16k.len() < Self::MIN_SAMPLES {
            let why = if wav_16k.len() < window {
                format!("shorter than one {window}-sample fbank frame")
            } else {
                "too short for the two TDNN frames the pooled std needs".to_string()
            };
            return Err(Error::Input(format!(
                "the speaker reference has {} samples at 16 kHz, {why}; CAMPPlus needs at \
                 least {}",
                wav_16k.len(),
                Self::MIN_SAMPLES
            )));
        }
        let fbank = self
            .fbank
            .compute(wav_16k)
            .map_err(|e| Error::Input(format!("fbank of the speaker reference: {e}")))?;
        let (frames, bins) = (fbank.frames, fbank.n_mels);
        let mut values = fbank.values;
        for m in 0..bins {
            // torch's CPU mean: an accurate f32 sum divided in f32.
            let sum: f64 = (0..frames).map(|t| values[t * bins + m] as f64).sum();
            let mean = sum as f32 / frames as f32;
            (0..frames).for_each(|t| values[t * bins + m] -= mean);
        }
        Ok(Tensor::from_vec(values, (1, frames, bins), &self.device)?)
    }

    /// `forward`: features `[b, t, feat_dim]` to x-vectors `[b, embedding_size]`.
    pub fn forward(&self, feats: &Tensor) -> Result<Tensor> {
        let mut x = self.tdnn(&self.head(feats)?)?;
        for i in 0..self.blocks.len() {
            x = self.transit(i, &self.block(i, &x)?)?;
        }
        self.dense(&self.pool(&x)?)
    }

    /// Every stage of [`Self::forward`].
    pub fn stages(&self, feats: &Tensor) -> Result<CampPlusStages> {
        let head = self.head(feats)?;
        let tdnn = self.tdnn(&head)?;
        let (mut blocks, mut transits) = (Vec::new(), Vec::new());
        let mut x = tdnn.clone();
        for i in 0..self.blocks.len() {
            blocks.push(self.block(i, &x)?);
            x = self.transit(i, &blocks[i])?;
            transits.push(x.clone());
        }
        let stats = self.pool(&x)?;
        let embedding = self.dense(&stats)?;
        Ok(CampPlusStages {
            head,
            tdnn,
            blocks,
            transits,
            stats,
            embedding,
        })
    }

    /// The FCM head on features `[b, t, feat_dim]` (transposed to `[b, feat_dim, t]` first,
    /// as `forward` does): `[b, head_channels, t]`.
    pub fn head(&self, feats: &Tensor) -> Result<Tensor> {
        let (_, _, f) = feats.dims3()?;
        if f != self.cfg.feat_dim {
            return Err(Error::Input(format!(
                "features have {f} bins, CAMPPlus takes {}",
                self.cfg.feat_dim
            )));
        }
        self.head.forward(&feats.transpose(1, 2)?.contiguous()?)
    }

    /// `xvector.tdnn`.
    pub fn tdnn(&self, x: &Tensor) -> Result<Tensor> {
        self.tdnn.forward(x)
    }

    /// `xvector.block{i + 1}`, `i` in `0..3`.
    pub fn block(&self, i: usize, x: &Tensor) -> Result<Tensor> {
        self.blocks[i].forward(x)
    }

    /// `xvector.transit{i + 1}`, `i` in `0..3`.
    pub fn transit(&self, i: usize, x: &Tensor) -> Result<Tensor> {
        self.transits[i].forward(x)
    }

    /// `xvector.out_nonlinear` then `xvector.stats`: `[b, c, t]` to `[b, 2 c]`.
    pub fn pool(&self, x: &Tensor) -> Result<Tensor> {
        pooling::statistics_pooling(&self.out_nonlinear.forward_relu(x)?)
    }

    /// `xvector.dense`: pooled statistics `[b, 2 c]` to x-vectors `[b, embedding_size]`.
    pub fn dense(&self, stats: &Tensor) -> Result<Tensor> {
        self.dense.forward(stats)
    }

    /// Every `speaker_encoder.*` key of an s3gen checkpoint, as
    /// `S3Gen().state_dict()` names them: the tensors [`Self::new`] reads plus each
    /// BatchNorm's `num_batches_tracked` (an int64 training counter it does not read).
    /// The key set does not depend on the sizes.
    pub fn expected_keys() -> Vec<String> {
        fn norm(keys: &mut Vec<String>, at: String, affine: bool) {
            if affine {
                keys.push(format!("{at}.weight"));
                keys.push(format!("{at}.bias"));
            }
            for buffer in ["running_mean", "running_var", "num_batches_tracked"] {
                keys.push(format!("{at}.{buffer}"));
            }
        }
        let mut keys = Vec::new();
        let head = format!("{PREFIX}.head");
        keys.push(format!("{head}.conv1.weight"));
        norm(&mut keys, format!("{head}.bn1"), true);
        for layer in ["layer1", "layer2"] {
            for i in 0..2 {
                let block = format!("{head}.{layer}.{i}");
                for (conv, bn) in [("conv1", "bn1"), ("conv2", "bn2")] {
                    keys.push(format!("{block}.{conv}.weight"));
                    norm(&mut keys, format!("{block}.{bn}"), true);
                }
                if i == 0 {
                    keys.push(format!("{block}.shortcut.0.weight"));
                    norm(&mut keys, format!("{block}.shortcut.1"), true);
                }
            }
        }
        keys.push(format!("{head}.conv2.weight"));
        norm(&mut keys, format!("{head}.bn2"), true);
        let xv = format!("{PREFIX}.xvector");
        keys.push(format!("{xv}.tdnn.linear.weight"));
        norm(&mut keys, format!("{xv}.tdnn.nonlinear.batchnorm"), true);
        for (b, spec) in BLOCKS.iter().enumerate() {
            for l in 1..=spec.num_layers {
                let layer = format!("{xv}.block{}.tdnnd{l}", b + 1);
                norm(&mut keys, format!("{layer}.nonlinear1.batchnorm"), true);
                keys.push(format!("{layer}.linear1.weight"));
                norm(&mut keys, format!("{layer}.nonlinear2.batchnorm"), true);
                keys.push(format!("{layer}.cam_layer.linear_local.weight"));
                for conv in ["linear1", "linear2"] {
                    keys.push(format!("{layer}.cam_layer.{conv}.weight"));
                    keys.push(format!("{layer}.cam_layer.{conv}.bias"));
                }
            }
            let transit = format!("{xv}.transit{}", b + 1);
            norm(&mut keys, format!("{transit}.nonlinear.batchnorm"), true);
            keys.push(format!("{transit}.linear.weight"));
        }
        norm(&mut keys, format!("{xv}.out_nonlinear.batchnorm"), true);
        keys.push(format!("{xv}.dense.linear.weight"));
        norm(&mut keys, format!("{xv}.dense.nonlinear.batchnorm"), false);
        keys
    }
}
