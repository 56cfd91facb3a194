//! Which storage backend the suite runs on, and the suite's own backend plumbing: SQLite by
//! default; PostgreSQL when `RUNWARDEN_TEST_DATABASE_URL` names a server (`.ci/pg-start`
//! starts one). Runs on either.

use crate::helpers::{
    PG_SKIPPED, Storage, database_of, fresh_dir, pg_admin_url, pg_connect, url_with_database,
};

#[test]
fn the_suite_says_which_backend_it_runs_on() {
    match pg_admin_url() {
        None => {
            println!("backend: SQLite (a fresh file per test)");
            println!("{PG_SKIPPED}");
        }
        Some(admin) => {
            let mut client = pg_connect(&admin);
            let show = |client: &mut postgres::Client, setting: &str| -> String {
                client
                    .query_one(&format!("SHOW {setting}"), &[])
                    .unwrap_or_else(|e| panic!("SHOW {setting}: {e}"))
                    .get(0)
            };
            let version = show(&mut client, "server_version");
            let connections = show(&mut client, "max_connections");
            println!(
                "backend: PostgreSQL {version} at {admin} (a fresh database per test; \
                 max_connections {connections})"
            );
        }
    }
}

#[test]
fn urls_get_their_database_name_replaced_and_read_back() {
    // The test's own URL handling: make sure it keeps user, host, port and parameters.
    let cases = [
        (
            "postgres://postgres@127.0.0.1:55432/postgres",
            "postgres://postgres@127.0.0.1:55432/rw_t_1",
        ),
        (
            "postgresql://u:p@db.example:5432/admin?sslmode=disable",
            "postgresql://u:p@db.example:5432/rw_t_1?sslmode=disable",
        ),
        ("postgres://localhost", "postgres://localhost/rw_t_1"),
        (
            "postgres://localhost?connect_timeout=5",
            "postgres://localhost/rw_t_1?connect_timeout=5",
        ),
    ];
    for (admin, expected) in cases {
        let url = url_with_database(admin, "rw_t_1");
        assert_eq!(url, expected, "{admin}");
        assert_eq!(database_of(&url), "rw_t_1", "{url}");
    }
}

#[test]
fn a_directory_names_one_database_and_queries_take_quoted_parameters_on_either_backend() {
    // Arrange
    let dir = fresh_dir("backend-storage");
    let other = fresh_dir("backend-storage-other");

    // Act
    let first = Storage::in_dir(&dir, "rw");
    let again = Storage::in_dir(&dir, "rw");
    let elsewhere = Storage::in_dir(&other, "rw");
    let row = first.query_row("SELECT ?1, ?2, ?1 || ?2", &["it's", "?3 \\ ok"]);

    // Assert
    assert_eq!(
        first, again,
        "a restart in the same directory finds the same database"
    );
    assert_ne!(first, elsewhere, "another directory, another database");
    assert_eq!(
        (row.text(0), row.text(1), row.text(2)),
        (
            "it's".to_string(),
            "?3 \\ ok".to_string(),
            "it's?3 \\ ok".to_string()
        ),
        "parameters come back verbatim"
    );
    if let Storage::Postgres(url) = &first {
        assert!(database_of(url).starts_with("rw_t_"), "{url}");
    }
}
