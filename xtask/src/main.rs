//! `cargo xtask`: the one entry point that builds, runs, tests and benchmarks
//! traffic, and installs what the build needs on a fresh machine.
//!
//! Each subcommand has its own module and a clap `Options` whose doc comments
//! are its `--help`.

mod bench;
mod build;
mod dist;
mod exec;
mod run;
mod setup;
mod test;

use std::process::ExitCode;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(bin_name = "cargo xtask", about, long_about = None)]
enum Command {
    /// Check and install the toolchain pieces the eBPF build needs.
    Setup(setup::Options),
    /// Build the XDP program and the `traffic` binary that embeds it.
    Build(build::Options),
    /// Build, then run `traffic` as root; with no `--iface`, on the built-in lab.
    Run(run::Options),
    /// Run every test: unprivileged unit tests, then the root tests in `tests/`.
    Test(test::Options),
    /// Measure traffic against the floor programs, xdp-filter and tcpdump;
    /// the report goes to target/bench/.
    Bench(bench::Options),
    /// Build the release binary and put it in target/dist with its man
    /// page, shell completions and the deployment files (systemd unit,
    /// container file, Kubernetes DaemonSet).
    Dist(dist::Options),
}

fn main() -> ExitCode {
    let result = match Command::parse() {
        Command::Setup(opts) => setup::ensure(&opts),
        Command::Build(opts) => build::build(&opts).map(|_| ()),
        Command::Run(opts) => run::run(opts),
        Command::Test(opts) => test::test(&opts),
        Command::Bench(opts) => bench::bench(&opts),
        Command::Dist(opts) => dist::dist(&opts),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
