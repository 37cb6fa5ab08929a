#!/usr/bin/env python3
"""Generate the endpoint catalog (``catalog/catalog.json`` + ``descriptions.json``) and ``docs/endpoints.md``.

    python scripts/generate_catalog.py [--source NEW.json] [--older OLD.json] [--check]

Sources (outside the repository): ``../shared/data/exact-online-endpoints-2025-12.json`` (451 endpoints
from picqer's model docblocks: field types and descriptions, key, deprecation, fillable fields, traits)
wins; ``exact-online-endpoints.json`` (399 endpoints scraped from Exact's reference) fills its gaps: HTTP
methods, and field lists where the newer file has none (most bulk endpoints). Endpoints only the older
file has are left out (Exact no longer documents them). One catalog *entity* groups a standard endpoint
with its ``bulk/`` and ``sync/`` variants; the hand-kept rules live in ``catalog_rules.py`` and the Edm
type derivation in ``catalog_types.py``. ``--check`` exits 1 when the checked-in files differ.

Only the standard library is used, so CI can run it before installing anything.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from catalog_docs import render_endpoints_md
from catalog_rules import (
    ALIASES,
    CANONICAL_BARE_NAMES,
    DELETED_ENTITY_TYPES,
    LINK_OVERRIDES,
    MANDATORY_FILTER_FIELDS,
    NO_DIVISION,
    REPLACEMENTS,
    SELECT_REQUIRED,
    UNVERIFIED_DELETED_CODES,
    VARIANT_ONLY,
)
from catalog_types import EDM_CODES, NAVIGATION, edm_type, edm_type_from_old

REPO_ROOT = Path(__file__).resolve().parent.parent
# ../shared/data beside the checkout (or beside the worktrees' folder).
DATA_DIR = next(
    (d / "shared" / "data" for d in REPO_ROOT.parents if (d / "shared" / "data").is_dir()),
    REPO_ROOT.parent / "shared" / "data",
)
DEFAULT_SOURCE = DATA_DIR / "exact-online-endpoints-2025-12.json"
DEFAULT_OLDER = DATA_DIR / "exact-online-endpoints.json"
PACKAGE_DIR = REPO_ROOT / "airflow_provider_exactonline" / "catalog"
CATALOG_JSON = PACKAGE_DIR / "catalog.json"
DESCRIPTIONS_JSON = PACKAGE_DIR / "descriptions.json"
ENDPOINTS_MD = REPO_ROOT / "docs" / "endpoints.md"

FORMAT_VERSION = 2
EXPECTED_ENDPOINTS = 451
EXPECTED_BULK = 21
EXPECTED_SYNC = 60  # 59 sync entities + sync/Deleted
DOC_PREFIX = "https://start.exactonline.nl/docs/HlpRestAPIResourcesDetails.aspx?name="
WRITE_METHODS = ("POST", "PUT", "DELETE")
STORABLE = "Persistance\\Storable"
FINDABLE = "Query\\Findable"

_DELETED_CODE = re.compile(r"(\d+)\s*=\s*([A-Za-z]+)")


class CatalogBuildError(Exception):
    """The reference data does not fit the rules; fix the rules in catalog_rules.py, never the data."""


def _normalize_uri(uri: str) -> tuple[str, bool]:
    """``beta/{division}/budget/X`` -> (``budget/X``, beta); older ``/api/v1/{division}/crm/X`` too."""
    text = re.sub(r"^/?api/v1/", "", uri)
    beta = text.startswith("beta/")
    text = re.sub(r"^(?:beta/)?(?:\{division\}/)?", "", text)
    if not text or "{" in text:
        raise CatalogBuildError(f"unexpected uri {uri!r}")
    return text, beta


def _methods(endpoint: dict[str, Any], older: dict[str, Any] | None, kind: str) -> list[str]:
    if older is not None:
        return list(older["methods"])
    if kind in ("bulk", "sync"):
        return ["GET"]
    methods = ["GET"] if FINDABLE in endpoint["traits"] else []
    if STORABLE in endpoint["traits"]:
        methods += list(WRITE_METHODS)
    return methods or ["GET"]


def _field_rows(
    endpoint: dict[str, Any], older: dict[str, Any] | None, twin: list[tuple[str, str, str]] | None
) -> list[tuple[str, str, str]]:
    """``[(name, type code, description)]``: the newer file's fields, else the older file's, else the twin's."""
    key = endpoint["primary_key"]
    rows: list[tuple[str, str, str]] = []
    if endpoint["fields"]:
        for item in endpoint["fields"]:
            description = (item.get("description") or "").strip()
            edm = edm_type(item["name"], item["type"], description, key)
            rows.append((item["name"], EDM_CODES[edm] if edm else NAVIGATION, description))
    elif older is not None and older["fields"]:
        known = {name: (code, text) for name, code, text in twin or []}
        for name, old_type in older["fields"]:
            if not name:
                continue
            if name in known:
                rows.append((name, *known[name]))
            else:
                edm = edm_type_from_old(name, old_type, key)
                rows.append((name, EDM_CODES[edm] if edm else NAVIGATION, ""))
    elif twin is not None:
        rows = list(twin)
    seen: set[str] = set()
    for name, _, _ in rows:
        if name.lower() in seen:
            raise CatalogBuildError(f"{endpoint['uri']}: duplicate field {name!r}")
        seen.add(name.lower())
    return rows


def _variant_record(
    path: str, endpoint: dict[str, Any], older: dict[str, Any] | None, rows: list[tuple[str, str, str]], beta: bool
) -> dict[str, Any]:
    kind = _kind(path)
    doc = endpoint["doc"] or (older or {}).get("doc", "")
    doc = doc[len(DOC_PREFIX) :] if doc.startswith(DOC_PREFIX) else doc
    methods = _methods(endpoint, older, kind)
    record: dict[str, Any] = {"p": path, "m": methods, "d": doc, "mn": endpoint["model"]}
    record["f"] = [name for name, _, _ in rows]
    record["t"] = "".join(code for _, code, _ in rows)
    record["_x"] = [text for _, _, text in rows]  # descriptions: moved to descriptions.json
    key = endpoint["primary_key"]
    if key and (not rows or rows[0][0] != key):
        record["k"] = key
    if STORABLE in endpoint["traits"] and any(m in methods for m in WRITE_METHODS):
        names = {name.lower(): name for name in record["f"]}
        unknown = [name for name in endpoint["fillable"] if name.lower() not in names]
        if unknown:
            raise CatalogBuildError(f"{path}: fillable fields not in the field list: {unknown}")
        fillable = [names[name.lower()] for name in endpoint["fillable"]]
        record["w"] = 1 if fillable == record["f"] else fillable
    if endpoint["deprecated"]:
        record["dep"] = 1
        replacement = REPLACEMENTS.get(path.lower())
        if replacement is not None:
            record["rep"], record["note"] = replacement
    if beta:
        record["beta"] = 1
    if path.lower() in NO_DIVISION:
        record["nodiv"] = 1
    return record


def _kind(path: str) -> str:
    head = path.split("/", 1)[0].lower()
    return head if head in ("bulk", "sync") else "std"


def _entity_name(path: str) -> tuple[str, str]:
    segments = path.split("/")
    if segments[0].lower() == "read":
        return segments[1].lower(), "/".join(segments[2:])
    return segments[0].lower(), "/".join(segments[1:])


def _target_of(path: str, standard: dict[str, dict[str, Any]], entities: dict[str, dict[str, Any]]) -> str:
    """The entity key a bulk/sync path belongs to (creating variant-only entities)."""
    lower = path.lower()
    segments = path.split("/")
    if lower in LINK_OVERRIDES:
        target = LINK_OVERRIDES[lower].lower()
        if target not in standard:
            raise CatalogBuildError(f"LINK_OVERRIDES sends {path!r} to unknown {LINK_OVERRIDES[lower]!r}")
        return target
    if len(segments) == 3 and f"{segments[1]}/{segments[2]}".lower() in standard:
        return f"{segments[1]}/{segments[2]}".lower()
    if lower in VARIANT_ONLY:
        service, name = (segments[1].lower(), segments[2]) if len(segments) == 3 else ("", segments[-1])
        target = f"{service}/{name}".lower() if service else lower
        entities.setdefault(target, {"n": name, "s": service})
        return target
    raise CatalogBuildError(f"{path!r} matches no standard endpoint: add it to LINK_OVERRIDES or VARIANT_ONLY")


def _deleted_types(reference: list[dict[str, Any]], entities: dict[str, dict[str, Any]]) -> dict[str, str]:
    deleted = next((e for e in reference if e["uri"].lower() == "sync/deleted"), None)
    if deleted is None:
        raise CatalogBuildError("sync/deleted is missing from the reference data")
    text = next(f["description"] for f in deleted["fields"] if f["name"] == "EntityType")
    listed = {int(code): name for code, name in _DELETED_CODE.findall(text)}
    for code, name in listed.items():
        if code not in DELETED_ENTITY_TYPES or DELETED_ENTITY_TYPES[code][0] != name:
            raise CatalogBuildError(f"sync/Deleted lists EntityType {code} = {name}; DELETED_ENTITY_TYPES disagrees")
    for code in DELETED_ENTITY_TYPES:
        if code not in listed and code not in UNVERIFIED_DELETED_CODES:
            raise CatalogBuildError(f"EntityType {code} is not in Exact's list; mark it UNVERIFIED or drop it")
    result: dict[str, str] = {}
    for code, (exact_name, targets) in sorted(DELETED_ENTITY_TYPES.items()):
        result[str(code)] = exact_name
        for target in targets:
            linked = entities.get(target.lower())
            if linked is None:
                raise CatalogBuildError(f"EntityType {code} links to unknown entity {target!r}")
            if "del" in linked:
                raise CatalogBuildError(f"{target!r} has two EntityType codes")
            linked["del"] = code
    return result


def _mandatory_filters(entities: dict[str, dict[str, Any]]) -> None:
    """Standard and bulk endpoints of every entity with a sync twin get ``mf`` (allowed fields, maybe [])."""
    for key in MANDATORY_FILTER_FIELDS:
        if key not in entities or "sync" not in entities[key]:
            raise CatalogBuildError(f"MANDATORY_FILTER_FIELDS names {key!r}, which has no sync twin")
    for key, entity in entities.items():
        if "sync" not in entity:
            continue
        quoted, complete = MANDATORY_FILTER_FIELDS.get(key, ((), True))
        for kind in ("std", "bulk"):
            record = entity.get(kind)
            if record is None:
                continue
            allowed = list(quoted)
            if not complete:
                last = quoted[-1].lower()
                allowed += [name for name in record["f"] if name.lower() > last and name not in allowed]
            record["mf"] = allowed


def build_catalog(reference: dict[str, Any], older: dict[str, Any] | None = None) -> dict[str, Any]:
    """Reduce the reference data to the catalog structure (see the package docstring for the format)."""
    endpoints = reference["endpoints"]
    old_by_path = {_normalize_uri(e["uri"])[0].lower(): e for e in (older or {}).get("endpoints", [])}
    parsed = sorted(((*_normalize_uri(e["uri"]), e) for e in endpoints), key=lambda item: _kind(item[0]) != "std")
    standard: dict[str, dict[str, Any]] = {}
    entities: dict[str, dict[str, Any]] = {}
    twins: dict[str, list[tuple[str, str, str]]] = {}  # entity key -> standard field rows
    counts = {"std": 0, "bulk": 0, "sync": 0}
    for path, beta, endpoint in parsed:  # standard endpoints first, so variants can borrow their fields
        kind = _kind(path)
        counts[kind] += 1
        target = path.lower() if kind == "std" else _target_of(path, standard, entities)
        older_endpoint = old_by_path.get(path.lower())
        rows = _field_rows(endpoint, older_endpoint, twins.get(target) if kind == "bulk" else None)
        record = _variant_record(path, endpoint, older_endpoint, rows, beta)
        if kind == "std":
            if target in standard:
                raise CatalogBuildError(f"duplicate standard endpoint {path!r}")
            service, name = _entity_name(path)
            standard[target] = entities[target] = {"n": name, "s": service}
            twins[target] = rows
        entity = entities[target]
        if kind in entity:
            raise CatalogBuildError(f"two {kind} endpoints for {target!r}")
        entity[kind] = record
    for lower in VARIANT_ONLY | set(LINK_OVERRIDES):
        if not any(path.lower() == lower for path, _, _ in parsed):
            raise CatalogBuildError(f"link rule for {lower!r} matches nothing in the reference data")
    found = (len(endpoints), counts["bulk"], counts["sync"])
    if found != (EXPECTED_ENDPOINTS, EXPECTED_BULK, EXPECTED_SYNC):
        raise CatalogBuildError(
            f"expected {EXPECTED_ENDPOINTS} endpoints ({EXPECTED_BULK} bulk / {EXPECTED_SYNC} sync), "
            f"found {found[0]} ({found[1]} / {found[2]})"
        )

    deleted_types = _deleted_types(endpoints, entities)
    _mandatory_filters(entities)
    for bare, target in CANONICAL_BARE_NAMES.items():
        if target.lower() not in entities or entities[target.lower()]["n"].lower() != bare:
            raise CatalogBuildError(f"CANONICAL_BARE_NAMES: {bare!r} -> {target!r} is not an entity of that name")
    for alias, target in ALIASES.items():
        if target.lower() not in standard or alias in standard:
            raise CatalogBuildError(f"ALIASES: {alias!r} -> {target!r} must name a standard endpoint")
    for lower in SELECT_REQUIRED | NO_DIVISION | set(REPLACEMENTS):
        if not any(path.lower() == lower for path, _, _ in parsed):
            raise CatalogBuildError(f"a rule names unknown endpoint {lower!r}")
    for lower in SELECT_REQUIRED:
        standard[lower]["std"]["sel"] = 1

    ordered = [entities[key] for key in sorted(entities, key=lambda k: (entities[k]["s"], entities[k]["n"].lower(), k))]
    for entity in ordered:
        std = entity.get("std")
        for kind in ("bulk", "sync"):
            same = entity.get(kind)
            # Keep the file small: a variant with exactly the standard field list stores none.
            if (
                std is not None
                and same is not None
                and (same["f"], same["t"], same["_x"])
                == (
                    std["f"],
                    std["t"],
                    std["_x"],
                )
            ):
                del same["f"], same["t"], same["_x"]
    return {
        "version": FORMAT_VERSION,
        "source": f"{reference.get('source', '')} at {reference.get('commit', '')[:7]} "
        f"({reference.get('commit_date', '')}); gaps filled from {(older or {}).get('source', 'nothing')}",
        "doc_prefix": DOC_PREFIX,
        "canonical": dict(sorted(CANONICAL_BARE_NAMES.items())),
        "aliases": dict(sorted(ALIASES.items())),
        "deleted_types": deleted_types,
        "entities": ordered,
    }


def split_descriptions(catalog: dict[str, Any]) -> dict[str, Any]:
    """Move field descriptions out of ``catalog`` into their own (lazily loaded) structure."""
    texts: dict[str, int] = {"": 0}
    by_path: dict[str, list[int]] = {}
    for entity in catalog["entities"]:
        for kind in ("std", "bulk", "sync"):
            record = entity.get(kind)
            if record is None or "_x" not in record:
                continue
            by_path[record["p"].lower()] = [texts.setdefault(text, len(texts)) for text in record.pop("_x")]
    return {"version": FORMAT_VERSION, "texts": list(texts), "fields": by_path}


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, sort_keys=False) + "\n"


def generate(source: Path, older: Path | None = None) -> tuple[str, str, str]:
    """Return (catalog.json, descriptions.json, endpoints.md) texts for the reference files."""
    reference = json.loads(source.read_text(encoding="utf-8"))
    older_data = json.loads(older.read_text(encoding="utf-8")) if older is not None else None
    catalog = build_catalog(reference, older_data)
    descriptions = split_descriptions(catalog)
    return _dump(catalog), _dump(descriptions), render_endpoints_md(catalog)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="2025-12 reference endpoints JSON")
    parser.add_argument("--older", type=Path, default=DEFAULT_OLDER, help="older reference that fills gaps")
    parser.add_argument("--check", action="store_true", help="fail if the checked-in files are out of date")
    args = parser.parse_args(argv)
    for path in (args.source, args.older):
        if not path.is_file():
            parser.error(f"reference file not found: {path} (clone the shared/ data beside the repo)")
    try:
        texts = generate(args.source, args.older)
    except CatalogBuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    outputs = dict(zip((CATALOG_JSON, DESCRIPTIONS_JSON, ENDPOINTS_MD), texts, strict=True))
    if args.check:
        stale = [str(p) for p, text in outputs.items() if not p.is_file() or p.read_text(encoding="utf-8") != text]
        if stale:
            print("out of date (run scripts/generate_catalog.py): " + ", ".join(stale), file=sys.stderr)
            return 1
        return 0
    for path, text in outputs.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(REPO_ROOT)} ({len(text.encode()):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
