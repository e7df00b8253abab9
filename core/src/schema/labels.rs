//! The label column: which raw label values mean benign, which attack class
//! each listed value belongs to, which rows to skip (`skip`), and what a value
//! the schema does not list means (`unlisted_labels`).
//!
//! A label column may name a `class_column`: then its own value says only
//! benign, attack (`attack`) or skip, and the class of an attack comes from
//! the other column's value (IoT-23 writes `Malicious` in `label` and `DDoS`
//! in `detailed-label`). A class-column value no class lists is the last class.
//!
//! Class indices are fixed by the schema, never by the data: 0 is benign, then
//! the declared classes in declaration order, then `other_attack` (or, without
//! declared classes, 1 = `attack`). So every participant numbers classes the
//! same way, and the last class exists whatever `unlisted_labels` says.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Name of the benign class; class index 0 is always benign.
pub const BENIGN_CLASS: &str = "benign";

/// Name of the last class when attack classes are declared: attacks whose label
/// value no declared class lists (with `unlisted_labels = "attack"`).
pub const OTHER_ATTACK_CLASS: &str = "other_attack";

/// Name of class 1 when no attack classes are declared (binary labels).
pub const ATTACK_CLASS: &str = "attack";

/// What the loader does with a row whose label value neither `benign` nor
/// `classes` lists: the label column's `unlisted_labels` key.
///
/// The default is [`UnlistedLabels::Error`]: a value nobody listed usually
/// means the schema does not describe the file (a differently spelled
/// `Normal`, KDD Cup 99's `normal.`, a `Background` class), and counting it
/// silently as an attack would train on wrong labels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnlistedLabels {
    /// The load fails, naming the value, the file and the line.
    #[default]
    Error,
    /// The row is an attack of the last class (`other_attack`, or `attack`
    /// for binary labels).
    Attack,
    /// The row is benign.
    Benign,
    /// The row is skipped and counted in the load report.
    Skip,
}

impl UnlistedLabels {
    /// Returns the policy's name as a schema writes it.
    pub fn name(self) -> &'static str {
        match self {
            UnlistedLabels::Error => "error",
            UnlistedLabels::Attack => "attack",
            UnlistedLabels::Benign => "benign",
            UnlistedLabels::Skip => "skip",
        }
    }
}

/// What one raw label value means under the schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LabelClass {
    /// The row's class: 0 = benign, then the schema's attack classes.
    Class(u32),
    /// The schema does not list the value and says to skip such rows.
    UnlistedSkip,
    /// The label column's `skip` lists the value: the row is left out.
    Skipped,
    /// The schema does not list the value and says that is an error.
    UnlistedError,
}

/// The label of a featurized record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelInfo<'a> {
    /// What the value means under the schema.
    pub class: LabelClass,
    /// The label value as it appeared in the record (trimmed).
    pub raw_label: Cow<'a, str>,
}

impl LabelInfo<'_> {
    /// Returns the label with an owned raw label, detached from the record.
    pub fn into_owned(self) -> LabelInfo<'static> {
        LabelInfo {
            class: self.class,
            raw_label: Cow::Owned(self.raw_label.into_owned()),
        }
    }
}

/// Attack classes in declaration order: class name → raw label values.
///
/// A plain map would lose the order (class indices depend on it), so this
/// (de)serializes a TOML table entry by entry.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct ClassTable(Vec<(String, Vec<String>)>);

impl Serialize for ClassTable {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (class_name, values) in &self.0 {
            map.serialize_entry(class_name, values)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for ClassTable {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ClassTableVisitor;
        impl<'de> Visitor<'de> for ClassTableVisitor {
            type Value = ClassTable;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a table of class name = [label values]")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ClassTable, A::Error> {
                let mut classes = Vec::new();
                while let Some((class_name, values)) = map.next_entry::<String, Vec<String>>()? {
                    classes.push((class_name, values));
                }
                Ok(ClassTable(classes))
            }
        }
        deserializer.deserialize_map(ClassTableVisitor)
    }
}

/// How label values map to class indices.
#[derive(Clone, Debug)]
pub(super) struct LabelMapping {
    /// Index of the label column among the schema's columns.
    pub(super) column_index: usize,
    /// Every listed value (benign and declared classes) → its class index.
    class_of_value: HashMap<String, u32>,
    /// The last class: `other_attack`, or `attack` for binary labels.
    last_attack_class: u32,
    /// What values that nothing lists mean.
    unlisted: UnlistedLabels,
    pub(super) class_names: Vec<String>,
    /// Label values whose rows are skipped.
    skip: HashSet<String>,
    /// With a class column: label values that mean an attack, whose class
    /// the class column's value picks.
    attack_by_class_column: HashSet<String>,
    /// The class column's name (its index is set by the caller, once every
    /// column is known) and class-column value → class index.
    pub(super) class_column: Option<ClassColumn>,
}

/// The column whose value picks an attack's class.
#[derive(Clone, Debug)]
pub(super) struct ClassColumn {
    pub(super) name: String,
    pub(super) column_index: usize,
    class_of_value: HashMap<String, u32>,
}

impl LabelMapping {
    /// Returns what `raw_label` (trimmed) means; `class_value` is the class
    /// column's value, when the label column names one and the record has it.
    pub(super) fn class_of(&self, raw_label: &str, class_value: Option<&str>) -> LabelClass {
        if let Some(&class) = self.class_of_value.get(raw_label) {
            return LabelClass::Class(class);
        }
        if self.skip.contains(raw_label) {
            return LabelClass::Skipped;
        }
        if let Some(class_column) = &self.class_column
            && self.attack_by_class_column.contains(raw_label)
        {
            let class = class_value
                .and_then(|value| class_column.class_of_value.get(value.trim()))
                .copied()
                .unwrap_or(self.last_attack_class);
            return LabelClass::Class(class);
        }
        match self.unlisted {
            UnlistedLabels::Error => LabelClass::UnlistedError,
            UnlistedLabels::Attack => LabelClass::Class(self.last_attack_class),
            UnlistedLabels::Benign => LabelClass::Class(0),
            UnlistedLabels::Skip => LabelClass::UnlistedSkip,
        }
    }

    pub(super) fn unlisted(&self) -> UnlistedLabels {
        self.unlisted
    }
}

/// A label column's keys as written.
pub(super) struct LabelKeys<'a> {
    pub(super) benign: Option<&'a [String]>,
    pub(super) classes: Option<&'a ClassTable>,
    pub(super) unlisted: Option<UnlistedLabels>,
    pub(super) attack: Option<&'a [String]>,
    pub(super) skip: Option<&'a [String]>,
    pub(super) class_column: Option<&'a str>,
}

/// Validates a label column's keys, appending problems prefixed with `path`.
/// The mapping's `column_index` and its class column's index are left at 0
/// for the caller to set.
pub(super) fn validate_label(
    keys: LabelKeys<'_>,
    path: &str,
    problems: &mut Vec<String>,
) -> LabelMapping {
    let LabelKeys {
        benign,
        classes,
        unlisted,
        attack,
        skip,
        class_column,
    } = keys;
    // Every value listed in `benign`, `skip`, `attack` and (without a class
    // column) `classes` → where it was first listed, for duplicate reports.
    let mut listed_in: HashMap<String, String> = HashMap::new();
    // Class-column values listed in `classes`, checked apart: they are
    // values of another column.
    let mut listed_class_values: HashMap<String, String> = HashMap::new();
    let is_new = |listed: &mut HashMap<String, String>,
                  noun: &str,
                  value: &String,
                  key: String,
                  problems: &mut Vec<String>| {
        if value.trim().is_empty() || value.trim() != value {
            problems.push(format!(
                "{path}.{key}: {value:?} is empty or has surrounding whitespace, and no trimmed field can match it"
            ));
            false
        } else if let Some(first_key) = listed.get(value) {
            problems.push(format!(
                "{path}.{key}: {noun} {value:?} is already listed in {first_key}"
            ));
            false
        } else {
            listed.insert(value.clone(), key);
            true
        }
    };
    let mut class_of_value: HashMap<String, u32> = HashMap::new();
    match benign {
        Some(benign) if !benign.is_empty() => {
            for value in benign {
                if is_new(
                    &mut listed_in,
                    "label value",
                    value,
                    "benign".to_string(),
                    problems,
                ) {
                    class_of_value.insert(value.clone(), 0);
                }
            }
        }
        _ => problems.push(format!(
            "{path}: benign must list at least one label value that means benign"
        )),
    }
    let mut skip_values = HashSet::new();
    for value in skip.unwrap_or_default() {
        if is_new(
            &mut listed_in,
            "label value",
            value,
            "skip".to_string(),
            problems,
        ) {
            skip_values.insert(value.clone());
        }
    }
    let mut class_names = vec![BENIGN_CLASS.to_string()];
    let mut class_of_class_value: HashMap<String, u32> = HashMap::new();
    let last_attack_class = match classes {
        None => {
            class_names.push(ATTACK_CLASS.to_string());
            1
        }
        Some(ClassTable(classes)) => {
            if classes.is_empty() {
                problems.push(format!(
                    "{path}.classes: the table is empty; leave it out for binary labels"
                ));
            }
            for (class_name, values) in classes {
                let class_path = format!("classes.{class_name}");
                if class_name.trim().is_empty() {
                    problems.push(format!("{path}.classes: a class name is empty"));
                } else if class_name == BENIGN_CLASS || class_name == OTHER_ATTACK_CLASS {
                    problems.push(format!(
                        "{path}.{class_path}: the class name {class_name:?} is reserved"
                    ));
                }
                if values.is_empty() {
                    problems.push(format!("{path}.{class_path}: lists no label values"));
                }
                let class = class_names.len() as u32;
                for value in values {
                    if class_column.is_some() {
                        if is_new(
                            &mut listed_class_values,
                            "class-column value",
                            value,
                            class_path.clone(),
                            problems,
                        ) {
                            class_of_class_value.insert(value.clone(), class);
                        }
                    } else if is_new(
                        &mut listed_in,
                        "label value",
                        value,
                        class_path.clone(),
                        problems,
                    ) {
                        class_of_value.insert(value.clone(), class);
                    }
                }
                class_names.push(class_name.clone());
            }
            class_names.push(OTHER_ATTACK_CLASS.to_string());
            (class_names.len() - 1) as u32
        }
    };
    // Without a class column, `attack` values are the last class; with one,
    // the class column picks their class.
    let mut attack_by_class_column = HashSet::new();
    for value in attack.unwrap_or_default() {
        if is_new(
            &mut listed_in,
            "label value",
            value,
            "attack".to_string(),
            problems,
        ) {
            if class_column.is_some() {
                attack_by_class_column.insert(value.clone());
            } else {
                class_of_value.insert(value.clone(), last_attack_class);
            }
        }
    }
    let class_column = class_column.map(|name| {
        if attack.is_none_or(|attack| attack.is_empty()) {
            problems.push(format!(
                "{path}.class_column: needs attack, the label values whose class {name:?} picks"
            ));
        }
        ClassColumn {
            name: name.to_string(),
            column_index: 0,
            class_of_value: class_of_class_value,
        }
    });
    LabelMapping {
        column_index: 0,
        class_of_value,
        last_attack_class,
        unlisted: unlisted.unwrap_or_default(),
        class_names,
        skip: skip_values,
        attack_by_class_column,
        class_column,
    }
}
