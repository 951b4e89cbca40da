//! Headers. With `csv.header`, every object's first record names its columns, and values are read
//! by name: an object whose header lists the declared columns in another order is read correctly,
//! and one whose header names other columns (or that has no header, so that its first row is
//! taken for one) is refused, naming the object, before any of its rows is read. Without declared
//! columns, the first object's header declares them, as text.

use std::io::Read;

use object_store::{GetOptions, GetRange};

use crate::error::Result;
use crate::spec::CsvOptions;
use crate::store::{SourceObject, Store};
use crate::csv::values::ColumnRule;

/// How much of an object is fetched to find its header line.
const HEADER_BYTES: u64 = 64 * 1024;

/// For each column, the index of the header field naming it (names compared trimmed and without
/// regard to ASCII letter case). The header must name every column once and nothing else.
pub fn field_of_column(header: &[String], columns: &[ColumnRule]) -> std::result::Result<Vec<usize>, String> {
    let names: Vec<&str> = header.iter().map(|name| name.trim()).collect();
    let declared: Vec<&str> = columns.iter().map(ColumnRule::name).collect();
    let position = |name: &str| names.iter().position(|found| found.eq_ignore_ascii_case(name));
    let order: Option<Vec<usize>> = declared.iter().map(|name| position(name)).collect();
    let repeated = names.iter().enumerate().any(|(at, name)| names[..at].iter().any(|earlier| earlier.eq_ignore_ascii_case(name)));
    match order {
        Some(order) if names.len() == declared.len() && !repeated => Ok(order),
        _ => Err(format!(
            "its header {names:?} does not name the columns {declared:?} (in any order, each once); is the header missing or \
             does the object hold other data?"
        )),
    }
}

/// The columns the first record of an object names, each as nullable text: the columns of a
/// pipeline that declares none. `None` for an empty object.
pub async fn columns_of(store: &Store, object: &SourceObject, csv: &CsvOptions) -> Result<Option<Vec<ColumnRule>>> {
    let path = &object.path;
    let options = GetOptions { range: Some(GetRange::Bounded(0..object.size.min(HEADER_BYTES))), ..object.read_options() };
    let head = match store.store.get_opts(path, options).await {
        Ok(result) => result.bytes().await.map_err(|e| store.error(path, e))?,
        Err(e) => return Err(store.error(path, e)),
    };
    let names = first_record(&head, object.gzip, csv);
    Ok(names.map(|names| names.iter().map(|name| ColumnRule::text(name.trim())).collect()))
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
        Ok(true) => Some(record.iter().map(|field| String::from_utf8_lossy(field).into_owned()).collect()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(text: &str) -> Vec<String> {
        text.split(',').map(str::to_string).collect()
    }

    #[test]
    fn columns_are_found_by_name_in_any_order() {
        let columns: Vec<ColumnRule> = ["id", "name", "value"].iter().map(|name| ColumnRule::text(name)).collect();
        assert_eq!(field_of_column(&names("id,name,value"), &columns), Ok(vec![0, 1, 2]));
        assert_eq!(field_of_column(&names(" VALUE ,id,Name"), &columns), Ok(vec![1, 2, 0]));
        for refused in ["id,name", "id,name,value,extra", "id,name,name", "1,a,b", "id,name,valu"] {
            let message = field_of_column(&names(refused), &columns).unwrap_err();
            assert!(message.contains("does not name the columns"), "{refused}: {message}");
        }
    }

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
