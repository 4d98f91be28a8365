//! The `coalition` binary: a thin shell over the library's CLI.

fn main() -> std::process::ExitCode {
    coalition::cli::main()
}
