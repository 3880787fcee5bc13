//! Pagination of every admin list, one scheme throughout: keyset ("cursor") pages.
//!
//! `?limit=N` (default 50, at most 500) and `?after=CURSOR`; the answer is
//! `{"object": "list", "data": [...], "has_more": bool, "next": CURSOR or null}`, and the next
//! page is asked for with `?after=` that `next`. A cursor is the last row's sort key (a
//! provider's name, a setting's key, a model's or an audit row's id), so rows added or removed
//! meanwhile never shift a page, as an offset would.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::error::GatewayError;

pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 500;

/// The query parameters of pagination, for the lists of allowed parameters.
pub const PARAMS: [&str; 2] = ["limit", "after"];

/// What a list sorts on, and so what its cursor must look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    /// A row id (a UUID).
    Id,
    /// A name or key.
    Name,
}

/// `?limit=` and `?after=`.
#[derive(Debug, Clone, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// Rows per page.
    #[param(value_type = u32, required = false, minimum = 1, maximum = 500, default = 50)]
    pub limit: usize,
    /// The `next` cursor of the previous page.
    pub after: Option<String>,
}

impl Page {
    pub fn from_query(query: &HashMap<String, String>, key: SortKey) -> Result<Page, GatewayError> {
        let limit = match query.get("limit") {
            None => DEFAULT_LIMIT,
            Some(l) => l
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| {
                    GatewayError::invalid_param(
                        "limit",
                        format!("`limit` must be a whole number from 1 to {MAX_LIMIT}, not {l:?}."),
                    )
                })?,
        };
        let after = query.get("after").cloned();
        if key == SortKey::Id
            && after
                .as_deref()
                .is_some_and(|a| uuid::Uuid::parse_str(a).is_err())
        {
            return Err(GatewayError::invalid_param(
                "after",
                "`after` must be the `next` cursor of the previous page (a row id).",
            ));
        }
        Ok(Page { limit, after })
    }

    /// How many rows to ask the store for: one more than the page holds, which tells
    /// whether there are more.
    pub fn fetch(&self) -> usize {
        self.limit + 1
    }

    /// The list answer of the rows fetched; `cursor` is the field of a row its cursor is.
    pub fn answer(&self, mut rows: Vec<Value>, cursor: &str) -> Value {
        let has_more = rows.len() > self.limit;
        rows.truncate(self.limit);
        let next = match rows.last() {
            Some(last) if has_more => last[cursor].clone(),
            _ => Value::Null,
        };
        json!({"object": "list", "data": rows, "has_more": has_more, "next": next})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn limits_are_bounded_and_cursors_checked() {
        let p = Page::from_query(&query(&[]), SortKey::Name).unwrap();
        assert_eq!((p.limit, p.after), (DEFAULT_LIMIT, None));
        for bad in ["0", "501", "-1", "x"] {
            let e = Page::from_query(&query(&[("limit", bad)]), SortKey::Name).unwrap_err();
            assert_eq!(e.param.as_deref(), Some("limit"));
        }
        let e = Page::from_query(&query(&[("after", "nope")]), SortKey::Id).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("after"));
    }

    #[test]
    fn the_extra_row_says_there_are_more() {
        let page = Page {
            limit: 2,
            after: None,
        };
        let rows = |n: usize| (0..n).map(|i| json!({"name": format!("r{i}")})).collect();
        let full = page.answer(rows(3), "name");
        assert_eq!(full["data"].as_array().unwrap().len(), 2);
        assert_eq!(
            (full["has_more"].clone(), full["next"].clone()),
            (json!(true), json!("r1"))
        );
        let last = page.answer(rows(2), "name");
        assert_eq!(
            (last["has_more"].clone(), last["next"].clone()),
            (json!(false), Value::Null)
        );
    }
}
