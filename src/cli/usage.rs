//! `tollgate usage`: the usage report as a table or as JSON.

use tollgate::config::LoadedConfig;
use tollgate::store::{Period, UsageQuery, UsageReport, UsageTotals};

use super::open_db;

/// `tollgate usage`: the same parameters as `GET /admin/usage`, checked by the same code.
#[derive(clap::Args)]
pub struct UsageArgs {
    /// Group by model, provider, project or key.
    #[arg(long, default_value = "model")]
    by: String,
    /// One row per group and hour, day or month (UTC). Default: one per group.
    #[arg(long)]
    period: Option<String>,
    /// Start (UTC, included): 2026-11-01 or 2026-11-01T10:00:00Z. Default: the first of
    /// this month.
    #[arg(long)]
    since: Option<String>,
    /// End (UTC, not included), as --since. Default: now.
    #[arg(long)]
    until: Option<String>,
    /// Only this project's usage.
    #[arg(long)]
    project: Option<String>,
    /// Only this key's usage (its id or prefix).
    #[arg(long)]
    key: Option<String>,
    /// Only this model's usage (its public name).
    #[arg(long)]
    model: Option<String>,
    /// Only this provider's usage.
    #[arg(long)]
    provider: Option<String>,
    /// The most rows shown (1 to 10000); the total covers them all.
    #[arg(long)]
    limit: Option<String>,
    /// The report as JSON (costs as exact decimal strings).
    #[arg(long)]
    json: bool,
}

impl UsageArgs {
    /// The options as the report's named parameters.
    fn params(&self) -> Vec<(&'static str, &str)> {
        let options = [
            ("period", &self.period),
            ("since", &self.since),
            ("until", &self.until),
            ("project", &self.project),
            ("key", &self.key),
            ("model", &self.model),
            ("provider", &self.provider),
            ("limit", &self.limit),
        ];
        let given = options
            .into_iter()
            .filter_map(|(name, value)| Some((name, value.as_deref()?)));
        std::iter::once(("by", self.by.as_str()))
            .chain(given)
            .collect()
    }
}

/// Prints the report as a table with a total line, or as JSON.
pub async fn usage_report(loaded: &LoadedConfig, args: &UsageArgs) -> anyhow::Result<()> {
    let query = UsageQuery::from_params(args.params(), chrono::Utc::now())
        .map_err(|e| anyhow::anyhow!("invalid --{}: {}", e.param, e.problem))?;
    let report = open_db(loaded).await?.usage_report(&query).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    print_usage_table(&report);
    if report.truncated {
        eprintln!(
            "showing the first {} rows (--limit shows more); the total covers all of them",
            query.limit
        );
    }
    Ok(())
}

fn print_usage_table(report: &UsageReport) {
    let period = report.query.period;
    let until = report
        .query
        .until
        .map_or("now".to_owned(), |t| t.format("%Y-%m-%d %H:%M").to_string());
    println!(
        "usage by {}{} from {} to {until} (UTC)",
        report.query.by.as_str(),
        period.map_or(String::new(), |p| format!(" per {}", p.as_str())),
        report.query.since.format("%Y-%m-%d %H:%M"),
    );
    let mut header = vec![report.query.by.as_str().to_owned()];
    header.extend(
        [
            "requests",
            "errors",
            "input",
            "cache_read",
            "cache_write",
            "output",
            "reasoning",
            "cost_usd",
        ]
        .map(String::from),
    );
    let mut lines = vec![header];
    for r in &report.rows {
        lines.push(usage_cells(r.group.clone(), &r.totals));
    }
    lines.push(usage_cells("total".to_owned(), &report.total));
    if let Some(period) = period {
        let buckets = report.rows.iter().map(|r| bucket_text(r.bucket, period));
        let column = std::iter::once(period.as_str().to_owned())
            .chain(buckets)
            .chain([String::new()]);
        for (line, bucket) in lines.iter_mut().zip(column) {
            line.insert(0, bucket);
        }
    }
    print_columns(&lines, if period.is_some() { 2 } else { 1 });
}

fn usage_cells(group: String, t: &UsageTotals) -> Vec<String> {
    let mut cells = vec![group];
    cells.extend(
        [
            t.requests,
            t.errors,
            t.input_tokens,
            t.cache_read_tokens,
            t.cache_write_tokens,
            t.output_tokens,
            t.reasoning_tokens,
        ]
        .map(|n| n.to_string()),
    );
    cells.push(t.cost_usd.to_string());
    cells
}

fn bucket_text(bucket: Option<chrono::DateTime<chrono::Utc>>, period: Period) -> String {
    let format = match period {
        Period::Hour => "%Y-%m-%d %H:00",
        Period::Day => "%Y-%m-%d",
        Period::Month => "%Y-%m",
    };
    bucket.map_or(String::new(), |b| b.format(format).to_string())
}

/// Prints lines of cells in columns as wide as their widest cell: the first `text` columns
/// aligned left, the numbers right. A rule goes above the last line (the total).
fn print_columns(lines: &[Vec<String>], text: usize) {
    let columns = lines.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            lines
                .iter()
                .map(|l| l[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let render = |line: &Vec<String>| {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (cell, w))| {
                if c < text {
                    format!("{cell:<w$}")
                } else {
                    format!("{cell:>w$}")
                }
            })
            .collect();
        cells.join("  ").trim_end().to_owned()
    };
    for (i, line) in lines.iter().enumerate() {
        if i + 1 == lines.len() {
            println!(
                "{}",
                "-".repeat(widths.iter().sum::<usize>() + 2 * columns.saturating_sub(1))
            );
        }
        println!("{}", render(line));
    }
}
