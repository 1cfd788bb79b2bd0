//! Prebuilt dashboards as data: every `dashboards/*.json` file, embedded at build time, and
//! their export as Grafana dashboard JSON against rigwatch's Prometheus API.
//!
//! A dashboard file is `{"title", "description", "variables": [..], "panels": [{"title",
//! "expr", "unit", "legend", "absent"?}]}`; `$name` in an expression refers to a variable
//! (the portal fills `$gpu` with the GPU being shown, `$worker` with the worker; Grafana
//! gets a query variable for each).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{Error, Result};

include!(concat!(env!("OUT_DIR"), "/dashboards.rs"));

/// One chart: a query-language expression.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Panel {
    pub title: String,
    pub expr: String,
    #[serde(default)]
    pub unit: String,
    /// Legend template (Grafana's `legendFormat`), e.g. `{{gpu_uuid}}`.
    #[serde(default)]
    pub legend: String,
    /// What the portal says instead of "no data" when the subject reports other readings
    /// but never this one (a field some models cannot measure).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub absent: String,
}

/// A variable the expressions use (`$name`), filled from a label's values.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Variable {
    pub name: String,
    /// The label whose values the variable takes.
    pub label: String,
    /// The series selector those values come from.
    pub metric: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Dashboard {
    pub title: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub variables: Vec<Variable>,
    pub panels: Vec<Panel>,
}

/// The names of every embedded dashboard, sorted.
pub fn names() -> Vec<&'static str> {
    DASHBOARDS.iter().map(|(n, _)| *n).collect()
}

/// The dashboard called `name`.
pub fn get(name: &str) -> Result<Dashboard> {
    let Some((_, text)) = DASHBOARDS.iter().find(|(n, _)| *n == name) else {
        return Err(Error::NoDashboard {
            name: name.into(),
            known: names().join(", "),
        });
    };
    serde_json::from_str(text).map_err(|source| Error::BadDashboard {
        name: name.into(),
        source,
    })
}

fn grafana_unit(unit: &str) -> &str {
    match unit {
        "percent" => "percent",
        "celsius" => "celsius",
        "watts" => "watt",
        "mib" => "mbytes",
        "mhz" => "rotmhz",
        "ratio" => "percentunit",
        "bytes" => "bytes",
        "bytes_per_s" => "Bps",
        other => other,
    }
}

/// The dashboard as Grafana dashboard JSON (import it and pick a Prometheus data source that
/// points at rigwatch's `/api/v1`).
pub fn grafana(name: &str) -> Result<Value> {
    let d = get(name)?;
    let ds = json!({ "type": "prometheus", "uid": "${DS_RIGWATCH}" });
    let panels: Vec<Value> = d
        .panels
        .iter()
        .enumerate()
        .map(|(i, p)| {
            json!({
                "id": i + 1,
                "type": "timeseries",
                "title": p.title,
                "datasource": ds,
                "gridPos": { "h": 8, "w": 12, "x": (i % 2) * 12, "y": (i / 2) * 8 },
                "fieldConfig": { "defaults": { "unit": grafana_unit(&p.unit) }, "overrides": [] },
                "targets": [{
                    "refId": "A",
                    "datasource": ds,
                    "expr": p.expr,
                    "legendFormat": p.legend,
                    "range": true,
                }],
            })
        })
        .collect();
    let variables: Vec<Value> = d
        .variables
        .iter()
        .map(|v| {
            json!({
                "name": v.name,
                "type": "query",
                "datasource": ds,
                "query": { "query": format!("label_values({}, {})", v.metric, v.label), "refId": "vars" },
                "definition": format!("label_values({}, {})", v.metric, v.label),
                "refresh": 2,
                "includeAll": false,
                "multi": false,
            })
        })
        .collect();
    Ok(json!({
        "__inputs": [{
            "name": "DS_RIGWATCH",
            "label": "rigwatch",
            "description": "A Prometheus data source with URL http://<rigwatch>/ and a token",
            "type": "datasource",
            "pluginId": "prometheus",
            "pluginName": "Prometheus",
        }],
        "title": d.title,
        "description": d.description,
        "uid": format!("rigwatch-{name}"),
        "tags": ["rigwatch"],
        "schemaVersion": 39,
        "time": { "from": "now-6h", "to": "now" },
        "refresh": "10s",
        "templating": { "list": variables },
        "panels": panels,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_dashboard_parses_and_exports() {
        assert!(
            names().contains(&"fleet") && names().contains(&"gpu"),
            "{:?}",
            names()
        );
        for n in names() {
            let d = get(n).unwrap();
            assert!(!d.panels.is_empty(), "{n} has no panels");
            let g = grafana(n).unwrap();
            let panels = g["panels"].as_array().unwrap();
            assert_eq!(panels.len(), d.panels.len());
            for (p, gp) in d.panels.iter().zip(panels) {
                assert_eq!(gp["targets"][0]["expr"], p.expr.as_str());
                assert_eq!(gp["datasource"]["type"], "prometheus");
            }
            // Every `$var` an expression uses is a templating variable.
            for p in &d.panels {
                for v in p.expr.split('$').skip(1) {
                    let name: String = v
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    assert!(
                        d.variables.iter().any(|x| x.name == name),
                        "{n}: ${name} undeclared"
                    );
                }
            }
        }
    }

    #[test]
    fn unknown_dashboards_name_the_known_ones() {
        let e = get("nope").unwrap_err().to_string();
        assert!(e.contains("fleet"), "{e}");
    }
}
