"""Loading checkpoints from real files: safetensors, .pth, fp16, folders, a hub cache, errors."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from conftest import fixture_model
from safetensors.torch import load_file, save_file

from rmbg_export import ExportError, load_model
from rmbg_export.checkpoint import TRAINING_ONLY_PREFIXES
from rmbg_export.inspection import inspect_checkpoint

FIXTURE = "swin_v1_t_einops_b2_512x512"
LEGACY_CODE = (
    "class Decoder:\n    def forward(self, x):\n        patches_batch = self.get_patches_batch(x, x4)\n"
)
EINOPS_CODE = (
    "def forward(self, x):\n    patches_batch = image2patches(x, patch_ref=x4, "
    "transformation='b c (hg h) (wg w) -> b (c hg wg) h w')\n"
)
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def state():
    return {k: v.clone() for k, v in fixture_model(FIXTURE).state_dict().items()}


@pytest.fixture(scope="module")
def safetensors_file(state, tmp_path_factory):
    path = tmp_path_factory.mktemp("st") / "model.safetensors"
    save_file(state, str(path))
    return path


def assert_same_weights(model, state, atol=0.0):
    loaded = model.state_dict()
    for key in (
        "bb.patch_embed.proj.weight",
        "decoder.conv_out1.0.bias",
        "squeeze_module.0.bn_out.running_var",
    ):
        torch.testing.assert_close(loaded[key], state[key].float(), atol=atol, rtol=0)


def test_safetensors_with_patch_order_argument(safetensors_file, state):
    model = load_model(safetensors_file, patch_order="einops")
    assert_same_weights(model, state)
    info = model.checkpoint
    assert (info.backbone, info.patch_order, info.patch_order_origin) == ("swin_v1_t", "einops", "argument")
    assert info.origin == "file" and len(info.sha256) == 64 and info.num_params == 44_313_720
    assert not model.training


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "_orig_mod.module."])
def test_pth_with_wrapper_prefixes(prefix, state, tmp_path):
    path = tmp_path / "ckpt.pth"
    torch.save({prefix + k: v for k, v in state.items()}, path)
    assert_same_weights(load_model(path, patch_order="einops"), state)


def test_fp16_checkpoint_is_upcast(state, tmp_path):
    path = tmp_path / "half.pth"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, path)
    model = load_model(path, patch_order="einops")
    assert model.checkpoint.stored_dtype == "float16"
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert_same_weights(
        model, {k: v.half().float() if v.is_floating_point() else v for k, v in state.items()}
    )


def test_folder_with_code_file_gives_patch_order(safetensors_file, tmp_path):
    folder = tmp_path / "snapshot"
    folder.mkdir()
    (folder / "model.safetensors").symlink_to(safetensors_file)
    (folder / "birefnet.py").write_text(LEGACY_CODE)
    info = load_model(folder).checkpoint
    assert (info.patch_order, info.patch_order_origin, info.origin) == ("legacy", "code file", "folder")


def test_training_heads_may_be_absent_as_a_group(state, tmp_path):
    path = tmp_path / "inference_only.safetensors"
    save_file({k: v for k, v in state.items() if not k.startswith(TRAINING_ONLY_PREFIXES)}, str(path))
    model = load_model(path, patch_order="einops")
    assert len(model.checkpoint.ignored_missing) == 12


def make_hub_cache(home: Path, repo: str, files: dict[str, Path | str]) -> None:
    """The layout huggingface_hub writes: blobs, snapshots/<commit>/ links, refs/main."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    root = home / "hub" / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    (root / "blobs").mkdir()
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for i, (name, content) in enumerate(files.items()):
        blob = root / "blobs" / f"blob{i}"
        if isinstance(content, Path):
            os.link(content, blob) if content.stat().st_dev == blob.parent.stat().st_dev else blob.symlink_to(
                content
            )
        else:
            blob.write_text(content)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")} | env
    full_env["PYTHONPATH"] = str(REPO_ROOT)
    return subprocess.run(
        [sys.executable, "-c", "from rmbg_export.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=300,
    )


def test_hub_repo_from_offline_cache(safetensors_file, tmp_path):
    make_hub_cache(
        tmp_path,
        "ZhengPeng7/BiRefNet_lite",
        {"model.safetensors": safetensors_file, "birefnet.py": EINOPS_CODE},
    )
    result = run_cli(
        ["inspect", "ZhengPeng7/BiRefNet_lite"], {"HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    )
    assert result.returncode == 0, result.stderr
    assert "ZhengPeng7/BiRefNet_lite (hub)" in result.stdout
    assert "einops (code file)" in result.stdout
    assert "swin_v1_t" in result.stdout and "loads strictly    yes" in result.stdout


def test_hub_repo_missing_from_offline_cache(tmp_path):
    result = run_cli(["inspect", "briaai/RMBG-2.0"], {"HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 1
    assert result.stderr.startswith("error: briaai/RMBG-2.0 is not in the local hub cache")
    assert "Traceback" not in result.stderr


class HubEmulator(BaseHTTPRequestHandler):
    """Answers /{repo}/resolve/{revision}/{file} as the hub does: 200 with X-Repo-Commit and ETag,
    404 EntryNotFound, and 401 GatedRepo for a gated repo asked without the accepted token."""

    repos: ClassVar[dict[str, dict[str, bytes]]] = {}
    gated: ClassVar[dict[str, str]] = {"briaai/RMBG-2.0": "hf_accepted"}
    commit = "b" * 40

    def _answer(self, with_body: bool) -> None:
        repo, _, rest = self.path.lstrip("/").partition("/resolve/")
        filename = rest.split("/", 1)[-1]
        token = self.gated.get(repo)
        if token and self.headers.get("authorization") != f"Bearer {token}":
            return self._error(401, "GatedRepo")
        data = self.repos.get(repo, {}).get(filename)
        if data is None:
            return self._error(404, "EntryNotFound" if repo in self.repos else "RepoNotFound")
        self.send_response(200)
        self.send_header("X-Repo-Commit", self.commit)
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if with_body:
            self.wfile.write(data)

    def _error(self, status: int, code: str) -> None:
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self):
        self._answer(with_body=False)

    def do_GET(self):
        self._answer(with_body=True)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def hub(safetensors_file):
    """A loopback hub: RMBG-2.0 (gated; safetensors + legacy code) and a repo with only a .bin."""
    weights = safetensors_file.read_bytes()
    buffer = io.BytesIO()
    torch.save(load_file(str(safetensors_file)), buffer)
    HubEmulator.repos = {
        "briaai/RMBG-2.0": {"model.safetensors": weights, "birefnet.py": LEGACY_CODE.encode()},
        "someone/birefnet-bin": {"pytorch_model.bin": buffer.getvalue(), "birefnet.py": EINOPS_CODE.encode()},
    }
    server = ThreadingHTTPServer(("127.0.0.1", 0), HubEmulator)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_gated_repo_without_token_gives_one_sentence(hub, tmp_path):
    result = run_cli(["inspect", "briaai/RMBG-2.0"], {"HF_HOME": str(tmp_path), "HF_ENDPOINT": hub})
    assert result.returncode == 1
    assert result.stderr.startswith("error: briaai/RMBG-2.0 is a gated repository"), result.stderr
    assert "HF_TOKEN" in result.stderr and "Traceback" not in result.stderr


def test_gated_repo_downloads_with_token_then_works_offline(hub, tmp_path):
    env = {"HF_HOME": str(tmp_path), "HF_ENDPOINT": hub, "HF_TOKEN": "hf_accepted"}
    online = run_cli(["inspect", "briaai/RMBG-2.0"], env)
    assert online.returncode == 0, online.stderr
    assert "briaai/RMBG-2.0 (hub)" in online.stdout and "legacy (code file)" in online.stdout
    snapshot = tmp_path / "hub" / "models--briaai--RMBG-2.0" / "snapshots" / HubEmulator.commit
    assert (snapshot / "model.safetensors").is_file() and (snapshot / "birefnet.py").is_file()
    offline = run_cli(["inspect", "briaai/RMBG-2.0"], {"HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"})
    assert offline.returncode == 0 and "loads strictly    yes" in offline.stdout


def test_repo_with_only_a_bin_file(hub, tmp_path):
    result = run_cli(["inspect", "someone/birefnet-bin"], {"HF_HOME": str(tmp_path), "HF_ENDPOINT": hub})
    assert result.returncode == 0, result.stderr
    assert "pytorch_model.bin" in result.stdout and "einops (code file)" in result.stdout


def test_unknown_repo(hub, tmp_path):
    result = run_cli(["inspect", "nobody/nothing"], {"HF_HOME": str(tmp_path), "HF_ENDPOINT": hub})
    assert result.returncode == 1 and "was not found, or it is private" in result.stderr


def test_missing_key_is_named(state, tmp_path):
    path = tmp_path / "broken.safetensors"
    save_file(
        {k: v for k, v in state.items() if k != "decoder.conv_out1.0.weight"} | {"extra.w": torch.zeros(1)},
        str(path),
    )
    with pytest.raises(
        ExportError,
        match=r"missing keys 1 \(decoder.conv_out1.0.weight\); unexpected keys 1 "
        r"\(extra.w\)",
    ):
        load_model(path, patch_order="einops")


def test_shape_mismatch_is_named(state, tmp_path):
    path = tmp_path / "shape.safetensors"
    save_file(state | {"decoder.conv_out1.0.bias": torch.zeros(2)}, str(path))
    with pytest.raises(ExportError, match=r"shape mismatches 1 \(decoder.conv_out1.0.bias\)"):
        load_model(path, patch_order="einops")


def test_corrupt_file(safetensors_file, tmp_path):
    path = tmp_path / "cut.safetensors"
    path.write_bytes(safetensors_file.read_bytes()[:1000])
    with pytest.raises(ExportError, match="corrupt or incomplete"):
        load_model(path, patch_order="einops")


def test_missing_path():
    with pytest.raises(ExportError, match="neither an existing file or folder nor a hub repo id"):
        load_model("./no/such/model.safetensors")


def test_unknown_patch_order_asks_for_it(safetensors_file):
    with pytest.raises(ExportError, match="pass --patch-order legacy for RMBG-2.0"):
        load_model(safetensors_file)


def test_backbone_mismatch(safetensors_file):
    with pytest.raises(ExportError, match="holds a swin_v1_t backbone"):
        load_model(safetensors_file, patch_order="einops", backbone="swin_v1_l")


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "weights.safetensors"
    save_file({"conv.weight": torch.zeros(3, 3)}, str(path))
    with pytest.raises(ExportError, match="not a BiRefNet or RMBG-2.0 checkpoint"):
        load_model(path, patch_order="legacy")


def test_inspect_reports_unknown_order_without_failing(safetensors_file):
    rows = dict(inspect_checkpoint(str(safetensors_file)))
    assert rows["backbone"] == "swin_v1_t"
    assert rows["patch order"].startswith("? (unknown")
    assert rows["loads strictly"] == "yes"


def test_code_file_matching_both_forms_gives_no_guess(safetensors_file, tmp_path):
    from rmbg_export.patch_order import patch_order_from_code

    both = LEGACY_CODE + EINOPS_CODE
    assert patch_order_from_code(both) is None
    assert patch_order_from_code("def forward(self, x):\n    return x\n") is None
    folder = tmp_path / "snapshot"
    folder.mkdir()
    (folder / "model.safetensors").symlink_to(safetensors_file)
    (folder / "birefnet.py").write_text(both)
    with pytest.raises(ExportError, match=r"birefnet\.py beside the weights matches neither or both"):
        load_model(folder)
    assert load_model(folder, patch_order="einops").checkpoint.patch_order == "einops"
