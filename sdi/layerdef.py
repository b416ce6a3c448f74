"""Layer definitions: ``layers/<id>.yml`` files loaded into typed pydantic models.

A minimal definition names the layer, its bilingual title and abstract, custodian, licence and source
file; everything else is detected. Optional keys carry what detection cannot know (source CRS,
encoding, coordinate columns, field renames and types, primary key, geometry type).

A source is a file (``source.path``) or a URL (``source.url``, harvested by ``sdi sync``): a file or zip over
HTTP(S) (``service: file``), an OGC API – Features collection (``ogcapi``), a WFS 2.0 feature type (``wfs``) or
an ArcGIS REST layer (``arcgis``).
"""

from __future__ import annotations

import re
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from sdi.access.groups import Access
from sdi.errors import ConfigError, LayerDefinitionError, LayerNotFoundError, SourceNotFoundError
from sdi.yamlfile import read_yaml

GeometryType = Literal[
    "Point", "LineString", "Polygon", "MultiPoint", "MultiLineString", "MultiPolygon", "Geometry"
]
FieldType = Literal["text", "integer", "bigint", "float", "boolean", "date", "timestamp", "json"]
LAYER_ID_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
LayerId = Annotated[str, Field(pattern=LAYER_ID_PATTERN)]
#: Longest ``source.layer`` (a layer or sheet name, or ``"<path in zip>:<layer>"``).
MAX_LAYER_REF = 1024
#: ISO 19115 MD_TopicCategoryCode values.
TopicCategory = Literal[
    "farming", "biota", "boundaries", "climatologyMeteorologyAtmosphere", "economy", "elevation", "environment",
    "geoscientificInformation", "health", "imageryBaseMapsEarthCover", "intelligenceMilitary", "inlandWaters",
    "location", "oceans", "planningCadastre", "society", "structure", "transportation",
    "utilitiesCommunication",
]
#: ISO 19115 MD_MaintenanceFrequencyCode values.
UpdateFrequency = Literal[
    "continual", "daily", "weekly", "fortnightly", "monthly", "quarterly", "biannually", "annually", "asNeeded",
    "irregular", "notPlanned", "unknown",
]
#: How a ``source.url`` is harvested.
Service = Literal["file", "ogcapi", "wfs", "arcgis"]
#: Longest ``source.url``.
MAX_URL = 2048


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Bilingual(_Strict):
    """Text in English and Traditional Chinese."""

    en: str = Field(min_length=1)
    zh: str | None = None


#: A published field name (what ``fields.<column>.name`` may be).
FieldName = Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]{0,62}$")]


class TitleFields(_Strict):
    """The fields that name a layer's features on English (``en``) and Chinese (``zh``, else ``en``) pages; read
    by :func:`sdi.web.titles.declared_fields` from the stored definition."""

    en: FieldName
    zh: FieldName | None = None


class CoordinateColumns(_Strict):
    """Columns holding point coordinates in a table (x is easting or longitude)."""

    x: str
    y: str


class FieldSpec(_Strict):
    """How one source column is published: new name, type and bilingual description."""

    name: FieldName | None = None
    type: FieldType | None = None
    description: Bilingual | None = None


def _keyed(key: str, problem: str) -> PydanticCustomError:
    """A validation error that :func:`_format_errors` reports under ``source.<key>``."""
    return PydanticCustomError("keyed", "{key}: {problem}", {"key": key, "problem": problem})


#: Keys that only some services take: key -> the services that take it.
_SERVICE_KEYS: dict[str, tuple[str, ...]] = {
    "layer": ("file",), "encoding": ("file",), "coordinates": ("file",), "collection": ("ogcapi",),
    "typename": ("wfs",), "output": ("wfs",), "page_size": ("ogcapi", "wfs", "arcgis"),
}


class Source(_Strict):
    """Where the data comes from: a file (``path``, relative to the YAML file) or a URL (``url``) with the
    ``service`` that serves it and that service's parameters."""

    path: Path | None = None
    url: Annotated[str, Field(min_length=1, max_length=MAX_URL)] | None = None
    service: Service = "file"
    collection: Annotated[str, Field(min_length=1, max_length=MAX_LAYER_REF)] | None = None
    typename: Annotated[str, Field(min_length=1, max_length=MAX_LAYER_REF)] | None = None
    output: Literal["gml", "geojson"] | None = None
    page_size: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    layer: Annotated[str, Field(min_length=1, max_length=MAX_LAYER_REF)] | None = None
    encoding: str | None = None
    crs: str | int | None = None
    coordinates: CoordinateColumns | None = None

    @model_validator(mode="before")
    @classmethod
    def _path_or_url(cls, data: Any) -> Any:
        if isinstance(data, dict):
            has_path, has_url = data.get("path") is not None, data.get("url") is not None
            if not has_path and not has_url:
                raise _keyed("path", "Field required (a file; or give source.url)")
            if has_path and has_url:
                raise _keyed("url", "give source.path or source.url, not both")
        return data

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(value)
        except ValueError as exc:
            raise ValueError(f"not a URL ({exc})") from None
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if any(c.isspace() for c in value):
            raise ValueError("must not contain spaces (percent-encode them as %20)")
        return value

    @model_validator(mode="after")
    def _service_keys(self) -> Source:
        if self.url is None and self.service != "file":
            raise _keyed("service", f"{self.service!r} needs source.url")
        for key, services in _SERVICE_KEYS.items():
            if getattr(self, key) is not None and self.service not in services:
                raise _keyed(key, f"not a parameter of service {self.service!r} "
                                  f"(only of {', '.join(repr(s) for s in services)})")
        if self.path is not None and self.page_size is not None:
            raise _keyed("page_size", "only for a source.url")
        if self.service == "wfs" and self.typename is None:
            raise _keyed("typename", "Field required for service 'wfs' (the feature type, e.g. ms:landslides)")
        if self.service == "ogcapi" and self.collection is None and "/collections/" not in (self.url or ""):
            raise _keyed("collection", "Field required for service 'ogcapi' unless source.url is the collection's "
                                       "URL (…/collections/<id>)")
        return self

    @field_validator("encoding")
    @classmethod
    def _known_codec(cls, value: str | None) -> str | None:
        if value is None:
            return None
        import codecs

        try:
            codecs.lookup(value)
        except LookupError as exc:
            raise ValueError(f"unknown encoding {value!r}") from exc
        return value


class LayerDefinition(_Strict):
    """One published layer, as described by ``layers/<id>.yml``."""

    id: LayerId
    title: Bilingual
    abstract: Bilingual
    custodian: str = Field(min_length=1)
    licence: str = Field(min_length=1)
    source: Source
    fields: dict[str, FieldSpec] = Field(default_factory=dict)
    primary_key: str | None = None
    geometry_type: GeometryType | None = None
    keywords: list[str] = Field(default_factory=list)
    theme: TopicCategory | None = None
    update_frequency: UpdateFrequency = "notPlanned"
    attribution: str | None = None
    synthetic: bool = False
    access: Access = "public"
    #: The field (as published, after ``fields`` renames) whose value names a feature on the HTML pages and in
    #: link titles: one name, or ``{en: name_en, zh: name_zh}``. Without it the pages detect one (see
    #: :mod:`sdi.web.titles`).
    title_field: FieldName | TitleFields | None = None

    _yaml_path: Path | None = PrivateAttr(default=None)
    _fetched_path: Path | None = PrivateAttr(default=None)

    @pydantic.model_serializer(mode="wrap")
    def _without_unset_title_field(self, handler: pydantic.SerializerFunctionWrapHandler) -> Any:
        """Dumps (and so the stored definitions) of layers without ``title_field`` stay as they were before the
        key existed, so that ``sdi sync`` does not see their definitions as changed."""
        data = handler(self)
        if isinstance(data, dict) and data.get("title_field") is None:
            data.pop("title_field", None)
        return data

    @model_validator(mode="after")
    def _title_field_published(self) -> LayerDefinition:
        """A title field that names a source column renamed under ``fields`` must use the published name."""
        if self.title_field is None:
            return self
        field = self.title_field
        renamed = {source: spec.name for source, spec in self.fields.items() if spec.name}
        for name in [field] if isinstance(field, str) else [field.en, field.zh]:
            if name and renamed.get(name, name) != name:
                published = renamed[name]
                raise PydanticCustomError("keyed", "{key}: {problem}", {"key": "title_field", "problem": (
                    f"{name!r} is renamed to {published!r} under fields; name the published field {published!r}")})
        return self

    @property
    def yaml_path(self) -> Path | None:
        """The file this definition was read from, if any."""
        return self._yaml_path

    @property
    def source_path(self) -> Path:
        """The source file's absolute path (relative paths resolve against the YAML file's folder); for a
        ``source.url``, the file it was fetched into (see :meth:`fetched_into`).

        Raises
        ------
        SourceNotFoundError
            When the source is a URL that has not been fetched (``sdi sync`` fetches and loads it).
        """
        path = self.source.path
        if path is None:
            if self._fetched_path is None:
                raise SourceNotFoundError(f"{self.label}: source.url is harvested, not a file: fetch and load it "
                                          f"with `sdi sync {self.id}`")
            return self._fetched_path
        if not path.is_absolute() and self._yaml_path is not None:
            path = self._yaml_path.parent / path
        return path.resolve()

    @property
    def is_remote(self) -> bool:
        """Whether the source is a URL (harvested by ``sdi sync``) rather than a file."""
        return self.source.url is not None

    def fetched_into(self, path: Path) -> LayerDefinition:
        """A copy of this definition whose source is the local file ``path`` the URL was fetched into.

        The copy dumps (and so is stored in the catalogue) exactly as this definition, URL and all.
        """
        copy = self.model_copy()
        copy._yaml_path = self._yaml_path
        copy._fetched_path = path.resolve()
        return copy

    @property
    def label(self) -> str:
        """How messages name this layer: its YAML file, or its id."""
        return str(self._yaml_path) if self._yaml_path else self.id


def _format_errors(where: str, exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "keyed":  # raised by a model validator for one of its keys
            ctx = err.get("ctx") or {}
            key = ".".join(str(p) for p in (*err["loc"], ctx.get("key", ""))).strip(".")
            msg = str(ctx.get("problem", msg))
        lines.append(f"{where}: {key}: {msg}")
    return lines


def parse_definition(data: Any, *, where: str, yaml_path: Path | None = None) -> LayerDefinition:
    """Validate a mapping as a layer definition.

    Raises
    ------
    LayerDefinitionError
        One line per problem, each naming ``where`` and the key.
    """
    if not isinstance(data, dict):
        raise LayerDefinitionError(f"{where}: expected a mapping of keys, got {type(data).__name__}")
    try:
        definition = LayerDefinition.model_validate(data)
    except ValidationError as exc:
        raise LayerDefinitionError("; ".join(_format_errors(where, exc))) from exc
    definition._yaml_path = yaml_path.resolve() if yaml_path else None
    return definition


def read_definition(path: Path | str) -> LayerDefinition:
    """Read and validate one layer YAML file.

    Raises
    ------
    LayerDefinitionError
        When the file is not a regular file (a FIFO would block), is not valid YAML or nests too deeply,
        misses a key, has a key of the wrong type, or its ``id`` differs from its file name.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except OSError:
        mode = stat.S_IFREG  # missing or unreadable: read_yaml names the problem
    if not stat.S_ISREG(mode):
        raise LayerDefinitionError(f"{path}: not a regular file; a layer definition is a YAML file")
    try:
        data = read_yaml(path, where=str(path), error=LayerDefinitionError, missing=LayerNotFoundError,
                         what="layer file")
    except RecursionError as exc:  # PyYAML composes nested collections recursively
        raise LayerDefinitionError(f"{path}: not valid YAML: nested too deeply") from exc
    definition = parse_definition(data, where=str(path), yaml_path=path)
    if definition.id != path.stem:
        raise LayerDefinitionError(f"{path}: id: {definition.id!r} does not match the file name {path.stem!r}")
    return definition


def definition_files(layers_dir: Path) -> list[Path]:
    """Return the layer YAML files in ``layers_dir``, sorted by name."""
    if not layers_dir.is_dir():
        raise ConfigError(f"layers directory {layers_dir} does not exist (SDI_LAYERS_DIR)")
    return sorted(p for p in layers_dir.iterdir() if p.suffix in (".yml", ".yaml"))


def _exists(path: Path) -> bool:
    """``path.exists()``, but ``False`` for a name the file system refuses (too long, say)."""
    try:
        return path.exists()
    except OSError:
        return False


def _shown(ref: str, limit: int = 80) -> str:
    return repr(ref if len(ref) <= limit else f"{ref[:limit]}… ({len(ref):,} characters)")


def resolve(ref: str, layers_dir: Path) -> LayerDefinition:
    """Find a layer by id (``layers_dir/<id>.yml``) or by a path to a YAML file.

    Raises
    ------
    LayerNotFoundError
        No such file, or ``ref`` is neither an existing file nor a valid layer id (at most 63 characters).
    LayerDefinitionError
        The file found is not a valid layer definition.
    """
    candidate = Path(ref)
    if candidate.suffix in (".yml", ".yaml") or _exists(candidate):
        return read_definition(candidate)
    if not re.fullmatch(LAYER_ID_PATTERN, ref):
        raise LayerNotFoundError(f"no layer {_shown(ref)}: not a YAML file, nor a layer id (a lower-case letter, "
                                 f"then at most 62 lower-case letters, digits or underscores)")
    for suffix in (".yml", ".yaml"):
        path = layers_dir / f"{ref}{suffix}"
        if _exists(path):
            return read_definition(path)
    raise LayerNotFoundError(f"no layer {ref!r}: no file {layers_dir / (ref + '.yml')}")


def validate_files(paths: Iterable[Path]) -> tuple[list[LayerDefinition], list[str]]:
    """Validate every file; return the valid definitions and one error line per problem found.

    Besides the schema, checks that each source file exists and that ids are unique.
    """
    good: list[LayerDefinition] = []
    problems: list[str] = []
    seen: dict[str, Path] = {}
    for path in paths:
        try:
            definition = read_definition(path)
        except (LayerDefinitionError, LayerNotFoundError) as exc:
            problems.extend(str(exc).split("; "))
            continue
        if definition.source.path is not None and not _exists(definition.source_path):
            problems.append(f"{path}: source.path: file {_shown(str(definition.source_path), 200)} does not exist")
            continue
        if definition.id in seen:
            problems.append(f"{path}: id: {definition.id!r} is also defined in {seen[definition.id]}")
            continue
        seen[definition.id] = path
        good.append(definition)
    return good, problems
