"""Labels a new domain needs: curve over per-class sizes, with and without a base dataset."""
from __future__ import annotations

import pytest
from click.testing import CliRunner
from test_detector import make_store

from fakedet.cli import cli
from fakedet.curve import label_curve, parse_sizes

KEY = "effnet-lite0.resize64-ffffffffffff"


def test_parse_sizes():
    assert parse_sizes("50, 10,200") == [10, 50, 200]
    for bad in ("", "a,b", "2,10"):
        with pytest.raises(ValueError):
            parse_sizes(bad)


def test_curve_rises_with_labels_and_base_helps_when_domains_agree(tmp_path):
    new = make_store(tmp_path / "new.h5", n=600, dim=40, shift=0.35, seed=1, folders=False)
    base = make_store(tmp_path / "base.h5", n=600, dim=40, shift=0.35, seed=2, folders=False)
    table = label_curve(new.path, base.path, backbone=KEY, sizes=[5, 200], repeats=3)
    assert list(table["variant"]) == ["new only", "new + base"] * 2
    assert (table["n_val"] == 120).all() and (table["repeats"] == 3).all()
    alone = table[table["variant"] == "new only"].set_index("per_class")["balanced_accuracy"]
    assert alone[200] > alone[5]                                    # more labels, better
    with_base = table[table["variant"] == "new + base"].set_index("per_class")["balanced_accuracy"]
    assert with_base[5] > alone[5]                                  # the base set fills in for missing labels
    assert table.loc[table["per_class"] == 200, "n_new"].iloc[0] == 200


def test_cli_curve_writes_table_and_plot(tmp_path):
    new = make_store(tmp_path / "new.h5", n=200, seed=1, folders=False)
    out = CliRunner().invoke(cli, ["curve", "--data", str(new.path), "-b", KEY, "--sizes", "5,20",
                                   "--repeats", "1", "--out", str(tmp_path / "r")])
    assert out.exit_code == 0, out.output
    assert (tmp_path / "r" / "curve-new.png").stat().st_size > 1000
    assert "| 20 |" in out.output
    bad = CliRunner().invoke(cli, ["curve", "--data", str(new.path), "--sizes", "1,2"])
    assert bad.exit_code == 2 and "at least 5" in bad.output
    unknown = CliRunner().invoke(cli, ["curve", "--data", str(new.path), "-b", KEY, "-p", "bogus=1"])
    assert unknown.exit_code == 2 and "has no parameter bogus" in unknown.output   # -p reaches the head
