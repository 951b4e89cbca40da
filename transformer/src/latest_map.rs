//! The aggregate `latest_map(key, value, ordering)`: per group, a map from every key to the value of
//! its row with the greatest `ordering`; on a tie the greatest value wins (nulls lowest), so the
//! result never depends on row order. It is the "newest value of every setting per user" job in one
//! grouping pass:
//!
//! ```sql
//! SELECT id, latest_map(name, value, "timestamp") AS settings FROM events GROUP BY id
//! ```
//!
//! Keys and values are strings (other types are cast); the ordering is an integer or a timestamp.
//! Rows whose key or ordering is null are ignored. Map entries are sorted by key.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, Int64Builder, ListBuilder, MapBuilder, StringArray,
    StringBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Int64Type};
use datafusion::common::{HashMap, Result, exec_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};
use datafusion::scalar::ScalarValue;
use smallvec::SmallVec;

/// The function's SQL name.
pub const NAME: &str = "latest_map";

/// The aggregate, ready to register with a session.
pub fn udaf() -> AggregateUDF {
    AggregateUDF::from(LatestMap { signature: Signature::user_defined(Volatility::Immutable) })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct LatestMap {
    signature: Signature,
}

/// `Map<Utf8, Utf8>` as Arrow's map builder lays it out.
static MAP_TYPE: LazyLock<DataType> =
    LazyLock::new(|| MapBuilder::new(None, StringBuilder::new(), StringBuilder::new()).finish().data_type().clone());

impl AggregateUDFImpl for LatestMap {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        match arg_types {
            [_, _, ordering] if ordering.is_integer() || matches!(ordering, DataType::Timestamp(..) | DataType::Date32 | DataType::Date64) => {
                Ok(vec![DataType::Utf8, DataType::Utf8, DataType::Int64])
            }
            [_, _, ordering] => exec_err!("{NAME}: the ordering must be an integer or a timestamp, not {ordering}"),
            _ => exec_err!("{NAME} takes (key, value, ordering)"),
        }
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(MAP_TYPE.clone())
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let list = |name: &str, item: DataType| {
            let item = Field::new_list_field(item, true);
            Arc::new(Field::new(format!("{}[{name}]", args.name), DataType::List(Arc::new(item)), true))
        };
        Ok(vec![list("keys", DataType::Utf8), list("values", DataType::Utf8), list("orderings", DataType::Int64)])
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(SingleGroup(LatestGroups::default())))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(LatestGroups::default()))
    }
}

/// Strings stored once, referred to by index.
#[derive(Debug, Default)]
struct Interner {
    ids: HashMap<Box<str>, u32>,
    strings: Vec<Box<str>>,
    bytes: usize,
}

impl Interner {
    fn id(&mut self, text: &str) -> u32 {
        if let Some(id) = self.ids.get(text) {
            return *id;
        }
        let id = u32::try_from(self.strings.len()).expect("fewer than 2^32 distinct strings");
        self.strings.push(text.into());
        self.ids.insert(text.into(), id);
        self.bytes += 2 * text.len() + 48;
        id
    }

    fn text(&self, id: u32) -> &str {
        &self.strings[id as usize]
    }
}

/// One key's newest value in one group.
#[derive(Clone, Copy, Debug)]
struct Entry {
    key: u32,
    value: Option<u32>,
    ordering: i64,
}

/// A group's entries; most groups have a few keys, kept inline to spare an allocation and a
/// cache miss per row.
type Entries = SmallVec<[Entry; 4]>;

/// The state of every group.
#[derive(Debug, Default)]
struct LatestGroups {
    groups: Vec<Entries>,
    strings: Interner,
    entries: usize,
}

impl LatestGroups {
    /// Offers one row to a group: it wins if its ordering is greater, or equal with a greater value.
    fn offer(&mut self, group: usize, key: &str, value: Option<&str>, ordering: i64) {
        let key = self.strings.id(key);
        let entries = &mut self.groups[group];
        match entries.iter_mut().find(|entry| entry.key == key) {
            None => {
                let value = value.map(|v| self.strings.id(v));
                entries.push(Entry { key, value, ordering });
                self.entries += 1;
            }
            Some(entry) if ordering > entry.ordering => {
                entry.value = value.map(|v| self.strings.id(v));
                entry.ordering = ordering;
            }
            Some(entry) if ordering == entry.ordering => {
                let current = entry.value.map(|id| self.strings.text(id));
                if value > current {
                    entry.value = value.map(|v| self.strings.id(v));
                }
            }
            Some(_) => {}
        }
    }

    fn update(&mut self, columns: &[ArrayRef], group_of_row: impl Fn(usize) -> Option<usize>) -> Result<()> {
        let [keys, values, orderings] = columns else { return exec_err!("{NAME} takes three arguments") };
        let keys: &StringArray = keys.as_string::<i32>();
        let values: &StringArray = values.as_string::<i32>();
        let orderings: &Int64Array = orderings.as_primitive::<Int64Type>();
        for row in 0..keys.len() {
            let Some(group) = group_of_row(row) else { continue };
            if keys.is_null(row) || orderings.is_null(row) {
                continue;
            }
            let value = values.is_valid(row).then(|| values.value(row));
            self.offer(group, keys.value(row), value, orderings.value(row));
        }
        Ok(())
    }

    fn merge(&mut self, states: &[ArrayRef], group_of_row: impl Fn(usize) -> usize) -> Result<()> {
        let [keys, values, orderings] = states else { return exec_err!("{NAME} has three state columns") };
        let (keys, values, orderings) = (keys.as_list::<i32>(), values.as_list::<i32>(), orderings.as_list::<i32>());
        for row in 0..keys.len() {
            if keys.is_null(row) {
                continue;
            }
            let columns = [keys.value(row), values.value(row), orderings.value(row)];
            let group = group_of_row(row);
            self.update(&columns, |_| Some(group))?;
        }
        Ok(())
    }

    fn resize(&mut self, total_groups: usize) {
        if self.groups.len() < total_groups {
            self.groups.resize_with(total_groups, Entries::new);
        }
    }

    fn take(&mut self, emit_to: EmitTo) -> Vec<Entries> {
        let taken = emit_to.take_needed(&mut self.groups);
        self.entries -= taken.iter().map(|entries| entries.len()).sum::<usize>();
        taken
    }

    /// The groups as maps, entries sorted by key.
    fn evaluate_groups(&self, groups: Vec<Entries>) -> Result<ArrayRef> {
        let mut builder = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        for mut entries in groups {
            entries.sort_unstable_by(|a, b| self.strings.text(a.key).cmp(self.strings.text(b.key)));
            for entry in entries {
                builder.keys().append_value(self.strings.text(entry.key));
                builder.values().append_option(entry.value.map(|id| self.strings.text(id)));
            }
            builder.append(true)?;
        }
        Ok(Arc::new(builder.finish()))
    }

    /// The groups as the three list columns of the intermediate state.
    fn state_of_groups(&self, groups: Vec<Entries>) -> Vec<ArrayRef> {
        let mut keys = ListBuilder::new(StringBuilder::new());
        let mut values = ListBuilder::new(StringBuilder::new());
        let mut orderings = ListBuilder::new(Int64Builder::new());
        for entries in groups {
            for entry in entries {
                keys.values().append_value(self.strings.text(entry.key));
                values.values().append_option(entry.value.map(|id| self.strings.text(id)));
                orderings.values().append_value(entry.ordering);
            }
            keys.append(true);
            values.append(true);
            orderings.append(true);
        }
        vec![Arc::new(keys.finish()), Arc::new(values.finish()), Arc::new(orderings.finish())]
    }

    fn memory(&self) -> usize {
        self.groups.capacity() * size_of::<Entries>() + self.entries * size_of::<Entry>() + self.strings.bytes
    }
}

impl GroupsAccumulator for LatestGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.resize(total_num_groups);
        self.update(values, |row| selected(opt_filter, row).then(|| group_indices[row]))
    }

    /// Each row as its own group, for when the partial aggregation stops grouping.
    fn convert_to_state(&self, values: &[ArrayRef], opt_filter: Option<&BooleanArray>) -> Result<Vec<ArrayRef>> {
        let mut rows = LatestGroups::default();
        rows.resize(values.first().map_or(0, |column| column.len()));
        rows.update(values, |row| selected(opt_filter, row).then_some(row))?;
        let groups = rows.take(EmitTo::All);
        Ok(rows.state_of_groups(groups))
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let groups = self.take(emit_to);
        self.evaluate_groups(groups)
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let groups = self.take(emit_to);
        Ok(self.state_of_groups(groups))
    }

    fn merge_batch(&mut self, values: &[ArrayRef], group_indices: &[usize], total_num_groups: usize) -> Result<()> {
        self.resize(total_num_groups);
        self.merge(values, |row| group_indices[row])
    }

    fn size(&self) -> usize {
        self.memory()
    }
}

/// Whether a row passes the aggregate's FILTER clause.
fn selected(filter: Option<&BooleanArray>, row: usize) -> bool {
    filter.is_none_or(|filter| filter.is_valid(row) && filter.value(row))
}

/// The aggregate without GROUP BY: one group.
#[derive(Debug)]
struct SingleGroup(LatestGroups);

impl Accumulator for SingleGroup {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.0.resize(1);
        self.0.update(values, |_| Some(0))
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        self.0.resize(1);
        let groups = self.0.take(EmitTo::All);
        ScalarValue::try_from_array(&self.0.evaluate_groups(groups)?, 0)
    }

    fn size(&self) -> usize {
        size_of_val(self) + self.0.memory()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        self.0.resize(1);
        let groups = self.0.take(EmitTo::All);
        self.0.state_of_groups(groups).iter().map(|column| ScalarValue::try_from_array(column, 0)).collect()
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.0.resize(1);
        self.0.merge(states, |_| 0)
    }
}
