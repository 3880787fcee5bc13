//! Prices and amounts in USD as the admin API takes them: exact decimals, given as a string
//! (`"0.15"`, exact) or a JSON number (read from its shortest text, so `0.15` is 0.15 too),
//! never negative, and within what the column holds.

use rust_decimal::Decimal;
use serde::de::{Deserializer, Error};
use serde::Deserialize;
use serde_json::Value;

/// A price per million tokens: NUMERIC(12,6), so below 1,000,000 with at most 6 decimals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Price(pub Decimal);

/// An amount of USD (budgets): NUMERIC(18,6), so below 10^12 with at most 6 decimals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usd(pub Decimal);

impl<'de> Deserialize<'de> for Price {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        amount(Value::deserialize(d)?, 12)
            .map(Price)
            .map_err(D::Error::custom)
    }
}

impl<'de> Deserialize<'de> for Usd {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        amount(Value::deserialize(d)?, 18)
            .map(Usd)
            .map_err(D::Error::custom)
    }
}

/// A decimal >= 0 with at most 6 decimals and `precision` digits in all.
fn amount(v: Value, precision: u32) -> Result<Decimal, String> {
    let text = match &v {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        other => return Err(format!("expected a decimal number or string, not {other}")),
    };
    let d = Decimal::from_str_exact(&text)
        .or_else(|_| Decimal::from_scientific(&text))
        .map_err(|_| format!("{text:?} is not a decimal number"))?
        .normalize();
    if d.is_sign_negative() && !d.is_zero() {
        return Err(format!("{text} is negative; it must be >= 0"));
    }
    if d.scale() > 6 {
        return Err(format!("{text} has more than 6 decimals"));
    }
    let limit = Decimal::from(10u64.pow(precision - 6));
    if d >= limit {
        return Err(format!("{text} is too large; it must be below {limit}"));
    }
    Ok(d.abs())
}

/// Both are documented as what they take: a decimal string (exact) or a JSON number.
fn amount_schema(what: &str, precision: u32) -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
    use utoipa::openapi::RefOr;
    let limit = 10u64.pow(precision - 6);
    let text = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(r"^\d+(\.\d{1,6})?$"));
    let number = ObjectBuilder::new()
        .schema_type(Type::Number)
        .minimum(Some(0.0))
        .exclusive_maximum(Some(limit as f64));
    let one_of = OneOfBuilder::new()
        .item(RefOr::T(Schema::Object(text.build())))
        .item(RefOr::T(Schema::Object(number.build())))
        .description(Some(format!(
            "{what}: an exact decimal >= 0 below {limit} with at most 6 decimals, best sent as a string (\"0.15\"); a JSON number is read from its shortest text."
        )));
    RefOr::T(Schema::OneOf(one_of.build()))
}

impl utoipa::PartialSchema for Price {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        amount_schema("USD per million tokens", 12)
    }
}

impl utoipa::ToSchema for Price {}

impl utoipa::PartialSchema for Usd {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        amount_schema("USD", 18)
    }
}

impl utoipa::ToSchema for Usd {}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn price(v: Value) -> Result<String, String> {
        serde_json::from_value::<Price>(v)
            .map(|p| p.0.to_string())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn prices_are_exact_and_never_negative() {
        assert_eq!(price(json!("0.15")).unwrap(), "0.15");
        assert_eq!(price(json!(0.15)).unwrap(), "0.15");
        assert_eq!(price(json!(2)).unwrap(), "2");
        assert_eq!(price(json!("-0")).unwrap(), "0");
        assert!(price(json!("-0.01")).unwrap_err().contains("must be >= 0"));
        assert!(price(json!(-1)).unwrap_err().contains("must be >= 0"));
        assert!(price(json!("abc")).unwrap_err().contains("not a decimal"));
        assert!(price(json!("0.0000001"))
            .unwrap_err()
            .contains("6 decimals"));
        assert!(price(json!("1000000")).unwrap_err().contains("too large"));
        assert!(price(json!(true)).is_err());
    }
}
