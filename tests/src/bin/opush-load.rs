//! Placeholder: the load tool (written next).
fn main() {}
