//! The `zdeploy` binary: parse, run, map the outcome to an exit code.

fn main() -> std::process::ExitCode {
    zdeploy::exit::run()
}
