"""KubeRay's RayService CRD (data/kuberay-rayservice-crd.yaml, see data/PROVENANCE.md) as a jsonschema
validator of whole RayService objects: its v1 openAPIV3Schema, read the way the Kubernetes API server
applies a structural schema, which plain JSON Schema would not."""

import functools
import json
from pathlib import Path

import jsonschema
import yaml

CRD = Path(__file__).parent / "data" / "kuberay-rayservice-crd.yaml"


def structural(schema: dict) -> dict:
    """The schema with Kubernetes' reading made explicit: `nullable` allows null (null is refused
    otherwise), and an object with `properties` has no other fields (the server drops them, or refuses
    them under kubectl's default strict field validation: either way a typo'd field does nothing)."""
    out = dict(schema)
    if "properties" in schema:
        out["properties"] = {name: structural(s) for name, s in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if isinstance(schema.get("additionalProperties"), dict):
        out["additionalProperties"] = structural(schema["additionalProperties"])
    if "items" in schema:
        out["items"] = structural(schema["items"])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in schema:
            out[key] = [structural(s) for s in schema[key]]
    if schema.get("nullable") and "type" in schema:
        out["type"] = [schema["type"], "null"]
    return out


def list_type(validator, kind, instance, schema):
    """x-kubernetes-list-type: a `set` has no duplicates, a `map` no two items with the same keys (two env
    entries named REDIS_URL, two ports on one containerPort), as the server checks."""
    if not validator.is_type(instance, "array"):
        return
    if kind == "map":
        names = schema["x-kubernetes-list-map-keys"]
        defaults = {n: schema["items"].get("properties", {}).get(n, {}).get("default") for n in names}
        keys = [json.dumps([item.get(n, defaults[n]) for n in names]) for item in instance]
    elif kind == "set":
        keys = [json.dumps(item, sort_keys=True) for item in instance]
    else:  # atomic
        return
    seen = set()
    for key in keys:
        if key in seen:
            yield jsonschema.ValidationError(f"duplicate entry {key} in a list-type {kind}")
        seen.add(key)


# Not checked: x-kubernetes-validations (CEL; the only rule is on rayClusterConfig.managedBy, which the
# chart never sets) and integer formats (int32 ranges).
Validator = jsonschema.validators.extend(jsonschema.Draft7Validator, {"x-kubernetes-list-type": list_type})


@functools.cache
def validator() -> jsonschema.Draft7Validator:
    crd = yaml.load(CRD.read_text(), Loader=yaml.CSafeLoader)  # 1 MB: the C loader reads it in 0.3 s
    assert crd["kind"] == "CustomResourceDefinition" and crd["spec"]["names"]["kind"] == "RayService"
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = structural(v1["schema"]["openAPIV3Schema"])
    Validator.check_schema(schema)
    return Validator(schema)


def rayservice_errors(obj: dict) -> list[str]:
    """What KubeRay's CRD refuses in a RayService, one 'path: message' each; [] if it accepts it."""
    errors = sorted(validator().iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]
