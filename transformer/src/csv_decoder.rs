//! Decodes CSV bytes into Arrow record batches of the declared columns, by the rules of the
//! `csv_core` reader that arrow-csv and the row-by-row pass use, at a fraction of its cost on
//! plain rows.
//!
//! A row whose line holds no quote and no carriage return other than before its line feed is
//! split where the delimiters and the line feed are, found 64 bytes at a time. Every other row —
//! quoted fields, a lone `\r`, the wrong number of fields, a row cut by the end of the buffer —
//! is read by `csv_core` itself, so quoting, escapes and line ends keep exactly its meaning, and
//! a row `csv_core` refuses is refused here too. Values are parsed by the same Arrow parsers as
//! arrow-csv's; an empty value is null, and an error in a non-nullable column.

use std::sync::Arc;

use csv_core::ReadRecordResult;
use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, PrimitiveArray, PrimitiveBuilder, RecordBatch, RecordBatchOptions, StringBuilder,
};
use datafusion::arrow::compute::kernels::cast_utils::{Parser, string_to_datetime};
use datafusion::arrow::datatypes::{
    ArrowPrimitiveType, DataType, Date32Type, Field, Float64Type, Int64Type, SchemaRef, TimeUnit,
    TimestampMicrosecondType,
};
use datafusion::arrow::error::ArrowError;

use crate::spec::CsvOptions;

/// The CSV dialect and the columns to decode.
#[derive(Clone, Debug)]
pub struct DecoderOptions {
    /// Every column of the file, in order.
    pub file_schema: SchemaRef,
    /// Indices of the columns to decode into each batch, in output order.
    pub projection: Vec<usize>,
    /// Rows per batch.
    pub batch_size: usize,
    /// How the object is written.
    pub dialect: CsvDialect,
}

/// How CSV objects are written: header, delimiter, quote.
#[derive(Clone, Copy, Debug)]
pub struct CsvDialect {
    /// Whether each object starts with a header record, which is skipped.
    pub has_header: bool,
    /// Field delimiter.
    pub delimiter: u8,
    /// Quote character.
    pub quote: u8,
}

impl From<&CsvOptions> for CsvDialect {
    /// The dialect of a pipeline's CSV options, whose delimiter and quote are single ASCII
    /// characters (checked when the spec is validated).
    fn from(csv: &CsvOptions) -> Self {
        Self { has_header: csv.header, delimiter: csv.delimiter.as_bytes()[0], quote: csv.quote.as_bytes()[0] }
    }
}

/// Turns the bytes of one CSV object, given in pieces of any size, into record batches.
pub struct CsvDecoder {
    options: DecoderOptions,
    /// The projected columns.
    output_schema: SchemaRef,
    /// What error messages call the object.
    object: String,
    /// Whether the delimiter and quote allow plain rows to be split without `csv_core`.
    splits_plain_rows: bool,
    header_pending: bool,
    batch: FieldBatch,
    /// Rows decoded before the batch being built, for error messages.
    rows_before: u64,
    core: csv_core::Reader,
    record: CoreRecord,
}

impl std::fmt::Debug for CsvDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsvDecoder").field("object", &self.object).field("rows", &self.batch.rows).finish()
    }
}

/// The fields of the rows of one batch: their bytes, and where each field starts and ends.
struct FieldBatch {
    data: Vec<u8>,
    /// Start and end in `data` of each field, row after row.
    bounds: Vec<usize>,
    rows: usize,
}

impl FieldBatch {
    /// An empty batch with room for `bytes` of fields and the bounds of a full batch.
    fn with_capacity(options: &DecoderOptions, bytes: usize) -> Self {
        let bounds = options.batch_size * options.file_schema.fields().len() * 2;
        Self { data: Vec::with_capacity(bytes), bounds: Vec::with_capacity(bounds), rows: 0 }
    }
}

/// The record `csv_core` is reading: unescaped field bytes and field ends, relative to its start.
struct CoreRecord {
    /// Whether `csv_core` is part way through input that a later call continues.
    open: bool,
    bytes: Vec<u8>,
    len: usize,
    ends: Vec<usize>,
    fields: usize,
}

impl CsvDecoder {
    /// A decoder for one object; `object` names it in error messages.
    pub fn new(options: DecoderOptions, object: String) -> Self {
        let columns = options.file_schema.fields().len();
        let CsvDialect { has_header, delimiter, quote } = options.dialect;
        let splits_plain_rows = ![b'\n', b'\r', quote].contains(&delimiter) && quote != b'\n' && quote != b'\r';
        let core = csv_core::ReaderBuilder::new().delimiter(delimiter).quote(quote).build();
        let output_schema = Arc::new(options.file_schema.project(&options.projection).expect("projection within the file schema"));
        let batch = FieldBatch::with_capacity(&options, 0);
        Self {
            output_schema,
            header_pending: has_header,
            options,
            object,
            splits_plain_rows,
            batch,
            rows_before: 0,
            core,
            // One end more than the columns, so that a row with one field too many is counted
            // rather than cut off.
            record: CoreRecord { open: false, bytes: vec![0; 1024], len: 0, ends: vec![0; columns + 1], fields: 0 },
        }
    }

    fn columns(&self) -> usize {
        self.options.file_schema.fields().len()
    }

    /// Reads rows from `input` until the batch is full or `input` is used up; returns the bytes
    /// consumed. A row cut by the end of `input` is kept and completed by the next call. An empty
    /// `input` marks the end of the object.
    pub fn decode(&mut self, input: &[u8]) -> Result<usize, ArrowError> {
        if input.is_empty() {
            if self.record.open {
                self.read_core_record(input)?;
            }
            return Ok(0);
        }
        let mut consumed = 0;
        while consumed < input.len() && !self.is_full() {
            if !self.record.open && !self.header_pending && self.splits_plain_rows {
                consumed += self.split_plain_rows(&input[consumed..])?;
                if consumed == input.len() || self.is_full() {
                    break;
                }
            }
            consumed += self.read_core_record(&input[consumed..])?;
        }
        Ok(consumed)
    }

    /// Whether the batch holds as many rows as a batch may.
    pub fn is_full(&self) -> bool {
        self.batch.rows >= self.options.batch_size
    }

    /// Splits the plain rows at the start of `input` and adds them to the batch; stops at the
    /// first row that is not plain or not complete, or when the batch is full. Returns the bytes
    /// of the rows taken, empty lines included.
    fn split_plain_rows(&mut self, input: &[u8]) -> Result<usize, ArrowError> {
        let columns = self.columns();
        let CsvDialect { delimiter, quote, .. } = self.options.dialect;
        let base = self.batch.data.len();
        let bounds_before = self.batch.bounds.len();
        let (mut row_start, mut field_start, mut fields, mut row_bounds) = (0, 0, 0, bounds_before);
        let mut block = 0;
        'blocks: while block < input.len() {
            let mut marks = structural_marks(&input[block..], delimiter, quote);
            while marks != 0 {
                let at = block + marks.trailing_zeros() as usize;
                marks &= marks - 1;
                match input[at] {
                    byte if byte == delimiter => {
                        if fields + 1 == columns {
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
                            if fields + 1 != columns {
                                break 'blocks;
                            }
                            self.batch.bounds.extend([base + field_start, base + end]);
                            self.batch.rows += 1;
                        }
                        (row_start, field_start, fields, row_bounds) = (at + 1, at + 1, 0, self.batch.bounds.len());
                        if self.is_full() {
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
            let bad_at = base + error.valid_up_to();
            let fields_before = self.batch.bounds.chunks(2).take_while(|field| field[1] < bad_at).count();
            return Err(self.row_error(fields_before / columns, "invalid UTF-8"));
        }
        self.batch.data.extend_from_slice(taken);
        Ok(row_start)
    }

    /// Feeds `input` to `csv_core` until it completes one record, which joins the batch (or is
    /// skipped as the header), or until `input` is used up. Returns the bytes consumed.
    fn read_core_record(&mut self, input: &[u8]) -> Result<usize, ArrowError> {
        let mut consumed = 0;
        loop {
            let record = &mut self.record;
            let (result, read, written, ends) = self.core.read_record(
                &input[consumed..],
                &mut record.bytes[record.len..],
                &mut record.ends[record.fields..],
            );
            consumed += read;
            record.len += written;
            record.fields += ends;
            match result {
                ReadRecordResult::InputEmpty => {
                    record.open = true;
                    return Ok(consumed);
                }
                ReadRecordResult::OutputFull => record.bytes.resize(record.bytes.len() * 2, 0),
                // A header may have more columns than are declared.
                ReadRecordResult::OutputEndsFull if self.header_pending => record.fields = 0,
                ReadRecordResult::OutputEndsFull => {
                    return Err(self.field_count_error(&format!("more than {}", self.columns())));
                }
                ReadRecordResult::Record => {
                    self.core.reset();
                    self.take_core_record()?;
                    return Ok(consumed);
                }
                ReadRecordResult::End => {
                    record.open = false;
                    return Ok(consumed);
                }
            }
        }
    }

    /// Moves the record `csv_core` completed into the batch.
    fn take_core_record(&mut self) -> Result<(), ArrowError> {
        let (len, fields) = (self.record.len, self.record.fields);
        (self.record.open, self.record.len, self.record.fields) = (false, 0, 0);
        if std::mem::take(&mut self.header_pending) {
            return Ok(());
        }
        if fields != self.columns() {
            return Err(self.field_count_error(&fields.to_string()));
        }
        let base = self.batch.data.len();
        let mut start = 0;
        let CoreRecord { bytes, ends, .. } = &self.record;
        for &end in &ends[..fields] {
            if std::str::from_utf8(&bytes[start..end]).is_err() {
                return Err(self.row_error(self.batch.rows, "invalid UTF-8"));
            }
            self.batch.bounds.extend([base + start, base + end]);
            start = end;
        }
        self.batch.data.extend_from_slice(&bytes[..len]);
        self.batch.rows += 1;
        Ok(())
    }

    /// The batch of the rows read so far, if there are any; the next batch starts empty.
    pub fn flush(&mut self) -> Result<Option<RecordBatch>, ArrowError> {
        if self.batch.rows == 0 {
            return Ok(None);
        }
        // The next batch is likely the size of this one: its room is reserved once, not doubled
        // into as it fills.
        let next = FieldBatch::with_capacity(&self.options, self.batch.data.len() + self.batch.data.len() / 8);
        let batch = std::mem::replace(&mut self.batch, next);
        let rows = batch.rows;
        let columns: Vec<ArrayRef> =
            self.options.projection.iter().map(|&column| self.column_array(&batch, column)).collect::<Result<_, _>>()?;
        self.rows_before += rows as u64;
        RecordBatch::try_new_with_options(Arc::clone(&self.output_schema), columns, &RecordBatchOptions::new().with_row_count(Some(rows)))
            .map(Some)
    }

    /// One column of the batch as an Arrow array of its declared type.
    fn column_array(&self, batch: &FieldBatch, column: usize) -> Result<ArrayRef, ArrowError> {
        let field = self.options.file_schema.field(column);
        let values = ColumnValues { batch, column, columns: self.columns() };
        Ok(match field.data_type() {
            DataType::Utf8 => {
                let mut builder = StringBuilder::with_capacity(batch.rows, values.bytes());
                self.fill(field, values.iter(), |text| {
                    builder.append_option(text);
                    true
                })?;
                Arc::new(builder.finish())
            }
            DataType::Boolean => {
                let mut builder = BooleanBuilder::with_capacity(batch.rows);
                self.fill(field, values.iter(), |text| match text {
                    None => {
                        builder.append_null();
                        true
                    }
                    Some(text) => parse_bool(text).map(|value| builder.append_value(value)).is_some(),
                })?;
                Arc::new(builder.finish())
            }
            DataType::Int64 => Arc::new(self.primitive_array::<Int64Type>(field, &values, parse_int64)?),
            DataType::Float64 => Arc::new(self.primitive_array::<Float64Type>(field, &values, Float64Type::parse)?),
            DataType::Date32 => Arc::new(self.primitive_array::<Date32Type>(field, &values, Date32Type::parse)?),
            DataType::Timestamp(TimeUnit::Microsecond, Some(zone)) if zone.as_ref() == "UTC" => {
                let array = self.primitive_array::<TimestampMicrosecondType>(field, &values, |text| {
                    string_to_datetime(&chrono::Utc, text).ok().map(|time| time.timestamp_micros())
                })?;
                Arc::new(array.with_timezone(Arc::clone(zone)))
            }
            other => {
                return Err(ArrowError::NotYetImplemented(format!("column {:?}: CSV values of type {other}", field.name())));
            }
        })
    }

    fn primitive_array<T: ArrowPrimitiveType>(
        &self,
        field: &Field,
        values: &ColumnValues<'_>,
        parse: impl Fn(&str) -> Option<T::Native>,
    ) -> Result<PrimitiveArray<T>, ArrowError> {
        let mut builder = PrimitiveBuilder::<T>::with_capacity(values.batch.rows);
        self.fill(field, values.iter(), |text| match text {
            None => {
                builder.append_null();
                true
            }
            Some(text) => parse(text).map(|value| builder.append_value(value)).is_some(),
        })?;
        Ok(builder.finish())
    }

    /// Hands each value to `append`, `None` for an empty one; fails on an empty value in a
    /// non-nullable column, and on a value `append` refuses.
    fn fill<'a>(
        &self,
        field: &Field,
        texts: impl Iterator<Item = &'a str>,
        mut append: impl FnMut(Option<&'a str>) -> bool,
    ) -> Result<(), ArrowError> {
        for (row, text) in texts.enumerate() {
            let value = match (text.is_empty(), field.is_nullable()) {
                (false, _) => Some(text),
                (true, true) => None,
                (true, false) => {
                    let problem = format!("column {:?}: empty value in a non-nullable column", field.name());
                    return Err(self.row_error(row, &problem));
                }
            };
            if !append(value) {
                return Err(self.parse_error(field, row, text));
            }
        }
        Ok(())
    }

    fn parse_error(&self, field: &Field, row: usize, text: &str) -> ArrowError {
        self.row_error(row, &format!("column {:?}: {text:?} is not a valid {}", field.name(), field.data_type()))
    }

    fn row_error(&self, row_in_batch: usize, problem: &str) -> ArrowError {
        ArrowError::ParseError(format!("{}: row {}: {problem}", self.object, self.rows_before + row_in_batch as u64 + 1))
    }

    fn field_count_error(&self, found: &str) -> ArrowError {
        let row = self.rows_before + self.batch.rows as u64 + 1;
        ArrowError::CsvError(format!("{}: row {row}: {found} fields, expected {}", self.object, self.columns()))
    }

}

/// The values of one column of a batch, as text.
struct ColumnValues<'a> {
    batch: &'a FieldBatch,
    column: usize,
    columns: usize,
}

impl<'a> ColumnValues<'a> {
    fn iter(&self) -> impl Iterator<Item = &'a str> + use<'a> {
        let FieldBatch { data, bounds, .. } = self.batch;
        bounds[self.column * 2..].chunks(self.columns * 2).map(move |field| {
            // Every field was checked to be UTF-8 when it joined the batch.
            unsafe { std::str::from_utf8_unchecked(&data[field[0]..field[1]]) }
        })
    }

    fn bytes(&self) -> usize {
        self.batch.bounds[self.column * 2..].chunks(self.columns * 2).map(|field| field[1] - field[0]).sum()
    }
}

/// An integer as [`Int64Type::parse`] reads it, with a shortcut for up to 18 plain digits, which
/// cannot overflow.
fn parse_int64(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if (1..=18).contains(&bytes.len()) {
        let (value, all_digits) = bytes.iter().fold((0i64, true), |(value, all_digits), &byte| {
            let digit = byte.wrapping_sub(b'0');
            (value.wrapping_mul(10).wrapping_add(i64::from(digit)), all_digits && digit < 10)
        });
        if all_digits {
            return Some(value);
        }
    }
    Int64Type::parse(text)
}

/// A boolean as arrow-csv reads it: `true` or `false` in any case.
pub fn parse_bool(text: &str) -> Option<bool> {
    if text.eq_ignore_ascii_case("true") {
        Some(true)
    } else if text.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
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
    use datafusion::arrow::compute::concat_batches;
    use datafusion::arrow::datatypes::Schema;
    use datafusion_datasource::decoder::{DecoderDeserializer, deserialize_stream};
    use futures::TryStreamExt;

    use super::*;

    /// The benchmark's columns as the raw CSV schema: ids, two texts, epoch seconds.
    pub(crate) fn events_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("value", DataType::Utf8, true),
            Field::new("timestamp", DataType::Int64, true),
        ]))
    }

    fn typed_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("amount", DataType::Float64, true),
            Field::new("active", DataType::Boolean, true),
            Field::new("day", DataType::Date32, true),
            Field::new("at", crate::schema::timestamp_type(), true),
        ]))
    }

    fn options(schema: SchemaRef, has_header: bool, batch_size: usize) -> DecoderOptions {
        let projection = (0..schema.fields().len()).collect();
        DecoderOptions { file_schema: schema, projection, batch_size, dialect: CsvDialect { has_header, delimiter: b',', quote: b'"' } }
    }

    /// The input decoded through DataFusion's stream plumbing, cut into pieces at `cuts`.
    async fn decode(options: &DecoderOptions, input: &[u8], cuts: &[usize]) -> Result<Option<RecordBatch>, String> {
        let mut pieces = Vec::new();
        let mut start = 0;
        for &cut in cuts.iter().chain([&input.len()]) {
            pieces.push(Ok(Bytes::copy_from_slice(&input[start..cut])));
            start = cut;
        }
        let decoder = CsvDecoder::new(options.clone(), "test.csv".into());
        let stream = deserialize_stream(futures::stream::iter(pieces), DecoderDeserializer::new(decoder));
        let batches: Vec<RecordBatch> = stream.try_collect().await.map_err(|e| e.to_string())?;
        assert!(batches.iter().all(|batch| batch.num_rows() <= options.batch_size));
        Ok(joined(&options.file_schema.project(&options.projection).unwrap(), &batches))
    }

    /// The input read by arrow-csv, the reader the decoder stands in for.
    fn arrow_csv(options: &DecoderOptions, input: &[u8]) -> Result<Option<RecordBatch>, String> {
        let reader = datafusion::arrow::csv::ReaderBuilder::new(Arc::clone(&options.file_schema))
            .with_header(options.dialect.has_header)
            .with_delimiter(options.dialect.delimiter)
            .with_quote(options.dialect.quote)
            .with_batch_size(options.batch_size)
            .with_projection(options.projection.clone())
            .build(std::io::Cursor::new(input.to_vec()))
            .unwrap();
        let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>().map_err(|e| e.to_string())?;
        Ok(joined(&options.file_schema.project(&options.projection).unwrap(), &batches))
    }

    fn joined(schema: &Schema, batches: &[RecordBatch]) -> Option<RecordBatch> {
        (!batches.is_empty()).then(|| concat_batches(&Arc::new(schema.clone()), batches).unwrap())
    }

    /// Decodes `input` whole, cut at every byte, in one-byte pieces and with tiny batches, and
    /// checks each outcome against arrow-csv's: the same rows, or an error from both.
    async fn agrees_with_arrow_csv(options: &DecoderOptions, input: &[u8]) -> Result<Option<RecordBatch>, String> {
        let expected = arrow_csv(options, input);
        let mut cut_sets: Vec<Vec<usize>> = (1..input.len()).map(|cut| vec![cut]).collect();
        cut_sets.push(vec![]);
        cut_sets.push((1..input.len()).collect());
        for batch_size in [1, 2, 3, 1024] {
            let options = DecoderOptions { batch_size, ..options.clone() };
            for cuts in &cut_sets {
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

    #[tokio::test]
    async fn reads_what_arrow_csv_reads() {
        let options = options(events_schema(), false, 1024);
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
            b" 8,a,b,100\n",
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
        assert_eq!(batch.column(2).as_any().downcast_ref::<datafusion::arrow::array::StringArray>().unwrap().value(0).len(), 3001);
    }

    #[tokio::test]
    async fn refuses_what_arrow_csv_refuses() {
        let options = options(events_schema(), false, 1024);
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
        let options = options(typed_schema(), false, 1024);
        let read = b"1.5,true,2026-11-24,2026-11-24T10:00:00Z\n-2e3,FALSE,2026-01-01,2026-11-24 10:00:00\n,,,\nNaN,True,1999-12-31,2026-11-24T10:00:00.123456+01:00\n";
        let batch = agrees_with_arrow_csv(&options, read).await.unwrap().unwrap();
        assert_eq!(batch.num_rows(), 4);
        assert_eq!(batch.column(3).null_count(), 1);
        for bad in [&b"abc,true,2026-11-24,2026-11-24T10:00:00Z\n"[..], b"1,yes,2026-11-24,2026-11-24T10:00:00Z\n", b"1,true,2026-13-24,2026-11-24T10:00:00Z\n", b"1,true,2026-11-24,tomorrow\n"] {
            assert!(agrees_with_arrow_csv(&options, bad).await.is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[tokio::test]
    async fn the_header_is_skipped_and_the_projection_kept() {
        let input = b"id,name,value,timestamp\n1,a,b,100\n2,\"c\nd\",e,200\n";
        agrees_with_arrow_csv(&options(events_schema(), true, 1024), input).await.unwrap();
        let projected = DecoderOptions { projection: vec![3, 1], ..options(events_schema(), true, 1024) };
        let batch = agrees_with_arrow_csv(&projected, input).await.unwrap().unwrap();
        assert_eq!(batch.schema().field(0).name(), "timestamp");
        assert_eq!(batch.num_rows(), 2);
        let quoted_header = b"\"id\",\"na\nme\",value,timestamp\r\n1,a,b,100\n";
        assert_eq!(agrees_with_arrow_csv(&projected, quoted_header).await.unwrap().unwrap().num_rows(), 1);
        // Headers are compared with the declared columns before any data is read
        // (`header::check`); the decoder skips the first record whatever its width.
        let wide_header = b"id,name,value,timestamp,extra,and,more\n1,a,b,100\n";
        assert_eq!(decode(&projected, wide_header, &[3]).await.unwrap().unwrap().num_rows(), 1);
    }

    #[tokio::test]
    async fn another_delimiter_and_quote() {
        let options = DecoderOptions { dialect: CsvDialect { has_header: false, delimiter: b';', quote: b'\'' }, ..options(events_schema(), false, 1024) };
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
        let options = options(events_schema(), false, 1024);
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

    #[test]
    fn integers_parse_as_arrow_parses_them() {
        let cases = [
            "0", "7", "007", "123456789012345678", "999999999999999999", "1234567890123456789", "9223372036854775807",
            "9223372036854775808", "-9223372036854775808", "-1", "+1", " 1", "1 ", "1a", "a1", "", "-", "+", "１", "1.0", "1e3",
        ];
        for case in cases {
            assert_eq!(parse_int64(case), Int64Type::parse(case), "{case:?}");
        }
    }

    #[tokio::test]
    async fn errors_name_the_object_row_and_column() {
        let options = options(events_schema(), false, 1024);
        let error = decode(&options, b"1,a,b,100\n2,a,b,x\n", &[]).await.unwrap_err();
        assert!(error.contains("test.csv: row 2: column \"timestamp\": \"x\" is not a valid Int64"), "{error}");
        let error = decode(&options, b"1,a,b,100\n2,a,b\n", &[]).await.unwrap_err();
        assert!(error.contains("test.csv: row 2: 3 fields, expected 4"), "{error}");
        let error = decode(&options, b"1,a,b,100\n2,\xff,b,1\n", &[]).await.unwrap_err();
        assert!(error.contains("test.csv: row 2: invalid UTF-8"), "{error}");
    }
}
