//! Finds the partitions under a source: lists the objects below the source URL and groups those
//! that sit directly inside a directory matching the layout.

use std::collections::BTreeMap;

use object_store::ObjectMeta;

use crate::error::{Error, Result};
use crate::layout::{Layout, PartitionKey};
use crate::storage::{Location, Store};
use crate::task::InputObject;

/// The partitions found, oldest first, each with its input objects sorted by path.
pub type Partitions = BTreeMap<PartitionKey, Vec<InputObject>>;

/// Lists the source and groups its objects into partitions. A local source must be an existing
/// directory.
pub async fn discover(source: &Store, layout: &Layout) -> Result<Partitions> {
    if let Location::Local(dir) = &source.location
        && !dir.is_dir()
    {
        return Err(Error::Config(format!("source directory {} does not exist", dir.display())));
    }
    let objects = source.list("").await?;
    Ok(group(source, layout, &objects))
}

/// Groups listed objects into partitions by the layout; objects outside partitions are ignored.
pub fn group(source: &Store, layout: &Layout, objects: &[ObjectMeta]) -> Partitions {
    let mut partitions = Partitions::new();
    for object in objects {
        let relative = source.relative(&object.location);
        if let Some(key) = layout.partition_of(relative) {
            partitions.entry(key).or_default().push(InputObject {
                path: relative.to_string(),
                size: object.size,
                etag: object.e_tag.clone().or_else(|| Some(object.last_modified.to_rfc3339())),
            });
        }
    }
    for inputs in partitions.values_mut() {
        inputs.sort();
    }
    partitions
}
