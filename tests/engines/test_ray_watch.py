"""`relex watch --ray`: the live update's pass and its export run as Ray tasks, with the local files as result."""

import csv

from .test_ray_pass import TINY_CHUNKS, folder_bytes, relex


def watch(run, out, cache, *extra):
    return relex("watch", run, "--out", out, "--cache-dir", cache, "--target", 90, "--max-updates", 1,
                 "--interval", 0.1, "--export-latest", "--chunk-mb", TINY_CHUNKS, *extra)


def test_watch_on_ray_writes_the_local_tables_export_and_live_row(ray_cluster, ray_run, tmp_path):
    local = watch(ray_run, tmp_path / "local", tmp_path / "local-cache")
    on_ray = watch(ray_run, tmp_path / "ray", tmp_path / "ray-cache", "--ray", ray_cluster.address)
    assert local.returncode == 0 and on_ray.returncode == 0, on_ray.stderr
    local_files, ray_files = folder_bytes(tmp_path / "local"), folder_bytes(tmp_path / "ray")
    assert set(ray_files) == set(local_files) and "predicted-90/relex.json" in ray_files
    for name in set(local_files) - {"live.csv"}:  # the export byte for byte, every table as written locally
        assert ray_files[name] == local_files[name], name
    rows = [list(csv.DictReader(open(tmp_path / folder / "live.csv"))) for folder in ("local", "ray")]
    assert len(rows[0]) == len(rows[1]) == 1
    assert {key: value for key, value in rows[1][0].items() if key != "time"} == \
        {key: value for key, value in rows[0][0].items() if key != "time"}
    assert folder_bytes(tmp_path / "ray-cache") == folder_bytes(tmp_path / "local-cache")
