"""Protobuf text format for Triton's `config.pbtxt`, written from plain dicts.

A dict is a message, a list of dicts a repeated message, a list of scalars a repeated scalar,
`Enum("TYPE_FP32")` an enum value; map fields are lists of {"key": ..., "value": ...} entries.
The tests parse every file with Triton's own `model_config.proto`, so a misspelt field fails there.
"""

from __future__ import annotations


class Enum(str):
    """An enum value: written bare, not quoted."""


def scalar(value) -> str:
    if isinstance(value, Enum):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"'


def message(fields: dict, indent: int = 0) -> str:
    pad = "  " * indent
    lines = []
    for name, value in fields.items():
        if value is None or value == []:
            continue
        if isinstance(value, dict):
            lines += [f"{pad}{name} {{", message(value, indent + 1), f"{pad}}}"]
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for item in value:
                lines += [f"{pad}{name} {{", message(item, indent + 1), f"{pad}}}"]
        elif isinstance(value, list):
            lines.append(f"{pad}{name}: [ {', '.join(scalar(v) for v in value)} ]")
        else:
            lines.append(f"{pad}{name}: {scalar(value)}")
    return "\n".join(line for line in lines if line)


def config_text(fields: dict, comments: list[str] = ()) -> str:
    header = "".join(f"# {line}\n" for line in comments)
    return header + message(fields) + "\n"
