"""Load ``catalog.json`` once and resolve names and paths to entities (the package's public functions)."""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

from airflow_provider_exactonline.catalog._errors import closest, unknown_entity
from airflow_provider_exactonline.catalog.endpoint import Endpoint, endpoint_from
from airflow_provider_exactonline.catalog.spec import VARIANTS, EntitySpec, Variant

log = logging.getLogger("airflow_provider_exactonline.catalog")

CATALOG_FILE = Path(__file__).with_name("catalog.json")
_SOURCE_KEYS: dict[Variant, str] = {"standard": "std", "bulk": "bulk", "sync": "sync"}


class Resolution(NamedTuple):
    """What :func:`resolve` found: the entity (None for a raw path), the variant, and the path to call."""

    spec: EntitySpec | None
    variant: Variant
    path: str


@dataclass
class _Index:
    entities: list[EntitySpec]
    names: dict[str, EntitySpec]  # every accepted lower-case name -> entity
    name_variants: dict[str, Variant]  # names that denote one variant (paths, model names) -> that variant
    ambiguous: dict[str, tuple[str, ...]]  # bare name -> qualified candidates
    paths: dict[str, tuple[EntitySpec, Variant]]  # lower-case variant path -> (entity, variant)
    deleted_types: dict[int, str]


def _load(data: Mapping[str, Any]) -> _Index:
    doc_prefix = data.get("doc_prefix", "")
    entities: list[EntitySpec] = []
    for raw in data["entities"]:
        endpoints: dict[str, Endpoint] = {}
        for variant in VARIANTS:
            record = raw.get(_SOURCE_KEYS[variant])
            if record is not None:
                endpoints[variant] = endpoint_from(record, raw.get("std"), doc_prefix, _SOURCE_KEYS[variant])
        entities.append(
            EntitySpec(
                name=raw["n"],
                service=raw["s"],
                deleted_entity_type=raw.get("del"),
                _endpoints=MappingProxyType(endpoints),
            )
        )

    paths: dict[str, tuple[EntitySpec, Variant]] = {}
    for spec in entities:
        for variant in spec.variants:
            key = spec.variant_path(variant).lower()
            if key in paths:
                raise RuntimeError(f"catalog.json: two endpoints with path {key!r}")
            paths[key] = (spec, variant)

    # Accepted names, strongest claim first: exact variant paths, then service/name forms, then bare
    # names, then aliases and picqer's model names where still free.
    names: dict[str, EntitySpec] = {key: spec for key, (spec, _) in paths.items()}
    name_variants: dict[str, Variant] = {key: variant for key, (_, variant) in paths.items()}
    qualified: dict[str, set[EntitySpec]] = {}
    for spec in entities:
        forms = {spec.qualified_name.lower()}
        if spec.service:
            forms.add(f"{spec.service}/{spec.name}".lower())
        for variant in ("bulk", "sync"):
            if spec.has_variant(variant):
                forms.add(spec.variant_path(variant).split("/", 1)[1].lower())  # Financial/TransactionLines
        for form in forms:
            qualified.setdefault(form, set()).add(spec)
    for form, specs in qualified.items():
        if form not in names and len(specs) == 1:
            names[form] = next(iter(specs))

    by_bare: dict[str, list[EntitySpec]] = {}
    for spec in entities:
        by_bare.setdefault(spec.name.lower(), []).append(spec)
    canonical: Mapping[str, str] = data.get("canonical", {})
    ambiguous: dict[str, tuple[str, ...]] = {}
    for bare, candidates in by_bare.items():
        if bare in names:
            continue
        chosen = _choose_bare(bare, candidates, canonical, paths)
        if chosen is None:
            ambiguous[bare] = tuple(sorted(spec.qualified_name for spec in candidates))
        else:
            names[bare] = chosen

    for alias, target in data.get("aliases", {}).items():
        spec, variant = paths[target.lower()]
        names.setdefault(alias, spec)
        name_variants.setdefault(alias, variant)
    for spec in entities:
        for variant in spec.variants:
            model = spec.model_for(variant).lower()
            if model and model not in names and model not in ambiguous:
                names[model] = spec
                name_variants[model] = variant

    deleted_types = {int(code): name for code, name in data.get("deleted_types", {}).items()}
    return _Index(entities, names, name_variants, ambiguous, paths, deleted_types)


def _choose_bare(
    bare: str,
    candidates: list[EntitySpec],
    canonical: Mapping[str, str],
    paths: Mapping[str, tuple[EntitySpec, Variant]],
) -> EntitySpec | None:
    if len(candidates) == 1:
        return candidates[0]
    if bare in canonical:
        return paths[canonical[bare].lower()][0]
    with_variants = [spec for spec in candidates if spec.has_variant("bulk") or spec.has_variant("sync")]
    if len(with_variants) == 1:
        return with_variants[0]
    plain = [spec for spec in candidates if not spec.beta and not (spec.path or "").lower().startswith("read/")]
    if len(plain) == 1:
        return plain[0]
    return None


@functools.cache
def _index() -> _Index:
    return _load(json.loads(CATALOG_FILE.read_text(encoding="utf-8")))


# -- public functions ------------------------------------------------------------------------------------

_URL_PREFIX = re.compile(r"^[a-z][a-z0-9+.-]*://[^/]+", re.IGNORECASE)
_API_PREFIX = re.compile(r"^(?:api/v1/)?(?:beta/)?(?:(?:\d+|\{division\})/)?", re.IGNORECASE)


def _normalize_path(raw: str) -> str:
    """``https://host/api/v1/123/crm/Accounts(guid'x')/$count?$top=1`` -> ``crm/Accounts``."""
    text = _URL_PREFIX.sub("", raw.strip())
    text = text.split("?", 1)[0].split("(", 1)[0].strip().strip("/")
    if text.endswith("/$count"):
        text = text[: -len("/$count")]
    return _API_PREFIX.sub("", text, count=1).strip("/")


def _variant_of(path: str) -> Variant:
    head = path.split("/", 1)[0].lower()
    return head if head in ("bulk", "sync") else "standard"  # type: ignore[return-value]


def _warn_if_deprecated(spec: EntitySpec, variant: Variant) -> None:
    message = spec.deprecation_message(variant)
    if message is not None:
        log.warning("%s", message)


def all_entities() -> list[EntitySpec]:
    """Every entity, sorted by service then name."""
    return list(_index().entities)


def sync_entities() -> list[EntitySpec]:
    """Every entity with a ``sync/`` endpoint other than ``sync/Deleted`` (the deletion log)."""
    return [spec for spec in _index().entities if spec.has_variant("sync") and spec.sync_path != "sync/Deleted"]


def find_entity(name: str) -> EntitySpec | None:
    """Like :func:`resolve_entity` but returns None instead of raising (and logs nothing)."""
    return _index().names.get(_normalize_path(name).lower())


def _variant_named(index: _Index, key: str, spec: EntitySpec) -> Variant:
    variant = index.name_variants.get(key)
    found = index.paths.get(key)
    if found is not None and found[0] is spec:
        return found[1]
    return variant if variant is not None and spec.has_variant(variant) else spec.primary_variant


def resolve_entity(name: str) -> EntitySpec:
    """Resolve a friendly name (``Accounts``, ``crm/Accounts``, ``sync/CRM/Accounts``, ``SyncAccount``,
    ``System/Me``; any case) to its entity. Logs a warning when the named endpoint is deprecated.

    Raises :class:`ExactOnlineUnknownEntity` for unknown or ambiguous names, listing up to five candidates.
    """
    index = _index()
    key = _normalize_path(name).lower()
    spec = index.names.get(key)
    if spec is not None:
        _warn_if_deprecated(spec, _variant_named(index, key, spec))
        return spec
    if key in index.ambiguous:
        candidates = index.ambiguous[key]
        error = unknown_entity(
            f"Entity name {name!r} is ambiguous: it exists in several services. Use one of: {', '.join(candidates)}."
        )
        error.suggestions = list(candidates)
        raise error
    display = {k: index.names[k].qualified_name for k in index.names}
    display |= {bare: " / ".join(candidates) for bare, candidates in index.ambiguous.items()}
    close = closest(key, display)
    hint = f" Closest: {', '.join(close)}." if close else ""
    example = _normalize_path(name) or "service/Entity"
    error = unknown_entity(
        f"Unknown Exact Online entity {name!r}.{hint} See docs/endpoints.md for the catalog; to call an "
        f"endpoint the catalog lacks, pass its raw path with a leading '/', e.g. '/{example}'."
    )
    error.suggestions = close
    raise error


def resolve_path(raw_path: str) -> tuple[EntitySpec | None, Variant]:
    """Map a URL path (``sync/CRM/Accounts``, ``crm/Accounts(guid'…')``, a full URL) to ``(entity, variant)``.

    Never raises: a path the catalog lacks gives ``(None, variant)``, with the variant read from a
    ``bulk/``/``sync/`` prefix (else ``"standard"``), so raw paths keep working.
    """
    path = _normalize_path(raw_path)
    found = _index().paths.get(path.lower())
    if found is not None:
        return found
    return None, _variant_of(path)


def resolve(entity: str) -> Resolution:
    """One-stop resolution for hooks and operators.

    A string starting with ``/`` or ``http(s)://`` is a raw path: it is never rejected; the entity and
    variant are filled in when the catalog knows the path. Anything else is a catalog name (see
    :func:`resolve_entity`; unknown names raise); its variant is the one the name denotes (a
    ``bulk/``/``sync/`` path, a model name such as ``SyncAccount``), else the entity's primary variant.
    Resolving a deprecated endpoint logs a warning naming its replacement.
    """
    text = entity.strip()
    if text.startswith("/") or _URL_PREFIX.match(text):
        spec, variant = resolve_path(text)
        if spec is None:
            return Resolution(None, variant, _normalize_path(text))
        _warn_if_deprecated(spec, variant)
        return Resolution(spec, variant, spec.variant_path(variant))
    index = _index()
    key = _normalize_path(text).lower()
    found = index.names.get(key)
    if found is None:
        resolve_entity(text)  # raises with suggestions
        raise AssertionError("unreachable")  # pragma: no cover
    variant = _variant_named(index, key, found)
    _warn_if_deprecated(found, variant)
    return Resolution(found, variant, found.variant_path(variant))


def deleted_entity_types() -> dict[int, str]:
    """Every known ``sync/Deleted`` EntityType code -> Exact's name for it (also the unlinked ones)."""
    return dict(_index().deleted_types)
