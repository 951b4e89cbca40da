//! How a pipeline's CSV objects are written: header, delimiter, quote and the longest row; shared
//! by the decoder and by the bad-row collector, which writes rows back as text in it.

use crate::spec::CsvOptions;

/// How CSV objects are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CsvDialect {
    /// Whether each object starts with a header record naming its columns.
    pub has_header: bool,
    /// Field delimiter.
    pub delimiter: u8,
    /// Quote character.
    pub quote: u8,
    /// The longest row read, in bytes; a longer one is bad.
    pub max_row_bytes: usize,
}

impl From<&CsvOptions> for CsvDialect {
    /// The dialect of a pipeline's CSV options, whose delimiter and quote are single ASCII
    /// characters (checked when the spec is validated).
    fn from(csv: &CsvOptions) -> Self {
        Self {
            has_header: csv.header,
            delimiter: csv.delimiter.as_bytes()[0],
            quote: csv.quote.as_bytes()[0],
            max_row_bytes: csv.max_row_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dialect_follows_the_csv_options() {
        let dialect = CsvDialect::from(&CsvOptions { delimiter: ";".into(), max_row_bytes: Some(2048), ..CsvOptions::default() });
        assert_eq!(dialect, CsvDialect { has_header: true, delimiter: b';', quote: b'"', max_row_bytes: 2048 });
    }
}
