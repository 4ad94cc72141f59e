"""Check a real response against the project's own OpenAPI schema (what drf-spectacular publishes)."""
import jsonschema


def _plain(node, components):
    """OpenAPI 3.0 schema -> JSON Schema: $refs inlined, `nullable` as a null alternative."""
    if isinstance(node, list):
        return [_plain(item, components) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return _plain(components[node["$ref"].rsplit("/", 1)[-1]], components)
    converted = {key: _plain(value, components) for key, value in node.items() if key != "nullable"}
    if converted.get("exclusiveMinimum") is True:
        converted["exclusiveMinimum"] = converted.pop("minimum")
    if node.get("nullable"):
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


def response_schema(client, path: str, method: str, status: int) -> dict:
    schema = client.get("/api/schema/?format=json").json()
    operation = schema["paths"][path][method.lower()]
    declared = operation["responses"][str(status)]
    return _plain(declared["content"]["application/json"]["schema"], schema["components"]["schemas"])


def assert_matches_schema(client, response, *, path: str, method: str = "GET") -> None:
    """The response's status is declared for the operation and its JSON body validates against it."""
    jsonschema.validate(response.json(), response_schema(client, path, method, response.status_code))
