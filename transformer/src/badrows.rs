//! The row-by-row pass over a partition whose fast, strict read failed. Every row is checked against
//! the declared columns with the same parsers the fast path uses; good rows are copied into clean
//! local CSV files for a second strict read, bad rows are written as JSON lines with their object,
//! line and reason.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path as FsPath, PathBuf};

use datafusion::arrow::compute::kernels::cast_utils::{Parser, string_to_datetime};
use datafusion::arrow::datatypes::{Date32Type, Float64Type, Int64Type};
use futures::StreamExt;
use object_store::ObjectStoreExt;
use serde::Serialize;
use tokio::io::AsyncWriteExt;

use crate::error::{Error, Result};
use crate::spec::{Column, ColumnType, CsvOptions};
use crate::timestamps;
use crate::storage::{SourceObject, Store};

/// A row that cannot be read as the declared columns.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct BadRow {
    /// URL of the object holding the row.
    pub object: String,
    /// 1-based line on which the row starts.
    pub line: u64,
    /// What is wrong with it.
    pub reason: String,
    /// The row's fields joined as CSV (invalid UTF-8 replaced by U+FFFD); beyond its first 64 KiB
    /// cut off and marked with how many bytes were left out.
    pub text: String,
}

/// The outcome of the row-by-row pass.
#[derive(Debug)]
pub struct Separated {
    /// Clean CSV files (header line, `,` delimiter, `"` quote), one per input object.
    pub clean_files: Vec<PathBuf>,
    /// Rows read from all inputs.
    pub rows_read: u64,
    /// Bad rows among them.
    pub rows_rejected: u64,
    /// The first bad row.
    pub first_bad: Option<BadRow>,
    /// JSON lines file holding every bad row.
    pub bad_rows_file: PathBuf,
}

/// Downloads each input into `scratch`, checks every row and separates good from bad.
pub async fn separate(
    store: &Store,
    inputs: &[SourceObject],
    csv: &CsvOptions,
    columns: &[Column],
    scratch: &FsPath,
) -> Result<Separated> {
    let bad_rows_file = scratch.join("bad-rows.jsonl");
    let mut bad_rows = BufWriter::new(File::create(&bad_rows_file).map_err(|e| Error::io("creating scratch file", e))?);
    let mut separated = Separated {
        clean_files: Vec::new(),
        rows_read: 0,
        rows_rejected: 0,
        first_bad: None,
        bad_rows_file: bad_rows_file.clone(),
    };
    for (index, input) in inputs.iter().enumerate() {
        let download = scratch.join(format!("input-{index}"));
        download_object(store, &input.path, &download).await?;
        let clean = scratch.join(format!("clean-{index}.csv"));
        let checker = RowChecker { csv: csv.clone(), columns: columns.to_vec(), object: store.url_of(&input.path) };
        let gzip = input.gzip;
        let (clean_path, counts, bad_rows_back) = tokio::task::spawn_blocking(move || {
            let counts = checker.check_file(&download, gzip, &clean, &mut bad_rows);
            (clean, counts, bad_rows)
        })
        .await
        .expect("row check does not panic");
        bad_rows = bad_rows_back;
        let counts = counts?;
        separated.rows_read += counts.rows;
        separated.rows_rejected += counts.bad;
        if separated.first_bad.is_none() {
            separated.first_bad = counts.first_bad;
        }
        separated.clean_files.push(clean_path);
    }
    bad_rows.flush().map_err(|e| Error::io("writing bad rows", e))?;
    Ok(separated)
}

async fn download_object(store: &Store, path: &object_store::path::Path, to: &FsPath) -> Result<()> {
    let result = store.store.get(path).await.map_err(|e| store.error(path, e))?;
    let mut stream = result.into_stream();
    let mut file = tokio::fs::File::create(to).await.map_err(|e| Error::io("creating scratch file", e))?;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| store.error(path, e))?;
        file.write_all(&chunk).await.map_err(|e| Error::io("writing scratch file", e))?;
    }
    file.flush().await.map_err(|e| Error::io("writing scratch file", e))
}

#[derive(Debug, Default)]
struct FileCounts {
    rows: u64,
    bad: u64,
    first_bad: Option<BadRow>,
}

/// Checks rows of one object against the declared columns.
struct RowChecker {
    csv: CsvOptions,
    columns: Vec<Column>,
    object: String,
}

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

impl RowChecker {
    /// Reads `path`, writes its good rows to `clean` and its bad rows to `bad_rows`.
    fn check_file(&self, path: &FsPath, gzip: bool, clean: &FsPath, bad_rows: &mut impl Write) -> Result<FileCounts> {
        let file = File::open(path).map_err(|e| Error::io("reading scratch file", e))?;
        let reader: Box<dyn Read> = if gzip {
            Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(file)))
        } else {
            Box::new(file)
        };
        let mut reader = BufReader::new(reader);
        skip_bom(&mut reader).map_err(|e| self.read_error(e))?;
        let mut csv_reader = csv::ReaderBuilder::new()
            .has_headers(self.csv.header)
            .delimiter(self.csv.delimiter.as_bytes()[0])
            .quote(self.csv.quote.as_bytes()[0])
            .flexible(true)
            .from_reader(reader);
        let mut clean_writer = csv::Writer::from_writer(BufWriter::new(
            File::create(clean).map_err(|e| Error::io("creating scratch file", e))?,
        ));
        clean_writer
            .write_record(self.columns.iter().map(|c| c.name.as_str()))
            .map_err(|e| Error::io("writing scratch file", e.into()))?;
        let mut counts = FileCounts::default();
        // A row is judged once the next one has been read, so the last row of the object is
        // known as such (an unterminated quote swallows the rest of the object into it). The two
        // records trade places rather than being copied: such a row may be most of the object.
        let mut record = csv::ByteRecord::new();
        let mut pending = csv::ByteRecord::new();
        let mut pending_line = None;
        loop {
            let more = csv_reader.read_byte_record(&mut record).map_err(|e| self.read_error(e.into()))?;
            if let Some(line) = pending_line.take() {
                self.judge(&pending, line, !more, &mut counts, &mut clean_writer, bad_rows)?;
            }
            if !more {
                break;
            }
            pending_line = Some(record.position().map_or(0, |p| p.line()));
            std::mem::swap(&mut record, &mut pending);
        }
        clean_writer.flush().map_err(|e| Error::io("writing scratch file", e))?;
        Ok(counts)
    }

    fn judge(
        &self,
        row: &csv::ByteRecord,
        line: u64,
        last: bool,
        counts: &mut FileCounts,
        clean: &mut csv::Writer<BufWriter<File>>,
        bad_rows: &mut impl Write,
    ) -> Result<()> {
        counts.rows += 1;
        match self.problem(row, last) {
            None => clean.write_byte_record(row).map_err(|e| Error::io("writing scratch file", e.into())),
            Some(reason) => {
                counts.bad += 1;
                let bad = BadRow { object: self.object.clone(), line, reason, text: self.row_text(row) };
                let json = serde_json::to_string(&bad).expect("bad rows serialise");
                writeln!(bad_rows, "{json}").map_err(|e| Error::io("writing bad rows", e))?;
                counts.first_bad.get_or_insert(bad);
                Ok(())
            }
        }
    }

    /// Why the row is bad, or `None` when it is good.
    fn problem(&self, row: &csv::ByteRecord, last: bool) -> Option<String> {
        let expected = self.columns.len();
        if row.len() != expected {
            let swallowed = last && row.iter().any(|field| field.contains(&b'\n'));
            if swallowed {
                return Some(format!(
                    "unterminated quoted field: the rest of the object was read as one row of {} fields, expected {expected}",
                    row.len()
                ));
            }
            return Some(format!("{} fields, expected {expected}", row.len()));
        }
        for (column, field) in self.columns.iter().zip(row.iter()) {
            let Ok(text) = std::str::from_utf8(field) else {
                return Some(format!("column {:?}: invalid UTF-8", column.name));
            };
            if text.is_empty() {
                if column.nullable {
                    continue;
                }
                return Some(format!("column {:?}: empty value in a non-nullable column", column.name));
            }
            if let Err(reason) = parse(column, text) {
                return Some(format!("column {:?}: {reason}", column.name));
            }
        }
        None
    }

    /// The row as CSV text, at most [`MAX_ROW_TEXT`] bytes of it.
    fn row_text(&self, row: &csv::ByteRecord) -> String {
        let mut writer = csv::WriterBuilder::new()
            .delimiter(self.csv.delimiter.as_bytes()[0])
            .quote(self.csv.quote.as_bytes()[0])
            .terminator(csv::Terminator::Any(b'\n'))
            .from_writer(Capped::default());
        let text = writer
            .write_byte_record(row)
            .ok()
            .and_then(|()| writer.into_inner().ok())
            .unwrap_or_default();
        let kept = String::from_utf8_lossy(&text.kept);
        match text.left_out {
            0 => kept.trim_end_matches('\n').to_string(),
            // The last byte left out is the record's line end.
            left_out => format!("{kept}… [{} more bytes not kept]", left_out - 1),
        }
    }

    fn read_error(&self, error: std::io::Error) -> Error {
        Error::io(format!("reading {}", self.object), error)
    }
}

/// How much of a bad row's text is kept: enough to see what is wrong, and bounded when an
/// unterminated quote makes the rest of a large object one row.
const MAX_ROW_TEXT: usize = 64 * 1024;

/// A buffer that keeps the first [`MAX_ROW_TEXT`] bytes written to it and counts the rest.
#[derive(Default)]
struct Capped {
    kept: Vec<u8>,
    left_out: usize,
}

impl Write for Capped {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let room = MAX_ROW_TEXT - self.kept.len();
        let (keep, leave) = bytes.split_at(room.min(bytes.len()));
        self.kept.extend_from_slice(keep);
        self.left_out += leave.len();
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn skip_bom(reader: &mut impl BufRead) -> std::io::Result<()> {
    if reader.fill_buf()?.starts_with(UTF8_BOM) {
        reader.consume(UTF8_BOM.len());
    }
    Ok(())
}

/// Whether a non-empty value parses as the column's type, by the rules of the fast path: its
/// reader, and for epoch and formatted timestamps the very functions it calls ([`timestamps`]).
/// The error says why.
fn parse(column: &Column, text: &str) -> std::result::Result<(), String> {
    let not_valid = || format!("{text:?} is not a valid {}", type_name(column));
    let valid = match column.data_type {
        ColumnType::String => true,
        ColumnType::Int64 => Int64Type::parse(text).is_some(),
        ColumnType::Float64 => Float64Type::parse(text).is_some(),
        ColumnType::Bool => crate::csv_decoder::parse_bool(text).is_some(),
        ColumnType::Date => Date32Type::parse(text).is_some(),
        ColumnType::Timestamp => match (column.unit, &column.format) {
            (Some(unit), _) => {
                let value = Int64Type::parse(text).ok_or_else(not_valid)?;
                return timestamps::from_epoch(value, unit).map(|_| ());
            }
            (None, Some(format)) => return timestamps::from_text(text, format).map(|_| ()),
            (None, None) => string_to_datetime(&chrono::Utc, text).is_ok(),
        },
    };
    if valid { Ok(()) } else { Err(not_valid()) }
}

fn type_name(column: &Column) -> String {
    match (column.data_type, &column.unit, &column.format) {
        (ColumnType::Timestamp, Some(unit), _) => format!("timestamp in {unit:?}").to_lowercase(),
        (ColumnType::Timestamp, None, Some(format)) => format!("timestamp in the format {format:?}"),
        (data_type, _, _) => serde_json::to_value(data_type)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::TimestampUnit;

    fn columns() -> Vec<Column> {
        let column = |name: &str, data_type, nullable| Column { name: name.into(), data_type, nullable, unit: None, format: None };
        let mut ts = column("timestamp", ColumnType::Timestamp, false);
        ts.unit = Some(TimestampUnit::Seconds);
        vec![column("id", ColumnType::Int64, false), column("name", ColumnType::String, true), column("value", ColumnType::String, true), ts]
    }

    fn check(content: &[u8]) -> (FileCounts, String, Vec<BadRow>) {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.csv");
        std::fs::write(&input, content).unwrap();
        let checker = RowChecker { csv: CsvOptions::default(), columns: columns(), object: "file:///in.csv".into() };
        let clean = dir.path().join("clean.csv");
        let mut bad = Vec::new();
        let counts = checker.check_file(&input, false, &clean, &mut bad).unwrap();
        let bad_rows = String::from_utf8(bad)
            .unwrap()
            .lines()
            .map(|line| {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                BadRow {
                    object: v["object"].as_str().unwrap().into(),
                    line: v["line"].as_u64().unwrap(),
                    reason: v["reason"].as_str().unwrap().into(),
                    text: v["text"].as_str().unwrap().into(),
                }
            })
            .collect();
        (counts, std::fs::read_to_string(clean).unwrap(), bad_rows)
    }

    #[test]
    fn valid_csv_features_pass() {
        let content = b"\xEF\xBB\xBFid,name,value,timestamp\r\n1,\"a,b\",\"say \"\"hi\"\"\",100\r\n2,multi,\"line1\nline2\",200\r\n3,,,300";
        let (counts, clean, bad) = check(content);
        assert_eq!((counts.rows, counts.bad), (3, 0), "{bad:?}");
        assert!(clean.starts_with("id,name,value,timestamp\n1,\"a,b\",\"say \"\"hi\"\"\",100\n"), "{clean}");
    }

    #[test]
    fn every_kind_of_bad_row_is_named_with_its_line() {
        let content = b"id,name,value,timestamp\n1,a,b,100\nx,a,b,100\n2,a,b\n,a,b,100\n3,a,\xff,100\n4,a,b,9223372036854775807\n5,a,b,1\n6,a,\"open,100\n7,a,b,2\n";
        let (counts, clean, bad) = check(content);
        assert_eq!(counts.rows, 8);
        assert_eq!(counts.bad, 6);
        assert_eq!(clean.lines().count(), 1 + 2);
        let summary: Vec<(u64, &str)> = bad.iter().map(|b| (b.line, b.reason.as_str())).collect();
        assert_eq!(summary[0], (3, "column \"id\": \"x\" is not a valid int64"));
        assert_eq!(summary[1], (4, "3 fields, expected 4"));
        assert_eq!(summary[2], (5, "column \"id\": empty value in a non-nullable column"));
        assert_eq!(summary[3], (6, "column \"value\": invalid UTF-8"));
        assert_eq!(summary[4].0, 7);
        assert!(summary[4].1.contains("outside the years 1 to 9999 as an epoch in seconds"), "{}", summary[4].1);
        assert_eq!(summary[5].0, 9);
        assert!(summary[5].1.starts_with("unterminated quoted field"), "{}", summary[5].1);
        assert_eq!(bad[0].text, "x,a,b,100");
        assert_eq!(bad[0].object, "file:///in.csv");
        assert_eq!(counts.first_bad.unwrap().line, 3);
    }

    #[test]
    fn a_quote_that_swallows_the_object_keeps_64_kib_of_it() {
        let mut content = b"id,name,value,timestamp\n1,a,b,100\n2,a,\"open,100\n".to_vec();
        let swallowed_lines = 10_000;
        for row in 0..swallowed_lines {
            content.extend_from_slice(format!("{row},setting,value-{row},100\n").as_bytes());
        }
        let (counts, _, bad) = check(&content);
        assert_eq!((counts.rows, counts.bad), (2, 1));
        let text = &bad[0].text;
        let (kept, marker) = text.split_at(text.find('…').expect("the text says it was cut"));
        assert_eq!(kept.len(), MAX_ROW_TEXT);
        assert!(kept.starts_with("2,a,\"open,100\n0,setting,value-0,100\n"), "{}", &kept[..40]);
        let left_out: usize = marker.trim_start_matches("… [").split(' ').next().unwrap().parse().unwrap();
        // The row's text is its bytes from the opening quote on, quoted as CSV with a newline less.
        assert_eq!(kept.len() + left_out, content.len() - "id,name,value,timestamp\n1,a,b,100\n".len() + 1);
    }

    #[test]
    fn header_only_and_empty_files_have_no_rows() {
        assert_eq!(check(b"id,name,value,timestamp\n").0.rows, 0);
        assert_eq!(check(b"").0.rows, 0);
    }
}
