//! `pgchat-bench`: the load generator for pgchat and any server speaking the plan's
//! core frames. See `pgchat-bench --help` and docs/benchmarks.md.
//!
//! - [`cli`]       options and subcommands
//! - [`limits`]    open-file limit, server RSS
//! - [`seed`]      users, rooms, memberships through SQL; tokens
//! - [`frames`]    the frames written and read, and the timestamped payload
//! - [`clients`]   the fleet: open N connections, drain, close
//! - [`conn`]      one connection's task
//! - [`tracker`]   lost / duplicated / out-of-order bookkeeping
//! - [`report`]    JSON and readable output
//! - [`scenarios`] connect, fanout, bigroom, persist (and its raw limit), scale
//! - [`dial`], [`resume`] opening a socket; resuming it on another server
//! - [`proto`], [`worker`], [`workers`], [`hist`] worker processes: their commands, the
//!   worker side, the coordinator side, and histograms merged across them

mod cli;
mod clients;
mod conn;
mod dial;
mod frames;
mod hist;
mod limits;
mod proto;
mod report;
mod resume;
mod scenarios;
mod seed;
mod tracker;
mod wire;
mod worker;
mod workers;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let open_files = limits::raise_nofile();
    if let Err(e) = limits::check_connections(cli.scenario.connections(), open_files) {
        eprintln!("pgchat-bench: refusing to run: {e}");
        return ExitCode::from(2);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match &cli.scenario {
        cli::Scenario::Worker => {
            return match runtime.block_on(worker::serve(open_files)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("pgchat-bench worker: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        cli::Scenario::Scale(args) => {
            return match runtime.block_on(scenarios::scale::run(&cli.common, args)) {
                // A run that went through but failed a check still prints its figures.
                Ok(report) => {
                    report.print(cli.common.json);
                    if report.passed {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(3)
                    }
                }
                Err(e) => {
                    eprintln!("pgchat-bench: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        _ => {}
    }
    match runtime.block_on(scenarios::run(&cli.common, &cli.scenario)) {
        Ok(report) => {
            report.print(cli.common.json);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pgchat-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
