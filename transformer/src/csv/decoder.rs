//! Decodes the bytes of one CSV object into Arrow record batches of the declared columns, by the
//! rules of the `csv_core` tokenizer, at a fraction of its cost on plain rows.
//!
//! A row whose line holds no quote and no carriage return other than before its line feed is
//! split where the delimiters and the line feed are, found 64 bytes at a time. Every other row —
//! quoted fields, a lone `\r`, the wrong number of fields, a row cut by the end of a piece of input
//! — is read by `csv_core` itself, so quoting, escapes and line ends keep exactly its meaning.
//!
//! The rules, the same for every row whatever the rows around it:
//! - a byte-order mark is skipped at the start of the object, nowhere else;
//! - with a header, each object's header names the declared columns, in any order, and values
//!   are read by name; without one, by position;
//! - a row has exactly one field per column; every field is UTF-8; every declared column's value
//!   is checked by its [`ColumnRule`] (an empty value is null, refused where non-nullable), also
//!   for columns the query does not read;
//! - a quoted field that is still open at the end of the object, or a row longer than
//!   `maxRowBytes`, is a bad row of one line — up to its first CR or LF — and reading resumes
//!   after that line end, so a stray quote costs one row, not the rest of the object, and memory
//!   stays bounded.
//!
//! A bad row either stops the decoding with an error naming the object, line and reason
//! ([`BadRowHandling::Refuse`]) or is left out of the batches and handed to a [`BadRows`]
//! collector ([`BadRowHandling::Separate`]).

use std::sync::Arc;

use csv_core::ReadRecordResult;
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, BooleanBuilder, Float64Builder, Int64Array, PrimitiveArray, PrimitiveBuilder,
    RecordBatch, RecordBatchOptions, StringBuilder,
};
use datafusion::arrow::compute::filter;
use datafusion::arrow::datatypes::{ArrowPrimitiveType, Date32Type, Int64Type, SchemaRef, TimestampMicrosecondType};
use datafusion::arrow::error::ArrowError;

use crate::csv::bad_rows::{BadRow, BadRows, row_text, line_text};
use crate::csv::dialect::CsvDialect;
use crate::csv::timestamps;
use crate::csv::values::{self, ColumnRule, TimestampText, ValueKind};

/// The CSV dialect and the columns to decode.
#[derive(Clone, Debug)]
pub struct DecoderOptions {
    /// The declared columns, in the order of the `events` table.
    pub columns: Arc<[ColumnRule]>,
    /// Indices of the columns to put into each batch, in output order. Every column is checked.
    pub projection: Vec<usize>,
    /// Rows per batch.
    pub batch_size: usize,
    /// How the object is written.
    pub dialect: CsvDialect,
}

/// What happens to a row that is not a row of the declared columns.
#[derive(Clone, Debug)]
pub enum BadRowHandling {
    /// Decoding stops with an error naming the object, the row's line and the reason.
    Refuse,
    /// The row is left out and handed to the collector.
    Separate(Arc<BadRows>),
}

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Turns the bytes of one CSV object, given in pieces of any size, into record batches.
pub struct CsvDecoder {
    options: DecoderOptions,
    /// The projected columns.
    output_schema: SchemaRef,
    /// Whether each column is projected.
    projected: Vec<bool>,
    /// What messages and bad rows call the object.
    object: String,
    handling: BadRowHandling,
    /// Whether the delimiter and quote allow plain rows to be split without `csv_core`.
    splits_plain_rows: bool,
    /// How many bytes of a byte-order mark the object started with so far; `None` once past
    /// its start.
    bom_matched: Option<usize>,
    header_pending: bool,
    /// For each column, the index of its field in the object's rows.
    field_of_column: Vec<usize>,
    batch: FieldBatch,
    /// The line the next byte of input lies on.
    line: u64,
    core: csv_core::Reader,
    record: CoreRecord,
    /// Bytes to decode before any new input: the rest of a row found bad (after its first line),
    /// or the start of an object that looked like a byte-order mark and was not.
    reread: Vec<u8>,
    /// Whether input is being skipped to the end of a line that was too long to be a row.
    skipping_line: bool,
    /// Whether the object has ended: what is left is decoded into one last batch, however long.
    at_end: bool,
}

impl std::fmt::Debug for CsvDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsvDecoder").field("object", &self.object).field("line", &self.line).finish()
    }
}

/// The fields of the rows of one batch: their bytes, where each field starts and ends, and the
/// line each row starts on.
struct FieldBatch {
    data: Vec<u8>,
    /// Start and end in `data` of each field, row after row.
    bounds: Vec<usize>,
    lines: Vec<u64>,
}

impl FieldBatch {
    /// An empty batch with room for `bytes` of fields and the bounds of a full batch.
    fn with_capacity(options: &DecoderOptions, bytes: usize) -> Self {
        let rows = options.batch_size;
        Self {
            data: Vec::with_capacity(bytes),
            bounds: Vec::with_capacity(rows * options.columns.len() * 2),
            lines: Vec::with_capacity(rows),
        }
    }

    fn rows(&self) -> usize {
        self.lines.len()
    }

    /// The fields of row `row`, in the object's order.
    fn fields(&self, row: usize, width: usize) -> impl Iterator<Item = &[u8]> {
        self.bounds[row * width * 2..(row + 1) * width * 2].chunks(2).map(|field| &self.data[field[0]..field[1]])
    }
}

/// The record `csv_core` is reading: its raw bytes, its unescaped field bytes and field ends.
struct CoreRecord {
    /// Whether `csv_core` is part way through a record that more input continues.
    open: bool,
    /// The line the first byte of `raw` lies on.
    line: u64,
    /// The record's bytes as they came, kept until it ends; they may start with the line end of
    /// the record before (a CR LF that `csv_core` ended at the CR).
    raw: Vec<u8>,
    bytes: Vec<u8>,
    len: usize,
    ends: Vec<usize>,
    fields: usize,
}

impl CoreRecord {
    fn clear(&mut self, line: u64) {
        (self.open, self.line, self.len, self.fields) = (false, line, 0, 0);
        self.raw.clear();
    }

    /// Whether what was read of the record is only line ends (skipped empty lines).
    fn is_blank(&self) -> bool {
        self.len == 0 && self.fields == 0 && self.raw.iter().all(|byte| matches!(byte, b'\n' | b'\r'))
    }

    /// The line the record starts on, and its bytes from there.
    fn start(&self) -> (u64, &[u8]) {
        let lead = self.raw.iter().take_while(|byte| matches!(byte, b'\n' | b'\r')).count();
        let line_feeds = self.raw[..lead].iter().filter(|byte| **byte == b'\n').count();
        (self.line + line_feeds as u64, &self.raw[lead..])
    }

    /// The record's length in bytes, its line end left out.
    fn row_bytes(&self) -> usize {
        let (_, raw) = self.start();
        raw.len() - raw.iter().rev().take_while(|byte| matches!(byte, b'\n' | b'\r')).count()
    }
}

/// A `csv_core` reader for the dialect that never strips a byte-order mark: it has read before.
/// (It strips one only from its very first input; the decoder strips the object's own.)
fn core_reader(dialect: &CsvDialect) -> csv_core::Reader {
    let mut core = csv_core::ReaderBuilder::new().delimiter(dialect.delimiter).quote(dialect.quote).build();
    // An empty line is skipped; reading it only marks the reader as started.
    let (result, ..) = core.read_record(b"\n", &mut [0; 1], &mut [0; 1]);
    debug_assert_eq!(result, ReadRecordResult::InputEmpty);
    core
}

impl CsvDecoder {
    /// A decoder for one object; `object` names it in messages and bad rows.
    pub fn new(options: DecoderOptions, object: String, handling: BadRowHandling) -> Self {
        let columns = options.columns.len();
        let CsvDialect { has_header, delimiter, quote, .. } = options.dialect;
        let splits_plain_rows = ![b'\n', b'\r', quote].contains(&delimiter) && quote != b'\n' && quote != b'\r';
        let schema = values::schema(&options.columns);
        let output_schema = Arc::new(schema.project(&options.projection).expect("projection within the columns"));
        let mut projected = vec![false; columns];
        options.projection.iter().for_each(|&column| projected[column] = true);
        let batch = FieldBatch::with_capacity(&options, 0);
        Self {
            core: core_reader(&options.dialect),
            output_schema,
            projected,
            header_pending: has_header,
            field_of_column: (0..columns).collect(),
            options,
            object,
            handling,
            splits_plain_rows,
            bom_matched: Some(0),
            batch,
            line: 1,
            // One end more than the columns, so that a row with too many fields is seen whole.
            record: CoreRecord { open: false, line: 1, raw: Vec::new(), bytes: vec![0; 1024], len: 0, ends: vec![0; columns + 1], fields: 0 },
            reread: Vec::new(),
            skipping_line: false,
            at_end: false,
        }
    }

    fn width(&self) -> usize {
        self.options.columns.len()
    }

    /// Reads rows from `input` until the batch is full or `input` is used up; returns the bytes
    /// consumed. A row cut by the end of `input` is kept and completed by the next call. An empty
    /// `input` marks the end of the object.
    pub fn decode(&mut self, input: &[u8]) -> Result<usize, ArrowError> {
        if input.is_empty() {
            self.finish()?;
            return Ok(0);
        }
        let mut consumed = self.skip_bom(input);
        self.decode_reread()?;
        while consumed < input.len() && self.reread.is_empty() && self.has_room() {
            let (used, rest) = self.decode_bytes(&input[consumed..])?;
            consumed += used;
            if let Some(rest) = rest {
                self.reread = rest;
                self.decode_reread()?;
            }
        }
        Ok(consumed)
    }

    /// Whether the batch may take another row: until it is full, or without limit once the object
    /// has ended.
    fn has_room(&self) -> bool {
        self.at_end || self.batch.rows() < self.options.batch_size
    }

    /// Whether the batch holds as many rows as a batch may.
    pub fn is_full(&self) -> bool {
        self.batch.rows() >= self.options.batch_size
    }

    /// Consumes the part of a byte-order mark at the start of the object that `input` holds.
    /// Bytes that began like one and turned out otherwise are decoded as data.
    fn skip_bom(&mut self, input: &[u8]) -> usize {
        let Some(mut matched) = self.bom_matched else { return 0 };
        let mut used = 0;
        while matched < UTF8_BOM.len() && used < input.len() && input[used] == UTF8_BOM[matched] {
            (matched, used) = (matched + 1, used + 1);
        }
        if matched < UTF8_BOM.len() && used == input.len() {
            self.bom_matched = Some(matched);
        } else {
            self.bom_matched = None;
            if matched < UTF8_BOM.len() {
                self.reread.extend_from_slice(&UTF8_BOM[..matched]);
            }
        }
        used
    }

    /// Decodes the bytes waiting to be read again, as far as the batch has room.
    fn decode_reread(&mut self) -> Result<(), ArrowError> {
        while !self.reread.is_empty() && self.has_room() {
            let pending = std::mem::take(&mut self.reread);
            let (used, rest) = self.decode_bytes(&pending)?;
            self.reread = match rest {
                Some(mut rest) => {
                    rest.extend_from_slice(&pending[used..]);
                    rest
                }
                None => pending[used..].to_vec(),
            };
        }
        Ok(())
    }

    /// Decodes rows from `input` while the batch has room. Returns the bytes consumed and, when a
    /// row turned out bad in a way that calls for reading on from its second line, the bytes to
    /// read again before the rest of `input`.
    fn decode_bytes(&mut self, input: &[u8]) -> Result<(usize, Option<Vec<u8>>), ArrowError> {
        let mut consumed = 0;
        while consumed < input.len() && self.has_room() {
            if self.skipping_line {
                consumed += self.skip_line(&input[consumed..]);
                continue;
            }
            if !self.record.open && !self.header_pending && self.splits_plain_rows {
                consumed += self.split_plain_rows(&input[consumed..])?;
                if consumed == input.len() || !self.has_room() {
                    break;
                }
            }
            let (used, rest) = self.read_core_record(&input[consumed..])?;
            consumed += used;
            if rest.is_some() {
                return Ok((consumed, rest));
            }
        }
        Ok((consumed, None))
    }

    /// Skips input up to and including the next line end, CR or LF.
    fn skip_line(&mut self, input: &[u8]) -> usize {
        match input.iter().position(|&byte| matches!(byte, b'\n' | b'\r')) {
            Some(at) => {
                self.skipping_line = false;
                self.line += u64::from(input[at] == b'\n');
                self.record.clear(self.line);
                at + 1
            }
            None => input.len(),
        }
    }

    /// Splits the plain rows at the start of `input` and adds them to the batch; stops at the
    /// first row that is not plain or not complete, or when the batch is full. Returns the bytes
    /// of the rows taken, empty lines included.
    fn split_plain_rows(&mut self, input: &[u8]) -> Result<usize, ArrowError> {
        let width = self.width();
        let CsvDialect { delimiter, quote, max_row_bytes, .. } = self.options.dialect;
        let base = self.batch.data.len();
        let (rows_before, bounds_before) = (self.batch.rows(), self.batch.bounds.len());
        let (mut row_start, mut field_start, mut fields, mut row_bounds) = (0, 0, 0, bounds_before);
        let mut lines = 0;
        let mut block = 0;
        'blocks: while block < input.len() {
            let mut marks = structural_marks(&input[block..], delimiter, quote);
            while marks != 0 {
                let at = block + marks.trailing_zeros() as usize;
                marks &= marks - 1;
                match input[at] {
                    byte if byte == delimiter => {
                        if fields + 1 == width {
                            break 'blocks;
                        }
                        self.batch.bounds.extend([base + field_start, base + at]);
                        fields += 1;
                        field_start = at + 1;
                    }
                    b'\n' => {
                        let end = if at > field_start && input[at - 1] == b'\r' { at - 1 } else { at };
                        let empty_line = fields == 0 && end == row_start;
                        if !empty_line {
                            if fields + 1 != width || end - row_start > max_row_bytes {
                                break 'blocks;
                            }
                            self.batch.bounds.extend([base + field_start, base + end]);
                            self.batch.lines.push(self.line + lines);
                        }
                        lines += 1;
                        (row_start, field_start, fields, row_bounds) = (at + 1, at + 1, 0, self.batch.bounds.len());
                        if !self.has_room() {
                            break 'blocks;
                        }
                    }
                    // A carriage return that ends a line is handled with its line feed.
                    b'\r' if input.get(at + 1) == Some(&b'\n') => {}
                    _ => break 'blocks,
                }
            }
            block += 64;
        }
        self.batch.bounds.truncate(row_bounds);
        let taken = &input[..row_start];
        if let Err(error) = std::str::from_utf8(taken) {
            return self.plain_rows_with_invalid_utf8(input, base, rows_before, error.valid_up_to());
        }
        self.batch.data.extend_from_slice(taken);
        self.line += lines;
        Ok(row_start)
    }

    /// After [`Self::split_plain_rows`] found invalid UTF-8 at `bad_at` in the rows it took:
    /// keeps the rows before the bad one and rejects that one. Returns the bytes up to the end of
    /// the bad row's line.
    fn plain_rows_with_invalid_utf8(&mut self, input: &[u8], base: usize, rows_before: usize, bad_at: usize) -> Result<usize, ArrowError> {
        let width = self.width();
        let bad_row = rows_before + self.batch.bounds[rows_before * width * 2..].chunks(width * 2).take_while(|row| row[width * 2 - 1] < base + bad_at).count();
        let bad_field = self.batch.bounds[bad_row * width * 2..(bad_row + 1) * width * 2].chunks(2).position(|field| base + bad_at < field[1]);
        let bad_line = self.batch.lines[bad_row];
        // The bad row's line ends at its line feed: line `bad_line` of the object.
        let line_feeds = usize::try_from(bad_line - self.line).expect("lines of one input");
        let line_end = input.iter().enumerate().filter(|(_, byte)| **byte == b'\n').nth(line_feeds).map(|(at, _)| at + 1).expect("a taken row ends in a line feed");
        let line_start = input[..line_end - 1].iter().rposition(|byte| *byte == b'\n').map_or(0, |at| at + 1);
        let text = line_text(&input[line_start..line_end]);
        self.batch.bounds.truncate(bad_row * width * 2);
        self.batch.lines.truncate(bad_row);
        self.batch.data.extend_from_slice(&input[..line_start]);
        self.line = bad_line + 1;
        self.bad_row(bad_line, self.invalid_utf8(bad_field.unwrap_or(0)), text)?;
        Ok(line_end)
    }

    /// Feeds `input` to `csv_core` until it completes one record, which joins the batch (or is
    /// read as the header), or until `input` is used up. Returns the bytes consumed, and the
    /// bytes to read again when an open record grew too long.
    fn read_core_record(&mut self, input: &[u8]) -> Result<(usize, Option<Vec<u8>>), ArrowError> {
        if !self.record.open {
            self.record.clear(self.line);
        }
        let mut consumed = 0;
        loop {
            let record = &mut self.record;
            let (result, read, written, ends) =
                self.core.read_record(&input[consumed..], &mut record.bytes[record.len..], &mut record.ends[record.fields..]);
            let taken = &input[consumed..consumed + read];
            record.raw.extend_from_slice(taken);
            self.line += taken.iter().filter(|byte| **byte == b'\n').count() as u64;
            consumed += read;
            record.len += written;
            record.fields += ends;
            if record.is_blank() {
                record.clear(self.line);
            }
            if record.row_bytes() > self.options.dialect.max_row_bytes {
                if self.header_pending {
                    let reason = self.too_long_reason().replacen("a row", "the header", 1);
                    return Err(ArrowError::SchemaError(format!("{}: {reason}", self.object)));
                }
                let complete = result == ReadRecordResult::Record;
                return Ok((consumed, self.read_again_after_first_line(self.too_long_reason(), complete)?));
            }
            match result {
                ReadRecordResult::InputEmpty => {
                    self.record.open = true;
                    return Ok((consumed, None));
                }
                ReadRecordResult::OutputFull => record.bytes.resize(record.bytes.len() * 2, 0),
                ReadRecordResult::OutputEndsFull => record.ends.resize(record.ends.len() * 2, 0),
                ReadRecordResult::Record => {
                    self.take_core_record()?;
                    return Ok((consumed, None));
                }
                ReadRecordResult::End => {
                    record.open = false;
                    return Ok((consumed, None));
                }
            }
        }
    }

    fn too_long_reason(&self) -> String {
        format!(
            "a row longer than {} bytes (source.csv.maxRowBytes): a quote left open, or a value larger than the limit",
            self.options.dialect.max_row_bytes
        )
    }

    /// Rejects the record as a bad row of one line — up to its first line end, CR or LF — and
    /// starts reading afresh after it. Returns the record's bytes from there on, to read again;
    /// when an incomplete record has no line end yet, the rest of its line is skipped.
    fn read_again_after_first_line(&mut self, reason: String, complete: bool) -> Result<Option<Vec<u8>>, ArrowError> {
        let (line, raw) = self.record.start();
        let line_end = raw.iter().position(|&byte| matches!(byte, b'\n' | b'\r'));
        self.bad_row(line, reason, line_text(&raw[..line_end.map_or(raw.len(), |at| at + 1)]))?;
        let rest = match line_end {
            Some(at) => {
                self.line = line + u64::from(raw[at] == b'\n');
                raw[at + 1..].to_vec()
            }
            None => {
                self.line = line;
                self.skipping_line = !self.at_end && !complete;
                Vec::new()
            }
        };
        self.core = core_reader(&self.options.dialect);
        self.record.clear(self.line);
        Ok(Some(rest))
    }

    /// Moves the record `csv_core` completed into the batch, or reads it as the header.
    fn take_core_record(&mut self) -> Result<(), ArrowError> {
        let (fields, width) = (self.record.fields, self.width());
        let record = &self.record;
        let record_fields = record.ends[..fields].iter().scan(0, |start, &end| {
            let field = &record.bytes[*start..end];
            *start = end;
            Some(field)
        });
        if std::mem::take(&mut self.header_pending) {
            let header: Vec<String> = record_fields.map(|field| String::from_utf8_lossy(field).into_owned()).collect();
            self.field_of_column = crate::csv::header::field_of_column(&header, &self.options.columns)
                .map_err(|problem| ArrowError::SchemaError(format!("{}: {problem}", self.object)))?;
            self.record.clear(self.line);
            return Ok(());
        }
        let problem = if fields != width {
            Some(format!("{fields} fields, expected {width}"))
        } else {
            record_fields.clone().position(|field| std::str::from_utf8(field).is_err()).map(|field| self.invalid_utf8(field))
        };
        let (line, raw) = record.start();
        if let Some(problem) = problem {
            let text = line_text(raw);
            self.record.clear(self.line);
            return self.bad_row(line, problem, text);
        }
        let base = self.batch.data.len();
        let mut start = 0;
        for &end in &record.ends[..fields] {
            self.batch.bounds.extend([base + start, base + end]);
            start = end;
        }
        self.batch.data.extend_from_slice(&record.bytes[..record.len]);
        self.batch.lines.push(line);
        self.record.clear(self.line);
        Ok(())
    }

    /// The end of the object: a partial byte-order mark is data, bytes to read again are read,
    /// and a record still open is ended — unless a quoted field in it never closed.
    fn finish(&mut self) -> Result<(), ArrowError> {
        self.at_end = true;
        if let Some(matched) = self.bom_matched.take() {
            self.reread.extend_from_slice(&UTF8_BOM[..matched]);
        }
        loop {
            self.decode_reread()?;
            if !self.record.open {
                return Ok(());
            }
            if let Some(rest) = self.end_open_record()? {
                self.reread = rest;
            }
        }
    }

    /// Ends the open record at the end of the object. A line feed ends it unless a quoted field
    /// is open; then the record is a bad row, and what follows its first line is read again.
    fn end_open_record(&mut self) -> Result<Option<Vec<u8>>, ArrowError> {
        loop {
            let record = &mut self.record;
            let (result, _, written, ends) =
                self.core.read_record(b"\n", &mut record.bytes[record.len..], &mut record.ends[record.fields..]);
            record.len += written;
            record.fields += ends;
            match result {
                ReadRecordResult::OutputFull => record.bytes.resize(record.bytes.len() * 2, 0),
                ReadRecordResult::OutputEndsFull => record.ends.resize(record.ends.len() * 2, 0),
                ReadRecordResult::Record => {
                    self.take_core_record()?;
                    return Ok(None);
                }
                ReadRecordResult::InputEmpty if !record.is_blank() => {
                    let reason = "a quoted field opened on this line never closes";
                    // Not a bad row: the line after it is no header either.
                    if self.header_pending {
                        let (line, _) = record.start();
                        return Err(ArrowError::SchemaError(format!("{}: line {line}: the header: {reason}", self.object)));
                    }
                    return self.read_again_after_first_line(reason.into(), false);
                }
                ReadRecordResult::InputEmpty | ReadRecordResult::End => {
                    self.record.clear(self.line);
                    return Ok(None);
                }
            }
        }
    }

    /// Why a row whose field `field` (in the object's order) is not UTF-8 is bad.
    fn invalid_utf8(&self, field: usize) -> String {
        match self.field_of_column.iter().position(|&of_column| of_column == field) {
            Some(column) => format!("column {:?}: invalid UTF-8", self.options.columns[column].name()),
            None => "invalid UTF-8".into(),
        }
    }

    /// A bad row: an error, or handed to the collector.
    fn bad_row(&self, line: u64, reason: String, text: String) -> Result<(), ArrowError> {
        match &self.handling {
            BadRowHandling::Refuse => Err(self.row_error(line, &reason)),
            BadRowHandling::Separate(collector) => collector
                .record(BadRow { object: self.object.clone(), line, reason, text })
                .map_err(|e| ArrowError::ExternalError(Box::new(e))),
        }
    }

    fn row_error(&self, line: u64, problem: &str) -> ArrowError {
        ArrowError::ParseError(format!("{}: line {line}: {problem}", self.object))
    }

    /// The batch of the rows read so far, if any of them is good; the next batch starts empty.
    pub fn flush(&mut self) -> Result<Option<RecordBatch>, ArrowError> {
        if self.batch.rows() == 0 {
            return Ok(None);
        }
        // The next batch is likely the size of this one: its room is reserved once, not doubled
        // into as it fills.
        let next = FieldBatch::with_capacity(&self.options, self.batch.data.len() + self.batch.data.len() / 8);
        let batch = std::mem::replace(&mut self.batch, next);
        let mut verdicts = Verdicts { decoder: self, lines: &batch.lines, reasons: Vec::new() };
        let mut arrays: Vec<Option<ArrayRef>> = vec![None; self.width()];
        for (column, rule) in self.options.columns.iter().enumerate() {
            let values = ColumnValues { batch: &batch, field: self.field_of_column[column], width: self.width() };
            arrays[column] = verdicts.column(rule, &values, self.projected[column])?;
        }
        let reasons = std::mem::take(&mut verdicts.reasons);
        let mut columns: Vec<ArrayRef> = self.options.projection.iter().map(|&column| arrays[column].clone().expect("projected")).collect();
        let mut rows = batch.rows();
        if !reasons.is_empty() {
            let width = self.width();
            for (row, reason) in reasons.iter().enumerate() {
                if let Some(reason) = reason {
                    self.bad_row(batch.lines[row], reason.clone(), row_text(batch.fields(row, width), &self.options.dialect))?;
                }
            }
            let keep = BooleanArray::from(reasons.iter().map(Option::is_none).collect::<Vec<bool>>());
            columns = columns.iter().map(|column| filter(column, &keep)).collect::<Result<_, _>>()?;
            rows = keep.true_count();
        }
        if rows == 0 {
            return Ok(None);
        }
        RecordBatch::try_new_with_options(Arc::clone(&self.output_schema), columns, &RecordBatchOptions::new().with_row_count(Some(rows)))
            .map(Some)
    }
}

/// The verdicts on the rows of one batch, as its columns are read: the first reason each bad row
/// has. Under [`BadRowHandling::Refuse`] the first reason found is an error.
struct Verdicts<'a> {
    decoder: &'a CsvDecoder,
    lines: &'a [u64],
    /// The first reason of each bad row, indexed by row; empty while every row is good.
    reasons: Vec<Option<String>>,
}

impl Verdicts<'_> {
    #[cold]
    #[inline(never)]
    fn reject(&mut self, row: usize, column: &ColumnRule, problem: &str) -> Result<(), ArrowError> {
        let reason = format!("column {:?}: {problem}", column.name());
        match self.decoder.handling {
            BadRowHandling::Refuse => Err(self.decoder.row_error(self.lines[row], &reason)),
            BadRowHandling::Separate(_) => {
                if self.reasons.is_empty() {
                    self.reasons = vec![None; self.lines.len()];
                }
                self.reasons[row].get_or_insert(reason);
                Ok(())
            }
        }
    }

    /// Reads a column's values by its rule: the array when `build`, else only the verdicts. A
    /// refused value is null in the array; its row is left out of the batch.
    fn column(&mut self, rule: &ColumnRule, values: &ColumnValues<'_>, build: bool) -> Result<Option<ArrayRef>, ArrowError> {
        let rows = values.batch.rows();
        let array: ArrayRef = match &rule.kind {
            // Nothing to check: every field is UTF-8, and an empty one is null.
            ValueKind::Text if !build && rule.field.is_nullable() => return Ok(None),
            ValueKind::Text => {
                let mut builder = StringBuilder::with_capacity(if build { rows } else { 0 }, if build { values.bytes() } else { 0 });
                self.read(rule, values, Ok::<_, String>, |text| if build { builder.append_option(text) })?;
                Arc::new(builder.finish())
            }
            ValueKind::Bool => {
                let mut builder = BooleanBuilder::with_capacity(rows);
                self.read(rule, values, values::boolean, |value| builder.append_option(value))?;
                Arc::new(builder.finish())
            }
            ValueKind::Float64 => {
                let mut builder = Float64Builder::with_capacity(rows);
                self.read(rule, values, values::float64, |value| builder.append_option(value))?;
                Arc::new(builder.finish())
            }
            ValueKind::Int64 => Arc::new(self.primitive::<Int64Type>(rule, values, values::int64)?),
            ValueKind::Date => Arc::new(self.primitive::<Date32Type>(rule, values, values::date)?),
            ValueKind::Timestamp(TimestampText::Epoch(unit)) => {
                let numbers = self.primitive::<Int64Type>(rule, values, |text| values::epoch_number(text, *unit))?;
                Arc::new(self.epochs(rule, &numbers, *unit)?.with_timezone("UTC"))
            }
            ValueKind::Timestamp(text_kind) => {
                let instants = self.primitive::<TimestampMicrosecondType>(rule, values, |text| values::instant(text_kind, text))?;
                Arc::new(instants.with_timezone("UTC"))
            }
        };
        Ok(build.then_some(array))
    }

    /// The values of a column of Arrow primitive type `T`, parsed by `parse`.
    fn primitive<T: ArrowPrimitiveType>(
        &mut self,
        rule: &ColumnRule,
        values: &ColumnValues<'_>,
        parse: impl Fn(&str) -> Result<T::Native, String>,
    ) -> Result<PrimitiveArray<T>, ArrowError> {
        let mut builder = PrimitiveBuilder::<T>::with_capacity(values.batch.rows());
        self.read(rule, values, parse, |value| builder.append_option(value))?;
        Ok(builder.finish())
    }

    /// Epoch numbers as instants, a column at a time; value by value only when one is refused.
    fn epochs(&mut self, rule: &ColumnRule, epochs: &Int64Array, unit: crate::spec::TimestampUnit) -> Result<PrimitiveArray<TimestampMicrosecondType>, ArrowError> {
        if let Some(micros) = timestamps::epochs(epochs, unit) {
            return Ok(micros);
        }
        let mut builder = PrimitiveBuilder::<TimestampMicrosecondType>::with_capacity(epochs.len());
        for (row, epoch) in epochs.iter().enumerate() {
            match epoch.map(|epoch| timestamps::from_epoch(epoch, unit)).transpose() {
                Ok(micros) => builder.append_option(micros),
                Err(problem) => {
                    self.reject(row, rule, &problem)?;
                    builder.append_null();
                }
            }
        }
        Ok(builder.finish())
    }

    /// Hands each value to `put`: `None` for an empty one (refused in a non-nullable column) or a
    /// refused one, the parsed value otherwise.
    fn read<'a, T>(
        &mut self,
        rule: &ColumnRule,
        values: &ColumnValues<'a>,
        parse: impl Fn(&'a str) -> Result<T, String>,
        mut put: impl FnMut(Option<T>),
    ) -> Result<(), ArrowError> {
        for (row, text) in values.iter().enumerate() {
            if text.is_empty() {
                if !rule.field.is_nullable() {
                    self.reject(row, rule, "empty value in a non-nullable column")?;
                }
                put(None);
                continue;
            }
            match parse(text) {
                Ok(value) => put(Some(value)),
                Err(problem) => {
                    self.reject(row, rule, &problem)?;
                    put(None);
                }
            }
        }
        Ok(())
    }
}

/// The values of one column of a batch, as text.
struct ColumnValues<'a> {
    batch: &'a FieldBatch,
    /// The column's field in the object's rows.
    field: usize,
    /// Fields per row.
    width: usize,
}

impl<'a> ColumnValues<'a> {
    fn iter(&self) -> impl Iterator<Item = &'a str> + use<'a> {
        let FieldBatch { data, bounds, .. } = self.batch;
        bounds[self.field * 2..].chunks(self.width * 2).map(move |field| {
            // SAFETY: every field was checked to be UTF-8 when it joined the batch.
            unsafe { std::str::from_utf8_unchecked(&data[field[0]..field[1]]) }
        })
    }

    fn bytes(&self) -> usize {
        self.batch.bounds[self.field * 2..].chunks(self.width * 2).map(|field| field[1] - field[0]).sum()
    }
}

/// Bit `i` set when byte `i` of the first 64 bytes of `bytes` is the delimiter, the quote, a line
/// feed or a carriage return.
fn structural_marks(bytes: &[u8], delimiter: u8, quote: u8) -> u64 {
    if bytes.len() < 64 {
        let mut block = [0u8; 64];
        block[..bytes.len()].copy_from_slice(bytes);
        return block_marks(&block, delimiter, quote) & ((1u64 << bytes.len()) - 1);
    }
    block_marks(bytes[..64].try_into().expect("64 bytes"), delimiter, quote)
}

#[cfg(target_arch = "x86_64")]
fn block_marks(block: &[u8; 64], delimiter: u8, quote: u8) -> u64 {
    use std::arch::x86_64::{__m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8};
    // SAFETY: SSE2 is part of every x86_64 target; each load reads 16 bytes of `block`, with no
    // alignment requirement.
    unsafe {
        let [delimiter, quote, line_feed, carriage_return] =
            [delimiter, quote, b'\n', b'\r'].map(|byte| _mm_set1_epi8(byte as i8));
        let mut marks = 0;
        for (lane, bytes) in block.chunks_exact(16).enumerate() {
            let bytes = _mm_loadu_si128(bytes.as_ptr().cast::<__m128i>());
            let hits = _mm_or_si128(
                _mm_or_si128(_mm_cmpeq_epi8(bytes, delimiter), _mm_cmpeq_epi8(bytes, quote)),
                _mm_or_si128(_mm_cmpeq_epi8(bytes, line_feed), _mm_cmpeq_epi8(bytes, carriage_return)),
            );
            marks |= u64::from(_mm_movemask_epi8(hits) as u16) << (lane * 16);
        }
        marks
    }
}

#[cfg(any(test, not(target_arch = "x86_64")))]
fn block_marks_portable(block: &[u8; 64], delimiter: u8, quote: u8) -> u64 {
    block.iter().enumerate().fold(0, |marks, (at, &byte)| {
        let structural = byte == delimiter || byte == quote || byte == b'\n' || byte == b'\r';
        marks | (u64::from(structural) << at)
    })
}

#[cfg(not(target_arch = "x86_64"))]
fn block_marks(block: &[u8; 64], delimiter: u8, quote: u8) -> u64 {
    block_marks_portable(block, delimiter, quote)
}

impl datafusion_datasource::decoder::Decoder for CsvDecoder {
    fn decode(&mut self, input: &[u8]) -> Result<usize, ArrowError> {
        CsvDecoder::decode(self, input)
    }

    fn flush(&mut self) -> Result<Option<RecordBatch>, ArrowError> {
        CsvDecoder::flush(self)
    }

    fn can_flush_early(&self) -> bool {
        self.is_full()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use bytes::Bytes;
    use datafusion::arrow::array::{AsArray, StringArray};
    use datafusion::arrow::compute::concat_batches;
    use datafusion::arrow::datatypes::Schema;
    use datafusion_datasource::decoder::{DecoderDeserializer, deserialize_stream};
    use futures::TryStreamExt;

    use super::*;
    use crate::spec::{Column, ColumnType};

    fn rule(name: &str, data_type: ColumnType, nullable: bool) -> ColumnRule {
        ColumnRule::of(&Column { name: name.into(), data_type, nullable, unit: None, format: None }).unwrap()
    }

    /// The benchmark's columns as plain types: ids, two texts, epoch seconds as an integer.
    pub(crate) fn events_columns() -> Arc<[ColumnRule]> {
        Arc::new([
            rule("id", ColumnType::Int64, false),
            rule("name", ColumnType::String, true),
            rule("value", ColumnType::String, true),
            rule("timestamp", ColumnType::Int64, true),
        ])
    }

    fn typed_columns() -> Arc<[ColumnRule]> {
        Arc::new([
            rule("amount", ColumnType::Float64, true),
            rule("active", ColumnType::Bool, true),
            rule("day", ColumnType::Date, true),
            rule("at", ColumnType::Timestamp, true),
        ])
    }

    fn options(columns: Arc<[ColumnRule]>, has_header: bool, batch_size: usize) -> DecoderOptions {
        let projection = (0..columns.len()).collect();
        DecoderOptions { columns, projection, batch_size, dialect: CsvDialect { has_header, delimiter: b',', quote: b'"', max_row_bytes: 1 << 20 } }
    }

    fn output_schema(options: &DecoderOptions) -> Schema {
        values::schema(&options.columns).project(&options.projection).unwrap()
    }

    /// The input decoded through DataFusion's stream plumbing, cut into pieces at `cuts`.
    pub(crate) async fn decode_with(options: &DecoderOptions, input: &[u8], cuts: &[usize], handling: BadRowHandling) -> Result<Option<RecordBatch>, String> {
        let mut pieces = Vec::new();
        let mut start = 0;
        for &cut in cuts.iter().chain([&input.len()]) {
            pieces.push(Ok(Bytes::copy_from_slice(&input[start..cut])));
            start = cut;
        }
        let decoder = CsvDecoder::new(options.clone(), "test.csv".into(), handling);
        let stream = deserialize_stream(futures::stream::iter(pieces), DecoderDeserializer::new(decoder));
        let batches: Vec<RecordBatch> = stream.try_collect().await.map_err(|e| e.to_string())?;
        Ok(joined(&output_schema(options), &batches))
    }

    async fn decode(options: &DecoderOptions, input: &[u8], cuts: &[usize]) -> Result<Option<RecordBatch>, String> {
        decode_with(options, input, cuts, BadRowHandling::Refuse).await
    }

    /// Decodes with bad rows set apart; returns the good rows and the bad ones.
    async fn separate(options: &DecoderOptions, input: &[u8], cuts: &[usize]) -> (Option<RecordBatch>, Vec<BadRow>) {
        let dir = tempfile::tempdir().unwrap();
        let bad = Arc::new(BadRows::create(&dir.path().join("bad.jsonl")).unwrap());
        let good = decode_with(options, input, cuts, BadRowHandling::Separate(Arc::clone(&bad))).await.unwrap();
        let text = std::fs::read_to_string(bad.finish().unwrap()).unwrap();
        let mut bad: Vec<BadRow> = text.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
        // Rows bad as a whole are kept as they are read, rows with a bad value when their batch is.
        bad.sort_by_key(|row| row.line);
        (good, bad)
    }

    /// The input read by arrow-csv, the reader the decoder stands in for on well-formed input.
    fn arrow_csv(options: &DecoderOptions, input: &[u8]) -> Result<Option<RecordBatch>, String> {
        let reader = datafusion::arrow::csv::ReaderBuilder::new(values::schema(&options.columns))
            .with_header(options.dialect.has_header)
            .with_delimiter(options.dialect.delimiter)
            .with_quote(options.dialect.quote)
            .with_batch_size(options.batch_size)
            .with_projection(options.projection.clone())
            .build(std::io::Cursor::new(input.to_vec()))
            .unwrap();
        let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>().map_err(|e| e.to_string())?;
        Ok(joined(&output_schema(options), &batches))
    }

    fn joined(schema: &Schema, batches: &[RecordBatch]) -> Option<RecordBatch> {
        (!batches.is_empty()).then(|| concat_batches(&Arc::new(schema.clone()), batches).unwrap())
    }

    /// Every way to cut `input`: whole, at each byte, and into one-byte pieces.
    fn cut_sets(input: &[u8]) -> Vec<Vec<usize>> {
        let mut cut_sets: Vec<Vec<usize>> = (1..input.len()).map(|cut| vec![cut]).collect();
        cut_sets.push(vec![]);
        cut_sets.push((1..input.len()).collect());
        cut_sets
    }

    /// Decodes `input` cut in every way and with tiny batches, and checks each outcome against
    /// arrow-csv's: the same rows, or an error from both.
    async fn agrees_with_arrow_csv(options: &DecoderOptions, input: &[u8]) -> Result<Option<RecordBatch>, String> {
        let expected = arrow_csv(options, input);
        for batch_size in [1, 2, 3, 1024] {
            let options = DecoderOptions { batch_size, ..options.clone() };
            for cuts in &cut_sets(input) {
                let got = decode(&options, input, cuts).await;
                match (&expected, &got) {
                    (Ok(expected), Ok(got)) => assert_eq!(expected, got, "{:?} cut at {cuts:?}", String::from_utf8_lossy(input)),
                    (Err(_), Err(_)) => {}
                    _ => panic!("{:?} cut at {cuts:?}, batches of {batch_size}: arrow-csv {expected:?}, decoder {got:?}", String::from_utf8_lossy(input)),
                }
            }
        }
        expected
    }

    /// Decodes `input` cut in every way, and checks that each way gives the same outcome.
    async fn same_whatever_the_cuts(options: &DecoderOptions, input: &[u8]) -> Result<Option<RecordBatch>, String> {
        let whole = decode(options, input, &[]).await;
        for batch_size in [1, 2, 1024] {
            let options = DecoderOptions { batch_size, ..options.clone() };
            for cuts in &cut_sets(input) {
                let got = decode(&options, input, cuts).await;
                match (&whole, &got) {
                    (Ok(whole), Ok(got)) => assert_eq!(whole, got, "{:?} cut at {cuts:?}", String::from_utf8_lossy(input)),
                    (Err(whole), Err(got)) => assert_eq!(whole, got, "{:?} cut at {cuts:?}", String::from_utf8_lossy(input)),
                    _ => panic!("{:?} cut at {cuts:?}: whole {whole:?}, cut {got:?}", String::from_utf8_lossy(input)),
                }
            }
        }
        whole
    }

    fn texts(batch: &RecordBatch, column: usize) -> Vec<Option<String>> {
        batch.column(column).as_string::<i32>().iter().map(|value| value.map(str::to_string)).collect()
    }

    #[tokio::test]
    async fn reads_what_arrow_csv_reads() {
        let options = options(events_columns(), false, 1024);
        let cases: &[&[u8]] = &[
            b"1,a,b,100\n2,c,d,200\n",
            b"1,a,b,100\n2,c,d,200",
            b"1,a,b,100\r\n2,c,d,200\r\n",
            b"1,a,b,100\r2,c,d,200\r",
            b"1,a,b,100\r\r\n2,c,d,200\n",
            b"1,\"a,b\",\"say \"\"hi\"\"\",100\n2,x,y,200\n",
            b"2,multi,\"line1\nline2\r\nline3\",200\n3,x,y,300\n",
            b"3,ab\"c,d\",300\n4,\"ab\"cd,e,400\n",
            b"\n\n1,a,b,100\n\n\r\n\r\n2,c,d,200\n\n",
            b"5,,,500\n6,\"\",\"\",\n",
            b"7,a,b,100\n",
            b"",
            b"\n",
            b"8,a very long setting name that crosses a block of sixty-four bytes,and a value as long as that one too,800\n9,s,v,900\n",
        ];
        for case in cases {
            agrees_with_arrow_csv(&options, case).await.unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(case)));
        }
        // A quoted value longer than the record buffer csv_core starts with.
        let long = format!("1,a,\"{}\n{}\",100\n2,b,c,200\n", "x".repeat(1500), "y".repeat(1500));
        let batch = agrees_with_arrow_csv(&options, long.as_bytes()).await.unwrap().unwrap();
        assert_eq!(batch.column(2).as_any().downcast_ref::<StringArray>().unwrap().value(0).len(), 3001);
    }

    #[tokio::test]
    async fn refuses_what_arrow_csv_refuses() {
        let options = options(events_columns(), false, 1024);
        let cases: &[&[u8]] = &[
            b"1,a,b,100\n2,a,b\n",
            b"1,a,b,100,extra\n",
            b"1,a,b,100,more,and,more,fields\n",
            b"1,a,\"b,c\",100,extra\n",
            b",a,b,100\n",
            b"x,a,b,100\n",
            b"1,a,b,9223372036854775808\n",
            b"1,\xff,b,100\n",
            b"1,\"\xff\",b,100\n",
            b"1,a,\"open,100\n2,b,c,200\n",
            b"1,a,b,100\n2\n",
        ];
        for case in cases {
            assert!(agrees_with_arrow_csv(&options, case).await.is_err(), "{:?}", String::from_utf8_lossy(case));
        }
    }

    #[tokio::test]
    async fn types_parse_as_arrow_csv_parses_them() {
        let options = options(typed_columns(), false, 1024);
        let read = b"1.5,true,2026-11-24,2026-11-24T10:00:00Z\n-2e3,FALSE,2026-01-01,2026-11-24 10:00:00\n,,,\nNaN,True,1999-12-31,2026-11-24T10:00:00.123456+01:00\n";
        let batch = agrees_with_arrow_csv(&options, read).await.unwrap().unwrap();
        assert_eq!(batch.num_rows(), 4);
        assert_eq!(batch.column(3).null_count(), 1);
        for bad in [&b"abc,true,2026-11-24,2026-11-24T10:00:00Z\n"[..], b"1,yes,2026-11-24,2026-11-24T10:00:00Z\n", b"1,true,2026-13-24,2026-11-24T10:00:00Z\n", b"1,true,2026-11-24,tomorrow\n"] {
            assert!(agrees_with_arrow_csv(&options, bad).await.is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[tokio::test]
    async fn another_delimiter_and_quote() {
        let mut options = options(events_columns(), false, 1024);
        options.dialect = CsvDialect { delimiter: b';', quote: b'\'', ..options.dialect };
        agrees_with_arrow_csv(&options, b"1;'a;b';'it''s';100\n2;x,y;\"z\";200\n").await.unwrap();
        assert!(agrees_with_arrow_csv(&options, b"1,a,b,100\n").await.is_err());
    }

    /// Rows of every kind in a pseudo-random mix, so that plain runs, rows read by `csv_core`,
    /// pieces and batches meet at every kind of boundary.
    #[tokio::test]
    async fn a_mix_of_row_kinds_reads_the_same() {
        let kinds: [&[u8]; 8] = [
            b"10,name,value,1000\n",
            b"11,\"quoted, with comma\",v,1100\r\n",
            b"\n",
            b"12,,\"multi\nline\",\n",
            b"13,a somewhat longer setting name,and its fairly long value text,1300\n",
            b"14,n,v,1400\r\n",
            b"15,\"\"\"\",x,1500\n",
            b"16,caf\xc3\xa9,\xe2\x82\xac,1600\n",
        ];
        let mut state = 42u64;
        let mut input = Vec::new();
        for _ in 0..60 {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            input.extend_from_slice(kinds[(state >> 33) as usize % kinds.len()]);
        }
        let options = options(events_columns(), false, 1024);
        let expected = arrow_csv(&options, &input).unwrap().unwrap();
        for batch_size in [1, 5, 1024] {
            for piece in [1, 7, 64, 100, input.len()] {
                let cuts: Vec<usize> = (piece..input.len()).step_by(piece).collect();
                let got = decode(&DecoderOptions { batch_size, ..options.clone() }, &input, &cuts).await.unwrap().unwrap();
                assert_eq!(expected, got, "pieces of {piece}, batches of {batch_size}");
            }
        }
    }

    #[test]
    fn structural_marks_match_a_byte_by_byte_scan() {
        let mut block = [0u8; 64];
        for (at, byte) in block.iter_mut().enumerate() {
            *byte = [b'a', b',', b'"', b'\n', b'\r', b';', 0xff, b'x'][(at * 7 + at / 3) % 8];
        }
        for (delimiter, quote) in [(b',', b'"'), (b';', b'\''), (b'\t', b'"')] {
            assert_eq!(block_marks(&block, delimiter, quote), block_marks_portable(&block, delimiter, quote));
        }
        assert_eq!(structural_marks(b"a,b\nc", b',', b'"'), 0b01010);
    }

    #[tokio::test]
    async fn errors_name_the_object_line_and_column() {
        let options = options(events_columns(), false, 1024);
        let error = decode(&options, b"1,a,b,100\n\n2,a,b,x\n", &[]).await.unwrap_err();
        assert!(error.contains("test.csv: line 3: column \"timestamp\": \"x\" is not a valid int64"), "{error}");
        // Arrow reads " 8" as 8; an integer here is digits with a sign at most.
        let error = decode(&options, b" 8,a,b,100\n", &[]).await.unwrap_err();
        assert!(error.contains("line 1: column \"id\": \" 8\" is not a valid int64"), "{error}");
        let error = decode(&options, b"1,a,b,100\n2,a,b\n", &[]).await.unwrap_err();
        assert!(error.contains("test.csv: line 2: 3 fields, expected 4"), "{error}");
        let error = decode(&options, b"1,a,b,100\n2,\xff,b,1\n", &[]).await.unwrap_err();
        assert!(error.contains("test.csv: line 2: column \"name\": invalid UTF-8"), "{error}");
        let error = decode(&options, b"1,\"a\nb\",c,1\n2,\"x\",\"\xff\",1\n", &[]).await.unwrap_err();
        assert!(error.contains("test.csv: line 3: column \"value\": invalid UTF-8"), "{error}");
    }

    /// A quote opened in the last column and never closed used to swallow the rest of the object
    /// into that value, with the right number of fields.
    #[tokio::test]
    async fn a_quote_left_open_in_the_last_column_is_a_bad_row_of_one_line() {
        let options = options(Arc::new([rule("id", ColumnType::Int64, false), rule("name", ColumnType::String, true), rule("value", ColumnType::String, true)]), false, 1024);
        let input = b"1,a,\"x\n2,c,d\n3,e,f\n";
        let error = same_whatever_the_cuts(&options, input).await.unwrap_err();
        assert!(error.contains("line 1: a quoted field opened on this line never closes"), "{error}");
        for cuts in cut_sets(input) {
            let (good, bad) = separate(&options, input, &cuts).await;
            let good = good.unwrap();
            assert_eq!(good.column(0).as_primitive::<Int64Type>().values().to_vec(), [2, 3], "cut at {cuts:?}");
            assert_eq!(bad.len(), 1);
            assert_eq!((bad[0].line, bad[0].text.as_str()), (1, "1,a,\"x"));
        }
        // Without a line end after it, the open quote is the last line's.
        let (good, bad) = separate(&options, b"1,a,b\n2,c,\"d", &[]).await;
        assert_eq!((good.unwrap().num_rows(), bad[0].line), (1, 2));
    }

    /// A header whose quote never closes stops the object whether bad rows are refused or set
    /// apart: setting its first line apart would take the next line for the header (found by
    /// the decoder's fuzz target).
    #[tokio::test]
    async fn a_header_whose_quote_never_closes_stops_the_object_either_way() {
        let options = options(events_columns(), true, 1024);
        let input = b"\"\nid,name,value,timestamp\n1,a,b,100\n";
        let refused = same_whatever_the_cuts(&options, input).await.unwrap_err();
        assert!(refused.contains("test.csv: line 1: the header: a quoted field opened on this line never closes"), "{refused}");
        let dir = tempfile::tempdir().unwrap();
        let bad = Arc::new(BadRows::create(&dir.path().join("bad.jsonl")).unwrap());
        let separated = decode_with(&options, input, &[], BadRowHandling::Separate(Arc::clone(&bad))).await;
        assert_eq!(separated.unwrap_err(), refused);
        assert_eq!(bad.count(), 0);
    }

    /// A row may not grow past maxRowBytes: a quote left open in a large object costs that much
    /// memory at most, and one line.
    #[tokio::test]
    async fn rows_longer_than_the_limit_are_bad_and_reading_goes_on() {
        let mut options = options(events_columns(), false, 1024);
        options.dialect.max_row_bytes = 64;
        let mut input = b"1,a,\"open,100\n".to_vec();
        for id in 2..40 {
            input.extend_from_slice(format!("{id},setting,value,{id}\n").as_bytes());
        }
        let error = decode(&options, &input, &[]).await.unwrap_err();
        assert!(error.contains("line 1: a row longer than 64 bytes (source.csv.maxRowBytes)"), "{error}");
        for cuts in [vec![], vec![5], vec![70], (1..input.len()).step_by(7).collect()] {
            let (good, bad) = separate(&options, &input, &cuts).await;
            assert_eq!(good.unwrap().num_rows(), 38, "cut at {cuts:?}");
            assert_eq!((bad.len(), bad[0].line), (1, 1), "cut at {cuts:?}");
        }
        // A plain row over the limit, whichever path reads it, and one on a line of its own.
        let long_plain = format!("1,{},b,100\n2,c,d,200\n", "n".repeat(80));
        assert!(same_whatever_the_cuts(&options, long_plain.as_bytes()).await.unwrap_err().contains("longer than 64 bytes"));
        let (good, bad) = separate(&options, format!("1,\"{}\n2,c,d,200\n", "n".repeat(80)).as_bytes(), &[3]).await;
        assert_eq!((good.unwrap().num_rows(), bad.len()), (1, 1));
    }

    /// A byte-order mark is skipped at the start of the object and nowhere else, by the plain
    /// path and by csv_core alike.
    #[tokio::test]
    async fn a_byte_order_mark_is_skipped_only_at_the_start() {
        let options = options(events_columns(), false, 1024);
        let batch = same_whatever_the_cuts(&options, b"\xEF\xBB\xBF1,a,b,100\n2,c,d,200\n").await.unwrap().unwrap();
        assert_eq!(batch.num_rows(), 2);
        let batch = same_whatever_the_cuts(&options, b"\xEF\xBB\xBF1,\"a\",b,100\n").await.unwrap().unwrap();
        assert_eq!(texts(&batch, 1), [Some("a".to_string())]);
        // Inside the object it is data, on either path.
        for input in [&b"1,a,b,100\n2,\xEF\xBB\xBFc,d,200\n"[..], b"1,a,b,100\n2,\"\xEF\xBB\xBFc\",d,200\n", b"1,\"a\",b,100\n2,\xEF\xBB\xBFc,d,200\n"] {
            let batch = same_whatever_the_cuts(&options, input).await.unwrap().unwrap();
            assert_eq!(texts(&batch, 1)[1].as_deref(), Some("\u{feff}c"), "{:?}", String::from_utf8_lossy(input));
        }
        let error = same_whatever_the_cuts(&options, b"1,a,b,100\n\xEF\xBB\xBF2,c,d,200\n").await.unwrap_err();
        assert!(error.contains("line 2") && error.contains("\"id\""), "{error}");
        // Bytes that start like a mark and are not one are data.
        assert!(same_whatever_the_cuts(&options, b"\xEF\xBB1,a,b,100\n").await.unwrap_err().contains("line 1"));
    }

    /// Whether a row is bad does not depend on what the query reads, nor on the other rows.
    #[tokio::test]
    async fn every_declared_column_is_checked_also_when_not_read() {
        let mut options = options(events_columns(), false, 1024);
        options.projection = vec![1];
        let error = same_whatever_the_cuts(&options, b"1,a,b,100\n2,c,d,x\n").await.unwrap_err();
        assert!(error.contains("line 2: column \"timestamp\""), "{error}");
        let error = same_whatever_the_cuts(&options, b"1,a,b,100\n,c,d,2\n").await.unwrap_err();
        assert!(error.contains("column \"id\": empty value in a non-nullable column"), "{error}");
        options.projection = vec![];
        let (good, bad) = separate(&options, b"1,a,b,100\n2,c,d,x\n\"3\",e,f,300\n", &[]).await;
        assert_eq!((good.unwrap().num_rows(), bad.len(), bad[0].line), (2, 1, 2));
    }

    /// With a header, values are read by name: another order is read right, other names refused.
    #[tokio::test]
    async fn header_columns_are_found_by_name() {
        let options = options(events_columns(), true, 1024);
        let batch = same_whatever_the_cuts(&options, b"timestamp,VALUE,id,name\n100,b,1,a\n200,\"d\",2,c\n").await.unwrap().unwrap();
        assert_eq!(batch.column(0).as_primitive::<Int64Type>().values().to_vec(), [1, 2]);
        assert_eq!(texts(&batch, 1), [Some("a".to_string()), Some("c".to_string())]);
        assert_eq!(batch.column(3).as_primitive::<Int64Type>().values().to_vec(), [100, 200]);
        for input in [&b"1,a,b,100\n2,c,d,200\n"[..], b"id,name,value\n1,a,b\n", b"id,name,value,timestamp,extra\n1,a,b,100,x\n"] {
            let error = same_whatever_the_cuts(&options, input).await.unwrap_err();
            assert!(error.contains("test.csv: its header") && error.contains("does not name the columns"), "{error}");
        }
        let mut projected = options.clone();
        projected.projection = vec![3, 1];
        let batch = same_whatever_the_cuts(&projected, b"\xEF\xBB\xBFid,name,value,timestamp\n1,a,b,100\n2,\"c\nd\",e,200\n").await.unwrap().unwrap();
        assert_eq!((batch.schema().field(0).name().as_str(), batch.num_rows()), ("timestamp", 2));
    }

    /// Bad rows set apart leave exactly the good rows, with the lines and reasons of the bad ones,
    /// however the input is cut.
    #[tokio::test]
    async fn separated_rows_are_the_good_rows_and_the_bad_ones() {
        let options = options(events_columns(), false, 2);
        let input = b"1,a,b,100\nx,a,b,100\n2,a,b\n,a,b,100\n3,a,\xff,100\n4,a,b,9223372036854775808\n5,\"q\",b,1\n6,a,\"open,100\n7,a,b,2\n";
        let clean = b"1,a,b,100\n5,\"q\",b,1\n7,a,b,2\n";
        let expected = decode(&options, clean, &[]).await.unwrap().unwrap();
        for cuts in cut_sets(input) {
            let (good, bad) = separate(&options, input, &cuts).await;
            assert_eq!(good.as_ref(), Some(&expected), "cut at {cuts:?}");
            let lines: Vec<u64> = bad.iter().map(|row| row.line).collect();
            assert_eq!(lines, [2, 3, 4, 5, 6, 8], "cut at {cuts:?}");
        }
        let (_, bad) = separate(&options, input, &[]).await;
        assert_eq!(bad[0].reason, "column \"id\": \"x\" is not a valid int64");
        assert_eq!(bad[0].text, "x,a,b,100");
        assert_eq!(bad[1].reason, "3 fields, expected 4");
        assert_eq!(bad[2].reason, "column \"id\": empty value in a non-nullable column");
        assert_eq!(bad[3].reason, "column \"value\": invalid UTF-8");
        assert!(bad[5].reason.contains("never closes"), "{}", bad[5].reason);
    }
}
