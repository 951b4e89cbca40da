//! The CSV decoder on arbitrary bytes, cut into pieces at points taken from the input, read
//! with a header and without, in both bad-row handlings. It must never panic, and the two
//! handlings must agree: refusing the object exactly when some row is set apart as bad, and
//! otherwise returning the same rows.

#![no_main]

use std::sync::Arc;

use bytes::Bytes;
use datafusion_datasource::decoder::{DecoderDeserializer, deserialize_stream};
use eventpipe_transformer::csv::bad_rows::BadRows;
use eventpipe_transformer::csv::decoder::{BadRowHandling, CsvDecoder, DecoderOptions};
use eventpipe_transformer::csv::dialect::CsvDialect;
use eventpipe_transformer::spec::{Column, ColumnType, TimestampUnit};
use futures::TryStreamExt;
use libfuzzer_sys::fuzz_target;

fn columns() -> Vec<Column> {
    let column = |name: &str, data_type, nullable, unit| Column { name: name.into(), data_type, nullable, unit, format: None };
    vec![
        column("id", ColumnType::Int64, false, None),
        column("name", ColumnType::String, true, None),
        column("day", ColumnType::Date, true, None),
        column("at", ColumnType::Timestamp, true, Some(TimestampUnit::Seconds)),
    ]
}

fuzz_target!(|data: &[u8]| {
    // The first bytes choose the dialect, the batch size and where the input is cut.
    let [flags, batch, cut_a, cut_b, rest @ ..] = data else { return };
    let options = DecoderOptions {
        columns: eventpipe_transformer::csv::values::rules(&columns()).unwrap(),
        projection: vec![0, 1, 2, 3],
        batch_size: usize::from(*batch % 8) + 1,
        dialect: CsvDialect { has_header: flags & 1 == 1, delimiter: b',', quote: b'"', max_row_bytes: 64 + usize::from(flags >> 1) * 8 },
    };
    let mut cuts = [usize::from(*cut_a) * rest.len() / 256, usize::from(*cut_b) * rest.len() / 256];
    cuts.sort();
    let pieces: Vec<Bytes> = [&rest[..cuts[0]], &rest[cuts[0]..cuts[1]], &rest[cuts[1]..]].iter().map(|piece| Bytes::copy_from_slice(piece)).collect();
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let decode = |handling: BadRowHandling| {
        let decoder = CsvDecoder::new(options.clone(), "fuzz.csv".into(), handling);
        let stream = deserialize_stream(futures::stream::iter(pieces.clone().into_iter().map(Ok)), DecoderDeserializer::new(decoder));
        runtime.block_on(stream.try_collect::<Vec<_>>()).map_err(|e| e.to_string())
    };
    let dir = tempfile::tempdir().unwrap();
    let bad = Arc::new(BadRows::create(&dir.path().join("bad.jsonl")).unwrap());
    let separated = decode(BadRowHandling::Separate(Arc::clone(&bad)));
    let refused = decode(BadRowHandling::Refuse);
    match (&refused, &separated) {
        (Ok(strict), Ok(lenient)) => {
            assert_eq!(bad.count(), 0, "a bad row set apart, but none refused");
            assert_eq!(strict, lenient);
        }
        (Err(_), Ok(_)) => assert!(bad.count() > 0, "refused, but no bad row set apart: {refused:?}"),
        // A header that does not name the columns stops both.
        (Err(strict), Err(lenient)) => assert_eq!(strict, lenient),
        (Ok(_), Err(lenient)) => panic!("read strictly, but failed setting bad rows apart: {lenient}"),
    }
});
