//! The `opush` command line: `serve`, `wbxml decode|encode`, `schema …`,
//! `replay …`. All I/O of the project lives in this crate and in `storage/`.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("opush: no command implemented yet")
}
