"""Task and job manifests: pydantic models and safe YAML loading with file/line/field errors."""

from __future__ import annotations

import re
import stat
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ManifestError

STAGE_NAME = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StageRef(_Strict):
    """A registered stage by dotted name, with params that override its defaults."""

    stage: str = Field(pattern=STAGE_NAME, description="Registered dotted stage name, e.g. text.tokenize")
    params: dict[str, Any] = Field(default_factory=dict, description="Defaults for this stage's params")


class ModelSpec(_Strict):
    """Which model a task loads by default, and how."""

    default: str | None = Field(None, description="Hub id or local directory; null when the task needs none")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit)")
    loader: str | None = Field(None, description="Registered model loader name")
    options: dict[str, Any] = Field(default_factory=dict, description="Passed to the loader as source.options")


class Batching(_Strict):
    """How the core batches inputs for this task."""

    sort_by_length: bool = Field(
        False,
        description="Batch preprocessed items of similar sort_length together (within a window) so batches pad little",
    )
    batch_size: int = Field(8, ge=1, description="Default batch size")
    continuous: bool = Field(
        False,
        description="The model stage schedules items itself (a continuous-batching engine): after preprocessing, "
        "it gets every input of a call at once, in input order",
    )


class TaskManifest(_Strict):
    """A task: name, inputs, model and the stages that run it."""

    task: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", description="Task name")
    aliases: list[str] = Field(default_factory=list, description="Other names for the task")
    name_pattern: str | None = Field(
        None,
        description="Regex of extra task names; its named groups become call params (translation_en_to_de)",
    )
    modality: str = Field(pattern=r"^[a-z][a-z0-9_-]*$", description="Grouping for listings: text, vision, audio...")
    input: str = Field(
        pattern=r"^[a-z][a-z0-9_-]*$",
        description="What one input item is: an input kind a plugin registered (text, image, audio, chat, object)",
    )
    description: str = ""
    model: ModelSpec = Field(default_factory=lambda: ModelSpec())
    batching: Batching = Field(default_factory=lambda: Batching())
    preprocess: list[StageRef] = Field(default_factory=list)
    model_stage: StageRef
    postprocess: list[StageRef] = Field(default_factory=list)

    @field_validator("name_pattern")
    @classmethod
    def _valid_regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from exc
        return value

    def stage_refs(self) -> list[StageRef]:
        return [*self.preprocess, self.model_stage, *self.postprocess]


class JobInputs(_Strict):
    """Exactly one input source of a batch job."""

    files: str | None = Field(None, description="Glob, one item per file (relative to the manifest)")
    jsonl: str | None = Field(None, description="JSON Lines file, one item per line")
    csv: str | None = Field(None, description="CSV file with a header, one item per row")
    reader: str | None = Field(
        None, description="A reader a plugin registered (register_batch_readers), reading `path`"
    )
    path: str | None = Field(None, description="What `reader` reads (relative to the manifest)")
    field: str | None = Field(None, description="Field of a jsonl/csv record that holds the input")
    id_field: str | None = Field(None, description="Field of a jsonl/csv record that holds the item id")
    follow_symlinks: bool = Field(
        False, description="files: descend symlinked folders and read links that lead outside the glob's root"
    )
    max_line_bytes: int = Field(16 << 20, ge=1, description="Longest jsonl line / csv row accepted, in bytes")
    max_file_bytes: int = Field(256 << 20, ge=1, description="Largest file a files item may be, in bytes")

    @model_validator(mode="after")
    def _exactly_one_source(self) -> JobInputs:
        sources = [name for name in ("files", "jsonl", "csv", "reader") if getattr(self, name)]
        if len(sources) != 1:
            raise ValueError(f"give exactly one of files, jsonl, csv, reader (got {sources or 'none'})")
        if bool(self.reader) != bool(self.path):
            raise ValueError("reader and path go together: path is what the reader reads")
        if self.files and (self.field or self.id_field):
            raise ValueError("field and id_field apply to jsonl and csv inputs, not files")
        if self.follow_symlinks and not self.files:
            raise ValueError("follow_symlinks applies to files inputs only")
        return self

    @property
    def kind(self) -> str:
        """The registered reader that reads this source."""
        return self.reader or next(name for name in ("files", "jsonl", "csv") if getattr(self, name))

    @property
    def location(self) -> str:
        location = self.path if self.reader else getattr(self, self.kind)
        return str(location)


class JobManifest(_Strict):
    """A batch job: one task over many inputs, written to one output file."""

    job: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Job name")
    task: str
    model: str | None = None
    revision: str | None = None
    params: dict[str, Any] = Field(default_factory=dict, description="Call params of the task")
    inputs: JobInputs
    output: str = Field(description="Output file: .jsonl, or .parquet with pyarrow")
    batch_size: int = Field(8, ge=1)
    executor: Literal["local", "ray"] = "local"
    workers: int = Field(1, ge=1)
    on_error: Literal["record", "stop"] = "record"
    device: str | None = Field(None, description="cpu, cuda, cuda:N or mps (default: cuda when available)")
    dtype: str | None = None
    trust_remote_code: bool = Field(False, description="Run Python code shipped with a hub model")
    allow_pickle: bool = Field(False, description="Load pickle-based weights (.bin/.pt), not only safetensors")


def _node_at(node: yaml.Node | None, loc: tuple[Any, ...]) -> yaml.Node | None:
    """The YAML node at a pydantic error location, as deep as it exists."""
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if k.value == key), None)
            if child is None:
                key_node = next((k for k, _ in node.value if k.value == key), None)
                return key_node or node
            node = child
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            return node
    return node


MAX_MANIFEST_BYTES = 1 << 20  # a manifest is a page of YAML; anything bigger is a mistake or an attack
MAX_DEPTH = 32  # nested mappings/lists; the deepest built-in manifest uses 4
MAX_INT = 2**63 - 1  # integers beyond 64 bits are never a sensible setting
MAX_NODES = 100_000  # values after expanding aliases: stops "billion laughs" documents


class _SafeLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing duplicate keys (the default silently keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise _DuplicateKey(f"duplicate key {key!r} (first at line {seen[key]})", line)
            if isinstance(key, (str, int, float, bool)):
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


class _DuplicateKey(Exception):
    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.line = line


def _check_depth(text: str, where: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH from the event stream, before the (recursive) composer runs."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                line = event.start_mark.line + 1 if event.start_mark else 0
                raise ManifestError(
                    f"{where}:{line}: nesting deeper than {MAX_DEPTH} levels; a manifest is a few levels of mappings and lists"
                )
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def _check_size(node: yaml.Node, where: str) -> None:
    """Refuse more than MAX_NODES values once aliases are expanded (a "billion laughs" document)."""
    stack = [node]
    visited = 0
    while stack:
        current = stack.pop()
        visited += 1
        if visited > MAX_NODES:
            raise ManifestError(f"{where}: more than {MAX_NODES} values once aliases are expanded")
        if isinstance(current, yaml.MappingNode):
            stack.extend(child for pair in current.value for child in pair)
        elif isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)


def _check_ints(value: Any, where: str) -> None:
    """Integers are bounded to 64 bits (the document's size is already bounded by _check_limits)."""
    stack = [value]
    while stack:
        current = stack.pop()
        if isinstance(current, int) and not isinstance(current, bool) and abs(current) > MAX_INT:
            raise ManifestError(f"{where}: integer {str(current)[:20]}... does not fit 64 bits")
        if isinstance(current, dict):
            stack.extend(current.keys())
            stack.extend(current.values())
        elif isinstance(current, list):
            stack.extend(current)


def read_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    """Safe-load a YAML file: syntax errors, duplicate keys, deep nesting and huge integers are
    ManifestErrors naming the file (and line where there is one)."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # reading a FIFO would block until someone writes to it
            what = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file (a FIFO, socket or device)"
            raise ManifestError(f"{path}: {what}; a manifest is a YAML file")
        if info.st_size > MAX_MANIFEST_BYTES:
            raise ManifestError(f"{path}: manifest larger than {MAX_MANIFEST_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read manifest ({exc})") from exc
    return parse_yaml(text, str(path))


def parse_yaml(text: str, where: str) -> tuple[Any, yaml.Node | None]:
    """The document in `text` and its node tree (for error lines); `where` names it in errors."""
    loader = _SafeLoader(text)
    try:
        _check_depth(text, where)
        root = loader.get_single_node()
        if root is None:
            return None, None
        _check_size(root, where)
        data = loader.construct_document(root)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{where}:{mark.line + 1}" if mark else where
        problem = getattr(exc, "problem", None) or str(exc)
        raise ManifestError(f"{at}: invalid YAML: {problem}") from None
    except _DuplicateKey as exc:
        raise ManifestError(f"{where}:{exc.line}: invalid YAML: {exc}") from None
    except (ValueError, RecursionError) as exc:  # int() of a 5,000-digit number, self-referencing aliases
        raise ManifestError(f"{where}: invalid YAML: {type(exc).__name__}: {str(exc)[:200]}") from None
    finally:
        loader.dispose()
    _check_ints(data, where)
    return data, root


def validate(model: type[BaseModel], data: Any, source: str, root: yaml.Node | None = None) -> Any:
    """Validate `data`; all problems in one message with file, line and field path."""
    if not isinstance(data, dict):
        raise ManifestError(f"{source}: expected a mapping of fields, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise located_error([(tuple(e["loc"]), e["msg"]) for e in exc.errors()], source, root) from None


def located_error(problems: list[tuple[tuple[Any, ...], str]], source: str, root: yaml.Node | None) -> ManifestError:
    """One ManifestError listing each (field location, message) with its file:line."""
    lines = []
    for loc, message in problems:
        field_path = ".".join(str(part) for part in loc) or "(top level)"
        node = _node_at(root, loc) if root is not None else None
        where = f"{source}:{node.start_mark.line + 1}" if node is not None else source
        lines.append(f"{where}: {field_path}: {message}")
    return ManifestError("invalid manifest\n  " + "\n  ".join(lines))


def load_task_manifest(path: str | Path) -> TaskManifest:
    path = Path(path)
    data, root = read_yaml(path)
    return validate(TaskManifest, data, str(path), root)


def load_job_manifest(path: str | Path) -> JobManifest:
    path = Path(path)
    data, root = read_yaml(path)
    return validate(JobManifest, data, str(path), root)


def manifest_kind(data: Any) -> Literal["task", "job"]:
    """Which manifest a loaded YAML document is: jobs have a `job` key."""
    return "job" if isinstance(data, dict) and "job" in data else "task"


def json_schema(kind: Literal["task", "job"]) -> dict[str, Any]:
    """JSON Schema of a manifest kind, for editors."""
    model = TaskManifest if kind == "task" else JobManifest
    schema = model.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = f"taskhub {kind} manifest"
    return schema
