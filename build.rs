//! Rebuilds the binary when the embedded layout bundle changes (include_dir can't tell cargo).
fn main() {
    println!("cargo:rerun-if-changed=assets/layouts");
}
