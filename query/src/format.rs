//! Result encodings: JSON (array of objects), JSON lines, CSV and Arrow IPC stream.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use crate::error::{Error, Result};

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    JsonLines,
    Csv,
    Arrow,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::JsonLines => "application/jsonl",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Arrow => "application/vnd.apache.arrow.stream",
        }
    }

    /// From a `format=` parameter.
    pub fn from_param(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "json" => Ok(Format::Json),
            "jsonl" | "ndjson" => Ok(Format::JsonLines),
            "csv" => Ok(Format::Csv),
            "arrow" | "ipc" => Ok(Format::Arrow),
            _ => Err(Error::UnknownFormat(s.to_string())),
        }
    }

    /// From an `Accept` header; JSON when nothing matches.
    pub fn from_accept(accept: &str) -> Self {
        for part in accept.split(',') {
            let mime = part.split(';').next().unwrap_or("").trim();
            match mime {
                "text/csv" => return Format::Csv,
                "application/vnd.apache.arrow.stream" | "application/vnd.apache.arrow.file" => {
                    return Format::Arrow;
                }
                "application/jsonl" | "application/x-ndjson" => return Format::JsonLines,
                "application/json" => return Format::Json,
                _ => {}
            }
        }
        Format::Json
    }
}

/// Encodes batches in `format`.
pub fn encode(format: Format, schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>> {
    let err = |format: &'static str| move |source| Error::Encode { format, source };
    let mut out = Vec::new();
    match format {
        Format::Json => {
            let mut w = arrow::json::ArrayWriter::new(&mut out);
            for b in batches {
                w.write(b).map_err(err("json"))?;
            }
            w.finish().map_err(err("json"))?;
            if out.is_empty() {
                out.extend_from_slice(b"[]");
            }
        }
        Format::JsonLines => {
            let mut w = arrow::json::LineDelimitedWriter::new(&mut out);
            for b in batches {
                w.write(b).map_err(err("jsonl"))?;
            }
            w.finish().map_err(err("jsonl"))?;
        }
        Format::Csv => {
            if batches.is_empty() {
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                out.extend_from_slice(names.join(",").as_bytes());
                out.push(b'\n');
            } else {
                let mut w = arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut out);
                for b in batches {
                    w.write(b).map_err(err("csv"))?;
                }
            }
        }
        Format::Arrow => {
            let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut out, schema)
                .map_err(err("arrow"))?;
            for b in batches {
                // IPC sends dictionaries and view buffers whole: send only what the rows use.
                let b = rigwatch_storage::table::scope::compact_batch(b).map_err(err("arrow"))?;
                w.write(&b).map_err(err("arrow"))?;
            }
            w.finish().map_err(err("arrow"))?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn batch() -> (SchemaRef, RecordBatch) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("model", DataType::Utf8, true),
            Field::new("n", DataType::Int64, false),
        ]));
        let b = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec!["h100", "a100"])),
                Arc::new(Int64Array::from(vec![3, 4])),
            ],
        )
        .unwrap();
        (schema, b)
    }

    #[test]
    fn encodes_each_format() {
        let (schema, b) = batch();
        let json =
            String::from_utf8(encode(Format::Json, &schema, std::slice::from_ref(&b)).unwrap())
                .unwrap();
        assert_eq!(json, r#"[{"model":"h100","n":3},{"model":"a100","n":4}]"#);
        let csv =
            String::from_utf8(encode(Format::Csv, &schema, std::slice::from_ref(&b)).unwrap())
                .unwrap();
        assert_eq!(csv, "model,n\nh100,3\na100,4\n");
        let ipc = encode(Format::Arrow, &schema, std::slice::from_ref(&b)).unwrap();
        let reader = arrow::ipc::reader::StreamReader::try_new(&ipc[..], None).unwrap();
        let back: Vec<_> = reader.collect::<Result<_, _>>().unwrap();
        assert_eq!(back, vec![b]);
        assert_eq!(encode(Format::Json, &schema, &[]).unwrap(), b"[]");
        assert_eq!(encode(Format::Csv, &schema, &[]).unwrap(), b"model,n\n");
    }

    #[test]
    fn picks_format_from_accept() {
        assert_eq!(Format::from_accept("text/csv"), Format::Csv);
        assert_eq!(
            Format::from_accept("text/html, application/vnd.apache.arrow.stream;q=0.9"),
            Format::Arrow
        );
        assert_eq!(Format::from_accept("*/*"), Format::Json);
        assert!(Format::from_param("xml").is_err());
    }
}
