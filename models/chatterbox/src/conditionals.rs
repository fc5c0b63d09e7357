//! Mirrors `Conditionals` (`chatterbox/tts.py`): a voice as both halves of Chatterbox read it,
//! T3's conditioning and S3Gen's speaker reference. Loads upstream's `conds.pt` (the built-in
//! voice, a `torch.save` of `dict(t3=T3Cond.__dict__, gen=ref_dict)`) as it is, and saves and
//! loads the same tensors as safetensors.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::s3gen::SpeakerReference;
use crate::t3::T3Cond;
use crate::{Error, Result};

/// A voice for Chatterbox.
#[derive(Debug, Clone)]
pub struct Conditionals {
    pub t3: T3Cond,
    pub gen: SpeakerReference,
}

/// Upstream's default exaggeration, for a file that stores none.
const DEFAULT_EXAGGERATION: f32 = 0.5;

impl Conditionals {
    /// Reads upstream's `conds.pt`. A file that is not a torch archive, or lacks a tensor a
    /// voice needs, is an error naming the file and what is wrong.
    pub fn load_pt(path: &Path, device: &Device) -> Result<Self> {
        let bad = |reason: String| Error::Checkpoint {
            path: path.display().to_string(),
            reason,
        };
        if !path.is_file() {
            return Err(bad("file not found".into()));
        }
        let part = |key: &str| -> Result<HashMap<String, Tensor>> {
            let tensors = crate::checkpoint::pickle_tensor_infos(path, Some(key))
                .and_then(|_| {
                    crate::checkpoint::guarded_pickle(|| {
                        candle_core::pickle::read_all_with_key(path, Some(key))
                    })
                })
                .map_err(|e| bad(format!("not a readable conds.pt (torch archive): {e}")))?;
            tensors
                .into_iter()
                .map(|(k, t)| Ok((k, t.to_device(device)?)))
                .collect()
        };
        Self::from_parts(part("t3")?, part("gen")?).map_err(|e| match e {
            Error::Input(reason) => bad(reason),
            other => other,
        })
    }

    /// Reads [`Conditionals::save`]'s safetensors file (`t3.*` and `gen.*` tensors).
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::Checkpoint {
            path: path.display().to_string(),
            reason: format!("reading the voice: {e}"),
        })?;
        Self::from_safetensors(&bytes, device).map_err(|e| match e {
            Error::Checkpoint { reason, .. } => Error::Checkpoint {
                path: path.display().to_string(),
                reason,
            },
            other => other,
        })
    }

    /// [`Conditionals::load`] from the bytes of such a file (a voice store's object).
    pub fn from_safetensors(bytes: &[u8], device: &Device) -> Result<Self> {
        let bad = |reason: String| Error::Checkpoint {
            path: "(voice bytes)".into(),
            reason,
        };
        let all = candle_core::safetensors::load_buffer(bytes, device)
            .map_err(|e| bad(format!("not a readable voice file: {e}")))?;
        let mut t3 = HashMap::new();
        let mut gen = HashMap::new();
        for (k, v) in all {
            if let Some(name) = k.strip_prefix("t3.") {
                t3.insert(name.to_string(), v);
            } else if let Some(name) = k.strip_prefix("gen.") {
                gen.insert(name.to_string(), v);
            }
        }
        Self::from_parts(t3, gen).map_err(|e| match e {
            Error::Input(reason) => bad(reason),
            other => other,
        })
    }

    /// Writes the voice as safetensors under upstream's field names (`t3.speaker_emb`,
    /// `gen.prompt_feat`, ...), in the dtypes upstream keeps them.
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = self.to_safetensors()?;
        std::fs::write(path, bytes).map_err(|e| Error::Checkpoint {
            path: path.display().to_string(),
            reason: format!("writing the voice: {e}"),
        })
    }

    /// The bytes [`Conditionals::save`] writes.
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        let mut out: HashMap<String, Tensor> = HashMap::new();
        out.insert(
            "t3.speaker_emb".into(),
            self.t3.speaker_emb.to_dtype(DType::F32)?,
        );
        if let Some(t) = &self.t3.cond_prompt_speech_tokens {
            out.insert(
                "t3.cond_prompt_speech_tokens".into(),
                t.to_dtype(DType::I64)?,
            );
        }
        out.insert(
            "t3.emotion_adv".into(),
            Tensor::full(self.t3.emotion_adv, (1, 1, 1), &Device::Cpu)?,
        );
        let n = self.gen.prompt_tokens.len();
        let tokens: Vec<i64> = self.gen.prompt_tokens.iter().map(|&t| t as i64).collect();
        out.insert(
            "gen.prompt_token".into(),
            Tensor::from_vec(tokens, (1, n), &Device::Cpu)?,
        );
        out.insert(
            "gen.prompt_token_len".into(),
            Tensor::new(&[n as i64], &Device::Cpu)?,
        );
        out.insert(
            "gen.prompt_feat".into(),
            self.gen.prompt_feat.to_dtype(DType::F32)?,
        );
        out.insert(
            "gen.embedding".into(),
            self.gen.xvector.to_dtype(DType::F32)?,
        );
        let out: HashMap<String, Tensor> = out
            .into_iter()
            .map(|(k, v)| Ok((k, v.to_device(&Device::Cpu)?)))
            .collect::<Result<_>>()?;
        safetensors::serialize(&out, None).map_err(|e| Error::Checkpoint {
            path: "(voice bytes)".into(),
            reason: format!("serializing the voice: {e}"),
        })
    }

    fn from_parts(
        mut t3: HashMap<String, Tensor>,
        mut gen: HashMap<String, Tensor>,
    ) -> Result<Self> {
        let take = |map: &mut HashMap<String, Tensor>, part: &str, key: &str| {
            map.remove(key).ok_or_else(|| {
                Error::Input(format!("no `{part}.{key}` tensor: not a Chatterbox voice"))
            })
        };
        let speaker_emb = take(&mut t3, "t3", "speaker_emb")?.to_dtype(DType::F32)?;
        let cond_prompt_speech_tokens = t3
            .remove("cond_prompt_speech_tokens")
            .map(|t| t.to_dtype(DType::U32))
            .transpose()?;
        let emotion_adv = match t3.remove("emotion_adv") {
            Some(t) => t
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?
                .first()
                .copied()
                .unwrap_or(DEFAULT_EXAGGERATION),
            None => DEFAULT_EXAGGERATION,
        };
        let prompt_token = take(&mut gen, "gen", "prompt_token")?;
        let prompt_tokens: Vec<u32> = prompt_token
            .flatten_all()?
            .to_dtype(DType::U32)?
            .to_vec1()?;
        // `prompt_token_len` may be shorter than the stored row (upstream pads batches).
        let prompt_tokens = match gen.remove("prompt_token_len") {
            Some(len) => {
                let len = len.flatten_all()?.to_dtype(DType::U32)?.to_vec1::<u32>()?;
                let n = len.first().map_or(prompt_tokens.len(), |&n| n as usize);
                prompt_tokens[..n.min(prompt_tokens.len())].to_vec()
            }
            None => prompt_tokens,
        };
        let prompt_feat = take(&mut gen, "gen", "prompt_feat")?.to_dtype(DType::F32)?;
        let xvector = take(&mut gen, "gen", "embedding")?.to_dtype(DType::F32)?;
        if prompt_feat.rank() != 3 || xvector.rank() != 2 || speaker_emb.rank() != 2 {
            return Err(Error::Input(format!(
                "unexpected shapes: speaker_emb {:?}, prompt_feat {:?}, embedding {:?}",
                speaker_emb.dims(),
                prompt_feat.dims(),
                xvector.dims()
            )));
        }
        Ok(Self {
            t3: T3Cond {
                speaker_emb,
                cond_prompt_speech_tokens,
                emotion_adv,
            },
            gen: SpeakerReference {
                prompt_tokens,
                prompt_feat,
                xvector,
            },
        })
    }
}
