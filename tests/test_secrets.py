"""The annotate stage's API key reaches the endpoint from a real `curate run` on
its own local Ray, and no file the run leaves behind holds it: not the
catalog, not the run record, not the output, not Ray's temp and log folders
(Ray writes runtime_env options there verbatim)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from llm_fault_server import FaultServer

PLANTED = "sk-curate-PLANTED-4d1e8b7a90c3"


def _files_holding(folder: Path, needle: bytes) -> list[Path]:
    found = []
    for path in folder.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink() and needle in path.read_bytes():
                found.append(path)
        except OSError:  # a socket, or a file Ray removed meanwhile
            continue
    return found


def test_the_api_key_is_in_no_file_log_or_output_of_a_run(tmp_path, demo_site, helpers):
    # Ray's session folder holds unix sockets: keep its path short.
    ray_tmp = Path(tempfile.mkdtemp(prefix="curate-key-", dir="/tmp"))
    try:
        with FaultServer() as llm:
            stages = {"crawl": {"sources": [demo_site.url("demo_00")]},
                      "transcribe": {"prefer": "captions", "model": "tiny.en"},
                      "annotate": {"base_url": llm.base_url, "model": "fake-model", "tasks": ["caption"],
                                   "input_stage": "transcribe", "api_key_env": "CURATE_TEST_SECRET_KEY"}}
            recipe = helpers.write_recipe(tmp_path, stages, shards=1)
            result = helpers.run_cli("run", str(recipe), env={"CURATE_TEST_SECRET_KEY": PLANTED,
                                                               "RAY_TMPDIR": str(ray_tmp), "TMPDIR": str(ray_tmp)})
            assert result.returncode == 0, result.stdout + result.stderr
            assert llm.auth_headers and set(llm.auth_headers) == {f"Bearer {PLANTED}"}  # the worker had it
        sessions = list(ray_tmp.glob("ray/session_*/logs"))
        assert sessions, f"Ray wrote no logs under {ray_tmp}"
        assert PLANTED not in result.stdout and PLANTED not in result.stderr
        for folder in (tmp_path / "catalog", ray_tmp):
            assert not _files_holding(folder, PLANTED.encode()), f"the key was written under {folder}"
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
