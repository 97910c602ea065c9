//! The `traffic` command.

mod flags;

use std::{
    io::{self, Write as _},
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use anyhow::{Context as _, Result, anyhow};
use clap::Parser as _;
use flags::{BenchArgs, GenConfig, LowArgs, RunConfig, Sub, Target};
use tokio::signal::unix::{SignalKind, signal};
use traffic::{
    caps,
    engine::Engine,
    generator, lab,
    report::{Counts, Refused, Reporter, Start},
    rules::{Action, Origin, RuleSet},
};
use traffic_common::Stats;

fn main() -> ExitCode {
    // aya logs every map and program it creates at info level; keep warnings.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = LowArgs::parse();
    let result = match args.command {
        Some(Sub::Bench(bench_args)) => run_bench(&bench_args),
        Some(Sub::Gen(gen_args)) => GenConfig::from_args(gen_args)
            .map_err(usage_error)
            .and_then(|cfg| run_gen(&cfg)),
        None => RunConfig::from_args(args.run)
            .map_err(usage_error)
            .and_then(run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("traffic: error: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn usage_error(errors: Vec<String>) -> anyhow::Error {
    let mut text = String::from("nothing was attached:");
    for e in &errors {
        text.push_str("\n  ");
        text.push_str(e);
    }
    anyhow!(text)
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

fn run_gen(cfg: &GenConfig) -> Result<()> {
    let report = generator::run(&cfg.options)
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
            traffic::report::si(report.sent as f64 / secs.max(1e-9)),
            report.backpressure_waits
        )?;
    }
    Ok(())
}

fn run_bench(args: &BenchArgs) -> Result<()> {
    caps::check()?;
    if args.repeat == 0 || args.rules.contains(&0) {
        return Err(anyhow!(
            "--repeat and every --rules size must be at least 1"
        ));
    }
    let mut out = io::stdout().lock();
    let mut floor = std::collections::HashMap::new();
    if !args.json {
        writeln!(
            out,
            "{:<8} {:<8} {:<5} {:>9} {:>10} {:>9}",
            "program", "path", "family", "rules", "ns/packet", "x floor"
        )?;
    }
    let mut write_err = None;
    traffic::bench::kernel_costs(&args.rules, args.repeat, |cost| {
        if cost.program == "floor" {
            floor.insert(cost.family.clone(), cost.ns_per_packet);
        }
        let ratio = floor
            .get(&cost.family)
            .map_or(f64::NAN, |f| cost.ns_per_packet / f);
        let result = if args.json {
            serde_json::to_writer(
                &mut out,
                &serde_json::json!({"cost": cost, "ratio_to_floor": ratio}),
            )
            .map_err(io::Error::from)
            .and_then(|()| writeln!(out))
        } else {
            writeln!(
                out,
                "{:<8} {:<8} {:<5} {:>9} {:>10.1} {:>9.2}",
                cost.program, cost.path, cost.family, cost.rules, cost.ns_per_packet, ratio
            )
        };
        if let Err(e) = result {
            write_err.get_or_insert(e);
        }
    })
    .context("measuring with BPF_PROG_TEST_RUN")?;
    write_err.map_or(Ok(()), |e| Err(e.into()))
}

fn run(cfg: RunConfig) -> Result<()> {
    caps::check()?;
    match cfg.target.clone() {
        Target::Iface(iface) => block_on(watch(&cfg, &iface)),
        Target::Lab => run_lab(cfg),
    }
}

fn block_on<F: Future<Output = Result<()>>>(f: F) -> Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(f)
}

/// Sources of the lab's generator, and the demo rules applied to them.
const LAB_SOURCES: [&str; 6] = [
    "192.0.2.0/24",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "2001:db8:bad::/64",
    "2001:db8:1::/64",
    "2001:db8:c::/64",
];
const LAB_RULES: [(Action, &str); 4] = [
    (Action::Drop, "192.0.2.0/25"),
    (Action::Capture, "203.0.113.0/24"),
    (Action::Drop, "2001:db8:bad::/48"),
    (Action::Capture, "2001:db8:c::/48"),
];
/// Frames per second the lab's generator sends.
const LAB_RATE: u64 = 10_000;

fn run_lab(mut cfg: RunConfig) -> Result<()> {
    for name in lab::remove_stale() {
        eprintln!("traffic: removed namespace {name} left by a lab that was killed");
    }
    if !cfg.rules_given {
        let mut rules = RuleSet::new(cfg.rules.default_action());
        for (action, cidr) in LAB_RULES {
            rules.add_str(action, cidr, Origin::Flag("--lab"))?;
        }
        cfg.rules = rules;
    }
    let the_lab =
        lab::Lab::create("lab", 1).context("creating the lab (needs root, iproute2 and veth)")?;
    eprintln!(
        "traffic: lab: {} (namespace {}) sends {LAB_RATE} frames/s to {} (namespace {}) from {}",
        the_lab.tx_if,
        the_lab.tx_ns,
        the_lab.rx_if,
        the_lab.rx_ns,
        LAB_SOURCES.join(", ")
    );
    let stop = Arc::new(AtomicBool::new(false));
    let generator = {
        let stop = Arc::clone(&stop);
        let ns = the_lab.tx_ns.clone();
        let options = generator::GenOptions {
            iface: the_lab.tx_if.clone(),
            count: LAB_RATE / 10,
            sources: LAB_SOURCES
                .iter()
                .map(|s| s.parse().expect("valid lab prefix"))
                .collect(),
            dst4: "198.51.100.1".parse().expect("valid address"),
            dst6: "2001:db8::1".parse().expect("valid address"),
            dst_mac: lab::RX_MAC,
            rate: Some(LAB_RATE),
            proto: generator::Proto::Udp,
            payload_len: 64,
        };
        std::thread::spawn(move || -> Result<()> {
            lab::enter_netns(&ns).context("entering the lab's sending namespace")?;
            // Rounds of a tenth of a second, until told to stop.
            while !stop.load(Ordering::Relaxed) {
                generator::run(&options).context("the lab's generator failed")?;
            }
            Ok(())
        })
    };
    let result = lab::enter_netns(&the_lab.rx_ns)
        .context("entering the lab's receiving namespace")
        .and_then(|()| block_on(watch(&cfg, &the_lab.rx_if)));
    stop.store(true, Ordering::Relaxed);
    let gen_result = generator
        .join()
        .map_err(|_| anyhow!("the lab's generator panicked"))?;
    drop(the_lab);
    result.and(gen_result)
}

/// Loads, attaches and reports until stopped.
async fn watch(cfg: &RunConfig, iface: &str) -> Result<()> {
    // Installed first, so that a signal during loading also ends the run
    // cleanly instead of killing it midway.
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;

    let mut engine = Engine::load(&cfg.rules).context("loading the XDP program")?;
    let attached = engine
        .attach(iface, cfg.mode, cfg.force)
        .with_context(|| format!("attaching to {iface}"))?
        .clone();
    let (rules_v4, rules_v6) = cfg.rules.counts();
    let mut reporter = Reporter::new(io::LineWriter::new(io::stdout()), cfg.format);
    reporter.start(
        &Start {
            iface: attached.iface.clone(),
            ifindex: attached.ifindex,
            mode: attached.mode,
            refused: attached
                .refused
                .iter()
                .map(|(mode, error)| Refused {
                    mode: *mode,
                    error: error.clone(),
                })
                .collect(),
            replaced: attached.replaced.clone(),
            rules_v4,
            rules_v6,
            default: cfg.rules.default_action(),
        },
        &mut io::stderr(),
    )?;

    let started = Instant::now();
    let deadline = cfg
        .duration
        .map(|d| tokio::time::Instant::from_std(started + d));
    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::from_std(started + cfg.interval),
        cfg.interval,
    );
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = (Stats::default(), started);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let now = (engine.stats()?, Instant::now());
                reporter.interval(&Counts::from(now.0.since(&last.0)), now.1 - last.1)?;
                last = now;
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            () = sleep_until(deadline) => break,
        }
    }
    // Detach before the last reading, so that no packet is counted after it.
    engine.detach();
    let end = (engine.stats()?, Instant::now());
    let tail = end.0.since(&last.0);
    if tail.packets > 0 || end.1 - last.1 >= cfg.interval / 2 {
        reporter.interval(&Counts::from(tail), end.1 - last.1)?;
    }
    reporter.summary(
        &attached.iface,
        attached.mode,
        &Counts::from(end.0),
        end.1 - started,
    )?;
    Ok(())
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
