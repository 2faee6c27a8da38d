//! Output: one aligned table and one JSON line per scenario, and latency percentiles.

use serde_json::Value;

/// Latency figures from a set of samples, microseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    pub n: usize,
    pub min: u64,
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}

impl Latency {
    /// Sorts the samples (µs) and takes nearest-rank percentiles.
    pub fn of(mut samples: Vec<u64>) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        samples.sort_unstable();
        let at = |q: f64| {
            let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
            samples[rank - 1]
        };
        Latency {
            n: samples.len(),
            min: samples[0],
            p50: at(0.50),
            p99: at(0.99),
            max: samples[samples.len() - 1],
        }
    }

    /// "0.41 / 2.10 / 9.87" in milliseconds.
    pub fn text(&self) -> String {
        if self.n == 0 {
            return "-".into();
        }
        format!("{} / {} / {}", ms(self.p50), ms(self.p99), ms(self.max))
    }

    pub fn json(&self) -> Value {
        serde_json::json!({
            "samples": self.n,
            "min_ms": self.min as f64 / 1000.0,
            "p50_ms": self.p50 as f64 / 1000.0,
            "p99_ms": self.p99 as f64 / 1000.0,
            "max_ms": self.max as f64 / 1000.0,
        })
    }
}

pub fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

/// A thousands-separated integer ("20,413").
pub fn int(x: f64) -> String {
    if !x.is_finite() {
        return "-".into();
    }
    let n = x.round() as i64;
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// A figure/target verdict for the tables: "yes", "NO" or "-" when there is no target.
pub fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "yes",
        Some(false) => "NO",
        None => "-",
    }
}

/// One scenario's output.
pub struct Table {
    title: String,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    notes: Vec<String>,
}

impl Table {
    pub fn new(title: impl Into<String>, header: &[&str]) -> Table {
        Table {
            title: title.into(),
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    /// Prints the table to stdout.
    pub fn print(&self) {
        let cols = self.header.len();
        let mut width: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(cols) {
                width[i] = width[i].max(c.chars().count());
            }
        }
        // Figures align right, text left.
        let right: Vec<bool> = (0..cols)
            .map(|i| {
                i > 0
                    && self
                        .rows
                        .iter()
                        .all(|r| r.get(i).is_none_or(|c| numeric(c)))
            })
            .collect();
        let line = |cells: &[String]| {
            let mut s = String::from("|");
            for (i, w) in width.iter().enumerate() {
                let c = cells.get(i).map(String::as_str).unwrap_or("");
                let pad = w - c.chars().count();
                if !right[i] {
                    s.push_str(&format!(" {c}{} |", " ".repeat(pad)));
                } else {
                    s.push_str(&format!(" {}{c} |", " ".repeat(pad)));
                }
            }
            s
        };
        println!();
        println!("## {}", self.title);
        println!();
        println!("{}", line(&self.header));
        let mut sep = String::from("|");
        for (i, w) in width.iter().enumerate() {
            if !right[i] {
                sep.push_str(&format!("{}|", "-".repeat(w + 2)));
            } else {
                sep.push_str(&format!("{}:|", "-".repeat(w + 1)));
            }
        }
        println!("{sep}");
        for r in &self.rows {
            println!("{}", line(r));
        }
        for n in &self.notes {
            println!("- {n}");
        }
    }
}

/// True for cells that are figures ("20,413", "0.41 / 2.10 / 9.87", "143% / 52%", "-").
fn numeric(c: &str) -> bool {
    c.chars()
        .all(|ch| ch.is_ascii_digit() || " .,/%-×".contains(ch))
        || c == "n/a"
}

/// Prints the scenario's machine-readable line (it always starts with `{"bench":`).
pub fn json_line(scenario: &str, mode: &str, body: Value) {
    let mut v = serde_json::json!({ "bench": scenario, "mode": mode });
    if let (Some(obj), Value::Object(extra)) = (v.as_object_mut(), body) {
        obj.extend(extra);
    }
    println!("{v}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let l = Latency::of((1..=100).collect());
        assert_eq!((l.p50, l.p99, l.max, l.n), (50, 99, 100, 100));
        assert_eq!(Latency::of(vec![]).n, 0);
    }

    #[test]
    fn thousands() {
        assert_eq!(int(20413.4), "20,413");
        assert_eq!(int(999.0), "999");
        assert_eq!(int(1_000_000.0), "1,000,000");
    }
}
