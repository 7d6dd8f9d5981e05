//! Property: whatever valid metadata and tensors go into the writer, the reader returns them
//! unchanged, at the offsets the layout promised.

use modelpack_format::gguf::{ggml_type_info, layout, write_to_vec, GgufFile, GgufTensorInfo, MetaType, MetaValue};
use proptest::prelude::*;

fn scalar() -> impl Strategy<Value = MetaValue> {
    prop_oneof![
        any::<u8>().prop_map(MetaValue::U8),
        any::<i8>().prop_map(MetaValue::I8),
        any::<u16>().prop_map(MetaValue::U16),
        any::<i16>().prop_map(MetaValue::I16),
        any::<u32>().prop_map(MetaValue::U32),
        any::<i32>().prop_map(MetaValue::I32),
        any::<u64>().prop_map(MetaValue::U64),
        any::<i64>().prop_map(MetaValue::I64),
        // Finite floats only: NaN != NaN would fail the equality, not the format.
        (-1e30f32..1e30).prop_map(MetaValue::F32),
        (-1e300f64..1e300).prop_map(MetaValue::F64),
        any::<bool>().prop_map(MetaValue::Bool),
        ".{0,12}".prop_map(MetaValue::String),
    ]
}

fn value() -> impl Strategy<Value = MetaValue> {
    prop_oneof![
        3 => scalar(),
        1 => (scalar(), 1usize..6).prop_map(|(s, n)| {
            // Homogeneous: repeat the element's type with varied values.
            let items = (0..n)
                .map(|i| match &s {
                    MetaValue::U32(v) => MetaValue::U32(v.wrapping_add(i as u32)),
                    MetaValue::String(v) => MetaValue::String(format!("{v}{i}")),
                    other => other.clone(),
                })
                .collect();
            MetaValue::Array(items)
        }),
        1 => Just(MetaValue::EmptyArray(MetaType::I32)),
    ]
}

fn tensor() -> impl Strategy<Value = (u32, Vec<u64>)> {
    let types = prop::sample::select(vec![0u32, 1, 2, 3, 8, 12, 14, 30]);
    (types, 1u64..4, prop::collection::vec(1u64..4, 0..3)).prop_map(|(t, blocks, rest)| {
        let bs = ggml_type_info(t).unwrap().block_size;
        let mut ne = vec![blocks * bs];
        ne.extend(rest);
        (t, ne)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn write_then_read_is_identity(
        values in prop::collection::vec(value(), 0..8),
        shapes in prop::collection::vec(tensor(), 0..6),
        align_pow in 3u32..8,
    ) {
        let alignment = 1u32 << align_pow;
        let mut md: Vec<(String, MetaValue)> =
            values.into_iter().enumerate().map(|(i, v)| (format!("k.{i}"), v)).collect();
        if alignment != 32 {
            md.push(("general.alignment".into(), MetaValue::U32(alignment)));
        }
        let infos: Vec<GgufTensorInfo> = shapes
            .iter()
            .enumerate()
            .map(|(i, (t, ne))| GgufTensorInfo { name: format!("t{i}"), ne: ne.clone(), ggml_type: *t })
            .collect();
        let l = layout(&md, &infos, alignment).unwrap();
        let datas: Vec<Vec<u8>> = l
            .tensor_sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| (0..n).map(|j| (j as u8) ^ (i as u8 * 37)).collect())
            .collect();
        let refs: Vec<&[u8]> = datas.iter().map(Vec::as_slice).collect();
        let bytes = write_to_vec(&md, &infos, &refs, alignment).unwrap();
        prop_assert_eq!(bytes.len() as u64, l.file_size);
        prop_assert_eq!(l.file_size % u64::from(alignment), 0);
        let f = GgufFile::parse(&bytes).unwrap();
        prop_assert_eq!(f.alignment, alignment);
        prop_assert_eq!(&f.metadata, &md);
        prop_assert_eq!(f.tensors.len(), infos.len());
        for (i, t) in f.tensors.iter().enumerate() {
            prop_assert_eq!(&t.info, &infos[i]);
            prop_assert_eq!(t.file_offset, l.tensor_offsets[i]);
            prop_assert_eq!(t.file_offset % u64::from(alignment), 0);
            prop_assert_eq!(t.data, &datas[i][..]);
        }
    }
}
