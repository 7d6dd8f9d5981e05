//! `modelpack compare <CHECKPOINT> <PACKAGE>`: per-tensor and total error of a package against
//! its source checkpoint (library code in [`modelpack::compare`]).
use crate::exit::{Classify, CmdError, CmdResult, INTERNAL, OK, USAGE};
use anyhow::Context as _;
use modelpack::compare::{compare, CompareOptions, CompareReport};
use std::io::{self, Write};
use std::path::PathBuf;

/// Arguments of `modelpack compare`.
#[derive(clap::Args)]
pub struct Args {
    /// The checkpoint the package was made from (directory or safetensors file).
    pub checkpoint: PathBuf,
    /// The package directory (GGUF or compressed-tensors), or a `.gguf` file.
    pub package: PathBuf,
    /// Flag tensors more than this many dB below the median SQNR of their kind.
    #[arg(long, default_value_t = 3.0)]
    pub flag_db: f64,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Run `compare`. Exit code 0 whenever the comparison could be made, flagged tensors or not:
/// the figures are the result, and a CI gate decides on them.
pub fn run(a: Args) -> CmdResult {
    if !a.flag_db.is_finite() || a.flag_db < 0.0 {
        return Err(CmdError::usage(format!("--flag-db {} must be a non-negative number", a.flag_db)));
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(a.threads.unwrap_or(0))
        .build()
        .context("starting worker threads")
        .internal()?;
    let opts = CompareOptions { flag_db: a.flag_db };
    let report = pool.install(|| compare(&a.checkpoint, &a.package, &opts)).map_err(|e| CmdError {
        code: if e.is_input() { USAGE } else { INTERNAL },
        error: anyhow::Error::new(e).context(format!(
            "comparing {} with {}",
            a.package.display(),
            a.checkpoint.display()
        )),
    })?;
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let r = if a.json {
        serde_json::to_writer_pretty(&mut out, &report).map_err(io::Error::from).and_then(|()| writeln!(out))
    } else {
        human(&mut out, &report)
    };
    match r.and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout").internal(),
        _ => Ok(OK),
    }
}

fn db(x: Option<f64>) -> String {
    x.map_or_else(|| "exact".to_string(), |v| format!("{v:.2}"))
}

fn human(out: &mut dyn Write, r: &CompareReport) -> io::Result<()> {
    writeln!(out, "{} ({}) vs {}", r.package.display(), r.target, r.checkpoint.display())?;
    writeln!(
        out,
        "{:<48} {:<30} {:>9} {:>10} {:>11} {:>9}",
        "tensor", "type", "SQNR dB", "rel RMSE", "max |err|", "cosine"
    )?;
    for t in &r.tensors {
        writeln!(
            out,
            "{:<48} {:<30} {:>9} {:>10} {:>11.3e} {:>9}{}",
            t.name,
            t.type_out,
            db(t.figures.sqnr_db),
            t.figures.rel_rmse.map_or("0".into(), |v| format!("{v:.5}")),
            t.figures.max_abs_err,
            t.figures.cosine.map_or("-".into(), |v| format!("{v:.6}")),
            if t.flagged { "  FLAGGED" } else { "" }
        )?;
    }
    writeln!(out)?;
    for k in &r.kinds {
        writeln!(
            out,
            "kind {:<40} {:>3} tensors  median {:>7} dB  worst {:>7} dB",
            k.kind,
            k.tensors,
            db(k.median_sqnr_db),
            db(k.worst_sqnr_db)
        )?;
    }
    writeln!(
        out,
        "total: SQNR {} dB, quantized tensors {} dB (median {} dB), {} flagged (> {} dB below their kind's median)",
        db(r.total.sqnr_db),
        db(r.quantized_total.sqnr_db),
        db(r.median_sqnr_db),
        r.flagged.len(),
        r.flag_db
    )?;
    for f in &r.flagged {
        writeln!(out, "flagged: {f}")?;
    }
    for u in &r.unmatched {
        writeln!(out, "no source tensor (not compared): {u}")?;
    }
    Ok(())
}
