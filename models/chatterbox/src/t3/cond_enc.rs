//! Mirrors `T3Cond` and `T3CondEnc` (`t3/modules/cond_enc.py`): a voice's conditioning (speaker
//! embedding, prompt speech tokens, exaggeration) as the prefix T3 reads before the text.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::config::T3Config;
use super::perceiver::Perceiver;

/// A voice's conditioning for T3 (upstream's `T3Cond`; its unused CLAP field is left out).
#[derive(Debug, Clone)]
pub struct T3Cond {
    /// The voice encoder's embedding `[1, speaker_embed_size]`.
    pub speaker_emb: Tensor,
    /// The reference's first speech tokens `[1, n]` (u32), at most `speech_cond_prompt_len`.
    pub cond_prompt_speech_tokens: Option<Tensor>,
    /// Exaggeration ("emotion adversarial" in upstream's names), 0.5 by default.
    pub emotion_adv: f32,
}

/// `spkr_enc`, `emotion_adv_fc` and the perceiver, under `cond_enc.*`.
#[derive(Debug, Clone)]
pub struct T3CondEnc {
    spkr_enc: Linear,
    emotion_adv_fc: Option<Linear>,
    perceiver: Option<Perceiver>,
    speaker_embed_size: usize,
}

impl T3CondEnc {
    pub fn new(cfg: &T3Config, vb: VarBuilder) -> Result<Self> {
        let dim = cfg.n_channels();
        Ok(Self {
            spkr_enc: candle_nn::linear(cfg.speaker_embed_size, dim, vb.pp("spkr_enc"))?,
            emotion_adv_fc: cfg
                .emotion_adv
                .then(|| candle_nn::linear_no_bias(1, dim, vb.pp("emotion_adv_fc")))
                .transpose()?,
            perceiver: cfg
                .use_perceiver_resampler
                .then(|| Perceiver::new(&cfg.perceiver, vb.pp("perceiver")))
                .transpose()?,
            speaker_embed_size: cfg.speaker_embed_size,
        })
    }

    /// The conditioning prefix `[b, 1 + prompt + 1, dim]`: speaker, resampled prompt
    /// embeddings (`prompt_emb` `[b, n, dim]`, already embedded with positions), exaggeration.
    pub fn forward(
        &self,
        speaker_emb: &Tensor,
        prompt_emb: Option<&Tensor>,
        emotion_adv: f32,
    ) -> Result<Tensor> {
        // A voice's embedding is f32 whatever the model's dtype.
        let speaker_emb = speaker_emb.to_dtype(self.spkr_enc.weight().dtype())?;
        let speaker = self
            .spkr_enc
            .forward(&speaker_emb.reshape(((), self.speaker_embed_size))?)?
            .unsqueeze(1)?;
        let b = speaker.dim(0)?;
        let mut parts = vec![speaker];
        if let Some(prompt) = prompt_emb {
            parts.push(match &self.perceiver {
                Some(p) => p.forward(prompt)?,
                None => prompt.clone(),
            });
        }
        if let Some(fc) = &self.emotion_adv_fc {
            let e = Tensor::full(emotion_adv, (b, 1, 1), speaker_emb.device())?
                .to_dtype(speaker_emb.dtype())?;
            parts.push(fc.forward(&e)?);
        }
        Tensor::cat(&parts, 1)
    }
}
