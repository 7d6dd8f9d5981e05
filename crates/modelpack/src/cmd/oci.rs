//! `modelpack push | pull`: a package as a CNCF ModelPack OCI artifact in an image-layout
//! directory, an `oci-archive` tar, or a registry (docs/distribution.md).
use crate::exit::{CmdError, CmdResult, INTERNAL, OK, USAGE, VERIFY_FAILED};
use modelpack_oci::{
    build, layout, registry, BuildOptions, ClientOptions, ErrorKind, Location, OciError, Progress, Registry,
};
use serde_json::json;
use std::io::IsTerminal as _;
use std::path::PathBuf;

/// Options shared by push and pull.
#[derive(clap::Args)]
pub struct Common {
    /// Talk plain HTTP to the registry (loopback or lab registries without TLS).
    #[arg(long)]
    pub plain_http: bool,
    /// No progress bars (they are drawn only on a terminal anyway).
    #[arg(long)]
    pub no_progress: bool,
    /// Print one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `modelpack push`.
#[derive(clap::Args)]
pub struct PushArgs {
    /// Package directory (as written by `quantize`, signed or not).
    pub package: PathBuf,
    /// `oci:DIR[:TAG]`, `oci-archive:FILE.tar[:TAG]` or `[docker://]HOST[:PORT]/REPO[:TAG|@DIGEST]`.
    pub dest: String,
    /// Model name in the ModelPack config (default: the package directory's name).
    #[arg(long)]
    pub name: Option<String>,
    /// Blobs up to this many bytes are uploaded in one request, bigger ones in chunks of it.
    #[arg(long, default_value_t = registry::DEFAULT_CHUNK_SIZE, value_name = "BYTES")]
    pub chunk_size: u64,
    #[command(flatten)]
    /// Shared options.
    pub common: Common,
}

/// Arguments of `modelpack pull`.
#[derive(clap::Args)]
pub struct PullArgs {
    /// `oci:DIR[:TAG]`, `oci-archive:FILE.tar[:TAG]` or `[docker://]HOST[:PORT]/REPO[:TAG|@DIGEST]`.
    pub src: String,
    /// New package directory (must not exist).
    #[arg(short, long)]
    pub output: PathBuf,
    #[command(flatten)]
    /// Shared options.
    pub common: Common,
}

fn classify(e: OciError) -> CmdError {
    let code = match e.kind() {
        ErrorKind::Verify => VERIFY_FAILED,
        ErrorKind::Input => USAGE,
        ErrorKind::Io => INTERNAL,
    };
    CmdError { code, error: e.into() }
}

/// An indicatif bar per transfer on a terminal; nothing otherwise.
struct Bars(Option<indicatif::ProgressBar>);
impl Bars {
    fn new(c: &Common) -> Self {
        if c.no_progress || c.json || !std::io::stderr().is_terminal() {
            return Bars(None);
        }
        let b = indicatif::ProgressBar::hidden();
        b.set_style(
            indicatif::ProgressStyle::with_template("{msg:30!} {bar:30} {bytes}/{total_bytes} {bytes_per_sec}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Bars(Some(b))
    }
}
impl Progress for Bars {
    fn start(&self, what: &str, total: u64) {
        if let Some(b) = &self.0 {
            b.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            b.reset();
            b.set_length(total);
            b.set_message(what.to_string());
        }
    }
    fn advance(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.inc(n);
        }
    }
    fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

fn client_options(r: &modelpack_oci::RegistryRef, c: &Common, chunk: u64) -> (ClientOptions, &'static str) {
    let (credentials, from) = registry::find_credentials(&r.host);
    (ClientOptions { plain_http: c.plain_http, credentials, chunk_size: chunk.max(1) }, from)
}

fn source_date_epoch() -> Result<Option<u64>, CmdError> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(s) if !s.is_empty() => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| CmdError::usage(format!("SOURCE_DATE_EPOCH={s:?} is not a number of seconds"))),
        _ => Ok(None),
    }
}

/// Run `push`.
pub fn push(a: PushArgs) -> CmdResult {
    modelpack_oci::set_staging_hooks(staging_created, staging_finished);
    let loc = Location::parse(&a.dest).map_err(classify)?;
    let sde = source_date_epoch()?;
    let art = build(&a.package, &BuildOptions { name: a.name.clone(), source_date_epoch: sde }).map_err(classify)?;
    let bars = Bars::new(&a.common);
    let digest = art.manifest_digest();
    let mut extra = json!({});
    match &loc {
        Location::Layout { dir, tag } => layout::write_layout(&art, dir, tag.as_deref(), &bars).map_err(classify)?,
        Location::Archive { file, tag } => {
            layout::write_archive(&art, file, tag.as_deref(), sde.unwrap_or(0), &bars).map_err(classify)?
        }
        Location::Registry(r) => {
            let (opts, from) = client_options(r, &a.common, a.chunk_size);
            let reg = Registry::connect(r, opts, true).map_err(classify)?;
            let rep = reg.push(&art, &bars).map_err(classify)?;
            extra = json!({
                "credentials": from,
                "uploaded": rep.uploaded.iter().map(|(d, s)| json!({"digest": d, "size": s})).collect::<Vec<_>>(),
                "skipped": rep.skipped.iter().map(|(d, s)| json!({"digest": d, "size": s})).collect::<Vec<_>>(),
            });
        }
    }
    let layers: Vec<_> = art
        .layers
        .iter()
        .map(|l| json!({"path": l.path, "mediaType": l.media_type, "digest": l.digest(), "size": l.size}))
        .collect();
    if a.common.json {
        let mut doc = json!({"status": "ok", "dest": a.dest, "manifest_digest": digest, "layers": layers});
        if let (Some(d), Some(e)) = (doc.as_object_mut(), extra.as_object()) {
            d.extend(e.clone());
        }
        println!("{doc}");
    } else {
        let total: u64 = art.layers.iter().map(|l| l.size).sum();
        eprintln!("pushed {} ({} files, {total} bytes) to {}", digest, art.layers.len(), a.dest);
        println!("{digest}");
    }
    Ok(OK)
}

/// A pull's (or layout push's) staging directory is removed on SIGINT/SIGTERM (exit 130/143).
fn staging_created(dir: &std::path::Path) {
    modelpack::signals::register_cleanup(dir);
    modelpack::fault::pause("pull-staged");
}

fn staging_finished(dir: &std::path::Path) {
    modelpack::signals::unregister_cleanup(dir);
}

/// Run `pull`.
pub fn pull(a: PullArgs) -> CmdResult {
    modelpack_oci::set_staging_hooks(staging_created, staging_finished);
    let loc = Location::parse(&a.src).map_err(classify)?;
    if a.output.exists() {
        return Err(CmdError::usage(format!("{} exists: pull writes a new package directory", a.output.display())));
    }
    let bars = Bars::new(&a.common);
    let mut credentials = None;
    let rep = match &loc {
        Location::Layout { dir, tag } => layout::pull_layout(dir, tag.as_deref(), &a.output, &bars),
        Location::Archive { file, tag } => layout::pull_archive(file, tag.as_deref(), &a.output, &bars),
        Location::Registry(r) => {
            let (opts, from) = client_options(r, &a.common, registry::DEFAULT_CHUNK_SIZE);
            credentials = Some(from);
            Registry::connect(r, opts, false).and_then(|reg| reg.pull(&a.output, &bars))
        }
    }
    .map_err(classify)?;
    if a.common.json {
        let files: Vec<_> = rep.files.iter().map(|(p, d, s)| json!({"path": p, "digest": d, "size": s})).collect();
        let mut doc = json!({"status": "ok", "src": a.src, "output": a.output, "manifest_digest": rep.manifest_digest, "files": files});
        if let (Some(from), Some(d)) = (credentials, doc.as_object_mut()) {
            // Where the credentials came from (registry sources), never the credentials.
            d.insert("credentials".into(), json!(from));
        }
        println!("{doc}");
    } else {
        eprintln!("pulled {} ({} files) into {}", rep.manifest_digest, rep.files.len(), a.output.display());
    }
    Ok(OK)
}
