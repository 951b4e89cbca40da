//! Finds the partitions under a source: lists the objects below the source URL (or below some
//! prefixes of it) and groups those that sit directly inside a directory matching the layout.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use object_store::ObjectMeta;

use crate::error::{Error, Result};
use crate::layout::{Layout, PartitionKey};
use crate::store::{Location, Store};
use crate::task::InputObject;

/// The partitions found, oldest first.
pub type Partitions = BTreeMap<PartitionKey, DiscoveredPartition>;

/// One partition's input objects.
#[derive(Clone, Debug, PartialEq)]
pub struct DiscoveredPartition {
    /// The input objects, sorted by path.
    pub inputs: Vec<InputObject>,
    /// When each input object was last modified, in the order of `inputs`.
    pub modified: Vec<DateTime<Utc>>,
}

impl DiscoveredPartition {
    /// The objects last modified at or before `cutoff`, or `None` when there are none.
    pub fn settled(&self, cutoff: DateTime<Utc>) -> Option<DiscoveredPartition> {
        let (inputs, modified): (Vec<_>, Vec<_>) =
            self.inputs.iter().zip(&self.modified).filter(|(_, modified)| **modified <= cutoff).map(|(i, m)| (i.clone(), *m)).unzip();
        (!inputs.is_empty()).then_some(DiscoveredPartition { inputs, modified })
    }
}

/// Lists the whole source and groups its objects into partitions. A local source must be an
/// existing directory.
pub async fn discover(source: &Store, layout: &Layout) -> Result<Partitions> {
    discover_below(source, layout, &[String::new()]).await
}

/// Lists the source below each of `prefixes` (relative to the source URL, each a directory or
/// empty for all of it) and groups the objects into partitions. A local source must be an existing
/// directory.
pub async fn discover_below(source: &Store, layout: &Layout, prefixes: &[String]) -> Result<Partitions> {
    if let Location::Local(dir) = &source.location
        && !dir.is_dir()
    {
        return Err(Error::Config(format!("source directory {} does not exist", dir.display())));
    }
    let mut objects = Vec::new();
    for prefix in prefixes {
        objects.extend(source.list(prefix).await?);
    }
    Ok(group(source, layout, &objects))
}

/// Groups listed objects into partitions by the layout; objects outside partitions are ignored.
pub fn group(source: &Store, layout: &Layout, objects: &[ObjectMeta]) -> Partitions {
    let mut listed: BTreeMap<PartitionKey, BTreeMap<InputObject, DateTime<Utc>>> = BTreeMap::new();
    for object in objects {
        let relative = source.relative(&object.location);
        if let Some(key) = layout.partition_of(relative) {
            let input = InputObject {
                path: relative.to_string(),
                size: object.size,
                etag: object.e_tag.clone(),
                modified: object.e_tag.is_none().then(|| object.last_modified.to_rfc3339()),
            };
            listed.entry(key).or_default().insert(input, object.last_modified);
        }
    }
    listed
        .into_iter()
        .map(|(key, objects)| {
            let (inputs, modified) = objects.into_iter().unzip();
            (key, DiscoveredPartition { inputs, modified })
        })
        .collect()
}
