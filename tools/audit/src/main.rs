//! `lethe-audit`: `cargo audit` without a network. Checks a `Cargo.lock` against
//! a local copy of the RustSec advisory database with the library `cargo audit`
//! itself is built on (`rustsec`), so that CI on a machine that cannot reach
//! GitHub still checks the dependency graph.
//!
//! Usage: `lethe-audit --db DIR --lock Cargo.lock [--ignore FILE]`
//!
//! Exits 1 when a vulnerability advisory matches a locked package and is not
//! in the ignore file (one `RUSTSEC-YYYY-NNNN reason...` per line; a reason is
//! required). Informational advisories (unmaintained, unsound) are listed
//! without failing. `DIR/SNAPSHOT` says which commit of the database the copy
//! is; a copy older than 120 days is reported as stale.

use anyhow::{Context, Result, bail};
use rustsec::Lockfile;
use rustsec::advisory::{Id, Informational};
use rustsec::database::{Database, Query};
use std::path::PathBuf;
use std::process::ExitCode;

struct Args {
    db: PathBuf,
    lock: PathBuf,
    ignore: Option<PathBuf>,
}

fn args() -> Result<Args> {
    let mut db = None;
    let mut lock = None;
    let mut ignore = None;
    let mut it = std::env::args_os().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().map(PathBuf::from).context("missing value");
        match a.to_str() {
            Some("--db") => db = Some(value()?),
            Some("--lock") => lock = Some(value()?),
            Some("--ignore") => ignore = Some(value()?),
            _ => bail!("usage: lethe-audit --db DIR --lock Cargo.lock [--ignore FILE]"),
        }
    }
    Ok(Args {
        db: db.context("--db DIR is required")?,
        lock: lock.context("--lock FILE is required")?,
        ignore,
    })
}

/// Ignored advisories with their reasons.
fn read_ignores(path: &std::path::Path) -> Result<Vec<(Id, String)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (id, reason) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        if reason.trim().is_empty() {
            bail!(
                "{}:{}: {id} has no reason; say why it is ignored",
                path.display(),
                n + 1
            );
        }
        let id: Id = id.parse().with_context(|| {
            format!("{}:{}: {id:?} is not an advisory id", path.display(), n + 1)
        })?;
        out.push((id, reason.trim().to_string()));
    }
    Ok(out)
}

fn run() -> Result<bool> {
    let args = args()?;
    let snapshot = std::fs::read_to_string(args.db.join("SNAPSHOT")).unwrap_or_default();
    let db = Database::open(&args.db)
        .with_context(|| format!("cannot open the advisory database {}", args.db.display()))?;
    let lock = Lockfile::load(&args.lock)
        .with_context(|| format!("cannot read {}", args.lock.display()))?;
    let ignores = match &args.ignore {
        Some(p) => read_ignores(p)?,
        None => Vec::new(),
    };
    println!(
        "lethe-audit: {} advisories ({}), {} locked packages in {}",
        db.iter().count(),
        snapshot.trim(),
        lock.packages.len(),
        args.lock.display()
    );
    if let Some(age) = snapshot_age_days(&snapshot)
        && age > 120
    {
        println!(
            "warning: the advisory database copy is {age} days old; refresh it where GitHub \
             is reachable (tools/audit/refresh-db.sh)"
        );
    }

    let mut failed = false;
    for v in db.query_vulnerabilities(&lock, &Query::crate_scope()) {
        let a = &v.advisory;
        let line = format!(
            "{} {} {}: {} ({})",
            a.id,
            v.package.name,
            v.package.version,
            a.title,
            a.url.as_ref().map_or(String::new(), |u| u.to_string())
        );
        match ignores.iter().find(|(id, _)| id == &a.id) {
            Some((_, why)) => println!("ignored  {line}; because: {why}"),
            None => {
                println!("VULNERABLE  {line}");
                failed = true;
            }
        }
    }
    for v in db.query_vulnerabilities(&lock, &Query::crate_scope().informational(true)) {
        let a = &v.advisory;
        let kind = match &a.informational {
            Some(Informational::Unmaintained) => "unmaintained",
            Some(Informational::Unsound) => "unsound",
            Some(Informational::Notice) => "notice",
            _ => continue,
        };
        println!(
            "warning ({kind})  {} {} {}: {}",
            a.id, v.package.name, v.package.version, a.title
        );
    }
    Ok(failed)
}

/// Days since the date on the SNAPSHOT line (`<commit> <YYYY-MM-DD> ...`).
fn snapshot_age_days(snapshot: &str) -> Option<i64> {
    let date = snapshot.split_whitespace().nth(1)?;
    let mut parts = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (parts.next()??, parts.next()??, parts.next()??);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs() as i64
        / 86_400;
    Some(now - days_from_civil(y, m, d))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn main() -> ExitCode {
    match run() {
        Ok(false) => ExitCode::SUCCESS,
        Ok(true) => {
            println!(
                "lethe-audit: vulnerable dependencies (above); update them or add a reasoned ignore"
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days_match_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2026, 8, 21), 20_686);
    }
}
