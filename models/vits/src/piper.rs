//! Piper voices (`.onnx` + `.onnx.json`): the ONNX initializers are renamed to transformers'
//! state-dict names and loaded into the same modules as MMS-TTS checkpoints.
//!
//! Piper exports original-VITS names (`enc_p.*`, `dp.*`, `flow.*`, `dec.*`). The exporter folds
//! weight norm into anonymous initializers (`onnx::Conv_8168`) whose consuming node
//! (`/flow/flows.6/enc/in_layers.0/Conv`) names the module, and folds the duration predictor's
//! affine scale into `exp(−logs)`. Constants folded by the exporter are not weights and are
//! ignored.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;

use crate::onnx::{self, Graph, InitData};
use crate::{Config, Error, ResBlockKind, Result};

/// The `.onnx.json` file beside a Piper voice.
#[derive(Debug, Clone, Deserialize)]
pub struct PiperVoiceConfig {
    pub audio: PiperAudio,
    #[serde(default)]
    pub espeak: Option<PiperEspeak>,
    #[serde(default)]
    pub inference: PiperInference,
    #[serde(default)]
    pub phoneme_type: Option<String>,
    pub phoneme_id_map: HashMap<String, Vec<i64>>,
    #[serde(default)]
    pub num_symbols: Option<usize>,
    #[serde(default)]
    pub num_speakers: Option<usize>,
    #[serde(default)]
    pub speaker_id_map: HashMap<String, u32>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PiperAudio {
    pub sample_rate: u32,
    #[serde(default)]
    pub quality: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PiperEspeak {
    pub voice: String,
}

/// Piper's inference defaults.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct PiperInference {
    #[serde(default = "default_noise_scale")]
    pub noise_scale: f64,
    #[serde(default = "default_length_scale")]
    pub length_scale: f64,
    #[serde(default = "default_noise_w")]
    pub noise_w: f64,
}

fn default_noise_scale() -> f64 {
    0.667
}
fn default_length_scale() -> f64 {
    1.0
}
fn default_noise_w() -> f64 {
    0.8
}

impl Default for PiperInference {
    fn default() -> Self {
        Self {
            noise_scale: default_noise_scale(),
            length_scale: default_length_scale(),
            noise_w: default_noise_w(),
        }
    }
}

impl PiperVoiceConfig {
    /// Reads a `.onnx.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }
}

/// Weights (transformers names) and the config inferred from a Piper ONNX file.
#[derive(Debug)]
pub struct PiperWeights {
    pub config: Config,
    pub tensors: HashMap<String, Tensor>,
}

/// Reads a Piper `.onnx` voice into transformers-named tensors on `device`.
pub fn load_onnx(path: &Path, voice: &PiperVoiceConfig, device: &Device) -> Result<PiperWeights> {
    let onnx_err = |reason: String| Error::Onnx {
        path: path.display().to_string(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })?;
    let graph = onnx::parse_model(&bytes).map_err(|e| onnx_err(e.0))?;
    let vits = vits_named_weights(&graph).map_err(onnx_err)?;
    let mut tensors = HashMap::new();
    for (name, (dims, values)) in vits {
        let Some(hf) = to_transformers_name(&name) else {
            continue;
        };
        let mut t = Tensor::from_vec(values, dims.as_slice(), device)?;
        if hf.contains(".attention.") && hf.ends_with("_proj.weight") {
            t = t.squeeze(2)?;
        }
        tensors.insert(hf, t);
    }
    let config = infer_config(&tensors, &graph, voice).map_err(onnx_err)?;
    Ok(PiperWeights { config, tensors })
}

type Named = HashMap<String, (Vec<usize>, Vec<f32>)>;

/// The float weights under original-VITS names.
fn vits_named_weights(graph: &Graph) -> std::result::Result<Named, String> {
    let mut consumers: HashMap<&str, Vec<(&str, &str, usize)>> = HashMap::new();
    for node in &graph.nodes {
        for (i, input) in node.inputs.iter().enumerate() {
            consumers.entry(input.as_str()).or_default().push((
                node.name.as_str(),
                node.op_type.as_str(),
                i,
            ));
        }
    }
    let mut out = Named::new();
    for init in &graph.initializers {
        let InitData::F32(values) = &init.data else {
            continue;
        };
        let used_by = consumers
            .get(init.name.as_str())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let name = if init.name == "/dp/flows.0/Exp_output_0" {
            // exp(−logs) of the affine flow; recover logs.
            let logs = values.iter().map(|v| -v.ln()).collect();
            out.insert("dp.flows.0.logs".into(), (init.dims.clone(), logs));
            continue;
        } else if let Some((node, _, _)) = used_by
            .iter()
            .find(|(node, op, i)| *op == "Gather" && *i == 0 && node.starts_with("/enc_p/emb"))
        {
            debug_assert!(node.starts_with("/enc_p/emb"));
            "enc_p.emb.weight".to_string()
        } else if is_state_dict_name(&init.name) {
            init.name.clone()
        } else if let Some((node, _, _)) = used_by
            .iter()
            .find(|(_, op, i)| (*op == "Conv" || *op == "ConvTranspose") && *i == 1)
        {
            let module = node
                .trim_start_matches('/')
                .rsplit_once('/')
                .map(|(m, _)| m);
            match module {
                Some(m) => format!("{}.weight", m.replace('/', ".")),
                None => continue,
            }
        } else {
            continue;
        };
        out.insert(name, (init.dims.clone(), values.clone()));
    }
    if !out.contains_key("enc_p.emb.weight") {
        return Err(
            "not a Piper VITS export: no text embedding (`/enc_p/emb` Gather) found".into(),
        );
    }
    if !out.keys().any(|k| k.starts_with("dec.")) {
        return Err("not a Piper VITS export: no decoder (`dec.*`) weights".into());
    }
    Ok(out)
}

fn is_state_dict_name(name: &str) -> bool {
    ["enc_p.", "dp.", "flow.", "dec.", "emb_g."]
        .iter()
        .any(|p| name.starts_with(p))
}

/// Maps an original-VITS state-dict name to transformers' `VitsModel` name; `None` for
/// weights inference does not use.
pub fn to_transformers_name(name: &str) -> Option<String> {
    let parts: Vec<&str> = name.split('.').collect();
    fn ln(p: &str) -> &str {
        match p {
            "gamma" => "weight",
            "beta" => "bias",
            other => other,
        }
    }
    let rest = |from: usize| {
        parts[from..]
            .iter()
            .map(|p| ln(p))
            .collect::<Vec<_>>()
            .join(".")
    };
    let mapped = match parts.as_slice() {
        ["enc_p", "emb", "weight"] => "text_encoder.embed_tokens.weight".to_string(),
        ["enc_p", "proj", ..] => format!("text_encoder.project.{}", rest(2)),
        ["enc_p", "encoder", group, i, ..] => {
            let layer = format!("text_encoder.encoder.layers.{i}");
            match *group {
                "attn_layers" => {
                    let field = match parts[4] {
                        "conv_q" => "q_proj",
                        "conv_k" => "k_proj",
                        "conv_v" => "v_proj",
                        "conv_o" => "out_proj",
                        other => other,
                    };
                    let tail = if parts.len() > 5 {
                        format!(".{}", rest(5))
                    } else {
                        String::new()
                    };
                    format!("{layer}.attention.{field}{tail}")
                }
                "norm_layers_1" => format!("{layer}.layer_norm.{}", rest(4)),
                "norm_layers_2" => format!("{layer}.final_layer_norm.{}", rest(4)),
                "ffn_layers" => format!("{layer}.feed_forward.{}", rest(4)),
                _ => return None,
            }
        }
        ["dp", "flows", "0", "m"] => "duration_predictor.flows.0.translate".to_string(),
        ["dp", "flows", "0", "logs"] => "duration_predictor.flows.0.log_scale".to_string(),
        ["dp", "flows", n, module, ..] => {
            let n: usize = n.parse().ok()?;
            if n.is_multiple_of(2) {
                return None;
            }
            format!(
                "duration_predictor.flows.{}.{}",
                n.div_ceil(2),
                dds(module, &rest(4))?
            )
        }
        ["dp", module, ..] if !module.starts_with("post") => {
            format!("duration_predictor.{}", dds(module, &rest(2))?)
        }
        ["flow", "flows", n, module, ..] => {
            let n: usize = n.parse().ok()?;
            let field = match *module {
                "pre" => "conv_pre",
                "post" => "conv_post",
                "enc" => "wavenet",
                _ => return None,
            };
            format!("flow.flows.{}.{field}.{}", n / 2, rest(4))
        }
        ["dec", "ups", ..] => format!("decoder.upsampler.{}", rest(2)),
        ["dec", ..] => format!("decoder.{}", rest(1)),
        ["emb_g", "weight"] => "embed_speaker.weight".to_string(),
        _ => return None,
    };
    Some(mapped)
}

/// Duration-predictor submodule names: `pre`/`proj`/`convs.*` to transformers' names.
fn dds(module: &str, tail: &str) -> Option<String> {
    let field = match module {
        "pre" => "conv_pre",
        "proj" => "conv_proj",
        "convs" => "conv_dds",
        "cond" | "conv_1" | "conv_2" | "norm_1" | "norm_2" => module,
        _ => return None,
    };
    let tail =
        tail.replacen("convs_sep", "convs_dilated", 1)
            .replacen("convs_1x1", "convs_pointwise", 1);
    Some(if tail.is_empty() {
        field.to_string()
    } else {
        format!("{field}.{tail}")
    })
}

fn count(tensors: &HashMap<String, Tensor>, prefix: &str, suffix: &str) -> usize {
    (0..)
        .take_while(|i| tensors.contains_key(&format!("{prefix}{i}{suffix}")))
        .count()
}

fn dims(tensors: &HashMap<String, Tensor>, name: &str) -> std::result::Result<Vec<usize>, String> {
    tensors
        .get(name)
        .map(|t| t.dims().to_vec())
        .ok_or_else(|| format!("not a Piper VITS export: missing `{name}`"))
}

fn node_attr(graph: &Graph, node: &str, attr: &str) -> Option<i64> {
    graph
        .nodes
        .iter()
        .find(|n| n.name == node)
        .and_then(|n| n.int_attrs.get(attr))
        .and_then(|v| v.first().copied())
}

/// Reads the architecture from tensor shapes and node attributes.
fn infer_config(
    t: &HashMap<String, Tensor>,
    graph: &Graph,
    voice: &PiperVoiceConfig,
) -> std::result::Result<Config, String> {
    let mut c = Config::mms_tts_eng();
    let emb = dims(t, "text_encoder.embed_tokens.weight")?;
    (c.vocab_size, c.hidden_size) = (emb[0], emb[1]);
    c.num_hidden_layers = count(
        t,
        "text_encoder.encoder.layers.",
        ".attention.q_proj.weight",
    );
    let rel = dims(t, "text_encoder.encoder.layers.0.attention.emb_rel_k")?;
    c.num_attention_heads = c.hidden_size / rel[2];
    c.window_size = Some((rel[1] - 1) / 2);
    let ffn = dims(
        t,
        "text_encoder.encoder.layers.0.feed_forward.conv_1.weight",
    )?;
    (c.ffn_dim, c.ffn_kernel_size) = (ffn[0], ffn[2]);
    c.flow_size = dims(t, "text_encoder.project.weight")?[0] / 2;

    c.use_stochastic_duration_prediction = t.contains_key("duration_predictor.flows.0.translate");
    if c.use_stochastic_duration_prediction {
        let dds = "duration_predictor.conv_dds.convs_dilated.";
        c.depth_separable_num_layers = count(t, dds, ".weight");
        c.duration_predictor_kernel_size = dims(t, &format!("{dds}0.weight"))?[2];
        c.duration_predictor_num_flows = (1..=16)
            .filter(|k| t.contains_key(&format!("duration_predictor.flows.{k}.conv_pre.weight")))
            .max()
            .ok_or("not a Piper VITS export: no duration-predictor flows")?;
        let proj = dims(
            t,
            &format!(
                "duration_predictor.flows.{}.conv_proj.weight",
                c.duration_predictor_num_flows
            ),
        )?;
        c.duration_predictor_flow_bins = proj[0].div_ceil(3);
        c.duration_predictor_filter_channels = c.hidden_size;
    } else {
        let conv = dims(t, "duration_predictor.conv_1.weight")?;
        (
            c.duration_predictor_filter_channels,
            c.duration_predictor_kernel_size,
        ) = (conv[0], conv[2]);
    }
    c.duration_predictor_tail_bound = 5.0;

    c.prior_encoder_num_flows = count(t, "flow.flows.", ".conv_pre.weight");
    c.prior_encoder_num_wavenet_layers = count(t, "flow.flows.0.wavenet.in_layers.", ".weight");
    c.wavenet_kernel_size = dims(t, "flow.flows.0.wavenet.in_layers.0.weight")?[2];
    c.wavenet_dilation_rate =
        node_attr(graph, "/flow/flows.0/enc/in_layers.1/Conv", "dilations").unwrap_or(1) as usize;

    if let Ok(spk) = dims(t, "embed_speaker.weight") {
        (c.num_speakers, c.speaker_embedding_size) = (spk[0], spk[1]);
    } else {
        (c.num_speakers, c.speaker_embedding_size) = (1, 0);
    }

    c.upsample_initial_channel = dims(t, "decoder.conv_pre.weight")?[0];
    let ups = count(t, "decoder.upsampler.", ".weight");
    c.upsample_kernel_sizes = (0..ups)
        .map(|i| dims(t, &format!("decoder.upsampler.{i}.weight")).map(|d| d[2]))
        .collect::<std::result::Result<_, _>>()?;
    c.upsample_rates = (0..ups)
        .map(|i| {
            node_attr(graph, &format!("/dec/ups.{i}/ConvTranspose"), "strides")
                .map(|s| s as usize)
                .ok_or_else(|| format!("no stride for /dec/ups.{i}/ConvTranspose"))
        })
        .collect::<std::result::Result<_, _>>()?;
    let blocks = count(t, "decoder.resblocks.", ".convs.0.weight").max(count(
        t,
        "decoder.resblocks.",
        ".convs1.0.weight",
    ));
    if ups == 0 || !blocks.is_multiple_of(ups) {
        return Err(format!(
            "{blocks} residual blocks do not divide into {ups} upsampling stages"
        ));
    }
    c.resblock_kind = if t.contains_key("decoder.resblocks.0.convs.0.weight") {
        ResBlockKind::Two
    } else {
        ResBlockKind::One
    };
    let conv_name = if c.resblock_kind == ResBlockKind::Two {
        "convs"
    } else {
        "convs1"
    };
    c.resblock_kernel_sizes.clear();
    c.resblock_dilation_sizes.clear();
    for j in 0..blocks / ups {
        let prefix = format!("decoder.resblocks.{j}.{conv_name}.");
        c.resblock_kernel_sizes
            .push(dims(t, &format!("{prefix}0.weight"))?[2]);
        let n = count(t, &prefix, ".weight");
        let dilations = (0..n)
            .map(|d| {
                node_attr(
                    graph,
                    &format!("/dec/resblocks.{j}/{conv_name}.{d}/Conv"),
                    "dilations",
                )
                .unwrap_or(1) as usize
            })
            .collect();
        c.resblock_dilation_sizes.push(dilations);
    }
    c.leaky_relu_slope = 0.1;
    c.sampling_rate = voice.audio.sample_rate;
    c.noise_scale = voice.inference.noise_scale;
    c.noise_scale_duration = voice.inference.noise_w;
    c.speaking_rate = 1.0 / voice.inference.length_scale;
    c.pad_token_id = voice
        .phoneme_id_map
        .get("_")
        .and_then(|v| v.first())
        .copied()
        .unwrap_or(0) as u32;
    c.validate().map_err(|e| e.to_string())?;
    Ok(c)
}

/// Loads a Piper voice into a [`crate::VitsModel`] on `device`.
pub fn load_voice(
    onnx_path: &Path,
    config_path: &Path,
    device: &Device,
) -> Result<(crate::VitsModel, PiperVoiceConfig)> {
    let voice = PiperVoiceConfig::from_file(config_path)?;
    let weights = load_onnx(onnx_path, &voice, device)?;
    let vb = candle_nn::VarBuilder::from_tensors(weights.tensors, DType::F32, device);
    let model = crate::VitsModel::new(&weights.config, vb).map_err(|e| match e {
        Error::Checkpoint { reason, .. } => Error::Onnx {
            path: onnx_path.display().to_string(),
            reason,
        },
        other => other,
    })?;
    Ok((model, voice))
}

#[cfg(test)]
mod tests {
    use super::to_transformers_name as map;

    #[test]
    fn vits_names_map_to_transformers_names() {
        let cases = [
            ("enc_p.emb.weight", "text_encoder.embed_tokens.weight"),
            (
                "enc_p.encoder.attn_layers.3.conv_o.bias",
                "text_encoder.encoder.layers.3.attention.out_proj.bias",
            ),
            (
                "enc_p.encoder.attn_layers.0.emb_rel_k",
                "text_encoder.encoder.layers.0.attention.emb_rel_k",
            ),
            (
                "enc_p.encoder.norm_layers_2.1.gamma",
                "text_encoder.encoder.layers.1.final_layer_norm.weight",
            ),
            (
                "enc_p.encoder.ffn_layers.5.conv_2.weight",
                "text_encoder.encoder.layers.5.feed_forward.conv_2.weight",
            ),
            ("enc_p.proj.bias", "text_encoder.project.bias"),
            ("dp.pre.weight", "duration_predictor.conv_pre.weight"),
            (
                "dp.convs.convs_sep.2.weight",
                "duration_predictor.conv_dds.convs_dilated.2.weight",
            ),
            (
                "dp.convs.norms_1.0.beta",
                "duration_predictor.conv_dds.norms_1.0.bias",
            ),
            ("dp.flows.0.m", "duration_predictor.flows.0.translate"),
            (
                "dp.flows.7.proj.weight",
                "duration_predictor.flows.4.conv_proj.weight",
            ),
            (
                "dp.flows.3.convs.convs_1x1.1.bias",
                "duration_predictor.flows.2.conv_dds.convs_pointwise.1.bias",
            ),
            (
                "flow.flows.6.enc.in_layers.0.weight",
                "flow.flows.3.wavenet.in_layers.0.weight",
            ),
            ("flow.flows.2.post.bias", "flow.flows.1.conv_post.bias"),
            ("dec.ups.1.weight", "decoder.upsampler.1.weight"),
            (
                "dec.resblocks.4.convs.1.weight",
                "decoder.resblocks.4.convs.1.weight",
            ),
            ("dec.conv_post.weight", "decoder.conv_post.weight"),
            ("emb_g.weight", "embed_speaker.weight"),
        ];
        for (vits, hf) in cases {
            assert_eq!(map(vits).as_deref(), Some(hf), "{vits}");
        }
        assert_eq!(map("dp.flows.2.anything"), None);
        assert_eq!(map("dp.post_pre.weight"), None);
    }
}
