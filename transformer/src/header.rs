//! Header checks. Columns are read by position, so a file whose header names the declared columns
//! in another order would silently land values in the wrong columns. Before any data is read, the
//! header line of every object is compared with the declared column names.

use std::io::Read;

use object_store::ObjectStoreExt;

use crate::error::{Error, Result};
use crate::spec::{Column, CsvOptions};
use crate::storage::{SourceObject, Store};

/// How much of an object is fetched to find its header line.
const HEADER_BYTES: u64 = 64 * 1024;

/// Checks that every object's header names `columns` in order (ASCII case-insensitive). Empty
/// objects have no header and pass.
pub async fn check(store: &Store, objects: &[SourceObject], csv: &CsvOptions, columns: &[Column]) -> Result<()> {
    let checks = objects.iter().filter(|o| o.size > 0).map(|object| check_one(store, object, csv, columns));
    futures::future::try_join_all(checks).await.map(|_| ())
}

async fn check_one(store: &Store, object: &SourceObject, csv: &CsvOptions, columns: &[Column]) -> Result<()> {
    let path = &object.path;
    let head = store.store.get_range(path, 0..object.size.min(HEADER_BYTES)).await.map_err(|e| store.error(path, e))?;
    let gzip = object.gzip;
    let Some(header) = first_record(&head, gzip, csv) else { return Ok(()) };
    let matches = header.len() == columns.len()
        && header.iter().zip(columns).all(|(found, column)| found.eq_ignore_ascii_case(&column.name));
    if matches {
        return Ok(());
    }
    let declared: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
    Err(Error::Config(format!(
        "{} has the header {header:?} but source.schema declares {declared:?}; columns are read by position",
        store.url_of(path)
    )))
}

/// The first CSV record of the (possibly gzip-compressed, possibly truncated) bytes.
fn first_record(bytes: &[u8], gzip: bool, csv: &CsvOptions) -> Option<Vec<String>> {
    let mut text = Vec::new();
    if gzip {
        // A truncated stream decodes up to where it was cut, which is all a header needs.
        let _ = flate2::read::MultiGzDecoder::new(bytes).read_to_end(&mut text);
    } else {
        text.extend_from_slice(bytes);
    }
    let text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&text);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .delimiter(csv.delimiter.as_bytes()[0])
        .quote(csv.quote.as_bytes()[0])
        .flexible(true)
        .from_reader(text);
    let mut record = csv::ByteRecord::new();
    match reader.read_byte_record(&mut record) {
        Ok(true) => Some(record.iter().map(|field| String::from_utf8_lossy(field).trim().to_string()).collect()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_record_is_read_through_bom_quotes_and_gzip() {
        let csv = CsvOptions::default();
        assert_eq!(first_record(b"\xEF\xBB\xBFid,\"na,me\"\r\n1,2\r\n", false, &csv).unwrap(), ["id", "na,me"]);
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut encoder, b"a;b\n1;2\n").unwrap();
        let gz = encoder.finish().unwrap();
        let semicolon = CsvOptions { delimiter: ";".into(), ..CsvOptions::default() };
        assert_eq!(first_record(&gz[..gz.len() - 4], true, &semicolon).unwrap(), ["a", "b"]);
        assert_eq!(first_record(b"", false, &csv), None);
    }
}
