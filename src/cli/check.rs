//! `tollgate check-config`: what the file says, what is wrong in it and where, and what a
//! reload would change in the database's registry.

use std::process::ExitCode;

use tollgate::config::Config;
use tollgate::store::Db;

use super::load_config;

/// Prints what the config would load and what a reload would change in the database's
/// registry (nothing is written); the errors were already printed by `load_config`.
pub async fn check_config(path: &std::path::Path) -> ExitCode {
    let loaded = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let c = &loaded.config;
    println!("{}: OK", path.display());
    println!("  listen      {}", c.server.listen);
    println!(
        "  database    {}",
        tollgate::store::redact_url(&c.database.url)
    );
    println!("  auth        require_api_key = {}", c.auth.require_api_key);
    println!("  admin API   {}", admin_access(&c.auth));
    print_providers(c);
    println!("  models      {}", c.models.len());
    println!("  routes      {}", c.routes.len());
    println!("  traces      {}", traces(&c.telemetry));
    for w in &loaded.warnings {
        println!("  warning: {w}");
    }
    print_registry_changes(c).await;
    ExitCode::SUCCESS
}

/// Where spans go, if anywhere.
fn traces(t: &tollgate::config::TelemetryConfig) -> String {
    match t.traces_url() {
        Some(url) => format!(
            "OTLP/HTTP to {url} as service {:?}, {}% of new traces",
            t.service_name,
            t.sample_ratio * 100.0
        ),
        None => "off ([telemetry] otlp_endpoint is not set)".to_owned(),
    }
}

/// Who can reach `/admin/*` with these settings (the router lets only admins in).
fn admin_access(auth: &tollgate::config::AuthConfig) -> String {
    let keys = "admin keys (`tollgate keys create --role admin`)";
    match (&auth.master_key, &auth.jwt_secret) {
        (Some(_), None) => format!(
            "reachable with the master key, admin JWTs signed with it (HS256), or {keys}"
        ),
        (Some(_), Some(_)) => format!(
            "reachable with the master key, admin JWTs signed with auth.jwt_secret (HS256), or {keys}"
        ),
        (None, Some(_)) => format!(
            "reachable with admin JWTs signed with auth.jwt_secret (HS256) or {keys}; no master key is set"
        ),
        (None, None) => format!(
            "reachable only with {keys}: no master key or JWT secret is set"
        ),
    }
}

fn print_providers(c: &Config) {
    println!("  providers   {}", c.providers.len());
    for p in &c.providers {
        let p = p.get_ref();
        let models = c
            .models
            .iter()
            .filter(|m| m.get_ref().provider == p.name)
            .count();
        // Where the key is kept: see README "Provider keys".
        let key = match p.api_key.as_deref() {
            None => "none",
            Some(k) if k.starts_with("env:") => "env",
            Some(_) if c.auth.master_key.is_some() => "sealed",
            Some(_) => "in-memory",
        };
        println!(
            "    {:<12} api={:<9} models={:<3} rpm={:<5} parallel={:<3} key={:<9} {}",
            p.name,
            p.api.as_str(),
            models,
            p.requests_per_minute,
            p.max_parallel_requests,
            key,
            if p.enabled { "" } else { "(disabled)" }
        );
    }
}

/// What a reload (or a start) with this file would change in the database's registry, read
/// without writing anything; the database may well be unreachable from where this runs.
async fn print_registry_changes(c: &Config) {
    use tollgate::store::Change;
    let plan = match Db::connect_read_only(&c.database.url).await {
        Ok(db) => {
            let sealer = c
                .auth
                .master_key
                .as_deref()
                .map(tollgate::secrets::Sealer::new);
            let plan = db.plan_sync(c, sealer.as_ref()).await;
            db.close().await;
            plan
        }
        Err(e) => Err(e),
    };
    let plan = match plan {
        Ok(plan) => plan,
        Err(e) => {
            println!(
                "  registry    not compared with the database ({e:#}); `tollgate migrate` \
                 creates or updates its tables"
            );
            return;
        }
    };
    if plan.is_empty() {
        println!("  registry    the database already holds what the file describes");
        return;
    }
    println!("  registry    a reload would change in the database:");
    for p in plan {
        let (mark, what) = match &p.change {
            Change::Added => ("+", "added".to_owned()),
            Change::Changed(fields) => ("~", format!("changed: {}", fields.join(", "))),
            Change::Removed if p.table == "provider" => ("-", "removed: disabled".into()),
            Change::Removed if p.table == "model" => ("-", "removed: deactivated".into()),
            Change::Removed => ("-", "removed".into()),
            Change::Kept => ("=", "managed through the admin API: left as it is".into()),
        };
        println!("    {mark} {:<9} {} {what}", p.table, p.name);
    }
}
