fn main() -> std::process::ExitCode {
    granite::cli::main()
}
