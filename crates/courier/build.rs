// `sqlx::migrate!` embeds ../../migrations (the workspace's `migrations/`) at compile time; without this a new
// migration file would not rebuild the binary (what `sqlx migrate build-script`
// generates).
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
