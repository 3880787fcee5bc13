//! `system_settings` as the admin API reads and writes them: a JSON value per key.

use super::columns::{select_list, Columns, JsonRow, Kind, Query};
use super::{timestamp, Db, Tx};
use crate::ids::new_id;

pub const SETTING_COLUMNS: &Columns = &[
    ("key", Kind::Text),
    ("value", Kind::Json),
    ("managed_by", Kind::Text),
    ("updated_at", Kind::Time),
];

fn by_key(key: &str, lock: &str) -> Query {
    let mut q = Query::new(format!(
        "SELECT {} FROM system_settings s WHERE TRUE",
        select_list("s", SETTING_COLUMNS)
    ));
    q.and(" AND s.key = ?", Some(key)).push(lock);
    q
}

impl Db {
    /// Up to `limit` settings by key, after the key `after`.
    pub async fn list_settings(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> anyhow::Result<Vec<JsonRow>> {
        let mut q = Query::new(format!(
            "SELECT {} FROM system_settings s WHERE TRUE",
            select_list("s", SETTING_COLUMNS)
        ));
        q.and(" AND s.key > ?", after)
            .push(&format!(" ORDER BY s.key LIMIT {limit}"));
        self.fetch_json(&q, SETTING_COLUMNS, &[]).await
    }

    pub async fn setting(&self, key: &str) -> anyhow::Result<Option<JsonRow>> {
        let q = by_key(key, "");
        Ok(self.fetch_json(&q, SETTING_COLUMNS, &[]).await?.pop())
    }
}

impl Tx {
    /// The setting `key`, held until the commit.
    pub async fn lock_setting(&mut self, key: &str) -> anyhow::Result<Option<JsonRow>> {
        let q = by_key(key, self.for_update());
        Ok(self.fetch_json(&q, SETTING_COLUMNS, &[]).await?.pop())
    }

    /// Creates or replaces the setting; one the config sync wrote is left alone.
    pub async fn put_setting(
        &mut self,
        key: &str,
        value: &serde_json::Value,
    ) -> anyhow::Result<()> {
        self.execute(
            "INSERT INTO system_settings (id, key, value, updated_at)
             VALUES ($1::uuid, $2, $3::jsonb, $4::timestamptz)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at
             WHERE system_settings.managed_by = 'api'",
            &[
                new_id().into(),
                key.into(),
                value.to_string().into(),
                timestamp(chrono::Utc::now()).into(),
            ],
        )
        .await?;
        Ok(())
    }

    /// Removes the setting; false when there was none.
    pub async fn delete_setting(&mut self, key: &str) -> anyhow::Result<bool> {
        let n = self
            .execute(
                "DELETE FROM system_settings WHERE key = $1 AND managed_by = 'api'",
                &[key.into()],
            )
            .await?;
        Ok(n == 1)
    }
}
