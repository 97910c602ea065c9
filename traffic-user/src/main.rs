//! The `traffic` command: parses the flags, dispatches, and maps the outcome
//! to an exit status (0, 1 when capture events were lost, 2 on errors).

use std::{
    io::{self, Write as _},
    process::ExitCode,
};

use anyhow::{Context as _, Result};
use clap::Parser as _;
use traffic::{
    bench,
    cli::{GenConfig, LowArgs, Sub},
    kernel::caps,
    lab::{builtin, generator},
    session::{self, Outcome, RunConfig, Stop, Target},
    sink::report::si,
};

fn main() -> ExitCode {
    traffic::os::ignore_file_size_signal();
    // aya logs every map and program it creates at info level; keep warnings.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = LowArgs::parse();
    if let Some(kind) = &args.run.generate {
        return match traffic::cli::generate::generate(kind, &mut io::stdout().lock()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(traffic::cli::generate::GenerateError::Write { source, .. })
                if source.kind() == io::ErrorKind::BrokenPipe =>
            {
                ExitCode::SUCCESS
            }
            Err(err) => {
                traffic::say!("traffic: error: {}", traffic::kernel::error_chain(&err));
                ExitCode::from(2)
            }
        };
    }
    let result = match args.command {
        Some(Sub::Bench(bench_args)) => bench::run(&bench_args).map(|()| 0).map_err(Into::into),
        Some(Sub::Gen(gen_args)) => GenConfig::from_args(gen_args)
            .map_err(Into::into)
            .and_then(|cfg| run_gen(&cfg))
            .map(|()| 0),
        None => RunConfig::from_args(args.run)
            .map_err(Into::into)
            .and_then(run),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            traffic::say!(
                "traffic: error: {}",
                traffic::kernel::error_chain(err.as_ref())
            );
            ExitCode::from(2)
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

fn run_gen(cfg: &GenConfig) -> Result<()> {
    let report = generator::run_with(&cfg.options, cfg.mechanism)
        .with_context(|| format!("sending on {}", cfg.options.iface))?;
    let mut out = io::stdout().lock();
    if cfg.json {
        serde_json::to_writer(&mut out, &report)?;
        writeln!(out)?;
    } else {
        let secs = report.elapsed_ns as f64 / 1e9;
        writeln!(
            out,
            "sent {} frames ({} bytes) in {secs:.3} s: {} frames/s; waited on backpressure {} times",
            report.sent,
            report.bytes,
            si(report.sent as f64 / secs.max(1e-9)),
            report.backpressure_waits
        )?;
    }
    Ok(())
}

/// Runs the engine; the exit status is 1 when capture events were lost.
fn run(cfg: RunConfig) -> Result<u8> {
    caps::check(cfg.afxdp.is_some())?;
    let outcome = match cfg.target.clone() {
        Target::Ifaces(ifaces) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the tokio runtime")?
            .block_on(session::watch(&cfg, &ifaces))?,
        Target::Lab => builtin::run(cfg)?,
        Target::File(path) => return read(&cfg, &path),
    };
    if let Stop::InterfaceGone { iface } = &outcome.stopped {
        traffic::say!(
            "traffic: error: {iface} went away while traffic ran (deleted, or moved to another network namespace); the summary covers the run until then"
        );
    }
    report_loss(&outcome);
    report_failed(&outcome);
    Ok(outcome.exit_code())
}

/// Runs a recorded capture; the exit status is 1 when the file has a bad
/// record, frames could not be run, or events were lost.
fn read(cfg: &RunConfig, path: &std::path::Path) -> Result<u8> {
    let replayed = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // The run never waits: look at events (signals) at every yield.
        .event_interval(1)
        .build()
        .context("starting the tokio runtime")?
        .block_on(session::setup::read(cfg, path))?;
    let secs = replayed.took.as_secs_f64();
    traffic::say!(
        "traffic: ran {} frames of {} through the XDP program in {secs:.3} s ({} frames/s)",
        replayed.frames,
        path.display(),
        si(replayed.frames as f64 / secs.max(1e-9)),
    );
    let mut code = replayed.outcome.exit_code();
    if replayed.refused > 0 {
        traffic::say!(
            "traffic: error: {} frames were not run: the kernel runs no XDP frame shorter than an Ethernet header (14 bytes) or larger than a page holds (about 3,500 bytes); they are in no count",
            replayed.refused
        );
        code = code.max(1);
    }
    report_loss(&replayed.outcome);
    report_failed(&replayed.outcome);
    if let Some(e) = &replayed.error {
        traffic::say!(
            "traffic: error: {}; the summary covers the frames before it",
            traffic::kernel::error_chain(e)
        );
        code = code.max(1);
    }
    Ok(code)
}

/// An output that failed did not stop the run, but it must not pass
/// unnoticed either.
fn report_failed(outcome: &Outcome) {
    for f in outcome
        .failed
        .iter()
        .filter(|f| !f.error.is_closed_stdout())
    {
        traffic::say!(
            "traffic: {}; the run went on without it: {} packets were written there before, {} after were not",
            traffic::kernel::error_chain(&f.error),
            f.packets_before,
            f.packets_missed
        );
    }
}

/// Lost packets are not fatal, but they must not pass unnoticed.
fn report_loss(outcome: &Outcome) {
    if let Some(message) = outcome.loss_message() {
        traffic::say!("traffic: of the packets to capture, {message}");
    }
}
