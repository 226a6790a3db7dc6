//! The `cifar-kern` command line.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cifar-kern",
    version,
    about = "CIFAR-10 classifiers on a hand-written engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the backends this binary can use.
    Info,
}

fn main() {
    match Cli::parse().command {
        Command::Info => {
            println!("cpu: {} threads (rayon)", rayon::current_num_threads());
            let modules: Vec<&str> = cifar_kern::cuda::PTX_MODULES.iter().map(|(n, _)| *n).collect();
            println!("embedded PTX modules: {modules:?}");
            match cifar_kern::cuda::unavailable_reason() {
                None => println!("cuda: available"),
                Some(why) => println!("cuda: unavailable ({why}); using the CPU"),
            }
        }
    }
}
