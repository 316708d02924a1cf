"""bench/live_update.py end to end on a tiny model, so the kit cannot rot: one row per (N, K), update = full pass."""

from bench.live_update import main


def test_live_update_bench_runs_and_the_grown_gram_equals_the_full_pass(tmp_path, capsys):
    main(["--folder", str(tmp_path / "run"), "--lengths", "4,6", "--new", "1,2", "--repeats", "1", "--tiny"])
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and
            line[2].isdigit()]
    assert [(int(row[0]), int(row[1])) for row in rows] == [(4, 1), (4, 2), (6, 1), (6, 2)]
    for row in rows:
        assert float(row[4]) > 0 and float(row[5]) < 1e-12  # a ratio was measured; the Grams agree
