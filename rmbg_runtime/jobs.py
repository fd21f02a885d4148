"""The plan of a run that writes one file per input: which files are inputs, where each output goes,
and the check that no output overwrites another output or any input.

Pure path logic with no image work, so `rmbg remove` (images and videos) and `rmbg eval --save-masks`
share one set of rules:

- A folder is read recursively; symbolic links are followed, a folder reached twice (a link loop or
  an alias) is read once and reported. A glob keeps the tree below its fixed part (`tree/**/*.jpg`:
  `tree/x/a.jpg` -> `x/a.png`); with several inputs, each folder keeps its own name.
- The output folder, and anything under it, is never an input when it lies inside an input folder or
  glob, so a rerun reads the same inputs as the first run.
- Two jobs writing one path, or a job writing over an input, refuse the whole run before any work.
- A video (video.io.VIDEO_SUFFIXES) becomes a video named by --output's suffix, or in an output
  folder `NAME.webm` (`.mov`, `.mp4`: --video-format) or a folder of PNG frames `NAME.frames/`; one
  video with an output folder and no --video-format writes its frames into that folder.
"""

from __future__ import annotations

import fnmatch
import glob
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePath

from .errors import UsageError
from .images import IMAGE_SUFFIXES, is_image_file
from .video.io import FRAMES_KIND, OUTPUT_KINDS, VIDEO_SUFFIXES
from .video_formats import DEFAULT_VIDEO_FORMAT, VIDEO_FORMATS, format_kind, is_video_file

OUTPUT_SUFFIXES = {".png": "png", ".webp": "webp"}
CLASHES_NAMED = 3  # how many clashes one error message lists


@dataclass(frozen=True)
class Job:
    source: Path | None  # None: standard input
    target: Path | None  # None: standard output
    video_kind: str | None = None  # a video's output kind (video_formats.KINDS); None: an image

    @property
    def label(self) -> str:
        return str(self.source) if self.source else "<stdin>"


@dataclass(frozen=True)
class Found:
    path: Path
    relative: PurePath  # where its output goes below the output folder, before the suffix


@dataclass
class Inputs:
    files: list[Found] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # what was passed over and why, one phrase each


@dataclass(frozen=True)
class Plan:
    jobs: list[Job]
    fmt: str
    skipped: list[str]


# ---- inputs --------------------------------------------------------------------------------------

Select = Callable[[PurePath, bool], str]  # (path below the root, is a folder) -> "all", "look" or "no"


class _Walker:
    """Files below one root, following links, each real folder read once."""

    def __init__(self, exclude: Path | None, skipped: list[str]) -> None:
        self.exclude, self.skipped = exclude, skipped
        self.seen: set[Path] = set()

    def files(self, folder: Path, select: Select, take_all: bool) -> Iterator[tuple[Path, PurePath]]:
        yield from self._walk(folder, PurePath(), select, take_all)

    def _walk(self, folder: Path, rel: PurePath, select: Select, take_all: bool):
        real = folder.resolve()
        if self.exclude is not None and real.is_relative_to(self.exclude):
            self.skipped.append(f"{folder} (the output folder)")
            return
        if real in self.seen:
            self.skipped.append(f"{folder} (a link to {real}, which is read already)")
            return
        self.seen.add(real)
        try:
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        except OSError as err:
            self.skipped.append(f"{folder} ({err.strerror or err})")
            return
        for entry in entries:
            path, child = Path(entry.path), rel / entry.name
            if entry.is_dir():  # follows links
                mode = "all" if take_all else select(child, True)
                if mode != "no":
                    yield from self._walk(path, child, select, mode == "all")
            elif take_all or select(child, False) == "all":
                if entry.is_symlink() and not path.exists():
                    self.skipped.append(f"{path} (a broken link)")
                elif is_image_file(path) or (is_video_file(path) and path.is_file()):
                    yield path, child


def _take_everything(_rel: PurePath, _is_dir: bool) -> str:
    return "all"


def glob_root(pattern: str) -> tuple[Path, tuple[str, ...]]:
    """The fixed folder a glob starts from and the pattern's remaining components."""
    parts = PurePath(pattern).parts
    fixed = next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts))
    return Path(*parts[:fixed]) if fixed else Path("."), parts[fixed:]


def _component_matches(name: str, pattern: str) -> bool:
    if name.startswith(".") and not pattern.startswith("."):  # as glob: * does not match hidden names
        return False
    return fnmatch.fnmatchcase(name, pattern)


def _matches(parts: tuple[str, ...], pattern: tuple[str, ...], prefix: bool) -> bool:
    """Whether `parts` match `pattern` (glob rules, ** for any folders), or could begin a match."""
    if not parts:
        return prefix or not pattern or pattern == ("**",)
    if not pattern:
        return False
    if pattern[0] == "**":
        if prefix:
            return True
        return any(
            _matches(parts[i:], pattern[1:], prefix)
            for i in range(len(parts) + 1)
            if not any(p.startswith(".") for p in parts[:i])
        )
    return _component_matches(parts[0], pattern[0]) and _matches(parts[1:], pattern[1:], prefix)


def _glob_select(pattern: tuple[str, ...]) -> Select:
    def select(rel: PurePath, is_dir: bool) -> str:
        if _matches(rel.parts, pattern, prefix=False):
            return "all"
        return "look" if is_dir and _matches(rel.parts, pattern, prefix=True) else "no"

    return select


def _exclusion(root: Path, output_folder: Path | None) -> Path | None:
    """The output folder's real path when it lies strictly inside `root` (else it cannot be left out
    without leaving out every input; the clash check guards that case)."""
    if output_folder is None:
        return None
    out, real_root = output_folder.resolve(), root.resolve()
    return out if out != real_root and out.is_relative_to(real_root) else None


def expand_inputs(items: list[str], output_folder: Path | None = None) -> Inputs:
    """Every image and video named by files, folders or globs, with its place below the output folder."""
    found = Inputs()
    several = len(items) > 1
    for item in items:
        if glob.has_magic(item):
            root, pattern = glob_root(item)
            walker = _Walker(_exclusion(root, output_folder), found.skipped)
            matched = [Found(p, rel) for p, rel in walker.files(root, _glob_select(pattern), False)]
            if not matched:
                raise UsageError(
                    f"{item} matches no image or video file; check the pattern (quote it for the shell)."
                )
            found.files += matched
        elif Path(item).is_dir():
            walker = _Walker(_exclusion(Path(item), output_folder), found.skipped)
            below = PurePath(Path(os.path.abspath(item)).name) if several else PurePath()
            files = [Found(p, below / rel) for p, rel in walker.files(Path(item), _take_everything, True)]
            if not files:
                found.skipped.append(f"{item} (holds no image or video file)")
            found.files += files
        elif Path(item).exists():
            found.files.append(Found(Path(item), PurePath(Path(item).name)))
        else:
            raise UsageError(f"{item} does not exist; check the path.")
    if not found.files:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES | set(VIDEO_SUFFIXES)))
        raise UsageError(f"{', '.join(items)} holds no image or video file; rmbg reads {suffixes}.")
    return found


# ---- outputs -------------------------------------------------------------------------------------


def output_name(relative: PurePath, fmt: str, keep_suffix: bool) -> PurePath:
    """`a.jpg` -> `a.png`, or `a.jpg.png` with keep_suffix (so a.jpg and a.png never share one)."""
    return relative.with_name(f"{relative.name}.{fmt}") if keep_suffix else relative.with_suffix(f".{fmt}")


def _names_a_file(output: str) -> bool:
    """Whether --output names one image file (by its suffix) rather than a folder."""
    from PIL import Image

    if output.endswith(("/", os.sep)) or Path(output).is_dir():
        return False
    suffix = Path(output).suffix.lower()
    known = (OUTPUT_SUFFIXES, IMAGE_SUFFIXES, VIDEO_SUFFIXES, Image.registered_extensions())
    return any(suffix in names for names in known)


def _file_format(output: str, fmt: str | None) -> str:
    """The format a named output file gets: its suffix decides; --format may only agree."""
    suffix = Path(output).suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise UsageError(
            f"--output {output} names a {suffix or 'suffix-less'} file, but rmbg writes PNG or WebP; "
            "name it .png or .webp, or give a folder."
        )
    named = OUTPUT_SUFFIXES[suffix]
    if fmt is not None and fmt != named:
        raise UsageError(f"--output {output} names a {named} file but --format is {fmt}; drop one of them.")
    return named


def _stdin_plan(output: str, fmt: str | None) -> Plan:
    if output == "-":
        return Plan([Job(None, None)], fmt or "png", [])
    if not _names_a_file(output):
        raise UsageError(
            f"standard input has no file name, so --output {output} must name a .png or .webp file "
            "(or - for standard output), not a folder."
        )
    return Plan([Job(None, Path(output))], _file_format(output, fmt), [])


def _video_plan(source: Path, output: str, video_format: str | None) -> Plan:
    """One video file's job: a video named by its suffix, or a folder (see the module's notes)."""
    if output == "-":
        raise UsageError(
            f"{source} is a video, which cannot go to standard output; name a .webm, .mov or .mp4 file, "
            "or a folder for PNG frames."
        )
    named = Path(output).suffix.lower() if _names_a_file(output) else None
    if named is not None and named not in OUTPUT_KINDS:
        raise UsageError(
            f"{source} is a video, so --output {output} must name a .webm, .mov or .mp4 file, or a folder "
            "for PNG frames."
        )
    if named is not None:
        kind = OUTPUT_KINDS[named]
        if video_format is not None and format_kind(video_format) != kind:
            raise UsageError(
                f"--output {output} names a {named} video but --video-format is {video_format}; "
                "drop one of them."
            )
        target = Path(output)
    elif video_format is None:
        kind, target = FRAMES_KIND, Path(output)
        if source.resolve().is_relative_to(target.resolve()):
            raise UsageError(
                f"--output {output} holds the input {source}, so its frames cannot go there; "
                "name a new folder."
            )
    else:
        kind = format_kind(video_format)
        target = Path(output) / output_name(PurePath(source.name), VIDEO_FORMATS[video_format][1:], False)
    check_outputs([(source, target)], "name another output")
    return Plan([Job(source, target, kind)], "png", [])


def _folder_job(found: Found, folder: Path, fmt: str, keep_suffix: bool, video_format: str) -> Job:
    if is_video_file(found.path):
        name = output_name(found.relative, VIDEO_FORMATS[video_format][1:], keep_suffix)
        return Job(found.path, folder / name, format_kind(video_format))
    return Job(found.path, folder / output_name(found.relative, fmt, keep_suffix))


def plan_jobs(
    inputs: list[str],
    output: str,
    fmt: str | None = None,
    keep_suffix: bool = False,
    video_format: str | None = None,
) -> Plan:
    """The jobs of `rmbg remove INPUTS -o OUTPUT`, checked: raises UsageError before any work when an
    output name is unusable or two outputs clash. `fmt`: the images' format; `video_format`: the
    kind of the videos' outputs in an output folder (video_formats.VIDEO_FORMATS)."""
    if inputs == ["-"]:
        return _stdin_plan(output, fmt)
    if "-" in inputs:
        raise UsageError("'-' (standard input) cannot be mixed with other inputs.")
    one_file = len(inputs) == 1 and not glob.has_magic(inputs[0]) and Path(inputs[0]).is_file()
    if one_file and is_video_file(Path(inputs[0])):
        return _video_plan(Path(inputs[0]), output, video_format)
    if output == "-":
        if not one_file:
            raise UsageError("--output - (standard output) takes exactly one input image file.")
        return Plan([Job(Path(inputs[0]), None)], fmt or "png", [])
    if _names_a_file(output):
        if not one_file:
            raise UsageError(
                f"--output {output} names one file but {' '.join(inputs)} may hold several images; "
                "name an output folder."
            )
        jobs = [Job(Path(inputs[0]), Path(output))]
        check_outputs([(Path(inputs[0]), Path(output))], "name another output file")
        return Plan(jobs, _file_format(output, fmt), [])
    folder = Path(output)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--output {output} is an existing file, not a folder; name an output folder.")
    fmt = fmt or "png"
    found = expand_inputs(inputs, folder)
    video_format = video_format or DEFAULT_VIDEO_FORMAT
    jobs = [_folder_job(f, folder, fmt, keep_suffix, video_format) for f in found.files]
    check_outputs(
        [(job.source, job.target) for job in jobs],
        "add --keep-suffix to name outputs like a.jpg.png, or choose another output folder",
    )
    return Plan(jobs, fmt, found.skipped)


def find_clashes(pairs: list[tuple[Path, Path]], other_inputs: Iterable[Path] = ()) -> list[str]:
    """Each output that would overwrite another output or an input of the run, as a phrase."""
    inputs = {Path(p).resolve() for p in other_inputs} | {source.resolve() for source, _ in pairs}
    writers: dict[Path, Path] = {}
    clashes: list[str] = []
    for source, target in pairs:
        real = target.resolve()
        if real in inputs:
            clashes.append(f"{source} would be written to {target}, over an input")
        elif real in writers:
            clashes.append(f"{writers[real]} and {source} would both be written to {target}")
        else:
            writers[real] = source
    return clashes


def check_outputs(pairs: list[tuple[Path, Path]], way_out: str, other_inputs: Iterable[Path] = ()) -> None:
    """Refuse a plan in which an output overwrites another output or an input (`other_inputs`: files
    the run reads besides the sources, such as ground-truth masks)."""
    clashes = find_clashes(pairs, other_inputs)
    if clashes:
        more = f" (and {len(clashes) - CLASHES_NAMED} more)" if len(clashes) > CLASHES_NAMED else ""
        outputs = "1 output" if len(clashes) == 1 else f"{len(clashes)} outputs"
        raise UsageError(
            f"nothing was written because {outputs} would overwrite other files: "
            f"{'; '.join(clashes[:CLASHES_NAMED])}{more}; {way_out}."
        )
