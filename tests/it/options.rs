//! The library refuses contradictory quantization options itself (`QuantizeOptions::validate`,
//! called by planning), so the CLI is not the only guard: a group size of 0 does not silently
//! become per-channel scales, and cuda + rtn + an importance matrix does not write
//! "imatrix-weighted" notes over unweighted bytes. Checked through the library API, with the
//! CLI's exit code for the same options beside it.
use crate::common;

use modelpack::checkpoint::Checkpoint;
use modelpack::format::imatrix::{Imatrix, ImatrixFormat};
use modelpack::imatrix::ImatrixInput;
use modelpack::plan::{Method, PlanError, QuantizeOptions, Scheme, Target};
use modelpack::quant::ct::ScaleDtype;
use std::sync::Arc;

fn options(target: Target, scheme: Scheme, method: Method) -> QuantizeOptions {
    QuantizeOptions {
        target,
        scheme,
        method,
        gguf_type: None,
        gguf_mix: None,
        tensor_types: Vec::new(),
        keep: Vec::new(),
        group_size: 128,
        asymmetric: false,
        scale_dtype: None,
        max_shard_size: 5_000_000_000,
        force_requantize: false,
        metrics: false,
        imatrix: None,
        allow_dense: false,
    }
}

/// An (empty) importance matrix: what matters is that one was given.
fn some_imatrix() -> Arc<ImatrixInput> {
    Arc::new(ImatrixInput {
        file_name: "m.dat".into(),
        sha256: [0; 32],
        size: 0,
        matrix: Imatrix {
            format: ImatrixFormat::Legacy,
            datasets: Vec::new(),
            chunk_count: 0,
            chunk_size: 0,
            entries: Default::default(),
        },
    })
}

fn refused(r: Result<impl Sized, PlanError>, needle: &str) {
    match r {
        Err(PlanError::Input(m)) => assert!(m.contains(needle), "{m}"),
        Err(e) => panic!("expected an input error naming {needle:?}, got {e}"),
        Ok(_) => panic!("expected a refusal naming {needle:?}"),
    }
}

#[test]
fn library_planning_refuses_what_the_cli_refuses() {
    let ck = Checkpoint::open(&common::fixture("tiny-llama")).unwrap();

    let mut zero = options(Target::Cuda, Scheme::Int4, Method::Rtn);
    zero.group_size = 0;
    refused(zero.validate(), "group-size");
    refused(modelpack::cuda::plan(&ck, &zero), "group-size");

    let mut rtn_imatrix = options(Target::Cuda, Scheme::Int4, Method::Rtn);
    rtn_imatrix.imatrix = Some(some_imatrix());
    refused(modelpack::cuda::plan(&ck, &rtn_imatrix), "needs --method mse");
    // The same matrix with mse is accepted (it is what weights the cuda search).
    let mut mse_imatrix = rtn_imatrix.clone();
    mse_imatrix.method = Method::Mse;
    mse_imatrix.validate().unwrap();

    let mut cpu_scale = options(Target::Cpu, Scheme::Int8, Method::Rtn);
    cpu_scale.scale_dtype = Some(ScaleDtype::F32);
    refused(modelpack::cpu::plan(&ck, &cpu_scale), "--scale-dtype applies to --target cuda");

    // Valid options plan.
    modelpack::cuda::plan(&ck, &options(Target::Cuda, Scheme::Int4, Method::Rtn)).unwrap();
    modelpack::cpu::plan(&ck, &options(Target::Cpu, Scheme::Int8, Method::Rtn)).unwrap();
}

/// Through `run::quantize`, the refusal comes before anything is written.
#[test]
fn library_quantize_refuses_group_size_zero_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("pkg");
    let mut opts = options(Target::Cuda, Scheme::Int4, Method::Rtn);
    opts.group_size = 0;
    let job = modelpack::run::QuantizeJob {
        input: common::fixture("tiny-llama"),
        output: out.clone(),
        options: opts,
        force: false,
        sign_key: None,
        sign_certs: None,
        source_date_epoch: None,
        source_digests: false,
        limits: Default::default(),
    };
    let Err(e) = modelpack::run::quantize(&job, &|_, _| {}) else { panic!("group size 0 accepted") };
    assert!(e.is_input(), "{e}");
    assert!(matches!(e, modelpack::run::RunError::Plan(PlanError::Input(_))), "{e}");
    assert!(std::fs::read_dir(tmp.path()).unwrap().next().is_none(), "nothing written");

    // The CLI says the same with exit code 2.
    let o = common::modelpack()
        .arg("quantize")
        .arg(common::fixture("tiny-llama"))
        .arg("-o")
        .arg(&out)
        .args(["--target", "cuda", "--scheme", "int4", "--group-size", "0", "--json"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stdout).contains("--group-size must be positive"));
}
