//! A minimal reader of ONNX `ModelProto` files: the graph's initializers and nodes (with
//! integer attributes), which is all a Piper voice needs. Protobuf is decoded by hand; no
//! code generation and no onnxruntime.

use std::collections::HashMap;

/// A decoded initializer.
#[derive(Debug, Clone)]
pub struct Initializer {
    pub name: String,
    pub dims: Vec<usize>,
    pub data: InitData,
}

/// Initializer values.
#[derive(Debug, Clone)]
pub enum InitData {
    F32(Vec<f32>),
    I64(Vec<i64>),
    /// A data type ferrovox does not read (it never holds VITS weights).
    Other(i32),
}

/// A graph node.
#[derive(Debug, Clone, Default)]
pub struct Node {
    pub name: String,
    pub op_type: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    /// Integer-list attributes (`strides`, `dilations`, `pads`, ...); scalars as 1-element lists.
    pub int_attrs: HashMap<String, Vec<i64>>,
}

/// The parts of an ONNX graph ferrovox uses.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    pub initializers: Vec<Initializer>,
    pub nodes: Vec<Node>,
}

/// A protobuf decoding failure.
#[derive(Debug, Clone)]
pub struct DecodeError(pub String);

type R<T> = std::result::Result<T, DecodeError>;

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

enum Value<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32(u32),
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn varint(&mut self) -> R<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| DecodeError("truncated varint".into()))?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError("varint longer than 10 bytes".into()))
    }

    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| DecodeError(format!("field of {n} bytes runs past the end")))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// The next `(field number, value)`, or `None` at the end.
    fn field(&mut self) -> R<Option<(u64, Value<'a>)>> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Fixed64
            }
            2 => {
                let n = self.varint()? as usize;
                Value::Bytes(self.take(n)?)
            }
            5 => Value::Fixed32(u32::from_le_bytes(
                self.take(4)?.try_into().expect("4 bytes"),
            )),
            w => return Err(DecodeError(format!("unsupported wire type {w}"))),
        };
        Ok(Some((key >> 3, value)))
    }
}

fn string(bytes: &[u8]) -> R<String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError("string is not UTF-8".into()))
}

/// Appends varints that may be packed (bytes) or single (varint).
fn push_ints(out: &mut Vec<i64>, value: Value) -> R<()> {
    match value {
        Value::Varint(v) => out.push(v as i64),
        Value::Bytes(b) => {
            let mut r = Reader::new(b);
            while r.pos < b.len() {
                out.push(r.varint()? as i64);
            }
        }
        _ => return Err(DecodeError("expected an integer field".into())),
    }
    Ok(())
}

/// Decodes an ONNX `ModelProto`.
pub fn parse_model(bytes: &[u8]) -> R<Graph> {
    let mut r = Reader::new(bytes);
    let mut graph = None;
    while let Some((field, value)) = r.field()? {
        if let (7, Value::Bytes(b)) = (field, value) {
            graph = Some(parse_graph(b)?);
        }
    }
    graph.ok_or_else(|| DecodeError("no graph in the model".into()))
}

fn parse_graph(bytes: &[u8]) -> R<Graph> {
    let mut r = Reader::new(bytes);
    let mut g = Graph::default();
    while let Some((field, value)) = r.field()? {
        match (field, value) {
            (1, Value::Bytes(b)) => g.nodes.push(parse_node(b)?),
            (5, Value::Bytes(b)) => g.initializers.push(parse_tensor(b)?),
            _ => {}
        }
    }
    Ok(g)
}

fn parse_node(bytes: &[u8]) -> R<Node> {
    let mut r = Reader::new(bytes);
    let mut n = Node::default();
    while let Some((field, value)) = r.field()? {
        match (field, value) {
            (1, Value::Bytes(b)) => n.inputs.push(string(b)?),
            (2, Value::Bytes(b)) => n.outputs.push(string(b)?),
            (3, Value::Bytes(b)) => n.name = string(b)?,
            (4, Value::Bytes(b)) => n.op_type = string(b)?,
            (5, Value::Bytes(b)) => {
                if let Some((name, ints)) = parse_int_attribute(b)? {
                    n.int_attrs.insert(name, ints);
                }
            }
            _ => {}
        }
    }
    Ok(n)
}

fn parse_int_attribute(bytes: &[u8]) -> R<Option<(String, Vec<i64>)>> {
    let mut r = Reader::new(bytes);
    let mut name = String::new();
    let mut ints = Vec::new();
    while let Some((field, value)) = r.field()? {
        match (field, value) {
            (1, Value::Bytes(b)) => name = string(b)?,
            (3, v @ Value::Varint(_)) | (8, v) => push_ints(&mut ints, v)?,
            _ => {}
        }
    }
    Ok((!ints.is_empty()).then_some((name, ints)))
}

fn parse_tensor(bytes: &[u8]) -> R<Initializer> {
    let mut r = Reader::new(bytes);
    let mut name = String::new();
    let mut dims = Vec::new();
    let mut data_type = 0i32;
    let mut raw: Option<&[u8]> = None;
    let mut floats = Vec::new();
    let mut int64s = Vec::new();
    while let Some((field, value)) = r.field()? {
        match (field, value) {
            (1, v) => push_ints(&mut dims, v)?,
            (2, Value::Varint(v)) => data_type = v as i32,
            (4, Value::Bytes(b)) => floats.extend(
                b.chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))),
            ),
            (4, Value::Fixed32(v)) => floats.push(f32::from_bits(v)),
            (7, v) => push_ints(&mut int64s, v)?,
            (8, Value::Bytes(b)) => name = string(b)?,
            (9, Value::Bytes(b)) => raw = Some(b),
            (13, _) => {
                return Err(DecodeError(format!(
                    "tensor `{name}` keeps its data in an external file, which is not supported"
                )))
            }
            _ => {}
        }
    }
    let dims: Vec<usize> = dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| DecodeError(format!("negative dim in `{name}`"))))
        .collect::<R<_>>()?;
    let count: usize = dims.iter().product();
    let data = match (data_type, raw) {
        (1, Some(b)) => InitData::F32(
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect(),
        ),
        (1, None) => InitData::F32(floats),
        (7, Some(b)) => InitData::I64(
            b.chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect(),
        ),
        (7, None) => InitData::I64(int64s),
        (other, _) => InitData::Other(other),
    };
    let len = match &data {
        InitData::F32(v) => v.len(),
        InitData::I64(v) => v.len(),
        InitData::Other(_) => count,
    };
    if len != count {
        return Err(DecodeError(format!(
            "tensor `{name}` has {len} values for dims {dims:?}"
        )));
    }
    Ok(Initializer { name, dims, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                break;
            }
            out.push(b | 0x80);
        }
    }

    fn bytes_field(field: u64, payload: &[u8], out: &mut Vec<u8>) {
        varint(field << 3 | 2, out);
        varint(payload.len() as u64, out);
        out.extend_from_slice(payload);
    }

    #[test]
    fn decodes_a_hand_built_model() {
        let mut tensor = Vec::new();
        varint(1 << 3, &mut tensor);
        varint(2, &mut tensor);
        varint(1 << 3, &mut tensor);
        varint(3, &mut tensor);
        varint(2 << 3, &mut tensor);
        varint(1, &mut tensor);
        bytes_field(8, b"w", &mut tensor);
        let raw: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
        bytes_field(9, &raw, &mut tensor);
        let mut attr = Vec::new();
        bytes_field(1, b"strides", &mut attr);
        let mut packed = Vec::new();
        varint(8, &mut packed);
        bytes_field(8, &packed, &mut attr);
        let mut node = Vec::new();
        bytes_field(1, b"x", &mut node);
        bytes_field(1, b"w", &mut node);
        bytes_field(3, b"/dec/ups.0/ConvTranspose", &mut node);
        bytes_field(4, b"ConvTranspose", &mut node);
        bytes_field(5, &attr, &mut node);
        let mut graph = Vec::new();
        bytes_field(1, &node, &mut graph);
        bytes_field(5, &tensor, &mut graph);
        let mut model = Vec::new();
        varint(1 << 3, &mut model);
        varint(8, &mut model);
        bytes_field(7, &graph, &mut model);

        let g = parse_model(&model).unwrap();
        assert_eq!(g.initializers[0].name, "w");
        assert_eq!(g.initializers[0].dims, [2, 3]);
        match &g.initializers[0].data {
            InitData::F32(v) => assert_eq!(v, &[0., 1., 2., 3., 4., 5.]),
            other => panic!("{other:?}"),
        }
        assert_eq!(g.nodes[0].int_attrs["strides"], [8]);
        assert_eq!(g.nodes[0].inputs, ["x", "w"]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse_model(b"not an onnx file at all").is_err());
        assert!(parse_model(&[0x3a, 0xff, 0xff, 0xff, 0x0f]).is_err());
        assert!(parse_model(&[]).is_err());
    }
}
