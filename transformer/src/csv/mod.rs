//! Reading CSV objects: the dialect, the header, the decoder that turns bytes into typed record
//! batches (every declared column parsed and checked, one rule for bad rows), the values and
//! timestamps it parses, the bad-row collector, and the DataFusion file source over it all.

pub mod bad_rows;
pub mod decoder;
pub mod dialect;
pub mod header;
pub mod source;
pub mod timestamps;
pub mod values;
