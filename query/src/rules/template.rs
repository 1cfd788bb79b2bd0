//! The subset of Prometheus' alert templating rigwatch supports:
//! `{{ $labels.NAME }}`, `{{ $value }}`, `{{ $externalLabels.NAME }}` (empty),
//! the `.Labels.NAME` / `.Value` spellings, and the pipes `humanize` and
//! `humanizePercentage`. Anything else is rejected when the rule file is loaded, not when an
//! alert fires.

use std::fmt::Write as _;

use rigwatch_promql::value::Labels;

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Label(String, Pipe),
    Value(Pipe),
    Empty,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Pipe {
    None,
    Humanize,
    Percentage,
}

/// A parsed label or annotation template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template(Vec<Part>, String);

impl Template {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let close = after.find("}}").ok_or_else(|| {
                format!("unclosed `{{{{` at byte {}", s.len() - rest.len() + open)
            })?;
            let action = after[..close]
                .trim()
                .trim_start_matches('-')
                .trim_end_matches('-')
                .trim();
            let (head, pipe) = match action.split_once('|') {
                Some((h, p)) => {
                    let pipe = match p.trim() {
                        "humanize" => Pipe::Humanize,
                        "humanizePercentage" => Pipe::Percentage,
                        other => {
                            return Err(format!(
                                "unsupported template function `{other}` (supported: humanize, humanizePercentage)"
                            ));
                        }
                    };
                    (h.trim(), pipe)
                }
                None => (action, Pipe::None),
            };
            let part = if head == "$value" || head == ".Value" {
                Part::Value(pipe)
            } else if let Some(n) = head
                .strip_prefix("$labels.")
                .or_else(|| head.strip_prefix(".Labels."))
            {
                Part::Label(n.to_string(), pipe)
            } else if head.starts_with("$externalLabels.") || head == "$externalURL" {
                Part::Empty
            } else {
                return Err(format!(
                    "unsupported template action `{{{{ {action} }}}}` (supported: $labels.NAME, $value)"
                ));
            };
            parts.push(part);
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template(parts, s.to_string()))
    }

    /// The template as written.
    pub fn source(&self) -> &str {
        &self.1
    }

    /// Expands the template for one alert.
    pub fn render(&self, labels: &Labels, value: f64) -> String {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Label(n, pipe) => {
                    let v = labels.get(n).unwrap_or("");
                    match (pipe, v.parse::<f64>()) {
                        (Pipe::None, _) | (_, Err(_)) => out.push_str(v),
                        (p, Ok(x)) => fmt_value(&mut out, x, *p),
                    }
                }
                Part::Value(pipe) => fmt_value(&mut out, value, *pipe),
                Part::Empty => {}
            }
        }
        out
    }
}

fn fmt_value(out: &mut String, v: f64, pipe: Pipe) {
    match pipe {
        Pipe::None => {
            let _ = write!(out, "{v}");
        }
        Pipe::Percentage => {
            let _ = write!(out, "{:.4}%", v * 100.0);
            trim_zeros(out);
        }
        Pipe::Humanize => {
            const SI: [(f64, &str); 6] = [
                (1e18, "E"),
                (1e15, "P"),
                (1e12, "T"),
                (1e9, "G"),
                (1e6, "M"),
                (1e3, "k"),
            ];
            match SI.iter().find(|(m, _)| v.abs() >= *m) {
                Some((m, s)) => {
                    let _ = write!(out, "{:.4}", v / m);
                    trim_zeros(out);
                    out.push_str(s);
                }
                None => {
                    let _ = write!(out, "{v:.4}");
                    trim_zeros(out);
                }
            }
        }
    }
}

/// `12.3400%` → `12.34%`, `5.0000` → `5`.
fn trim_zeros(out: &mut String) {
    let suffix = if out.ends_with('%') { out.pop() } else { None };
    if out.contains('.') {
        while out.ends_with('0') {
            out.pop();
        }
        if out.ends_with('.') {
            out.pop();
        }
    }
    if let Some(s) = suffix {
        out.push(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_labels_and_values() {
        let l = Labels::from_pairs([("gpu_uuid", "GPU-1"), ("worker", "w1")]);
        let t = Template::parse("GPU {{ $labels.gpu_uuid }} on {{.Labels.worker}} at {{ $value }}C ({{ $value | humanize }})").unwrap();
        assert_eq!(t.render(&l, 91.5), "GPU GPU-1 on w1 at 91.5C (91.5)");
        let t = Template::parse("{{ $value | humanizePercentage }}").unwrap();
        assert_eq!(t.render(&l, 0.1234), "12.34%");
        assert!(
            Template::parse("{{ $labels.x ")
                .unwrap_err()
                .contains("unclosed")
        );
        assert!(
            Template::parse("{{ range . }}")
                .unwrap_err()
                .contains("unsupported")
        );
    }
}
