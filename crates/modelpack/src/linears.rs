//! Which tensors of a checkpoint are Linear weights (the cuda target's structural rule) and the
//! consistency of a MoE checkpoint's experts with its config.
//!
//! The rule is structural, not a list of names: a 2-D `*.weight` inside the layer stack
//! (`…layers.N.…`, `…layer.N.…` as in BERT encoders, `…blocks.N.…`) is a Linear, whatever the
//! family calls it (`q_proj`, `query`, `w1`, `experts.3.down_proj`, `dense`). A short, documented
//! list stays dense: MoE routers, embeddings, layers past `num_hidden_layers` (MTP / nextn
//! drafters) and everything outside the stack (`lm_head`, poolers, heads). transformers 5's fused
//! expert tensors (`experts.gate_up_proj [E,2F,H]`, `experts.down_proj [E,H,F]`) are Linear
//! weights too, written one module per expert as the released checkpoints name them.

use std::collections::{BTreeMap, BTreeSet};

/// What the cuda target does with one checkpoint tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    /// A Linear weight inside the layer stack: quantized.
    Linear,
    /// A fused 3-D expert tensor: quantized as one module per expert (`down` for `down_proj`).
    FusedExperts {
        /// `experts.down_proj [E,H,F]` rather than `experts.gate_up_proj [E,2F,H]`.
        down: bool,
        /// The up side holds gate and up rows (`gate_up_proj [E,2F,H]`); false for the
        /// non-gated experts of Nemotron-H (`experts.up_proj [E,F,H]`, ReLU² MLPs).
        gated: bool,
    },
    /// Kept in the source dtype. `linear` says whether it is a Linear's weight (then its module
    /// goes into compressed-tensors' `ignore`, or the runtimes would expect packed tensors).
    Dense {
        /// Why, for the report and manifest.
        why: String,
        /// A Linear module left dense.
        linear: bool,
    },
}

/// The config.json facts the rule and the checks use (`text_config` merged over the top level).
#[derive(Debug, Clone, Default)]
pub struct ModelFacts {
    /// `model_type`.
    pub model_type: String,
    /// Layers of the model proper; layers at or past it are MTP (nextn) layers.
    pub num_hidden_layers: Option<usize>,
    /// The experts' input width and the key it came from: `hidden_size`, or Nemotron-H's
    /// `moe_latent_size` when its MoE runs the experts in a projected latent space.
    pub hidden: Option<(usize, &'static str)>,
    /// Routed experts per MoE layer and the key it came from.
    pub experts: Option<(usize, &'static str)>,
    /// Rows of one expert's gate/up projection and the key it came from.
    pub expert_ffn: Option<(usize, &'static str)>,
    /// Two expert-count keys that disagree (`num_local_experts` 4 beside `num_experts` 3).
    pub conflict: Option<String>,
}

impl ModelFacts {
    /// Read the facts from a config.json value.
    pub fn from_config(raw: &serde_json::Value) -> ModelFacts {
        let get = |k: &str| -> Option<&serde_json::Value> {
            raw.get("text_config").and_then(|t| t.get(k)).or_else(|| raw.get(k))
        };
        let num = |k: &'static str| get(k).and_then(serde_json::Value::as_u64).map(|v| (v as usize, k));
        let first = |ks: &[&'static str]| ks.iter().find_map(|k| num(k));
        let model_type = get("model_type").and_then(|v| v.as_str()).unwrap_or_default().to_string();
        const EXPERT_KEYS: [&str; 3] = ["num_local_experts", "num_experts", "n_routed_experts"];
        let experts = first(&EXPERT_KEYS).filter(|e| e.0 > 0);
        let conflict =
            EXPERT_KEYS.iter().filter_map(|k| num(k)).find(|o| experts.is_some_and(|e| e.0 != o.0)).map(|o| {
                let e = experts.expect("checked");
                format!("config.json contradicts itself: {} = {} but {} = {}", e.1, e.0, o.1, o.0)
            });
        // Mixtral-style configs (num_local_experts, no moe_intermediate_size) give each expert
        // `intermediate_size` rows; the others say it with moe_intermediate_size.
        let expert_ffn = num("moe_intermediate_size").or_else(|| {
            (experts.is_some_and(|e| e.1 == "num_local_experts")).then(|| num("intermediate_size")).flatten()
        });
        ModelFacts {
            model_type,
            num_hidden_layers: num("num_hidden_layers").map(|v| v.0),
            hidden: num("moe_latent_size").or_else(|| num("hidden_size")),
            experts,
            expert_ffn,
            conflict,
        }
    }

    /// Per-expert naming of the family's released checkpoints (what vLLM's loaders and
    /// transformers' conversion mapping read): the MoE module (`mlp` in transformers 5's fused
    /// layout, `block_sparse_moe` in Mixtral-style releases) and the gate, up, down names.
    pub fn expert_names(&self) -> ExpertNames {
        match self.model_type.as_str() {
            "minimax_m2" | "minimax" | "mixtral" => {
                ExpertNames { released_module: Some("block_sparse_moe"), gate: "w1", up: "w3", down: "w2" }
            }
            _ => ExpertNames { released_module: None, gate: "gate_proj", up: "up_proj", down: "down_proj" },
        }
    }
}

/// See [`ModelFacts::expert_names`].
#[derive(Debug, Clone, Copy)]
pub struct ExpertNames {
    /// The MoE module name of the released layout when it is not transformers 5's `mlp`.
    pub released_module: Option<&'static str>,
    /// Gate projection.
    pub gate: &'static str,
    /// Up projection.
    pub up: &'static str,
    /// Down projection.
    pub down: &'static str,
}

/// `N` of the first `layers.N.` / `layer.N.` / `blocks.N.` in `name`, and the byte index just
/// past that prefix.
pub fn layer_index(name: &str) -> Option<(usize, usize)> {
    let parts: Vec<&str> = name.split('.').collect();
    let mut pos = 0;
    for w in parts.windows(2) {
        if matches!(w[0], "layers" | "layer" | "blocks") {
            if let Ok(n) = w[1].parse::<usize>() {
                return Some((n, pos + w[0].len() + 1 + w[1].len() + 1));
            }
        }
        pos += w[0].len() + 1;
    }
    None
}

fn is_embedding(name: &str) -> bool {
    name.split('.').any(|c| c.contains("embed") || c == "wte" || c == "wpe")
}

/// Routers: the MoE gate (`mlp.gate`, `block_sparse_moe.gate`, `router`) and Qwen2-MoE's
/// one-row `shared_expert_gate`. Kept dense: they are tiny, routing decisions are sensitive to
/// them, and vLLM builds them unquantized.
fn is_router(module: &str) -> bool {
    let last = module.rsplit('.').next().unwrap_or(module);
    matches!(last, "gate" | "router" | "shared_expert_gate") || module.ends_with(".router.classifier")
}

/// A multi-token-prediction head stored beside the layer stack (`mtp.layers.N.…`, Nemotron-H and
/// Qwen3-Next style), as opposed to DeepSeek's MTP layers numbered past `num_hidden_layers`.
fn is_mtp(name: &str) -> bool {
    name.split('.').next() == Some("mtp")
}

/// The projection of a fused transformers-5 expert tensor (`…experts.gate_up_proj`,
/// `…experts.up_proj` of Nemotron-H's non-gated experts, `…experts.down_proj`).
pub fn fused_experts(name: &str) -> Option<&'static str> {
    ["gate_up_proj", "up_proj", "down_proj"].into_iter().find(|p| name.ends_with(&format!(".experts.{p}")))
}

/// Classify one tensor.
pub fn classify(name: &str, shape: &[usize], facts: &ModelFacts) -> Class {
    let dense = |why: &str, linear: bool| Class::Dense { why: why.to_string(), linear };
    let layer = layer_index(name);
    let mtp = is_mtp(name);
    if shape.len() == 3 && fused_experts(name).is_some() {
        if mtp {
            return dense("experts of an MTP head (`mtp.`): kept", true);
        }
        if let (Some((n, _)), Some(main)) = (layer, facts.num_hidden_layers) {
            if n >= main {
                return dense("experts of an MTP (nextn) layer past num_hidden_layers: kept", true);
            }
        }
        let proj = fused_experts(name).expect("checked");
        return Class::FusedExperts { down: proj == "down_proj", gated: proj == "gate_up_proj" };
    }
    if shape.len() == 3 && name.ends_with(".conv1d.weight") {
        return dense(
            "Mamba conv1d: a depthwise nn.Conv1d, not a Linear (vLLM builds it with quant_config=None, \
             compressed-tensors' `Linear` target does not match it): kept",
            false,
        );
    }
    let Some(module) = name.strip_suffix(".weight") else {
        return dense(if shape.len() < 2 { "1-D tensor kept" } else { "not a `.weight`: kept" }, false);
    };
    if shape.len() < 2 {
        return dense("1-D tensor kept", false);
    }
    if shape.len() > 2 {
        return dense("more than 2 dimensions and not a known fused expert layout: kept", false);
    }
    if is_embedding(name) {
        return dense("embedding: kept", false);
    }
    if module == "lm_head" || module.ends_with(".lm_head") {
        return dense("lm_head: kept dense (listed in ignore), as compressed-tensors does", true);
    }
    let Some((n, _)) = layer else {
        return dense("Linear outside the layer stack (head, pooler, projector): kept dense, in ignore", true);
    };
    if mtp {
        return dense(
            "MTP head (`mtp.`): kept dense, in ignore (transformers drops `mtp.*` at load; vLLM loads it as a \
             separate draft model)",
            true,
        );
    }
    if facts.num_hidden_layers.is_some_and(|main| n >= main) {
        return dense(
            "MTP (nextn) layer past num_hidden_layers: kept dense, in ignore (transformers builds no such \
             layer; vLLM loads it as a separate draft model)",
            true,
        );
    }
    if is_router(module) {
        return dense(
            "MoE router: kept dense, in ignore (tiny; routing is sensitive; vLLM builds it unquantized)",
            true,
        );
    }
    Class::Linear
}

/// Expert index -> (tensor name, shape) of one projection of one MoE module.
type Experts = BTreeMap<usize, (String, Vec<usize>)>;

/// `(prefix, expert, projection)` of a per-expert weight `prefix.experts.E.proj.weight`.
fn per_expert(name: &str) -> Option<(&str, usize, &str)> {
    let i = name.rfind(".experts.")?;
    let rest = name[i + ".experts.".len()..].strip_suffix(".weight")?;
    let (e, proj) = rest.split_once('.')?;
    if proj.contains('.') {
        return None;
    }
    Some((&name[..i], e.parse().ok()?, proj))
}

/// Check the experts of a checkpoint against each other and config.json: every MoE module has
/// the same projections for experts `0..E` (E from the config when it says), one shape per
/// projection, shapes that agree with hidden_size and the expert FFN size, fused tensors with E
/// slabs, and a router with E rows. The error names the tensor.
pub fn check_experts<'a>(
    tensors: impl Iterator<Item = (&'a str, &'a [usize])>,
    facts: &ModelFacts,
) -> Result<(), String> {
    if let Some(c) = &facts.conflict {
        return Err(c.clone());
    }
    // prefix -> proj -> expert -> (name, shape)
    let mut groups: BTreeMap<String, BTreeMap<String, Experts>> = BTreeMap::new();
    let mut fused: Vec<(String, Vec<usize>)> = Vec::new();
    let mut all: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (name, shape) in tensors {
        all.insert(name.to_string(), shape.to_vec());
        if let Some((prefix, e, proj)) = per_expert(name) {
            groups
                .entry(prefix.to_string())
                .or_default()
                .entry(proj.to_string())
                .or_default()
                .insert(e, (name.to_string(), shape.to_vec()));
        } else if shape.len() == 3 && fused_experts(name).is_some() {
            fused.push((name.to_string(), shape.to_vec()));
        }
    }
    let cfg_e = facts.experts;
    let hidden = facts.hidden;
    let ffn = facts.expert_ffn;
    let mut moe_modules: BTreeSet<String> = BTreeSet::new();
    for (prefix, projs) in &groups {
        moe_modules.insert(prefix.clone());
        let seen: BTreeSet<usize> = projs.values().flat_map(|m| m.keys().copied()).collect();
        let n = match cfg_e {
            Some((e, key)) => {
                if let Some(&bad) = seen.iter().find(|&&i| i >= e) {
                    let (name, _) = projs.values().find_map(|m| m.get(&bad)).expect("seen");
                    return Err(format!("tensor `{name}`: expert {bad}, but config.json says {key} = {e}"));
                }
                e
            }
            None => seen.iter().max().map_or(0, |m| m + 1),
        };
        for (proj, experts) in projs {
            for i in 0..n {
                if !experts.contains_key(&i) {
                    let have = experts.len();
                    return Err(format!(
                        "missing tensor `{prefix}.experts.{i}.{proj}.weight`: the checkpoint has {have} of the {n} \
                         experts' `{proj}`{}",
                        cfg_e.map(|(_, k)| format!(" ({k} = {n} in config.json)")).unwrap_or_default()
                    ));
                }
            }
            let (first_name, first_shape) = &experts[&0];
            for (name, shape) in experts.values() {
                if shape.len() != 2 {
                    return Err(format!("tensor `{name}` has shape {shape:?}: an expert weight must be 2-D"));
                }
                if shape != first_shape {
                    return Err(format!("tensor `{name}` has shape {shape:?} but `{first_name}` has {first_shape:?}"));
                }
            }
            let down = matches!(proj.as_str(), "down_proj" | "w2");
            let (f_dim, h_dim) = if down { (first_shape[1], first_shape[0]) } else { (first_shape[0], first_shape[1]) };
            if let Some((h, key)) = hidden.filter(|&(h, _)| h != h_dim) {
                return Err(format!(
                    "tensor `{first_name}` has shape {first_shape:?}, which does not match {key} = {h}"
                ));
            }
            if let Some((f, key)) = ffn.filter(|&(f, _)| f != f_dim) {
                return Err(format!(
                    "tensor `{first_name}` has shape {first_shape:?}, which does not match {key} = {f}"
                ));
            }
        }
    }
    for (name, shape) in &fused {
        let parent = name.rsplit_once(".experts.").map_or("", |p| p.0);
        moe_modules.insert(parent.to_string());
        let down = name.ends_with("down_proj");
        if let Some((e, key)) = cfg_e.filter(|&(e, _)| e != shape[0]) {
            return Err(format!(
                "tensor `{name}` has shape {shape:?}: {} experts, but config.json says {key} = {e}",
                shape[0]
            ));
        }
        let gated = name.ends_with(".experts.gate_up_proj");
        let (f_dim, h_dim) = match (down, gated) {
            (true, _) => (shape[2], shape[1]),
            (false, true) => (shape[1] / 2, shape[2]),
            (false, false) => (shape[1], shape[2]),
        };
        if gated && shape[1] % 2 != 0 {
            return Err(format!("tensor `{name}` has shape {shape:?}: gate_up rows must be 2 × the expert FFN size"));
        }
        if let Some((h, key)) = hidden.filter(|&(h, _)| h != h_dim) {
            return Err(format!("tensor `{name}` has shape {shape:?}, which does not match {key} = {h}"));
        }
        if let Some((f, key)) = ffn.filter(|&(f, _)| f != f_dim) {
            return Err(format!("tensor `{name}` has shape {shape:?}, which does not match {key} = {f}"));
        }
        // down_proj's twin is gate_up_proj, or up_proj for non-gated experts (Nemotron-H).
        let twins: Vec<String> = if down {
            ["gate_up_proj", "up_proj"]
                .iter()
                .map(|p| name.replace(".experts.down_proj", &format!(".experts.{p}")))
                .collect()
        } else {
            let up = if gated { ".experts.gate_up_proj" } else { ".experts.up_proj" };
            vec![name.replace(up, ".experts.down_proj")]
        };
        match twins.iter().find_map(|t| all.get(t).map(|s| (t, s))) {
            None => return Err(format!("missing tensor `{}` (the fused experts have `{name}`)", twins[0])),
            Some((twin, t)) if t.len() != 3 || t[0] != shape[0] => {
                return Err(format!("tensor `{twin}` has shape {t:?} but `{name}` has {shape:?}"))
            }
            _ => {}
        }
    }
    // Every MoE module needs its router, with one row per expert.
    for parent in &moe_modules {
        let router =
            ["gate.weight", "router.weight"].iter().map(|s| format!("{parent}.{s}")).find(|r| all.contains_key(r));
        let n = cfg_e.map(|e| e.0).or_else(|| groups.get(parent).and_then(|p| p.values().next()).map(|m| m.len()));
        match router {
            None => {
                return Err(format!(
                    "missing tensor `{parent}.gate.weight`: the MoE module `{parent}` has experts but no router"
                ))
            }
            Some(r) => {
                let s = &all[&r];
                if let Some(n) = n.filter(|&n| s.len() != 2 || s[0] != n) {
                    return Err(format!("tensor `{r}` has shape {s:?}: a router needs one row per expert ({n})"));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> ModelFacts {
        ModelFacts {
            model_type: "qwen3_moe".into(),
            num_hidden_layers: Some(2),
            hidden: Some((8, "hidden_size")),
            experts: Some((2, "num_experts")),
            expert_ffn: Some((4, "moe_intermediate_size")),
            conflict: None,
        }
    }

    /// DeepSeek-V3 / Kimi-K2 (MLA + MoE): every projection is a packed Linear, including the
    /// low-rank MLA ones (`kv_a_proj_with_mqa`, `q_a_proj`, `q_b_proj`, `kv_b_proj`) and the
    /// shared experts; the router is dense (and listed in `ignore`); its correction bias, norms
    /// and embeddings are not Linears.
    #[test]
    fn deepseek_v3_every_linear_is_packed() {
        let f = ModelFacts::from_config(&serde_json::json!({
            "model_type": "deepseek_v3", "num_hidden_layers": 2, "hidden_size": 8,
            "n_routed_experts": 4, "moe_intermediate_size": 4
        }));
        for p in [
            "self_attn.q_a_proj",
            "self_attn.q_b_proj",
            "self_attn.q_proj",
            "self_attn.kv_a_proj_with_mqa",
            "self_attn.kv_b_proj",
            "self_attn.o_proj",
            "mlp.gate_proj",
            "mlp.experts.3.down_proj",
            "mlp.shared_experts.up_proj",
        ] {
            let n = format!("model.layers.1.{p}.weight");
            assert_eq!(classify(&n, &[8, 8], &f), Class::Linear, "{n}");
        }
        assert_eq!(
            classify("model.layers.1.mlp.gate.weight", &[4, 8], &f),
            Class::Dense {
                why: "MoE router: kept dense, in ignore (tiny; routing is sensitive; vLLM builds it unquantized)"
                    .into(),
                linear: true
            }
        );
        for (n, s) in [
            ("model.layers.1.mlp.gate.e_score_correction_bias", &[4][..]),
            ("model.layers.1.self_attn.kv_a_layernorm.weight", &[8][..]),
            ("model.embed_tokens.weight", &[16, 8][..]),
        ] {
            assert!(matches!(classify(n, s, &f), Class::Dense { linear: false, .. }), "{n}");
        }
        // The MTP layer (index num_hidden_layers) stays dense, in ignore.
        assert!(matches!(
            classify("model.layers.2.self_attn.kv_a_proj_with_mqa.weight", &[8, 8], &f),
            Class::Dense { linear: true, .. }
        ));
    }

    /// Nemotron-H (Mamba2 hybrid): in_proj/out_proj, attention, ReLU² MLP, routed and shared
    /// experts are packed Linears (vLLM passes them quant_config, transformers builds them as
    /// nn.Linear); the conv1d is a Conv1d, the router dense in ignore, `mtp.*` dense in ignore.
    #[test]
    fn nemotron_h_linears() {
        let f = ModelFacts::from_config(&serde_json::json!({
            "model_type": "nemotron_h", "hidden_size": 8, "n_routed_experts": 2, "moe_intermediate_size": 4
        }));
        for p in [
            "mixer.in_proj",
            "mixer.out_proj",
            "mixer.q_proj",
            "mixer.o_proj",
            "mixer.up_proj",
            "mixer.experts.1.up_proj",
            "mixer.experts.1.down_proj",
            "mixer.shared_experts.down_proj",
        ] {
            let n = format!("backbone.layers.3.{p}.weight");
            assert_eq!(classify(&n, &[8, 8], &f), Class::Linear, "{n}");
        }
        assert!(matches!(
            classify("backbone.layers.0.mixer.conv1d.weight", &[20, 1, 4], &f),
            Class::Dense { linear: false, ref why } if why.contains("Conv1d")
        ));
        assert!(matches!(
            classify("backbone.layers.1.mixer.gate.weight", &[2, 8], &f),
            Class::Dense { linear: true, .. }
        ));
        assert!(matches!(classify("backbone.embeddings.weight", &[16, 8], &f), Class::Dense { linear: false, .. }));
        assert!(matches!(
            classify("mtp.layers.0.mixer.q_proj.weight", &[8, 8], &f),
            Class::Dense { linear: true, ref why } if why.contains("MTP")
        ));
        assert_eq!(
            classify("backbone.layers.1.mixer.experts.up_proj", &[2, 4, 8], &f),
            Class::FusedExperts { down: false, gated: false }
        );
        assert_eq!(
            classify("backbone.layers.1.mixer.experts.down_proj", &[2, 8, 4], &f),
            Class::FusedExperts { down: true, gated: false }
        );
        let fused: Vec<(&str, Vec<usize>)> = vec![
            ("backbone.layers.1.mixer.gate.weight", vec![2, 8]),
            ("backbone.layers.1.mixer.experts.up_proj", vec![2, 4, 8]),
            ("backbone.layers.1.mixer.experts.down_proj", vec![2, 8, 4]),
        ];
        let check =
            |t: &[(&str, Vec<usize>)], f: &ModelFacts| check_experts(t.iter().map(|(n, s)| (*n, s.as_slice())), f);
        assert_eq!(check(&fused, &f), Ok(()));
        assert!(check(&fused[..2], &f)
            .unwrap_err()
            .contains("missing tensor `backbone.layers.1.mixer.experts.down_proj`"));
        // Latent MoE: the experts' input width is moe_latent_size, not hidden_size.
        let latent = ModelFacts::from_config(&serde_json::json!({
            "model_type": "nemotron_h", "hidden_size": 16, "moe_latent_size": 8, "n_routed_experts": 2,
            "moe_intermediate_size": 4
        }));
        assert_eq!(check(&fused, &latent), Ok(()));
        assert!(check(&fused, &ModelFacts { hidden: Some((16, "hidden_size")), ..f.clone() })
            .unwrap_err()
            .contains("hidden_size = 16"));
    }

    #[test]
    fn structural_rule() {
        let f = facts();
        assert_eq!(classify("model.layers.0.self_attn.q_proj.weight", &[8, 8], &f), Class::Linear);
        assert_eq!(classify("model.layers.1.block_sparse_moe.experts.3.w1.weight", &[4, 8], &f), Class::Linear);
        assert_eq!(classify("bert.encoder.layer.1.attention.self.query.weight", &[8, 8], &f), Class::Linear);
        assert_eq!(
            classify("model.layers.0.mlp.experts.gate_up_proj", &[2, 8, 8], &f),
            Class::FusedExperts { down: false, gated: true }
        );
        let dense = |n: &str, s: &[usize]| match classify(n, s, &f) {
            Class::Dense { linear, .. } => Some(linear),
            _ => None,
        };
        assert_eq!(dense("model.layers.0.mlp.gate.weight", &[2, 8]), Some(true));
        assert_eq!(dense("model.layers.0.mlp.shared_expert_gate.weight", &[1, 8]), Some(true));
        assert_eq!(dense("model.embed_tokens.weight", &[16, 8]), Some(false));
        assert_eq!(dense("lm_head.weight", &[16, 8]), Some(true));
        assert_eq!(dense("bert.pooler.dense.weight", &[8, 8]), Some(true));
        assert_eq!(dense("model.layers.2.eh_proj.weight", &[8, 16]), Some(true));
        assert_eq!(dense("model.layers.0.input_layernorm.weight", &[8]), Some(false));
        assert_eq!(dense("model.layers.0.mlp.gate.e_score_correction_bias", &[2]), Some(false));
    }

    fn ok(t: &[(&str, Vec<usize>)]) -> Result<(), String> {
        check_experts(t.iter().map(|(n, s)| (*n, s.as_slice())), &facts())
    }

    #[test]
    fn expert_checks_name_the_tensor() {
        let mut t: Vec<(&str, Vec<usize>)> = vec![
            ("m.layers.0.mlp.gate.weight", vec![2, 8]),
            ("m.layers.0.mlp.experts.0.gate_proj.weight", vec![4, 8]),
            ("m.layers.0.mlp.experts.1.gate_proj.weight", vec![4, 8]),
            ("m.layers.0.mlp.experts.0.down_proj.weight", vec![8, 4]),
            ("m.layers.0.mlp.experts.1.down_proj.weight", vec![8, 4]),
        ];
        assert_eq!(ok(&t), Ok(()));
        let mut missing = t.clone();
        missing.remove(4);
        assert!(ok(&missing).unwrap_err().contains("`m.layers.0.mlp.experts.1.down_proj.weight`"));
        let mut extra = t.clone();
        extra.push(("m.layers.0.mlp.experts.2.down_proj.weight", vec![8, 4]));
        assert!(ok(&extra).unwrap_err().contains("experts.2.down_proj.weight`: expert 2"));
        let mut shape = t.clone();
        shape[2].1 = vec![4, 16];
        assert!(ok(&shape).unwrap_err().contains("experts.1.gate_proj.weight"));
        let mut ffn = t.clone();
        for x in ffn.iter_mut().skip(1) {
            x.1 = if x.0.contains("down") { vec![8, 6] } else { vec![6, 8] };
        }
        assert!(ok(&ffn).unwrap_err().contains("moe_intermediate_size = 4"));
        let mut router = t.clone();
        router[0].1 = vec![3, 8];
        assert!(ok(&router).unwrap_err().contains("`m.layers.0.mlp.gate.weight`"));
        t.remove(0);
        assert!(ok(&t).unwrap_err().contains("missing tensor `m.layers.0.mlp.gate.weight`"));
        let fused: Vec<(&str, Vec<usize>)> = vec![
            ("m.layers.0.mlp.gate.weight", vec![2, 8]),
            ("m.layers.0.mlp.experts.gate_up_proj", vec![3, 8, 8]),
            ("m.layers.0.mlp.experts.down_proj", vec![3, 8, 4]),
        ];
        assert!(ok(&fused).unwrap_err().contains("num_experts = 2"));
        assert!(ok(&fused[..2]).unwrap_err().contains("num_experts = 2"));
    }
}
