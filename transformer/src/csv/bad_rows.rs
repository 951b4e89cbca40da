//! Bad rows: rows that are not rows of the declared columns. The CSV decoder finds them (see
//! [`crate::csv::decoder`]); this module keeps them — as JSON lines in a scratch file, with their
//! object, line, reason and text — for the policy to act on: fail naming the first, count them,
//! or upload them to the rejected-rows location.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path as FsPath, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::csv::dialect::CsvDialect;

/// A row that cannot be read as the declared columns.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BadRow {
    /// URL of the object holding the row.
    pub object: String,
    /// 1-based line on which the row starts.
    pub line: u64,
    /// What is wrong with it.
    pub reason: String,
    /// The row as text (invalid UTF-8 replaced by U+FFFD); beyond its first 64 KiB cut off and
    /// marked with how many bytes were left out.
    pub text: String,
}

/// The bad rows found by the decoders of one read of a partition, which run in parallel.
#[derive(Debug)]
pub struct BadRows {
    path: PathBuf,
    state: Mutex<Collected>,
}

#[derive(Debug)]
struct Collected {
    file: BufWriter<File>,
    count: u64,
    /// The first bad row by object and line.
    first: Option<BadRow>,
}

impl BadRows {
    /// A collector writing to a new file at `path`.
    pub fn create(path: &FsPath) -> std::io::Result<Self> {
        let file = BufWriter::new(File::create(path)?);
        Ok(Self { path: path.to_path_buf(), state: Mutex::new(Collected { file, count: 0, first: None }) })
    }

    /// Keeps a bad row.
    pub fn record(&self, row: BadRow) -> std::io::Result<()> {
        let json = serde_json::to_string(&row).expect("bad rows serialise");
        let mut state = self.state.lock().expect("not poisoned");
        writeln!(state.file, "{json}")?;
        state.count += 1;
        if state.first.as_ref().is_none_or(|first| (&row.object, row.line) < (&first.object, first.line)) {
            state.first = Some(row);
        }
        Ok(())
    }

    /// How many bad rows were kept.
    pub fn count(&self) -> u64 {
        self.state.lock().expect("not poisoned").count
    }

    /// The first bad row, by object URL and line.
    pub fn first(&self) -> Option<BadRow> {
        self.state.lock().expect("not poisoned").first.clone()
    }

    /// Writes out what is buffered and returns the JSON lines file holding every bad row.
    pub fn finish(&self) -> std::io::Result<&FsPath> {
        self.state.lock().expect("not poisoned").file.flush()?;
        Ok(&self.path)
    }
}

/// How much of a bad row's text is kept: enough to see what is wrong, and bounded however long
/// the row.
pub const MAX_ROW_TEXT: usize = 64 * 1024;

/// A line of an object as a bad row's text: its line end left out, at most [`MAX_ROW_TEXT`]
/// bytes of it.
pub fn line_text(line: &[u8]) -> String {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    capped(line)
}

/// A row's fields written as CSV in `dialect`, quoted where needed, as a bad row's text.
pub fn row_text<'a>(fields: impl Iterator<Item = &'a [u8]>, dialect: &CsvDialect) -> String {
    let mut writer = csv::WriterBuilder::new()
        .delimiter(dialect.delimiter)
        .quote(dialect.quote)
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    let text = writer.write_record(fields).ok().and_then(|()| writer.into_inner().ok()).unwrap_or_default();
    line_text(&text)
}

fn capped(bytes: &[u8]) -> String {
    if bytes.len() <= MAX_ROW_TEXT {
        return String::from_utf8_lossy(bytes).into_owned();
    }
    let kept = String::from_utf8_lossy(&bytes[..MAX_ROW_TEXT]);
    format!("{kept}… [{} more bytes not kept]", bytes.len() - MAX_ROW_TEXT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_capped_and_quoted_in_the_dialect() {
        assert_eq!(line_text(b"1,a,b\r\n"), "1,a,b");
        let long = vec![b'x'; MAX_ROW_TEXT + 10];
        let text = line_text(&long);
        assert!(text.ends_with("… [10 more bytes not kept]") && text.starts_with("xxx"), "{}", &text[text.len() - 40..]);
        let dialect = CsvDialect { has_header: false, delimiter: b';', quote: b'\'', max_row_bytes: 1 << 20 };
        let fields: [&[u8]; 3] = [b"1", b"a;b", b"it's"];
        assert_eq!(row_text(fields.into_iter(), &dialect), "1;'a;b';'it''s'");
    }

    #[test]
    fn the_first_row_is_the_first_by_object_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let rows = BadRows::create(&dir.path().join("bad.jsonl")).unwrap();
        let row = |object: &str, line| BadRow { object: object.into(), line, reason: "r".into(), text: "t".into() };
        for (object, line) in [("b.csv", 1), ("a.csv", 9), ("a.csv", 3)] {
            rows.record(row(object, line)).unwrap();
        }
        assert_eq!((rows.count(), rows.first()), (3, Some(row("a.csv", 3))));
        let written = std::fs::read_to_string(rows.finish().unwrap()).unwrap();
        let parsed: Vec<BadRow> = written.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed[0], row("b.csv", 1));
    }
}
