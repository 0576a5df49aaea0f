//! `runner`: the command-line front end (embed, generate, quantize, bench, eval, inspect, serve).

fn main() {
    eprintln!("runner: no subcommands are available yet; see README.md for the library API");
    std::process::exit(2);
}
