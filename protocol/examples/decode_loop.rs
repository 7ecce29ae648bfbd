//! Decodes one WBXML file N times and nothing else: a steady target for
//! `valgrind --tool=callgrind` and `perf record` when working on the
//! decoder (criterion's own code would blur the profile). With mimalloc,
//! the allocator the `opush` server ships with.
//!
//! `cargo build --release -p opush-protocol --example decode_loop &&
//! target/release/examples/decode_loop FILE.wbxml 2000`

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(path), n) = (args.next(), args.next()) else {
        eprintln!("usage: decode_loop FILE.wbxml [N]");
        return std::process::ExitCode::FAILURE;
    };
    let n: usize = n.and_then(|n| n.parse().ok()).unwrap_or(30);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) => {
            eprintln!("{path}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut children = 0;
    for _ in 0..n {
        match opush_protocol::wbxml::decode(std::hint::black_box(&bytes)) {
            Ok(root) => children += root.children.len(),
            Err(e) => {
                eprintln!("{path}: {e}");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    println!("{n} decodes, {children} children of the root in all");
    std::process::ExitCode::SUCCESS
}
