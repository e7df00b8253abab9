#!/usr/bin/env python3
"""Regenerates the vendored ECS and OCSF definitions the alert format tests
validate against, from the packages as the registries publish them.

    npm pack @elastic/ecs@8.11.5
    pip download --no-deps ocsf-json-schema==1.2.0
    python3 extract.py elastic-ecs-8.11.5.tgz ocsf_json_schema-1.2.0-py3-none-any.whl

Needs python3 (3.10+) and node (to read the ECS package's compiled
`ecs_flat.js`). Writes ecs/ecs_fields-<ecs version>.json and
ocsf/detection_finding-<ocsf version>.{schema,attributes}.json beside this
script.
"""

import json
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile

OCSF_VERSION = "1.8.0"
OCSF_CLASS = "detection_finding"
# The objects a Detection Finding from fedshield uses; their attribute
# requirements and enum captions go into the attributes file.
OCSF_OBJECTS = [
    "metadata",
    "product",
    "finding_info",
    "analytic",
    "evidences",
    "network_endpoint",
    "network_connection_info",
]

HERE = os.path.dirname(os.path.abspath(__file__))

ECS_DUMP = r"""
const flat = require(process.argv[1]).EcsFlat;
const version = require(process.argv[2]).EcsVersion;
const fields = {};
for (const [name, field] of Object.entries(flat)) {
  const entry = { type: field.type };
  if (field.normalize && field.normalize.length) entry.normalize = field.normalize;
  if (field.allowed_values) {
    entry.allowed_values = field.allowed_values.map((allowed) => allowed.name);
    const expected = {};
    for (const allowed of field.allowed_values) {
      if (allowed.expected_event_types) expected[allowed.name] = allowed.expected_event_types;
    }
    if (Object.keys(expected).length) entry.expected_event_types = expected;
  }
  fields[name] = entry;
}
process.stdout.write(JSON.stringify({ ecs_version: version, fields }, null, 1));
"""


def extract_ecs(package_path, work_dir):
    with tarfile.open(package_path) as archive:
        archive.extractall(work_dir, filter="data")
    build = os.path.join(work_dir, "package", "build", "commonjs")
    dumped = subprocess.run(
        ["node", "-e", ECS_DUMP, os.path.join(build, "ecs_flat.js"), os.path.join(build, "index.js")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    definitions = json.loads(dumped)
    output = os.path.join(HERE, "ecs", f"ecs_fields-{definitions['ecs_version']}.json")
    with open(output, "w") as file:
        json.dump(definitions, file, indent=1, sort_keys=True)
        file.write("\n")
    print("wrote", output)


def schema_refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from schema_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from schema_refs(value)


def extract_ocsf(package_path, work_dir):
    with zipfile.ZipFile(package_path) as archive:
        archive.extractall(work_dir)
    sys.path.insert(0, work_dir)
    from ocsf_json_schema.schema import OcsfJsonSchema

    export_path = os.path.join(work_dir, "ocsf_json_schema", "ocsf", f"{OCSF_VERSION}.json")
    with open(export_path) as file:
        export = json.load(file)
    generator = OcsfJsonSchema(export)
    class_schema = generator.get_class_schema(OCSF_CLASS)
    # Every object schema the class reaches through $ref, each an embedded
    # resource under $defs with its own $id (a JSON Schema 2020-12 bundle).
    resources = {class_schema["$id"]: class_schema}
    pending = [class_schema]
    while pending:
        for ref in schema_refs(pending.pop()):
            if ref in resources:
                continue
            object_name = ref.split("/objects/", 1)[1].split("?", 1)[0]
            object_schema = generator.get_object_schema(object_name)
            resources[ref] = object_schema
            pending.append(object_schema)
    bundle = {
        "$schema": generator.JSON_SCHEMA_VERSION,
        "$id": f"{generator.OCSF_SCHEMA_PREFIX}/schema/{OCSF_VERSION}/bundles/{OCSF_CLASS}",
        "title": f"OCSF {OCSF_VERSION} {class_schema['title']} with the objects it references",
        "$ref": class_schema["$id"],
        "$defs": {uri.split(f"/schema/{OCSF_VERSION}/", 1)[1]: schema for uri, schema in sorted(resources.items())},
    }
    output = os.path.join(HERE, "ocsf", f"{OCSF_CLASS}-{OCSF_VERSION}.schema.json")
    with open(output, "w") as file:
        json.dump(bundle, file, indent=1, sort_keys=True)
        file.write("\n")
    print("wrote", output, len(resources), "resources")

    def summarize(definition):
        attributes = {}
        for name, attribute in definition["attributes"].items():
            entry = {"requirement": attribute.get("requirement", "optional"), "type": attribute.get("type")}
            if attribute.get("profiles"):
                entry["profiles"] = attribute["profiles"]
            if attribute.get("is_array"):
                entry["is_array"] = True
            if "enum" in attribute:
                entry["enum"] = {key: value.get("caption") for key, value in attribute["enum"].items()}
            attributes[name] = entry
        return {"caption": definition.get("caption"), "attributes": attributes}

    summary = {
        "version": export["version"],
        "class": {OCSF_CLASS: summarize(export["classes"][OCSF_CLASS])},
        "objects": {name: summarize(export["objects"][name]) for name in OCSF_OBJECTS},
    }
    summary["class"][OCSF_CLASS]["uid"] = export["classes"][OCSF_CLASS]["uid"]
    output = os.path.join(HERE, "ocsf", f"{OCSF_CLASS}-{OCSF_VERSION}.attributes.json")
    with open(output, "w") as file:
        json.dump(summary, file, indent=1, sort_keys=True)
        file.write("\n")
    print("wrote", output)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with tempfile.TemporaryDirectory() as ecs_dir:
        extract_ecs(sys.argv[1], ecs_dir)
    with tempfile.TemporaryDirectory() as ocsf_dir:
        extract_ocsf(sys.argv[2], ocsf_dir)


if __name__ == "__main__":
    main()
