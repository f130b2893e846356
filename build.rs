//! `sqlx::migrate!` embeds `migrations/` when the crate compiles, but cargo does not know
//! that: without this, a new migration file leaves the binary (and every test) running
//! the old schema until some Rust file changes.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
