//! The `coalition` binary: a thin shell over the library's CLI.

/// mimalloc instead of the C library's allocator: a full sync allocates and frees a
/// buffer or two per record on the verification and network threads, and with glibc's
/// allocator that was about a third of the verification thread's time (free-list
/// consolidation, pages returned to the kernel and faulted in again). SQLite keeps its
/// own calls to `malloc`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    coalition::cli::main()
}
