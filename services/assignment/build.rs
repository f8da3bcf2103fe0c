// `sqlx::migrate!` embeds the migration files at compile time but cannot tell cargo about a
// file added to the folder; without this a new migration is left out of an incremental build.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
