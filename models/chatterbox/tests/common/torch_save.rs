//! `torch.save` of a state dict, as far as a checkpoint reader needs it: a zip archive with
//! `archive/data.pkl` (a protocol-2 pickle of a dict of `torch._utils._rebuild_tensor_v2`
//! calls, each naming its storage by persistent id) and one little-endian f32 storage per
//! tensor under `archive/data/`. For files that only PyTorch writes in the released
//! repositories (`ve.pt`, `s3gen.pt`); upstream-written archives are tested as well
//! (`conds_small.pt`).

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use candle_core::{DType, Tensor};

fn unicode(out: &mut Vec<u8>, s: &str) {
    out.push(b'X');
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn int(out: &mut Vec<u8>, v: usize) {
    out.push(b'J');
    out.extend_from_slice(&(v as i32).to_le_bytes());
}

fn ints(out: &mut Vec<u8>, vs: &[usize]) {
    out.push(b'(');
    for &v in vs {
        int(out, v);
    }
    out.push(b't');
}

/// Writes `tensors` (as f32) to `path` as `torch.save(state_dict)` lays it out.
pub fn save_pt(tensors: &HashMap<String, Tensor>, path: &Path) {
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let mut pickle = vec![0x80, 2, b'}', b'('];
    let mut storages = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let t = tensors[*name].to_dtype(DType::F32).unwrap();
        let dims = t.dims().to_vec();
        let mut stride = vec![1usize; dims.len()];
        for d in (0..dims.len().saturating_sub(1)).rev() {
            stride[d] = stride[d + 1] * dims[d + 1];
        }
        let values = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        unicode(&mut pickle, name);
        pickle.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n(");
        pickle.push(b'(');
        unicode(&mut pickle, "storage");
        pickle.extend_from_slice(b"ctorch\nFloatStorage\n");
        unicode(&mut pickle, &i.to_string());
        unicode(&mut pickle, "cpu");
        int(&mut pickle, values.len());
        pickle.extend_from_slice(b"tQ");
        int(&mut pickle, 0);
        ints(&mut pickle, &dims);
        ints(&mut pickle, &stride);
        pickle.push(0x89);
        pickle.extend_from_slice(b"ccollections\nOrderedDict\n)R");
        pickle.extend_from_slice(b"tR");
        storages.push(values);
    }
    pickle.extend_from_slice(b"u.");

    let file = std::fs::File::create(path).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("archive/data.pkl", stored).unwrap();
    zip.write_all(&pickle).unwrap();
    for (i, values) in storages.iter().enumerate() {
        zip.start_file(format!("archive/data/{i}"), stored).unwrap();
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        zip.write_all(&bytes).unwrap();
    }
    zip.start_file("archive/version", stored).unwrap();
    zip.write_all(b"3\n").unwrap();
    zip.finish().unwrap();
}
