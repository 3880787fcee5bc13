//! A write transaction that can read what it is about to change: the admin API reads a row's
//! "before", changes it and writes the audit row, all or nothing. `Db::transaction` takes its
//! statements up front and cannot read in between.

use sqlx::{Postgres, Sqlite, Transaction};

use super::{bind_pg, bind_sqlite, sqlite_sql, Arg, Db, DbRow};

pub enum Tx {
    Postgres(Transaction<'static, Postgres>),
    Sqlite(Transaction<'static, Sqlite>),
}

impl Db {
    /// Opens a write transaction. SQLite's takes the write lock at once (`BEGIN IMMEDIATE`):
    /// a deferred one that read first could not write once another connection had written
    /// meanwhile, and would fail instead of waiting its turn. On PostgreSQL, reads that must
    /// hold until the commit say `FOR UPDATE`.
    pub async fn begin(&self) -> anyhow::Result<Tx> {
        Ok(match self {
            Db::Postgres(p) => Tx::Postgres(p.begin().await?),
            Db::Sqlite(p) => Tx::Sqlite(p.begin_with("BEGIN IMMEDIATE").await?),
        })
    }
}

impl Tx {
    pub fn is_postgres(&self) -> bool {
        matches!(self, Tx::Postgres(_))
    }

    /// `FOR UPDATE` on PostgreSQL; nothing on SQLite, whose transaction holds the write lock.
    pub fn for_update(&self) -> &'static str {
        if self.is_postgres() {
            " FOR UPDATE"
        } else {
            ""
        }
    }

    /// `FOR UPDATE OF alias` on PostgreSQL (a query with an outer join locks its own table's
    /// row only); nothing on SQLite.
    pub fn for_update_of(&self, alias: &str) -> String {
        match self.is_postgres() {
            true => format!(" FOR UPDATE OF {alias}"),
            false => String::new(),
        }
    }

    pub async fn execute(&mut self, sql: &str, args: &[Arg]) -> anyhow::Result<u64> {
        let args = args.iter().cloned();
        Ok(match self {
            Tx::Postgres(tx) => bind_pg(sqlx::query(sql), args)
                .execute(&mut **tx)
                .await?
                .rows_affected(),
            Tx::Sqlite(tx) => {
                let sql = sqlite_sql(sql);
                bind_sqlite(sqlx::query(&sql), args)
                    .execute(&mut **tx)
                    .await?
                    .rows_affected()
            }
        })
    }

    pub async fn fetch_all(&mut self, sql: &str, args: &[Arg]) -> anyhow::Result<Vec<DbRow>> {
        let args = args.iter().cloned();
        Ok(match self {
            Tx::Postgres(tx) => bind_pg(sqlx::query(sql), args)
                .fetch_all(&mut **tx)
                .await?
                .into_iter()
                .map(DbRow::Postgres)
                .collect(),
            Tx::Sqlite(tx) => {
                let sql = sqlite_sql(sql);
                bind_sqlite(sqlx::query(&sql), args)
                    .fetch_all(&mut **tx)
                    .await?
                    .into_iter()
                    .map(DbRow::Sqlite)
                    .collect()
            }
        })
    }

    /// Dropping a `Tx` without committing rolls it back.
    pub async fn commit(self) -> anyhow::Result<()> {
        match self {
            Tx::Postgres(tx) => tx.commit().await?,
            Tx::Sqlite(tx) => tx.commit().await?,
        }
        Ok(())
    }
}
