"""A config as commented YAML: every field with its value and the comment written beside it in `sections.py`.

The comments have one owner, the source of `sections.py`: they are read from it (ast for the fields, tokenize for
the comments), so a field documented there is documented in `simdistill config show` too. A field's comment is
the comment on its line (with any indented continuation lines below it), or else the comment lines right above it.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import io
import textwrap
import tokenize
from typing import Any

import yaml

from simdistill.config import sections
from simdistill.config.sections import Config, config_to_dict

WIDTH = 110  # columns of `config show` output


@functools.lru_cache(maxsize=1)
def field_comments() -> dict[str, dict[str, str]]:
    """Dataclass name → field name → its comment (lines joined by newlines); '' for the class's docstring."""
    source = inspect.getsource(sections)
    comments = {tok.start[0]: tok.string.lstrip("#")
                for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}
    lines = source.splitlines()
    found: dict[str, dict[str, str]] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        own = found.setdefault(node.name, {})
        doc = ast.get_docstring(node)
        if doc:
            own[""] = " ".join(doc.split())
        for item in node.body:
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                text = _comment_of(item.lineno, comments, lines)
                if text:
                    own[item.target.id] = text
    return found


def _comment_only(line: int, lines: list[str]) -> bool:
    return 0 < line <= len(lines) and lines[line - 1].lstrip().startswith("#")


def _comment_of(line: int, comments: dict[int, str], lines: list[str]) -> str:
    """The trailing comment of `line` and its continuation lines (`#   more`), else the block right above it."""
    if line in comments and not _comment_only(line, lines):
        parts = [comments[line].strip()]
        nxt = line + 1
        while _comment_only(nxt, lines) and comments[nxt].startswith("  "):
            parts.append(comments[nxt].strip())
            nxt += 1
        return " ".join(parts)
    above = []
    prev = line - 1
    while _comment_only(prev, lines) and not comments[prev].startswith("  "):
        above.insert(0, comments[prev].strip())
        prev -= 1
    return " ".join(above)


def _comment_for(cls: type, name: str) -> str:
    """A field's comment, looked up through the dataclass's bases (TeacherTrainConfig inherits TrainConfig's)."""
    table = field_comments()
    for klass in cls.__mro__:
        text = table.get(klass.__name__, {}).get(name)
        if text:
            return text
    return ""


def _flow(value: Any) -> str:
    """One value in YAML flow style on one line (lists as [a, b], mappings as {k: v})."""
    return yaml.safe_dump([value], default_flow_style=True, width=1 << 20, sort_keys=False).strip()[1:-1]


def _with_comment(line: str, comment: str, indent: str, out: list[str]) -> None:
    """`line  # comment` when that fits in WIDTH, else the comment wrapped on the lines above `line`."""
    if comment and len(line) + 4 + len(comment) <= WIDTH:
        out.append(f"{line}  # {comment}")
        return
    if comment:
        out.extend(textwrap.wrap(comment, WIDTH, initial_indent=f"{indent}# ", subsequent_indent=f"{indent}# ",
                                 break_on_hyphens=False))
    out.append(line)


def _emit(obj: Any, values: dict[str, Any], indent: str, out: list[str]) -> None:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            if not indent:
                out.append("")
            _with_comment(f"{indent}{f.name}:", _comment_for(type(value), ""), indent, out)
            _emit(value, values[f.name], indent + "  ", out)
        else:
            if not indent and f.type not in ("int", "str", "float", "bool"):
                out.append("")
            _with_comment(f"{indent}{f.name}: {_flow(values[f.name])}", _comment_for(type(obj), f.name), indent, out)


def config_yaml(cfg: Config, *, header: str = "") -> str:
    """The whole config as YAML that `load_config` reads back to `cfg`, each field with its comment."""
    out = [f"# {line}" for line in header.splitlines()]
    _emit(cfg, config_to_dict(cfg), "", out)
    return "\n".join(out) + "\n"
