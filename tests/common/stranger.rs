//! A login role with no grants at all: what anyone who can connect to the database
//! has. Roles are cluster-wide and the server is shared, so each one gets a unique
//! name and is dropped with the value.

use tokio_postgres::NoTls;

pub struct Stranger {
    pub role: String,
    /// Connects as the stranger to the test database.
    pub url: String,
}

impl Stranger {
    pub async fn new(db: &super::TestDb) -> Stranger {
        let role = format!(
            "{}_stranger_{}_{}",
            super::db_prefix(),
            std::process::id(),
            super::next_id()
        );
        let admin = super::connect(&super::with_db(&super::admin_url(), "postgres")).await;
        admin
            .batch_execute(&format!("create role \"{role}\" login"))
            .await
            .unwrap();
        Stranger {
            url: super::with_user_db(&super::admin_url(), &role, &db.name),
            role,
        }
    }

    pub async fn connect(&self) -> tokio_postgres::Client {
        super::connect(&self.url).await
    }
}

impl Drop for Stranger {
    fn drop(&mut self) {
        let role = self.role.clone();
        let url = super::with_db(&super::admin_url(), "postgres");
        // Drop runs outside async context, as TestDb's does. The stranger owns nothing
        // and was granted nothing, so the role drops even while its sessions are open
        // in a database that is about to be dropped too.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok((client, conn)) = tokio_postgres::connect(&url, NoTls).await {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("drop role if exists \"{role}\""))
                        .await;
                }
            });
        })
        .join();
    }
}
