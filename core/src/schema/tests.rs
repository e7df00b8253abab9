use super::*;
use csv::StringRecord;
use proptest::prelude::*;

fn csv_record(fields: &[&str]) -> StringRecord {
    StringRecord::from(fields.to_vec())
}

fn json_object(text: &str) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::from_str(text).unwrap() {
        serde_json::Value::Object(object) => object,
        other => panic!("not an object: {other}"),
    }
}

fn problems_of(text: &str) -> Vec<String> {
    match Schema::from_toml_str(text) {
        Err(SchemaError::Invalid { problems, .. }) => problems,
        other => panic!("expected validation problems, got {other:?}"),
    }
}

/// Returns the text of a schema with one numeric column `name` under
/// `transforms` and a label column.
fn numeric_schema_text(name: &str, transforms: &str) -> String {
    format!(
        r#"
        [[columns]]
        name = "{name}"
        kind = "numeric"
        transforms = {transforms}
        [[columns]]
        name = "label"
        kind = "label"
        benign = ["ok"]
        "#
    )
}

fn numeric_schema(transforms: &str) -> Schema {
    Schema::from_toml_str(&numeric_schema_text("x", transforms)).unwrap()
}

/// Transforms that bound a test column without changing the values tests use.
const WIDE_CLAMP: &str = "[{ clamp = { min = -1e6, max = 1e6 } }]";

fn featurize_one(schema: &Schema, value: &str) -> Result<f32, String> {
    let record = csv_record(&[value, "ok"]);
    let (features, _) = schema.featurize(&RecordFields::CsvPositional(&record))?;
    Ok(features[0])
}

fn assert_close(actual: f32, expected: f64) {
    assert!(
        (f64::from(actual) - expected).abs() < 1e-6,
        "expected {expected}, got {actual}"
    );
}

#[test]
fn vocabulary_one_hot_uses_the_other_slot_for_unseen_values() {
    let schema = Schema::for_test();
    let tcp = csv_record(&["0", "tcp", "80", "ok"]);
    let udp = csv_record(&["0", "udp", "80", "ok"]);
    let sctp = csv_record(&["0", "sctp", "80", "ok"]);
    let slots = |record: &StringRecord| {
        let (features, _) = schema
            .featurize(&RecordFields::CsvPositional(record))
            .unwrap();
        features[1..4].to_vec()
    };
    assert_eq!(slots(&tcp), vec![1.0, 0.0, 0.0]);
    assert_eq!(slots(&udp), vec![0.0, 1.0, 0.0]);
    assert_eq!(slots(&sctp), vec![0.0, 0.0, 1.0]);
}

#[test]
fn feature_and_class_names_follow_the_columns() {
    let schema = Schema::for_test();
    let names = schema.feature_names();
    assert_eq!(names.len(), schema.num_features());
    assert_eq!(schema.num_features(), 1 + 3 + 8);
    assert_eq!(
        &names[..5],
        ["bytes", "proto=tcp", "proto=udp", "proto=<other>", "port#0"]
    );
    assert_eq!(names[11], "port#7");
    assert_eq!(
        schema.class_names(),
        ["benign", "scan", "flood", "other_attack"]
    );
    assert_eq!(schema.num_classes(), 4);
    assert_eq!(schema.class_of_label("ok"), LabelClass::Class(0));
    assert_eq!(schema.class_of_label("portscan"), LabelClass::Class(1));
    assert_eq!(schema.class_of_label("synflood"), LabelClass::Class(2));
    assert_eq!(schema.class_of_label("worm"), LabelClass::UnlistedError);
}

#[test]
fn labels_without_declared_classes_are_binary() {
    let schema = numeric_schema(WIDE_CLAMP);
    assert_eq!(schema.class_names(), ["benign", "attack"]);
    assert_eq!(schema.class_of_label("ok"), LabelClass::Class(0));
    assert_eq!(schema.class_of_label("anything"), LabelClass::UnlistedError);
    let attack_schema = Schema::from_toml_str(&format!(
        "{}unlisted_labels = \"attack\"\n",
        numeric_schema_text("x", WIDE_CLAMP)
    ))
    .unwrap();
    assert_eq!(
        attack_schema.class_of_label("anything"),
        LabelClass::Class(1)
    );
}

/// Returns [`Schema::for_test`] with `unlisted_labels` set to `policy`.
fn test_schema_with_unlisted_labels(policy: &str) -> Schema {
    let text = Schema::for_test().to_toml_string().replace(
        "benign = [\"ok\"]",
        &format!("benign = [\"ok\"]\nunlisted_labels = \"{policy}\""),
    );
    Schema::from_toml_str(&text).unwrap()
}

#[test]
fn unlisted_label_values_mean_what_the_schema_says() {
    for (policy, expected) in [
        ("error", LabelClass::UnlistedError),
        ("attack", LabelClass::Class(3)),
        ("benign", LabelClass::Class(0)),
        ("skip", LabelClass::UnlistedSkip),
    ] {
        let schema = test_schema_with_unlisted_labels(policy);
        assert_eq!(schema.unlisted_labels().name(), policy);
        assert_eq!(schema.class_of_label("worm"), expected, "{policy}");
        // Listed values keep their classes under every policy, and the
        // class names (the model's outputs) do not depend on it.
        assert_eq!(schema.class_of_label("ok"), LabelClass::Class(0));
        assert_eq!(schema.class_of_label("synflood"), LabelClass::Class(2));
        assert_eq!(
            schema.class_names(),
            ["benign", "scan", "flood", "other_attack"]
        );
        let record = csv_record(&["1", "tcp", "80", "worm"]);
        let (_, label) = schema
            .featurize(&RecordFields::CsvPositional(&record))
            .unwrap();
        assert_eq!(label.unwrap().class, expected, "{policy}");
    }
    assert_eq!(Schema::for_test().unlisted_labels(), UnlistedLabels::Error);
}

#[test]
fn unlisted_labels_is_written_only_when_not_the_default() {
    let implicit = Schema::for_test();
    let explicit = test_schema_with_unlisted_labels("error");
    assert_eq!(explicit.to_toml_string(), implicit.to_toml_string());
    assert_eq!(explicit.sha256(), implicit.sha256());
    assert!(!implicit.to_toml_string().contains("unlisted_labels"));
    let skip = test_schema_with_unlisted_labels("skip");
    assert!(
        skip.to_toml_string().contains("unlisted_labels = \"skip\""),
        "{}",
        skip.to_toml_string()
    );
    assert_ne!(skip.sha256(), implicit.sha256());
    assert_eq!(Schema::from_toml_str(&skip.to_toml_string()).unwrap(), skip);
}

#[test]
fn unlisted_labels_takes_one_of_four_values_and_only_on_the_label() {
    let error = Schema::from_toml_str(&format!(
        "{}unlisted_labels = \"maybe\"\n",
        numeric_schema_text("x", WIDE_CLAMP)
    ))
    .unwrap_err()
    .to_string();
    assert!(error.contains("unknown variant `maybe`"), "{error}");
    assert!(
        error.contains("`error`, `attack`, `benign`, `skip`"),
        "{error}"
    );
    let misplaced = format!(
        "[[columns]]\nname = \"x\"\nkind = \"numeric\"\ntransforms = {WIDE_CLAMP}\nunlisted_labels = \"skip\"\n[[columns]]\nname = \"label\"\nkind = \"label\"\nbenign = [\"ok\"]\n"
    );
    assert_eq!(
        problems_of(&misplaced),
        ["columns[0] (\"x\"): key \"unlisted_labels\" does not apply to kind \"numeric\""]
    );
}

#[test]
fn classes_are_numbered_in_declaration_order_not_alphabetically() {
    let schema = Schema::from_toml_str(
        r#"
        [[columns]]
        name = "x"
        kind = "numeric"
        transforms = [{ clamp = { min = 0.0, max = 1.0 } }]
        [[columns]]
        name = "label"
        kind = "label"
        benign = ["normal"]
        [columns.classes]
        zeta = ["z"]
        alpha = ["a"]
        "#,
    )
    .unwrap();
    assert_eq!(
        schema.class_names(),
        ["benign", "zeta", "alpha", "other_attack"]
    );
    assert_eq!(schema.class_of_label("z"), LabelClass::Class(1));
    assert_eq!(schema.class_of_label("a"), LabelClass::Class(2));
}

#[test]
fn fnv1a_matches_the_published_test_vectors() {
    assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
}

#[test]
fn hashing_is_stable_and_in_range() {
    // Pinned values: a change here changes every model trained on hashed columns.
    assert_eq!(hash_bucket("http", 64), (fnv1a_64(b"http") % 64) as u32);
    assert_eq!(hash_bucket("a", 8), (0xaf63_dc4c_8601_ec8c_u64 % 8) as u32);
    for value in ["", "http", "ftp_data", "443", "ünïcode"] {
        for num_buckets in [1, 2, 7, 64, 65_536] {
            let bucket = hash_bucket(value, num_buckets);
            assert!(bucket < num_buckets);
            assert_eq!(bucket, hash_bucket(value, num_buckets));
        }
    }
    let schema = Schema::for_test();
    let record = csv_record(&["0", "tcp", "8080", "ok"]);
    let (features, _) = schema
        .featurize(&RecordFields::CsvPositional(&record))
        .unwrap();
    let hashed = &features[4..12];
    assert_eq!(hashed.iter().sum::<f32>(), 1.0);
    assert_eq!(hashed[hash_bucket("8080", 8) as usize], 1.0);
}

#[test]
fn log1p_transform_matches_hand_computed_values() {
    let schema = numeric_schema(r#"["log1p", { clamp = { min = -1e6, max = 1e6 } }]"#);
    assert_close(featurize_one(&schema, "0").unwrap(), 0.0);
    assert_close(featurize_one(&schema, "1").unwrap(), std::f64::consts::LN_2);
    assert_close(featurize_one(&schema, "9").unwrap(), 10f64.ln());
    assert!(
        featurize_one(&schema, "-1")
            .unwrap_err()
            .contains("after the transforms")
    );
}

#[test]
fn clamp_transform_limits_values() {
    let schema = numeric_schema("[{ clamp = { min = -1.0, max = 2.5 } }]");
    assert_close(featurize_one(&schema, "-7").unwrap(), -1.0);
    assert_close(featurize_one(&schema, "1.25").unwrap(), 1.25);
    assert_close(featurize_one(&schema, "1e9").unwrap(), 2.5);
}

#[test]
fn scale_transform_subtracts_the_offset_then_divides() {
    let schema = numeric_schema(
        "[{ clamp = { min = -1e5, max = 1e5 } }, { scale = { offset = 2.0, divisor = 4.0 } }]",
    );
    assert_close(featurize_one(&schema, "10").unwrap(), 2.0);
    assert_close(featurize_one(&schema, "0").unwrap(), -0.5);
    let without_offset =
        numeric_schema("[{ clamp = { min = -1e5, max = 1e5 } }, { scale = { divisor = 8 } }]");
    assert_close(featurize_one(&without_offset, "2").unwrap(), 0.25);
}

#[test]
fn standardize_transform_uses_the_declared_statistics() {
    let schema = numeric_schema(
        "[{ clamp = { min = -1e5, max = 1e5 } }, { standardize = { mean = 1.2, std = 3.4 } }]",
    );
    assert_close(featurize_one(&schema, "1.2").unwrap(), 0.0);
    assert_close(featurize_one(&schema, "4.6").unwrap(), 1.0);
    assert_close(featurize_one(&schema, "-5.6").unwrap(), -2.0);
}

#[test]
fn transforms_run_in_declared_order() {
    let schema = numeric_schema(
        r#"["log1p", { clamp = { min = 0.0, max = 2.0 } }, { scale = { offset = 0.0, divisor = 4.0 } }]"#,
    );
    assert_close(
        featurize_one(&schema, "1").unwrap(),
        std::f64::consts::LN_2 / 4.0,
    );
    assert_close(featurize_one(&schema, "1000").unwrap(), 0.5);
}

#[test]
fn numeric_fields_that_are_not_finite_numbers_are_refused() {
    let schema = numeric_schema(WIDE_CLAMP);
    assert!(
        featurize_one(&schema, "abc")
            .unwrap_err()
            .contains("\"abc\" is not a number")
    );
    assert!(
        featurize_one(&schema, "NaN")
            .unwrap_err()
            .contains("not a finite number")
    );
    assert!(
        featurize_one(&schema, "inf")
            .unwrap_err()
            .contains("not a finite number")
    );
    assert!(
        featurize_one(&schema, "1e400")
            .unwrap_err()
            .contains("not a finite number")
    );
    assert!(
        featurize_one(&schema, "")
            .unwrap_err()
            .contains("no missing value")
    );
    assert_close(featurize_one(&schema, " 2.5 ").unwrap(), 2.5);
}

#[test]
fn missing_values_fill_empty_fields_before_the_transforms() {
    let schema = Schema::from_toml_str(
        r#"
        [[columns]]
        name = "x"
        kind = "numeric"
        transforms = [{ clamp = { min = 0.0, max = 10.0 } }, { scale = { offset = 0.0, divisor = 2.0 } }]
        missing = 3
        [[columns]]
        name = "proto"
        kind = "categorical"
        vocabulary = ["tcp"]
        missing = "tcp"
        [[columns]]
        name = "label"
        kind = "label"
        benign = ["ok"]
        "#,
    )
    .unwrap();
    let record = csv_record(&["", "  ", "ok"]);
    let (features, _) = schema
        .featurize(&RecordFields::CsvPositional(&record))
        .unwrap();
    assert_eq!(features, vec![1.5, 1.0, 0.0]);
}

#[test]
fn positional_rows_must_have_one_field_per_column() {
    let schema = Schema::for_test();
    let record = csv_record(&["1", "tcp", "80"]);
    let reason = schema
        .featurize(&RecordFields::CsvPositional(&record))
        .unwrap_err();
    assert_eq!(
        reason,
        "row has 3 fields, the schema expects 4 (one per column)"
    );
}

#[test]
fn header_rows_are_matched_by_name_in_any_order() {
    let schema = Schema::for_test();
    let header = csv_record(&["label", "extra", "port", "proto", "bytes"]);
    let positions = schema.header_positions(&header, true).unwrap();
    let record = csv_record(&["portscan", "zzz", "22", "udp", "1"]);
    let fields = RecordFields::CsvWithHeader {
        record: &record,
        header: &positions,
    };
    let (features, label) = schema.featurize(&fields).unwrap();
    assert_close(features[0], std::f64::consts::LN_2);
    assert_eq!(&features[1..4], &[0.0, 1.0, 0.0]);
    let label = label.unwrap();
    assert_eq!(
        (label.class, label.raw_label.as_ref()),
        (LabelClass::Class(1), "portscan")
    );
}

#[test]
fn a_header_without_a_feature_column_is_refused_naming_it() {
    let schema = Schema::for_test();
    let header = csv_record(&["bytes", "label"]);
    let mismatch = schema.header_positions(&header, false).unwrap_err();
    assert_eq!(mismatch.missing_columns, ["proto", "port"]);
    assert_eq!(
        mismatch.to_string(),
        "the header has no column named \"proto\", \"port\""
    );
}

#[test]
fn a_header_without_a_column_that_has_a_missing_value_is_refused() {
    let schema = Schema::from_toml_str(
        r#"
        [[columns]]
        name = "bytes"
        kind = "numeric"
        transforms = [{ clamp = { min = 0.0, max = 10.0 } }]
        missing = 0
        [[columns]]
        name = "proto"
        kind = "categorical"
        vocabulary = ["tcp"]
        missing = "tcp"
        [[columns]]
        name = "notes"
        kind = "ignore"
        [[columns]]
        name = "label"
        kind = "label"
        benign = ["ok"]
        "#,
    )
    .unwrap();
    let header = csv_record(&["label"]);
    let mismatch = schema.header_positions(&header, true).unwrap_err();
    assert_eq!(mismatch.missing_columns, ["bytes", "proto"]);
    // An ignored column may be absent; every other column is needed.
    let without_notes = csv_record(&["proto", "bytes", "label"]);
    assert!(schema.header_positions(&without_notes, true).is_ok());
    assert_eq!(
        schema.columns_required_in_input(true),
        ["bytes", "proto", "label"]
    );
    assert_eq!(schema.columns_required_in_input(false), ["bytes", "proto"]);
}

#[test]
fn a_header_without_the_label_gives_unlabelled_rows_unless_labels_are_required() {
    let schema = Schema::for_test();
    let header = csv_record(&["bytes", "proto", "port"]);
    let required = schema.header_positions(&header, true).unwrap_err();
    assert_eq!(required.missing_columns, ["label"]);
    let positions = schema.header_positions(&header, false).unwrap();
    let record = csv_record(&["5", "tcp", "443"]);
    let fields = RecordFields::CsvWithHeader {
        record: &record,
        header: &positions,
    };
    let (features, label) = schema.featurize(&fields).unwrap();
    assert_eq!(features.len(), schema.num_features());
    assert_eq!(label, None);
}

#[test]
fn json_objects_accept_numbers_strings_and_booleans() {
    let schema = Schema::for_test();
    let object = json_object(r#"{"bytes": 1, "proto": "udp", "port": 443, "label": "synflood"}"#);
    let (features, label) = schema.featurize(&RecordFields::Json(&object)).unwrap();
    assert_close(features[0], std::f64::consts::LN_2);
    assert_eq!(&features[1..4], &[0.0, 1.0, 0.0]);
    assert_eq!(features[4 + hash_bucket("443", 8) as usize], 1.0);
    assert_eq!(label.unwrap().class, LabelClass::Class(2));

    let with_strings =
        json_object(r#"{"bytes": " 1 ", "proto": "tcp", "port": "443", "label": "ok"}"#);
    let (string_features, string_label) = schema
        .featurize(&RecordFields::Json(&with_strings))
        .unwrap();
    assert_eq!(string_features[0], features[0]);
    assert_eq!(&string_features[4..], &features[4..]);
    assert_eq!(string_label.unwrap().class, LabelClass::Class(0));

    let with_boolean = json_object(r#"{"bytes": true, "proto": false, "port": 1}"#);
    let (boolean_features, no_label) = schema
        .featurize(&RecordFields::Json(&with_boolean))
        .unwrap();
    assert_close(boolean_features[0], std::f64::consts::LN_2);
    assert_eq!(
        boolean_features[3], 1.0,
        "\"false\" is not in the vocabulary"
    );
    assert_eq!(no_label, None);
}

#[test]
fn json_fields_that_are_absent_null_or_nested_are_refused() {
    let schema = Schema::for_test();
    let absent = json_object(r#"{"proto": "tcp", "port": 1, "label": "ok"}"#);
    let null = json_object(r#"{"bytes": null, "proto": "tcp", "port": 1, "label": "ok"}"#);
    let nested = json_object(r#"{"bytes": [1], "proto": "tcp", "port": 1, "label": "ok"}"#);
    for (object, expected) in [
        (
            &absent,
            "column \"bytes\" is empty or absent and has no missing value",
        ),
        (
            &null,
            "column \"bytes\" is empty or absent and has no missing value",
        ),
        (&nested, "column \"bytes\": expected a number, got an array"),
    ] {
        assert_eq!(
            schema.featurize(&RecordFields::Json(object)).unwrap_err(),
            expected
        );
    }
}

#[test]
fn long_values_are_cut_in_reasons() {
    let schema = numeric_schema(WIDE_CLAMP);
    let long_value = "x".repeat(500);
    let reason = featurize_one(&schema, &long_value).unwrap_err();
    assert!(reason.len() < 100, "{reason}");
}

#[test]
fn schema_round_trips_through_canonical_toml() {
    let schema = Schema::from_toml_str(
        r#"
        format = "jsonl"
        [[columns]]
        name = "duration"
        kind = "numeric"
        transforms = ["log1p", { clamp = { min = 0, max = 20 } }, { scale = { divisor = 10 } }, { standardize = { mean = 1.2, std = 3.4 } }]
        missing = 0
        [[columns]]
        name = "service"
        kind = "categorical"
        hash_buckets = 32
        missing = "none"
        [[columns]]
        name = "label"
        kind = "label"
        benign = ["normal"]
        [columns.classes]
        probe = ["satan"]
        dos = ["neptune", "smurf"]
        [[columns]]
        name = "difficulty"
        kind = "ignore"
        "#,
    )
    .unwrap();
    let canonical = schema.to_toml_string();
    let reloaded = Schema::from_toml_str(&canonical).unwrap();
    assert_eq!(reloaded, schema);
    assert_eq!(reloaded.to_toml_string(), canonical);
    assert_eq!(reloaded.sha256(), schema.sha256());
    assert_eq!(
        reloaded.class_names(),
        ["benign", "probe", "dos", "other_attack"]
    );
    assert_eq!(schema.sha256().len(), 64);
    assert_ne!(schema.sha256(), Schema::for_test().sha256());
}

#[test]
fn validation_reports_every_problem_with_its_key_path() {
    let problems = problems_of(
        r#"
        delimiter = ";;"
        [[columns]]
        name = "a"
        kind = "numeric"
        transforms = [{ clamp = { min = 5.0, max = 1.0 } }, { standardize = { mean = 0.0, std = 0.0 } }, { scale = { divisor = 0.0 } }]
        [[columns]]
        name = "a"
        kind = "numric"
        [[columns]]
        name = "proto"
        kind = "categorical"
        vocabulary = []
        [[columns]]
        name = "service"
        kind = "categorical"
        hash_buckets = 0
        [[columns]]
        name = "both"
        kind = "categorical"
        vocabulary = ["x", "x"]
        hash_buckets = 4
        [[columns]]
        name = "flag"
        kind = "numeric"
        vocabulary = ["SF"]
        "#,
    );
    let expected = [
        "delimiter must be one ascii character other than a quote or a line break, got \";;\"",
        "columns[0] (\"a\").transforms[0] (clamp): min 5 is greater than max 1",
        "columns[0] (\"a\").transforms[1] (standardize): std must be greater than 0, got 0",
        "columns[0] (\"a\").transforms[2] (scale): divisor must not be 0",
        "columns[1] (\"a\"): duplicate column name, columns[0] (\"a\") already uses it",
        "columns[1] (\"a\"): unknown kind \"numric\", expected \"numeric\", \"categorical\", \"label\", \"identity\" or \"ignore\"",
        "columns[2] (\"proto\"): vocabulary must not be empty",
        "columns[3] (\"service\"): hash_buckets must be in 1..=65536, got 0",
        "columns[4] (\"both\"): set either vocabulary or hash_buckets, not both",
        "columns[5] (\"flag\"): key \"vocabulary\" does not apply to kind \"numeric\"",
        "columns[5] (\"flag\"): numeric column is unbounded (its transforms give values in -inf..=inf); add a clamp with the column's range, e.g. { clamp = { min = 0.0, max = 1.0 } } for a rate or a flag, or { clamp = { min = 0.0, max = 1e12 } } before \"log1p\" for a byte count",
    ];
    assert_eq!(problems, expected);
}

#[test]
fn label_problems_are_reported_with_their_class_paths() {
    let problems = problems_of(
        r#"
        [[columns]]
        name = "x"
        kind = "numeric"
        transforms = [{ clamp = { min = 0.0, max = 1.0 } }]
        [[columns]]
        name = "label"
        kind = "label"
        benign = ["normal"]
        [columns.classes]
        dos = ["neptune", "normal"]
        probe = []
        other_attack = ["x"]
        [[columns]]
        name = "label2"
        kind = "label"
        benign = []
        "#,
    );
    let expected = [
        "columns[1] (\"label\").classes.dos: label value \"normal\" is already listed in benign",
        "columns[1] (\"label\").classes.probe: lists no label values",
        "columns[1] (\"label\").classes.other_attack: the class name \"other_attack\" is reserved",
        "columns[2] (\"label2\"): benign must list at least one label value that means benign",
        "columns[2] (\"label2\"): a second label column; columns[1] (\"label\") is already the label and at most one is allowed",
    ];
    assert_eq!(problems, expected);
}

#[test]
fn a_schema_without_feature_columns_is_refused() {
    let problems = problems_of(
        r#"
        [[columns]]
        name = "label"
        kind = "label"
        benign = ["ok"]
        "#,
    );
    assert_eq!(
        problems,
        ["columns: the schema has no feature columns (kind \"numeric\" or \"categorical\")"]
    );
}

#[test]
fn unknown_keys_are_rejected_with_their_line() {
    let error = Schema::from_toml_str(
        "[[columns]]\nname = \"x\"\nkind = \"categorical\"\nvocab = [\"a\"]\n",
    )
    .unwrap_err();
    let message = error.to_string();
    assert!(message.contains("line 4"), "{message}");
    assert!(message.contains("unknown field `vocab`"), "{message}");

    let transform_error = Schema::from_toml_str(
        "[[columns]]\nname = \"x\"\nkind = \"numeric\"\ntransforms = [{ clamp = { min = 0, maxx = 1 } }]\n",
    )
    .unwrap_err();
    assert!(
        transform_error.to_string().contains("maxx"),
        "{transform_error}"
    );

    let missing_error =
        Schema::from_toml_str("[[columns]]\nname = \"x\"\nkind = \"numeric\"\nmissing = true\n")
            .unwrap_err();
    assert!(
        missing_error
            .to_string()
            .contains("expected a number (numeric columns) or a string"),
        "{missing_error}"
    );

    let top_level_error = Schema::from_toml_str("formt = \"csv\"\n").unwrap_err();
    assert!(
        top_level_error.to_string().contains("formt"),
        "{top_level_error}"
    );
}

#[test]
fn loading_a_missing_schema_file_names_it() {
    let path = Path::new("/nonexistent/fedshield/schema.toml");
    let message = Schema::load(path).unwrap_err().to_string();
    assert!(
        message.contains("/nonexistent/fedshield/schema.toml"),
        "{message}"
    );
}

#[test]
fn the_shipped_nsl_kdd_schema_is_valid() {
    let path = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../schemas/nsl-kdd.toml"
    ));
    let schema = Schema::load(path).unwrap();
    assert_eq!(schema.num_columns(), 43);
    assert_eq!(schema.label_column_name(), Some("label"));
    assert_eq!(
        schema.class_names(),
        ["benign", "dos", "probe", "r2l", "u2r", "other_attack"]
    );
    let names = schema.feature_names();
    assert_eq!(names.len(), schema.num_features());
    assert!(names.contains(&"protocol_type=icmp".to_string()));
    assert!(names.contains(&"flag=<other>".to_string()));
}

#[test]
fn a_numeric_column_without_a_bounding_clamp_is_refused_naming_the_column() {
    let schema_with = |transforms: &str| numeric_schema_text("src_bytes", transforms);
    let unbounded_message = |range: &str| {
        format!(
            "columns[0] (\"src_bytes\"): numeric column is unbounded (its transforms give values in {range}); add a clamp with the column's range, e.g. {{ clamp = {{ min = 0.0, max = 1.0 }} }} for a rate or a flag, or {{ clamp = {{ min = 0.0, max = 1e12 }} }} before \"log1p\" for a byte count"
        )
    };
    for (transforms, range) in [
        ("[]", "-inf..=inf"),
        (r#"["log1p"]"#, "-inf..=inf"),
        (
            r#"["log1p", { scale = { offset = 0.0, divisor = 21.0 } }]"#,
            "-inf..=inf",
        ),
        (
            "[{ clamp = { min = 0.0, max = 1e12 } }, { standardize = { mean = 0.0, std = 1e-300 } }, { scale = { divisor = 1e300 } }]",
            "0..=inf",
        ),
        (
            r#"[{ clamp = { min = -5.0, max = 5.0 } }, "log1p"]"#,
            "-inf..=1.791759469228055",
        ),
    ] {
        assert_eq!(
            problems_of(&schema_with(transforms)),
            [unbounded_message(range)],
            "transforms {transforms}"
        );
    }
    assert_eq!(
        problems_of(&schema_with("[{ clamp = { min = 0.0, max = 1e12 } }]")),
        [
            "columns[0] (\"src_bytes\"): features reach 0..=1000000000000, beyond the limit of 1e6 in magnitude; clamp or scale the column into -1e6..=1e6"
        ]
    );
    for bounded in [
        r#"[{ clamp = { min = 0.0, max = 1e12 } }, "log1p", { scale = { divisor = 21.0 } }]"#,
        r#"["log1p", { scale = { divisor = 21.0 } }, { clamp = { min = 0.0, max = 2.0 } }]"#,
        "[{ clamp = { min = -1e6, max = 1e6 } }]",
        "[{ clamp = { min = 0.0, max = 1e12 } }, { standardize = { mean = 5e11, std = 1e6 } }]",
    ] {
        assert!(
            Schema::from_toml_str(&schema_with(bounded)).is_ok(),
            "transforms {bounded}"
        );
    }
}

#[test]
fn extreme_raw_values_give_bounded_finite_features() {
    let schema = numeric_schema(
        r#"[{ clamp = { min = 0.0, max = 1e12 } }, "log1p", { scale = { divisor = 21.0 } }]"#,
    );
    let largest = ((1e12f64).ln_1p() / 21.0) as f32;
    assert_eq!(featurize_one(&schema, "1e38").unwrap(), largest);
    assert_eq!(featurize_one(&schema, "1.7e308").unwrap(), largest);
    assert_eq!(featurize_one(&schema, "-1e38").unwrap(), 0.0);
    let json = json_object(r#"{"x": 1e38, "label": "ok"}"#);
    let (json_features, _) = schema.featurize(&RecordFields::Json(&json)).unwrap();
    assert_eq!(json_features, [largest]);
    for not_finite in ["inf", "-inf", "NaN", "1e400"] {
        assert_eq!(
            featurize_one(&schema, not_finite).unwrap_err(),
            format!(
                "column \"x\": {} is not a finite number",
                not_finite.parse::<f64>().unwrap()
            ),
            "value {not_finite}"
        );
    }
}

#[test]
fn log1p_of_minus_one_or_less_is_malformed_even_when_clamped_after() {
    let schema = numeric_schema(r#"["log1p", { clamp = { min = -3.0, max = 3.0 } }]"#);
    for value in ["-1", "-2", "-1e38"] {
        assert!(
            featurize_one(&schema, value)
                .unwrap_err()
                .contains("after the transforms"),
            "value {value}"
        );
    }
    assert_close(featurize_one(&schema, "1e38").unwrap(), 3.0);
}

#[test]
fn every_shipped_schema_bounds_an_extreme_record() {
    for schema_file in ["nsl-kdd.toml", "synthetic-flows.toml"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../schemas")
            .join(schema_file);
        let schema = Schema::load(&path).unwrap();
        let numeric_columns: Vec<usize> = schema
            .columns
            .iter()
            .enumerate()
            .filter(|(_, column)| matches!(column.role, ColumnRole::Numeric { .. }))
            .map(|(index, _)| index)
            .collect();
        assert!(numeric_columns.len() >= 6, "{schema_file}");
        for extreme in ["1e38", "-1e38", "1.7e308", "0"] {
            let fields: Vec<&str> = schema
                .columns
                .iter()
                .map(|column| match column.role {
                    ColumnRole::Numeric { .. } => extreme,
                    ColumnRole::Label => "normal",
                    _ => "x",
                })
                .collect();
            let record = csv_record(&fields);
            let (features, _) = schema
                .featurize(&RecordFields::CsvPositional(&record))
                .unwrap_or_else(|reason| panic!("{schema_file}, {extreme}: {reason}"));
            // The shipped schemas scale every numeric column into a few units.
            assert!(
                features.iter().all(|feature| (0.0..=4.0).contains(feature)),
                "{schema_file}, {extreme}: {features:?}"
            );
        }
    }
}

/// The schema of the featurizer property: two numeric columns whose
/// transforms can fail or overflow, a vocabulary, hash buckets, a label.
const PROPERTY_SCHEMA: &str = r#"
    [[columns]]
    name = "a"
    kind = "numeric"
    transforms = ["log1p", { clamp = { min = -3.0, max = 3.0 } }]
    [[columns]]
    name = "b"
    kind = "numeric"
    transforms = [{ standardize = { mean = 1.0, std = 1e-30 } }, { clamp = { min = -1e6, max = 1e6 } }]
    [[columns]]
    name = "c"
    kind = "categorical"
    vocabulary = ["x", "y"]
    [[columns]]
    name = "d"
    kind = "categorical"
    hash_buckets = 5
    [[columns]]
    name = "label"
    kind = "label"
    benign = ["ok"]
"#;

/// Returns the first column of [`PROPERTY_SCHEMA`] whose field (trimmed;
/// absent past the end) the featurizer must refuse, or `None` when every
/// field fits: `a` and `b` need a finite number, `a` one above -1 (log1p),
/// `c` and `d` a non-empty value. The label never makes a record unfit.
fn first_unfit_column(fields: &[String]) -> Option<&'static str> {
    let field = |index: usize| fields.get(index).map_or("", |field| field.trim());
    let finite_number = |text: &str| {
        text.parse::<f64>()
            .ok()
            .filter(|value: &f64| value.is_finite())
    };
    if finite_number(field(0)).is_none_or(|value| value <= -1.0) {
        return Some("a");
    }
    if finite_number(field(1)).is_none() {
        return Some("b");
    }
    if field(2).is_empty() {
        return Some("c");
    }
    if field(3).is_empty() {
        return Some("d");
    }
    None
}

/// Checks one featurizer outcome of `fields` against
/// [`first_unfit_column`]: a fitting record gives bounded finite features,
/// one-hot slots and the label the schema says; an unfit one is refused
/// naming the column the oracle names. No outcome passes unchecked.
fn check_featurized(
    schema: &Schema,
    fields: &[String],
    outcome: Result<(Vec<f32>, Option<LabelInfo<'_>>), String>,
) -> Result<(), TestCaseError> {
    match (outcome, first_unfit_column(fields)) {
        (Ok((features, label)), None) => {
            prop_assert_eq!(features.len(), schema.num_features());
            prop_assert!(features.iter().all(|feature| feature.is_finite()));
            prop_assert!(
                features
                    .iter()
                    .all(|feature| f64::from(feature.abs()) <= MAX_FEATURE_MAGNITUDE)
            );
            prop_assert!((-3.0..=3.0).contains(&features[0]));
            prop_assert_eq!(features[2..5].iter().sum::<f32>(), 1.0);
            prop_assert_eq!(features[5..10].iter().sum::<f32>(), 1.0);
            let raw_label = fields.get(4).map_or("", |field| field.trim());
            let expected_label = match raw_label {
                "" => None,
                "ok" => Some(LabelClass::Class(0)),
                _ => Some(LabelClass::UnlistedError),
            };
            prop_assert_eq!(label.as_ref().map(|label| label.class), expected_label);
            if let Some(label) = label {
                prop_assert_eq!(label.raw_label.as_ref(), raw_label);
            }
        }
        (Err(reason), Some(column)) => {
            let expected_start = format!("column {column:?}");
            prop_assert!(
                reason.starts_with(&expected_start),
                "reason {:?} should blame column {:?}",
                reason,
                column
            );
        }
        (Ok(_), Some(column)) => {
            return Err(TestCaseError::fail(format!(
                "column {column:?} should have been refused"
            )));
        }
        (Err(reason), None) => {
            return Err(TestCaseError::fail(format!(
                "a fitting record was refused: {reason}"
            )));
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn featurize_gives_bounded_features_or_names_the_unfit_column(
        mut fields in proptest::collection::vec(
            ".{0,12}|-?[0-9]{1,40}(\\.[0-9]{0,5})?(e-?[0-9]{1,3})?",
            0..7,
        ),
        label in prop_oneof![Just("ok".to_string()), "[a-z ]{0,4}"],
    ) {
        let schema = Schema::from_toml_str(PROPERTY_SCHEMA).unwrap();
        if let Some(label_field) = fields.get_mut(4) {
            *label_field = label;
        }

        let record = StringRecord::from(fields.clone());
        let csv_outcome = schema.featurize(&RecordFields::CsvPositional(&record));
        if fields.len() == schema.num_columns() {
            check_featurized(&schema, &fields, csv_outcome)?;
        } else {
            prop_assert_eq!(
                csv_outcome.unwrap_err(),
                format!(
                    "row has {} fields, the schema expects 5 (one per column)",
                    fields.len()
                )
            );
        }

        // The same values as JSON strings; keys past the fields are absent.
        let object: serde_json::Map<String, serde_json::Value> = ["a", "b", "c", "d", "label"]
            .iter()
            .zip(&fields)
            .map(|(name, value)| (name.to_string(), serde_json::Value::String(value.clone())))
            .collect();
        let json_outcome = schema.featurize(&RecordFields::Json(&object));
        check_featurized(&schema, &fields, json_outcome)?;
    }
}

fn schema_with_label_keys(label_keys: &str) -> String {
    format!(
        r#"
        [[columns]]
        name = "bytes"
        kind = "numeric"
        transforms = [{{ clamp = {{ min = 0.0, max = 1e6 }} }}]
        [[columns]]
        name = "detail"
        kind = "ignore"
        [[columns]]
        name = "label"
        kind = "label"
        {label_keys}
        "#
    )
}

#[test]
fn attack_and_skip_values_mean_the_last_class_and_a_skipped_row() {
    let schema = Schema::from_toml_str(&schema_with_label_keys(
        r#"benign = ["Benign"]
        attack = ["Malicious"]
        skip = ["Background"]"#,
    ))
    .unwrap();
    assert_eq!(schema.class_of_label("Benign"), LabelClass::Class(0));
    assert_eq!(schema.class_of_label("Malicious"), LabelClass::Class(1));
    assert_eq!(schema.class_of_label("Background"), LabelClass::Skipped);
    assert_eq!(
        schema.class_of_label("Maliciuos"),
        LabelClass::UnlistedError
    );
}

#[test]
fn the_class_column_picks_an_attack_class_and_unlisted_values_are_the_last_class() {
    let schema = Schema::from_toml_str(&schema_with_label_keys(
        r#"benign = ["Benign"]
        attack = ["Malicious"]
        class_column = "detail"
        [columns.classes]
        ddos = ["DDoS"]
        scan = ["PortScan"]"#,
    ))
    .unwrap();
    let class_of = |label: &str, detail: &str| {
        let record = csv_record(&["10", detail, label]);
        let (_, label) = schema
            .featurize(&RecordFields::CsvPositional(&record))
            .unwrap();
        label.unwrap().class
    };
    assert_eq!(class_of("Malicious", "DDoS"), LabelClass::Class(1));
    assert_eq!(class_of("Malicious", "PortScan"), LabelClass::Class(2));
    assert_eq!(class_of("Malicious", "Okiru"), LabelClass::Class(3));
    assert_eq!(class_of("Malicious", ""), LabelClass::Class(3));
    // The detail of a benign row does not matter; the label value decides.
    assert_eq!(class_of("Benign", "DDoS"), LabelClass::Class(0));
    assert_eq!(class_of("DDoS", "DDoS"), LabelClass::UnlistedError);
}

#[test]
fn label_keys_are_checked_with_their_paths() {
    let problems = problems_of(&schema_with_label_keys(
        r#"benign = ["Benign"]
        skip = ["Benign"]
        class_column = "nowhere""#,
    ));
    assert!(
        problems
            .iter()
            .any(|problem| problem
                .contains("skip: label value \"Benign\" is already listed in benign")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|problem| problem.contains("class_column: needs attack")),
        "{problems:?}"
    );
    let problems = problems_of(&schema_with_label_keys(
        r#"benign = ["Benign"]
        attack = ["x"]
        class_column = "nowhere""#,
    ));
    assert!(
        problems
            .iter()
            .any(|problem| problem.contains("class_column: \"nowhere\" is not another column")),
        "{problems:?}"
    );
    let problems = problems_of(&schema_with_label_keys(
        r#"benign = ["Benign"]
        attack = ["x"]
        class_column = "label""#,
    ));
    assert!(
        problems
            .iter()
            .any(|problem| problem.contains("\"label\" is not another column")),
        "{problems:?}"
    );
    let problems = problems_of(&schema_with_label_keys(r#"benign = ["Benign"]"#).replace(
        "kind = \"ignore\"",
        "kind = \"ignore\"\n        skip = [\"x\"]",
    ));
    assert!(
        problems
            .iter()
            .any(|problem| problem.contains("key \"skip\" does not apply to kind \"ignore\"")),
        "{problems:?}"
    );
}

/// Returns the schema of `columns` (TOML text) followed by a label column
/// whose benign value is "ok".
fn schema_with_label(columns: &str) -> Schema {
    let label = "[[columns]]\nname = \"label\"\nkind = \"label\"\nbenign = [\"ok\"]";
    Schema::from_toml_str(&format!("{columns}\n{label}")).unwrap()
}

/// A csv schema with a set-valued vocabulary column `services` (extra keys in
/// `options`) and a label column.
fn set_schema(options: &str) -> Schema {
    schema_with_label(&format!(
        r#"
        [[columns]]
        name = "services"
        kind = "categorical"
        vocabulary = ["dns", "ssl", "quic"]
        set = true
        {options}
        "#
    ))
}

fn set_features(schema: &Schema, value: &str) -> Result<Vec<f32>, String> {
    let record = csv_record(&[value, "ok"]);
    let (features, _) = schema.featurize(&RecordFields::CsvPositional(&record))?;
    Ok(features)
}

#[test]
fn a_set_column_sets_the_slot_of_every_element_once() {
    let schema = set_schema("");
    assert_eq!(schema.num_features(), 4);
    assert_eq!(
        set_features(&schema, "ssl,quic").unwrap(),
        [0.0, 1.0, 1.0, 0.0]
    );
    assert_eq!(
        set_features(&schema, " ssl , ssl,dns ").unwrap(),
        [1.0, 1.0, 0.0, 0.0]
    );
    assert_eq!(
        set_features(&schema, "ssl,irc,sip").unwrap(),
        [0.0, 1.0, 0.0, 1.0],
        "elements outside the vocabulary share the other slot"
    );
    assert_eq!(set_features(&schema, "dns").unwrap(), [1.0, 0.0, 0.0, 0.0]);
    assert_eq!(set_features(&schema, ",").unwrap(), [0.0; 4]);
    assert_eq!(
        set_features(&schema, "").unwrap_err(),
        "column \"services\" is empty or absent and has no missing value"
    );
}

#[test]
fn a_set_columns_missing_value_and_separator_are_split_too() {
    let schema = set_schema("set_separator = \";\"\nmissing = \"dns;quic\"");
    assert_eq!(
        set_features(&schema, "ssl;quic").unwrap(),
        [0.0, 1.0, 1.0, 0.0]
    );
    assert_eq!(
        set_features(&schema, "ssl,quic").unwrap(),
        [0.0, 0.0, 0.0, 1.0]
    );
    assert_eq!(set_features(&schema, "").unwrap(), [1.0, 0.0, 1.0, 0.0]);
    let empty_when_absent = set_schema("missing = \"\"");
    assert_eq!(set_features(&empty_when_absent, "").unwrap(), [0.0; 4]);
}

#[test]
fn json_arrays_are_sets_and_json_strings_split_on_the_separator() {
    let schema = set_schema("");
    let features_of = |text: &str| {
        schema
            .featurize(&RecordFields::Json(&json_object(text)))
            .map(|(features, _)| features)
    };
    assert_eq!(
        features_of(r#"{"services": ["quic", "dns", "quic"]}"#).unwrap(),
        [1.0, 0.0, 1.0, 0.0]
    );
    assert_eq!(features_of(r#"{"services": []}"#).unwrap(), [0.0; 4]);
    assert_eq!(
        features_of(r#"{"services": [53, "ssl"]}"#).unwrap(),
        [0.0, 1.0, 0.0, 1.0]
    );
    assert_eq!(
        features_of(r#"{"services": "ssl,dns"}"#).unwrap(),
        [1.0, 1.0, 0.0, 0.0]
    );
    assert_eq!(
        features_of(r#"{"services": null}"#).unwrap_err(),
        "column \"services\" is empty or absent and has no missing value"
    );
    assert_eq!(
        features_of(r#"{"services": ["ssl", {"a": 1}]}"#).unwrap_err(),
        "column \"services\": set elements must be strings or numbers, got an object"
    );
    let single_valued = Schema::for_test();
    let array_at_proto = json_object(r#"{"bytes": 1, "proto": ["tcp"], "port": 1}"#);
    assert_eq!(
        single_valued
            .featurize(&RecordFields::Json(&array_at_proto))
            .unwrap_err(),
        "column \"proto\": expected a string, number or boolean, got an array"
    );
}

#[test]
fn hashed_set_columns_set_one_bucket_per_distinct_element() {
    let schema = schema_with_label(
        r#"
        [[columns]]
        name = "flowbits"
        kind = "categorical"
        hash_buckets = 64
        set = true
        "#,
    );
    let object = json_object(r#"{"flowbits": ["ET.Evil", "ET.DROPIP", "ET.Evil"]}"#);
    let (features, _) = schema.featurize(&RecordFields::Json(&object)).unwrap();
    let mut expected = vec![0.0f32; 64];
    expected[hash_bucket("ET.Evil", 64) as usize] = 1.0;
    expected[hash_bucket("ET.DROPIP", 64) as usize] = 1.0;
    assert_eq!(features, expected);
    assert_eq!(features.iter().sum::<f32>(), 2.0);
}

#[test]
fn zeek_rows_split_sets_on_the_files_separator_and_read_the_empty_marker() {
    let schema = schema_with_label(
        r#"
        format = "zeek"
        [[columns]]
        name = "services"
        kind = "categorical"
        vocabulary = ["dns", "ssl", "quic"]
        set = true
        [[columns]]
        name = "proto"
        kind = "categorical"
        vocabulary = ["tcp"]
        missing = "tcp"
        "#,
    );
    let header = csv_record(&["services", "proto", "label"]);
    let positions = schema.header_positions(&header, true).unwrap();
    let features_of = |services: &str, proto: &str| {
        let record = csv_record(&[services, proto, "ok"]);
        let fields = RecordFields::Zeek {
            record: &record,
            header: &positions,
            set_separator: "|",
            empty_field: "(empty)",
        };
        schema.featurize(&fields).map(|(features, _)| features)
    };
    assert_eq!(
        features_of("ssl|quic", "tcp").unwrap(),
        [0.0, 1.0, 1.0, 0.0, 1.0, 0.0]
    );
    assert_eq!(
        features_of("ssl,quic", "tcp").unwrap()[..4],
        [0.0, 0.0, 0.0, 1.0]
    );
    assert_eq!(
        features_of("(empty)", "(empty)").unwrap(),
        [0.0, 0.0, 0.0, 0.0, 1.0, 0.0],
        "the empty marker is the empty set, and absent for a single-valued column"
    );
    assert_eq!(
        features_of("", "tcp").unwrap_err(),
        "column \"services\" is empty or absent and has no missing value"
    );
}

#[test]
fn set_applies_to_categorical_columns_only_and_the_separator_needs_it() {
    let text = r#"
        [[columns]]
        name = "bytes"
        kind = "numeric"
        transforms = [{ clamp = { min = 0.0, max = 1.0 } }]
        set = true
        [[columns]]
        name = "proto"
        kind = "categorical"
        hash_buckets = 4
        set_separator = ";"
        [[columns]]
        name = "port"
        kind = "categorical"
        hash_buckets = 4
        set = true
        set_separator = ""
        [[columns]]
        name = "label"
        kind = "label"
        benign = ["ok"]
        set = true
        "#;
    assert_eq!(
        problems_of(text),
        [
            "columns[0] (\"bytes\"): key \"set\" does not apply to kind \"numeric\"",
            "columns[1] (\"proto\"): set_separator applies to a set-valued column; add set = true or leave set_separator out",
            "columns[2] (\"port\"): set_separator must not be empty",
            "columns[3] (\"label\"): key \"set\" does not apply to kind \"label\"",
        ]
    );
    let zeek_text = r#"
        format = "zeek"
        [[columns]]
        name = "service"
        kind = "categorical"
        hash_buckets = 4
        set = true
        set_separator = ";"
        [[columns]]
        name = "label"
        kind = "label"
        benign = ["ok"]
        "#;
    assert_eq!(
        problems_of(zeek_text),
        [
            "columns[0] (\"service\"): zeek logs give their set separator in the #set_separator header; leave set_separator out"
        ]
    );
}

#[test]
fn set_keys_at_their_defaults_leave_the_canonical_text_unchanged() {
    let plain = Schema::for_test();
    let explicit = plain.to_toml_string().replace(
        "vocabulary = [\"tcp\", \"udp\"]",
        "vocabulary = [\"tcp\", \"udp\"]\nset = false",
    );
    assert!(explicit.contains("set = false"), "{explicit}");
    assert_eq!(
        Schema::from_toml_str(&explicit).unwrap().sha256(),
        plain.sha256()
    );
    let with_default_separator = set_schema("set_separator = \",\"");
    assert_eq!(with_default_separator.sha256(), set_schema("").sha256());
    let canonical = set_schema("").to_toml_string();
    assert!(canonical.contains("set = true"), "{canonical}");
    assert_ne!(
        set_schema("set_separator = \";\"").sha256(),
        set_schema("").sha256()
    );
}

#[test]
fn identity_columns_and_roles_are_echoed_and_never_features() {
    let text = r#"
        format = "zeek"
        [[columns]]
        name = "uid"
        kind = "identity"
        role = "event.id"
        [[columns]]
        name = "note"
        kind = "identity"
        [[columns]]
        name = "id.resp_p"
        kind = "categorical"
        vocabulary = ["22", "80"]
        role = "destination.port"
        [[columns]]
        name = "duration"
        kind = "numeric"
        transforms = [{ clamp = { min = 0.0, max = 1e6 } }]
    "#;
    let schema = Schema::from_toml_str(text).unwrap();
    assert_eq!(schema.num_features(), 4, "identity columns add no feature");
    let echoed: Vec<(String, Option<IdentityRole>)> = schema
        .echoed_columns()
        .into_iter()
        .map(|column| (column.name, column.role))
        .collect();
    assert_eq!(
        echoed,
        [
            ("uid".to_string(), Some(IdentityRole::EventId)),
            ("note".to_string(), None),
            ("id.resp_p".to_string(), Some(IdentityRole::DestinationPort)),
        ]
    );
    let ranges: Vec<(&str, std::ops::Range<usize>)> = schema.feature_columns();
    assert_eq!(ranges, [("id.resp_p", 0..3), ("duration", 3..4)]);
    assert!(
        !schema.columns_required_in_input(false).contains(&"uid"),
        "an identity column may be absent"
    );
    // The roles are part of the canonical text, so of the schema's hash.
    let reparsed = Schema::from_toml_str(&schema.to_toml_string()).unwrap();
    assert_eq!(reparsed.echoed_columns(), schema.echoed_columns());
}

#[test]
fn unknown_or_misplaced_roles_are_refused_with_their_key_path() {
    let text = r#"
        [[columns]]
        name = "src"
        kind = "identity"
        role = "source.address"
        [[columns]]
        name = "dst"
        kind = "ignore"
        role = "destination.ip"
        [[columns]]
        name = "bytes"
        kind = "numeric"
        transforms = [{ clamp = { min = 0.0, max = 1e6 } }]
        [[columns]]
        name = "label"
        kind = "label"
        benign = ["normal"]
        role = "event.id"
    "#;
    let Err(SchemaError::Invalid { problems, .. }) = Schema::from_toml_str(text) else {
        panic!("bad roles must be refused");
    };
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(problems[0].starts_with(
        "columns[0] (\"src\").role: unknown role \"source.address\", expected one of \"@timestamp\""
    ));
    assert!(problems[1].contains("columns[1] (\"dst\").role: an ignored column is not echoed"));
    assert!(
        problems[2].contains("columns[3] (\"label\").role: the label column cannot carry a role")
    );
}
