//! The admin API's rows as JSON objects, read and written column by column from a table of
//! each column's kind. A model row has some forty columns: listed once here, with the cast
//! each kind needs on either database, instead of once per query, struct and binding.
//!
//! Values come out the same from both databases: decimals normalised (`0.15`, where
//! PostgreSQL's NUMERIC says `0.150000`), timestamps in RFC 3339 UTC with milliseconds, JSON
//! columns as JSON.

use anyhow::Context;
use serde_json::{Map, Value};

use super::{Arg, Db, DbRow, Tx};

/// What a column holds, and so how it is cast, bound and read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A UUID (TEXT on SQLite).
    Id,
    Text,
    Int,
    Bool,
    /// NUMERIC, as an exact decimal string.
    Decimal,
    /// JSONB (TEXT on SQLite).
    Json,
    /// A calendar date, `YYYY-MM-DD`.
    Date,
    /// TIMESTAMPTZ.
    Time,
}

pub type Columns = [(&'static str, Kind)];

/// The SELECT list of `cols` of the table aliased `alias`, each read back as text where its
/// type is not one both drivers decode alike.
pub fn select_list(alias: &str, cols: &Columns) -> String {
    cols.iter()
        .map(|(name, kind)| match kind {
            Kind::Text | Kind::Int | Kind::Bool => format!("{alias}.{name}"),
            _ => format!("{alias}.{name}::text AS {name}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `$n` placeholder of a value of `kind`, cast to the column's type.
pub fn placeholder(n: usize, kind: Kind) -> String {
    let cast = match kind {
        Kind::Id => "::uuid",
        Kind::Decimal => "::numeric",
        Kind::Json => "::jsonb",
        Kind::Date => "::date",
        Kind::Time => "::timestamptz",
        Kind::Text | Kind::Int | Kind::Bool => "",
    };
    format!("${n}{cast}")
}

/// A JSON value bound as a column of `kind` (null binds NULL). The values were checked by the
/// API's input types; a value of another shape binds NULL, which NOT NULL refuses.
pub fn arg(value: &Value, kind: Kind) -> Arg {
    match kind {
        Kind::Int => Arg::Int(value.as_i64()),
        Kind::Bool => Arg::Bool(value.as_bool()),
        Kind::Json if value.is_null() => Arg::Text(None),
        Kind::Json => Arg::Text(Some(value.to_string())),
        _ => Arg::Text(value.as_str().map(str::to_owned)),
    }
}

/// One row as a JSON object of `cols`.
pub fn row_json(row: &DbRow, cols: &Columns) -> anyhow::Result<Map<String, Value>> {
    let mut out = Map::with_capacity(cols.len());
    for (name, kind) in cols {
        out.insert((*name).to_owned(), read(row, name, *kind)?);
    }
    Ok(out)
}

fn read(row: &DbRow, name: &str, kind: Kind) -> anyhow::Result<Value> {
    Ok(match kind {
        Kind::Int => row.opt_int(name)?.map_or(Value::Null, Value::from),
        Kind::Bool => row.opt_bool(name)?.map_or(Value::Null, Value::from),
        _ => match row.opt_text(name)? {
            None => Value::Null,
            Some(text) => text_value(text, kind).with_context(|| format!("column {name}"))?,
        },
    })
}

fn text_value(text: String, kind: Kind) -> anyhow::Result<Value> {
    Ok(match kind {
        Kind::Decimal => {
            let d: rust_decimal::Decimal = text.trim().parse()?;
            Value::from(d.normalize().to_string())
        }
        Kind::Json => serde_json::from_str(&text)?,
        Kind::Time => Value::from(rfc3339(&text)?),
        Kind::Date => Value::from(text.get(..10).unwrap_or(&text)),
        _ => Value::from(text),
    })
}

/// A timestamp as either database gives it back (`2026-11-30 12:00:00.5+00` from
/// PostgreSQL, what the gateway wrote from SQLite) in RFC 3339 UTC with milliseconds.
pub fn rfc3339(text: &str) -> anyhow::Result<String> {
    let t = chrono::DateTime::parse_from_rfc3339(text)
        .or_else(|_| chrono::DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%#z"))
        .with_context(|| format!("unreadable timestamp {text:?}"))?;
    Ok(super::timestamp(t.with_timezone(&chrono::Utc)))
}

/// `INSERT INTO table (cols) VALUES (...)` of the columns of `cols` that `values` has.
pub fn insert(table: &str, cols: &Columns, values: &Map<String, Value>) -> (String, Vec<Arg>) {
    let present: Vec<_> = cols
        .iter()
        .filter(|(name, _)| values.contains_key(*name))
        .collect();
    let names: Vec<&str> = present.iter().map(|(n, _)| *n).collect();
    let marks: Vec<String> = present
        .iter()
        .enumerate()
        .map(|(i, (_, kind))| placeholder(i + 1, *kind))
        .collect();
    let args = present.iter().map(|(n, k)| arg(&values[*n], *k)).collect();
    let sql = format!(
        "INSERT INTO {table} ({}) VALUES ({})",
        names.join(", "),
        marks.join(", ")
    );
    (sql, args)
}

/// `UPDATE table SET ... WHERE id = $1` of the columns of `cols` that `values` has, plus
/// `condition` (which may only refer to `$1`).
pub fn update(
    table: &str,
    cols: &Columns,
    values: &Map<String, Value>,
    id: &str,
    condition: &str,
) -> (String, Vec<Arg>) {
    let mut args = vec![Arg::from(id)];
    let mut sets = Vec::new();
    for (name, kind) in cols.iter().filter(|(n, _)| values.contains_key(*n)) {
        args.push(arg(&values[*name], *kind));
        sets.push(format!("{name} = {}", placeholder(args.len(), *kind)));
    }
    let sql = format!(
        "UPDATE {table} SET {} WHERE id = $1::uuid {condition}",
        sets.join(", ")
    );
    (sql, args)
}

/// A query built condition by condition, each condition with its one parameter, written `?`.
pub struct Query {
    pub sql: String,
    pub args: Vec<Arg>,
}

impl Query {
    pub fn new(sql: String) -> Query {
        Query {
            sql,
            args: Vec::new(),
        }
    }

    /// Appends `condition` (e.g. `" AND m.status = ?"`) when there is a value for it.
    pub fn and(&mut self, condition: &str, value: Option<&str>) -> &mut Query {
        if let Some(v) = value {
            self.args.push(v.into());
            let n = format!("${}", self.args.len());
            self.sql.push_str(&condition.replace('?', &n));
        }
        self
    }

    pub fn push(&mut self, sql: &str) -> &mut Query {
        self.sql.push_str(sql);
        self
    }
}

/// A JSON object per row.
pub type JsonRow = Map<String, Value>;

impl Db {
    /// The rows of `query` as JSON objects of `cols` (and `extra`, text columns beside them).
    pub async fn fetch_json(
        &self,
        query: &Query,
        cols: &Columns,
        extra: &Columns,
    ) -> anyhow::Result<Vec<JsonRow>> {
        let rows = self.fetch_all(&query.sql, &query.args).await?;
        rows.iter().map(|r| json_with(r, cols, extra)).collect()
    }
}

impl Tx {
    /// A new row of the admin API's (`managed_by = 'api'`) in `table` from `values` (columns
    /// of `cols`); its id.
    pub async fn insert_api_row(
        &mut self,
        table: &str,
        cols: &Columns,
        values: &JsonRow,
    ) -> anyhow::Result<String> {
        let id = crate::ids::new_id();
        let now = super::timestamp(chrono::Utc::now());
        let mut row = values.clone();
        row.insert("id".into(), id.clone().into());
        row.insert("managed_by".into(), "api".into());
        row.insert("created_at".into(), now.clone().into());
        row.insert("updated_at".into(), now.into());
        let (sql, args) = insert(table, cols, &row);
        self.execute(&sql, &args).await?;
        Ok(id)
    }

    /// Sets `values` on the live (not soft-deleted) admin API row `id` of `table`; false when
    /// there is none.
    pub async fn update_api_row(
        &mut self,
        table: &str,
        cols: &Columns,
        values: &JsonRow,
        id: &str,
    ) -> anyhow::Result<bool> {
        let mut row = values.clone();
        row.insert(
            "updated_at".into(),
            super::timestamp(chrono::Utc::now()).into(),
        );
        let live = "AND managed_by = 'api' AND deleted_at IS NULL";
        let (sql, args) = update(table, cols, &row, id, live);
        Ok(self.execute(&sql, &args).await? == 1)
    }

    pub async fn fetch_json(
        &mut self,
        query: &Query,
        cols: &Columns,
        extra: &Columns,
    ) -> anyhow::Result<Vec<JsonRow>> {
        let rows = self.fetch_all(&query.sql, &query.args).await?;
        rows.iter().map(|r| json_with(r, cols, extra)).collect()
    }
}

fn json_with(row: &DbRow, cols: &Columns, extra: &Columns) -> anyhow::Result<JsonRow> {
    let mut out = row_json(row, cols)?;
    out.extend(row_json(row, extra)?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const COLS: &Columns = &[
        ("id", Kind::Id),
        ("name", Kind::Text),
        ("price", Kind::Decimal),
        ("params", Kind::Json),
    ];

    #[test]
    fn statements_cast_each_kind_and_skip_absent_columns() {
        let values = serde_json::json!({"name": "a", "price": "0.5", "params": {"t": 1}});
        let (sql, args) = insert("t", COLS, values.as_object().unwrap());
        assert_eq!(
            sql,
            "INSERT INTO t (name, price, params) VALUES ($1, $2::numeric, $3::jsonb)"
        );
        assert_eq!(args.len(), 3);
        let (sql, _) = update("t", COLS, values.as_object().unwrap(), "x", "AND y");
        assert_eq!(
            sql,
            "UPDATE t SET name = $2, price = $3::numeric, params = $4::jsonb WHERE id = $1::uuid AND y"
        );
        assert_eq!(
            select_list("m", COLS),
            "m.id::text AS id, m.name, m.price::text AS price, m.params::text AS params"
        );
    }

    #[test]
    fn timestamps_read_alike_from_both_databases() {
        assert_eq!(
            rfc3339("2026-11-30 12:00:00.5+00").unwrap(),
            "2026-11-30T12:00:00.500Z"
        );
        assert_eq!(
            rfc3339("2026-11-30T12:00:00.500Z").unwrap(),
            "2026-11-30T12:00:00.500Z"
        );
    }
}
