#![allow(dead_code)]
//! A fresh, isolated PostgreSQL database per test.
//!
//! ```ignore
//! mod support { pub mod postgres; }
//! let db = support::postgres::TestDatabase::create().await;
//! let store = attune_sensor::store::open(&db.url).await?;
//! // ... the database is dropped when `db` goes out of scope.
//! ```
//!
//! The server defaults to `postgres://postgres@127.0.0.1:5432` and can be changed with
//! `ATTUNE_TEST_DATABASE_URL` (any database on the server; it is only used to create and
//! drop the test databases). An unreachable server fails the test loudly: these tests
//! never skip.

use sqlx::{Connection, Executor, PgConnection};

const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database named `attune_test_<uuid>`, dropped (with its open connections) on drop.
pub struct TestDatabase {
    /// URL of the test database.
    pub url: String,
    pub name: String,
    admin_url: String,
}

fn admin_url() -> String {
    std::env::var("ATTUNE_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned())
}

fn unreachable(admin_url: &str, error: impl std::fmt::Display) -> ! {
    panic!(
        "PostgreSQL is not reachable at {admin_url} ({error}).\n\
         Start it with:\n    pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\n\
         or point ATTUNE_TEST_DATABASE_URL at a server with trust auth for these tests."
    )
}

impl TestDatabase {
    /// The database's URL through `addr` (a proxy in front of the server) instead.
    pub fn url_via(&self, addr: std::net::SocketAddr) -> String {
        let mut url = url::Url::parse(&self.url).expect("the test database URL is valid");
        url.set_ip_host(addr.ip()).expect("an IP host");
        url.set_port(Some(addr.port())).expect("a port");
        url.to_string()
    }

    pub async fn create() -> Self {
        let admin_url = admin_url();
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| unreachable(&admin_url, e));
        let name = format!("attune_test_{}", uuid::Uuid::new_v4().simple());
        admin
            .execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
        let _ = admin.close().await;
        let mut url = url::Url::parse(&admin_url).expect("admin URL is a valid URL");
        url.set_path(&name);
        Self {
            url: url.to_string(),
            name,
            admin_url,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime, which cannot be blocked on; a thread with its
        // own small runtime can. FORCE ends the pool connections the test left open.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut admin = PgConnection::connect(&admin_url)
                    .await
                    .map_err(|e| e.to_string())?;
                admin
                    .execute(format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#).as_str())
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = admin.close().await;
                Ok::<(), String>(())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: could not drop test database {}: {e}", self.name),
            Err(_) => eprintln!("warning: dropping test database {} panicked", self.name),
        }
    }
}
