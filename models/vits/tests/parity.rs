//! Parity with transformers' `VitsModel` (4.57.6) on tiny random models: each stage alone and
//! end to end, f32, max abs error ≤ 1e-4. Fixtures: `cargo xtask fixtures vits`.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{assert_close, Case};
use ferrovox_vits::duration::Durations;
use ferrovox_vits::{RecordedNoise, SynthesisParams, TokenBatch, VitsModel};

fn model(case: &Case) -> VitsModel {
    VitsModel::new(&case.cfg, case.vb()).unwrap()
}

fn batch(case: &Case) -> TokenBatch {
    let ids = case.ids("input_ids");
    let mask = case
        .io("attention_mask")
        .to_dtype(DType::F32)
        .unwrap()
        .to_device(&Device::Cpu)
        .unwrap();
    let lengths: Vec<usize> = mask
        .sum(1)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|&l| l as usize)
        .collect();
    let seqs: Vec<Vec<u32>> = ids
        .iter()
        .zip(&lengths)
        .map(|(r, &l)| r[..l].to_vec())
        .collect();
    let b = TokenBatch::new(&seqs, case.cfg.pad_token_id, &common::device()).unwrap();
    assert_eq!(
        b.mask
            .to_device(&Device::Cpu)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap(),
        mask.to_vec2::<f32>().unwrap()
    );
    b
}

fn speakers(case: &Case) -> Option<Vec<u32>> {
    case.tensors.get("io.speaker_id").map(|t| {
        let t = t.to_device(&Device::Cpu).unwrap();
        t.to_dtype(DType::I64)
            .unwrap()
            .to_vec1::<i64>()
            .unwrap()
            .iter()
            .map(|&s| s as u32)
            .collect()
    })
}

fn params(case: &Case) -> SynthesisParams {
    SynthesisParams::from_config(&case.cfg)
}

fn text_encoder_stage(name: &str) {
    let case = Case::load(name);
    let out = model(&case).encode_text(&batch(&case)).unwrap();
    assert_close(
        &format!("{name} text_encoder.hidden"),
        &out.hidden,
        &case.io("text_encoder.last_hidden_state"),
        common::tolerance(),
    );
    assert_close(
        &format!("{name} text_encoder.prior_means"),
        &out.prior_means,
        &case.io("text_encoder.prior_means"),
        common::tolerance(),
    );
    assert_close(
        &format!("{name} text_encoder.prior_log_variances"),
        &out.prior_log_variances,
        &case.io("text_encoder.prior_log_variances"),
        common::tolerance(),
    );
}

#[test]
fn text_encoder_matches_transformers_within_1e4() {
    text_encoder_stage("tiny_sdp");
    text_encoder_stage("tiny_dp_spk");
}

fn duration_stage(name: &str) {
    let case = Case::load(name);
    let m = model(&case);
    let speaker = case.speaker_embedding();
    let speaker = speaker.as_ref();
    let mut noise = RecordedNoise::new(
        case.tensors
            .get("io.noise_duration")
            .map(|_| case.io("noise_duration")),
    );
    let ld = m
        .log_durations(
            &case.io("duration.input_hidden"),
            &case.io("duration.padding_mask"),
            speaker,
            &params(&case),
            &mut noise,
        )
        .unwrap();
    assert_close(
        &format!("{name} log_duration"),
        &ld,
        &case.io("duration.log_duration"),
        common::tolerance(),
    );
}

#[test]
fn stochastic_duration_predictor_matches_within_1e4() {
    duration_stage("tiny_sdp");
}

#[test]
fn deterministic_duration_predictor_with_speaker_matches_within_1e4() {
    duration_stage("tiny_dp_spk");
}

#[test]
fn spline_flows_inside_and_outside_the_tail_bound_match_within_1e4() {
    let case = Case::load("tiny_sdp");
    let vb = case.vb().pp("duration_predictor");
    let Durations::Stochastic(sdp) = Durations::new(&case.cfg, vb).unwrap() else {
        panic!("tiny_sdp has a stochastic predictor")
    };
    let scale = case
        .io("sdp_only.noise_scale")
        .to_device(&Device::Cpu)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()[0] as f64;
    let ld = sdp
        .forward(
            &case.io("sdp_only.input_hidden"),
            &case.io("sdp_only.padding_mask"),
            None,
            &case.io("sdp_only.noise"),
            scale,
        )
        .unwrap();
    assert_close(
        "sdp_only log_duration",
        &ld,
        &case.io("sdp_only.log_duration"),
        common::tolerance(),
    );
}

fn alignment_stage(name: &str) {
    let case = Case::load(name);
    let m = model(&case);
    let mask = case.io("duration.padding_mask");
    let alignment = m
        .align(
            &case.io("duration.log_duration"),
            &mask,
            params(&case).length_scale,
        )
        .unwrap();
    let expected: Vec<usize> = case.tensors["io.predicted_lengths"]
        .to_dtype(DType::I64)
        .unwrap()
        .to_vec1::<i64>()
        .unwrap()
        .iter()
        .map(|&v| v as usize)
        .collect();
    assert_eq!(alignment.frames, expected, "{name}: predicted lengths");
    let means = m
        .expand(&case.io("text_encoder.prior_means"), &alignment)
        .unwrap();
    assert_close(
        &format!("{name} expanded prior means"),
        &means,
        &case.io("prior_means_expanded"),
        0.0,
    );
    let mask = m.frame_mask(&alignment).unwrap();
    assert_close(
        &format!("{name} frame mask"),
        &mask,
        &case.io("flow.padding_mask"),
        0.0,
    );
}

#[test]
fn alignment_expansion_is_exact() {
    alignment_stage("tiny_sdp");
    alignment_stage("tiny_dp_spk");
}

fn flow_stage(name: &str) {
    let case = Case::load(name);
    let m = model(&case);
    let speaker = case.speaker_embedding();
    let speaker = speaker.as_ref();
    let out = m
        .flow()
        .reverse(
            &case.io("flow.input"),
            &case.io("flow.padding_mask"),
            speaker,
        )
        .unwrap();
    assert_close(
        &format!("{name} flow"),
        &out,
        &case.io("flow.output"),
        common::tolerance(),
    );
}

#[test]
fn reverse_flow_matches_within_1e4() {
    flow_stage("tiny_sdp");
    flow_stage("tiny_dp_spk");
}

fn decoder_stage(name: &str) {
    let case = Case::load(name);
    let m = model(&case);
    let speaker = case.speaker_embedding();
    let speaker = speaker.as_ref();
    let out = m
        .decoder()
        .forward(&case.io("decoder.input"), speaker)
        .unwrap();
    assert_close(
        &format!("{name} decoder"),
        &out,
        &case.io("decoder.output"),
        common::tolerance(),
    );
}

#[test]
fn hifigan_decoder_matches_within_1e4() {
    decoder_stage("tiny_sdp");
    decoder_stage("tiny_dp_spk");
}

fn end_to_end(name: &str) {
    let case = Case::load(name);
    let m = model(&case);
    let draws: Vec<Tensor> = ["io.noise_duration", "io.noise_prior"]
        .iter()
        .filter(|k| case.tensors.contains_key(**k))
        .map(|k| case.io(&k["io.".len()..]))
        .collect();
    let mut noise = RecordedNoise::new(draws.clone());
    let spk = speakers(&case);
    let out = m
        .forward(&batch(&case), spk.as_deref(), &params(&case), &mut noise)
        .unwrap();
    // The same latents decoded in two pieces per item join to the item decoded alone, which
    // for the longest item (no padding after it) is upstream's waveform.
    let latents = m
        .latents(
            &batch(&case),
            spk.as_deref(),
            &params(&case),
            &mut RecordedNoise::new(draws.clone()),
        )
        .unwrap();
    // The flow run on a window of frames alone gives those frames of the whole pass.
    let prior = m
        .prior(
            &batch(&case),
            spk.as_deref(),
            &params(&case),
            &mut RecordedNoise::new(draws.clone()),
        )
        .unwrap();
    let context = m.decoder_context_frames();
    for (i, &frames) in latents.alignment.frames.iter().enumerate() {
        let cut = frames / 3;
        let window = m.latents_window(&prior, i, cut..frames).unwrap();
        let whole = latents
            .spectrogram
            .get(i)
            .unwrap()
            .narrow(1, cut, frames - cut)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        assert_close(
            &format!("{name} item {i} flow over frames {cut}.. vs the whole pass"),
            &window.spectrogram,
            &whole,
            common::tolerance(),
        );
        if cut > 0 {
            // Frames whose decoder context lies outside the window are refused.
            assert!(m.decode_frames(&window, 0, cut..frames).is_err());
        }
        if cut + context < frames {
            let tail = m.decode_frames(&window, 0, cut + context..frames).unwrap();
            let want = m.decode_frames(&latents, i, cut + context..frames).unwrap();
            let as_tensor = |v: &[f32]| Tensor::new(v, &common::device()).unwrap();
            assert_close(
                &format!("{name} item {i} decoded from the window vs the whole pass"),
                &as_tensor(&tail),
                &as_tensor(&want),
                common::tolerance(),
            );
        }
    }
    let hop = m.config().hop_length();
    let longest = latents.alignment.frames.iter().copied().max().unwrap_or(0);
    for (i, &frames) in latents.alignment.frames.iter().enumerate() {
        let cut = frames / 2;
        let alone = m.decode_frames(&latents, i, 0..frames).unwrap();
        let mut pieces = if cut > 0 {
            m.decode_frames(&latents, i, 0..cut).unwrap()
        } else {
            Vec::new()
        };
        pieces.extend(m.decode_frames(&latents, i, cut..frames).unwrap());
        let as_tensor = |v: &[f32]| Tensor::new(v, &common::device()).unwrap();
        assert_close(
            &format!("{name} item {i} in two pieces vs alone"),
            &as_tensor(&pieces),
            &as_tensor(&alone),
            common::tolerance(),
        );
        if frames == longest {
            let want = case
                .io("waveform")
                .get(i)
                .unwrap()
                .narrow(0, 0, frames * hop)
                .unwrap();
            assert_close(
                &format!("{name} item {i} decoded alone vs upstream"),
                &as_tensor(&alone),
                &want,
                common::tolerance(),
            );
        }
        assert!(m.decode_frames(&latents, i, 0..frames + 1).is_err());
        assert!(m.decode_frames(&latents, i, cut..cut).is_err());
    }
    let expected: Vec<usize> = case.tensors["io.sequence_lengths"]
        .to_dtype(DType::I64)
        .unwrap()
        .to_vec1::<i64>()
        .unwrap()
        .iter()
        .map(|&v| v as usize)
        .collect();
    assert_eq!(out.sample_lengths, expected, "{name}: sample lengths");
    assert_close(
        &format!("{name} end-to-end waveform"),
        &out.waveform,
        &case.io("waveform"),
        common::tolerance(),
    );
    assert_close(
        &format!("{name} end-to-end spectrogram"),
        &out.spectrogram,
        &case.io("spectrogram"),
        common::tolerance(),
    );
    for (i, &len) in expected.iter().enumerate() {
        assert_eq!(out.audio(i).unwrap().len(), len);
    }
}

/// Calls of one shape after the first capture each stage's CUDA graph and then replay it: the
/// replayed calls must still match upstream. Off CUDA no graph is ever held.
fn repeated_calls(name: &str) {
    let case = Case::load(name);
    let m = model(&case);
    let draws: Vec<Tensor> = ["io.noise_duration", "io.noise_prior"]
        .iter()
        .filter(|k| case.tensors.contains_key(**k))
        .map(|k| case.io(&k["io.".len()..]))
        .collect();
    let spk = speakers(&case);
    for call in 0..3 {
        let mut noise = RecordedNoise::new(draws.clone());
        let out = m
            .forward(&batch(&case), spk.as_deref(), &params(&case), &mut noise)
            .unwrap();
        assert_close(
            &format!("{name} call {call} waveform"),
            &out.waveform,
            &case.io("waveform"),
            common::tolerance(),
        );
    }
    let held = m.graphs().held();
    if common::device().is_cuda() {
        let reasons = m.graphs().fallbacks();
        assert_eq!(held, [1; 4], "graphs per stage; fallbacks: {reasons:?}");
    } else {
        assert_eq!(held, [0; 4]);
    }
}

#[test]
fn repeated_calls_replay_each_stages_graph_and_still_match() {
    repeated_calls("tiny_sdp");
    repeated_calls("tiny_dp_spk");
}

#[test]
fn end_to_end_batch_with_padding_matches_within_1e4() {
    end_to_end("tiny_sdp");
}

#[test]
fn end_to_end_multi_speaker_matches_within_1e4() {
    end_to_end("tiny_dp_spk");
}

/// Why VITS computes in f32 (TF32 on CUDA) where the dtype policy would pick bf16: in bf16 the
/// decoder alone is 1.7–1.9e-2 from upstream on these fixtures, ten times TF32's error on the
/// H100 (1.7e-3) and two orders over the f32 bound. The upper limit checks that the bf16 path
/// runs right up to rounding; should bf16 ever come within 1e-2, this fails and the choice is
/// worth revisiting.
#[test]
fn decoder_in_bf16_misses_the_f32_bound_by_two_orders() {
    for name in ["tiny_sdp", "tiny_dp_spk"] {
        let case = Case::load(name);
        let vb =
            candle_nn::VarBuilder::from_tensors(case.tensors.clone(), DType::BF16, &Device::Cpu);
        let m = VitsModel::new(&case.cfg, vb).unwrap();
        let bf16 = |t: Tensor| {
            t.to_device(&Device::Cpu)
                .unwrap()
                .to_dtype(DType::BF16)
                .unwrap()
        };
        let speaker = case.speaker_embedding().map(bf16);
        let out = m
            .decoder()
            .forward(&bf16(case.io("decoder.input")), speaker.as_ref())
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        let want = case.io("decoder.output").to_device(&Device::Cpu).unwrap();
        let err = ferrovox_kernels::compare::max_abs_diff(&out, &want).unwrap();
        eprintln!("{name} decoder in bf16: max abs error {err:.3e} (f32 bound 1e-4)");
        assert!(
            (1e-2..5e-2).contains(&err),
            "{name}: bf16 decoder error {err:.3e} outside [1e-2, 5e-2)"
        );
    }
}
